//! wgpu 30's GL (EGL) backend panics with BadAccess when adapters are enumerated while
//! another thread of the process is using a GL device. wgattn catches that panic: opening a
//! second GL context then either works or returns a typed error, and the busy device goes on
//! computing correct results. A test binary of its own, so no other GL test runs beside it.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use wgattn::{Context, ContextOptions, Kernel, validation};

#[test]
fn opening_gl_while_another_thread_uses_gl_never_panics() {
    static BUSY: OnceLock<Result<Context, String>> = OnceLock::new();
    let Some(busy) = common::gl_with(&BUSY, None) else {
        return;
    };
    let cases = validation::edge_cases();
    let worker = std::thread::spawn(move || {
        let started = Instant::now();
        let mut rounds = 0;
        while started.elapsed() < Duration::from_secs(4) {
            common::run_cases(busy, Kernel::Flash, &cases);
            rounds += 1;
        }
        rounds
    });
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..3 {
        let second = Context::with_options(ContextOptions {
            adapter: Some("gl".into()),
            flash_tiles: Some(true),
            ..Default::default()
        });
        match second {
            Ok(ctx) => assert_eq!(ctx.adapter_info().backend, wgpu::Backend::Gl),
            Err(e) => eprintln!("second GL context refused (typed error): {e}"),
        }
        let _ = wgattn::adapter_summaries();
    }
    let rounds = worker.join().expect("the busy GL thread must not fail");
    assert!(rounds > 0);
}
