//! The three-pass kernel's launcher (`shaders/three_pass/`): S = scale·QKᵀ → row softmax →
//! O = P·V through a score matrix in a scratch buffer, chunk by chunk. What runs (compile
//! keys, chunks, grids) is the planner's (`planner::three_pass`).

use std::sync::Arc;

use super::params::{Params, aux_buffer, params};
use super::{Targets, bind};
use crate::error::Result;
use crate::gpu::{Runtime, init_buffer};
use crate::planner::chunks::{self, Chunk};
use crate::planner::{Storage, three_pass};
use crate::shader::{Binding, ShaderVariant};
use crate::spec::AttentionSpec;

struct ChunkPlan {
    chunk: Chunk,
    uniform: wgpu::Buffer,
    /// QKᵀ dispatches: parameters with their first column block (`x0`) and grid.
    qk_pieces: Vec<(wgpu::Buffer, [u32; 3])>,
    softmax_grid: [u32; 3],
    pv_grid: [u32; 3],
}

/// A compiled three-pass plan: pipelines, per-chunk parameters and the score scratch.
pub(crate) struct ThreePass {
    qk: Arc<wgpu::ComputePipeline>,
    softmax: Arc<wgpu::ComputePipeline>,
    pv: Arc<wgpu::ComputePipeline>,
    chunks: Vec<ChunkPlan>,
    scores: wgpu::Buffer,
    aux: wgpu::Buffer,
    /// The QKᵀ, softmax and P·V shaders.
    shaders: [ShaderVariant; 3],
}

impl ThreePass {
    pub(crate) fn new(rt: &Runtime, spec: &AttentionSpec, storage: Storage) -> Result<Self> {
        let limits = rt.limits();
        let stride = three_pass::score_stride(spec);
        let max_dim = limits.max_workgroups_per_dim.max(1);
        let chunks = three_pass::chunks(spec, limits, storage)?;
        let max_scratch = chunks
            .iter()
            .map(|c| three_pass::scratch_bytes(spec, c.nbh as u64, c.nq as u64))
            .max()
            .unwrap_or(4);
        let device = rt.device();
        let shaders = three_pass::shader_variants(spec, storage);
        let qk = rt.pipeline(&shaders[0])?;
        let softmax = rt.pipeline(&shaders[1])?;
        let pv = rt.pipeline(&shaders[2])?;
        rt.gpu_scope("allocating three-pass buffers", || {
            let scores = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgattn scores"),
                size: max_scratch,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            let (aux, alibi_at) = aux_buffer(rt, spec);
            let uniform = |params: &Params| {
                init_buffer(
                    device,
                    rt.queue(),
                    "wgattn params",
                    bytemuck::bytes_of(params),
                    wgpu::BufferUsages::UNIFORM,
                )
            };
            let chunks = chunks
                .into_iter()
                .map(|chunk| {
                    let params = params(spec, &chunk, stride as u32, alibi_at);
                    let [qk_grid, softmax_grid, pv_grid] =
                        three_pass::grids(spec, chunk.nbh, chunk.nq, max_dim);
                    let qk_pieces = chunks::pieces(qk_grid[0], max_dim)
                        .into_iter()
                        .map(|(x0, n)| {
                            let mut piece: Params = params;
                            piece.x0 = x0;
                            (uniform(&piece), [n, qk_grid[1], qk_grid[2]])
                        })
                        .collect();
                    ChunkPlan {
                        qk_pieces,
                        softmax_grid,
                        pv_grid,
                        chunk,
                        uniform: uniform(&params),
                    }
                })
                .collect();
            ThreePass {
                qk,
                softmax,
                pv,
                chunks,
                scores,
                aux,
                shaders,
            }
        })
    }

    /// The shader variants used.
    pub(crate) fn shaders(&self) -> &[ShaderVariant] {
        &self.shaders
    }

    /// Number of chunks the problem was split into.
    pub(crate) fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    pub(crate) fn encode(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        t: &Targets,
        timestamps: Option<wgpu::ComputePassTimestampWrites>,
    ) {
        struct Groups {
            qk: Vec<wgpu::BindGroup>,
            softmax: wgpu::BindGroup,
            pv: wgpu::BindGroup,
        }
        let groups: Vec<Groups> = self
            .chunks
            .iter()
            .map(|c| {
                let ch = &c.chunk;
                let resource = |b: Binding| match b {
                    Binding::Aux => Some(self.aux.as_entire_binding()),
                    Binding::Scratch => Some(self.scores.as_entire_binding()),
                    Binding::Scratch2 => ch
                        .weights
                        .zip(t.weights)
                        .map(|(w, buf)| bind::window(&w, buf)),
                    // the uniform differs per pass (below)
                    Binding::Params => None,
                    b => t.window(ch, b),
                };
                let group =
                    |label, pipeline: &wgpu::ComputePipeline, shader, uniform: &wgpu::Buffer| {
                        bind::group(device, label, pipeline, shader, |b| match b {
                            Binding::Params => Some(uniform.as_entire_binding()),
                            b => resource(b),
                        })
                    };
                Groups {
                    qk: c
                        .qk_pieces
                        .iter()
                        .map(|(u, _)| group("wgattn qk", &self.qk, &self.shaders[0], u))
                        .collect(),
                    softmax: group(
                        "wgattn softmax",
                        &self.softmax,
                        &self.shaders[1],
                        &c.uniform,
                    ),
                    pv: group("wgattn pv", &self.pv, &self.shaders[2], &c.uniform),
                }
            })
            .collect();
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("wgattn three-pass"),
            timestamp_writes: timestamps,
        });
        for (c, g) in self.chunks.iter().zip(&groups) {
            let qk = c
                .qk_pieces
                .iter()
                .zip(&g.qk)
                .map(|((_, grid), group)| (&self.qk, group, *grid));
            let rest = [
                (&self.softmax, &g.softmax, c.softmax_grid),
                (&self.pv, &g.pv, c.pv_grid),
            ];
            for (pipeline, group, grid) in qk.chain(rest) {
                pass.set_pipeline(pipeline);
                pass.set_bind_group(0, group, &[]);
                pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
            }
        }
    }
}
