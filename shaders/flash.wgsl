// Fused attention with online softmax (FlashAttention-style): no score matrix is stored.
//
// Each invocation owns one query row of the query heads that share one kv head (rows.wgsl),
// pre-scaled and held in registers with its output accumulator o, running max m and running
// sum l. Keys are visited in blocks of KB; per block: scores, new max, rescale, P·V.
// All per-row vectors are unrolled with #for (q_a_c, o_a_c: 16 dims per `a`, vec4 per `c`)
// so that they stay in registers: compilers like llvmpipe turn loops over private arrays into
// per-lane memory gathers.
//
// SUBGROUPS: the rows of a subgroup walk their keys independently, no workgroup memory and no
//   barrier: lane t of the subgroup loads key row t0+t of the block (KB = subgroup size) and
//   subgroupBroadcast shares it with the other lanes.
// otherwise: the workgroup stages each block of K and V in workgroup memory (the fallback for
//   adapters without subgroups, e.g. GL).
// Blocks past the last key any row of the subgroup (workgroup) sees are skipped (causal,
// kv_lens); blocks that every row sees in full are not masked.
// SPLIT: grid.y splits the keys (split-KV / flash-decoding): each split writes its normalised
//   partial output and lse to scratch and combine.wgsl merges them exactly.
// Constants: WG (rows per workgroup), KB (keys per block), D16 (head_dim class / 16).
// VEC4: head_dim and row strides are multiples of 4, so q/k/v/out are accessed as vec4.
#include "common.wgsl"

const D4: u32 = D16 * 4u;

@group(0) @binding(0) var<uniform> P: Params;
#include "load4.wgsl"
@group(0) @binding(4) var<storage, read> kv_lens: array<u32>;

#include "visible.wgsl"
#include "rows.wgsl"
#if SPLIT
// [split][row of chunk][D4] and [split][row of chunk]
@group(0) @binding(5) var<storage, read_write> o_part: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> lse_part: array<f32>;
#else
#include "out.wgsl"
#endif

#if !SUBGROUPS
var<workgroup> kt: array<vec4<f32>, KB * D4>;
var<workgroup> vt: array<vec4<f32>, KB * D4>;
#endif

@compute @workgroup_size(WG, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
#if SUBGROUPS
    @builtin(subgroup_invocation_id) lane: u32,
#endif
) {
    let rows = P.group * P.nq;
    let r0 = wid.x * WG;
    let r = r0 + li;
    let valid = r < rows;
    let row = row_of(wid.z, min(r, rows - 1u));
    let b = row.b;
    let kvh = kv_pair(wid.z).y;
    let my_end = select(0u, visible_end(b, row.i), valid);
#if SUBGROUPS
    // Keys of this subgroup: up to the last one any of its rows sees; below full_end every
    // row sees every key.
    var k_hi = subgroupMax(my_end);
    let full_end = subgroupMin(select(P.seq_k, my_end, valid));
#else
    // Keys of this workgroup (uniform, as the barriers need).
    let r_last = min(r0 + WG, rows) - 1u;
    var i_lo = P.i0 + r0 % P.nq;
    var i_hi = P.i0 + r_last % P.nq;
    if (r0 / P.nq != r_last / P.nq) {
        i_lo = P.i0;
        i_hi = P.i0 + P.nq - 1u;
    }
    let full_end = visible_end(b, i_lo);
    var k_hi = visible_end(b, i_hi);
#endif
    var k_lo = 0u;
#if SPLIT
    k_lo = min(wid.y * P.split_len, k_hi);
    k_hi = min(k_lo + P.split_len, k_hi);
#endif

    let q_at = b * P.q_sb + row.h * P.q_sh + row.i * P.q_ss - P.q_shift;
#for a in 0..D16
#for c in 0..4
    let q_{a}_{c} = load4_q(q_at, {a}u * 16u + {c}u * 4u) * P.scale;
    var o_{a}_{c} = vec4<f32>(0.0);
#endfor
#endfor
    var m = MASKED;
    var l = 0.0;
    let kv_base = b * P.k_sb + kvh * P.k_sh;

    for (var t0 = k_lo; t0 < k_hi; t0 += KB) {
#if SUBGROUPS
        let j = t0 + lane;
        let in_range = j < k_hi;
        let kv_row = kv_base + min(j, k_hi - 1u) * P.k_ss;
#for a in 0..D16
#for c in 0..4
        let k_{a}_{c} = load4_k(kv_row - P.k_shift, {a}u * 16u + {c}u * 4u);
#endfor
#endfor
#else
        workgroupBarrier();
        for (var e = li; e < KB * D4; e += WG) {
            let j = t0 + e / D4;
            let d = (e % D4) * 4u;
            var kx = vec4<f32>(0.0);
            var vx = vec4<f32>(0.0);
            if (j < k_hi) {
                kx = load4_k(kv_base + j * P.k_ss - P.k_shift, d);
                vx = load4_v(kv_base + j * P.k_ss - P.v_shift, d);
            }
            kt[e] = kx;
            vt[e] = vx;
        }
        workgroupBarrier();
#endif
        // Scores: partial dot products of 16 dims, then summed (two-level summation).
#for jj in 0..KB
        var s_{jj} = 0.0;
#endfor
#for a in 0..D16
#for jj in 0..KB
#if SUBGROUPS
        s_{jj} += dot(q_{a}_0, subgroupBroadcast(k_{a}_0, {jj}u)) + dot(q_{a}_1, subgroupBroadcast(k_{a}_1, {jj}u)) + dot(q_{a}_2, subgroupBroadcast(k_{a}_2, {jj}u)) + dot(q_{a}_3, subgroupBroadcast(k_{a}_3, {jj}u));
#else
        s_{jj} += dot(q_{a}_0, kt[{jj}u * D4 + {a}u * 4u]) + dot(q_{a}_1, kt[{jj}u * D4 + {a}u * 4u + 1u]) + dot(q_{a}_2, kt[{jj}u * D4 + {a}u * 4u + 2u]) + dot(q_{a}_3, kt[{jj}u * D4 + {a}u * 4u + 3u]);
#endif
#endfor
#endfor
        if (t0 + KB > full_end) {
            let end = min(my_end, k_hi);
#for jj in 0..KB
            s_{jj} = select(MASKED, s_{jj}, t0 + {jj}u < end);
#endfor
        }
        // Online softmax: masked scores give p = 0; a row that has seen no key keeps l = 0.
        var mx = m;
#for jj in 0..KB
        mx = max(mx, s_{jj});
#endfor
        let corr = exp(m - mx);
#for jj in 0..KB
        let p_{jj} = select(0.0, exp(s_{jj} - mx), s_{jj} > MASKED_CUT);
#endfor
        l = l * corr
#for jj in 0..KB
            + p_{jj}
#endfor
            ;
        m = mx;
#if SUBGROUPS
#for a in 0..D16
#for c in 0..4
        let v_{a}_{c} = select(vec4<f32>(0.0), load4_v(kv_row - P.v_shift, {a}u * 16u + {c}u * 4u), in_range);
        o_{a}_{c} = o_{a}_{c} * corr
#for jj in 0..KB
            + p_{jj} * subgroupBroadcast(v_{a}_{c}, {jj}u)
#endfor
            ;
#endfor
#endfor
#else
#for a in 0..D16
#for c in 0..4
        o_{a}_{c} = o_{a}_{c} * corr
#for jj in 0..KB
            + p_{jj} * vt[{jj}u * D4 + {a}u * 4u + {c}u]
#endfor
            ;
#endfor
#endfor
#endif
    }

    if (!valid) {
        return;
    }
    // A row that saw no key has l = 0: output 0 and lse -inf, never NaN.
    let inv = select(0.0, 1.0 / l, l > 0.0);
    let row_lse = select(P.neg_inf, m + log(l), l > 0.0);
    var acc: array<vec4<f32>, D4>;
#for a in 0..D16
#for c in 0..4
    acc[{a}u * 4u + {c}u] = o_{a}_{c};
#endfor
#endfor
#if SPLIT
    let slot = wid.y * (rows * (P.nbh / P.group)) + wid.z * rows + r;
    for (var d4 = 0u; d4 < D4; d4++) {
        o_part[slot * D4 + d4] = acc[d4] * inv;
    }
    lse_part[slot] = row_lse;
#else
    store_out(row, acc, inv, row_lse);
#endif
}
