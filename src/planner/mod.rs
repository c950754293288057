//! The kernel planner: the one place that decides how a spec runs on a device — which kernel,
//! which variant of the fused kernels, how many key splits and which f16 storage — and what
//! follows from the decision without a device: the compile key of every shader (template,
//! constants, flags, bindings), the chunks a problem is cut into to fit the device's
//! bindings and grids, and the tuned-choice model. The decision
//! is a [`Choice`] made by [`plan`] from the spec and the device's [`Caps`] (plain data, so the
//! planner runs and is tested without a GPU).
//!
//! The rule behind [`Kernel::Auto`](crate::Kernel::Auto):
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
//! - **tiled** (`fused/tiled.wgsl`) on GPUs: any adapter that is not a CPU and has
//!   [`TILED_WORKGROUP_BYTES`] of workgroup memory and [`TILED_WG`] invocations per workgroup,
//!   with the register-tile shape of [`TiledShape::default_for`] (or a tuned one);
//! - **rows** (`fused/rows.wgsl`) on CPU adapters: 1, 2 or 4 query rows per invocation, K/V shared
//!   through subgroups of a fixed size, or staged in workgroup memory without them;
//! - **decode** (`fused/decode.wgsl`) for split-KV with fixed subgroups of 8, 16 or 32 and at most
//!   [`DECODE_MAX_ROWS`] query rows per kv head, when the kv head's rows stay in one chunk.
//!
//! [`Caps::tiles`] (from `ContextOptions::flash_tiles` or `WGATTN_FLASH_TILES`) forces tiled or
//! rows; `ContextOptions::disable_subgroups` / `disable_shader_f16` remove the feature from the
//! caps before the planner sees them.
//!
//! A module per kernel family ([`fused`](self), `three_pass`, `backward`, `layer`) holds its
//! compile keys and grids; `kernels` launches them on the GPU runtime. The planner names no
//! GPU object: everything here runs and is tested without a device.

pub(crate) mod backward;
mod caps;
mod catalog;
mod choose;
pub(crate) mod chunks;
pub(crate) mod fused;
pub(crate) mod layer;
pub(crate) mod three_pass;
pub mod tiles;
mod tuned;
mod variant;

/// The binding slots of the kernels' shaders (see [`crate::shaders`]).
pub use crate::shader::Binding;
pub use backward::BackwardMode;
pub use caps::{
    Caps, DECODE_MAX_ROWS, DECODE_MAX_SEQ_Q, DECODE_SUBGROUPS, MAX_SPLITS, SUBGROUP_SIZES,
    TILED_WG, TILED_WORKGROUP_BYTES, WORKGROUP_KEYS, caps_classes, coop_f16_edge,
};
pub(crate) use catalog::pack_shader;
pub use catalog::{all_variants, fused_variants};
#[allow(deprecated)]
pub use choose::mma_fits;
pub(crate) use choose::mma_wanted;
pub use choose::{
    Target, choose, decode_variant, flash_variant, half_operands, has_decode_variant, max_splits,
    mma_default_shape, mma_variant, plan, plan_kernel, plan_tuned, reduced_precision_applies,
    rows_variant, split_count, splits_for, storage_buffers,
};
pub use layer::Gather;
pub use tiles::{TILED_DEFAULTS, TILED_KEYS, TILED_SHAPES, TiledShape};
pub use tuned::{
    LONG_ROWS, RowsClass, ShapeClass, TunedChoice, Tuning, candidates, check_spec, tunable,
};
pub(crate) use variant::mma_coop;
pub use variant::{
    Choice, FusedVariant, HeadClass, KvSharing, MMA_SHAPES, MmaShape, Storage, mma_elem_bytes,
    rows_allowed,
};
