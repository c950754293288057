//! A newcomer's first commands print nothing that reads like a failure.

/// With `XDG_RUNTIME_DIR` unset (containers, CI), Mesa's loaders would print
/// "XDG_RUNTIME_DIR is invalid or not set" on every adapter probe; the binary prevents it.
#[test]
fn info_is_quiet_without_xdg_runtime_dir() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wgattn"))
        .arg("info")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .expect("run wgattn");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "{stderr}");
    // wgpu's own log lines (e.g. EGL probing) stay hidden unless RUST_LOG asks for them.
    assert!(!stderr.contains("ERROR wgpu"), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("adapters"),
        "{}",
        crate::common::text(&out)
    );
}
