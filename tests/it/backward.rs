//! The backward pass (issue 16): GPU gradients against the f64 reference gradients, on grids
//! like the forward's (odd sizes, GQA, Sq ≠ Sk, both layouts, every mask and option, logits
//! of order 10³), on lavapipe and a subset on GL; the GPU-resident plan; typed errors.

use crate::common;

use std::sync::OnceLock;

use wgattn::testdata::{self, Dist, Rng};
use wgattn::validation::{self, GridCase, TOL_F32, TOL_F32_LARGE};
use wgattn::{
    Alibi, AttentionSpec, BackwardBuffers, BackwardMode, Broadcast, CausalAlign, Context, DType,
    Error, ErrorStats, Inputs, Layout, Tensor,
};

/// Relative Frobenius tolerance of the f32 gradients: the forward's, 1e-5 for unit-scale
/// inputs and 1e-4 for logits of order 10³ (N(0, 30) inputs). The backward's logits are
/// summed in two floats (shaders/backward/backward.inc.wgsl), so P is as exact as f32 allows: on
/// lavapipe the gradients of every case here stay within 1e-6 but the soft-capped and biased
/// ones (≤ 7e-6; ≤ 1.2e-5 with logits of order 10³, where the soft-cap's own f32 tanh is the
/// limit).
fn f32_tol(dist: Dist) -> f64 {
    if dist == Dist::Normal30 {
        TOL_F32_LARGE
    } else {
        TOL_F32
    }
}

/// One gradient's comparison: its name, error and the bound it is held to (max-abs for f16,
/// relative Frobenius for f32).
struct GradCheck {
    name: &'static str,
    err: ErrorStats,
    bound: f64,
    on_max_abs: bool,
}

impl GradCheck {
    fn passed(&self) -> bool {
        self.err.nan_count == 0
            && if self.on_max_abs {
                self.err.max_abs <= self.bound
            } else {
                self.err.rel_fro <= self.bound
            }
    }
}

/// Runs the backward of `spec` on the GPU with inputs from `dist`/`seed` (bias and mask as
/// `testdata::generate` makes them), the forward's out and lse from the reference, and an
/// N(0, 1) upstream gradient; compares each gradient with `reference::attention_backward`.
fn check_grads(
    ctx: &Context,
    spec: &AttentionSpec,
    dist: Dist,
    seed: u64,
    mode: BackwardMode,
) -> Vec<GradCheck> {
    let data = testdata::generate(spec, dist, seed);
    let inputs = data.inputs();
    let fwd = wgattn::reference::attention_with(&spec.clone().with_lse(true), &inputs)
        .expect("reference forward");
    let d_out = Rng::new(seed ^ 0xD0).normals(spec.q_len(), 0.0, 1.0);
    let lse = fwd.lse.as_ref().expect("lse");
    let gpu = ctx
        .attention_backward_mode(spec, &inputs, &fwd.out, lse, &d_out, mode)
        .unwrap_or_else(|e| panic!("GPU backward failed for {spec:?}: {e}"));
    let cpu = wgattn::reference::attention_backward(spec, &inputs, Tensor::F32(&d_out))
        .expect("reference backward");
    let plain = (spec.dtype == DType::F16).then(|| {
        wgattn::reference::attention_backward_f16_plain(spec, &inputs, Tensor::F32(&d_out))
            .expect("plain f16 backward")
    });
    let mut list = vec![
        ("dq", &gpu.dq, &cpu.dq, plain.as_ref().map(|p| &p.dq)),
        ("dk", &gpu.dk, &cpu.dk, plain.as_ref().map(|p| &p.dk)),
        ("dv", &gpu.dv, &cpu.dv, plain.as_ref().map(|p| &p.dv)),
    ];
    assert_eq!(gpu.dbias.is_some(), spec.bias.is_some());
    if let (Some(g), Some(c)) = (&gpu.dbias, &cpu.dbias) {
        list.push(("dbias", g, c, plain.as_ref().and_then(|p| p.dbias.as_ref())));
    }
    list.into_iter()
        .map(|(name, g, c, p)| {
            let err = ErrorStats::compare(g, c);
            let (bound, on_max_abs) = match p {
                Some(p) => (2.0 * ErrorStats::compare(p, c).max_abs + 1e-5, true),
                None => (f32_tol(dist), false),
            };
            GradCheck {
                name,
                err,
                bound,
                on_max_abs,
            }
        })
        .collect()
}

/// Runs every case in the default mode and fails with the list of gradients out of tolerance.
fn run(ctx: &Context, cases: &[GridCase]) {
    run_mode(ctx, cases, BackwardMode::default());
}

/// [`run`] in `mode`; prints the largest f32 relative error and f16 error/bound ratio.
fn run_mode(ctx: &Context, cases: &[GridCase], mode: BackwardMode) {
    let mut failures = Vec::new();
    let (mut worst_f32, mut worst_f16) = (0.0f64, 0.0f64);
    for case in cases {
        for c in check_grads(ctx, &case.spec, case.dist, case.seed, mode) {
            if c.on_max_abs {
                worst_f16 = worst_f16.max(c.err.max_abs / c.bound);
            } else {
                worst_f32 = worst_f32.max(c.err.rel_fro);
            }
            if !c.passed() {
                failures.push(format!(
                    "{}: {} {:?} (bound {:.2e} on {})",
                    case.name,
                    c.name,
                    c.err,
                    c.bound,
                    if c.on_max_abs { "max_abs" } else { "rel_fro" }
                ));
            }
        }
    }
    println!(
        "{} cases, {mode:?}: worst f32 rel_fro {worst_f32:.3e}, worst f16 max_abs/bound {worst_f16:.3}",
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{} gradient(s) out of tolerance on {}:\n{}",
        failures.len(),
        ctx.adapter_info().name,
        failures.join("\n")
    );
}

fn case(name: &str, spec: AttentionSpec, dist: Dist, seed: u64) -> GridCase {
    GridCase {
        name: format!("{name}: {}", validation::describe(&spec)),
        spec,
        dist,
        seed,
    }
}

/// Shapes: odd sizes 1, 7, 33, 100, 257; GQA and MQA; Sq ≠ Sk both ways; both layouts;
/// causal both alignments; key padding; head_dim 1 to 80; logits of order 10³.
fn shape_grid() -> Vec<GridCase> {
    let specs = [
        AttentionSpec::new(1, 1, 1, 1, 1, 1),
        AttentionSpec::new(1, 2, 1, 7, 33, 16),
        AttentionSpec::new(2, 4, 2, 33, 33, 64).causal(CausalAlign::TopLeft),
        AttentionSpec::new(1, 3, 1, 100, 33, 5)
            .layout(Layout::Bshd)
            .causal(CausalAlign::BottomRight),
        AttentionSpec::new(2, 2, 2, 33, 100, 32)
            .causal(CausalAlign::BottomRight)
            .kv_lens(vec![100, 40]),
        AttentionSpec::new(1, 4, 1, 1, 257, 64).causal(CausalAlign::BottomRight),
        AttentionSpec::new(1, 2, 2, 257, 7, 8).layout(Layout::Bshd),
        AttentionSpec::new(3, 2, 1, 7, 257, 80).kv_lens(vec![1, 257, 100]),
        AttentionSpec::new(1, 2, 1, 33, 33, 256).causal(CausalAlign::TopLeft),
    ];
    let mut cases = Vec::new();
    for (n, spec) in specs.into_iter().enumerate() {
        cases.push(case("shape", spec.clone(), Dist::Normal, 900 + n as u64));
        if n % 2 == 1 {
            cases.push(case("shape", spec, Dist::Normal30, 950 + n as u64));
        }
    }
    cases
}

/// Every option of the forward's option grid (bias and mask with each broadcast, windows,
/// ALiBi, soft-cap, f16, all combined) on its bases, skipping the decoding base.
fn option_cases() -> Vec<GridCase> {
    validation::option_grid()
        .into_iter()
        .filter(|c| c.spec.seq_q > 1)
        .collect()
}

#[test]
fn backward_shapes_match_reference() {
    let Some(ctx) = common::ctx() else { return };
    run(ctx, &shape_grid());
}

#[test]
fn backward_options_match_reference() {
    let Some(ctx) = common::ctx() else { return };
    run(ctx, &option_cases());
}

#[test]
fn backward_extra_options_match_reference() {
    let Some(ctx) = common::ctx() else { return };
    let base = AttentionSpec::new(2, 4, 2, 33, 40, 16).causal(CausalAlign::TopLeft);
    let cases = [
        case(
            "softcap 30 logits 1e3",
            base.clone().softcap(30.0),
            Dist::Normal30,
            1,
        ),
        case("scale 0.3", base.clone().scale(0.3), Dist::Normal, 2),
        case(
            "scale 0.3 logits 1e3",
            base.clone().scale(0.3),
            Dist::Normal30,
            5,
        ),
        case(
            "mask [B,1] + alibi + window",
            base.clone()
                .mask(Broadcast {
                    per_batch: true,
                    per_head: false,
                })
                .alibi(Alibi::Standard)
                .window(4, 2),
            Dist::Normal,
            3,
        ),
        case(
            "bias [1,H] on GQA, logits 1e3",
            base.clone().bias(Broadcast {
                per_batch: false,
                per_head: true,
            }),
            Dist::Normal30,
            4,
        ),
        case(
            "f16 bshd bias [B,1] softcap",
            base.layout(Layout::Bshd)
                .dtype(DType::F16)
                .bias(Broadcast {
                    per_batch: true,
                    per_head: false,
                })
                .softcap(10.0),
            Dist::Normal,
            5,
        ),
    ];
    run(ctx, &cases);
}

/// FlashAttention-2's scheme (the forward's lse, D = rowsum(dO ∘ O)) on unit-scale inputs.
#[test]
fn backward_forward_lse_mode_matches_reference() {
    let Some(ctx) = common::ctx() else { return };
    let cases: Vec<GridCase> = shape_grid()
        .into_iter()
        .filter(|c| c.dist == Dist::Normal)
        .chain(option_cases().into_iter().step_by(4))
        .collect();
    run_mode(ctx, &cases, BackwardMode::ForwardLse);
}

/// Fully masked rows (kv_lens 0, a mask row of false) give zero gradients, never NaN.
#[test]
fn backward_fully_masked_rows_are_zero() {
    let Some(ctx) = common::ctx() else { return };
    let spec = AttentionSpec::new(2, 2, 1, 9, 12, 8)
        .kv_lens(vec![12, 0])
        .mask(Broadcast::SHARED);
    let data = testdata::generate(&spec, Dist::Normal, 7);
    let fwd = ctx
        .attention_with(&spec.clone().with_lse(true), &data.inputs())
        .unwrap();
    let lse = fwd.lse.unwrap();
    assert!(lse.contains(&f32::NEG_INFINITY));
    let d_out = Rng::new(8).normals(spec.q_len(), 0.0, 1.0);
    let g = ctx
        .attention_backward(&spec, &data.inputs(), &fwd.out, &lse, &d_out)
        .unwrap();
    let (hq, hk) = (spec.q_len() / 2, spec.kv_len() / 2);
    assert!(g.dq[hq..].iter().all(|&x| x == 0.0), "dq of batch 1");
    assert!(g.dk[hk..].iter().chain(&g.dv[hk..]).all(|&x| x == 0.0));
    // rows i % 5 == 3 are fully masked by the generated mask
    for h in 0..2 {
        let at = spec.q_strides().at(0, h, 3);
        assert!(g.dq[at..at + 8].iter().all(|&x| x == 0.0));
    }
    assert!(g.dq[..hq].iter().any(|&x| x != 0.0));
    assert!(g.dq.iter().chain(&g.dk).chain(&g.dv).all(|x| x.is_finite()));
}

/// GPU forward (its out and lse) then GPU backward in both modes, against the reference.
#[test]
fn backward_after_gpu_forward() {
    let Some(ctx) = common::ctx() else { return };
    let spec = AttentionSpec::new(2, 4, 2, 33, 57, 32)
        .causal(CausalAlign::BottomRight)
        .bias(Broadcast::SHARED);
    let data = testdata::generate(&spec, Dist::Normal, 11);
    let fwd = ctx
        .attention_with(&spec.clone().with_lse(true), &data.inputs())
        .unwrap();
    let d_out = Rng::new(12).normals(spec.q_len(), 0.0, 1.0);
    let cpu =
        wgattn::reference::attention_backward(&spec, &data.inputs(), Tensor::F32(&d_out)).unwrap();
    for mode in [BackwardMode::Recompute, BackwardMode::ForwardLse] {
        let gpu = ctx
            .attention_backward_mode(
                &spec,
                &data.inputs(),
                &fwd.out,
                fwd.lse.as_ref().unwrap(),
                &d_out,
                mode,
            )
            .unwrap();
        for (name, g, c) in [
            ("dq", &gpu.dq, &cpu.dq),
            ("dk", &gpu.dk, &cpu.dk),
            ("dv", &gpu.dv, &cpu.dv),
            (
                "dbias",
                gpu.dbias.as_ref().unwrap(),
                cpu.dbias.as_ref().unwrap(),
            ),
        ] {
            let e = ErrorStats::compare(g, c);
            assert!(e.within(TOL_F32), "{mode:?} {name}: {e:?}");
        }
    }
}

/// The GPU-resident path: the plan records into the caller's encoder with caller buffers;
/// dbias is skipped when no dbias buffer is given; bad buffers are typed errors.
#[test]
fn backward_plan_encodes_into_caller_buffers() {
    let Some(ctx) = common::ctx() else { return };
    let spec = AttentionSpec::new(1, 2, 1, 20, 30, 12).bias(Broadcast::FULL);
    let data = testdata::generate(&spec, Dist::Normal, 21);
    let fwd =
        wgattn::reference::attention_with(&spec.clone().with_lse(true), &data.inputs()).unwrap();
    let d_out = Rng::new(22).normals(spec.q_len(), 0.0, 1.0);
    let cpu =
        wgattn::reference::attention_backward(&spec, &data.inputs(), Tensor::F32(&d_out)).unwrap();
    let plan = ctx.plan_backward(&spec).unwrap();
    assert_eq!(plan.shaders().len(), 4, "{:?}", plan.shaders());
    let sizes = plan.sizes();
    let dev = ctx.device();
    use wgpu::BufferUsages as U;
    let up = |data: &[f32]| {
        use wgpu::util::DeviceExt;
        dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(data),
            usage: U::STORAGE,
        })
    };
    let out_buf = |size: u64| {
        dev.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: U::STORAGE | U::COPY_SRC,
            mapped_at_creation: false,
        })
    };
    let (q, k, v) = (up(&data.q), up(&data.k), up(&data.v));
    let (out, lse, dout) = (up(&fwd.out), up(fwd.lse.as_ref().unwrap()), up(&d_out));
    let bias = up(data.bias.as_ref().unwrap());
    let (dq, dk, dv) = (out_buf(sizes.dq), out_buf(sizes.dkv), out_buf(sizes.dkv));
    let bufs = BackwardBuffers {
        q: &q,
        k: &k,
        v: &v,
        out: &out,
        lse: &lse,
        d_out: &dout,
        dq: &dq,
        dk: &dk,
        dv: &dv,
        bias: Some(&bias),
        mask: None,
        dbias: None,
    };
    let mut enc = dev.create_command_encoder(&Default::default());
    // bad buffers first: nothing recorded, typed errors
    let small = out_buf(8);
    for (bad, name) in [
        (BackwardBuffers { dq: &small, ..bufs }, "dq"),
        (BackwardBuffers { dk: &q, ..bufs }, "dk"),
        (BackwardBuffers { bias: None, ..bufs }, "bias"),
    ] {
        match plan.encode(&mut enc, &bad) {
            Err(Error::BadBuffer { buffer, .. }) => assert_eq!(buffer, name),
            other => panic!("expected BadBuffer({name}), got {other:?}"),
        }
    }
    plan.encode(&mut enc, &bufs).unwrap();
    let read = |buf: &wgpu::Buffer, size: u64, enc: &mut wgpu::CommandEncoder| {
        let r = dev.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: U::MAP_READ | U::COPY_DST,
            mapped_at_creation: false,
        });
        enc.copy_buffer_to_buffer(buf, 0, &r, 0, size);
        r
    };
    let rq = read(&dq, sizes.dq, &mut enc);
    let rk = read(&dk, sizes.dkv, &mut enc);
    let rv = read(&dv, sizes.dkv, &mut enc);
    ctx.queue().submit([enc.finish()]);
    for (r, c, name) in [
        (&rq, &cpu.dq, "dq"),
        (&rk, &cpu.dk, "dk"),
        (&rv, &cpu.dv, "dv"),
    ] {
        r.slice(..).map_async(wgpu::MapMode::Read, |_| {});
        dev.poll(wgpu::PollType::wait_indefinitely()).unwrap();
        let got: Vec<f32> = bytemuck::pod_collect_to_vec(&r.slice(..).get_mapped_range().unwrap());
        let e = ErrorStats::compare(&got, c);
        assert!(e.within(TOL_F32), "{name}: {e:?}");
    }
}

/// Bad host input is a typed error naming the tensor.
#[test]
fn backward_bad_input_is_typed() {
    let Some(ctx) = common::ctx() else { return };
    let spec = AttentionSpec::new(1, 1, 1, 4, 4, 4);
    let x = vec![0.5f32; 16];
    let lse = vec![0.0f32; 4];
    let inputs = Inputs::new(&x, &x, &x);
    match ctx.attention_backward(&spec, &inputs, &x, &lse, &x[..15]) {
        Err(Error::InputLength { tensor, .. }) => assert_eq!(tensor, "d_out"),
        other => panic!("{other:?}"),
    }
    match ctx.attention_backward(&spec, &inputs, &x, &lse[..3], &x) {
        Err(Error::InputLength { tensor, .. }) => assert_eq!(tensor, "lse"),
        other => panic!("{other:?}"),
    }
    let nan_lse = vec![0.0, f32::NAN, 0.0, 0.0];
    match ctx.attention_backward(&spec, &inputs, &x, &nan_lse, &x) {
        Err(Error::NonFinite { tensor, index, .. }) => assert_eq!((tensor, index), ("lse", 1)),
        other => panic!("{other:?}"),
    }
    let mut bad = x.clone();
    bad[3] = f32::INFINITY;
    match ctx.attention_backward(&spec, &inputs, &x, &lse, &bad) {
        Err(Error::NonFinite { tensor, index, .. }) => assert_eq!((tensor, index), ("d_out", 3)),
        other => panic!("{other:?}"),
    }
}

/// A tensor larger than one storage binding is a typed error naming it (the backward binds
/// whole tensors; it does not split them like the forward).
#[test]
fn backward_too_large_for_a_binding_is_typed() {
    if common::ctx().is_none() {
        return;
    }
    static SMALL: OnceLock<Result<Context, String>> = OnceLock::new();
    let ctx = SMALL
        .get_or_init(|| {
            Context::with_options(wgattn::ContextOptions {
                max_storage_binding: Some(4096),
                ..Default::default()
            })
            .map_err(|e| e.to_string())
        })
        .as_ref()
        .expect("context with a small binding limit");
    // q: 1·2·40·16 f32 = 5120 bytes > 4096
    let spec = AttentionSpec::new(1, 2, 1, 40, 8, 16);
    match ctx.plan_backward(&spec) {
        Err(Error::TooLarge {
            what,
            needed,
            allowed,
            ..
        }) => {
            assert!(what.contains("`q`"), "{what}");
            assert_eq!((needed, allowed), (5120, 4096));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // a small one still runs there
    let small = AttentionSpec::new(1, 2, 1, 9, 8, 16);
    ctx.plan_backward(&small).unwrap();
}

/// A subset on the GL adapter (packed f16, no subgroups, 16 storage buffers per stage).
#[test]
fn backward_on_gl() {
    static GL: OnceLock<Result<Context, String>> = OnceLock::new();
    let Some(ctx) = common::gl_with(&GL, None) else {
        return;
    };
    let cases: Vec<GridCase> = shape_grid()
        .into_iter()
        .step_by(3)
        .chain(option_cases().into_iter().step_by(9))
        .chain(
            option_cases()
                .into_iter()
                .filter(|c| c.spec.dtype == DType::F16)
                .take(2),
        )
        .collect();
    run(&ctx, &cases);
}

/// The variants a backward plan runs are among `shaders::all_variants` (so the naga test
/// covers them).
#[test]
fn backward_plan_variants_are_listed() {
    let Some(ctx) = common::ctx() else { return };
    let all: std::collections::HashSet<String> = wgattn::shaders::all_variants()
        .iter()
        .map(|v| v.key())
        .collect();
    let specs = [
        AttentionSpec::new(1, 2, 1, 5, 6, 7),
        AttentionSpec::new(1, 2, 1, 5, 6, 200)
            .dtype(DType::F16)
            .bias(Broadcast::SHARED)
            .mask(Broadcast::FULL)
            .softcap(3.0)
            .alibi(Alibi::Standard),
    ];
    for spec in specs {
        for mode in [BackwardMode::Recompute, BackwardMode::ForwardLse] {
            for key in ctx.plan_backward_with(&spec, mode).unwrap().shaders() {
                assert!(all.contains(&key), "{key} is not in all_variants()");
            }
        }
    }
}

/// Every backward variant validates with naga (the full translation test in shaders_naga.rs
/// covers them through `shaders::all_variants`).
#[test]
fn backward_variants_validate() {
    let all: Vec<_> = wgattn::shaders::all_variants()
        .into_iter()
        .filter(|v| v.template.starts_with("backward/"))
        .collect();
    assert!(all.len() > 100, "{} backward variants", all.len());
    for v in all {
        let src = v.render().unwrap();
        if let Err(e) = common::validate_wgsl(&src) {
            panic!("{}: {e}", v.key());
        }
    }
}
