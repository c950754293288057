//! The host convenience path: slices in, [`Output`] back. Buffers and the last plan are kept
//! and reused by later calls of the same size and spec.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use half::f16;

use super::Context;
use crate::error::Result;
use crate::plan::{BufferSizes, Buffers, Plan};
use crate::spec::{AttentionSpec, DType, Inputs, Output, gpu_bytes, mask_bytes};

struct HostBuffers {
    sizes: BufferSizes,
    q: wgpu::Buffer,
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    out: wgpu::Buffer,
    lse: wgpu::Buffer,
    weights: Option<wgpu::Buffer>,
    bias: Option<wgpu::Buffer>,
    mask: Option<wgpu::Buffer>,
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
        let optional =
            |label, size: u64, usage| (size > 0).then(|| buffer(device, label, size, usage));
        HostBuffers {
            sizes,
            q: buffer(device, "wgattn q", sizes.q, input),
            k: buffer(device, "wgattn k", sizes.kv, input),
            v: buffer(device, "wgattn v", sizes.kv, input),
            out: buffer(device, "wgattn out", sizes.q, output),
            lse: buffer(device, "wgattn lse", sizes.lse, output),
            weights: optional("wgattn weights", sizes.weights, output),
            bias: optional("wgattn bias", sizes.bias, input),
            mask: optional("wgattn mask", sizes.mask, input),
            read_out: buffer(device, "wgattn read out", sizes.q, read),
            read_lse: buffer(device, "wgattn read lse", sizes.lse, read),
            read_weights: optional("wgattn read weights", sizes.weights, read),
        }
    }
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytemuck::pod_collect_to_vec(bytes)
}

impl Context {
    /// Computes attention on the GPU from f32 host slices (layout of the spec; rounded to f16
    /// first when the spec's dtype is f16) and reads the result back. Same as
    /// [`Context::attention_with`] without bias or mask.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn attention(
        &self,
        spec: &AttentionSpec,
        q: &[f32],
        k: &[f32],
        v: &[f32],
    ) -> Result<Output> {
        self.attention_with(spec, &Inputs::new(q, k, v))
    }

    /// Computes attention on the GPU from host inputs and reads the result back:
    /// [`Context::attention_with_async`] driven to completion (not on the web, where nothing
    /// may block).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn attention_with(&self, spec: &AttentionSpec, inputs: &Inputs) -> Result<Output> {
        pollster::block_on(self.attention_with_async(spec, inputs))
    }

    /// [`Context::attention`] as a future (the only form on the web).
    pub async fn attention_async(
        &self,
        spec: &AttentionSpec,
        q: &[f32],
        k: &[f32],
        v: &[f32],
    ) -> Result<Output> {
        self.attention_with_async(spec, &Inputs::new(q, k, v)).await
    }

    /// Computes attention on the GPU from host inputs and reads the result back. Inputs are
    /// checked first (`AttentionSpec::check_inputs`): lengths, declared bias/mask, and no NaN
    /// or ±Inf in q, k, v. With dtype f16, `Output::out` holds the f16 results as f32 (exactly).
    /// Buffers and the plan are reused across calls with the same sizes / spec. Calls may
    /// overlap (several futures in flight): a call that finds the cached buffers in use by
    /// another makes its own.
    ///
    /// The result is read back with `map_async`: on native targets the future polls the
    /// device until the work is done; on the web it resolves when the browser has mapped the
    /// results, and GPU errors of the call are reported through [`Context::settle`].
    pub async fn attention_with_async(
        &self,
        spec: &AttentionSpec,
        inputs: &Inputs<'_>,
    ) -> Result<Output> {
        spec.validate(self.limits())?;
        spec.check_inputs(inputs)?;
        // Take the cached plan and buffers out for the call (no lock is held across an await).
        let (cached_plan, cached_bufs) = {
            let mut state = self.host.state.lock().unwrap_or_else(|e| e.into_inner());
            let (plan_slot, bufs_slot) = &mut *state;
            // A plan of another spec is dropped before planning (it may hold large scratch).
            (
                plan_slot.take().filter(|p| p.spec() == spec),
                bufs_slot.take(),
            )
        };
        let plan = match cached_plan {
            Some(plan) => plan,
            None => self.plan(spec)?,
        };
        let sizes = plan.sizes();
        let b = match cached_bufs {
            Some(b) if b.sizes == sizes => b,
            other => {
                drop(other);
                let b = self.gpu.gpu_scope("allocating host buffers", || {
                    HostBuffers::new(self.device(), sizes)
                })?;
                self.host.allocations.fetch_add(1, Ordering::Relaxed);
                b
            }
        };
        self.gpu.gpu_scope("running attention", || -> Result<()> {
            let queue = self.queue();
            queue.write_buffer(&b.q, 0, &gpu_bytes(&inputs.q, spec.dtype));
            queue.write_buffer(&b.k, 0, &gpu_bytes(&inputs.k, spec.dtype));
            queue.write_buffer(&b.v, 0, &gpu_bytes(&inputs.v, spec.dtype));
            if let (Some(buf), Some(bias)) = (&b.bias, &inputs.bias) {
                queue.write_buffer(buf, 0, &gpu_bytes(bias, DType::F32));
            }
            if let (Some(buf), Some(mask)) = (&b.mask, inputs.mask) {
                queue.write_buffer(buf, 0, &mask_bytes(mask));
            }
            let mut enc = self
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("wgattn attention"),
                });
            plan.encode(
                &mut enc,
                &Buffers {
                    lse: Some(&b.lse),
                    weights: b.weights.as_ref(),
                    bias: b.bias.as_ref(),
                    mask: b.mask.as_ref(),
                    ..Buffers::new(&b.q, &b.k, &b.v, &b.out)
                },
            )?;
            enc.copy_buffer_to_buffer(&b.out, 0, &b.read_out, 0, sizes.q);
            if spec.return_lse {
                enc.copy_buffer_to_buffer(&b.lse, 0, &b.read_lse, 0, sizes.lse);
            }
            if let (Some(w), Some(r)) = (&b.weights, &b.read_weights) {
                enc.copy_buffer_to_buffer(w, 0, r, 0, sizes.weights);
            }
            queue.submit([enc.finish()]);
            Ok(())
        })??;
        let mut reads = vec![(&b.read_out, sizes.q)];
        if spec.return_lse {
            reads.push((&b.read_lse, sizes.lse));
        }
        if let Some(r) = &b.read_weights {
            reads.push((r, sizes.weights));
        }
        // Errors of the work above (on the web they are only known now) before the mappings.
        self.settle().await?;
        let mut raw = self.gpu.read_buffers(&reads).await?.into_iter();
        let out_bytes = raw.next().unwrap_or_default();
        let out = match spec.dtype {
            DType::F32 => floats(&out_bytes),
            DType::F16 => bytemuck::pod_collect_to_vec::<u8, f16>(&out_bytes[..spec.q_len() * 2])
                .into_iter()
                .map(f16::to_f32)
                .collect(),
        };
        let lse = spec
            .return_lse
            .then(|| floats(&raw.next().unwrap_or_default()));
        let weights = b
            .read_weights
            .as_ref()
            .map(|_| floats(&raw.next().unwrap_or_default()));
        // Back into the cache for the next call.
        *self.host.state.lock().unwrap_or_else(|e| e.into_inner()) = (Some(plan), Some(b));
        Ok(Output { out, lse, weights })
    }

    /// How many times the host path has allocated its GPU buffers (calls of an already seen
    /// size reuse them).
    pub fn host_buffer_allocations(&self) -> u64 {
        self.host.allocations.load(Ordering::Relaxed)
    }
}
