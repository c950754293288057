//! The GL backend (Mesa llvmpipe through EGL) next to Vulkan: the adapter without SHADER_F16
//! and subgroups runs every kernel with its fallback variants (packed f16, workgroup-memory
//! fused kernels), and the workgroup-tiled flash variant that GPUs' GL drivers get, forced.
//!
//! One test, run sequentially while it holds `common::gl_serial`: GL work of one process
//! shares one device, and wgpu's GL backend panics when a thread waits more than 1 s for it
//! while another compiles a shader (gl_concurrent.rs covers GL from several threads). GL on
//! llvmpipe compiles each new shader variant in seconds, so the grids here keep the cheapest
//! case of each of a few distinct variants (`common::distinct_variants`); the default adapter
//! runs every variant of the grids.

use crate::common;

use std::sync::OnceLock;

use wgattn::validation::{self, GridCase};
use wgattn::{Context, Kernel};

/// The grid and edge cases, and every fourth option case (bias, mask, window, ALiBi,
/// soft-cap, packed f16 in turn). Their flag combinations compile the same WGSL that the
/// option grid runs on lavapipe through the same fallback variants (options.rs,
/// fused_kernels.rs); on GL each new variant costs seconds of compilation.
fn cases() -> Vec<GridCase> {
    let mut cases: Vec<GridCase> = validation::grid(2e7);
    cases.extend(validation::edge_cases());
    cases.extend(validation::option_grid().into_iter().step_by(4));
    cases
}

/// Seconds since `start`, for the progress lines.
fn secs(start: std::time::Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

#[test]
fn gl_adapter_runs_every_kernel_and_variant() {
    static CTX: OnceLock<Result<Context, String>> = OnceLock::new();
    static TILED: OnceLock<Result<Context, String>> = OnceLock::new();
    static MMA: OnceLock<Result<Context, String>> = OnceLock::new();
    let Some(ctx) = common::gl_with(&CTX, None) else {
        return;
    };

    // wgpu's GL backend has neither SHADER_F16 nor subgroups: the fallbacks are chosen.
    assert_eq!(ctx.adapter_info().backend, wgpu::Backend::Gl);
    assert!(
        !ctx.caps().shader_f16,
        "wgpu's GL backend has no SHADER_F16"
    );
    assert_eq!(
        ctx.caps().subgroup_size,
        None,
        "wgpu's GL backend has no subgroups"
    );
    let f16 = wgattn::AttentionSpec::new(1, 2, 2, 8, 8, 16).dtype(wgattn::DType::F16);
    assert!(ctx.plan(&f16).unwrap().packs_f16());

    let start = std::time::Instant::now();
    for kernel in [Kernel::ThreePass, Kernel::Flash, Kernel::SplitKv] {
        // split-KV runs flash's variants with SPLIT set plus the combine pass: fewer of them
        let max = if kernel == Kernel::SplitKv { 6 } else { 12 };
        let chosen = common::distinct_variants(&ctx, kernel, cases(), max);
        assert!(chosen.len() >= 4, "{kernel}: {} cases", chosen.len());
        common::run_cases(&ctx, kernel, &chosen);
        eprintln!("GL {kernel}: {} cases, {:.1} s", chosen.len(), secs(start));
    }

    // The public validation cases, auto kernel.
    for f in validation::case_files(&common::cases_dir()).unwrap() {
        let r = validation::run_case_file(&ctx, &f, Kernel::Auto).unwrap();
        assert!(r.passed(), "{}: {:?}", r.name, r.verdict);
    }
    eprintln!("GL validation cases: {:.1} s", secs(start));

    // The workgroup-tiled variant (what GPUs' GL drivers get), forced on llvmpipe, over the
    // validation cases and one edge/option case per variant.
    let tiled = common::gl_context(&TILED, Some(true)).expect("second GL context");
    assert_eq!(tiled.adapter_info().backend, wgpu::Backend::Gl);
    assert!(tiled.caps().flash_tiles());
    for kernel in [Kernel::Flash, Kernel::SplitKv] {
        for f in validation::case_files(&common::cases_dir()).unwrap() {
            let r = validation::run_case_file(tiled, &f, kernel).unwrap();
            assert!(
                r.passed(),
                "{}: {:?} with tiled {kernel}",
                r.name,
                r.verdict
            );
        }
        let mut edge = validation::edge_cases();
        edge.extend(validation::option_grid().into_iter().step_by(4));
        let chosen = common::distinct_variants(tiled, kernel, edge, 8);
        common::run_cases(tiled, kernel, &chosen);
        eprintln!(
            "GL tiled {kernel}: {} cases, {:.1} s",
            chosen.len(),
            secs(start)
        );
    }

    // The matrix-tile variant with its portable tile multiplies (f32 tiles: packed f16 here),
    // forced, over the validation cases and one edge/option case per variant.
    let mma = common::gl_context_with(
        &MMA,
        wgattn::ContextOptions {
            flash_mma: Some(true),
            ..Default::default()
        },
    )
    .expect("third GL context");
    assert_eq!(mma.adapter_info().backend, wgpu::Backend::Gl);
    let probe = wgattn::AttentionSpec::new(1, 2, 2, 8, 8, 64);
    assert!(mma.plan(&probe).unwrap().shaders()[0].starts_with("fused/mma.wgsl"));
    for kernel in [Kernel::Flash, Kernel::SplitKv] {
        for f in validation::case_files(&common::cases_dir()).unwrap() {
            let r = validation::run_case_file(mma, &f, kernel).unwrap();
            assert!(r.passed(), "{}: {:?} with mma {kernel}", r.name, r.verdict);
        }
        let mut edge = validation::edge_cases();
        edge.extend(validation::option_grid().into_iter().step_by(4));
        let chosen = common::distinct_variants(mma, kernel, edge, 6);
        common::run_cases(mma, kernel, &chosen);
        eprintln!(
            "GL mma {kernel}: {} cases, {:.1} s",
            chosen.len(),
            secs(start)
        );
    }
}
