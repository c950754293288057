//! The GL backend (Mesa llvmpipe through EGL) next to Vulkan: the adapter without SHADER_F16
//! and subgroups runs every kernel with the fallback variants, on a representative subset of
//! the grid (the full grid runs on the default adapter in gpu_vs_reference.rs), and the
//! workgroup-tiled flash variant that GPUs' GL drivers get.

mod common;

use std::sync::OnceLock;

use wgattn::validation::{self, GridCase};
use wgattn::{Context, ContextOptions, Kernel};

/// The GL adapter. Required (test fails) under WGATTN_REQUIRE_GPU=1: CI machines have Mesa's
/// GL driver alongside lavapipe.
fn gl() -> Option<&'static Context> {
    static CTX: OnceLock<Result<Context, String>> = OnceLock::new();
    gl_with(&CTX, None)
}

/// The GL adapter with the workgroup-tiled flash variant forced (what a GPU's GL driver gets).
fn gl_tiled() -> Option<&'static Context> {
    static CTX: OnceLock<Result<Context, String>> = OnceLock::new();
    gl_with(&CTX, Some(true))
}

fn gl_with(
    cell: &'static OnceLock<Result<Context, String>>,
    flash_tiles: Option<bool>,
) -> Option<&'static Context> {
    let ctx = cell.get_or_init(|| {
        let gl = wgattn::adapter_summaries()
            .into_iter()
            .find(|a| a.info.backend == wgpu::Backend::Gl)
            .ok_or("no GL adapter")?;
        Context::with_options(ContextOptions {
            adapter: Some(format!("{} {}", gl.info.name, gl.info.backend)),
            flash_tiles,
            ..Default::default()
        })
        .map_err(|e| e.to_string())
    });
    match ctx {
        Ok(c) => Some(c),
        Err(e) if std::env::var("WGATTN_REQUIRE_GPU").as_deref() == Ok("1") => {
            panic!("WGATTN_REQUIRE_GPU=1 but no GL context: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            None
        }
    }
}

/// Every fourth grid case, all edge cases, every third option case (GL compiles each shader
/// variant slowly; the full grid runs on Vulkan).
fn subset() -> Vec<GridCase> {
    let mut cases: Vec<GridCase> = validation::grid(2e7).into_iter().step_by(4).collect();
    cases.extend(validation::edge_cases());
    cases.extend(validation::option_grid().into_iter().step_by(3));
    cases
}

#[test]
fn gl_adapter_selects_fallback_variants() {
    let Some(ctx) = gl() else { return };
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
}

#[test]
fn three_pass_on_gl() {
    let Some(ctx) = gl() else { return };
    common::run_cases(ctx, Kernel::ThreePass, &subset());
}

#[test]
fn flash_on_gl() {
    let Some(ctx) = gl() else { return };
    common::run_cases(ctx, Kernel::Flash, &subset());
}

#[test]
fn split_kv_on_gl() {
    let Some(ctx) = gl() else { return };
    common::run_cases(ctx, Kernel::SplitKv, &subset());
}

#[test]
fn validation_cases_on_gl() {
    let Some(ctx) = gl() else { return };
    let Some(dir) = common::cases_dir() else {
        return;
    };
    for f in validation::case_files(&dir).unwrap() {
        let r = validation::run_case_file(ctx, &f, Kernel::Auto).unwrap();
        assert!(r.passed(), "{}: {:?}", r.name, r.out);
    }
}

/// GPUs' GL drivers get the workgroup-tiled flash variant (no subgroups needed): forced here on
/// llvmpipe GL for flash and split-KV over the validation cases and the edge cases.
#[test]
fn tiled_flash_on_gl() {
    let Some(ctx) = gl_tiled() else { return };
    assert!(ctx.caps().flash_tiles);
    let Some(dir) = common::cases_dir() else {
        return;
    };
    for kernel in [Kernel::Flash, Kernel::SplitKv] {
        for f in validation::case_files(&dir).unwrap() {
            let r = validation::run_case_file(ctx, &f, kernel).unwrap();
            assert!(r.passed(), "{}: {:?} with {kernel}", r.name, r.out);
        }
        common::run_cases(ctx, kernel, &validation::edge_cases());
    }
}
