//! The planner's vocabulary: head_dim classes, the variants of the fused kernels and whether
//! each fits a device ([`FusedVariant::fits`], the one rule for the default and the tuned
//! choice), the storage of the tensors, and the decision itself ([`Choice`]).

use super::{Caps, DECODE_MAX_ROWS, TILED_KEYS, TiledShape, WORKGROUP_KEYS, fused, three_pass};
use crate::shader::ShaderVariant;
use crate::spec::{AttentionSpec, DType, Kernel};

/// The head_dim class of a fused variant: head_dim rounded up to a multiple of 16, over 16,
/// and whether q/k/v/out are read as vec4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HeadClass {
    /// head_dim rounded up to a multiple of 16, / 16 (1..=16).
    pub d16: u32,
    /// head_dim and every storage offset are multiples of 4 elements: vec4 access.
    pub vec4: bool,
}

impl HeadClass {
    /// The class of `spec` on a device with `caps`.
    pub fn of(spec: &AttentionSpec, caps: &Caps) -> HeadClass {
        HeadClass {
            d16: (spec.head_dim as u32).div_ceil(16).max(1),
            vec4: spec.head_dim.is_multiple_of(4)
                && caps.limits.storage_offset_alignment.is_multiple_of(16),
        }
    }
}

/// How the rows variant shares K/V rows among the invocations of a workgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KvSharing {
    /// `subgroupBroadcast` in subgroups of this fixed size (keys per block = the size).
    Subgroup(u32),
    /// Blocks of [`WORKGROUP_KEYS`] keys staged in workgroup memory.
    Workgroup,
}

impl KvSharing {
    /// The sharing the rows variant uses on `caps`: subgroups where the device has one fixed
    /// size, else workgroup memory.
    pub fn on(caps: &Caps) -> KvSharing {
        caps.subgroup_size
            .map_or(KvSharing::Workgroup, KvSharing::Subgroup)
    }
}

/// Query rows per invocation the rows variant can be built with for head_dim class `class`:
/// 1 or 2, and 4 up to head_dim 128 (4 rows of head_dim > 128 unroll past the shader size
/// budget: ~30 s to compile on llvmpipe, 2 rows ~8 s).
pub fn rows_allowed(rows: u32, class: HeadClass) -> bool {
    matches!(rows, 1 | 2) || (rows == 4 && class.d16 <= 8)
}

/// Which variant of the fused kernels (flash, split-KV) runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FusedVariant {
    /// `fused/rows.wgsl`: every invocation owns `rows` query rows in registers.
    Rows {
        /// head_dim class.
        class: HeadClass,
        /// Invocations per workgroup.
        wg: u32,
        /// Query rows per invocation (1, 2 or 4).
        rows: u32,
        /// How K/V rows are shared.
        sharing: KvSharing,
    },
    /// `fused/tiled.wgsl`: register tiles of `shape`, blocks of [`TILED_KEYS`] keys.
    Tiled {
        /// head_dim class.
        class: HeadClass,
        /// Register-tile shape.
        shape: TiledShape,
        /// Row maxima and sums exchanged by subgroup shuffles instead of workgroup memory
        /// and barriers ([`TiledShape::subgroups_on`]).
        subgroups: bool,
    },
    /// `fused/mma.wgsl`: S = Q·Kᵀ and O += P·V as tile multiplies, on cooperative matrices
    /// (tensor cores) or the portable helpers.
    Mma {
        /// head_dim class.
        class: HeadClass,
        /// Tile shape and workgroup.
        shape: MmaShape,
    },
    /// `fused/decode.wgsl`: one subgroup per workgroup holds all `rows` rows of a kv head,
    /// its lanes split head_dim.
    Decode {
        /// head_dim class.
        class: HeadClass,
        /// Subgroup size (= invocations per workgroup).
        subgroup: u32,
        /// Rows of the kv head (group × seq_q, ≤ [`DECODE_MAX_ROWS`]).
        rows: u32,
    },
}

impl FusedVariant {
    /// The head_dim class.
    pub fn class(&self) -> HeadClass {
        match *self {
            FusedVariant::Rows { class, .. }
            | FusedVariant::Tiled { class, .. }
            | FusedVariant::Mma { class, .. }
            | FusedVariant::Decode { class, .. } => class,
        }
    }

    /// True when this variant can run on a device with `caps`: the one rule behind both the
    /// untuned default and a tuned choice.
    ///
    /// - rows: [`rows_allowed`], at most the device's invocations, K/V shared as
    ///   [`KvSharing::on`] says, subgroup workgroups a multiple of the subgroup size and
    ///   workgroup-memory ones at least [`WORKGROUP_KEYS`] invocations;
    /// - tiled: [`TiledShape::fits`], row exchanges as [`TiledShape::subgroups_on`] says;
    /// - matrix tiles: [`MmaShape::fits`];
    /// - decoding: the device's decoding subgroup size, at most [`DECODE_MAX_ROWS`] rows.
    pub fn fits(&self, caps: &Caps) -> bool {
        match *self {
            FusedVariant::Rows {
                class,
                wg,
                rows,
                sharing,
            } => {
                let shared = match sharing {
                    KvSharing::Subgroup(sg) => wg.is_multiple_of(sg),
                    KvSharing::Workgroup => wg >= WORKGROUP_KEYS,
                };
                rows_allowed(rows, class)
                    && wg <= caps.limits.max_invocations
                    && sharing == KvSharing::on(caps)
                    && shared
            }
            FusedVariant::Tiled {
                class,
                shape,
                subgroups,
            } => shape.fits(class, caps) && subgroups == shape.subgroups_on(caps),
            FusedVariant::Mma { class, shape } => shape.fits(class, caps),
            FusedVariant::Decode { subgroup, rows, .. } => {
                caps.decode_subgroup() == Some(subgroup) && rows <= DECODE_MAX_ROWS
            }
        }
    }

    /// Invocations per workgroup.
    pub fn invocations(&self) -> u32 {
        match *self {
            FusedVariant::Rows { wg, .. } => wg,
            FusedVariant::Tiled { shape, .. } => shape.wg,
            FusedVariant::Mma { shape, .. } => shape.wg,
            FusedVariant::Decode { subgroup, .. } => subgroup,
        }
    }

    /// Keys per block (a split's length is a multiple of it).
    pub fn keys_per_block(&self) -> u32 {
        match *self {
            FusedVariant::Rows {
                sharing: KvSharing::Subgroup(sg),
                ..
            } => sg,
            FusedVariant::Rows { .. } => WORKGROUP_KEYS,
            FusedVariant::Tiled { .. } => TILED_KEYS,
            FusedVariant::Mma { shape, .. } => shape.keys,
            FusedVariant::Decode { subgroup, .. } => subgroup,
        }
    }

    /// Query rows (of one kv head) one workgroup handles.
    pub fn rows_per_workgroup(&self) -> u32 {
        match *self {
            FusedVariant::Rows { wg, rows, .. } => wg * rows,
            FusedVariant::Tiled { shape, .. } => shape.rows(),
            FusedVariant::Mma { shape, .. } => shape.rows,
            FusedVariant::Decode { rows, .. } => rows,
        }
    }

    /// True when the shader uses subgroup operations: the rows variant sharing K/V by
    /// subgroups, the tiled variant exchanging row maxima by shuffles.
    pub fn uses_subgroups(&self) -> bool {
        matches!(
            self,
            FusedVariant::Rows {
                sharing: KvSharing::Subgroup(_),
                ..
            } | FusedVariant::Tiled {
                subgroups: true,
                ..
            }
        )
    }

    /// A short description, e.g. `rows(r=4, wg=64, subgroup 8)`.
    pub fn describe(&self) -> String {
        match *self {
            FusedVariant::Rows {
                wg, rows, sharing, ..
            } => match sharing {
                KvSharing::Subgroup(sg) => format!("rows(r={rows}, wg={wg}, subgroup {sg})"),
                KvSharing::Workgroup => format!("rows(r={rows}, wg={wg}, workgroup memory)"),
            },
            FusedVariant::Tiled { shape, .. } => shape.describe(),
            FusedVariant::Mma { shape, .. } => shape.describe(),
            FusedVariant::Decode { subgroup, rows, .. } => {
                format!("decode(rows={rows}, subgroup {subgroup})")
            }
        }
    }
}

/// Tile shape of the matrix-tile variant (`fused/mma.wgsl`): `rows` query rows per
/// workgroup, blocks of `keys` keys, `wg` invocations, multiplies on `tile`×`tile`×`tile`
/// tiles — cooperative matrices when `coop`, else the portable helpers (same shapes and
/// layouts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MmaShape {
    /// Query rows per workgroup (a multiple of `tile`).
    pub rows: u32,
    /// Keys per block (a multiple of `tile`).
    pub keys: u32,
    /// Invocations per workgroup (a multiple of `rows`).
    pub wg: u32,
    /// Edge of the multiply tiles (8 or 16).
    pub tile: u32,
    /// Cooperative matrices (f16 operands, f32 accumulators) instead of the portable helpers.
    pub coop: bool,
    /// Operands rounded to f16 in workgroup memory: f16 storage, or f32 storage with
    /// [`AttentionSpec::reduced_precision`] (see [`half_operands`](super::half_operands)).
    /// Cooperative matrices need it.
    pub half: bool,
}

/// The (rows, keys, invocations) of the matrix-tile variant, in the order the untuned planner
/// tries them: the first that is valid for the head_dim class and fits the device is used.
/// The last (8 rows, 8×8 tiles only) keeps head_dim 256 on cooperative matrices within 32 KiB
/// of workgroup memory (Mesa's lavapipe), where 16 rows need 33 KiB.
pub const MMA_SHAPES: [(u32, u32, u32); 5] = [
    (64, 64, 256),
    (32, 64, 128),
    (32, 32, 128),
    (16, 16, 64),
    (8, 16, 32),
];

/// Most output vec4s one invocation of the matrix-tile variant holds.
const MMA_MAX_OUT_VEC4: u32 = 16;

/// Operand bytes of the matrix-tile variant's tiles (2 with f16 operands).
pub fn mma_elem_bytes(half: bool) -> u32 {
    if half { 2 } else { 4 }
}

impl MmaShape {
    /// Lanes per query row (`wg / rows`).
    pub fn lanes_per_row(&self) -> u32 {
        self.wg / self.rows.max(1)
    }

    /// True when the kernel can be built for head_dim class `class`: rows and keys multiples
    /// of the tile, every row owned by a whole number of lanes that divide its keys and its
    /// output vec4s, at most 16 output vec4s per invocation.
    pub fn valid_for(&self, class: HeadClass) -> bool {
        let rl = self.lanes_per_row();
        let d4 = class.d16 * 4;
        matches!(self.tile, 8 | 16)
            && self.rows > 0
            && self.rows.is_multiple_of(self.tile)
            && self.keys.is_multiple_of(self.tile)
            && self.keys > 0
            && self.wg.is_multiple_of(self.rows)
            && rl >= 1
            && self.keys.is_multiple_of(rl)
            && d4.is_multiple_of(rl)
            && d4 / rl <= MMA_MAX_OUT_VEC4
    }

    /// Workgroup memory of the kernel (bytes) for head_dim class `class`, operands of
    /// `elem_bytes` (2 for f16 tiles, 4 for f32).
    pub fn workgroup_bytes(&self, class: HeadClass, elem_bytes: u32) -> u32 {
        let dp = class.d16 * 16;
        let operands = self.rows * dp + self.keys * dp + self.rows * self.keys;
        let f32s = (self.rows * self.keys).max(self.rows * dp) + self.wg;
        elem_bytes * operands + 4 * f32s
    }

    /// True when the shape can run head_dim class `class` on a device with `caps`: valid,
    /// within the workgroup memory and invocations, f16 operands only with SHADER_F16, and
    /// cooperative only with f16 operands where the adapter reports that tile edge.
    pub fn fits(&self, class: HeadClass, caps: &Caps) -> bool {
        self.valid_for(class)
            && self.wg <= caps.limits.max_invocations
            && self.workgroup_bytes(class, mma_elem_bytes(self.half))
                <= caps.limits.max_workgroup_storage
            && (!self.half || caps.shader_f16)
            && (!self.coop || mma_coop(caps, self.half) == Some(self.tile))
    }

    /// A short description, e.g. `mma(coop 16×16, 32 rows × 64 keys, wg=128, f16 operands)`.
    pub fn describe(&self) -> String {
        let t = self.tile;
        format!(
            "mma({} {t}×{t}, {} rows × {} keys, wg={}{})",
            if self.coop { "coop" } else { "portable" },
            self.rows,
            self.keys,
            self.wg,
            if self.half { ", f16 operands" } else { "" }
        )
    }
}

/// The cooperative-matrix tile edge the matrix-tile variant multiplies on, with f16
/// operands (`half`) on an adapter that has them.
pub(crate) fn mma_coop(caps: &Caps, half: bool) -> Option<u32> {
    caps.coop_f16.filter(|_| half)
}

/// How q, k, v and out are stored on the GPU (part of the planner's [`Choice`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Storage {
    /// f32 everywhere.
    F32,
    /// f16 arrays (SHADER_F16).
    F16,
    /// f16 pairs packed in u32 (no SHADER_F16): read with `unpack2x16float`; the kernels write
    /// an f32 output that `common/pack_f16.wgsl` converts.
    Packed,
}

impl Storage {
    /// The storage for `spec` on a device with `caps`.
    pub fn of(spec: &AttentionSpec, caps: &Caps) -> Storage {
        match spec.dtype {
            DType::F32 => Storage::F32,
            DType::F16 if caps.shader_f16 => Storage::F16,
            DType::F16 => Storage::Packed,
        }
    }

    /// Bytes per element of q, k, v (and of the caller's out).
    pub fn in_bytes(self) -> u64 {
        match self {
            Storage::F32 => 4,
            Storage::F16 | Storage::Packed => 2,
        }
    }

    /// Bytes per element of the out the kernels write (f32 scratch when packed).
    pub fn kernel_out_bytes(self) -> u64 {
        match self {
            Storage::F32 | Storage::Packed => 4,
            Storage::F16 => 2,
        }
    }
}

/// The planner's decision for one spec on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The kernel (never `Auto`).
    pub kernel: Kernel,
    /// The fused variant (flash and split-KV; `None` for three-pass).
    pub variant: Option<FusedVariant>,
    /// Key splits (1 except for split-KV).
    pub splits: u32,
    /// How q, k, v and out are stored on the GPU.
    pub storage: Storage,
    /// A tuned choice (`wgattn tune`'s cache) decided the variant or split count.
    pub tuned: bool,
}

impl Choice {
    /// The shader variants this choice compiles (the packing pass not included).
    pub fn shaders(&self, spec: &AttentionSpec) -> Vec<ShaderVariant> {
        match self.variant {
            None => three_pass::shader_variants(spec, self.storage).to_vec(),
            Some(v) => fused::shader_variants(spec, &v, self.storage, self.splits > 1),
        }
    }

    /// What runs, in words: the fused variant (and its splits), or the kernel.
    pub fn describe(&self) -> String {
        let v = self
            .variant
            .map(|v| v.describe())
            .unwrap_or_else(|| self.kernel.name().to_string());
        if self.splits > 1 {
            format!("{v}, {} splits", self.splits)
        } else {
            v
        }
    }
}
