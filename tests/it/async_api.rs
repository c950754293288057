//! The asynchronous API (the only one on the web) against the blocking one: same results, the
//! futures are `Send` on native targets, errors come back through them, and a call after a
//! failed one finds the cached buffers in a usable state.

use wgattn::bench::{BenchConfig, Timing};
use wgattn::testdata::{self, Dist};
use wgattn::{AttentionSpec, CausalAlign, Context, ContextOptions, Error, ErrorStats, Inputs};

use crate::common::ctx;

fn assert_send<T: Send>(_: &T) {}

#[test]
fn async_attention_matches_blocking_and_the_reference() {
    let Some(ctx) = ctx() else { return };
    for spec in [
        AttentionSpec::new(2, 8, 2, 33, 100, 64)
            .causal(CausalAlign::BottomRight)
            .kv_lens(vec![100, 1])
            .with_lse(true),
        AttentionSpec::new(1, 3, 3, 7, 7, 16).with_weights(true),
    ] {
        let data = testdata::generate(&spec, Dist::Normal, 4);
        let inputs = data.inputs();
        let future = ctx.attention_with_async(&spec, &inputs);
        assert_send(&future);
        let a = pollster::block_on(future).expect("async");
        let b = ctx.attention_with(&spec, &inputs).expect("blocking");
        assert_eq!(a, b, "the async and blocking paths run the same plan");
        let cpu = wgattn::reference::attention_with(&spec, &inputs).expect("reference");
        let err = ErrorStats::compare(&a.out, &cpu.out);
        assert!(err.within(1e-5), "{err:?}");
        assert_eq!(a.weights.is_some(), spec.return_weights);
    }
}

#[test]
fn async_errors_and_recovery() {
    let Some(ctx) = ctx() else { return };
    let spec = AttentionSpec::new(1, 2, 1, 5, 9, 8);
    let (q, k, v) = testdata::inputs(&spec, Dist::Normal, 5);
    let short = &q[..q.len() - 1];
    match pollster::block_on(ctx.attention_async(&spec, short, &k, &v)) {
        Err(Error::InputLength { tensor, .. }) => assert_eq!(tensor, "q"),
        other => panic!("expected a bad-input error, got {other:?}"),
    }
    let out = pollster::block_on(ctx.attention_async(&spec, &q, &k, &v)).expect("after error");
    let cpu = wgattn::reference::attention_with(&spec, &Inputs::new(&q, &k, &v)).expect("ref");
    assert!(ErrorStats::compare(&out.out, &cpu.out).within(1e-5));
    pollster::block_on(ctx.settle()).expect("nothing left to report");
}

#[test]
fn async_context_and_bench() {
    if ctx().is_none() {
        return;
    }
    let future = Context::with_options_async(ContextOptions::default());
    assert_send(&future);
    let ctx = pollster::block_on(future).expect("context");
    let config = BenchConfig {
        warmup: 0,
        min_runs: 2,
        max_runs: 2,
        target: std::time::Duration::ZERO,
        timing: Timing::Wall,
    };
    let spec = AttentionSpec::new(1, 2, 2, 16, 16, 16);
    let mut calls = 0;
    let r = pollster::block_on(wgattn::bench::bench_async(
        &ctx,
        &spec,
        &config,
        &mut |_, _| calls += 1,
    ))
    .expect("bench");
    assert_eq!((r.runs, calls, r.timing), (2, 2, "wall"));
    assert!(r.min_ms > 0.0 && r.min_ms <= r.median_ms && r.median_ms <= r.max_ms);
}
