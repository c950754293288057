//! The three-pass kernel: S = scale·QKᵀ (modified, masked) → row softmax → O = P·V, through a
//! score matrix in a scratch buffer. The problem is split into chunks whenever the score
//! matrix or a tensor window exceeds one storage binding.

use std::sync::Arc;

use super::bindings::{self, Binding};
use super::chunks::{self, Chunk, ElemBytes, SplitRule};
use super::dispatch;
use super::params::{Params, Storage, aux_buffer, common_flags, params};
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

/// The three shaders (QKᵀ, softmax, P·V) of a three-pass plan for `spec`.
pub(crate) fn shader_variants(spec: &AttentionSpec, storage: Storage) -> [ShaderVariant; 3] {
    // P·V only reads v and writes out: storage flags matter, score modifiers do not.
    let pv_flags = spec.clone().bias(None).mask(None).softcap(None).alibi(None);
    [
        common_flags(qk_variant(), spec, storage),
        softmax_variant(spec.return_weights),
        common_flags(pv_variant(spec.head_dim), &pv_flags, storage),
    ]
}

/// The grids of a chunk of `nbh` (batch·head) pairs and `nq` query rows: QKᵀ (all column
/// blocks in one dispatch; [`dispatch::pieces`] cuts them), softmax (one workgroup per row,
/// folded into two dimensions of at most `max_dim`) and P·V.
fn grids(spec: &AttentionSpec, nbh: u32, nq: u32, max_dim: u32) -> [[u32; 3]; 3] {
    let rows = nbh * nq;
    [
        [
            (score_stride(spec) as u32).div_ceil(QK_WG.0 * 4),
            nq.div_ceil(ROW_TILE),
            nbh,
        ],
        [rows.min(max_dim), rows.div_ceil(max_dim), 1],
        [
            (spec.head_dim as u32).div_ceil(pv_wg_x(spec.head_dim) * 4),
            nq.div_ceil(PV_WG_Y * 4),
            nbh,
        ],
    ]
}

/// Row stride of the score matrix: seq_k rounded up to whole vec4s.
fn score_stride(spec: &AttentionSpec) -> u64 {
    (spec.seq_k as u64).next_multiple_of(4)
}

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
    /// Bindings of the QKᵀ, softmax and P·V shaders.
    bindings: [Vec<Binding>; 3],
    /// Keys of the shader variants used.
    shaders: Vec<String>,
}

impl ThreePass {
    pub(crate) fn new(ctx: &Context, spec: &AttentionSpec, storage: Storage) -> Result<Self> {
        let limits = ctx.limits();
        let stride = score_stride(spec);
        let scratch = move |nbh: u64, nq: u64| nbh * nq * stride * 4;
        let max_dim = limits.max_workgroups_per_dim.max(1);
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
        // QKᵀ's column blocks are cut into dispatches by `x0`; every other dimension must fit
        let chunks = dispatch::rows_within_limit(chunks, max_dim, |nbh, nq| {
            let [mut qk, softmax, pv] = grids(spec, nbh, nq, max_dim);
            qk[0] = qk[0].min(max_dim);
            vec![qk, softmax, pv]
        })?;
        let max_scratch = chunks
            .iter()
            .map(|c| scratch(c.nbh as u64, c.nq as u64))
            .max()
            .unwrap_or(4);
        let device = ctx.device();
        let variants = shader_variants(spec, storage);
        let qk = ctx.pipeline(&variants[0])?;
        let softmax = ctx.pipeline(&variants[1])?;
        let pv = ctx.pipeline(&variants[2])?;
        let bindings = variants.each_ref().map(bindings::of_variant);
        let shaders = variants.iter().map(|v| v.key()).collect();
        ctx.gpu_scope("allocating three-pass buffers", || {
            let scores = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgattn scores"),
                size: max_scratch,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            let (aux, alibi_at) = aux_buffer(ctx, spec);
            let uniform = |params: &Params| {
                init_buffer(
                    device,
                    ctx.queue(),
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
                        grids(spec, chunk.nbh, chunk.nq, max_dim);
                    let qk_pieces = dispatch::pieces(qk_grid[0], max_dim)
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
                bindings,
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
                    Binding::Q => Some(ch.q.bind(t.q)),
                    Binding::K => Some(ch.kv.bind(t.k)),
                    Binding::V => Some(ch.kv.bind(t.v)),
                    Binding::Aux => Some(self.aux.as_entire_binding()),
                    Binding::Out => Some(ch.out.bind(t.out)),
                    Binding::Lse => Some(ch.lse.bind(t.lse)),
                    Binding::Bias => ch.bias.zip(t.bias).map(|(w, buf)| w.bind(buf)),
                    Binding::Mask => ch.mask.zip(t.mask).map(|(w, buf)| w.bind(buf)),
                    Binding::Scratch => Some(self.scores.as_entire_binding()),
                    Binding::Scratch2 => ch.weights.zip(t.weights).map(|(w, buf)| w.bind(buf)),
                    // the uniform differs per pass (below); the rest is the backward pass's own
                    Binding::Params
                    | Binding::DOut
                    | Binding::Dq
                    | Binding::Dk
                    | Binding::Dv
                    | Binding::Dbias => None,
                    // the layers' own
                    Binding::Input | Binding::Weight | Binding::Residual | Binding::Table => None,
                };
                let group =
                    |label, pipeline: &wgpu::ComputePipeline, list, uniform: &wgpu::Buffer| {
                        let entries = bindings::entries(list, |b| match b {
                            Binding::Params => Some(uniform.as_entire_binding()),
                            b => resource(b),
                        });
                        device.create_bind_group(&wgpu::BindGroupDescriptor {
                            label: Some(label),
                            layout: &pipeline.get_bind_group_layout(0),
                            entries: &entries,
                        })
                    };
                Groups {
                    qk: c
                        .qk_pieces
                        .iter()
                        .map(|(u, _)| group("wgattn qk", &self.qk, &self.bindings[0], u))
                        .collect(),
                    softmax: group(
                        "wgattn softmax",
                        &self.softmax,
                        &self.bindings[1],
                        &c.uniform,
                    ),
                    pv: group("wgattn pv", &self.pv, &self.bindings[2], &c.uniform),
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
