//! The three-pass kernel (`shaders/three_pass/`): S = scale·QKᵀ (modified, masked) → row
//! softmax → O = P·V through a score matrix in a scratch buffer. The compile keys of its
//! three shaders, its workgroup grids, and its chunks (the problem is split whenever the
//! score matrix or a tensor window exceeds one storage binding). Pure: the launcher is
//! `kernels::three_pass`.

use super::Storage;
use super::catalog::{all_flag_sets, common_flags, storage_flags};
use super::chunks::{self, Chunk, ElemBytes, SplitRule};
use crate::error::Result;
use crate::shader::{Binding, Flag, ShaderVariant};
use crate::spec::{AttentionSpec, DeviceLimits};

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

/// The QKᵀ pass (bindings without the bias and mask, which [`scores_bindings`] adds).
fn qk_variant() -> ShaderVariant {
    ShaderVariant::new("three_pass/scores.wgsl")
        .constant("WG_X", QK_WG.0)
        .constant("WG_Y", QK_WG.1)
        .constant("TK", TK)
}

/// The QKᵀ pass's bindings once its flags are set.
fn scores_bindings(v: ShaderVariant) -> ShaderVariant {
    let (bias, mask) = (v.has(Flag::BIAS), v.has(Flag::MASK));
    v.bind([
        Binding::Params,
        Binding::Q,
        Binding::K,
        Binding::Aux,
        Binding::Scratch,
    ])
    .bind_if(bias, Binding::Bias)
    .bind_if(mask, Binding::Mask)
}

fn softmax_variant(weights: bool) -> ShaderVariant {
    ShaderVariant::new("three_pass/softmax.wgsl")
        .constant("WG", SOFTMAX_WG)
        .flag(Flag::WEIGHTS, weights)
        .bind([Binding::Params, Binding::Scratch, Binding::Lse])
        .bind_if(weights, Binding::Scratch2)
}

fn pv_variant(head_dim: usize) -> ShaderVariant {
    ShaderVariant::new("three_pass/weighted_sum.wgsl")
        .constant("WG_X", pv_wg_x(head_dim))
        .constant("WG_Y", PV_WG_Y)
        .constant("TK", TK)
        .bind([
            Binding::Params,
            Binding::V,
            Binding::Aux,
            Binding::Scratch,
            Binding::Out,
        ])
}

/// Every variant this kernel can generate.
pub(crate) fn variants() -> Vec<ShaderVariant> {
    let mut v = vec![softmax_variant(false), softmax_variant(true)];
    for flags in all_flag_sets() {
        let with = |mut x: ShaderVariant| {
            x.flags.extend(flags.iter().copied());
            x
        };
        v.push(scores_bindings(with(qk_variant())));
        // P·V only reads v and writes out: storage flags matter, score modifiers do not.
        if flags.iter().all(|f| matches!(f, Flag::F16 | Flag::PACKED)) {
            v.extend([16, 32, 64].map(|d| with(pv_variant(d))));
        }
    }
    v
}

/// The three shaders (QKᵀ, softmax, P·V) of a three-pass plan for `spec`.
pub(crate) fn shader_variants(spec: &AttentionSpec, storage: Storage) -> [ShaderVariant; 3] {
    // P·V only reads v and writes out: storage flags matter, score modifiers do not.
    [
        scores_bindings(common_flags(qk_variant(), spec, storage)),
        softmax_variant(spec.return_weights),
        storage_flags(pv_variant(spec.head_dim), storage),
    ]
}

/// The grids of a chunk of `nbh` (batch·head) pairs and `nq` query rows: QKᵀ (all column
/// blocks in one dispatch; [`chunks::pieces`] cuts them), softmax (one workgroup per row,
/// folded into two dimensions of at most `max_dim`) and P·V.
pub(crate) fn grids(spec: &AttentionSpec, nbh: u32, nq: u32, max_dim: u32) -> [[u32; 3]; 3] {
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
pub(crate) fn score_stride(spec: &AttentionSpec) -> u64 {
    (spec.seq_k as u64).next_multiple_of(4)
}

/// Bytes of the score scratch of a chunk of `nbh` pairs and `nq` rows.
pub(crate) fn scratch_bytes(spec: &AttentionSpec, nbh: u64, nq: u64) -> u64 {
    nbh * nq * score_stride(spec) * 4
}

/// The chunks of a three-pass plan for `spec` on a device with `limits`: each fits the
/// bindings with its score scratch, and every grid but QKᵀ's column blocks (cut into
/// dispatches by `x0`) fits the workgroups per dimension.
pub(crate) fn chunks(
    spec: &AttentionSpec,
    limits: &DeviceLimits,
    storage: Storage,
) -> Result<Vec<Chunk>> {
    let max_dim = limits.max_workgroups_per_dim.max(1);
    let scratch = |nbh: u64, nq: u64| scratch_bytes(spec, nbh, nq);
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
    chunks::rows_within_limit(chunks, max_dim, |nbh, nq| {
        let [mut qk, softmax, pv] = grids(spec, nbh, nq, max_dim);
        qk[0] = qk[0].min(max_dim);
        vec![qk, softmax, pv]
    })
}
