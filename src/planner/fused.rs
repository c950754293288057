//! The fused kernels (flash and split-KV, `shaders/fused/`): the compile key of each
//! [`FusedVariant`] (template, constants, flags, bindings), the split-KV combine pass, and how
//! a fused plan is cut into chunks and workgroup grids. Pure: the launcher is
//! `kernels::fused`.

use super::catalog::{all_flag_sets, common_flags};
use super::chunks::{self, Chunk, ElemBytes, SplitRule};
use super::{Caps, FusedVariant, HeadClass, Storage};
use crate::error::Result;
use crate::shader::{Binding, Flag, ShaderVariant};
use crate::spec::AttentionSpec;

/// Workgroup size of the combine pass.
pub(crate) const COMBINE_WG: u32 = 64;

/// Keys per block of the decoding variant (`fused/decode.wgsl`'s unrolling).
const DECODE_KEYS_PER_BLOCK: u32 = 4;

/// Bytes of one row of a split's partial output (f32, head_dim rounded up to the class).
pub(crate) fn partial_row_bytes(variant: &FusedVariant) -> u64 {
    variant.class().d16 as u64 * 64
}

/// The shader of the fused kernel for `variant`, without storage or modifier flags (and
/// without their bindings: see [`with_bindings`]).
fn fused_shader(variant: &FusedVariant, split: bool) -> ShaderVariant {
    let HeadClass { d16, vec4 } = variant.class();
    let v = match *variant {
        FusedVariant::Tiled { shape, .. } => {
            let tiled = ShaderVariant::new("fused/tiled.wgsl");
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
            ShaderVariant::new("fused/mma.wgsl")
                .constant("D16", d16)
                .constant("BR", shape.rows)
                .constant("BC", shape.keys)
                .constant("WG", shape.wg)
                .constant("MT", shape.tile)
                .constant("NK", shape.keys / rl)
                .constant("NO4", dp / (4 * rl))
                .constant("TF", (shape.rows * shape.keys).max(shape.rows * dp))
                .flag(Flag::COOP, shape.coop)
                // f16 operands (cooperative matrices multiply nothing else)
                .flag(Flag::TE16, shape.half)
                .flag(Flag::MT16, shape.tile == 16)
        }
        FusedVariant::Decode { subgroup, rows, .. } => ShaderVariant::new("fused/decode.wgsl")
            .constant("SG", subgroup)
            .constant("R", rows)
            .constant("D16", d16)
            .constant("DL", (4 * d16).div_ceil(subgroup))
            .constant("KU", DECODE_KEYS_PER_BLOCK),
        FusedVariant::Rows { wg, rows, .. } => ShaderVariant::new("fused/rows.wgsl")
            .constant("WG", wg)
            .constant("R", rows)
            .constant("KB", variant.keys_per_block())
            .constant("D16", d16),
    };
    v.flag(Flag::VEC4, vec4)
        .flag(Flag::SUBGROUPS, variant.uses_subgroups())
        .flag(Flag::SPLIT, split)
}

/// A fused kernel's shader with its bindings: q, k, v and aux; the per-split partials with
/// `SPLIT`, else out and lse; the bias and mask when their flags are set. `MODS` is set when
/// any score modifier is.
fn with_bindings(v: ShaderVariant) -> ShaderVariant {
    let mods = [Flag::BIAS, Flag::MASK, Flag::SOFTCAP, Flag::ALIBI]
        .iter()
        .any(|&f| v.has(f));
    let split = v.has(Flag::SPLIT);
    let (bias, mask) = (v.has(Flag::BIAS), v.has(Flag::MASK));
    let outputs = if split {
        [Binding::Scratch, Binding::Scratch2]
    } else {
        [Binding::Out, Binding::Lse]
    };
    v.flag(Flag::MODS, mods)
        .bind([
            Binding::Params,
            Binding::Q,
            Binding::K,
            Binding::V,
            Binding::Aux,
        ])
        .bind(outputs)
        .bind_if(bias, Binding::Bias)
        .bind_if(mask, Binding::Mask)
}

/// The fused shader for `spec`: storage and score-modifier flags added.
fn fused_shader_for(
    variant: &FusedVariant,
    spec: &AttentionSpec,
    storage: Storage,
    split: bool,
) -> ShaderVariant {
    with_bindings(common_flags(fused_shader(variant, split), spec, storage))
}

/// The combine pass of split-KV for a head_dim class.
fn combine_shader(class: HeadClass, storage: Storage) -> ShaderVariant {
    ShaderVariant::new("fused/split_kv_combine.wgsl")
        .constant("WG", COMBINE_WG)
        .constant("D16", class.d16)
        .flag(Flag::VEC4, class.vec4)
        .flag(Flag::F16, storage == Storage::F16)
        .flag(Flag::PACKED, storage == Storage::Packed)
        .bind([
            Binding::Params,
            Binding::Out,
            Binding::Lse,
            Binding::Scratch,
            Binding::Scratch2,
        ])
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
/// class of device ([`caps_classes`](super::caps_classes)), split or not, with f32 storage
/// and no modifiers, and every combine pass; and every storage / modifier flag combination
/// with each vec4, split and code path (rows with subgroups, rows with workgroup memory,
/// decoding, tiled, matrix tiles) on the smallest and a mid head_dim class (the flags add
/// code around the per-score and per-element steps, independent of tile size and head_dim
/// class).
pub(crate) fn variants() -> Vec<ShaderVariant> {
    let mut out = Vec::new();
    let mut paths: Vec<FusedVariant> = Vec::new();
    for caps in super::caps_classes() {
        for v in super::fused_variants(&caps) {
            out.push(with_bindings(fused_shader(&v, false)));
            out.push(with_bindings(fused_shader(&v, true)));
            for storage in [Storage::F32, Storage::F16, Storage::Packed] {
                out.push(combine_shader(v.class(), storage));
            }
            if !paths.iter().any(|p| code_path(p) == code_path(&v)) {
                paths.push(v);
            }
        }
    }
    for flags in all_flag_sets() {
        let packed = flags.contains(&Flag::PACKED);
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
                            .fold(fused_shader(&path, split), |v, &f| v.flag(f, true));
                        out.push(with_bindings(v));
                    }
                }
            }
        }
    }
    out
}

/// The code path of a fused variant: its kind, whether it uses subgroups, and the
/// matrix-tile variant's cooperative tile edge (0: portable).
fn code_path(v: &FusedVariant) -> (std::mem::Discriminant<FusedVariant>, bool, u32) {
    let sub = v.uses_subgroups();
    let coop = match v {
        FusedVariant::Mma { shape, .. } if shape.coop => shape.tile,
        _ => 0,
    };
    (std::mem::discriminant(v), sub, coop)
}

/// Keys per split of a fused plan with `splits` key splits: whole blocks of the variant.
pub(crate) fn split_len(spec: &AttentionSpec, variant: &FusedVariant, splits: u32) -> u32 {
    (spec.seq_k as u32)
        .div_ceil(splits)
        .next_multiple_of(variant.keys_per_block())
}

/// The chunks a fused plan with `variant` and `splits` key splits binds on a device with
/// `caps`.
pub(crate) fn chunks(
    spec: &AttentionSpec,
    caps: &Caps,
    variant: &FusedVariant,
    splits: u32,
) -> Result<Vec<Chunk>> {
    let storage = Storage::of(spec, caps);
    let row_bytes = partial_row_bytes(variant);
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
    chunks::rows_within_limit(chunks, max_dim, |nbh, nq| {
        let (grid, combine) = grids(variant, group, splits, nbh, nq, max_dim);
        vec![grid, combine]
    })
}

/// The workgroup grids of a chunk of `nbh` (batch·head) pairs and `nq` query rows: the fused
/// kernel's (row blocks, splits, kv heads) and the combine pass's (folded into two
/// dimensions of at most `max_dim`).
pub(crate) fn grids(
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
    chunks(spec, caps, variant, splits)
        .is_ok_and(|chunks| chunks.iter().all(|c| c.nq as usize == spec.seq_q))
}
