//! The fused kernel (`shaders/flash.wgsl`): online softmax, no score matrix. With more than one
//! key split it is the split-KV ("flash-decoding") kernel, whose partial results
//! `shaders/combine.wgsl` merges.

use std::sync::Arc;

use super::chunks::{self, Chunk, ElemBytes, SplitRule};
use super::params::{Storage, all_flag_sets, aux_buffer, common_flags, params};
use crate::context::Context;
use crate::context::{Caps, init_buffer};
use crate::error::{Error, Result};
use crate::plan::Targets;
use crate::shaders::ShaderVariant;
use crate::spec::AttentionSpec;

/// Workgroup size of the combine pass.
const COMBINE_WG: u32 = 64;

/// Tile shape of one flash variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tiles {
    /// Invocations per workgroup.
    pub wg: u32,
    /// Query rows per invocation.
    pub r: u32,
    /// Keys per block (the subgroup size with subgroups).
    pub kb: u32,
    /// head_dim class / 16 (the class is head_dim rounded up to a multiple of 16).
    pub d16: u32,
    /// q/k/v/out accessed as vec4.
    pub vec4: bool,
    /// Subgroup variant (K/V shared by subgroupBroadcast) or workgroup-memory variant.
    pub subgroups: bool,
    /// Decoding variant (`decode.wgsl`): lanes own keys, every lane holds all `r` rows of the
    /// kv head; one subgroup (`wg` = `kb` = subgroup size) per workgroup.
    pub decode: bool,
    /// Workgroup-tiled variant (`flash_tiled.wgsl`, for GPUs): [`TILED_ROWS`] rows and
    /// [`TILED_WG`] invocations per workgroup, blocks of `kb` = [`TILED_KEYS`] keys.
    pub tiled: bool,
}

/// Query rows per workgroup of the tiled variant.
pub(crate) const TILED_ROWS: u32 = 64;
/// Keys per block of the tiled variant.
pub(crate) const TILED_KEYS: u32 = 64;
/// Invocations per workgroup of the tiled variant.
pub(crate) const TILED_WG: u32 = 256;
/// Workgroup memory the tiled variant needs (bytes).
pub(crate) const TILED_WORKGROUP_BYTES: u32 = 32 * 1024;

/// Most rows per kv head (group × seq_q) the decoding variant holds in every lane.
pub(crate) const DECODE_MAX_ROWS: u32 = 8;
/// Keys per block of the decoding variant.
pub(crate) const DECODE_KEYS_PER_BLOCK: u32 = 4;
/// Subgroup sizes the decoding variant is built for.
const DECODE_SUBGROUPS: [u32; 3] = [8, 16, 32];

impl Tiles {
    /// The workgroup-memory tiles with one row per invocation: the base the other shapes are
    /// written from.
    fn fallback(d16: u32, vec4: bool) -> Tiles {
        Tiles {
            wg: 64,
            r: 1,
            kb: 8,
            d16,
            vec4,
            subgroups: false,
            decode: false,
            tiled: false,
        }
    }

    /// The tiled variant's shape for a head_dim class.
    fn tiled(d16: u32, vec4: bool) -> Tiles {
        Tiles {
            wg: TILED_WG,
            r: 1,
            kb: TILED_KEYS,
            tiled: true,
            ..Tiles::fallback(d16, vec4)
        }
    }

    /// Query rows one workgroup handles.
    pub(crate) fn rows_per_workgroup(&self) -> u32 {
        if self.tiled {
            TILED_ROWS
        } else {
            self.wg * self.r
        }
    }

    /// The head_dim class (head_dim rounded up to a multiple of 16, / 16) of `spec`, and
    /// whether q/k/v/out can be accessed as vec4 on a device with `caps`.
    fn class(spec: &AttentionSpec, caps: &Caps) -> (u32, bool) {
        let d16 = (spec.head_dim as u32).div_ceil(16).max(1);
        let vec4 = spec.head_dim.is_multiple_of(4)
            && caps.limits.storage_offset_alignment.is_multiple_of(16);
        (d16, vec4)
    }

    /// The tiles for `spec` on a device with `caps`.
    pub(crate) fn choose(spec: &AttentionSpec, caps: &Caps) -> Tiles {
        let (d16, vec4) = Tiles::class(spec, caps);
        if caps.flash_tiles {
            return Tiles::tiled(d16, vec4);
        }
        let rows = (spec.group() * spec.seq_q) as u32;
        // More rows per invocation share each K/V fetch and broadcast (4 rows: 1.6-1.7× faster
        // than 1 on lavapipe, for every head_dim class, BENCHMARKS.md); short problems keep
        // fewer rows per invocation to keep more workgroups.
        let r = match rows {
            // 4 rows of head_dim > 128 take ~30 s to compile on llvmpipe; 2 rows ~8 s
            256.. if d16 <= 8 => 4,
            64.. => 2,
            _ => 1,
        };
        let few = rows.div_ceil(r);
        let base = Tiles::fallback(d16, vec4);
        match caps.subgroup_size {
            Some(sg) => Tiles {
                // One subgroup per workgroup when the rows fit it (decoding), else 64 rows.
                wg: if few <= sg { sg } else { sg.max(64) },
                r,
                kb: sg,
                subgroups: true,
                ..base
            },
            // K and V blocks of 8 keys (the fallback's): 2·8·256·4 B = 16 KiB at most,
            // WebGPU's guaranteed workgroup storage.
            None => Tiles {
                wg: if few <= 16 { 16 } else { 64 },
                r,
                ..base
            },
        }
    }

    /// The decoding tiles for `spec`, when the device has a suitable fixed subgroup size and
    /// the kv head has at most [`DECODE_MAX_ROWS`] query rows.
    pub(crate) fn decode(spec: &AttentionSpec, caps: &Caps) -> Option<Tiles> {
        let rows = (spec.group() * spec.seq_q) as u32;
        let sg = caps
            .subgroup_size
            .filter(|sg| DECODE_SUBGROUPS.contains(sg))?;
        let (d16, vec4) = Tiles::class(spec, caps);
        (rows <= DECODE_MAX_ROWS).then(|| Tiles {
            wg: sg,
            r: rows,
            kb: sg,
            subgroups: true,
            decode: true,
            ..Tiles::fallback(d16, vec4)
        })
    }

    fn flash(&self, split: bool) -> ShaderVariant {
        if self.tiled {
            // V chunks of VK keys fill the 1024 vec4 of the staging area at most.
            let vk = (1024 / (4 * self.d16)).min(TILED_KEYS);
            return ShaderVariant::new("flash_tiled.wgsl")
                .constant("D16", self.d16)
                .constant("NU", self.d16.div_ceil(4))
                .constant("VK", 1 << vk.ilog2())
                .flag("VEC4", self.vec4)
                .flag("SPLIT", split);
        }
        if self.decode {
            return ShaderVariant::new("decode.wgsl")
                .constant("SG", self.kb)
                .constant("R", self.r)
                .constant("D16", self.d16)
                .constant("DL", (4 * self.d16).div_ceil(self.kb))
                .constant("KU", DECODE_KEYS_PER_BLOCK)
                .flag("VEC4", self.vec4)
                .flag("SPLIT", split);
        }
        ShaderVariant::new("flash.wgsl")
            .constant("WG", self.wg)
            .constant("R", self.r)
            .constant("KB", self.kb)
            .constant("D16", self.d16)
            .flag("VEC4", self.vec4)
            .flag("SUBGROUPS", self.subgroups)
            .flag("SPLIT", split)
    }

    /// The flash variant for `spec`: storage and score-modifier flags added.
    fn flash_for(&self, spec: &AttentionSpec, storage: Storage, split: bool) -> ShaderVariant {
        let mods = spec.bias.is_some()
            || spec.mask.is_some()
            || spec.softcap.is_some()
            || spec.alibi.is_some();
        common_flags(self.flash(split), spec, storage).flag("MODS", mods)
    }

    fn combine(&self) -> ShaderVariant {
        ShaderVariant::new("combine.wgsl")
            .constant("WG", COMBINE_WG)
            .constant("D16", self.d16)
            .flag("VEC4", self.vec4)
    }

    fn combine_for(&self, storage: Storage) -> ShaderVariant {
        self.combine()
            .flag("F16", storage == Storage::F16)
            .flag("PACKED", storage == Storage::Packed)
    }
}

/// The tile shapes [`Tiles::choose`] and [`Tiles::decode`] can return for a head_dim class,
/// subgroup setting and vec4 choice.
fn tile_shapes(d16: u32, subgroup: Option<u32>, vec4: bool) -> Vec<Tiles> {
    let base = Tiles::fallback(d16, vec4);
    let mut out = Vec::new();
    for r in [1, 2, 4] {
        if r == 4 && d16 > 8 {
            continue;
        }
        match subgroup {
            Some(sg) => {
                for wg in [sg, sg.max(64)] {
                    let t = Tiles {
                        wg,
                        r,
                        kb: sg,
                        subgroups: true,
                        ..base
                    };
                    if !out.contains(&t) {
                        out.push(t);
                    }
                }
            }
            None => {
                for wg in [16, 64] {
                    out.push(Tiles { wg, r, ..base });
                }
            }
        }
    }
    if let Some(sg) = subgroup.filter(|sg| DECODE_SUBGROUPS.contains(sg)) {
        for rows in 1..=DECODE_MAX_ROWS {
            out.push(Tiles {
                wg: sg,
                r: rows,
                kb: sg,
                subgroups: true,
                decode: true,
                ..base
            });
        }
    }
    out
}

/// Subgroup sizes a device can have (with a fixed size); `None` is the fallback.
const SUBGROUP_SETTINGS: [Option<u32>; 5] = [None, Some(8), Some(16), Some(32), Some(64)];

/// Every variant these kernels generate: every tile shape of every head_dim class, subgroup
/// setting, vec4 and split choice with f32 storage and no modifiers; and every storage /
/// modifier flag combination with each vec4, split and code path (subgroup, workgroup
/// memory, decoding, tiled) on the smallest and a mid head_dim class (the flags add code
/// around the per-score and per-element steps, independent of tile size and head_dim class).
pub(crate) fn variants() -> Vec<ShaderVariant> {
    let mut out = Vec::new();
    for d16 in 1..=16 {
        for vec4 in [false, true] {
            for sg in SUBGROUP_SETTINGS {
                for t in tile_shapes(d16, sg, vec4) {
                    out.push(t.flash(false));
                    out.push(t.flash(true));
                }
            }
            let tiled = Tiles::tiled(d16, vec4);
            out.push(tiled.flash(false));
            out.push(tiled.flash(true));
            let t = Tiles::fallback(d16, vec4);
            for storage in [Storage::F32, Storage::F16, Storage::Packed] {
                out.push(t.combine_for(storage));
            }
        }
    }
    for flags in all_flag_sets() {
        let mods = flags.iter().any(|f| !matches!(*f, "F16" | "PACKED"));
        for d16 in [1, 5] {
            for vec4 in [false, true] {
                for split in [false, true] {
                    let base = Tiles::fallback(d16, vec4);
                    for t in [
                        Tiles {
                            r: 2,
                            subgroups: true,
                            ..base
                        },
                        base,
                        Tiles {
                            wg: 8,
                            r: 3,
                            subgroups: true,
                            decode: true,
                            ..base
                        },
                        Tiles::tiled(d16, vec4),
                    ] {
                        let mut v = t.flash(split);
                        v.flags.extend(flags.iter().copied());
                        out.push(v.flag("MODS", mods));
                    }
                }
            }
        }
    }
    out
}

/// How many key splits split-KV uses for `spec` with `tiles`: enough workgroups to fill the
/// device, each split at least 256 keys long. CPU adapters: a few workgroups per core. GPUs:
/// about 2^18 invocations (what a large GPU keeps resident: an H100 holds 132 × 2048), so the
/// one-subgroup decoding workgroups get many more splits than 256-invocation tiles.
pub(crate) fn choose_splits(spec: &AttentionSpec, tiles: &Tiles, caps: &Caps) -> u32 {
    let target_workgroups: u64 = match caps.device_type {
        wgpu::DeviceType::Cpu => {
            4 * std::thread::available_parallelism().map_or(2, |n| n.get()) as u64
        }
        _ => (1u64 << 18) / tiles.wg as u64,
    };
    let blocks = if tiles.decode {
        1
    } else {
        ((spec.group() * spec.seq_q) as u64).div_ceil(tiles.rows_per_workgroup() as u64)
    } * (spec.batch * spec.kv_heads) as u64;
    let by_keys = (spec.seq_k as u64 / 256).max(1);
    target_workgroups
        .div_ceil(blocks)
        .clamp(1, by_keys.min(MAX_SPLITS)) as u32
}

/// Most key splits split-KV uses.
const MAX_SPLITS: u64 = 1024;

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
    /// Keys of the shader variants used.
    shaders: Vec<String>,
}

impl Flash {
    /// A plan with `splits` key splits (1 = plain flash); `decode` asks for the decoding
    /// variant where the device and shape allow it.
    pub(crate) fn new(
        ctx: &Context,
        spec: &AttentionSpec,
        splits: u32,
        decode: bool,
    ) -> Result<Self> {
        let limits = ctx.limits();
        let decode_tiles = decode.then(|| Tiles::decode(spec, ctx.caps())).flatten();
        let tiles = decode_tiles.unwrap_or_else(|| Tiles::choose(spec, ctx.caps()));
        let storage = Storage::of(spec, ctx.caps());
        let split = splits > 1;
        let row_bytes = tiles.d16 as u64 * 64;
        let scratch = move |nbh: u64, nq: u64| {
            if split {
                splits as u64 * nbh * nq * row_bytes
            } else {
                0
            }
        };
        let group = spec.group() as u32;
        let chunks = chunks::split(
            spec,
            limits,
            ElemBytes {
                input: storage.in_bytes(),
                out: storage.kernel_out_bytes(),
            },
            &SplitRule {
                scratch_bytes: &scratch,
                // the decoding variant holds all rows of a kv head: never split them
                row_tile: if tiles.decode {
                    spec.seq_q as u32
                } else {
                    tiles.rows_per_workgroup()
                },
                max_units_per_dispatch: limits.max_workgroups_per_dim,
                bh_multiple: group,
            },
        )?;
        if tiles.decode && chunks.iter().any(|c| c.nq as usize != spec.seq_q) {
            return Flash::new(ctx, spec, splits, false);
        }
        let max_dim = limits.max_workgroups_per_dim.max(1);
        let split_len = (spec.seq_k as u32)
            .div_ceil(splits)
            .next_multiple_of(tiles.kb);
        let mut shaders = vec![tiles.flash_for(spec, storage, split)];
        if split {
            shaders.push(tiles.combine_for(storage));
        }
        let flash = ctx.pipeline(&shaders[0])?;
        let combine = match shaders.get(1) {
            Some(v) => Some(ctx.pipeline(v)?),
            None => None,
        };
        let shaders = shaders.iter().map(|v| v.key()).collect();
        let device = ctx.device();
        let (aux, alibi_at) = ctx.gpu_scope("allocating aux buffer", || aux_buffer(ctx, spec))?;
        let mut plans = Vec::new();
        for chunk in chunks {
            let rows = group * chunk.nq;
            let row_blocks = rows.div_ceil(tiles.rows_per_workgroup());
            if row_blocks > max_dim || splits > max_dim {
                return Err(Error::TooLarge {
                    what: format!("workgroups per dimension for {rows} rows × {splits} splits"),
                    needed: row_blocks.max(splits) as u64,
                    allowed: max_dim as u64,
                    limit: "max_compute_workgroups_per_dimension",
                });
            }
            let total = rows * (chunk.nbh / group);
            let cblocks = (total * 4 * tiles.d16).div_ceil(COMBINE_WG);
            let mut p = params(spec, &chunk, 0, alibi_at);
            p.n_splits = splits;
            p.split_len = split_len;
            let grid = [row_blocks, splits, chunk.nbh / group];
            let combine_grid = [cblocks.min(max_dim), cblocks.div_ceil(max_dim), 1];
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
        let entry = |binding, resource| wgpu::BindGroupEntry { binding, resource };
        let groups: Vec<(wgpu::BindGroup, Option<wgpu::BindGroup>)> = self
            .chunks
            .iter()
            .map(|c| {
                let ch = &c.chunk;
                let mut entries = vec![
                    entry(0, c.uniform.as_entire_binding()),
                    entry(1, ch.q.bind(t.q)),
                    entry(2, ch.kv.bind(t.k)),
                    entry(3, ch.kv.bind(t.v)),
                    entry(4, self.aux.as_entire_binding()),
                ];
                if let (Some(w), Some(buf)) = (ch.bias, t.bias) {
                    entries.push(entry(7, w.bind(buf)));
                }
                if let (Some(w), Some(buf)) = (ch.mask, t.mask) {
                    entries.push(entry(8, w.bind(buf)));
                }
                match &self.partials {
                    Some((o, l)) => {
                        entries.push(entry(9, o.as_entire_binding()));
                        entries.push(entry(10, l.as_entire_binding()));
                    }
                    None => {
                        entries.push(entry(5, ch.out.bind(t.out)));
                        entries.push(entry(6, ch.lse.bind(t.lse)));
                    }
                }
                let flash = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("wgattn flash"),
                    layout: &self.flash.get_bind_group_layout(0),
                    entries: &entries,
                });
                let combine = match (&self.combine, &self.partials) {
                    (Some(pipe), Some((o, l))) => {
                        Some(device.create_bind_group(&wgpu::BindGroupDescriptor {
                            label: Some("wgattn combine"),
                            layout: &pipe.get_bind_group_layout(0),
                            entries: &[
                                entry(0, c.uniform.as_entire_binding()),
                                entry(9, o.as_entire_binding()),
                                entry(10, l.as_entire_binding()),
                                entry(5, ch.out.bind(t.out)),
                                entry(6, ch.lse.bind(t.lse)),
                            ],
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
