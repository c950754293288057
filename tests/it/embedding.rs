//! Embedding: the app's own device and passes around wgattn's in one submit; plans and
//! pipelines are cached; the host path reuses its buffers.

use crate::common;

#[allow(dead_code)]
#[path = "../../examples/embed_in_app.rs"]
mod embed_in_app;

use wgattn::testdata::{self, Dist};
use wgattn::{AttentionSpec, CausalAlign, Kernel};

#[test]
fn app_passes_and_wgattn_share_one_encoder_and_submit() {
    if common::ctx().is_none() {
        return;
    }
    let r = embed_in_app::run_frame().expect("frame runs");
    assert_eq!(r.gpu.len(), r.cpu.len());
    let e = wgattn::ErrorStats::compare(&r.gpu, &r.cpu);
    assert!(e.within(1e-5), "{e:?}");
}

#[test]
fn second_plan_of_a_spec_class_compiles_no_shader() {
    if common::ctx().is_none() {
        return; // skipping allowed and announced by common::ctx()
    }
    // A context of its own: the shared one compiles for other tests running in parallel.
    let ctx = &wgattn::Context::new().expect("a second context");
    for kernel in [Kernel::ThreePass, Kernel::Flash, Kernel::SplitKv] {
        let a = AttentionSpec::new(1, 4, 2, 300, 300, 64).kernel(kernel);
        ctx.plan(&a).unwrap();
        let compiled = ctx.shader_compilations();
        // Same class: other lengths, masks, scale, batch and layout.
        let b = AttentionSpec::new(2, 4, 2, 500, 700, 64)
            .kernel(kernel)
            .causal(CausalAlign::BottomRight)
            .kv_lens(vec![700, 10])
            .scale(0.1);
        ctx.plan(&b).unwrap();
        ctx.plan(&a).unwrap();
        assert_eq!(ctx.shader_compilations(), compiled, "{kernel} recompiled");
    }
}

#[test]
fn host_path_reuses_buffers_for_the_same_size() {
    if common::ctx().is_none() {
        return; // skipping allowed and announced by common::ctx()
    }
    // A context of its own: other tests use the shared one's host buffers in parallel.
    let ctx = &wgattn::Context::new().expect("a second context");
    let spec = AttentionSpec::new(1, 2, 2, 64, 64, 32);
    let (q, k, v) = testdata::inputs(&spec, Dist::Normal, 1);
    ctx.attention(&spec, &q, &k, &v).unwrap();
    let allocations = ctx.host_buffer_allocations();
    let first = ctx.attention(&spec, &q, &k, &v).unwrap();
    // A different spec of the same size reuses the buffers too.
    let causal = spec.clone().causal(CausalAlign::TopLeft);
    ctx.attention(&causal, &q, &k, &v).unwrap();
    let again = ctx.attention(&spec, &q, &k, &v).unwrap();
    assert_eq!(ctx.host_buffer_allocations(), allocations);
    assert_eq!(first.out, again.out, "same input, same output");
    let bigger = AttentionSpec::new(1, 2, 2, 65, 64, 32);
    let (q, k, v) = testdata::inputs(&bigger, Dist::Normal, 1);
    ctx.attention(&bigger, &q, &k, &v).unwrap();
    assert_eq!(ctx.host_buffer_allocations(), allocations + 1);
}
