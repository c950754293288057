//! GPU against the f64 CPU reference over the foundation grid, for every kernel.

use crate::common;

use wgattn::validation::{self, GridCase};
use wgattn::{AttentionSpec, CausalAlign, Kernel, Layout};

/// Cap per case: keeps the whole grid a few seconds per kernel on lavapipe.
const MAX_FLOPS: f64 = 6e7;

fn run_grid_with(kernel: Kernel, cases: &[GridCase]) {
    let Some(ctx) = common::ctx() else { return };
    common::run_cases(ctx, kernel, cases);
}

#[test]
fn grid_covers_what_the_issue_asks() {
    let cases = validation::grid(MAX_FLOPS);
    let has = |f: &dyn Fn(&AttentionSpec) -> bool| cases.iter().any(|c| f(&c.spec));
    for s in [1, 7, 33, 100, 257] {
        assert!(has(&|x| x.seq_q == s), "seq_q {s}");
        assert!(has(&|x| x.seq_k == s), "seq_k {s}");
    }
    for d in [3, 16, 32, 64, 80, 128, 256] {
        assert!(has(&|x| x.head_dim == d), "head_dim {d}");
    }
    for b in 1..=3 {
        assert!(has(&|x| x.batch == b), "batch {b}");
    }
    assert!(has(&|x| x.q_heads == 8 && x.kv_heads == 2), "GQA 8:2");
    assert!(has(&|x| x.q_heads == 8 && x.kv_heads == 1), "MQA 8:1");
    assert!(has(&|x| x.seq_q < x.seq_k) && has(&|x| x.seq_q > x.seq_k));
    assert!(has(&|x| x.causal == Some(CausalAlign::TopLeft)));
    assert!(has(&|x| x.causal == Some(CausalAlign::BottomRight)));
    assert!(has(&|x| x.kv_lens.as_ref().is_some_and(|l| l.contains(&1))));
    assert!(has(&|x| x.kv_lens.as_ref().is_some_and(|l| l.contains(&0))));
    assert!(has(&|x| x.scale.is_some()));
    assert!(has(&|x| x.layout == Layout::Bshd) && has(&|x| x.layout == Layout::Bhsd));
    use wgattn::testdata::Dist;
    assert!(cases.iter().any(|c| c.dist == Dist::Normal30));
    assert!(cases.iter().any(|c| c.dist == Dist::Offset3));
    assert!(cases.iter().all(|c| c.spec.flops() <= MAX_FLOPS.max(7e7)));
}

#[test]
fn three_pass_matches_reference_on_grid() {
    run_grid_with(Kernel::ThreePass, &validation::grid(MAX_FLOPS));
}

#[test]
fn flash_matches_reference_on_grid() {
    run_grid_with(Kernel::Flash, &validation::grid(MAX_FLOPS));
}

#[test]
fn split_kv_matches_reference_on_grid() {
    run_grid_with(Kernel::SplitKv, &validation::grid(MAX_FLOPS));
}

#[test]
fn auto_matches_reference_on_grid() {
    run_grid_with(Kernel::Auto, &validation::grid(MAX_FLOPS));
}

#[test]
fn fully_masked_rows_are_zero_with_neg_inf_lse() {
    let Some(ctx) = common::ctx() else { return };
    let spec = AttentionSpec::new(2, 2, 1, 5, 16, 8)
        .kv_lens(vec![0, 16])
        .with_lse(true)
        .with_weights(true);
    let (q, k, v) = wgattn::testdata::inputs(&spec, wgattn::testdata::Dist::Normal, 3);
    let out = ctx.attention(&spec, &q, &k, &v).unwrap();
    let half = spec.q_len() / 2;
    assert!(
        out.out[..half].iter().all(|&x| x == 0.0),
        "batch 0 rows are zero"
    );
    assert!(out.out[half..].iter().all(|x| x.is_finite() && *x != 0.0));
    let lse = out.lse.unwrap();
    assert!(lse[..lse.len() / 2].iter().all(|&x| x == f32::NEG_INFINITY));
    assert!(lse[lse.len() / 2..].iter().all(|x| x.is_finite()));
    let w = out.weights.unwrap();
    assert!(w[..w.len() / 2].iter().all(|&x| x == 0.0));
}

#[test]
fn weights_match_reference() {
    let Some(ctx) = common::ctx() else { return };
    for spec in [
        AttentionSpec::new(2, 4, 2, 33, 70, 32).causal(CausalAlign::BottomRight),
        AttentionSpec::new(1, 2, 2, 7, 100, 80)
            .layout(Layout::Bshd)
            .kv_lens(vec![50]),
    ] {
        let c = common::check(
            ctx,
            &spec.with_weights(true).with_lse(true),
            wgattn::testdata::Dist::Normal,
            5,
        );
        assert!(c.weights.is_some() && c.lse.is_some());
    }
}
