//! Helpers shared by the GPU test files: one context per test binary, the REQUIRE_GPU rule,
//! and comparison against the CPU reference.
#![allow(dead_code)]

use std::sync::OnceLock;

use wgattn::testdata::{self, Dist};
use wgattn::{AttentionSpec, CausalAlign, Context, ErrorStats, Layout};

/// Whether a missing adapter may skip a GPU test: only with `WGATTN_ALLOW_NO_GPU=1` (and never
/// under `WGATTN_REQUIRE_GPU=1`). By default a GPU test without an adapter fails.
pub fn skipping_allowed() -> bool {
    std::env::var("WGATTN_ALLOW_NO_GPU").as_deref() == Ok("1")
        && std::env::var("WGATTN_REQUIRE_GPU").as_deref() != Ok("1")
}

/// Handles a context that could not be opened: fails the test, or — when skipping is allowed —
/// says so on the real stderr (not captured by the test harness, so it is always visible).
pub fn no_context(what: &str, e: &str) {
    if !skipping_allowed() {
        panic!("no {what}: {e} (set WGATTN_ALLOW_NO_GPU=1 to skip GPU tests instead)");
    }
    use std::io::Write;
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: no {what} ({e})");
}

/// The shared GPU context. Without an adapter the test fails, unless `WGATTN_ALLOW_NO_GPU=1`
/// (then `None`, with a visible SKIPPED line). It ignores the user's tune cache, so the tests
/// check the untuned defaults whatever `wgattn tune` stored on this machine (tuning.rs tests
/// tuned choices with caches of its own).
pub fn ctx() -> Option<&'static Context> {
    static CTX: OnceLock<Result<Context, String>> = OnceLock::new();
    let open = || {
        Context::with_options(wgattn::ContextOptions {
            tune_cache: wgattn::TuneCacheSource::Off,
            ..Default::default()
        })
    };
    match CTX.get_or_init(|| open().map_err(|e| e.to_string())) {
        Ok(c) => Some(c),
        Err(e) => {
            no_context("GPU adapter", e);
            None
        }
    }
}

/// Tolerance for a distribution: 1e-5 for unit-scale inputs, 1e-4 for logits of order 1e3.
pub fn tolerance(dist: Dist) -> f64 {
    match dist {
        Dist::Normal30 => 1e-4,
        _ => 1e-5,
    }
}

/// One comparison of GPU against the CPU reference.
#[derive(Debug)]
pub struct Checked {
    pub out: ErrorStats,
    pub lse: Option<ErrorStats>,
    pub weights: Option<ErrorStats>,
}

/// Runs `spec` on the GPU and the CPU reference with inputs from `dist`/`seed`; asserts no NaN
/// anywhere and the error within `tolerance(dist)`. Returns the error measures.
pub fn check(ctx: &Context, spec: &AttentionSpec, dist: Dist, seed: u64) -> Checked {
    let (q, k, v) = testdata::inputs(spec, dist, seed);
    check_with(ctx, spec, &q, &k, &v, tolerance(dist))
}

/// Like [`check`] with given inputs and tolerance: the GPU result is judged against the f64
/// reference by [`wgattn::validation::Tolerances`] (out, lse with its −∞ placement, weights).
pub fn check_with(
    ctx: &Context,
    spec: &AttentionSpec,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    tol: f64,
) -> Checked {
    let gpu = ctx
        .attention(spec, q, k, v)
        .unwrap_or_else(|e| panic!("GPU attention failed for {spec:?}: {e}"));
    let cpu = wgattn::reference::attention(spec, q, k, v).expect("reference");
    let inputs = wgattn::Inputs::new(q, k, v);
    let verdict = wgattn::validation::Tolerances::new(spec, &inputs, tol, None).verdict(&gpu, &cpu);
    assert!(verdict.passed(), "{verdict} for {spec:?}");
    assert_eq!(
        gpu.lse.is_some(),
        verdict.lse.is_some(),
        "lse not checked for {spec:?}"
    );
    Checked {
        out: verdict.out.stats,
        lse: verdict.lse.map(|l| l.stats),
        weights: verdict.weights.map(|w| w.stats),
    }
}

/// The public validation cases, kept in the repository (`tests/data/validation`).
pub fn cases_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/validation")
}

/// wgattn's own case files with bias, mask, window, ALiBi, soft-cap and f16 (`tests/data/cases`).
pub fn own_cases_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cases")
}

/// A path in this test process's own temporary folder (`prefix` names the test module).
pub fn tmp_in(prefix: &str, name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wgattn-{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The foundation grid (cases up to `max_flops`) with the flash kernel, every other case of
/// it with split-KV: how a forced fused variant is checked.
pub fn run_foundation_grid(ctx: &Context, max_flops: f64) {
    let cases = wgattn::validation::grid(max_flops);
    run_cases(ctx, wgattn::Kernel::Flash, &cases);
    let every_other: Vec<_> = cases.into_iter().step_by(2).collect();
    run_cases(ctx, wgattn::Kernel::SplitKv, &every_other);
}

/// The option grid with the flash kernel, every third case of it with split-KV.
pub fn run_option_grid(ctx: &Context) {
    let cases = wgattn::validation::option_grid();
    run_cases(ctx, wgattn::Kernel::Flash, &cases);
    let every_third: Vec<_> = cases.into_iter().step_by(3).collect();
    run_cases(ctx, wgattn::Kernel::SplitKv, &every_third);
}

/// Runs every grid case with `kernel` on `ctx` against the CPU reference and fails with the
/// list of cases out of tolerance (or erroring).
pub fn run_cases(ctx: &Context, kernel: wgattn::Kernel, cases: &[wgattn::validation::GridCase]) {
    let mut failures = Vec::new();
    for case in cases {
        match wgattn::validation::run_grid_case(ctx, case, kernel) {
            Ok(r) if r.passed() => {}
            Ok(r) => failures.push(format!("{}: {}", case.name, r.verdict)),
            Err(e) => failures.push(format!("{}: error {e}", case.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed with {kernel} on {}:\n{}",
        failures.len(),
        cases.len(),
        ctx.adapter_info().name,
        failures.join("\n")
    );
}

/// GL tests run one at a time (they share one GL device, and wgpu's GL backend panics when a
/// thread waits more than 1 s for the device while another compiles a shader), and so does
/// anything that enumerates GL adapters.
pub fn gl_serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A GL context held for one test, with the [`gl_serial`] lock.
pub struct GlCtx {
    /// The context (shared by every GL test of the binary).
    pub ctx: &'static Context,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl std::ops::Deref for GlCtx {
    type Target = Context;
    fn deref(&self) -> &Context {
        self.ctx
    }
}

/// The GL adapter, with `flash_tiles` passed to its `ContextOptions`, held with the
/// [`gl_serial`] lock. Required like every adapter (see [`ctx`]): Mesa's GL driver is
/// installed alongside lavapipe.
pub fn gl_with(
    cell: &'static OnceLock<Result<Context, String>>,
    flash_tiles: Option<bool>,
) -> Option<GlCtx> {
    let serial = gl_serial();
    gl_context(cell, flash_tiles).map(|ctx| GlCtx {
        ctx,
        _serial: serial,
    })
}

/// Like [`gl_with`] for a caller that already holds [`gl_serial`] (a second GL context in
/// the same test).
pub fn gl_context(
    cell: &'static OnceLock<Result<Context, String>>,
    flash_tiles: Option<bool>,
) -> Option<&'static Context> {
    gl_context_with(
        cell,
        wgattn::ContextOptions {
            flash_tiles,
            ..Default::default()
        },
    )
}

/// Like [`gl_context`] with more options (the adapter filter is set here).
pub fn gl_context_with(
    cell: &'static OnceLock<Result<Context, String>>,
    options: wgattn::ContextOptions,
) -> Option<&'static Context> {
    let ctx = cell.get_or_init(|| {
        let gl = wgattn::adapter_summaries()
            .into_iter()
            .find(|a| a.info.backend == wgpu::Backend::Gl)
            .ok_or("no GL adapter")?;
        Context::with_options(wgattn::ContextOptions {
            adapter: Some(format!("{} {}", gl.info.name, gl.info.backend)),
            ..options
        })
        .map_err(|e| e.to_string())
    });
    match ctx {
        Ok(c) => Some(c),
        Err(e) => {
            no_context("GL context", e);
            None
        }
    }
}

/// The cheapest case of `cases` for each shader variant they run (with `kernel` on `ctx`), at
/// most `max` cases: cases are taken cheapest first (by FLOPs) and kept when they run a
/// variant that no kept case runs — no variant compiled and run twice. For the adapters and
/// variants where every new variant costs seconds (workgroup-memory fallbacks on CPU
/// adapters, GL on llvmpipe); the default adapter runs the whole grids.
pub fn distinct_variants(
    ctx: &Context,
    kernel: wgattn::Kernel,
    mut cases: Vec<wgattn::validation::GridCase>,
    max: usize,
) -> Vec<wgattn::validation::GridCase> {
    cases.sort_by(|a, b| a.spec.flops().total_cmp(&b.spec.flops()));
    let mut seen = std::collections::HashSet::new();
    cases
        .into_iter()
        .filter(|c| {
            let spec = c.spec.clone().kernel(kernel);
            let shaders = ctx
                .plan(&spec)
                .unwrap_or_else(|e| panic!("planning {}: {e}", c.name))
                .shaders();
            let before = seen.len();
            seen.extend(shaders);
            seen.len() > before
        })
        .take(max)
        .collect()
}

/// Parses and validates WGSL with naga, as wgpu does before handing it to a back end.
/// Returns the module and its validation info.
/// Like [`validate_wgsl`] for a rendered variant: error positions are followed by the
/// template line they come from, e.g. `wgsl:41:5 [fused/rows.wgsl:123]`.
pub fn validate_rendered(
    rendered: &wgattn::shaders::Rendered,
) -> Result<(naga::Module, naga::valid::ModuleInfo), String> {
    validate_wgsl(&rendered.source).map_err(|e| rendered.annotate(&e))
}

pub fn validate_wgsl(source: &str) -> Result<(naga::Module, naga::valid::ModuleInfo), String> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| e.emit_to_string(source))?;
    Ok((module, info))
}

/// Tile edges of the matrix-tile variant (tests/it/mma_flash.rs, tests/coop): row tiles that straddle query heads (GQA) and batch entries, key blocks cut by
/// seq_k, causal rows ending inside a block, kv_lens of 0 and 1, head_dims that are not
/// multiples of 4 or 16 (scalar loads, padded tiles), bshd, windows.
pub fn mma_edge_specs() -> Vec<AttentionSpec> {
    vec![
        AttentionSpec::new(1, 2, 2, 63, 65, 64),
        AttentionSpec::new(1, 2, 2, 65, 128, 64).causal(CausalAlign::TopLeft),
        AttentionSpec::new(2, 6, 2, 40, 129, 32).causal(CausalAlign::BottomRight),
        AttentionSpec::new(3, 4, 1, 21, 70, 16).kv_lens(vec![70, 0, 1]),
        AttentionSpec::new(1, 3, 1, 50, 40, 3).layout(Layout::Bshd),
        AttentionSpec::new(1, 2, 1, 70, 90, 80)
            .layout(Layout::Bshd)
            .causal(CausalAlign::BottomRight)
            .window(20, 5),
        AttentionSpec::new(1, 1, 1, 33, 100, 128).causal(CausalAlign::TopLeft),
        AttentionSpec::new(1, 1, 1, 7, 257, 1),
    ]
}
