//! Errors at the wgpu boundary surface as typed errors, never as panics: a lost device,
//! buffers from another device, destroyed buffers, and sizes over (lowered) device limits.

use crate::common;

use wgattn::testdata::{self, Dist};
use wgattn::{AttentionSpec, Buffers, Context, ContextOptions, Error};

fn own_ctx() -> Option<Context> {
    common::ctx()?;
    Some(Context::new().expect("second context"))
}

fn storage(ctx: &Context, size: u64) -> wgpu::Buffer {
    ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

#[test]
fn lost_device_is_a_gpu_error() {
    let Some(ctx) = own_ctx() else { return };
    let spec = AttentionSpec::new(1, 2, 2, 16, 16, 16);
    let (q, k, v) = testdata::inputs(&spec, Dist::Normal, 1);
    ctx.attention(&spec, &q, &k, &v).expect("works before");
    ctx.device().destroy();
    match ctx.attention(&spec, &q, &k, &v) {
        Err(Error::Gpu { .. }) => {}
        other => panic!("expected Error::Gpu after device loss, got {other:?}"),
    }
    let other = AttentionSpec::new(1, 2, 2, 17, 16, 16);
    assert!(
        matches!(ctx.plan(&other), Err(Error::Gpu { .. })),
        "planning on a lost device"
    );
}

#[test]
fn buffers_of_another_device_are_a_gpu_error() {
    let Some(a) = own_ctx() else { return };
    let Some(b) = own_ctx() else { return };
    let spec = AttentionSpec::new(1, 2, 2, 16, 16, 16);
    let plan = a.plan(&spec).unwrap();
    let s = plan.sizes();
    let (q, k, v, out) = (
        storage(&b, s.q),
        storage(&b, s.kv),
        storage(&b, s.kv),
        storage(&b, s.q),
    );
    let mut enc = a.device().create_command_encoder(&Default::default());
    match plan.encode(&mut enc, &Buffers::new(&q, &k, &v, &out)) {
        Err(Error::Gpu { during, message }) => {
            assert_eq!(during, "encoding attention");
            assert!(!message.is_empty());
        }
        other => panic!("expected Error::Gpu, got {other:?}"),
    }
}

#[test]
fn destroyed_caller_buffer_is_a_gpu_error() {
    let Some(ctx) = own_ctx() else { return };
    let spec = AttentionSpec::new(1, 2, 2, 16, 16, 16);
    let plan = ctx.plan(&spec).unwrap();
    let s = plan.sizes();
    let (q, k, v, out) = (
        storage(&ctx, s.q),
        storage(&ctx, s.kv),
        storage(&ctx, s.kv),
        storage(&ctx, s.q),
    );
    out.destroy();
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    let encoded = plan.encode(&mut enc, &Buffers::new(&q, &k, &v, &out));
    // wgpu reports the destroyed buffer when the bind group is made or, at the latest, when
    // the commands are submitted: either way as a typed error, never a panic.
    let submitted = encoded.and_then(|()| {
        let scope = ctx.device().push_error_scope(wgpu::ErrorFilter::Validation);
        ctx.queue().submit([enc.finish()]);
        match pollster::block_on(scope.pop()) {
            Some(e) => Err(Error::Gpu {
                during: "submit",
                message: e.to_string(),
            }),
            None => Ok(()),
        }
    });
    assert!(matches!(submitted, Err(Error::Gpu { .. })), "{submitted:?}");
}

#[test]
fn allocation_over_a_lowered_buffer_limit_is_typed() {
    if common::ctx().is_none() {
        return; // skipping allowed and announced by common::ctx()
    }
    let small = Context::with_options(ContextOptions {
        max_buffer_size: Some(256 * 1024),
        ..Default::default()
    })
    .expect("context with lowered limits");
    // weights: 1·4·128·128·4 = 256 KiB + … > limit: refused before wgpu sees it
    let spec = AttentionSpec::new(1, 8, 8, 128, 128, 16).with_weights(true);
    match small.plan(&spec) {
        Err(Error::InvalidSpec { problems }) => {
            assert!(
                problems
                    .iter()
                    .any(|p| p.field == "weights" && p.reason.contains("max_buffer_size"))
            );
        }
        other => panic!("{other:?}"),
    }
    // The device really has the lowered limit: a direct allocation above it is a validation
    // error that wgattn's error scope turns into Error::Gpu.
    assert_eq!(small.device().limits().max_buffer_size, 256 * 1024);
}
