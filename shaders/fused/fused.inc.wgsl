// Shared by the fused kernels (fused/rows.wgsl, fused/decode.wgsl): parameters, q/k/v/aux
// bindings, the mask and score-modifier helpers, row numbering, and the outputs (out + lse, or
// with SPLIT the per-split partials [split][row of chunk][D4] and [split][row of chunk] for
// split_kv_combine.wgsl). Scores are kept in base 2 (q pre-scaled by log2 e): exp2 is what exp
// costs inside anyway.
#param D16
#flag SPLIT MODS
#include "common/params.inc.wgsl"

const D4: u32 = D16 * 4u;
const LOG2E: f32 = 1.4426950408889634;
const LN2: f32 = 0.6931471805599453;

@group(0) @binding(B_PARAMS) var<uniform> P: Params;
#define USE_q
#define USE_k
#define USE_v
#if !SPLIT
#define USE_out
#endif
#include "common/elem.inc.wgsl"
@group(0) @binding(B_AUX) var<storage, read> aux: array<u32>;

#include "common/visible.inc.wgsl"
#include "common/score.inc.wgsl"
#include "common/row_index.inc.wgsl"
#if SPLIT
@group(0) @binding(B_SCRATCH) var<storage, read_write> o_part: array<vec4<f32>>;
@group(0) @binding(B_SCRATCH2) var<storage, read_write> lse_part: array<f32>;
#else
#include "common/out.inc.wgsl"
#endif

// Keys the rows r0 .. r0+n-1 (of `rows`) of a workgroup visit, uniform across it (as barriers
// need): (lo, hi) covers every row's visible keys, in (full_lo, full_hi) every row sees every
// key. Ranges only grow with the row within a head, so the first and last rows bound them; a
// tile that spans two heads takes the whole head.
fn tile_keys(b: u32, r0: u32, n: u32, rows: u32) -> vec4<u32> {
    let r_last = min(r0 + n, rows) - 1u;
    var i_lo = P.i0 + r0 % P.nq;
    var i_hi = P.i0 + r_last % P.nq;
    if (r0 / P.nq != r_last / P.nq) {
        i_lo = P.i0;
        i_hi = P.i0 + P.nq - 1u;
    }
    let first = visible_range(b, i_lo);
    let last = visible_range(b, i_hi);
    return vec4<u32>(first.x, last.y, last.x, first.y);
}

// Keys lo..hi of a workgroup cut to those of its key split `split` (grid.y) with SPLIT;
// unchanged without.
fn split_keys(lo: u32, hi: u32, split: u32) -> vec2<u32> {
#if SPLIT
    return vec2<u32>(max(lo, split * P.split_len), min(hi, split * P.split_len + P.split_len));
#else
    return vec2<u32>(lo, hi);
#endif
}

// 1/l and lse of a finished row with running maximum m (base 2) and sum l. A row that saw no
// key has l = 0: output 0 and lse -inf, never NaN.
fn finish(m: f32, l: f32) -> vec2<f32> {
    return vec2<f32>(select(0.0, 1.0 / l, l > 0.0), select(P.neg_inf, (m + log2(l)) * LN2, l > 0.0));
}

// Place of row r (of `rows` per kv head) of grid cell (split, z) in the split partials.
fn split_slot(split: u32, z: u32, rows: u32, r: u32) -> u32 {
    return split * (rows * (P.nbh / P.group)) + z * rows + r;
}

// Vec4 column c of a finished row (already divided by l), and its lse: to the split partials
// at `slot` (SPLIT) or to out and lse.
fn store_col(row: Row, slot: u32, c: u32, x: vec4<f32>) {
#if SPLIT
    o_part[slot * D4 + c] = x;
#else
    st4_out(row.b * P.q_sb + row.h * P.q_sh + row.i * P.q_ss - P.o_shift, c * 4u, x);
#endif
}

fn store_lse(row: Row, slot: u32, x: f32) {
#if SPLIT
    lse_part[slot] = x;
#else
    lse[lse_index(row) - P.lse_shift] = x;
#endif
}

#if MODS
// modify() in natural units for a base-2 score; masked scores come back as MASKED.
fn modify2(s: f32, b: u32, h: u32, i: u32, j: u32) -> f32 {
    let x = modify(s * LN2, b, h, i, j);
    return select(MASKED, x * LOG2E, x > MASKED_CUT);
}
#endif
