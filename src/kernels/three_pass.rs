//! The three-pass kernel: S = scale·QKᵀ (modified, masked) → row softmax → O = P·V, through a
//! score matrix in a scratch buffer. The problem is split into chunks whenever the score
//! matrix or a tensor window exceeds one storage binding.

use std::sync::Arc;

use super::chunks::{self, Chunk, ElemBytes, SplitRule};
use super::params::{Storage, aux_buffer, common_flags, params};
use crate::context::{Context, init_buffer};
use crate::error::Result;
use crate::plan::Targets;
use crate::shaders::ShaderVariant;
use crate::spec::AttentionSpec;

/// QKᵀ tile: workgroup 16×16, 4×4 outputs per invocation → 64×64 tile, 16 dims per step.
const QK_WG: (u32, u32) = (16, 16);
const TK: u32 = 16;
/// Softmax workgroup size.
const SOFTMAX_WG: u32 = 128;
/// P·V workgroup height (rows = 4 × this).
const PV_WG_Y: u32 = 16;
/// Query rows per tile (both matmuls).
const ROW_TILE: u32 = QK_WG.1 * 4;

/// Width of the P·V tile (head dims per workgroup) for a head_dim: 16, 32 or 64.
fn pv_wg_x(head_dim: usize) -> u32 {
    match head_dim {
        0..=16 => 4,
        17..=32 => 8,
        _ => 16,
    }
}

fn qk_variant() -> ShaderVariant {
    ShaderVariant::new("qk.wgsl")
        .constant("WG_X", QK_WG.0)
        .constant("WG_Y", QK_WG.1)
        .constant("TK", TK)
}

fn softmax_variant(weights: bool) -> ShaderVariant {
    ShaderVariant::new("softmax.wgsl")
        .constant("WG", SOFTMAX_WG)
        .flag("WEIGHTS", weights)
}

fn pv_variant(head_dim: usize) -> ShaderVariant {
    ShaderVariant::new("pv.wgsl")
        .constant("WG_X", pv_wg_x(head_dim))
        .constant("WG_Y", PV_WG_Y)
        .constant("TK", TK)
}

/// Every variant this kernel can generate.
pub(crate) fn variants() -> Vec<ShaderVariant> {
    let mut v = vec![softmax_variant(false), softmax_variant(true)];
    for flags in super::params::all_flag_sets() {
        let with = |mut x: ShaderVariant| {
            x.flags.extend(flags.iter().copied());
            x
        };
        v.push(with(qk_variant()));
        // P·V only reads v and writes out: storage flags matter, score modifiers do not.
        if flags.iter().all(|f| matches!(*f, "F16" | "PACKED")) {
            v.extend([16, 32, 64].map(|d| with(pv_variant(d))));
        }
    }
    v
}

/// Row stride of the score matrix: seq_k rounded up to whole vec4s.
fn score_stride(spec: &AttentionSpec) -> u64 {
    (spec.seq_k as u64).next_multiple_of(4)
}

struct ChunkPlan {
    chunk: Chunk,
    uniform: wgpu::Buffer,
    qk_grid: [u32; 3],
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
    /// Keys of the shader variants used.
    shaders: Vec<String>,
}

impl ThreePass {
    pub(crate) fn new(ctx: &Context, spec: &AttentionSpec) -> Result<Self> {
        let limits = ctx.limits();
        let storage = Storage::of(spec, ctx.caps());
        let stride = score_stride(spec);
        let scratch = move |nbh: u64, nq: u64| nbh * nq * stride * 4;
        let chunks = chunks::split(
            spec,
            limits,
            ElemBytes {
                input: storage.in_bytes(),
                out: storage.kernel_out_bytes(),
            },
            &SplitRule {
                scratch_bytes: &scratch,
                row_tile: ROW_TILE,
                max_units_per_dispatch: limits.max_workgroups_per_dim,
                bh_multiple: 1,
            },
        )?;
        let max_scratch = chunks
            .iter()
            .map(|c| scratch(c.nbh as u64, c.nq as u64))
            .max()
            .unwrap_or(4);
        let device = ctx.device();
        let pv_flags = spec.clone().bias(None).mask(None).softcap(None).alibi(None);
        let variants = [
            common_flags(qk_variant(), spec, storage),
            softmax_variant(spec.return_weights),
            common_flags(pv_variant(spec.head_dim), &pv_flags, storage),
        ];
        let qk = ctx.pipeline(&variants[0])?;
        let softmax = ctx.pipeline(&variants[1])?;
        let pv = ctx.pipeline(&variants[2])?;
        let shaders = variants.iter().map(|v| v.key()).collect();
        ctx.gpu_scope("allocating three-pass buffers", || {
            let scores = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgattn scores"),
                size: max_scratch,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            let (aux, alibi_at) = aux_buffer(ctx, spec);
            let max_dim = limits.max_workgroups_per_dim.max(1);
            let chunks = chunks
                .into_iter()
                .map(|chunk| {
                    let params = params(spec, &chunk, stride as u32, alibi_at);
                    let uniform = init_buffer(
                        device,
                        ctx.queue(),
                        "wgattn params",
                        bytemuck::bytes_of(&params),
                        wgpu::BufferUsages::UNIFORM,
                    );
                    let rows = chunk.nbh * chunk.nq;
                    ChunkPlan {
                        qk_grid: [
                            (stride as u32).div_ceil(QK_WG.0 * 4),
                            chunk.nq.div_ceil(ROW_TILE),
                            chunk.nbh,
                        ],
                        softmax_grid: [rows.min(max_dim), rows.div_ceil(max_dim), 1],
                        pv_grid: [
                            (spec.head_dim as u32).div_ceil(pv_wg_x(spec.head_dim) * 4),
                            chunk.nq.div_ceil(PV_WG_Y * 4),
                            chunk.nbh,
                        ],
                        chunk,
                        uniform,
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

    /// Keys of the shader variants used.
    pub(crate) fn shaders(&self) -> &[String] {
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
        let entry = |binding, resource| wgpu::BindGroupEntry { binding, resource };
        let groups: Vec<[wgpu::BindGroup; 3]> = self
            .chunks
            .iter()
            .map(|c| {
                let ch = &c.chunk;
                let uniform = c.uniform.as_entire_binding();
                let mut qk_entries = vec![
                    entry(0, uniform.clone()),
                    entry(1, ch.q.bind(t.q)),
                    entry(2, ch.kv.bind(t.k)),
                    entry(4, self.aux.as_entire_binding()),
                    entry(9, self.scores.as_entire_binding()),
                ];
                if let (Some(w), Some(buf)) = (ch.bias, t.bias) {
                    qk_entries.push(entry(7, w.bind(buf)));
                }
                if let (Some(w), Some(buf)) = (ch.mask, t.mask) {
                    qk_entries.push(entry(8, w.bind(buf)));
                }
                let qk = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("wgattn qk"),
                    layout: &self.qk.get_bind_group_layout(0),
                    entries: &qk_entries,
                });
                let mut sm_entries = vec![
                    entry(0, uniform.clone()),
                    entry(9, self.scores.as_entire_binding()),
                    entry(6, ch.lse.bind(t.lse)),
                ];
                if let (Some(w), Some(buf)) = (ch.weights, t.weights) {
                    sm_entries.push(entry(10, w.bind(buf)));
                }
                let softmax = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("wgattn softmax"),
                    layout: &self.softmax.get_bind_group_layout(0),
                    entries: &sm_entries,
                });
                let pv = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("wgattn pv"),
                    layout: &self.pv.get_bind_group_layout(0),
                    entries: &[
                        entry(0, uniform),
                        entry(9, self.scores.as_entire_binding()),
                        entry(3, ch.kv.bind(t.v)),
                        entry(4, self.aux.as_entire_binding()),
                        entry(5, ch.out.bind(t.out)),
                    ],
                });
                [qk, softmax, pv]
            })
            .collect();
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("wgattn three-pass"),
            timestamp_writes: timestamps,
        });
        for (c, [qk, softmax, pv]) in self.chunks.iter().zip(&groups) {
            for (pipeline, group, grid) in [
                (&self.qk, qk, c.qk_grid),
                (&self.softmax, softmax, c.softmax_grid),
                (&self.pv, pv, c.pv_grid),
            ] {
                pass.set_pipeline(pipeline);
                pass.set_bind_group(0, group, &[]);
                pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
            }
        }
    }
}
