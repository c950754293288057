// Shared by the fused kernels (flash.wgsl, decode.wgsl): parameters, q/k/v/aux bindings, the
// mask and score-modifier helpers, row numbering, and the outputs (out + lse, or with SPLIT the
// per-split partials [split][row of chunk][D4] and [split][row of chunk] for combine.wgsl).
// Scores are kept in base 2 (q pre-scaled by log2 e): exp2 is what exp costs inside anyway.
#include "common.wgsl"

const D4: u32 = D16 * 4u;
const LOG2E: f32 = 1.4426950408889634;
const LN2: f32 = 0.6931471805599453;

@group(0) @binding(0) var<uniform> P: Params;
#define USE_q
#define USE_k
#define USE_v
#if !SPLIT
#define USE_out
#endif
#include "elem.wgsl"
@group(0) @binding(4) var<storage, read> aux: array<u32>;

#include "visible.wgsl"
#include "score.wgsl"
#include "rows.wgsl"
#if SPLIT
@group(0) @binding(9) var<storage, read_write> o_part: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read_write> lse_part: array<f32>;
#else
#include "out.wgsl"
#endif

#if MODS
// modify() in natural units for a base-2 score; masked scores come back as MASKED.
fn modify2(s: f32, b: u32, h: u32, i: u32, j: u32) -> f32 {
    let x = modify(s * LN2, b, h, i, j);
    return select(MASKED, x * LOG2E, x > MASKED_CUT);
}
#endif
