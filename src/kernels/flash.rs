//! The fused kernel (`shaders/flash.wgsl`): online softmax, no score matrix. With more than one
//! key split it is the split-KV ("flash-decoding") kernel, whose partial results
//! `shaders/combine.wgsl` merges.

use std::sync::Arc;

use super::bindings::{self, Binding};
use super::chunks::{self, Chunk, ElemBytes, SplitRule};
use super::dispatch;
use super::params::{Storage, all_flag_sets, aux_buffer, common_flags, params};
use crate::context::{Context, init_buffer};
use crate::error::{Error, Result};
use crate::plan::Targets;
use crate::planner::{self, Caps, Choice, FusedVariant, HeadClass};
use crate::shaders::ShaderVariant;
use crate::spec::AttentionSpec;

/// Workgroup size of the combine pass.
const COMBINE_WG: u32 = 64;

/// Keys per block of the decoding variant (`decode.wgsl`'s unrolling).
const DECODE_KEYS_PER_BLOCK: u32 = 4;

/// The shader of the fused kernel for `variant`, without storage or modifier flags.
fn fused_shader(variant: &FusedVariant, split: bool) -> ShaderVariant {
    let HeadClass { d16, vec4 } = variant.class();
    let v = match *variant {
        FusedVariant::Tiled { shape, .. } => {
            let tiled = ShaderVariant::new("flash_tiled.wgsl");
            // (the planner makes no invalid shape; one made by hand fails to render, naming
            // the missing constant, instead of panicking here)
            let Some(c) = shape.consts(variant.class()) else {
                return tiled;
            };
            tiled
                .constant("D16", d16)
                .constant("TI", c.ti)
                .constant("TJ", c.tj)
                .constant("CT", c.ct)
                .constant("RT", c.rt)
                .constant("KD", c.kd)
                .constant("NS", c.ns)
                .constant("SU", c.su)
                .constant("VK", c.vk)
                .constant("VU", c.vu)
                .constant("NU", c.nu)
                .constant("SA", c.sa)
        }
        FusedVariant::Mma { shape, .. } => {
            let dp = d16 * 16;
            let rl = shape.lanes_per_row();
            ShaderVariant::new("flash_mma.wgsl")
                .constant("D16", d16)
                .constant("BR", shape.rows)
                .constant("BC", shape.keys)
                .constant("WG", shape.wg)
                .constant("MT", shape.tile)
                .constant("NK", shape.keys / rl)
                .constant("NO4", dp / (4 * rl))
                .constant("TF", (shape.rows * shape.keys).max(shape.rows * dp))
                .flag("COOP", shape.coop)
                // f16 operands (cooperative matrices multiply nothing else)
                .flag("TE16", shape.half)
                .flag("MT16", shape.tile == 16)
        }
        FusedVariant::Decode { subgroup, rows, .. } => ShaderVariant::new("decode.wgsl")
            .constant("SG", subgroup)
            .constant("R", rows)
            .constant("D16", d16)
            .constant("DL", (4 * d16).div_ceil(subgroup))
            .constant("KU", DECODE_KEYS_PER_BLOCK),
        FusedVariant::Rows { wg, rows, .. } => ShaderVariant::new("flash.wgsl")
            .constant("WG", wg)
            .constant("R", rows)
            .constant("KB", variant.keys_per_block())
            .constant("D16", d16),
    };
    let subgroups = variant.uses_subgroups();
    v.flag("VEC4", vec4)
        .flag("SUBGROUPS", subgroups)
        .flag("SPLIT", split)
}

/// The fused shader for `spec`: storage and score-modifier flags added.
fn fused_shader_for(
    variant: &FusedVariant,
    spec: &AttentionSpec,
    storage: Storage,
    split: bool,
) -> ShaderVariant {
    let mods = spec.bias.is_some()
        || spec.mask.is_some()
        || spec.softcap.is_some()
        || spec.alibi.is_some();
    common_flags(fused_shader(variant, split), spec, storage).flag("MODS", mods)
}

/// The combine pass of split-KV for a head_dim class.
fn combine_shader(class: HeadClass, storage: Storage) -> ShaderVariant {
    ShaderVariant::new("combine.wgsl")
        .constant("WG", COMBINE_WG)
        .constant("D16", class.d16)
        .flag("VEC4", class.vec4)
        .flag("F16", storage == Storage::F16)
        .flag("PACKED", storage == Storage::Packed)
}

/// The shaders a fused plan with `variant` compiles: the kernel, and the combine pass when
/// the keys are split.
pub(crate) fn shader_variants(
    spec: &AttentionSpec,
    variant: &FusedVariant,
    storage: Storage,
    split: bool,
) -> Vec<ShaderVariant> {
    let mut v = vec![fused_shader_for(variant, spec, storage, split)];
    if split {
        v.push(combine_shader(variant.class(), storage));
    }
    v
}

/// Every variant these kernels generate: every fused variant the planner can choose on every
/// class of device ([`planner::caps_classes`]), split or not, with f32 storage and no
/// modifiers, and every combine pass; and every storage / modifier flag combination with each
/// vec4, split and code path (rows with subgroups, rows with workgroup memory, decoding,
/// tiled) on the smallest and a mid head_dim class (the flags add code around the per-score
/// and per-element steps, independent of tile size and head_dim class).
pub(crate) fn variants() -> Vec<ShaderVariant> {
    let mut out = Vec::new();
    let mut paths: Vec<FusedVariant> = Vec::new();
    for caps in planner::caps_classes() {
        for v in planner::fused_variants(&caps) {
            out.push(fused_shader(&v, false));
            out.push(fused_shader(&v, true));
            for storage in [Storage::F32, Storage::F16, Storage::Packed] {
                out.push(combine_shader(v.class(), storage));
            }
            if !paths.iter().any(|p| code_path(p) == code_path(&v)) {
                paths.push(v);
            }
        }
    }
    for flags in all_flag_sets() {
        let mods = flags.iter().any(|f| !matches!(*f, "F16" | "PACKED"));
        let packed = flags.contains(&"PACKED");
        for d16 in [1, 5] {
            for vec4 in [false, true] {
                for split in [false, true] {
                    for path in &paths {
                        let class = HeadClass { d16, vec4 };
                        let path = match *path {
                            FusedVariant::Rows {
                                wg, rows, sharing, ..
                            } => FusedVariant::Rows {
                                class,
                                wg,
                                rows,
                                sharing,
                            },
                            FusedVariant::Tiled { shape, .. } if shape.consts(class).is_none() => {
                                continue;
                            }
                            FusedVariant::Tiled {
                                shape, subgroups, ..
                            } => FusedVariant::Tiled {
                                class,
                                shape,
                                subgroups,
                            },
                            // f16 operands need SHADER_F16 (never packed storage)
                            FusedVariant::Mma { shape, .. } if shape.half && packed => continue,
                            FusedVariant::Mma { shape, .. } if !shape.valid_for(class) => continue,
                            FusedVariant::Mma { shape, .. } => FusedVariant::Mma { class, shape },
                            FusedVariant::Decode { subgroup, rows, .. } => FusedVariant::Decode {
                                class,
                                subgroup,
                                rows,
                            },
                        };
                        let v = flags
                            .iter()
                            .fold(fused_shader(&path, split), |v, f| v.flag(f, true));
                        out.push(v.flag("MODS", mods));
                    }
                }
            }
        }
    }
    out
}

/// The code path of a fused variant: its kind, whether it uses subgroups, and the matrix-tile variant's cooperative tile edge (0: portable).
fn code_path(v: &FusedVariant) -> (std::mem::Discriminant<FusedVariant>, bool, u32) {
    let sub = v.uses_subgroups();
    let coop = match v {
        FusedVariant::Mma { shape, .. } if shape.coop => shape.tile,
        _ => 0,
    };
    (std::mem::discriminant(v), sub, coop)
}

/// The chunks a fused plan with `variant` and `splits` key splits binds on a device with
/// `caps`.
fn fused_chunks(
    spec: &AttentionSpec,
    caps: &Caps,
    variant: &FusedVariant,
    splits: u32,
) -> Result<Vec<Chunk>> {
    let storage = Storage::of(spec, caps);
    let row_bytes = variant.class().d16 as u64 * 64;
    let scratch = move |nbh: u64, nq: u64| {
        if splits > 1 {
            splits as u64 * nbh * nq * row_bytes
        } else {
            0
        }
    };
    let decode = matches!(variant, FusedVariant::Decode { .. });
    let max_dim = caps.limits.max_workgroups_per_dim.max(1);
    let group = spec.group() as u32;
    let chunks = chunks::split(
        spec,
        &caps.limits,
        ElemBytes {
            input: storage.in_bytes(),
            out: storage.kernel_out_bytes(),
        },
        &SplitRule {
            scratch_bytes: &scratch,
            // the decoding variant holds all rows of a kv head: never split them
            row_tile: if decode {
                spec.seq_q as u32
            } else {
                variant.rows_per_workgroup()
            },
            max_units_per_dispatch: caps.limits.max_workgroups_per_dim,
            bh_multiple: spec.group() as u32,
        },
    )?;
    dispatch::rows_within_limit(chunks, max_dim, |nbh, nq| {
        let (grid, combine) = grids(variant, group, splits, nbh, nq, max_dim);
        vec![grid, combine]
    })
}

/// The workgroup grids of a chunk of `nbh` (batch·head) pairs and `nq` query rows: the fused
/// kernel's (row blocks, splits, kv heads) and the combine pass's (folded into two
/// dimensions of at most `max_dim`).
fn grids(
    variant: &FusedVariant,
    group: u32,
    splits: u32,
    nbh: u32,
    nq: u32,
    max_dim: u32,
) -> ([u32; 3], [u32; 3]) {
    let rows = group * nq;
    let row_blocks = rows.div_ceil(variant.rows_per_workgroup());
    let total = rows * (nbh / group);
    let cblocks = (total * 4 * variant.class().d16).div_ceil(COMBINE_WG);
    let combine = if splits > 1 {
        [cblocks.min(max_dim), cblocks.div_ceil(max_dim), 1]
    } else {
        [0, 0, 0]
    };
    ([row_blocks, splits, nbh / group], combine)
}

/// True when the chunks of a fused plan keep every kv head's query rows together (what the
/// decoding variant needs).
pub(crate) fn keeps_kv_heads_whole(
    spec: &AttentionSpec,
    caps: &Caps,
    variant: &FusedVariant,
    splits: u32,
) -> bool {
    fused_chunks(spec, caps, variant, splits)
        .is_ok_and(|chunks| chunks.iter().all(|c| c.nq as usize == spec.seq_q))
}

struct ChunkPlan {
    uniform: wgpu::Buffer,
    grid: [u32; 3],
    combine_grid: [u32; 3],
    chunk: Chunk,
}

/// A compiled fused plan.
pub(crate) struct Flash {
    flash: Arc<wgpu::ComputePipeline>,
    combine: Option<Arc<wgpu::ComputePipeline>>,
    chunks: Vec<ChunkPlan>,
    aux: wgpu::Buffer,
    /// (o_part, lse_part) when split.
    partials: Option<(wgpu::Buffer, wgpu::Buffer)>,
    splits: u32,
    /// Bindings of the kernel's and the combine pass's shaders.
    bindings: (Vec<Binding>, Option<Vec<Binding>>),
    /// Keys of the shader variants used.
    shaders: Vec<String>,
}

impl Flash {
    /// The plan of the planner's `choice` (flash or split-KV) for `spec`.
    pub(crate) fn new(ctx: &Context, spec: &AttentionSpec, choice: &Choice) -> Result<Self> {
        let variant = choice.variant.ok_or_else(|| Error::KernelUnsupported {
            kernel: choice.kernel.name().into(),
            reason: "the planner chose no fused variant".into(),
        })?;
        let limits = ctx.limits();
        let caps = ctx.caps();
        let storage = choice.storage;
        let splits = choice.splits;
        let split = splits > 1;
        let row_bytes = variant.class().d16 as u64 * 64;
        let group = spec.group() as u32;
        let chunks = fused_chunks(spec, caps, &variant, splits)?;
        let max_dim = limits.max_workgroups_per_dim.max(1);
        let split_len = (spec.seq_k as u32)
            .div_ceil(splits)
            .next_multiple_of(variant.keys_per_block());
        let shaders = shader_variants(spec, &variant, storage, split);
        let flash = ctx.pipeline(&shaders[0])?;
        let combine = match shaders.get(1) {
            Some(v) => Some(ctx.pipeline(v)?),
            None => None,
        };
        let bindings = (
            bindings::of_variant(&shaders[0]),
            shaders.get(1).map(bindings::of_variant),
        );
        let shaders = shaders.iter().map(|v| v.key()).collect();
        let device = ctx.device();
        let (aux, alibi_at) = ctx.gpu_scope("allocating aux buffer", || aux_buffer(ctx, spec))?;
        let mut plans = Vec::new();
        for chunk in chunks {
            let (grid, combine_grid) = grids(&variant, group, splits, chunk.nbh, chunk.nq, max_dim);
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
        ctx.gpu_scope("allocating flash buffers", || {
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
                        ctx.queue(),
                        "wgattn params",
                        bytemuck::bytes_of(&p),
                        wgpu::BufferUsages::UNIFORM,
                    ),
                    grid,
                    combine_grid,
                    chunk,
                })
                .collect();
            Flash {
                flash,
                combine,
                chunks,
                aux,
                partials,
                splits,
                bindings,
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

    /// Keys of the shader variants used.
    pub(crate) fn shaders(&self) -> &[String] {
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
                    Binding::Q => Some(ch.q.bind(t.q)),
                    Binding::K => Some(ch.kv.bind(t.k)),
                    Binding::V => Some(ch.kv.bind(t.v)),
                    Binding::Aux => Some(self.aux.as_entire_binding()),
                    Binding::Out => Some(ch.out.bind(t.out)),
                    Binding::Lse => Some(ch.lse.bind(t.lse)),
                    Binding::Bias => ch.bias.zip(t.bias).map(|(w, buf)| w.bind(buf)),
                    Binding::Mask => ch.mask.zip(t.mask).map(|(w, buf)| w.bind(buf)),
                    Binding::Scratch => self.partials.as_ref().map(|p| p.0.as_entire_binding()),
                    Binding::Scratch2 => self.partials.as_ref().map(|p| p.1.as_entire_binding()),
                    // the backward pass's and the layers' own
                    Binding::DOut | Binding::Dq | Binding::Dk | Binding::Dv | Binding::Dbias => {
                        None
                    }
                    Binding::Input | Binding::Weight | Binding::Residual | Binding::Table => None,
                };
                let flash = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("wgattn flash"),
                    layout: &self.flash.get_bind_group_layout(0),
                    entries: &bindings::entries(&self.bindings.0, resource),
                });
                let combine = match (&self.combine, &self.bindings.1) {
                    (Some(pipe), Some(list)) => {
                        Some(device.create_bind_group(&wgpu::BindGroupDescriptor {
                            label: Some("wgattn combine"),
                            layout: &pipe.get_bind_group_layout(0),
                            entries: &bindings::entries(list, resource),
                        }))
                    }
                    _ => None,
                };
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
