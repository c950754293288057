//! Helpers for the CLI's tests: the real binary, temporary files, the adapter rule and the
//! validation cases kept in the repository.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use wgattn::Context;

/// Whether a missing adapter may skip a GPU test: only with `WGATTN_ALLOW_NO_GPU=1` (and never
/// under `WGATTN_REQUIRE_GPU=1`). By default a GPU test without an adapter fails.
pub fn skipping_allowed() -> bool {
    std::env::var("WGATTN_ALLOW_NO_GPU").as_deref() == Ok("1")
        && std::env::var("WGATTN_REQUIRE_GPU").as_deref() != Ok("1")
}

/// The GPU context, or `None` with a visible SKIPPED line when skipping is allowed; without
/// an adapter the test fails otherwise.
pub fn ctx() -> Option<&'static Context> {
    static CTX: OnceLock<Result<Context, String>> = OnceLock::new();
    match CTX.get_or_init(|| Context::new().map_err(|e| e.to_string())) {
        Ok(c) => Some(c),
        Err(e) => {
            if !skipping_allowed() {
                panic!("no GPU adapter: {e} (set WGATTN_ALLOW_NO_GPU=1 to skip GPU tests)");
            }
            use std::io::Write;
            let test = std::thread::current().name().unwrap_or("?").to_string();
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: no GPU adapter ({e})");
            None
        }
    }
}

/// The repository's `tests/data` folder.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data")
}

/// The public validation cases kept in the repository.
pub fn cases_dir() -> PathBuf {
    data_dir().join("validation")
}

/// Runs the real `wgattn` binary.
pub fn wgattn(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_wgattn"))
        .args(args)
        .output()
        .expect("run wgattn")
}

/// stdout and stderr of a run, together.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A path in this test process's own temporary folder (`prefix` names the test module).
pub fn tmp_in(prefix: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgattn-{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}
