//! Flash and split-KV specifics: tile edges, masked splits, the workgroup-memory fallback,
//! agreement with three-pass, and a long sequence checked on sampled rows.

use crate::common;

use std::sync::OnceLock;

use wgattn::reference::{self, RowId};
use wgattn::testdata::{self, Dist};
use wgattn::validation;
use wgattn::{AttentionSpec, CausalAlign, Context, ContextOptions, ErrorStats, Kernel, Layout};

/// A context that uses the workgroup-memory variants even where subgroups exist.
fn fallback_ctx() -> Option<&'static Context> {
    common::ctx()?;
    static CTX: OnceLock<Context> = OnceLock::new();
    Some(CTX.get_or_init(|| {
        Context::with_options(ContextOptions {
            disable_subgroups: true,
            ..Default::default()
        })
        .expect("fallback context")
    }))
}

/// Shapes aimed at the fused kernels' edges.
fn edge_specs() -> Vec<AttentionSpec> {
    vec![
        // seq_k not a multiple of the key block, seq_q not a multiple of the row block
        AttentionSpec::new(1, 2, 2, 67, 131, 64),
        // causal rows whose visible keys end inside a block, both alignments, Sq ≠ Sk
        AttentionSpec::new(2, 4, 2, 45, 77, 32).causal(CausalAlign::TopLeft),
        AttentionSpec::new(2, 4, 2, 45, 77, 32).causal(CausalAlign::BottomRight),
        // kv_lens = 1 and 0 (fully masked rows) with GQA across row blocks
        AttentionSpec::new(3, 6, 2, 30, 50, 16).kv_lens(vec![1, 0, 37]),
        // head_dim classes with padding and no vec4 (odd head_dim), bshd
        AttentionSpec::new(1, 3, 1, 40, 40, 3).layout(Layout::Bshd),
        AttentionSpec::new(1, 2, 1, 20, 60, 80)
            .layout(Layout::Bshd)
            .causal(CausalAlign::BottomRight),
        AttentionSpec::new(1, 1, 1, 9, 33, 256).causal(CausalAlign::BottomRight),
    ]
}

fn check_all(ctx: &Context, kernel: Kernel, specs: &[AttentionSpec]) {
    for (n, spec) in specs.iter().enumerate() {
        let spec = spec.clone().kernel(kernel).with_lse(true);
        let c = common::check(ctx, &spec, Dist::Normal, 300 + n as u64);
        assert!(c.lse.is_some());
    }
}

#[test]
fn flash_edges() {
    let Some(ctx) = common::ctx() else { return };
    check_all(ctx, Kernel::Flash, &edge_specs());
}

#[test]
fn split_kv_edges() {
    let Some(ctx) = common::ctx() else { return };
    check_all(ctx, Kernel::SplitKv, &edge_specs());
}

#[test]
fn splits_holding_only_masked_keys() {
    let Some(ctx) = common::ctx() else { return };
    // 2048 keys but only 100 (and 1) valid: most splits see no key at all.
    let spec = AttentionSpec::new(2, 8, 2, 3, 2048, 64)
        .kv_lens(vec![100, 1])
        .causal(CausalAlign::BottomRight)
        .kernel(Kernel::SplitKv);
    let plan = ctx.plan(&spec).unwrap();
    assert!(plan.splits() >= 2, "splits {}", plan.splits());
    common::check(ctx, &spec.with_lse(true), Dist::Normal, 9);
}

#[test]
fn workgroup_memory_fallback_matches_reference() {
    let Some(ctx) = fallback_ctx() else { return };
    assert_eq!(ctx.caps().subgroup_size, None);
    check_all(ctx, Kernel::Flash, &edge_specs());
    check_all(ctx, Kernel::SplitKv, &edge_specs()[..3]);
    // the 6 cheapest grid cases of distinct variants (each workgroup-memory variant costs
    // seconds to compile on CPU adapters; the edges above cover the rest)
    let cases = common::distinct_variants(ctx, Kernel::Flash, validation::grid(2e7), 6);
    assert!(cases.len() >= 4, "{} cases", cases.len());
    common::run_cases(ctx, Kernel::Flash, &cases);
}

#[test]
fn flash_agrees_with_three_pass() {
    let Some(ctx) = common::ctx() else { return };
    let spec = AttentionSpec::new(2, 8, 4, 130, 130, 64)
        .causal(CausalAlign::TopLeft)
        .kv_lens(vec![130, 77])
        .with_lse(true);
    let (q, k, v) = testdata::inputs(&spec, Dist::Normal, 4);
    let a = ctx
        .attention(&spec.clone().kernel(Kernel::Flash), &q, &k, &v)
        .unwrap();
    let b = ctx
        .attention(&spec.clone().kernel(Kernel::ThreePass), &q, &k, &v)
        .unwrap();
    let e = ErrorStats::compare(&a.out, &b.out);
    assert!(e.within(2e-6), "{e:?}");
    let e = ErrorStats::compare(a.lse.as_ref().unwrap(), b.lse.as_ref().unwrap());
    assert!(e.max_abs < 1e-5, "{e:?}");
}

#[test]
fn auto_picks_split_kv_only_for_decoding_shapes() {
    let Some(ctx) = common::ctx() else { return };
    let prefill = AttentionSpec::new(1, 8, 8, 512, 512, 64);
    assert_eq!(ctx.plan(&prefill).unwrap().kernel(), Kernel::Flash);
    let weights = prefill.clone().with_weights(true);
    assert_eq!(ctx.plan(&weights).unwrap().kernel(), Kernel::ThreePass);
    let decode = AttentionSpec::new(1, 1, 1, 1, 65536, 64);
    assert_eq!(ctx.plan(&decode).unwrap().kernel(), Kernel::SplitKv);
    assert!(matches!(
        ctx.plan(&weights.kernel(Kernel::Flash)),
        Err(wgattn::Error::KernelUnsupported { .. })
    ));
}

/// seq 4096, head_dim 16 through `auto`, checked against the reference on sampled rows
/// (a full reference would be 4096² per head).
#[test]
fn long_sequence_sampled_rows() {
    let Some(ctx) = common::ctx() else { return };
    let spec = AttentionSpec::new(1, 1, 1, 4096, 4096, 16)
        .causal(CausalAlign::BottomRight)
        .with_lse(true);
    assert_eq!(ctx.plan(&spec).unwrap().kernel(), Kernel::Flash);
    let (q, k, v) = testdata::inputs(&spec, Dist::Normal, 77);
    let gpu = ctx.attention(&spec, &q, &k, &v).unwrap();
    assert_eq!(gpu.out.iter().filter(|x| x.is_nan()).count(), 0);
    let rows: Vec<RowId> = [0, 1, 63, 64, 1000, 2047, 3333, 4094, 4095]
        .iter()
        .map(|&i| RowId { b: 0, h: 0, i })
        .collect();
    let cpu = reference::attention_rows(&spec, &wgattn::Inputs::new(&q, &k, &v), &rows).unwrap();
    for r in cpu {
        let at = r.row.i * 16;
        let e = ErrorStats::compare(&gpu.out[at..at + 16], &r.out);
        assert!(e.within(1e-5), "row {}: {e:?}", r.row.i);
        let lse = gpu.lse.as_ref().unwrap()[r.row.i];
        assert!(
            (lse - r.lse).abs() < 1e-4,
            "row {} lse {lse} vs {}",
            r.row.i,
            r.lse
        );
    }
}
