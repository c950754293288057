// Fused attention with online softmax (FlashAttention-style): no score matrix is stored.
//
// Each invocation owns R consecutive query rows of the query heads that share one kv head
// (common/row_index.inc.wgsl), pre-scaled and held in registers with their output accumulators
// o, running maxima m and running sums l. Keys are visited in blocks of KB; per block: scores,
// new max, rescale, P·V. Every K/V value fetched (or broadcast) serves R rows.
// All per-row vectors are unrolled with #for (q_r_a_c, o_r_a_c: row r, 16 dims per `a`, vec4
// per `c`) so that they stay in registers: compilers like llvmpipe turn loops over private
// arrays into per-lane memory gathers.
//
// SUBGROUPS: the rows of a subgroup walk their keys independently, no workgroup memory and no
//   barrier: lane t of the subgroup loads key row t0+t of the block (KB = subgroup size) and
//   subgroupBroadcast shares it with the other lanes.
// otherwise: the workgroup stages each block of K and V in workgroup memory (the fallback for
//   adapters without subgroups, e.g. GL).
// Only the keys some row of the subgroup (workgroup) sees are visited (causal, kv_lens,
// sliding window: masked blocks are skipped); blocks that every row sees in full are not
// masked. MODS: soft-cap, ALiBi, bias and mask tensor (common/score.inc.wgsl) modify each score.
// SPLIT: grid.y splits the keys (split-KV / flash-decoding): each split writes its normalised
//   partial output and lse to scratch and split_kv_combine.wgsl merges them exactly.
// Constants: WG (invocations), R (rows per invocation), KB (keys per block), D16 (head_dim
// class / 16).
// VEC4: head_dim and row strides are multiples of 4, so q/k/v/out are accessed as vec4.
#param WG R KB D16
#flag VEC4 SUBGROUPS SPLIT MODS F16 PACKED BIAS MASK SOFTCAP ALIBI
#include "fused/fused.inc.wgsl"

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
    let r0 = wid.x * (WG * R);
    let kvh = kv_pair(wid.z).y;
    let b = kv_pair(wid.z).x;
    // Key ranges of this invocation's valid rows: earliest/latest start and end.
    var lo_min = P.seq_k;
    var lo_max = 0u;
    var hi_min = P.seq_k;
    var hi_max = 0u;
#for r in 0..R
    let valid_{r} = r0 + li * R + {r}u < rows;
    let row_{r} = row_of(wid.z, min(r0 + li * R + {r}u, rows - 1u));
    let rng_{r} = select(vec2<u32>(0u), visible_range(b, row_{r}.i), valid_{r});
    lo_min = min(lo_min, select(P.seq_k, rng_{r}.x, valid_{r}));
    lo_max = max(lo_max, rng_{r}.x);
    hi_min = min(hi_min, select(P.seq_k, rng_{r}.y, valid_{r}));
    hi_max = max(hi_max, rng_{r}.y);
#endfor
#if SUBGROUPS
    // Keys of this subgroup: those any of its rows sees; in full_lo..full_hi every row sees
    // every key.
    let keys = vec4<u32>(subgroupMin(lo_min), subgroupMax(hi_max), subgroupMax(lo_max), subgroupMin(hi_min));
#else
    let keys = tile_keys(b, r0, WG * R, rows);
#endif
    let split = split_keys(keys.x, keys.y, wid.y);
    let k_lo = split.x;
    let k_hi = split.y;
    let full_lo = keys.z;
    let full_hi = keys.w;

#for r in 0..R
    let q_at_{r} = b * P.q_sb + row_{r}.h * P.q_sh + row_{r}.i * P.q_ss - P.q_shift;
    var m_{r} = MASKED;
    var l_{r} = 0.0;
#for a in 0..D16
#for c in 0..4
    let q_{r}_{a}_{c} = ld4_q(q_at_{r}, {a}u * 16u + {c}u * 4u) * (P.scale * LOG2E);
    var o_{r}_{a}_{c} = vec4<f32>(0.0);
#endfor
#endfor
#endfor
    let kv_base = b * P.k_sb + kvh * P.k_sh;

    for (var t0 = k_lo; t0 < k_hi; t0 += KB) {
#if SUBGROUPS
        let j = t0 + lane;
        let in_range = j < k_hi;
        let kv_row = kv_base + min(j, k_hi - 1u) * P.k_ss;
#else
        workgroupBarrier();
        for (var e = li; e < KB * D4; e += WG) {
            let j = t0 + e / D4;
            let d = (e % D4) * 4u;
            var kx = vec4<f32>(0.0);
            var vx = vec4<f32>(0.0);
            if (j < k_hi) {
                kx = ld4_k(kv_base + j * P.k_ss - P.k_shift, d);
                vx = ld4_v(kv_base + j * P.k_ss - P.v_shift, d);
            }
            kt[e] = kx;
            vt[e] = vx;
        }
        workgroupBarrier();
#endif
        // Scores (base 2): partial dot products of 16 dims, then summed (two-level summation).
#for r in 0..R
#for jj in 0..KB
        var s_{r}_{jj} = 0.0;
#endfor
#endfor
#if SUBGROUPS
        // Register-friendly order: per 16 dims, per vec4 of them, fetch this lane's K slice
        // once and broadcast it key by key; partial sums t stay in registers.
#for a in 0..D16
        {
#for r in 0..R
#for jj in 0..KB
            var t_{r}_{jj} = 0.0;
#endfor
#endfor
#for c in 0..4
            {
                let kx = ld4_k(kv_row - P.k_shift, {a}u * 16u + {c}u * 4u);
#for jj in 0..KB
                {
                    let kb = subgroupBroadcast(kx, {jj}u);
#for r in 0..R
                    t_{r}_{jj} += dot(q_{r}_{a}_{c}, kb);
#endfor
                }
#endfor
            }
#endfor
#for r in 0..R
#for jj in 0..KB
            s_{r}_{jj} += t_{r}_{jj};
#endfor
#endfor
        }
#endfor
#else
#for a in 0..D16
#for jj in 0..KB
        {
#for c in 0..4
            let kb{c} = kt[{jj}u * D4 + {a}u * 4u + {c}u];
#endfor
#for r in 0..R
            s_{r}_{jj} += dot(q_{r}_{a}_0, kb0) + dot(q_{r}_{a}_1, kb1) + dot(q_{r}_{a}_2, kb2) + dot(q_{r}_{a}_3, kb3);
#endfor
        }
#endfor
#endfor
#endif
#if MODS
#for r in 0..R
#for jj in 0..KB
        s_{r}_{jj} = modify2(s_{r}_{jj}, b, row_{r}.h, row_{r}.i, t0 + {jj}u);
#endfor
#endfor
#endif
        if (t0 < full_lo || t0 + KB > min(full_hi, k_hi)) {
#for r in 0..R
            let lo_b{r} = rng_{r}.x;
            let hi_b{r} = min(rng_{r}.y, k_hi);
#for jj in 0..KB
            s_{r}_{jj} = select(MASKED, s_{r}_{jj}, t0 + {jj}u >= lo_b{r} && t0 + {jj}u < hi_b{r});
#endfor
#endfor
        }
        // Online softmax: masked scores give p = 0; a row that has seen no key keeps l = 0.
#for r in 0..R
        var mx_{r} = m_{r};
#for jj in 0..KB
        mx_{r} = max(mx_{r}, s_{r}_{jj});
#endfor
        let corr_{r} = exp2(m_{r} - mx_{r});
#for jj in 0..KB
        let p_{r}_{jj} = select(0.0, exp2(s_{r}_{jj} - mx_{r}), s_{r}_{jj} > MASKED_CUT2);
#endfor
        l_{r} = l_{r} * corr_{r}
#for jj in 0..KB
            + p_{r}_{jj}
#endfor
            ;
        m_{r} = mx_{r};
#endfor
#for a in 0..D16
#for c in 0..4
        {
#for r in 0..R
            var acc_{r} = o_{r}_{a}_{c} * corr_{r};
#endfor
#if SUBGROUPS
            let vx = select(vec4<f32>(0.0), ld4_v(kv_row - P.v_shift, {a}u * 16u + {c}u * 4u), in_range);
#for jj in 0..KB
            {
                let vb = subgroupBroadcast(vx, {jj}u);
#for r in 0..R
                acc_{r} += p_{r}_{jj} * vb;
#endfor
            }
#endfor
#else
#for jj in 0..KB
            {
                let vb = vt[{jj}u * D4 + {a}u * 4u + {c}u];
#for r in 0..R
                acc_{r} += p_{r}_{jj} * vb;
#endfor
            }
#endfor
#endif
#for r in 0..R
            o_{r}_{a}_{c} = acc_{r};
#endfor
        }
#endfor
#endfor
    }

#for r in 0..R
    if (valid_{r}) {
        let fin = finish(m_{r}, l_{r});
        let slot = split_slot(wid.y, wid.z, rows, r0 + li * R + {r}u);
        // Unrolled stores keep o in registers (an array indexed in a loop would not be).
#for a in 0..D16
#for c in 0..4
        store_col(row_{r}, slot, {a}u * 4u + {c}u, o_{r}_{a}_{c} * fin.x);
#endfor
#endfor
        store_lse(row_{r}, slot, fin.y);
    }
#endfor
}
