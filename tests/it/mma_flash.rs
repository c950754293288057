//! The matrix-tile flash / split-KV variant (`shaders/fused/mma.wgsl`). Its tile multiplies
//! run on cooperative matrices (tensor cores) where the adapter reports an f16×f16→f32 shape,
//! else on the portable helpers — same tile shapes, layouts, staging, masks, online softmax
//! and stores. Here the variant is forced (`ContextOptions::flash_mma`) and checked against the
//! CPU reference on the foundation grid, the option grid, tile edges and the validation cases:
//! through the portable helpers on adapters without cooperative matrices (Mesa 22's lavapipe),
//! f32 and f16 tiles, and on them for f16 where the adapter has them. The cooperative-matrix
//! tests proper (f16 and reduced-precision grids that fail without the feature) are the `coop`
//! test binary (tests/coop, run on Mesa 26's lavapipe by scripts/test-mesa26.sh); every
//! cooperative variant is validated and translated by naga in shaders_naga.rs.

use crate::common;

use std::sync::OnceLock;

use wgattn::testdata::Dist;
use wgattn::validation::{self, GridCase};
use wgattn::{AttentionSpec, Context, ContextOptions, DType, Kernel};

/// The default adapter with the matrix-tile variant forced.
fn mma_ctx() -> Option<&'static Context> {
    static CTX: OnceLock<Context> = OnceLock::new();
    common::ctx()?;
    Some(CTX.get_or_init(|| {
        Context::with_options(ContextOptions {
            flash_mma: Some(true),
            ..Default::default()
        })
        .expect("mma context")
    }))
}

fn cases_of(specs: Vec<AttentionSpec>, dtype: DType) -> Vec<GridCase> {
    specs
        .into_iter()
        .enumerate()
        .map(|(n, spec)| GridCase {
            name: format!("edge {n} {dtype:?}"),
            spec: spec.dtype(dtype).with_lse(true),
            dist: if n == 2 { Dist::Normal30 } else { Dist::Normal },
            seed: 900 + n as u64,
        })
        .collect()
}

/// The shader the plan of `spec` runs first.
fn first_shader(ctx: &Context, spec: &AttentionSpec) -> String {
    ctx.plan(spec).unwrap().shaders()[0].clone()
}

#[test]
fn mma_variant_is_the_one_planned() {
    let Some(ctx) = mma_ctx() else { return };
    for dtype in [DType::F32, DType::F16] {
        for kernel in [Kernel::Flash, Kernel::SplitKv] {
            let spec = AttentionSpec::new(1, 4, 2, 100, 300, 64)
                .dtype(dtype)
                .kernel(kernel);
            let shader = first_shader(ctx, &spec);
            assert!(shader.starts_with("fused/mma.wgsl"), "{kernel}: {shader}");
            // cooperative matrices only for f16 storage on an adapter that reports them
            let coop = dtype == DType::F16 && ctx.caps().coop_f16.is_some();
            assert_eq!(shader.contains("COOP"), coop, "{shader}");
        }
    }
    // Untuned default adapters never pick it where cooperative matrices are not used by
    // default (none, or a CPU adapter's emulated ones).
    let Some(plain) = common::ctx() else { return };
    if plain.caps().coop_by_default().is_none() && plain.caps().mma.is_none() {
        for dtype in [DType::F32, DType::F16] {
            let spec = AttentionSpec::new(1, 4, 2, 100, 300, 64).dtype(dtype);
            assert!(!first_shader(plain, &spec).starts_with("fused/mma.wgsl"));
        }
    }
}

#[test]
fn mma_edges_flash_and_split_kv() {
    let Some(ctx) = mma_ctx() else { return };
    for dtype in [DType::F32, DType::F16] {
        let cases = cases_of(common::mma_edge_specs(), dtype);
        for c in &cases {
            assert!(
                first_shader(ctx, &c.spec.clone().kernel(Kernel::Flash))
                    .starts_with("fused/mma.wgsl"),
                "{}",
                c.name
            );
        }
        common::run_cases(ctx, Kernel::Flash, &cases);
        common::run_cases(ctx, Kernel::SplitKv, &cases);
    }
}

#[test]
fn mma_foundation_grid() {
    let Some(ctx) = mma_ctx() else { return };
    common::run_foundation_grid(ctx, 3e7);
}

#[test]
fn mma_option_grid() {
    let Some(ctx) = mma_ctx() else { return };
    common::run_option_grid(ctx);
}

#[test]
fn mma_validation_cases() {
    let Some(ctx) = mma_ctx() else { return };
    let mut files = validation::case_files(&common::cases_dir()).unwrap();
    files.extend(validation::case_files(&common::own_cases_dir()).unwrap());
    for kernel in [Kernel::Flash, Kernel::SplitKv] {
        for f in &files {
            let r = validation::run_case_file(ctx, f, kernel)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert!(r.passed(), "{}: {:?} with {}", r.name, r.verdict, r.kernel);
        }
    }
}

/// Reduced precision for f32 inputs (`AttentionSpec::reduced_precision`): with the
/// matrix-tile variant forced, f32 inputs are rounded to f16 operands (the shader says TE16)
/// and the result is held to `TOL_REDUCED` on the tile edges with inputs of order 1 (the
/// edge with logits of order 10³ is left out: f16 products cannot meet a bound there). The
/// rounding must show (some error above the f32 tolerance), and without the flag the same
/// plan is exact to f32's tolerance. Unforced, it multiplies on cooperative matrices where
/// they are used by default (GPUs that have them).
#[test]
fn reduced_precision_rounds_f32_to_f16_products() {
    use wgattn::validation::{TOL_F32, TOL_REDUCED, Tolerances};
    let Some(ctx) = mma_ctx() else { return };
    if !ctx.caps().shader_f16 {
        eprintln!(
            "SKIPPED: {} has no SHADER_F16 for f16 operands",
            ctx.adapter_info().name
        );
        return;
    }
    let mut worst: f64 = 0.0;
    for (n, spec) in common::mma_edge_specs()
        .into_iter()
        .enumerate()
        .filter(|(n, _)| *n != 2)
    {
        let reduced = spec.clone().reduced_precision(true).with_lse(true);
        for kernel in [Kernel::Flash, Kernel::SplitKv] {
            let spec = reduced.clone().kernel(kernel);
            let shader = first_shader(ctx, &spec);
            if kernel == Kernel::SplitKv && shader.starts_with("fused/decode.wgsl") {
                // decoding shapes keep the (exact) decoding variant
                continue;
            }
            assert!(shader.contains("TE16"), "edge {n}: {shader}");
            let data = wgattn::testdata::generate(&spec, Dist::Normal, 1300 + n as u64);
            let inputs = data.inputs();
            let gpu = ctx.attention_with(&spec, &inputs).unwrap();
            let cpu = wgattn::reference::attention_with(&spec, &inputs).unwrap();
            let verdict = Tolerances::for_inputs(&spec, &inputs, &cpu.out, TOL_REDUCED)
                .unwrap()
                .verdict(&gpu, &cpu);
            assert!(verdict.passed(), "edge {n} {kernel}: {verdict}");
            let err = wgattn::ErrorStats::compare(&gpu.out, &cpu.out).rel_fro;
            worst = worst.max(err);
            // the same spec without the flag: f32 operands, f32 accuracy
            let exact = spec.clone().reduced_precision(false);
            assert!(!first_shader(ctx, &exact).contains("TE16"));
            let gpu = ctx.attention_with(&exact, &inputs).unwrap();
            let verdict = Tolerances::for_inputs(&exact, &inputs, &cpu.out, TOL_F32)
                .unwrap()
                .verdict(&gpu, &cpu);
            assert!(verdict.passed(), "edge {n} {kernel} exact: {verdict}");
        }
    }
    eprintln!("reduced precision: worst rel_fro {worst:.2e} (bound {TOL_REDUCED:.0e})");
    assert!(
        worst > TOL_F32,
        "f16 rounding did not show: worst {worst:.2e}"
    );
    // unforced: tensor cores where they are used by default, else the exact f32 variants
    let Some(plain) = common::ctx() else { return };
    let spec = AttentionSpec::new(1, 4, 2, 100, 130, 64).reduced_precision(true);
    let shader = first_shader(plain, &spec);
    assert_eq!(
        shader.contains("TE16"),
        plain.caps().coop_by_default().is_some() && plain.caps().shader_f16,
        "{shader}"
    );
}
