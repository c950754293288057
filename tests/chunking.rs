//! Problems larger than one storage binding are split into chunks and still give the right
//! answer. A context with a deliberately lowered binding limit keeps the shapes small.

mod common;

use wgattn::testdata::{self, Dist};
use wgattn::{AttentionSpec, CausalAlign, Context, ContextOptions, Error, Kernel, Layout};

fn small_ctx(max_binding: u64) -> Option<Context> {
    common::ctx()?; // applies the WGATTN_REQUIRE_GPU rule
    Some(
        Context::with_options(ContextOptions {
            max_storage_binding: Some(max_binding),
            ..Default::default()
        })
        .expect("context with lowered limits"),
    )
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
    common::ctx();
    let Ok(small) = Context::with_options(ContextOptions {
        max_buffer_size: Some(1 << 20),
        ..Default::default()
    }) else {
        return; // no adapter and WGATTN_REQUIRE_GPU unset: common::ctx() printed why
    };
    // q is 8·600·64·4 = 1.2 MiB > 1 MiB
    let spec = AttentionSpec::new(1, 8, 8, 600, 512, 64);
    let text = small.plan(&spec).unwrap_err().to_string();
    assert!(
        text.contains("q = 1228800 bytes exceeds max_buffer_size = 1048576"),
        "{text}"
    );
}
