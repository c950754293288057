//! The kernel planner: the one place that decides how a spec runs on a device — which kernel,
//! which variant of the fused kernels, how many key splits and which f16 storage. The decision
//! is a [`Choice`] made by [`plan`] from the spec and the device's [`Caps`] (plain data, so the
//! planner runs and is tested without a GPU).
//!
//! The rule behind [`Kernel::Auto`]:
//! 1. The probability matrix is asked for → three-pass (the only kernel that stores it).
//! 2. Decoding (`seq_q ≤ 16`), when the device has the decoding variant (fixed subgroups of 8,
//!    16 or 32 and at most 8 query rows per kv head: lanes split head_dim, K/V rows are read
//!    contiguously) or when splitting the keys gives the device more workgroups (see
//!    [`split_count`]) → split-KV, with as many key splits as [`split_count`] says (one split
//!    means no combine pass).
//! 3. Otherwise → flash: it never stores the Sq×Sk score matrix, so its memory is O(B·H·S·D)
//!    and on the adapters measured it is faster than three-pass at every size (BENCHMARKS.md).
//!
//! An explicit kernel is used as asked, after checking it can run the spec. A kernel whose
//! shaders bind more storage buffers than the device allows per shader stage is never chosen
//! by `Auto` (three-pass is tried instead) and is an error when asked for.
//!
//! The fused variant ([`FusedVariant`]):
//! - **tiled** (`flash_tiled.wgsl`) on GPUs: any adapter that is not a CPU and has
//!   [`TILED_WORKGROUP_BYTES`] of workgroup memory and [`TILED_WG`] invocations per workgroup,
//!   with the register-tile shape of [`TiledShape::default_for`] (or a tuned one);
//! - **rows** (`flash.wgsl`) on CPU adapters: 1, 2 or 4 query rows per invocation, K/V shared
//!   through subgroups of a fixed size, or staged in workgroup memory without them;
//! - **decode** (`decode.wgsl`) for split-KV with fixed subgroups of 8, 16 or 32 and at most
//!   [`DECODE_MAX_ROWS`] query rows per kv head, when the kv head's rows stay in one chunk.
//!
//! [`Caps::tiles`] (from `ContextOptions::flash_tiles` or `WGATTN_FLASH_TILES`) forces tiled or
//! rows; `ContextOptions::disable_subgroups` / `disable_shader_f16` remove the feature from the
//! caps before the planner sees them.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::{flash, three_pass};
use crate::limits::DeviceLimits;
use crate::shaders::ShaderVariant;
use crate::spec::{AttentionSpec, Kernel};

pub use crate::kernels::bindings::Binding;
pub use crate::kernels::params::Storage;
pub use crate::tiles::{TILED_KEYS, TiledShape};
use crate::tune::{TunedChoice, Tuning};

/// Largest `seq_q` that counts as decoding for `Auto`.
pub const DECODE_MAX_SEQ_Q: usize = 16;
/// Invocations per workgroup the untuned tiled shapes need at most.
pub const TILED_WG: u32 = 256;
/// Workgroup memory the untuned tiled shapes need at most (bytes).
pub const TILED_WORKGROUP_BYTES: u32 = 32 * 1024;
/// Most rows per kv head (group × seq_q) the decoding variant holds in every lane.
pub const DECODE_MAX_ROWS: u32 = 8;
/// Fixed subgroup sizes the subgroup variants are used with (other sizes get the
/// workgroup-memory variants).
pub const SUBGROUP_SIZES: [u32; 4] = [8, 16, 32, 64];
/// Subgroup sizes the decoding variant is built for.
pub const DECODE_SUBGROUPS: [u32; 3] = [8, 16, 32];
/// Keys per block of the workgroup-memory rows variant (2·8·256·4 B = 16 KiB of K and V at
/// most, WebGPU's guaranteed workgroup storage).
pub const WORKGROUP_KEYS: u32 = 8;
/// Most key splits split-KV uses.
pub const MAX_SPLITS: u32 = 1024;

/// What the planner knows about a device: its limits and the optional features that select
/// kernel variants. Plain data: build one by hand to ask the planner about any device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Limits plans are made against.
    pub limits: DeviceLimits,
    /// The subgroup size when the device has subgroups of one fixed size (and they are not
    /// disabled); `None` selects the workgroup-memory variants.
    pub subgroup_size: Option<u32>,
    /// The device has SHADER_F16 (and it is not disabled): f16 arrays in shaders.
    pub shader_f16: bool,
    /// Kind of adapter: CPU adapters get the rows variants, and their split-KV grid is sized
    /// by `host_threads`.
    pub device_type: wgpu::DeviceType,
    /// `Some(true)` / `Some(false)` forces the tiled / rows fused variants
    /// (`ContextOptions::flash_tiles`, `WGATTN_FLASH_TILES`); `None` chooses by adapter. The
    /// tiled variant is never used without its workgroup memory and invocations.
    pub tiles: Option<bool>,
    /// Threads of the host (a CPU adapter runs on them).
    pub host_threads: u32,
    /// Edge (8 or 16) of the square f16×f16→f32 cooperative-matrix shape the adapter reports,
    /// when the device has cooperative matrices, subgroups and SHADER_F16 (and they are not
    /// disabled): the matrix-tile variant then multiplies on them (tensor cores).
    pub coop_f16: Option<u32>,
    /// `Some(true)` / `Some(false)` forces / forbids the matrix-tile fused variant
    /// (`ContextOptions::flash_mma`, `WGATTN_FLASH_MMA`), with cooperative matrices where
    /// [`Caps::coop_f16`] allows, else with the portable helpers. `None`: used for f16
    /// storage where the adapter has cooperative matrices.
    pub mma: Option<bool>,
}

impl Caps {
    /// True when flash and split-KV use the workgroup-tiled variant here.
    pub fn flash_tiles(&self) -> bool {
        self.limits.max_workgroup_storage >= TILED_WORKGROUP_BYTES
            && self.limits.max_invocations >= TILED_WG
            && self
                .tiles
                .unwrap_or(self.device_type != wgpu::DeviceType::Cpu)
    }

    /// These caps with the cooperative-matrix edge the device can use: its features include
    /// cooperative matrices, subgroups and SHADER_F16, and `properties` (the adapter's
    /// configurations) list a square f16×f16→f32 shape of edge 16 or 8 (16 preferred).
    pub fn with_cooperative_matrices(
        mut self,
        features: wgpu::Features,
        properties: &[wgpu::CooperativeMatrixProperties],
    ) -> Caps {
        let usable = features.contains(
            wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
                | wgpu::Features::SUBGROUP
                | wgpu::Features::SHADER_F16,
        ) && self.shader_f16;
        self.coop_f16 = usable.then(|| coop_f16_edge(properties)).flatten();
        self
    }

    /// The fixed subgroup size the decoding variant can use, if any.
    fn decode_subgroup(&self) -> Option<u32> {
        self.subgroup_size
            .filter(|sg| DECODE_SUBGROUPS.contains(sg))
    }

    /// Which variants the kernels use here, in words (`wgattn info`).
    pub fn variants(&self) -> Vec<String> {
        let mut lines = vec![if self.flash_tiles() {
            let class = HeadClass { d16: 8, vec4: true };
            match TiledShape::default_for(class, self) {
                Some(shape) => format!(
                    "flash/split-kv: workgroup-tiled variant, {} for head_dim 128, row \
                     maxima exchanged {}",
                    shape.describe(),
                    if shape.subgroups_on(self) {
                        "by subgroup shuffles"
                    } else {
                        "through workgroup memory"
                    }
                ),
                None => "flash/split-kv: workgroup-tiled variant (no shape fits)".into(),
            }
        } else {
            match self.subgroup_size {
                Some(n) => format!(
                    "flash/split-kv: rows variant, K/V by subgroupBroadcast (subgroup size {n})"
                ),
                None => "flash/split-kv: rows variant, K/V in workgroup memory (no fixed-size \
                         subgroups)"
                    .into(),
            }
        }];
        match (self.mma, self.coop_f16) {
            (Some(false), _) => {}
            (Some(true), None) => lines.push(
                "flash/split-kv: matrix-tile variant forced, portable tile multiplies (no \
                 cooperative matrices)"
                    .into(),
            ),
            (_, Some(t)) => lines.push(format!(
                "flash/split-kv f16: matrix-tile variant on cooperative matrices ({t}×{t}×{t} \
                 f16×f16→f32)"
            )),
            (None, None) => {}
        }
        if let Some(sg) = self.decode_subgroup() {
            lines.push(format!(
                "split-kv decoding: lanes split head_dim (subgroup size {sg}, ≤ {DECODE_MAX_ROWS} \
                 rows per kv head)"
            ));
        }
        lines.push(if self.shader_f16 {
            "f16: native f16 storage (SHADER_F16)".into()
        } else {
            "f16: packed in u32 (unpack2x16float) + packing pass (no SHADER_F16)".into()
        });
        lines
    }
}

/// The largest square f16×f16→f32 cooperative-matrix edge (16 or 8) among `properties`.
pub fn coop_f16_edge(properties: &[wgpu::CooperativeMatrixProperties]) -> Option<u32> {
    [16, 8].into_iter().find(|&e| {
        properties.iter().any(|p| {
            p.m_size == e
                && p.n_size == e
                && p.k_size == e
                && p.ab_type == wgpu::CooperativeScalarType::F16
                && p.cr_type == wgpu::CooperativeScalarType::F32
        })
    })
}

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

/// Which variant of the fused kernels (flash, split-KV) runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FusedVariant {
    /// `flash.wgsl`: every invocation owns `rows` query rows in registers.
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
    /// `flash_tiled.wgsl`: register tiles of `shape`, blocks of [`TILED_KEYS`] keys.
    Tiled {
        /// head_dim class.
        class: HeadClass,
        /// Register-tile shape.
        shape: TiledShape,
        /// Row maxima and sums exchanged by subgroup shuffles instead of workgroup memory
        /// and barriers ([`TiledShape::subgroups_on`]).
        subgroups: bool,
    },
    /// `flash_mma.wgsl`: S = Q·Kᵀ and O += P·V as tile multiplies, on cooperative matrices
    /// (tensor cores) or the portable helpers.
    Mma {
        /// head_dim class.
        class: HeadClass,
        /// Tile shape and workgroup.
        shape: MmaShape,
    },
    /// `decode.wgsl`: one subgroup per workgroup holds all `rows` rows of a kv head, its lanes
    /// split head_dim.
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

/// Tile shape of the matrix-tile variant (`flash_mma.wgsl`): `rows` query rows per workgroup,
/// blocks of `keys` keys, `wg` invocations, multiplies on `tile`×`tile`×`tile` tiles —
/// cooperative matrices when `coop`, else the portable helpers (same shapes and layouts).
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
    /// [`AttentionSpec::reduced_precision`] (see [`half_operands`]). Cooperative matrices
    /// need it.
    pub half: bool,
}

/// The (rows, keys, invocations) of the matrix-tile variant, in the order the untuned planner
/// tries them: the first that is valid for the head_dim class and fits the device is used.
pub const MMA_SHAPES: [(u32, u32, u32); 4] =
    [(64, 64, 256), (32, 64, 128), (32, 32, 128), (16, 16, 64)];

/// Most output vec4s one invocation of the matrix-tile variant holds.
const MMA_MAX_OUT_VEC4: u32 = 16;

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
            Some(v) => flash::shader_variants(spec, &v, self.storage, self.splits > 1),
        }
    }
}

/// Query rows per kv head of `spec` (group × seq_q): the rows a fused workgroup grid covers.
fn kv_head_rows(spec: &AttentionSpec) -> u32 {
    (spec.group() * spec.seq_q) as u32
}

/// The rows (or tiled) variant for a head_dim class and `rows` query rows per kv head.
pub fn rows_variant(class: HeadClass, rows: u32, caps: &Caps) -> FusedVariant {
    if caps.flash_tiles()
        && let Some(shape) = TiledShape::default_for(class, caps)
    {
        return FusedVariant::Tiled {
            class,
            shape,
            subgroups: shape.subgroups_on(caps),
        };
    }
    // More rows per invocation share each K/V fetch and broadcast (4 rows: 1.6-1.7× faster
    // than 1 on lavapipe, for every head_dim class, BENCHMARKS.md); short problems keep fewer
    // rows per invocation to keep more workgroups.
    let r = match rows {
        // 4 rows of head_dim > 128 take ~30 s to compile on llvmpipe; 2 rows ~8 s
        256.. if class.d16 <= 8 => 4,
        64.. => 2,
        _ => 1,
    };
    let few = rows.div_ceil(r);
    match caps.subgroup_size {
        // One subgroup per workgroup when the rows fit it (decoding), else 64 rows.
        Some(sg) => FusedVariant::Rows {
            class,
            wg: if few <= sg { sg } else { sg.max(64) },
            rows: r,
            sharing: KvSharing::Subgroup(sg),
        },
        None => FusedVariant::Rows {
            class,
            wg: if few <= 16 { 16 } else { 64 },
            rows: r,
            sharing: KvSharing::Workgroup,
        },
    }
}

/// The decoding variant for a head_dim class and `rows` query rows per kv head, when the
/// device has a suitable fixed subgroup size and `rows ≤` [`DECODE_MAX_ROWS`].
pub fn decode_variant(class: HeadClass, rows: u32, caps: &Caps) -> Option<FusedVariant> {
    let subgroup = caps.decode_subgroup()?;
    (rows <= DECODE_MAX_ROWS).then_some(FusedVariant::Decode {
        class,
        subgroup,
        rows,
    })
}

/// True when `spec` asks for reduced-precision products and they apply on `caps`: f32
/// storage, SHADER_F16, and cooperative matrices (or the matrix-tile variant forced, which
/// then multiplies f16 operands with the portable helpers).
pub fn reduced_precision_applies(spec: &AttentionSpec, caps: &Caps) -> bool {
    spec.reduced_precision
        && Storage::of(spec, caps) == Storage::F32
        && caps.shader_f16
        && (caps.coop_f16.is_some() || caps.mma == Some(true))
}

/// True when the matrix-tile variant holds f16 operands for `spec`: f16 storage, or f32
/// storage where [`reduced_precision_applies`].
pub fn half_operands(spec: &AttentionSpec, caps: &Caps) -> bool {
    Storage::of(spec, caps) == Storage::F16 || reduced_precision_applies(spec, caps)
}

/// The cooperative-matrix tile edge the matrix-tile variant multiplies on, with f16
/// operands (`half`) on an adapter that has them.
fn mma_coop(caps: &Caps, half: bool) -> Option<u32> {
    caps.coop_f16.filter(|_| half)
}

/// Operand bytes of the matrix-tile variant's tiles (2 with f16 operands).
pub fn mma_elem_bytes(half: bool) -> u32 {
    if half { 2 } else { 4 }
}

/// True when `shape` can run head_dim class `class` on a device with `caps`: valid, within
/// the workgroup memory and invocations, f16 operands only with SHADER_F16, and cooperative
/// only with f16 operands where the adapter reports that tile edge.
pub fn mma_fits(shape: &MmaShape, class: HeadClass, caps: &Caps) -> bool {
    shape.valid_for(class)
        && shape.wg <= caps.limits.max_invocations
        && shape.workgroup_bytes(class, mma_elem_bytes(shape.half))
            <= caps.limits.max_workgroup_storage
        && (!shape.half || caps.shader_f16)
        && (!shape.coop || mma_coop(caps, shape.half) == Some(shape.tile))
}

/// The untuned matrix-tile shape for a head_dim class and operand type: the first of
/// [`MMA_SHAPES`] that fits, cooperative where the adapter allows.
pub fn mma_default_shape(class: HeadClass, half: bool, caps: &Caps) -> Option<MmaShape> {
    let coop = mma_coop(caps, half);
    MMA_SHAPES.iter().find_map(|&(rows, keys, wg)| {
        let shape = MmaShape {
            rows,
            keys,
            wg,
            tile: coop.unwrap_or(16),
            coop: coop.is_some(),
            half,
        };
        mma_fits(&shape, class, caps).then_some(shape)
    })
}

/// The matrix-tile variant for `spec`, when it is used: forced by [`Caps::mma`], or for f16
/// storage on adapters with cooperative matrices; and only where a shape fits.
pub fn mma_variant(spec: &AttentionSpec, caps: &Caps) -> Option<FusedVariant> {
    let half = half_operands(spec, caps);
    let wanted = match caps.mma {
        Some(on) => on,
        None => mma_coop(caps, half).is_some(),
    };
    if !wanted {
        return None;
    }
    let class = HeadClass::of(spec, caps);
    mma_default_shape(class, half, caps).map(|shape| FusedVariant::Mma { class, shape })
}

/// The flash variant for `spec` (no key splits).
pub fn flash_variant(spec: &AttentionSpec, caps: &Caps) -> FusedVariant {
    mma_variant(spec, caps)
        .unwrap_or_else(|| rows_variant(HeadClass::of(spec, caps), kv_head_rows(spec), caps))
}

/// The split-KV variant for `spec`, before checking that the decoding variant's kv heads stay
/// whole in one chunk (see [`plan`]).
fn split_variant(spec: &AttentionSpec, caps: &Caps) -> FusedVariant {
    let class = HeadClass::of(spec, caps);
    decode_variant(class, kv_head_rows(spec), caps).unwrap_or_else(|| flash_variant(spec, caps))
}

/// True when split-KV would use the decoding variant for `spec` on `ctx` (shape and device
/// allowing; see [`plan`] for the chunking condition).
pub fn has_decode_variant(spec: &AttentionSpec, ctx: &Context) -> bool {
    has_decode(spec, ctx.caps())
}

/// How many key splits split-KV uses for `spec` with `variant`: enough workgroups to fill the
/// device, each split at least 256 keys long, at most [`MAX_SPLITS`] and at most the device's
/// workgroups per dimension. CPU adapters: 4 workgroups per host thread. GPUs: about 2^18
/// invocations (what a large GPU keeps resident: an H100 holds 132 × 2048), so the
/// one-subgroup decoding workgroups get many more splits than 256-invocation tiles.
pub fn splits_for(spec: &AttentionSpec, variant: &FusedVariant, caps: &Caps) -> u32 {
    let target_workgroups: u64 = match caps.device_type {
        wgpu::DeviceType::Cpu => 4 * caps.host_threads.max(1) as u64,
        _ => (1u64 << 18) / variant.invocations() as u64,
    };
    let blocks = match variant {
        FusedVariant::Decode { .. } => 1,
        _ => (kv_head_rows(spec) as u64).div_ceil(variant.rows_per_workgroup() as u64),
    } * (spec.batch * spec.kv_heads) as u64;
    let by_keys = (spec.seq_k as u64 / 256).max(1);
    let most = by_keys
        .min(MAX_SPLITS as u64)
        .min(caps.limits.max_workgroups_per_dim.max(1) as u64);
    target_workgroups.div_ceil(blocks.max(1)).clamp(1, most) as u32
}

/// How many key splits split-KV would use for `spec` on a device with `caps`.
pub fn split_count(spec: &AttentionSpec, caps: &Caps) -> u32 {
    splits_for(spec, &split_variant(spec, caps), caps)
}

/// Storage buffers the most demanding shader of `choice` binds.
pub fn storage_buffers(spec: &AttentionSpec, choice: &Choice) -> u32 {
    choice
        .shaders(spec)
        .iter()
        .map(|v| {
            crate::kernels::bindings::of_variant(v)
                .iter()
                .filter(|b| b.is_storage())
                .count() as u32
        })
        .max()
        .unwrap_or(0)
}

/// The typed error for a choice whose shaders bind more storage buffers than allowed.
fn too_many_buffers(spec: &AttentionSpec, choice: &Choice, caps: &Caps) -> Option<Error> {
    let needed = storage_buffers(spec, choice);
    let allowed = caps.limits.max_storage_buffers_per_stage;
    (needed > allowed).then(|| Error::TooLarge {
        what: format!("the {} kernel's storage buffers", choice.kernel),
        needed: needed as u64,
        allowed: allowed as u64,
        limit: "max_storage_buffers_per_shader_stage",
    })
}

/// The decision for `spec` on a device with `caps`: kernel, fused variant, splits, storage
/// (untuned).
pub fn plan(spec: &AttentionSpec, caps: &Caps) -> Result<Choice> {
    plan_tuned(spec, caps, &Tuning::none())
}

/// The tuned choice [`plan_tuned`] applies to `spec`: the one of its class, unless a fused
/// variant is forced ([`Caps::tiles`], [`Caps::mma`]) or the kernel is three-pass.
fn tuned_choice(spec: &AttentionSpec, caps: &Caps, tuning: &Tuning) -> Option<TunedChoice> {
    if caps.tiles.is_some() || caps.mma.is_some() || !crate::tune::tunable(spec) {
        return None;
    }
    tuning.get(spec, caps)
}

/// Like [`plan`], with the tuned choices of `tuning` where the spec's class has one that can
/// run it: the fused variant of flash and of split-KV's non-decoding path, or split-KV's
/// split count. Everything else is as untuned.
pub fn plan_tuned(spec: &AttentionSpec, caps: &Caps, tuning: &Tuning) -> Result<Choice> {
    let tuned_choice = tuned_choice(spec, caps, tuning);
    let tuned_variant = tuned_choice.and_then(|c| c.variant(spec, caps));
    let split_shift = match tuned_choice {
        Some(TunedChoice::Splits { shift }) => Some(shift),
        _ => None,
    };
    let flash_variant = |spec: &AttentionSpec, caps: &Caps| {
        tuned_variant.unwrap_or_else(|| flash_variant(spec, caps))
    };
    let split_variant = |spec: &AttentionSpec, caps: &Caps| {
        let class = HeadClass::of(spec, caps);
        decode_variant(class, kv_head_rows(spec), caps).unwrap_or_else(|| flash_variant(spec, caps))
    };
    let storage = Storage::of(spec, caps);
    let fused_cannot = |kernel: Kernel| -> Result<()> {
        if spec.return_weights {
            return Err(Error::KernelUnsupported {
                kernel: kernel.name().into(),
                reason:
                    "it never forms the probability matrix; use three-pass (or auto) for weights"
                        .into(),
            });
        }
        Ok(())
    };
    let three_pass = Choice {
        kernel: Kernel::ThreePass,
        variant: None,
        splits: 1,
        storage,
        tuned: false,
    };
    let flash = Choice {
        kernel: Kernel::Flash,
        variant: Some(flash_variant(spec, caps)),
        splits: 1,
        storage,
        tuned: tuned_variant.is_some(),
    };
    let split_kv = |min_splits: u32| {
        let variant = split_variant(spec, caps);
        let mut splits = splits_for(spec, &variant, caps);
        if let Some(shift) = split_shift {
            splits = shifted_splits(spec, splits, shift, caps);
        }
        let splits = splits.max(min_splits);
        // The decoding variant holds all rows of a kv head: when the chunks that fit the
        // device's bindings cut them, the rows variant runs instead (same splits).
        let variant = match variant {
            FusedVariant::Decode { .. }
                if !flash::keeps_kv_heads_whole(spec, caps, &variant, splits) =>
            {
                flash_variant(spec, caps)
            }
            v => v,
        };
        let tuned = match variant {
            FusedVariant::Decode { .. } => split_shift.is_some(),
            _ => tuned_variant.is_some() || split_shift.is_some(),
        };
        Choice {
            kernel: Kernel::SplitKv,
            variant: Some(variant),
            splits,
            storage,
            tuned,
        }
    };
    let checked = |choice: Choice| match too_many_buffers(spec, &choice, caps) {
        Some(e) => Err(e),
        None => Ok(choice),
    };
    match spec.kernel {
        Kernel::ThreePass => checked(three_pass),
        Kernel::Flash => {
            fused_cannot(Kernel::Flash)?;
            checked(flash)
        }
        Kernel::SplitKv => {
            fused_cannot(Kernel::SplitKv)?;
            // an explicit split-KV splits the keys even where one split would do
            checked(split_kv(2.min(caps.limits.max_workgroups_per_dim.max(1))))
        }
        Kernel::Auto => {
            if spec.return_weights {
                return checked(three_pass);
            }
            let decoding = spec.seq_q <= DECODE_MAX_SEQ_Q;
            let split = split_kv(1);
            let fused = if decoding && (split.splits > 1 || has_decode(spec, caps)) {
                split
            } else {
                flash
            };
            // a device with too few storage buffers for the fused kernels gets three-pass
            match too_many_buffers(spec, &fused, caps) {
                None => Ok(fused),
                Some(e) => checked(three_pass).map_err(|_| e),
            }
        }
    }
}

/// `splits` × 2^`shift` within split-KV's bounds (see [`splits_for`]).
fn shifted_splits(spec: &AttentionSpec, splits: u32, shift: i32, caps: &Caps) -> u32 {
    let most = ((spec.seq_k as u64 / 256).max(1))
        .min(MAX_SPLITS as u64)
        .min(caps.limits.max_workgroups_per_dim.max(1) as u64) as u32;
    let s = if shift >= 0 {
        splits.saturating_mul(1 << shift.min(8))
    } else {
        splits >> (-shift).min(31)
    };
    s.clamp(1, most.max(1))
}

/// True when split-KV's variant for `spec` on `caps` is the decoding one.
fn has_decode(spec: &AttentionSpec, caps: &Caps) -> bool {
    matches!(split_variant(spec, caps), FusedVariant::Decode { .. })
}

/// The kernel, variant and splits that will run `spec` on `ctx` (with its tuned choices).
pub fn plan_kernel(spec: &AttentionSpec, ctx: &Context) -> Result<Choice> {
    plan_tuned(spec, ctx.caps(), ctx.tuning())
}

/// The kernel that will run `spec` on `ctx` (never `Auto`).
pub fn choose(spec: &AttentionSpec, ctx: &Context) -> Result<Kernel> {
    plan_kernel(spec, ctx).map(|c| c.kernel)
}

/// Every fused variant the planner can choose on a device with `caps`, for every head_dim
/// class and query-row count (the rows choice depends on rows only below 256).
pub fn fused_variants(caps: &Caps) -> Vec<FusedVariant> {
    let mut out = Vec::new();
    for d16 in 1..=16 {
        for vec4 in [false, true] {
            let class = HeadClass { d16, vec4 };
            for rows in 1..=512 {
                out.push(rows_variant(class, rows, caps));
                out.extend(decode_variant(class, rows, caps));
            }
            // f32 operands (f32 storage, f16 packed in u32) and f16 ones (f16 storage, or
            // f32 with reduced precision)
            for half in [false, true] {
                let wanted = caps.mma.unwrap_or(mma_coop(caps, half).is_some());
                if let Some(shape) = mma_default_shape(class, half, caps).filter(|_| wanted) {
                    out.push(FusedVariant::Mma { class, shape });
                }
            }
            // what a tuned choice can select (`wgattn tune`'s candidates)
            for dtype in [crate::spec::DType::F32, crate::spec::DType::F16] {
                let head_dim = class.d16 as usize * 16 - usize::from(!class.vec4);
                let spec = AttentionSpec::new(1, 1, 1, 64, 64, head_dim).dtype(dtype);
                if HeadClass::of(&spec, caps) != class {
                    continue;
                }
                out.extend(
                    crate::tune::candidates(&spec, caps)
                        .iter()
                        .filter_map(|c| c.variant(&spec, caps)),
                );
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// One `Caps` per class of device the planner distinguishes: CPU adapters with each fixed
/// subgroup size and without subgroups (GL), and GPUs (tiled), each with and without
/// SHADER_F16. [`crate::shaders::all_variants`] covers what the planner chooses on all of them.
pub fn caps_classes() -> Vec<Caps> {
    let limits = DeviceLimits {
        max_storage_binding: 1 << 27,
        max_buffer_size: 1 << 28,
        max_workgroup_storage: 32 * 1024,
        max_invocations: 256,
        max_workgroups_per_dim: 65535,
        max_storage_buffers_per_stage: 8,
        storage_offset_alignment: 256,
    };
    // a CPU adapter without subgroups or SHADER_F16; the classes differ from it
    let base = Caps {
        limits,
        subgroup_size: None,
        shader_f16: false,
        device_type: wgpu::DeviceType::Cpu,
        tiles: None,
        host_threads: 4,
        coop_f16: None,
        mma: None,
    };
    let mut out = Vec::new();
    for shader_f16 in [false, true] {
        for subgroup_size in std::iter::once(None).chain(SUBGROUP_SIZES.map(Some)) {
            out.push(Caps {
                subgroup_size,
                shader_f16,
                ..base
            });
        }
        out.push(Caps {
            subgroup_size: Some(32),
            shader_f16,
            device_type: wgpu::DeviceType::DiscreteGpu,
            ..base
        });
        // the matrix-tile variant forced with the portable helpers (CPU adapters, GL)
        for subgroup_size in [None, Some(8)] {
            out.push(Caps {
                subgroup_size,
                shader_f16,
                mma: Some(true),
                ..base
            });
        }
    }
    // GPUs with cooperative matrices of each edge, 48 KiB of workgroup memory (NVIDIA)
    for tile in [8, 16] {
        out.push(Caps {
            limits: DeviceLimits {
                max_workgroup_storage: 48 * 1024,
                max_invocations: 1024,
                ..limits
            },
            subgroup_size: Some(32),
            shader_f16: true,
            device_type: wgpu::DeviceType::DiscreteGpu,
            coop_f16: Some(tile),
            ..base
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{DType, Layout};

    fn limits() -> DeviceLimits {
        DeviceLimits {
            max_storage_binding: 1 << 30,
            max_buffer_size: 1 << 31,
            max_workgroup_storage: 32 * 1024,
            max_invocations: 256,
            max_workgroups_per_dim: 65535,
            max_storage_buffers_per_stage: 8,
            storage_offset_alignment: 256,
        }
    }

    /// A CPU adapter (lavapipe-like) with 4 host threads.
    fn cpu(subgroup_size: Option<u32>, shader_f16: bool) -> Caps {
        Caps {
            limits: limits(),
            subgroup_size,
            shader_f16,
            device_type: wgpu::DeviceType::Cpu,
            tiles: None,
            host_threads: 4,
            coop_f16: None,
            mma: None,
        }
    }

    /// llvmpipe's GL: no subgroups, no SHADER_F16, 16 KiB of workgroup memory.
    fn gl() -> Caps {
        let mut c = cpu(None, false);
        c.limits.max_workgroup_storage = 16 * 1024;
        c
    }

    /// A discrete GPU with fixed subgroups of 32 and SHADER_F16.
    fn gpu() -> Caps {
        Caps {
            device_type: wgpu::DeviceType::DiscreteGpu,
            ..cpu(Some(32), true)
        }
    }

    fn auto(b: usize, hq: usize, hkv: usize, sq: usize, sk: usize, d: usize) -> AttentionSpec {
        AttentionSpec::new(b, hq, hkv, sq, sk, d)
    }

    #[test]
    fn weights_go_to_three_pass_and_fused_kernels_refuse_them() {
        let spec = auto(1, 2, 2, 64, 64, 32).with_weights(true);
        for caps in [cpu(Some(8), true), gl(), gpu()] {
            let c = plan(&spec, &caps).unwrap();
            assert_eq!(
                (c.kernel, c.variant, c.splits),
                (Kernel::ThreePass, None, 1)
            );
            for kernel in [Kernel::Flash, Kernel::SplitKv] {
                match plan(&spec.clone().kernel(kernel), &caps) {
                    Err(Error::KernelUnsupported { kernel: k, reason }) => {
                        assert_eq!(k, kernel.name());
                        assert!(reason.contains("probability matrix"), "{reason}");
                    }
                    other => panic!("{kernel}: expected KernelUnsupported, got {other:?}"),
                }
            }
        }
    }

    #[test]
    fn explicit_kernels_are_used_as_asked() {
        let spec = auto(1, 4, 2, 100, 300, 64);
        for caps in [cpu(Some(8), false), gl(), gpu()] {
            for kernel in [Kernel::ThreePass, Kernel::Flash, Kernel::SplitKv] {
                let c = plan(&spec.clone().kernel(kernel), &caps).unwrap();
                assert_eq!(c.kernel, kernel);
                assert_eq!(c.variant.is_none(), kernel == Kernel::ThreePass);
                match kernel {
                    Kernel::SplitKv => assert!(c.splits >= 2, "{c:?}"),
                    _ => assert_eq!(c.splits, 1),
                }
            }
        }
    }

    #[test]
    fn auto_prefers_flash_and_split_kv_for_decoding() {
        let caps = cpu(Some(8), true);
        // prefill: flash
        let c = plan(&auto(1, 8, 2, 512, 512, 64), &caps).unwrap();
        assert_eq!((c.kernel, c.splits), (Kernel::Flash, 1));
        // decoding with the decoding variant: split-KV, its variant, 16 workgroups on 4 threads
        let c = plan(&auto(1, 8, 2, 1, 4096, 64), &caps).unwrap();
        assert_eq!(c.kernel, Kernel::SplitKv);
        assert!(matches!(
            c.variant,
            Some(FusedVariant::Decode {
                rows: 4,
                subgroup: 8,
                ..
            })
        ));
        assert_eq!(c.splits, 8, "16 workgroups over 2 kv heads");
        // short decoding with the decoding variant: split-KV with one split (no combine)
        let c = plan(&auto(1, 8, 2, 1, 200, 64), &caps).unwrap();
        assert_eq!((c.kernel, c.splits), (Kernel::SplitKv, 1));
        // without subgroups (GL): split-KV only when splitting gives more workgroups
        let c = plan(&auto(1, 8, 2, 1, 4096, 64), &gl()).unwrap();
        assert_eq!(c.kernel, Kernel::SplitKv);
        assert!(matches!(
            c.variant,
            Some(FusedVariant::Rows {
                sharing: KvSharing::Workgroup,
                ..
            })
        ));
        assert!(c.splits > 1);
        let c = plan(&auto(1, 8, 2, 1, 300, 64), &gl()).unwrap();
        assert_eq!((c.kernel, c.splits), (Kernel::Flash, 1));
        // 17 query rows is not decoding
        let c = plan(&auto(1, 1, 1, 17, 1 << 16, 64), &gl()).unwrap();
        assert_eq!(c.kernel, Kernel::Flash);
        // too many rows per kv head for the decoding variant: the rows variant, split
        let c = plan(&auto(1, 16, 1, 1, 4096, 64), &caps).unwrap();
        assert_eq!(c.kernel, Kernel::SplitKv);
        assert!(
            matches!(c.variant, Some(FusedVariant::Rows { .. })),
            "{c:?}"
        );
    }

    #[test]
    fn variant_per_device_class() {
        let class = |d16, vec4| HeadClass { d16, vec4 };
        // CPU with subgroups of 8: rows shared by broadcast, 4 rows per invocation for long
        // problems with head_dim ≤ 128, 2 above, fewer rows for short problems
        let caps = cpu(Some(8), true);
        let rows = |spec: &AttentionSpec| flash_variant(spec, &caps);
        assert_eq!(
            rows(&auto(1, 2, 2, 512, 512, 64)),
            FusedVariant::Rows {
                class: class(4, true),
                wg: 64,
                rows: 4,
                sharing: KvSharing::Subgroup(8)
            }
        );
        assert!(matches!(
            rows(&auto(1, 2, 2, 512, 512, 256)),
            FusedVariant::Rows { rows: 2, .. }
        ));
        assert!(matches!(
            rows(&auto(1, 2, 2, 100, 512, 64)),
            FusedVariant::Rows {
                rows: 2,
                wg: 64,
                ..
            }
        ));
        assert_eq!(
            rows(&auto(1, 1, 1, 5, 512, 30)),
            FusedVariant::Rows {
                class: class(2, false),
                wg: 8,
                rows: 1,
                sharing: KvSharing::Subgroup(8)
            }
        );
        // CPU without subgroups (GL): K/V blocks in workgroup memory
        assert_eq!(
            flash_variant(&auto(1, 1, 1, 10, 64, 64), &gl()),
            FusedVariant::Rows {
                class: class(4, true),
                wg: 16,
                rows: 1,
                sharing: KvSharing::Workgroup
            }
        );
        // GPUs: tiled, unless the workgroup memory or invocations are missing
        assert_eq!(
            flash_variant(&auto(1, 2, 2, 512, 512, 64), &gpu()),
            FusedVariant::Tiled {
                class: class(4, true),
                shape: TiledShape::new(8, 4, 128, 16),
                // 16 lanes per row band within subgroups of 32
                subgroups: true,
            }
        );
        let mut small = gpu();
        small.limits.max_workgroup_storage = 16 * 1024;
        assert!(!small.flash_tiles());
        assert!(matches!(
            flash_variant(&auto(1, 2, 2, 512, 512, 64), &small),
            FusedVariant::Rows { .. }
        ));
        small = gpu();
        small.limits.max_invocations = 128;
        assert!(!small.flash_tiles());
        // the override forces either way (but never without the memory)
        let forced = Caps {
            tiles: Some(true),
            ..cpu(Some(8), true)
        };
        assert!(forced.flash_tiles());
        assert!(
            !Caps {
                tiles: Some(true),
                ..gl()
            }
            .flash_tiles()
        );
        assert!(
            !Caps {
                tiles: Some(false),
                ..gpu()
            }
            .flash_tiles()
        );
        // GPUs keep the decoding variant for decoding
        let c = plan(&auto(1, 8, 2, 1, 4096, 64), &gpu()).unwrap();
        assert!(matches!(
            c.variant,
            Some(FusedVariant::Decode { subgroup: 32, .. })
        ));
        // vec4 needs head_dim % 4 == 0 and 16-byte offset alignment
        let mut odd = cpu(Some(8), true);
        odd.limits.storage_offset_alignment = 4;
        assert!(!HeadClass::of(&auto(1, 1, 1, 4, 4, 64), &odd).vec4);
        assert!(!HeadClass::of(&auto(1, 1, 1, 4, 4, 66), &cpu(None, false)).vec4);
        assert_eq!(HeadClass::of(&auto(1, 1, 1, 4, 4, 1), &gl()).d16, 1);
        assert_eq!(HeadClass::of(&auto(1, 1, 1, 4, 4, 256), &gl()).d16, 16);
    }

    #[test]
    fn f16_storage_native_or_packed() {
        let spec = auto(1, 1, 1, 8, 8, 16).dtype(DType::F16);
        assert_eq!(plan(&spec, &gpu()).unwrap().storage, Storage::F16);
        assert_eq!(plan(&spec, &gl()).unwrap().storage, Storage::Packed);
        assert_eq!(
            plan(&spec, &cpu(Some(8), false)).unwrap().storage,
            Storage::Packed
        );
        let f32 = auto(1, 1, 1, 8, 8, 16);
        assert_eq!(plan(&f32, &gpu()).unwrap().storage, Storage::F32);
        assert_eq!(plan(&f32, &gl()).unwrap().storage, Storage::F32);
        // the storage shows in the shaders
        let c = plan(&spec, &gpu()).unwrap();
        assert!(c.shaders(&spec)[0].flags.contains(&"F16"));
        let c = plan(&spec, &gl()).unwrap();
        assert!(c.shaders(&spec)[0].flags.contains(&"PACKED"));
    }

    #[test]
    fn split_counts_stay_within_bounds() {
        for caps in [cpu(Some(8), true), gl(), gpu()] {
            for (b, hq, hkv, sq, sk) in [
                (1, 1, 1, 1, 1),
                (1, 1, 1, 1, 255),
                (1, 1, 1, 1, 1000),
                (1, 32, 8, 1, 1 << 20),
                (1, 1, 1, 1, 1 << 24),
                (16, 32, 32, 16, 8192),
            ] {
                let spec = auto(b, hq, hkv, sq, sk, 64).kernel(Kernel::SplitKv);
                let n = split_count(&spec, &caps);
                assert!((1..=MAX_SPLITS).contains(&n), "{n}");
                assert!(n as usize <= (sk / 256).max(1), "{sk} keys, {n} splits");
                let c = plan(&spec, &caps).unwrap();
                assert_eq!(c.splits, n.max(2));
            }
        }
        // a GPU fills ~2^18 invocations: one-subgroup decoding workgroups get many splits
        let spec = auto(1, 1, 1, 1, 1 << 20, 64);
        assert_eq!(split_count(&spec, &gpu()), MAX_SPLITS);
        assert_eq!(split_count(&spec, &cpu(Some(8), true)), 16);
        // never more splits than workgroups per dimension
        let mut few = gpu();
        few.limits.max_workgroups_per_dim = 5;
        assert_eq!(split_count(&spec, &few), 5);
        few.limits.max_workgroups_per_dim = 1;
        assert_eq!(
            plan(&spec.clone().kernel(Kernel::SplitKv), &few)
                .unwrap()
                .splits,
            1
        );
    }

    #[test]
    fn storage_buffer_limit_is_planned_against() {
        let spec = auto(1, 2, 2, 64, 64, 32);
        let biased = spec.clone().bias(crate::spec::Broadcast::SHARED);
        let mut caps = cpu(Some(8), true);
        let fused = plan(&spec, &caps).unwrap();
        assert_eq!(storage_buffers(&spec, &fused), 6);
        assert_eq!(storage_buffers(&biased, &plan(&biased, &caps).unwrap()), 7);
        let three = plan(&spec.clone().kernel(Kernel::ThreePass), &caps).unwrap();
        assert_eq!(storage_buffers(&spec, &three), 4);
        // 5 per stage: auto falls back to three-pass, flash asked for is a typed error
        caps.limits.max_storage_buffers_per_stage = 5;
        assert_eq!(plan(&spec, &caps).unwrap().kernel, Kernel::ThreePass);
        match plan(&spec.clone().kernel(Kernel::Flash), &caps) {
            Err(Error::TooLarge {
                needed: 6,
                allowed: 5,
                limit,
                ..
            }) => assert_eq!(limit, "max_storage_buffers_per_shader_stage"),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // 3 per stage: nothing fits
        caps.limits.max_storage_buffers_per_stage = 3;
        assert!(matches!(
            plan(&spec, &caps),
            Err(Error::TooLarge { needed: 6, .. })
        ));
    }

    /// The decoding variant holds all rows of a kv head: when the chunks that fit the
    /// bindings cut them, split-KV uses the rows variant instead.
    #[test]
    fn decode_falls_back_to_rows_when_chunks_cut_kv_heads() {
        // bshd: q rows of 4 heads interleave, so two query rows need a larger q window than
        // the 5 keys of the kv head
        let spec = auto(1, 4, 1, 2, 5, 16)
            .layout(Layout::Bshd)
            .kernel(Kernel::SplitKv);
        let mut caps = cpu(Some(8), true);
        caps.limits.storage_offset_alignment = 16;
        let whole = plan(&spec, &caps).unwrap();
        assert!(matches!(
            whole.variant,
            Some(FusedVariant::Decode { rows: 8, .. })
        ));
        caps.limits.max_storage_binding = 400;
        let decode = whole.variant.unwrap();
        assert!(!flash::keeps_kv_heads_whole(
            &spec,
            &caps,
            &decode,
            whole.splits
        ));
        let cut = plan(&spec, &caps).unwrap();
        assert_eq!(cut.kernel, Kernel::SplitKv);
        assert!(
            matches!(cut.variant, Some(FusedVariant::Rows { .. })),
            "{cut:?}"
        );
        assert_eq!(cut.splits, whole.splits);
    }

    /// Whatever the planner picks is in the list the naga tests validate.
    #[test]
    fn chosen_variants_are_listed() {
        let all = crate::shaders::all_variants();
        for caps in caps_classes() {
            let listed = fused_variants(&caps);
            for (hq, hkv, sq, d) in [
                (1, 1, 1, 16),
                (8, 2, 1, 64),
                (8, 1, 1, 128),
                (4, 4, 16, 100),
                (2, 2, 200, 256),
                (4, 2, 300, 64),
                (1, 1, 1000, 3),
            ] {
                for (kernel, dtype) in [Kernel::Auto, Kernel::Flash, Kernel::SplitKv]
                    .into_iter()
                    .flat_map(|k| [(k, DType::F32), (k, DType::F16)])
                {
                    let spec = auto(1, hq, hkv, sq, 4096, d).kernel(kernel).dtype(dtype);
                    let c = plan(&spec, &caps).unwrap();
                    let v = c.variant.unwrap();
                    assert!(listed.contains(&v), "{v:?} not listed for {caps:?}");
                    let mut shader = c.shaders(&spec)[0].clone();
                    // the list holds f32 storage and adds the storage flags per code path
                    shader.flags.retain(|f| !matches!(*f, "PACKED" | "F16"));
                    assert!(
                        all.contains(&shader),
                        "{} not in all_variants",
                        shader.key()
                    );
                }
                // every tuning candidate of the shape can be selected: listed too
                let spec = auto(1, hq, hkv, sq, 4096, d);
                for candidate in crate::tune::candidates(&spec, &caps) {
                    if let Some(v) = candidate.variant(&spec, &caps) {
                        assert!(listed.contains(&v), "candidate {v:?} not listed");
                    }
                }
            }
        }
    }

    /// The matrix-tile variant: cooperative for f16 storage where the adapter reports an
    /// f16×f16→f32 shape (the edge it reports), never for f32 unless forced, the portable
    /// helpers when forced without cooperative matrices, and only where a shape fits.
    #[test]
    fn cooperative_matrices_only_where_reported() {
        let f16 = auto(1, 8, 2, 512, 512, 128).dtype(DType::F16);
        let f32 = auto(1, 8, 2, 512, 512, 128);
        let mut caps = gpu();
        caps.limits.max_workgroup_storage = 48 * 1024;
        // no cooperative matrices: tiled as before
        assert!(matches!(
            plan(&f16, &caps).unwrap().variant,
            Some(FusedVariant::Tiled { .. })
        ));
        for edge in [16, 8] {
            caps.coop_f16 = Some(edge);
            let v = plan(&f16, &caps).unwrap().variant.unwrap();
            match v {
                FusedVariant::Mma { shape, class } => {
                    assert!(shape.coop && shape.tile == edge, "{shape:?}");
                    assert!(shape.workgroup_bytes(class, 2) <= 48 * 1024);
                    assert!(shape.valid_for(class));
                }
                other => panic!("expected mma, got {other:?}"),
            }
            // f32 storage keeps the tiled variant; decoding keeps the decoding variant
            assert!(matches!(
                plan(&f32, &caps).unwrap().variant,
                Some(FusedVariant::Tiled { .. })
            ));
            // unless it allows reduced precision: f16 operands on cooperative matrices
            let reduced = f32.clone().reduced_precision(true);
            assert!(reduced_precision_applies(&reduced, &caps));
            match plan(&reduced, &caps).unwrap().variant.unwrap() {
                FusedVariant::Mma { shape, .. } => {
                    assert!(shape.coop && shape.half && shape.tile == edge, "{shape:?}")
                }
                other => panic!("expected mma, got {other:?}"),
            }
            assert!(matches!(
                plan(&auto(1, 8, 2, 1, 4096, 128).dtype(DType::F16), &caps)
                    .unwrap()
                    .variant,
                Some(FusedVariant::Decode { .. })
            ));
            // forbidden by the override
            let off = Caps {
                mma: Some(false),
                ..caps
            };
            assert!(matches!(
                plan(&f16, &off).unwrap().variant,
                Some(FusedVariant::Tiled { .. })
            ));
        }
        // packed f16 (no SHADER_F16) never multiplies on cooperative matrices, nor does
        // reduced-precision f32 there
        let packed = Caps {
            shader_f16: false,
            ..caps
        };
        assert!(!matches!(
            plan(&f16, &packed).unwrap().variant,
            Some(FusedVariant::Mma { .. })
        ));
        let reduced = f32.clone().reduced_precision(true);
        assert!(!reduced_precision_applies(&reduced, &packed));
        assert!(matches!(
            plan(&reduced, &packed).unwrap().variant,
            Some(FusedVariant::Tiled { .. })
        ));
        // nor without cooperative matrices (the flag changes nothing there)
        assert!(!reduced_precision_applies(&reduced, &gpu()));
        assert_eq!(plan(&reduced, &gpu()).unwrap(), plan(&f32, &gpu()).unwrap());
        // forced without cooperative matrices: portable helpers, f32 tiles for f32
        let forced = Caps {
            mma: Some(true),
            ..cpu(Some(8), true)
        };
        for spec in [&f16, &f32, &auto(1, 2, 1, 100, 70, 64)] {
            match plan(spec, &forced).unwrap().variant.unwrap() {
                FusedVariant::Mma { shape, class } => {
                    assert!(!shape.coop);
                    assert_eq!(shape.half, spec.dtype == crate::spec::DType::F16);
                    let bytes = mma_elem_bytes(shape.half);
                    assert!(shape.workgroup_bytes(class, bytes) <= 32 * 1024);
                }
                other => panic!("expected mma, got {other:?}"),
            }
        }
        // head_dim 256 in f32 does not fit 32 KiB: the other variants run
        let wide = auto(1, 2, 2, 64, 64, 256);
        assert!(matches!(
            plan(&wide, &forced).unwrap().variant,
            Some(FusedVariant::Rows { .. })
        ));
        // the caps' edge comes from the adapter's list
        use wgpu::CooperativeScalarType as T;
        let prop = |m, ab, cr| wgpu::CooperativeMatrixProperties {
            m_size: m,
            n_size: m,
            k_size: m,
            ab_type: ab,
            cr_type: cr,
            saturating_accumulation: false,
        };
        let edge = coop_f16_edge;
        assert_eq!(edge(&[]), None);
        assert_eq!(edge(&[prop(8, T::F32, T::F32)]), None);
        assert_eq!(edge(&[prop(16, T::F16, T::F16)]), None);
        assert_eq!(edge(&[prop(8, T::F16, T::F32)]), Some(8));
        assert_eq!(
            edge(&[prop(8, T::F16, T::F32), prop(16, T::F16, T::F32)]),
            Some(16)
        );
    }

    /// Tuned choices replace the default variant or split count where they can run, are
    /// ignored where they cannot, and never override a forced variant.
    #[test]
    fn tuned_choices_are_used_where_they_fit() {
        use crate::tune::{ShapeClass, TunedChoice, Tuning};
        let caps = cpu(Some(8), true);
        let spec = auto(1, 8, 2, 512, 512, 64);
        let class = ShapeClass::of(&spec, &caps);
        let untuned = plan(&spec, &caps).unwrap();
        assert!(!untuned.tuned);
        let with = |choice| plan_tuned(&spec, &caps, &Tuning::one(class.clone(), choice)).unwrap();
        let c = with(TunedChoice::Rows { rows: 1, wg: 128 });
        assert!(c.tuned);
        assert!(matches!(
            c.variant,
            Some(FusedVariant::Rows {
                rows: 1,
                wg: 128,
                sharing: KvSharing::Subgroup(8),
                ..
            })
        ));
        let c = with(TunedChoice::Tiled(crate::tiles::TILED_DEFAULTS[1]));
        assert!(c.tuned && matches!(c.variant, Some(FusedVariant::Tiled { .. })));
        let mma = TunedChoice::Mma {
            rows: 32,
            keys: 32,
            wg: 128,
            tile: 16,
            coop: false,
        };
        let c = with(mma);
        assert!(c.tuned && matches!(c.variant, Some(FusedVariant::Mma { .. })));
        // explicit split-KV uses the tuned variant too
        let c = plan_tuned(
            &spec.clone().kernel(Kernel::SplitKv),
            &caps,
            &Tuning::one(class.clone(), mma),
        )
        .unwrap();
        assert!(c.tuned && matches!(c.variant, Some(FusedVariant::Mma { .. })));
        // choices that cannot run here are ignored: cooperative matrices the device lacks,
        // a workgroup larger than allowed, subgroup sharing with a workgroup off the size
        for bad in [
            TunedChoice::Mma {
                rows: 32,
                keys: 32,
                wg: 128,
                tile: 16,
                coop: true,
            },
            TunedChoice::Rows { rows: 2, wg: 512 },
            TunedChoice::Rows { rows: 2, wg: 12 },
            TunedChoice::Splits { shift: 1 },
        ] {
            let c = with(bad);
            assert!(!c.tuned, "{bad:?}");
            assert_eq!(c.variant, untuned.variant);
        }
        // another class (f16 storage) is untouched
        let f16 = spec.clone().dtype(DType::F16);
        let c = plan_tuned(
            &f16,
            &caps,
            &Tuning::one(
                class.clone(),
                TunedChoice::Tiled(crate::tiles::TILED_DEFAULTS[1]),
            ),
        )
        .unwrap();
        assert!(!c.tuned);
        // forced variants win over tuned ones
        let forced = Caps {
            tiles: Some(false),
            ..caps
        };
        let c = plan_tuned(
            &spec,
            &forced,
            &Tuning::one(
                class.clone(),
                TunedChoice::Tiled(crate::tiles::TILED_DEFAULTS[1]),
            ),
        )
        .unwrap();
        assert!(!c.tuned && matches!(c.variant, Some(FusedVariant::Rows { .. })));
        // three-pass is never tuned
        let c = plan_tuned(
            &spec.clone().kernel(Kernel::ThreePass),
            &caps,
            &Tuning::one(class, TunedChoice::Tiled(crate::tiles::TILED_DEFAULTS[1])),
        )
        .unwrap();
        assert!(!c.tuned && c.variant.is_none());
        // decoding: the split count times 2^shift, within bounds
        let dec = auto(1, 8, 2, 1, 1 << 16, 64);
        let base = plan(&dec, &caps).unwrap();
        let dclass = ShapeClass::of(&dec, &caps);
        for shift in [-2, -1, 1, 2] {
            let c = plan_tuned(
                &dec,
                &caps,
                &Tuning::one(dclass.clone(), TunedChoice::Splits { shift }),
            )
            .unwrap();
            assert!(c.tuned);
            assert_eq!(c.variant, base.variant);
            let want = if shift > 0 {
                base.splits << shift
            } else {
                (base.splits >> -shift).max(1)
            };
            assert_eq!(c.splits, want.min(MAX_SPLITS), "shift {shift}");
        }
    }

    #[test]
    fn caps_describe_the_variants() {
        let text = |c: &Caps| c.variants().join("\n");
        assert!(text(&gpu()).contains("workgroup-tiled"));
        assert!(text(&gpu()).contains("decoding"));
        assert!(text(&gpu()).contains("native f16"));
        assert!(text(&cpu(Some(8), false)).contains("subgroupBroadcast (subgroup size 8)"));
        assert!(text(&gl()).contains("workgroup memory"));
        assert!(text(&gl()).contains("packed"));
        assert!(!text(&gl()).contains("decoding"));
        assert!(!text(&gpu()).contains("matrix-tile"));
        let coop = Caps {
            coop_f16: Some(16),
            ..gpu()
        };
        assert!(text(&coop).contains("cooperative matrices (16×16×16 f16×f16→f32)"));
        let forced = Caps {
            mma: Some(true),
            ..gl()
        };
        assert!(text(&forced).contains("portable tile multiplies"));
    }
}
