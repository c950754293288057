// Pass 1 of 3: S = modify(scale * Q Kᵀ) with all masks, for one chunk of
// (batch*head, query rows). Register-tiled matmul: a workgroup of WG_X x WG_Y invocations
// computes a TM x TN tile of S, each invocation a 4x4 block; Q and K tiles of TK dims are staged
// in workgroup memory. Tiles that are entirely masked (causal, kv_lens, window) write MASKED
// without any arithmetic.
#param WG_X WG_Y TK
#flag F16 PACKED BIAS MASK SOFTCAP ALIBI
#include "common/params.inc.wgsl"

@group(0) @binding(B_PARAMS) var<uniform> P: Params;
#define USE_q
#define USE_k
#include "common/elem.inc.wgsl"
@group(0) @binding(B_AUX) var<storage, read> aux: array<u32>;
@group(0) @binding(B_SCRATCH) var<storage, read_write> s: array<vec4<f32>>;

#include "common/visible.inc.wgsl"
#include "common/score.inc.wgsl"

const TM: u32 = WG_Y * 4u;
const TN: u32 = WG_X * 4u;
const WG_SIZE: u32 = WG_X * WG_Y;

// qt[kk * TM/4 + m/4][m % 4] = q[row r0 + m, dim d0 + kk]; kt likewise for keys.
var<workgroup> qt: array<vec4<f32>, TK * TM / 4u>;
var<workgroup> kt: array<vec4<f32>, TK * TN / 4u>;

// Writes 4 scores of local query row `row` starting at key `col`, masking invisible keys.
fn store_row(row_base: u32, row: u32, col: u32, b: u32, h: u32, acc: vec4<f32>) {
    if (row >= P.nq || col >= P.s_stride) {
        return;
    }
    let i = P.i0 + row;
    let range = visible_range(b, i);
    var val = acc * P.scale;
    for (var t = 0u; t < 4u; t++) {
        let j = col + t;
        var x = MASKED;
        if (j >= range.x && j < range.y) {
            x = modify(val[t], b, h, i, j);
        }
        val[t] = select(MASKED, x, x > MASKED_CUT);
    }
    s[(row_base + row) * (P.s_stride / 4u) + col / 4u] = val;
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let bh_local = wid.z;
    let bh = P.bh0 + bh_local;
    let b = bh / P.q_heads;
    let h = bh % P.q_heads;
    let kvh = h / P.group;
    let r0 = wid.y * TM;
    let c0 = (P.x0 + wid.x) * TN;
    let row_base = bh_local * P.nq;
    let col = c0 + lid.x * 4u;

    // Visible keys only grow with the row: the first row of the tile starts latest, the
    // last row ends latest.
    let tile_lo = visible_range(b, P.i0 + r0).x;
    let tile_hi = visible_range(b, P.i0 + min(r0 + TM, P.nq) - 1u).y;
    if (c0 >= tile_hi || c0 + TN <= tile_lo) {
        for (var r = 0u; r < 4u; r++) {
            let row = r0 + lid.y * 4u + r;
            if (row < P.nq && col < P.s_stride) {
                s[(row_base + row) * (P.s_stride / 4u) + col / 4u] = vec4<f32>(MASKED);
            }
        }
        return;
    }

    let q_base = b * P.q_sb + h * P.q_sh + P.i0 * P.q_ss - P.q_shift;
    let k_base = b * P.k_sb + kvh * P.k_sh - P.k_shift;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var d0 = 0u; d0 < P.head_dim; d0 += TK) {
        for (var t = 0u; t < TM * TK / WG_SIZE; t++) {
            let e = li + t * WG_SIZE;
            let m = e / TK;
            let kk = e % TK;
            let row = r0 + m;
            let d = d0 + kk;
            var x = 0.0;
            if (row < P.nq && d < P.head_dim) {
                x = ld_q(q_base + row * P.q_ss + d);
            }
            qt[kk * (TM / 4u) + m / 4u][m % 4u] = x;
        }
        for (var t = 0u; t < TN * TK / WG_SIZE; t++) {
            let e = li + t * WG_SIZE;
            let n = e / TK;
            let kk = e % TK;
            let j = c0 + n;
            let d = d0 + kk;
            var x = 0.0;
            if (j < tile_hi && d < P.head_dim) {
                x = ld_k(k_base + j * P.k_ss + d);
            }
            kt[kk * (TN / 4u) + n / 4u][n % 4u] = x;
        }
        workgroupBarrier();
        // Two-level summation: partial sums over TK dims, then into the accumulator. Keeps
        // the rounding error of long dot products with large terms (e.g. q, k ~ N(3, 1)) low.
        var p0 = vec4<f32>(0.0);
        var p1 = vec4<f32>(0.0);
        var p2 = vec4<f32>(0.0);
        var p3 = vec4<f32>(0.0);
        for (var kk = 0u; kk < TK; kk++) {
            let a = qt[kk * (TM / 4u) + lid.y];
            let bv = kt[kk * (TN / 4u) + lid.x];
            p0 += a.x * bv;
            p1 += a.y * bv;
            p2 += a.z * bv;
            p3 += a.w * bv;
        }
        acc0 += p0;
        acc1 += p1;
        acc2 += p2;
        acc3 += p3;
        workgroupBarrier();
    }
    let rr = r0 + lid.y * 4u;
    store_row(row_base, rr, col, b, h, acc0);
    store_row(row_base, rr + 1u, col, b, h, acc1);
    store_row(row_base, rr + 2u, col, b, h, acc2);
    store_row(row_base, rr + 3u, col, b, h, acc3);
}
