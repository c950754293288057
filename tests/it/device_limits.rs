//! Planning against the device's dispatch and binding-count limits: with the workgroups per
//! dimension lowered, every kernel cuts its grids into several dispatches and still matches
//! the CPU reference; with storage buffers per stage lowered, kernels that bind more are not
//! chosen (auto) or are a typed error (asked for). Lowered limits keep the shapes small.

use crate::common;

use wgattn::testdata::Dist;
use wgattn::{AttentionSpec, CausalAlign, Context, ContextOptions, Error, Kernel, Layout};

fn lowered(options: ContextOptions) -> Option<Context> {
    common::ctx()?; // applies the WGATTN_REQUIRE_GPU rule
    Some(Context::with_options(options).expect("context with lowered limits"))
}

/// Two workgroups per dimension: for the first spec QKᵀ's 5 column blocks (300 keys), its 5
/// row blocks, softmax's 1200 rows, flash's 600 rows per kv head (3 row blocks of 256 rows,
/// 10 tiles of 64) and split-KV's combine all exceed it.
#[test]
fn grids_beyond_the_workgroup_limit_are_cut_into_dispatches() {
    for tiles in [false, true] {
        let Some(ctx) = lowered(ContextOptions {
            max_workgroups_per_dim: Some(2),
            flash_tiles: Some(tiles),
            ..Default::default()
        }) else {
            return;
        };
        assert_eq!(ctx.limits().max_workgroups_per_dim, 2);
        let specs = [
            AttentionSpec::new(1, 4, 2, 300, 300, 32)
                .causal(CausalAlign::BottomRight)
                .kv_lens(vec![280]),
            AttentionSpec::new(2, 2, 1, 70, 130, 16).layout(Layout::Bshd),
            // decoding: 2 splits at most
            AttentionSpec::new(1, 4, 2, 1, 1500, 32),
        ];
        let kernels: &[Kernel] = if tiles {
            &[Kernel::Flash, Kernel::SplitKv]
        } else {
            &[
                Kernel::ThreePass,
                Kernel::Flash,
                Kernel::SplitKv,
                Kernel::Auto,
            ]
        };
        for (n, spec) in specs.iter().enumerate() {
            for &kernel in kernels {
                let spec = spec.clone().with_lse(true).kernel(kernel);
                let plan = ctx.plan(&spec).expect("plan");
                assert!(plan.splits() <= 2, "{kernel}: {} splits", plan.splits());
                if n == 0 {
                    assert!(plan.chunks() > 1, "tiles {tiles}, {kernel}: one dispatch");
                }
                common::check(&ctx, &spec, Dist::Normal, 31);
            }
        }
    }
}

/// Five storage buffers per stage: the fused kernels (six) are never chosen by auto, which
/// runs three-pass (four) instead, and asking for them is a typed error before any GPU work.
#[test]
fn kernels_needing_more_storage_buffers_are_not_chosen() {
    let Some(ctx) = lowered(ContextOptions {
        max_storage_buffers_per_stage: Some(5),
        ..Default::default()
    }) else {
        return;
    };
    assert_eq!(ctx.limits().max_storage_buffers_per_stage, 5);
    let spec = AttentionSpec::new(1, 2, 1, 20, 40, 16).with_lse(true);
    let plan = ctx.plan(&spec).expect("auto plans");
    assert_eq!(plan.kernel(), Kernel::ThreePass);
    common::check(&ctx, &spec, Dist::Normal, 5);
    for kernel in [Kernel::Flash, Kernel::SplitKv] {
        match ctx.plan(&spec.clone().kernel(kernel)) {
            Err(Error::TooLarge {
                needed,
                allowed: 5,
                limit: "max_storage_buffers_per_shader_stage",
                ..
            }) => assert_eq!(needed, 6),
            other => panic!("{kernel}: expected TooLarge, got {other:?}"),
        }
    }
}
