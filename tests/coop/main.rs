//! The cooperative-matrix (tensor-core) tests: the matrix-tile flash / split-KV variant
//! (`shaders/fused/mma.wgsl`) with its tile products on cooperative matrices, for f16 storage
//! and for reduced-precision f32, against the f64 CPU reference — tile edges, the foundation
//! and option grids, head_dim 1..256, GQA, both layouts, both causal alignments, kv_lens and
//! fully masked rows, flash and split-KV.
//!
//! Every test needs an adapter with f16×f16→f32 cooperative matrices and **fails** without one
//! (never skips). So this binary is not in `cargo test`'s default set (`test = false` in
//! Cargo.toml): `scripts/test-mesa26.sh` runs it on Mesa 26's lavapipe (8×8 f16), and
//! `cargo test --test coop` runs it on any machine whose adapter has them.

#[path = "../it/common.rs"]
mod common;

use std::sync::OnceLock;

use wgattn::testdata::Dist;
use wgattn::validation::{self, GridCase, TOL_F32, TOL_REDUCED, Tolerances};
use wgattn::{AttentionSpec, CausalAlign, Context, ContextOptions, DType, Kernel, Layout};

/// The first adapter with the matrix-tile variant forced (`WGATTN_FLASH_MMA=1`); panics, so
/// that every test fails, where the adapter has no cooperative matrices or no SHADER_F16.
fn coop_ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        let ctx = Context::with_options(ContextOptions {
            flash_mma: Some(true),
            tune_cache: wgattn::TuneCacheSource::Off,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("no GPU adapter: {e}"));
        let info = ctx.adapter_info();
        assert!(
            ctx.caps().coop_f16.is_some() && ctx.caps().shader_f16,
            "{} ({}) reports no f16×f16→f32 cooperative matrices with SHADER_F16: these tests \
             need them (Mesa 26 lavapipe: scripts/test-mesa26.sh)",
            info.name,
            info.driver_info
        );
        ctx
    })
}

/// The cooperative-matrix edge of the adapter (8 on lavapipe, 16 on most GPUs).
fn edge() -> u32 {
    coop_ctx().caps().coop_f16.unwrap()
}

/// The shaders of the plan of `spec` on `ctx`.
fn shaders(ctx: &Context, spec: &AttentionSpec) -> Vec<String> {
    ctx.plan(spec).unwrap().shaders()
}

/// True when the plan of `spec` runs the split-KV decoding variant (which keeps exact f32
/// products for decoding shapes, coop or not).
fn decodes(ctx: &Context, spec: &AttentionSpec) -> bool {
    shaders(ctx, spec)[0].starts_with("fused/decode.wgsl")
}

/// Asserts that the plan of `spec` multiplies on cooperative matrices of the adapter's edge:
/// its first shader is the matrix-tile variant with `COOP` and `MT=<edge>`, f16 operands.
fn assert_coop(ctx: &Context, spec: &AttentionSpec, what: &str) {
    let first = &shaders(ctx, spec)[0];
    assert!(
        first.starts_with("fused/mma.wgsl")
            && first.contains("COOP")
            && first.contains(&format!("MT={}", edge()))
            && first.contains("TE16"),
        "{what}: the plan runs {first}, not the cooperative-matrix variant"
    );
}

/// Runs `cases` with `kernel` on the coop context; every case that is not a decoding shape of
/// split-KV must run the cooperative variant. f16 storage is judged by
/// [`validation::run_grid_case`] (FlashAttention's rule for f16); reduced-precision f32 within
/// [`TOL_REDUCED`]. Returns the worst relative Frobenius error of out, and fails with the list
/// of cases out of tolerance.
fn run_coop(kernel: Kernel, cases: &[GridCase]) -> f64 {
    let ctx = coop_ctx();
    let mut failures = Vec::new();
    let mut worst: f64 = 0.0;
    let mut on_coop = 0;
    for case in cases {
        let spec = case.spec.clone().kernel(kernel).with_lse(true);
        if !(kernel == Kernel::SplitKv && decodes(ctx, &spec)) {
            assert_coop(ctx, &spec, &case.name);
            on_coop += 1;
        }
        let data = wgattn::testdata::generate(&spec, case.dist, case.seed);
        let inputs = data.inputs();
        let result = ctx.attention_with(&spec, &inputs).and_then(|gpu| {
            let cpu = wgattn::reference::attention_with(&spec, &inputs)?;
            let tol = if spec.dtype == DType::F32 {
                TOL_REDUCED
            } else {
                case.tolerance()
            };
            let verdict =
                Tolerances::for_inputs(&spec, &inputs, &cpu.out, tol)?.verdict(&gpu, &cpu);
            assert!(
                gpu.out.iter().all(|x| x.is_finite()),
                "{}: NaN or ∞ in out",
                case.name
            );
            worst = worst.max(wgattn::ErrorStats::compare(&gpu.out, &cpu.out).rel_fro);
            Ok(verdict)
        });
        match result {
            Ok(v) if v.passed() => {}
            Ok(v) => failures.push(format!("{}: {v}", case.name)),
            Err(e) => failures.push(format!("{}: error {e}", case.name)),
        }
    }
    assert!(on_coop > 0, "no case ran on cooperative matrices");
    assert!(
        failures.is_empty(),
        "{} of {} cases failed with {kernel} on cooperative matrices:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    worst
}

/// `cases` with f16 storage.
fn f16(cases: Vec<GridCase>) -> Vec<GridCase> {
    cases
        .into_iter()
        .map(|c| GridCase {
            name: format!("{} (f16)", c.name),
            spec: c.spec.dtype(DType::F16),
            ..c
        })
        .collect()
}

/// `cases` as reduced-precision f32 (f16 operands on cooperative matrices), without the
/// inputs of order 30 (logits of order 10³, where f16 products cannot meet a bound) and
/// without the f16-storage options.
fn reduced(cases: Vec<GridCase>) -> Vec<GridCase> {
    cases
        .into_iter()
        .filter(|c| c.dist != Dist::Normal30 && c.spec.dtype == DType::F32)
        .map(|c| GridCase {
            name: format!("{} (reduced f32)", c.name),
            spec: c.spec.reduced_precision(true),
            ..c
        })
        .collect()
}

/// The tile edges of [`common::mma_edge_specs`], the third with logits of order 10³.
fn edge_cases() -> Vec<GridCase> {
    common::mma_edge_specs()
        .into_iter()
        .enumerate()
        .map(|(n, spec)| GridCase {
            name: format!("edge {n}"),
            spec: spec.with_lse(true),
            dist: if n == 2 { Dist::Normal30 } else { Dist::Normal },
            seed: 900 + n as u64,
        })
        .collect()
}

/// head_dim 1..256: every size up to 17, then multiples of the tile and their neighbours, on
/// a GQA shape with seq_q ≠ seq_k, alternating layouts and causal alignments.
fn head_dim_cases() -> Vec<GridCase> {
    let dims = (1..=17).chain([
        23, 24, 31, 32, 33, 40, 48, 63, 64, 65, 72, 80, 96, 100, 112, 127, 128, 129, 160, 192, 200,
        255, 256,
    ]);
    dims.enumerate()
        .map(|(n, d)| {
            let mut spec = AttentionSpec::new(1, 4, 2, 37, 70, d).with_lse(true);
            if n % 2 == 1 {
                spec = spec.layout(Layout::Bshd);
            }
            spec = match n % 3 {
                1 => spec.causal(CausalAlign::TopLeft),
                2 => spec.causal(CausalAlign::BottomRight),
                _ => spec,
            };
            GridCase {
                name: format!("head_dim {d}"),
                spec,
                dist: Dist::Normal,
                seed: 4000 + n as u64,
            }
        })
        .collect()
}

#[test]
fn the_adapter_has_cooperative_matrices_and_the_plans_use_them() {
    let ctx = coop_ctx();
    let text = ctx.caps().variants().join("\n");
    assert!(text.contains("cooperative matrices"), "{text}");
    for kernel in [Kernel::Flash, Kernel::SplitKv] {
        let spec = AttentionSpec::new(1, 4, 2, 100, 300, 64).kernel(kernel);
        assert_coop(ctx, &spec.clone().dtype(DType::F16), "f16");
        assert_coop(ctx, &spec.clone().reduced_precision(true), "reduced f32");
        // f32 without the flag keeps f32 products (portable helpers, no cooperative matrices)
        let exact = &shaders(ctx, &spec)[0];
        assert!(
            exact.starts_with("fused/mma.wgsl") && !exact.contains("COOP"),
            "{exact}"
        );
    }
}

/// Untuned, a CPU adapter with cooperative matrices (lavapipe's are emulated: the matrix-tile
/// variant runs several times slower than the rows variants there) keeps the rows variants for
/// f16 and reduced precision; a GPU multiplies on them.
#[test]
fn untuned_default_uses_cooperative_matrices_only_on_gpus() {
    coop_ctx();
    let plain = common::ctx().expect("GPU adapter");
    for spec in [
        AttentionSpec::new(1, 8, 8, 512, 512, 64).dtype(DType::F16),
        AttentionSpec::new(1, 8, 8, 512, 512, 64).reduced_precision(true),
    ] {
        let first = &shaders(plain, &spec)[0];
        assert_eq!(
            first.contains("COOP"),
            !plain.caps().is_cpu(),
            "{:?} adapter: {first}",
            plain.caps().device_type
        );
    }
}

#[test]
fn coop_edges_f16_flash_and_split_kv() {
    run_coop(Kernel::Flash, &f16(edge_cases()));
    run_coop(Kernel::SplitKv, &f16(edge_cases()));
}

#[test]
fn coop_foundation_grid_f16() {
    let cases = f16(validation::grid(3e7));
    run_coop(Kernel::Flash, &cases);
    run_coop(
        Kernel::SplitKv,
        &cases.into_iter().step_by(2).collect::<Vec<_>>(),
    );
}

#[test]
fn coop_option_grid_f16() {
    let cases = f16(validation::option_grid());
    run_coop(Kernel::Flash, &cases);
    run_coop(
        Kernel::SplitKv,
        &cases.into_iter().step_by(3).collect::<Vec<_>>(),
    );
}

#[test]
fn coop_head_dims_1_to_256() {
    run_coop(Kernel::Flash, &f16(head_dim_cases()));
    run_coop(Kernel::SplitKv, &f16(head_dim_cases()));
    run_coop(Kernel::Flash, &reduced(head_dim_cases()));
}

/// Reduced precision: f32 inputs rounded to f16 operands on cooperative matrices, held to
/// [`TOL_REDUCED`]; the rounding must show (some error above f32's tolerance).
#[test]
fn coop_reduced_precision_f32() {
    let mut worst: f64 = 0.0;
    for kernel in [Kernel::Flash, Kernel::SplitKv] {
        worst = worst.max(run_coop(kernel, &reduced(edge_cases())));
        worst = worst.max(run_coop(kernel, &reduced(validation::grid(3e7))));
    }
    worst = worst.max(run_coop(Kernel::Flash, &reduced(validation::option_grid())));
    eprintln!("reduced precision on cooperative matrices: worst rel_fro {worst:.2e}");
    assert!(
        worst > TOL_F32,
        "f16 rounding did not show: worst {worst:.2e}"
    );
}

/// Fully masked rows (kv_lens 0, with and without a window; causal bottom-right with
/// seq_q > seq_k) give 0 and lse −∞, never NaN, on cooperative matrices.
#[test]
fn coop_fully_masked_rows_are_zero() {
    let ctx = coop_ctx();
    let specs = [
        AttentionSpec::new(2, 4, 2, 40, 50, 64).kv_lens(vec![0, 50]),
        AttentionSpec::new(3, 2, 1, 40, 50, 32)
            .kv_lens(vec![7, 0, 0])
            .window(5, 5),
        AttentionSpec::new(1, 2, 2, 70, 20, 16).causal(CausalAlign::BottomRight),
    ];
    for (n, spec) in specs.into_iter().enumerate() {
        for dtype in [DType::F16, DType::F32] {
            let spec = spec
                .clone()
                .dtype(dtype)
                .reduced_precision(dtype == DType::F32)
                .with_lse(true);
            assert_coop(ctx, &spec, &format!("masked {n} {dtype:?}"));
            let data = wgattn::testdata::generate(&spec, Dist::Normal, 70 + n as u64);
            let inputs = data.inputs();
            let gpu = ctx.attention_with(&spec, &inputs).unwrap();
            let cpu = wgattn::reference::attention_with(&spec, &inputs).unwrap();
            let lse = gpu.lse.as_ref().expect("lse");
            let cpu_lse = cpu.lse.as_ref().expect("reference lse");
            // bhsd: lse row r is out row r
            let d = spec.head_dim;
            let mut masked = 0;
            for (r, (&l, &cl)) in lse.iter().zip(cpu_lse).enumerate() {
                if cl == f32::NEG_INFINITY {
                    masked += 1;
                    assert_eq!(l, f32::NEG_INFINITY, "masked {n}: row {r} lse {l}");
                    let row = &gpu.out[r * d..(r + 1) * d];
                    assert!(row.iter().all(|&x| x == 0.0), "masked {n}: row {r} {row:?}");
                }
            }
            assert!(masked > 0, "masked {n}: no fully masked row");
            assert!(
                gpu.out.iter().all(|x| x.is_finite()),
                "masked {n}: NaN in out"
            );
            let tol = if dtype == DType::F32 {
                TOL_REDUCED
            } else {
                TOL_F32
            };
            let verdict = Tolerances::for_inputs(&spec, &inputs, &cpu.out, tol)
                .unwrap()
                .verdict(&gpu, &cpu);
            assert!(verdict.passed(), "masked {n} {dtype:?}: {verdict}");
        }
    }
}
