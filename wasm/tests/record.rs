//! The browser's benchmark record serialises exactly as a line of `wgattn bench --json`
//! (needs an adapter: lavapipe in CI; fails without one unless WGATTN_ALLOW_NO_GPU=1).

use wgattn::bench::{BenchConfig, Timing};
use wgattn::{AttentionSpec, CausalAlign, Context};

#[test]
fn bench_record_matches_the_cli_json() {
    let ctx = match Context::new() {
        Ok(ctx) => ctx,
        Err(e) if std::env::var("WGATTN_ALLOW_NO_GPU").as_deref() == Ok("1") => {
            eprintln!("SKIPPED: no adapter ({e})");
            return;
        }
        Err(e) => panic!("no adapter: {e} (set WGATTN_ALLOW_NO_GPU=1 to skip)"),
    };
    let config = BenchConfig {
        warmup: 1,
        min_runs: 2,
        max_runs: 2,
        target: std::time::Duration::ZERO,
        timing: Timing::Auto,
    };
    for spec in [
        AttentionSpec::new(1, 4, 2, 33, 40, 16).causal(CausalAlign::BottomRight),
        AttentionSpec::new(2, 2, 2, 1, 65, 32).kv_lens(vec![65, 3]),
    ] {
        let r = pollster::block_on(wgattn::bench::bench_async(
            &ctx,
            &spec,
            &config,
            &mut |_, _| {},
        ))
        .expect("bench");
        let web = wgattn_wasm::record::BenchRecord::new(ctx.adapter_info(), &r).json();
        let cli = wgattn_cli::report::line(&wgattn_cli::report::BenchRecord::new(&ctx, &r));
        assert_eq!(web, cli);
        assert!(web.contains("\"runs\":2"), "{web}");
    }
}
