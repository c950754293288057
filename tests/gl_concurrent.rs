//! Two GL contexts in one process, used from two threads at once. wgpu 30's GL (EGL) backend
//! panics with BadAccess when two GL devices of a process are used from two threads, or when
//! adapters are enumerated while a GL device is in use; wgattn therefore shares one GL device
//! between its GL contexts (a later context finds it without enumerating). A test binary of
//! its own, so that no other GL work runs beside it.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use wgattn::{Context, ContextOptions, Kernel, validation};

/// Runs the edge cases with `kernel` on `ctx` for `secs` seconds; returns the rounds done.
fn keep_busy(ctx: &Context, kernel: Kernel, secs: u64) -> u32 {
    let cases = validation::edge_cases();
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        common::run_cases(ctx, kernel, &cases);
        rounds += 1;
    }
    rounds
}

#[test]
fn a_second_gl_context_opened_and_used_while_the_first_is_busy() {
    static FIRST: OnceLock<Result<Context, String>> = OnceLock::new();
    let Some(first) = common::gl_with(&FIRST, None) else {
        return;
    };
    let busy = std::thread::spawn(move || keep_busy(first, Kernel::Flash, 4));
    std::thread::sleep(Duration::from_millis(1000));
    // different options (the tiled flash variant), same adapter: opened while `first` works
    let second = Context::with_options(ContextOptions {
        adapter: Some(format!(
            "{} {}",
            first.adapter_info().name,
            first.adapter_info().backend
        )),
        flash_tiles: Some(true),
        ..Default::default()
    })
    .expect("second GL context");
    assert_eq!(second.adapter_info().backend, wgpu::Backend::Gl);
    assert!(second.caps().flash_tiles && !first.caps().flash_tiles);
    let rounds = keep_busy(&second, Kernel::SplitKv, 2);
    assert!(rounds > 0);
    assert!(busy.join().expect("the first GL context's thread") > 0);
}
