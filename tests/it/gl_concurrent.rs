//! Two GL contexts in one process, used from two threads at once. wgpu 30's GL (EGL) backend
//! panics with BadAccess when two GL devices of a process are used from two threads, or when
//! adapters are enumerated while a GL device is in use; wgattn therefore shares one GL device
//! between its GL contexts (a later context finds it without enumerating). wgpu's GL backend
//! also panics when a thread waits more than 1 s for the device's lock, so the pipelines are
//! compiled before the two threads overlap. It holds `common::gl_serial`, so no other GL test
//! runs beside it.

use crate::common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use wgattn::{Context, ContextOptions, Kernel, validation};

/// Runs the edge cases with `kernel` on `ctx` at least once and for `secs` seconds; returns
/// the rounds done.
fn keep_busy(ctx: &Context, kernel: Kernel, secs: u64) -> u32 {
    let cases = validation::edge_cases();
    let started = Instant::now();
    let mut rounds = 0;
    loop {
        common::run_cases(ctx, kernel, &cases);
        rounds += 1;
        if started.elapsed() >= Duration::from_secs(secs) {
            return rounds;
        }
    }
}

#[test]
fn a_second_gl_context_opened_and_used_while_the_first_is_busy() {
    static FIRST: OnceLock<Result<Context, String>> = OnceLock::new();
    let Some(held) = common::gl_with(&FIRST, None) else {
        return;
    };
    let first: &'static Context = held.ctx;
    // different options (the tiled flash variant), same adapter
    let open_second = || {
        Context::with_options(ContextOptions {
            adapter: Some(format!(
                "{} {}",
                first.adapter_info().name,
                first.adapter_info().backend
            )),
            flash_tiles: Some(true),
            ..Default::default()
        })
        .expect("second GL context")
    };
    let second = open_second();
    assert_eq!(second.adapter_info().backend, wgpu::Backend::Gl);
    assert!(second.caps().flash_tiles() && !first.caps().flash_tiles());
    // Compile every pipeline first: wgpu's GL backend gives up (panics) when a thread waits
    // more than 1 s for the device's lock, and a cold llvmpipe compilation can hold it longer.
    keep_busy(first, Kernel::Flash, 0);
    keep_busy(&second, Kernel::SplitKv, 0);
    let busy = std::thread::spawn(move || keep_busy(first, Kernel::Flash, 3));
    std::thread::sleep(Duration::from_millis(500));
    // opened while `first` works: found without enumerating adapters
    let third = open_second();
    assert!(third.caps().flash_tiles());
    drop(third);
    assert!(keep_busy(&second, Kernel::SplitKv, 2) > 0);
    assert!(busy.join().expect("the first GL context's thread") > 0);
}
