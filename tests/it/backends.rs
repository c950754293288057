//! The GL backend (Mesa llvmpipe through EGL) next to Vulkan: the adapter without SHADER_F16
//! and subgroups runs every kernel with the fallback variants, on a representative subset of
//! the grid (the full grid runs on the default adapter in gpu_vs_reference.rs). The tiled
//! flash variant on GL is in gl_tiled.rs. GL tests run one at a time (`common::gl_serial`).

use crate::common;

use std::sync::OnceLock;

use wgattn::validation::{self, GridCase};
use wgattn::{Context, Kernel};

/// The GL adapter (see `common::gl_with`).
fn gl() -> Option<common::GlCtx> {
    static CTX: OnceLock<Result<Context, String>> = OnceLock::new();
    common::gl_with(&CTX, None)
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
    common::run_cases(&ctx, Kernel::ThreePass, &subset());
}

#[test]
fn flash_on_gl() {
    let Some(ctx) = gl() else { return };
    common::run_cases(&ctx, Kernel::Flash, &subset());
}

#[test]
fn split_kv_on_gl() {
    let Some(ctx) = gl() else { return };
    common::run_cases(&ctx, Kernel::SplitKv, &subset());
}

#[test]
fn validation_cases_on_gl() {
    let Some(ctx) = gl() else { return };
    let dir = common::cases_dir();
    for f in validation::case_files(&dir).unwrap() {
        let r = validation::run_case_file(&ctx, &f, Kernel::Auto).unwrap();
        assert!(r.passed(), "{}: {:?}", r.name, r.verdict);
    }
}

/// The adapter a default context opens is the first one `adapter_summaries` (and so
/// `wgattn info`) lists among those the `WGATTN_ADAPTER` filter accepts.
#[test]
fn the_chosen_adapter_is_the_first_listed() {
    let Some(ctx) = common::ctx() else { return };
    let _gl = common::gl_serial(); // enumerates GL
    let filter = std::env::var("WGATTN_ADAPTER")
        .unwrap_or_default()
        .to_lowercase();
    let first = wgattn::adapter_summaries()
        .into_iter()
        .find(|a| {
            format!("{} {}", a.info.name, a.info.backend)
                .to_lowercase()
                .contains(&filter)
        })
        .expect("at least one adapter is listed");
    let chosen = ctx.adapter_info();
    assert_eq!(
        (&first.info.name, first.info.backend),
        (&chosen.name, chosen.backend)
    );
}
