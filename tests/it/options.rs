//! f16, bias, mask, sliding window, ALiBi and soft-capping: each alone and combined with
//! causal, kv_lens and GQA, in every kernel, against the CPU reference.

use crate::common;

use std::sync::OnceLock;

use wgattn::testdata::{self, Dist};
use wgattn::validation::{self, GridCase};
use wgattn::{
    AttentionSpec, Broadcast, CausalAlign, Context, ContextOptions, DType, Error, Inputs, Kernel,
};

#[test]
fn options_three_pass() {
    let Some(ctx) = common::ctx() else { return };
    common::run_cases(ctx, Kernel::ThreePass, &validation::option_grid());
}

#[test]
fn options_flash() {
    let Some(ctx) = common::ctx() else { return };
    common::run_cases(ctx, Kernel::Flash, &validation::option_grid());
}

#[test]
fn options_split_kv() {
    let Some(ctx) = common::ctx() else { return };
    common::run_cases(ctx, Kernel::SplitKv, &validation::option_grid());
}

/// Without SHADER_F16 (as on GL) f16 is read packed in u32 words and the output packed by an
/// extra pass; without subgroups the fused kernels use workgroup memory.
#[test]
fn options_on_packed_f16_and_workgroup_memory_fallback() {
    if common::ctx().is_none() {
        return; // skipping allowed and announced by common::ctx()
    }
    static CTX: OnceLock<Result<Context, String>> = OnceLock::new();
    let ctx = CTX.get_or_init(|| {
        Context::with_options(ContextOptions {
            disable_shader_f16: true,
            disable_subgroups: true,
            ..Default::default()
        })
        .map_err(|e| e.to_string())
    });
    let ctx = ctx
        .as_ref()
        .expect("context without SHADER_F16 and subgroups");
    assert!(!ctx.caps().shader_f16);
    let cases: Vec<GridCase> = validation::option_grid()
        .into_iter()
        .filter(|c| c.spec.dtype == DType::F16 || c.name.starts_with("mask [B"))
        .collect();
    for kernel in [Kernel::ThreePass, Kernel::Flash, Kernel::SplitKv] {
        // the 6 cheapest cases of distinct variants (workgroup memory is slow on CPU adapters)
        common::run_cases(
            ctx,
            kernel,
            &common::distinct_variants(ctx, kernel, cases.clone(), 6),
        );
    }
    // odd head_dim: f16 values of neighbouring rows share u32 words
    let odd = AttentionSpec::new(1, 3, 1, 9, 20, 5)
        .dtype(DType::F16)
        .with_lse(true);
    let plan = ctx.plan(&odd).unwrap();
    assert!(plan.packs_f16());
    let case = GridCase {
        name: "odd f16".into(),
        spec: odd,
        dist: Dist::Normal,
        seed: 3,
    };
    common::run_cases(ctx, Kernel::Flash, std::slice::from_ref(&case));
}

#[test]
fn f16_error_is_within_twice_the_plain_f16_error() {
    let Some(ctx) = common::ctx() else { return };
    let spec = AttentionSpec::new(2, 8, 2, 100, 257, 64)
        .dtype(DType::F16)
        .causal(CausalAlign::BottomRight);
    let data = testdata::generate(&spec, Dist::Normal, 8);
    let exact = wgattn::reference::attention_with(&spec, &data.inputs()).unwrap();
    let plain = wgattn::reference::attention_f16_plain(&spec, &data.inputs()).unwrap();
    let plain_err = wgattn::ErrorStats::compare(&plain.out, &exact.out).max_abs;
    assert!(
        plain_err > 1e-4,
        "the plain f16 error {plain_err} should be f16-sized"
    );
    for kernel in [Kernel::ThreePass, Kernel::Flash, Kernel::SplitKv] {
        let gpu = ctx
            .attention_with(&spec.clone().kernel(kernel), &data.inputs())
            .unwrap();
        let err = wgattn::ErrorStats::compare(&gpu.out, &exact.out).max_abs;
        assert!(
            err <= 2.0 * plain_err + 1e-5,
            "{kernel}: {err} vs plain {plain_err}"
        );
        // f16 outputs are f16 values
        assert!(
            gpu.out
                .iter()
                .all(|&x| half::f16::from_f32(x).to_f32() == x)
        );
    }
}

#[test]
fn rows_fully_masked_by_the_mask_are_zero() {
    let Some(ctx) = common::ctx() else { return };
    let spec = AttentionSpec::new(1, 2, 2, 4, 6, 8)
        .mask(Broadcast::SHARED)
        .with_lse(true);
    let (q, k, v) = testdata::inputs(&spec, Dist::Normal, 2);
    let mut mask = vec![true; 4 * 6];
    mask[6..12].fill(false); // row 1: nothing visible
    for kernel in [Kernel::ThreePass, Kernel::Flash, Kernel::SplitKv] {
        let out = ctx
            .attention_with(
                &spec.clone().kernel(kernel),
                &Inputs::new(&q, &k, &v).with_mask(&mask),
            )
            .unwrap();
        for h in 0..2 {
            let row = &out.out[(h * 4 + 1) * 8..(h * 4 + 2) * 8];
            assert!(row.iter().all(|&x| x == 0.0), "{kernel}: {row:?}");
            assert_eq!(out.lse.as_ref().unwrap()[h * 4 + 1], f32::NEG_INFINITY);
        }
        assert!(out.out.iter().all(|x| !x.is_nan()));
    }
}

#[test]
fn broadcast_and_shape_errors_are_typed() {
    let spec = AttentionSpec::new(2, 4, 2, 5, 7, 8);
    let e = Broadcast::from_shape("bias", &[2, 3, 5, 7], &spec)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bias.shape = [2, 3, 5, 7] must be [2 or 1, 4 or 1, 5, 7]"),
        "{e}"
    );
    assert!(Broadcast::from_shape("mask", &[1, 4, 5, 6], &spec).is_err());
    assert!(Broadcast::from_shape("mask", &[4, 5, 7], &spec).is_err());
    assert_eq!(
        Broadcast::from_shape("bias", &[2, 1, 5, 7], &spec).unwrap(),
        Broadcast {
            per_batch: true,
            per_head: false
        }
    );
    let (q, k, v) = testdata::inputs(&spec, Dist::Normal, 1);
    let with_bias = spec.clone().bias(Broadcast::FULL);
    // declared but missing, wrong length, given but undeclared, NaN
    let check = |s: &AttentionSpec, i: &Inputs| s.check_inputs(i).unwrap_err().to_string();
    assert!(check(&with_bias, &Inputs::new(&q, &k, &v)).contains("bias = missing"));
    let short = vec![0.0f32; 10];
    assert!(matches!(
        with_bias.check_inputs(&Inputs::new(&q, &k, &v).with_bias(&short)),
        Err(Error::InputLength { tensor: "bias", .. })
    ));
    assert!(check(&spec, &Inputs::new(&q, &k, &v).with_bias(&short)).contains("declares no bias"));
    let mut nan = vec![0.0f32; 2 * 4 * 5 * 7];
    nan[3] = f32::NAN;
    assert!(matches!(
        with_bias.check_inputs(&Inputs::new(&q, &k, &v).with_bias(&nan)),
        Err(Error::NonFinite {
            tensor: "bias",
            index: 3,
            ..
        })
    ));
    nan[3] = f32::NEG_INFINITY; // −∞ is a masked key, allowed
    assert!(
        with_bias
            .check_inputs(&Inputs::new(&q, &k, &v).with_bias(&nan))
            .is_ok()
    );
    let bad = [
        spec.clone().window(-2, 0),
        spec.clone().softcap(0.0),
        spec.clone().softcap(f32::NAN),
        spec.clone().alibi(wgattn::Alibi::Slopes(vec![0.5; 3])),
    ];
    for s in bad {
        assert!(
            matches!(
                s.validate(&wgattn::DeviceLimits::unbounded()),
                Err(Error::InvalidSpec { .. })
            ),
            "{s:?}"
        );
    }
}

#[test]
fn standard_alibi_slopes_match_the_paper() {
    let s = wgattn::standard_alibi_slopes(8);
    let expect: Vec<f32> = (1..=8).map(|i| 2f32.powi(-i)).collect();
    assert_eq!(s, expect);
    let s = wgattn::standard_alibi_slopes(12);
    assert_eq!(s.len(), 12);
    assert_eq!(s[8], 2f32.powf(-0.5)); // first of the interleaved slopes of 16 heads
}
