//! The fused kernels' launcher (flash and split-KV, `shaders/fused/`): online softmax, no
//! score matrix. With more than one key split it is the split-KV ("flash-decoding") kernel,
//! whose partial results the combine pass merges. What runs (compile keys, chunks, grids) is
//! the planner's (`planner::fused`).

use std::sync::Arc;

use super::bind;
use super::params::{aux_buffer, params};
use crate::error::{Error, Result};
use crate::gpu::{Runtime, init_buffer};
use crate::planner::chunks::Chunk;
use crate::planner::{Choice, fused};
use crate::shader::{Binding, ShaderVariant};
use crate::spec::AttentionSpec;

use super::Targets;

struct ChunkPlan {
    uniform: wgpu::Buffer,
    grid: [u32; 3],
    combine_grid: [u32; 3],
    chunk: Chunk,
}

/// A compiled fused plan.
pub(crate) struct Fused {
    flash: Arc<wgpu::ComputePipeline>,
    combine: Option<Arc<wgpu::ComputePipeline>>,
    chunks: Vec<ChunkPlan>,
    aux: wgpu::Buffer,
    /// (o_part, lse_part) when split.
    partials: Option<(wgpu::Buffer, wgpu::Buffer)>,
    splits: u32,
    /// The kernel's and the combine pass's shaders.
    shaders: Vec<ShaderVariant>,
}

impl Fused {
    /// The plan of the planner's `choice` (flash or split-KV) for `spec`.
    pub(crate) fn new(rt: &Runtime, spec: &AttentionSpec, choice: &Choice) -> Result<Self> {
        let variant = choice.variant.ok_or_else(|| Error::KernelUnsupported {
            kernel: choice.kernel.name().into(),
            reason: "the planner chose no fused variant".into(),
        })?;
        let caps = rt.caps();
        let splits = choice.splits;
        let split = splits > 1;
        let row_bytes = fused::partial_row_bytes(&variant);
        let group = spec.group() as u32;
        let chunks = fused::chunks(spec, caps, &variant, splits)?;
        let max_dim = caps.limits.max_workgroups_per_dim.max(1);
        let split_len = fused::split_len(spec, &variant, splits);
        let shaders = choice.shaders(spec);
        let flash = rt.pipeline(&shaders[0])?;
        let combine = match shaders.get(1) {
            Some(v) => Some(rt.pipeline(v)?),
            None => None,
        };
        let device = rt.device();
        let (aux, alibi_at) = rt.gpu_scope("allocating aux buffer", || aux_buffer(rt, spec))?;
        let mut plans = Vec::new();
        for chunk in chunks {
            let (grid, combine_grid) =
                fused::grids(&variant, group, splits, chunk.nbh, chunk.nq, max_dim);
            let mut p = params(spec, &chunk, 0, alibi_at);
            p.n_splits = splits;
            p.split_len = split_len;
            plans.push((p, chunk, grid, combine_grid));
        }
        let max_rows = plans
            .iter()
            .map(|(_, c, _, _)| c.nbh as u64 * c.nq as u64)
            .max()
            .unwrap_or(1);
        rt.gpu_scope("allocating flash buffers", || {
            let partials = split.then(|| {
                let mk = |label, size| {
                    device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some(label),
                        size,
                        usage: wgpu::BufferUsages::STORAGE,
                        mapped_at_creation: false,
                    })
                };
                (
                    mk("wgattn o_part", splits as u64 * max_rows * row_bytes),
                    mk("wgattn lse_part", splits as u64 * max_rows * 4),
                )
            });
            let chunks = plans
                .into_iter()
                .map(|(p, chunk, grid, combine_grid)| ChunkPlan {
                    uniform: init_buffer(
                        device,
                        rt.queue(),
                        "wgattn params",
                        bytemuck::bytes_of(&p),
                        wgpu::BufferUsages::UNIFORM,
                    ),
                    grid,
                    combine_grid,
                    chunk,
                })
                .collect();
            Fused {
                flash,
                combine,
                chunks,
                aux,
                partials,
                splits,
                shaders,
            }
        })
    }

    /// Number of chunks.
    pub(crate) fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Number of key splits (1 = no split).
    pub(crate) fn splits(&self) -> u32 {
        self.splits
    }

    /// The shader variants used.
    pub(crate) fn shaders(&self) -> &[ShaderVariant] {
        &self.shaders
    }

    pub(crate) fn encode(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        t: &Targets,
        timestamps: Option<wgpu::ComputePassTimestampWrites>,
    ) {
        let groups: Vec<(wgpu::BindGroup, Option<wgpu::BindGroup>)> = self
            .chunks
            .iter()
            .map(|c| {
                let ch = &c.chunk;
                let resource = |b: Binding| match b {
                    Binding::Params => Some(c.uniform.as_entire_binding()),
                    Binding::Aux => Some(self.aux.as_entire_binding()),
                    Binding::Scratch => self.partials.as_ref().map(|p| p.0.as_entire_binding()),
                    Binding::Scratch2 => self.partials.as_ref().map(|p| p.1.as_entire_binding()),
                    b => t.window(ch, b),
                };
                let flash = bind::group(
                    device,
                    "wgattn flash",
                    &self.flash,
                    &self.shaders[0],
                    resource,
                );
                let combine = self.combine.as_ref().map(|pipe| {
                    bind::group(device, "wgattn combine", pipe, &self.shaders[1], resource)
                });
                (flash, combine)
            })
            .collect();
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(if self.splits > 1 {
                "wgattn split-kv"
            } else {
                "wgattn flash"
            }),
            timestamp_writes: timestamps,
        });
        for (c, (flash, combine)) in self.chunks.iter().zip(&groups) {
            pass.set_pipeline(&self.flash);
            pass.set_bind_group(0, flash, &[]);
            pass.dispatch_workgroups(c.grid[0], c.grid[1], c.grid[2]);
            if let (Some(pipe), Some(group)) = (&self.combine, combine) {
                pass.set_pipeline(pipe);
                pass.set_bind_group(0, group, &[]);
                pass.dispatch_workgroups(c.combine_grid[0], c.combine_grid[1], c.combine_grid[2]);
            }
        }
    }
}
