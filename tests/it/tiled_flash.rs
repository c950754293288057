//! The workgroup-tiled flash / split-KV variant (`shaders/fused/tiled.wgsl`), which GPUs use.
//! CI has no GPU, so it is forced here on the CPU adapter (`ContextOptions::flash_tiles`) and
//! checked against the CPU reference on the foundation grid, the option grid, tile edges and
//! the public validation cases.

use crate::common;

use std::sync::OnceLock;

use wgattn::testdata::Dist;
use wgattn::validation::{self, GridCase};
use wgattn::{AttentionSpec, CausalAlign, Context, ContextOptions, DType, Kernel, Layout};

fn opened(options: ContextOptions, cell: &'static OnceLock<Context>) -> Option<&'static Context> {
    common::ctx()?;
    Some(cell.get_or_init(|| Context::with_options(options).expect("tiled context")))
}

/// The default adapter with the tiled variant forced.
fn tiled_ctx() -> Option<&'static Context> {
    static CTX: OnceLock<Context> = OnceLock::new();
    let ctx = opened(
        ContextOptions {
            flash_tiles: Some(true),
            ..Default::default()
        },
        &CTX,
    )?;
    assert!(
        ctx.caps().flash_tiles(),
        "the adapter has under 32 KiB of workgroup memory"
    );
    Some(ctx)
}

/// Tile edges: row tiles of 64 that straddle query heads (GQA) and batch entries, key blocks
/// of 64 cut by seq_k, causal rows ending inside a block, head_dim classes whose output
/// columns do not fill the 16 column groups (3, 80) or need the smallest V chunks (256).
fn edge_specs() -> Vec<AttentionSpec> {
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
        AttentionSpec::new(1, 1, 1, 66, 100, 256).causal(CausalAlign::TopLeft),
    ]
}

fn cases_of(specs: Vec<AttentionSpec>) -> Vec<GridCase> {
    specs
        .into_iter()
        .enumerate()
        .map(|(n, spec)| GridCase {
            name: format!("edge {n}"),
            spec: spec.with_lse(true),
            dist: if n == 2 { Dist::Normal30 } else { Dist::Normal },
            seed: 700 + n as u64,
        })
        .collect()
}

#[test]
fn tiled_variant_is_the_one_planned() {
    let Some(ctx) = tiled_ctx() else { return };
    for kernel in [Kernel::Flash, Kernel::SplitKv] {
        let spec = AttentionSpec::new(1, 4, 2, 100, 300, 64).kernel(kernel);
        let shaders = ctx.plan(&spec).unwrap().shaders();
        assert!(
            shaders[0].starts_with("fused/tiled.wgsl"),
            "{kernel}: {shaders:?}"
        );
    }
    // decoding shapes keep the decoding variant where the adapter has one
    let decode = AttentionSpec::new(1, 8, 2, 1, 4096, 64);
    if wgattn::planner::has_decode_variant(&decode, ctx) {
        let shaders = ctx.plan(&decode).unwrap().shaders();
        assert!(shaders[0].starts_with("fused/decode.wgsl"), "{shaders:?}");
    }
}

#[test]
fn tiled_edges_flash_and_split_kv() {
    let Some(ctx) = tiled_ctx() else { return };
    let cases = cases_of(edge_specs());
    common::run_cases(ctx, Kernel::Flash, &cases);
    common::run_cases(ctx, Kernel::SplitKv, &cases);
}

#[test]
fn tiled_foundation_grid() {
    let Some(ctx) = tiled_ctx() else { return };
    common::run_foundation_grid(ctx, 6e7);
}

#[test]
fn tiled_option_grid() {
    let Some(ctx) = tiled_ctx() else { return };
    common::run_option_grid(ctx);
}

/// As on a GPU without SHADER_F16: f16 packed in u32 words, with the tiled variant.
#[test]
fn tiled_with_packed_f16() {
    static CTX: OnceLock<Context> = OnceLock::new();
    let Some(ctx) = opened(
        ContextOptions {
            flash_tiles: Some(true),
            disable_shader_f16: true,
            ..Default::default()
        },
        &CTX,
    ) else {
        return;
    };
    let cases: Vec<GridCase> = validation::option_grid()
        .into_iter()
        .filter(|c| c.spec.dtype == DType::F16)
        .chain(cases_of(vec![
            AttentionSpec::new(1, 3, 1, 9, 20, 5).dtype(DType::F16),
        ]))
        .collect();
    common::run_cases(ctx, Kernel::Flash, &cases);
    common::run_cases(ctx, Kernel::SplitKv, &cases);
}

#[test]
fn tiled_validation_cases() {
    let Some(ctx) = tiled_ctx() else { return };
    let dir = common::cases_dir();
    let own = common::own_cases_dir();
    let mut files = validation::case_files(&dir).unwrap();
    files.extend(validation::case_files(&own).unwrap());
    for kernel in [Kernel::Flash, Kernel::SplitKv] {
        for f in &files {
            let r = validation::run_case_file(ctx, f, kernel)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert!(r.passed(), "{}: {:?} with {}", r.name, r.verdict, r.kernel);
        }
    }
}

/// `None` chooses by adapter: rows on CPU adapters, tiles on GPUs.
#[test]
fn default_choice_follows_the_adapter_type() {
    let Some(ctx) = common::ctx() else { return };
    if std::env::var_os("WGATTN_FLASH_TILES").is_some() {
        return;
    }
    let gpu = ctx.adapter_info().device_type != wgpu::DeviceType::Cpu;
    let room = ctx.caps().limits.max_workgroup_storage >= 32 * 1024;
    assert_eq!(ctx.caps().flash_tiles(), gpu && room);
}

/// Every register-tile shape `wgattn tune` may choose (forced through a tuned choice for each
/// case's class), on the tile edges and a slice of the option grid (masks, modifiers, f16,
/// logits of order 10³), flash and split-KV. A shape that does not fit the adapter's
/// workgroup memory is skipped (lavapipe has 32 KiB; 48 KiB shapes are left to GPUs), one
/// that does not fit a head_dim class (the register budget) is skipped for it; each shape
/// that fits must run some cases, and the shapes run must cover 4 and 8 rows, 4 and 8 keys,
/// slices of 16 and 32 dims, and (on adapters with subgroups of 8 or more, as lavapipe) the
/// row exchange by subgroup shuffles as well as through workgroup memory.
#[test]
fn every_tiled_shape_matches_the_reference() {
    use wgattn::tiles::{TILED_SHAPES, TiledShape};
    use wgattn::tune::{ShapeClass, TunedChoice, Tuning};
    if common::ctx().is_none() {
        return;
    }
    let cases: Vec<GridCase> = cases_of(edge_specs())
        .into_iter()
        .chain(validation::option_grid().into_iter().step_by(5))
        .collect();
    let mut covered = Vec::new();
    let mut with_subgroups = false;
    for shape in TILED_SHAPES {
        let choice = TunedChoice::Tiled(shape);
        // (a forced `flash_tiles` would switch tuning off)
        let base = Context::with_options(ContextOptions {
            tune_cache: wgattn::TuneCacheSource::Off,
            ..Default::default()
        })
        .expect("context");
        let caps = *base.caps();
        let fits_adapter = shape
            .workgroup_bytes(wgattn::planner::HeadClass { d16: 1, vec4: true })
            .is_some_and(|b| b <= caps.limits.max_workgroup_storage)
            && shape.wg <= caps.limits.max_invocations;
        if !fits_adapter {
            eprintln!(
                "{}: skipped, over this adapter's workgroup memory",
                shape.describe()
            );
            continue;
        }
        let mut tuning = Tuning::none();
        for c in &cases {
            tuning
                .choices
                .insert(ShapeClass::of(&c.spec, &caps), choice);
        }
        let ctx = base.with_tuning(tuning);
        let mut ran = 0;
        for case in &cases {
            let Some(variant) = choice.variant(&case.spec, &caps) else {
                continue;
            };
            for kernel in [Kernel::Flash, Kernel::SplitKv] {
                let spec = case.spec.clone().kernel(kernel);
                let plan = ctx.plan(&spec).unwrap();
                if plan.choice().variant != Some(variant) {
                    // decoding shapes keep the decoding variant
                    assert!(
                        plan.shaders()[0].starts_with("fused/decode.wgsl"),
                        "{}: {:?}",
                        case.name,
                        plan.choice()
                    );
                    continue;
                }
                // row maxima by subgroup shuffles where whole row bands fit a subgroup
                let sub = shape.subgroups_on(&caps);
                assert_eq!(
                    plan.shaders()[0].contains("SUBGROUPS"),
                    sub,
                    "{}",
                    plan.shaders()[0]
                );
                with_subgroups |= sub;
                let r = validation::run_grid_case(&ctx, case, kernel)
                    .unwrap_or_else(|e| panic!("{} {}: {e}", shape.describe(), case.name));
                assert!(
                    r.passed(),
                    "{} {} {kernel}: {}",
                    shape.describe(),
                    case.name,
                    r.verdict
                );
                ran += 1;
            }
        }
        assert!(ran >= 10, "{}: only {ran} cases ran", shape.describe());
        covered.push(shape);
    }
    // lavapipe's subgroups of 8 hold the row bands of the 8-key tiles
    if caps_of_default()
        .subgroup_size
        .is_some_and(|sg| sg % 8 == 0)
    {
        assert!(with_subgroups, "no shape ran with the subgroup exchange");
    }
    for (what, values, of) in [
        (
            "rows",
            [4, 8],
            (|s: &TiledShape| s.tm) as fn(&TiledShape) -> u32,
        ),
        ("keys", [4, 8], |s| s.tn),
        ("slice dims", [16, 32], |s| s.kd),
    ] {
        for v in values {
            assert!(
                covered.iter().any(|s| of(s) == v),
                "no shape with {v} {what} per invocation ran: {covered:?}"
            );
        }
    }
}

fn caps_of_default() -> wgattn::Caps {
    *common::ctx().expect("adapter").caps()
}
