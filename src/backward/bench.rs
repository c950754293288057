//! Wall-clock timing of the backward pass (GPU-resident buffers, submit to completion).

use std::time::Instant;

use crate::context::Context;
use crate::error::Result;
use crate::gpu::init_buffer;
use crate::plan::{BackwardBuffers, Buffers};
use crate::spec::{AttentionSpec, Tensor, gpu_bytes, mask_bytes};
use crate::testdata::{self, Dist, Rng};

/// Timing of one backward shape.
#[derive(Debug, Clone)]
pub struct BackwardTiming {
    /// The spec timed.
    pub spec: AttentionSpec,
    /// Median / fastest / slowest run in milliseconds (submit to completion).
    pub median_ms: f64,
    /// Fastest run.
    pub min_ms: f64,
    /// Slowest run.
    pub max_ms: f64,
    /// Timed runs of each kind (after one warm-up).
    pub runs: usize,
    /// Median / fastest forward + backward (the forward's out and lse written and then read
    /// by the backward, one submission) in milliseconds.
    pub fwd_bwd_median_ms: f64,
    /// Fastest forward + backward run.
    pub fwd_bwd_min_ms: f64,
    /// Floating-point operations of one backward pass by the benchmarks' convention:
    /// 2.5 × the forward's count (FlashAttention's).
    pub flops: f64,
    /// The shader variants run.
    pub shaders: Vec<String>,
}

impl BackwardTiming {
    /// GFLOP/s of the backward alone at its median time.
    pub fn gflops(&self) -> f64 {
        self.flops / (self.median_ms * 1e-3) / 1e9
    }

    /// GFLOP/s of forward + backward (3.5 × the forward's count) at its median time.
    pub fn fwd_bwd_gflops(&self) -> f64 {
        self.flops * 3.5 / 2.5 / (self.fwd_bwd_median_ms * 1e-3) / 1e9
    }
}

/// Times the backward of `spec` alone (random inputs; the forward's out and lse from the GPU)
/// and forward + backward in one submission, alternating, `runs` runs of each after one
/// warm-up, with a dbias buffer when the spec declares a bias.
pub fn bench_backward(ctx: &Context, spec: &AttentionSpec, runs: usize) -> Result<BackwardTiming> {
    let spec = spec.clone().with_lse(false).with_weights(false);
    let data = testdata::generate(&spec, Dist::Normal, 1);
    let d_out = Rng::new(2).normals(spec.q_len(), 0.0, 1.0);
    let fwd = ctx.attention_with(&spec.clone().with_lse(true), &data.inputs())?;
    let plan = ctx.plan_backward(&spec)?;
    let sizes = plan.sizes();
    let device = ctx.device();
    use wgpu::BufferUsages as U;
    let up = |bytes: Vec<u8>| init_buffer(device, ctx.queue(), "wgattn bench", &bytes, U::STORAGE);
    let dt = spec.dtype;
    let bufs = ctx.gpu().gpu_scope("allocating benchmark buffers", || {
        let grad = |size: u64| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgattn bench grad"),
                size: size.max(4),
                usage: U::STORAGE,
                mapped_at_creation: false,
            })
        };
        let t = |x: &[f32]| gpu_bytes(&Tensor::F32(x), dt);
        (
            [
                up(t(&data.q)),
                up(t(&data.k)),
                up(t(&data.v)),
                up(t(&fwd.out)),
                up(bytemuck::cast_slice(fwd.lse.as_deref().unwrap_or(&[])).to_vec()),
                up(t(&d_out)),
            ],
            [
                grad(sizes.dq),
                grad(sizes.dkv),
                grad(sizes.dkv),
                grad(sizes.dbias),
            ],
            data.bias
                .as_ref()
                .map(|b| up(bytemuck::cast_slice(b).to_vec())),
            data.mask.as_ref().map(|m| up(mask_bytes(m))),
        )
    })?;
    let (ins, grads, bias, mask) = &bufs;
    let b = BackwardBuffers::from_sets(ins, grads, bias.as_ref(), mask.as_ref(), bias.is_some());
    let forward = ctx.plan(&spec.clone().with_lse(true))?;
    let f = Buffers {
        q: &ins[0],
        k: &ins[1],
        v: &ins[2],
        out: &ins[3],
        lse: Some(&ins[4]),
        weights: None,
        bias: bias.as_ref(),
        mask: mask.as_ref(),
    };
    let mut times = Vec::new();
    let mut both = Vec::new();
    for n in 0..runs.max(1) + 1 {
        for with_forward in [false, true] {
            let mut enc = device.create_command_encoder(&Default::default());
            if with_forward {
                forward.encode(&mut enc, &f)?;
            }
            plan.encode(&mut enc, &b)?;
            let start = Instant::now();
            ctx.queue().submit([enc.finish()]);
            ctx.gpu().wait()?;
            if n > 0 {
                let ms = start.elapsed().as_secs_f64() * 1e3;
                if with_forward { &mut both } else { &mut times }.push(ms);
            }
        }
    }
    both.sort_by(f64::total_cmp);
    times.sort_by(f64::total_cmp);
    Ok(BackwardTiming {
        flops: 2.5 * spec.flops(),
        median_ms: times[times.len() / 2],
        min_ms: times[0],
        max_ms: times[times.len() - 1],
        runs: times.len(),
        fwd_bwd_median_ms: both[both.len() / 2],
        fwd_bwd_min_ms: both[0],
        shaders: plan.shaders(),
        spec,
    })
}
