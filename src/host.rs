//! The host convenience path: slices in, [`Output`] back. Buffers and the last plan are kept
//! and reused by later calls of the same size and spec.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::context::Context;
use crate::error::Result;
use crate::output::Output;
use crate::plan::{BufferSizes, Buffers, Plan};
use crate::spec::AttentionSpec;

struct HostBuffers {
    sizes: BufferSizes,
    q: wgpu::Buffer,
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    out: wgpu::Buffer,
    lse: wgpu::Buffer,
    weights: Option<wgpu::Buffer>,
    read_out: wgpu::Buffer,
    read_lse: wgpu::Buffer,
    read_weights: Option<wgpu::Buffer>,
}

/// The reusable state of the host path.
#[derive(Default)]
pub(crate) struct HostCache {
    state: Mutex<(Option<Plan>, Option<HostBuffers>)>,
    allocations: AtomicU64,
}

fn buffer(
    device: &wgpu::Device,
    label: &str,
    size: u64,
    usage: wgpu::BufferUsages,
) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: size.max(4),
        usage,
        mapped_at_creation: false,
    })
}

impl HostBuffers {
    fn new(device: &wgpu::Device, sizes: BufferSizes) -> Self {
        use wgpu::BufferUsages as U;
        let input = U::STORAGE | U::COPY_DST;
        let output = U::STORAGE | U::COPY_SRC;
        let read = U::MAP_READ | U::COPY_DST;
        let has_w = sizes.weights > 0;
        HostBuffers {
            sizes,
            q: buffer(device, "wgattn q", sizes.q, input),
            k: buffer(device, "wgattn k", sizes.kv, input),
            v: buffer(device, "wgattn v", sizes.kv, input),
            out: buffer(device, "wgattn out", sizes.q, output),
            lse: buffer(device, "wgattn lse", sizes.lse, output),
            weights: has_w.then(|| buffer(device, "wgattn weights", sizes.weights, output)),
            read_out: buffer(device, "wgattn read out", sizes.q, read),
            read_lse: buffer(device, "wgattn read lse", sizes.lse, read),
            read_weights: has_w.then(|| buffer(device, "wgattn read weights", sizes.weights, read)),
        }
    }
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytemuck::pod_collect_to_vec(bytes)
}

impl Context {
    /// Computes attention on the GPU from host slices (f32, layout of the spec) and reads the
    /// result back. Inputs must be finite ([`Error::NonFinite`](crate::Error::NonFinite)
    /// otherwise). Buffers and the plan are reused across calls with the same sizes / spec.
    pub fn attention(
        &self,
        spec: &AttentionSpec,
        q: &[f32],
        k: &[f32],
        v: &[f32],
    ) -> Result<Output> {
        spec.validate(self.limits())?;
        spec.check_inputs(q, k, v)?;
        let mut state = self.host.state.lock().unwrap_or_else(|e| e.into_inner());
        let (plan_slot, bufs_slot) = &mut *state;
        if plan_slot.as_ref().is_none_or(|p| p.spec() != spec) {
            *plan_slot = None;
            *plan_slot = Some(self.plan(spec)?);
        }
        let plan = plan_slot.as_ref().expect("plan was just set");
        let sizes = plan.sizes();
        if bufs_slot.as_ref().is_none_or(|b| b.sizes != sizes) {
            *bufs_slot = None;
            *bufs_slot = Some(self.gpu_scope("allocating host buffers", || {
                HostBuffers::new(self.device(), sizes)
            })?);
            self.host.allocations.fetch_add(1, Ordering::Relaxed);
        }
        let b = bufs_slot.as_ref().expect("buffers were just set");
        self.gpu_scope("running attention", || -> Result<()> {
            self.queue().write_buffer(&b.q, 0, bytemuck::cast_slice(q));
            self.queue().write_buffer(&b.k, 0, bytemuck::cast_slice(k));
            self.queue().write_buffer(&b.v, 0, bytemuck::cast_slice(v));
            let mut enc = self
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("wgattn attention"),
                });
            plan.encode(
                &mut enc,
                &Buffers {
                    q: &b.q,
                    k: &b.k,
                    v: &b.v,
                    out: &b.out,
                    lse: Some(&b.lse),
                    weights: b.weights.as_ref(),
                },
            )?;
            enc.copy_buffer_to_buffer(&b.out, 0, &b.read_out, 0, sizes.q);
            if spec.return_lse {
                enc.copy_buffer_to_buffer(&b.lse, 0, &b.read_lse, 0, sizes.lse);
            }
            if let (Some(w), Some(r)) = (&b.weights, &b.read_weights) {
                enc.copy_buffer_to_buffer(w, 0, r, 0, sizes.weights);
            }
            self.queue().submit([enc.finish()]);
            Ok(())
        })??;
        let out = floats(&self.read_buffer(&b.read_out, sizes.q)?);
        let lse = if spec.return_lse {
            Some(floats(&self.read_buffer(&b.read_lse, sizes.lse)?))
        } else {
            None
        };
        let weights = match &b.read_weights {
            Some(r) => Some(floats(&self.read_buffer(r, sizes.weights)?)),
            None => None,
        };
        Ok(Output { out, lse, weights })
    }

    /// How many times the host path has allocated its GPU buffers (calls of an already seen
    /// size reuse them).
    pub fn host_buffer_allocations(&self) -> u64 {
        self.host.allocations.load(Ordering::Relaxed)
    }
}
