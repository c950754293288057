//! Problems larger than one storage binding are split into chunks and still give the right
//! answer. A context with a deliberately lowered binding limit keeps the shapes small.

use crate::common;

use wgattn::testdata::{self, Dist};
use wgattn::{AttentionSpec, CausalAlign, Context, ContextOptions, Error, Kernel, Layout};

fn small_ctx(max_binding: u64) -> Option<Context> {
    small_ctx_with(max_binding, None)
}

fn small_ctx_with(max_binding: u64, flash_tiles: Option<bool>) -> Option<Context> {
    common::ctx()?; // applies the WGATTN_REQUIRE_GPU rule
    Some(
        Context::with_options(ContextOptions {
            max_storage_binding: Some(max_binding),
            flash_tiles,
            ..Default::default()
        })
        .expect("context with lowered limits"),
    )
}

/// Flash and split-KV (both the rows and the workgroup-tiled variants) bind windows of q, k,
/// v and out: tensors beyond one binding are split by heads and query rows.
#[test]
fn fused_kernels_split_tensors_beyond_one_binding() {
    let specs = [
        // q 102 KB, k and v 154 KB each: split by kv-head groups and windows
        AttentionSpec::new(2, 4, 2, 100, 300, 32).causal(CausalAlign::BottomRight),
        // bshd with GQA: heads interleave in each row, so query rows are split (one head of
        // k spans 119·128 + 64 floats = 61 KB: it must fit one binding)
        AttentionSpec::new(1, 4, 2, 130, 120, 64)
            .layout(Layout::Bshd)
            .kv_lens(vec![101]),
    ];
    for tiles in [false, true] {
        let Some(ctx) = small_ctx_with(64 * 1024, Some(tiles)) else {
            return;
        };
        for spec in &specs {
            for kernel in [Kernel::Flash, Kernel::SplitKv] {
                let spec = spec.clone().with_lse(true).kernel(kernel);
                let plan = ctx.plan(&spec).expect("plan");
                assert!(plan.chunks() > 1, "tiles {tiles}, {kernel}: one chunk");
                common::check(&ctx, &spec, Dist::Normal, 23);
            }
        }
    }
}

#[test]
fn lowered_binding_limit_splits_and_matches_reference() {
    let Some(ctx) = small_ctx(64 * 1024) else {
        return;
    };
    assert_eq!(ctx.limits().max_storage_binding, 64 * 1024);
    let specs = [
        // score matrix 8·100·100·4 = 320 KB and q 102 KB: split by heads and by windows
        AttentionSpec::new(2, 4, 2, 100, 100, 32),
        // bshd: heads interleave, so rows are split too; causal bottom-right with Sq < Sk
        AttentionSpec::new(2, 4, 1, 90, 257, 16)
            .layout(Layout::Bshd)
            .causal(CausalAlign::BottomRight),
        // one head's scores alone (300·3000·4 = 3.6 MB) exceed the limit: query-row chunks
        AttentionSpec::new(1, 2, 2, 300, 3000, 4)
            .kv_lens(vec![2000])
            .causal(CausalAlign::TopLeft),
        // k of one head is 3000·4·4 = 48 KB: still fits; weights returned through windows
        AttentionSpec::new(1, 1, 1, 40, 3000, 4).with_weights(true),
    ];
    for spec in specs {
        let spec = spec.with_lse(true).kernel(Kernel::ThreePass);
        let plan = ctx.plan(&spec).expect("plan");
        assert!(
            plan.chunks() > 1,
            "expected a split for {spec:?}, got {}",
            plan.chunks()
        );
        let c = common::check(&ctx, &spec, Dist::Normal, 21);
        eprintln!("{} chunks: {:?}", plan.chunks(), c.out);
    }
}

#[test]
fn a_row_too_large_for_any_split_is_a_typed_error() {
    let Some(ctx) = small_ctx(64 * 1024) else {
        return;
    };
    // one score row is 20000·4 = 80 KB > 64 KiB: no split can help the three-pass kernel
    let spec = AttentionSpec::new(1, 1, 1, 2, 20000, 2).kernel(Kernel::ThreePass);
    let (q, k, v) = testdata::inputs(&spec, Dist::Normal, 1);
    match ctx.attention(&spec, &q, &k, &v) {
        Err(Error::TooLarge { limit, .. }) => assert_eq!(limit, "max_storage_buffer_binding_size"),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn buffer_size_limit_is_reported_before_gpu_work() {
    if common::ctx().is_none() {
        return; // skipping allowed and announced by common::ctx()
    }
    let small = Context::with_options(ContextOptions {
        max_buffer_size: Some(1 << 20),
        ..Default::default()
    })
    .expect("context with lowered limits");
    // q is 8·600·64·4 = 1.2 MiB > 1 MiB
    let spec = AttentionSpec::new(1, 8, 8, 600, 512, 64);
    let text = small.plan(&spec).unwrap_err().to_string();
    assert!(
        text.contains("q = 1228800 bytes exceeds max_buffer_size = 1048576"),
        "{text}"
    );
}
