// Fused attention with online softmax for GPUs: workgroup tiles (the variant GPU adapters use;
// flash.wgsl keeps whole rows in each invocation, which suits CPU adapters but not the
// register files and shuffle rates of GPUs).
//
// A workgroup of 256 invocations owns BR = 64 query rows (rows.wgsl numbering: the rows of all
// query heads that share one kv head) and walks their keys in blocks of BC = 64. Invocation
// (tr, tc) = (li / 16, li % 16) holds a 4×4 tile of the block's scores (rows tr·4.., keys
// tc·4..) and the output columns tc, tc+16, … (vec4 each, NU of them) of rows tr·4...
// Per block:
//   1. S = Q·Kᵀ in slices of 16 dims: 128 invocations stage the slice of Q (scaled by
//      scale·log2 e) and K transposed in workgroup memory ([dim][4 rows] as vec4, double
//      buffered), then every invocation does 4 vec4 FMAs per dim for its 4×4 tile; the
//      16-dim partial sums are added to S (two-level summation, as in every kernel).
//   2. masks / score modifiers; the rows' block maxima are exchanged through workgroup
//      memory; online-softmax rescale; P (4×4 per invocation) written to workgroup memory
//      ([key][4 rows] as vec4).
//   3. O += P·V with V staged in chunks of VK keys.
// Row sums stay per invocation (own keys) and are added up once at the end.
// Keys no row of the tile sees are skipped (causal, kv_lens, window); blocks every row sees
// in full are not masked. SPLIT: grid.y splits the keys; partial outputs as in flash.wgsl.
// Constants: D16 (head_dim class / 16), NU (= ceil(D16 / 4), output vec4s per row and
// invocation), VK (keys per V chunk: VK · 4·D16 vec4 fit the 1024 of `sa`).
// Workgroup memory: 32 KiB.
#include "fused.wgsl"

const BR: u32 = 64u;
const BC: u32 = 64u;

// Staging area: the Q/K slices (two buffers of 512), then the row-maximum exchange, then
// chunks of V ([key][vec4 column]), then the row-sum exchange.
var<workgroup> sa: array<vec4<f32>, 1024>;
// P of the block: [key][row group] as vec4 of the group's 4 rows.
var<workgroup> sp: array<vec4<f32>, 1024>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let rows = P.group * P.nq;
    let r0 = wid.x * BR;
    let kvh = kv_pair(wid.z).y;
    let b = kv_pair(wid.z).x;
    let tr = li / 16u;
    let tc = li % 16u;

    // Keys of this workgroup (uniform, as the barriers need).
    let keys = tile_keys(b, r0, BR, rows);
    var k_lo = keys.x;
    var k_hi = keys.y;
    let full_lo = keys.z;
    let full_hi = keys.w;
#if SPLIT
    k_lo = max(k_lo, wid.y * P.split_len);
    k_hi = min(k_hi, wid.y * P.split_len + P.split_len);
#endif

    // This invocation's rows: visible keys, running maxima, its share of the row sums and
    // its output columns.
#for r in 0..4
    let valid_{r} = r0 + tr * 4u + {r}u < rows;
    let row_{r} = row_of(wid.z, min(r0 + tr * 4u + {r}u, rows - 1u));
    let rng_{r} = select(vec2<u32>(0u), visible_range(b, row_{r}.i), valid_{r});
    var m_{r} = MASKED;
    var l_{r} = 0.0;
#for u in 0..NU
    var o_{r}_{u} = vec4<f32>(0.0);
#endfor
#endfor
    // Staging roles: invocations 0..63 stage Q, 64..127 stage K, as 4×4 blocks (4 rows or
    // keys of group g / 4, 4 dims of group g % 4 of the slice).
    let g = li % 64u;
    let st_group = g / 4u;
    let st_d = (g % 4u) * 4u;
    let stages_q = li < 64u;
    let stages_k = li >= 64u && li < 128u;
#for e in 0..4
    let st_row_{e} = row_of(wid.z, min(r0 + st_group * 4u + {e}u, rows - 1u));
    let st_q_{e} = b * P.q_sb + st_row_{e}.h * P.q_sh + st_row_{e}.i * P.q_ss - P.q_shift;
#endfor
    let qscale = P.scale * LOG2E;
    let kv_base = b * P.k_sb + kvh * P.k_sh;

    for (var t0 = k_lo; t0 < k_hi; t0 += BC) {
        // 1. Scores of the block.
#for r in 0..4
        var s_{r} = vec4<f32>(0.0);
#endfor
        workgroupBarrier();
        for (var a = 0u; a < D16; a++) {
            let buf = (a % 2u) * 512u;
            if (stages_q || stages_k) {
                let d = a * 16u + st_d;
#for e in 0..4
                var x{e}: vec4<f32>;
#endfor
                if (stages_q) {
#for e in 0..4
                    x{e} = ld4_q(st_q_{e}, d) * qscale;
#endfor
                } else {
#for e in 0..4
                    let j{e} = t0 + st_group * 4u + {e}u;
                    x{e} = select(vec4<f32>(0.0), ld4_k(kv_base + min(j{e}, k_hi - 1u) * P.k_ss - P.k_shift, d), j{e} < k_hi);
#endfor
                }
                let at = buf + select(0u, 256u, stages_k) + st_d * 16u + st_group;
                sa[at] = vec4<f32>(x0.x, x1.x, x2.x, x3.x);
                sa[at + 16u] = vec4<f32>(x0.y, x1.y, x2.y, x3.y);
                sa[at + 32u] = vec4<f32>(x0.z, x1.z, x2.z, x3.z);
                sa[at + 48u] = vec4<f32>(x0.w, x1.w, x2.w, x3.w);
            }
            workgroupBarrier();
#for r in 0..4
            var t_{r} = vec4<f32>(0.0);
#endfor
            for (var dd = 0u; dd < 16u; dd++) {
                let q4 = sa[buf + dd * 16u + tr];
                let k4 = sa[buf + 256u + dd * 16u + tc];
                t_0 += q4.x * k4;
                t_1 += q4.y * k4;
                t_2 += q4.z * k4;
                t_3 += q4.w * k4;
            }
#for r in 0..4
            s_{r} += t_{r};
#endfor
        }

        // 2. Masks and modifiers, block maxima, online softmax, P.
        let j0 = t0 + tc * 4u;
#if MODS
#for r in 0..4
#for c in 0..4
        s_{r}[{c}] = modify2(s_{r}[{c}], b, row_{r}.h, row_{r}.i, j0 + {c}u);
#endfor
#endfor
#endif
        if (t0 < full_lo || t0 + BC > min(full_hi, k_hi)) {
            let jv = vec4<u32>(j0, j0 + 1u, j0 + 2u, j0 + 3u);
#for r in 0..4
            s_{r} = select(vec4<f32>(MASKED), s_{r}, jv >= vec4<u32>(rng_{r}.x) & jv < vec4<u32>(min(rng_{r}.y, k_hi)));
#endfor
        }
        workgroupBarrier();
        sa[tc * 16u + tr] = vec4<f32>(
            max(max(s_0.x, s_0.y), max(s_0.z, s_0.w)),
            max(max(s_1.x, s_1.y), max(s_1.z, s_1.w)),
            max(max(s_2.x, s_2.y), max(s_2.z, s_2.w)),
            max(max(s_3.x, s_3.y), max(s_3.z, s_3.w)),
        );
        workgroupBarrier();
        var bm = vec4<f32>(m_0, m_1, m_2, m_3);
        for (var t = 0u; t < 16u; t++) {
            bm = max(bm, sa[t * 16u + tr]);
        }
        let cut = vec4<f32>(MASKED_CUT2);
#for r in 0..4
        let corr_{r} = exp2(m_{r} - bm[{r}]);
        let p_{r} = select(vec4<f32>(0.0), exp2(s_{r} - vec4<f32>(bm[{r}])), s_{r} > cut);
        l_{r} = l_{r} * corr_{r} + (p_{r}.x + p_{r}.y) + (p_{r}.z + p_{r}.w);
        m_{r} = bm[{r}];
#for u in 0..NU
        o_{r}_{u} *= corr_{r};
#endfor
#endfor
        sp[(tc * 4u) * 16u + tr] = vec4<f32>(p_0.x, p_1.x, p_2.x, p_3.x);
        sp[(tc * 4u + 1u) * 16u + tr] = vec4<f32>(p_0.y, p_1.y, p_2.y, p_3.y);
        sp[(tc * 4u + 2u) * 16u + tr] = vec4<f32>(p_0.z, p_1.z, p_2.z, p_3.z);
        sp[(tc * 4u + 3u) * 16u + tr] = vec4<f32>(p_0.w, p_1.w, p_2.w, p_3.w);

        // 3. O += P·V, V in chunks of VK keys.
        for (var c0 = 0u; c0 < BC; c0 += VK) {
            workgroupBarrier();
            for (var e = li; e < VK * D4; e += 256u) {
                let j = t0 + c0 + e / D4;
                let vx = ld4_v(kv_base + min(j, k_hi - 1u) * P.k_ss - P.v_shift, (e % D4) * 4u);
                sa[e] = select(vec4<f32>(0.0), vx, j < k_hi);
            }
            workgroupBarrier();
            for (var kk = 0u; kk < VK; kk++) {
                let p4 = sp[(c0 + kk) * 16u + tr];
#for u in 0..NU
                {
                    let v4 = sa[kk * D4 + min(tc + {u}u * 16u, D4 - 1u)];
                    o_0_{u} += p4.x * v4;
                    o_1_{u} += p4.y * v4;
                    o_2_{u} += p4.z * v4;
                    o_3_{u} += p4.w * v4;
                }
#endfor
            }
        }
    }

    // Row sums: add up the invocations' shares.
    workgroupBarrier();
    sa[tc * 16u + tr] = vec4<f32>(l_0, l_1, l_2, l_3);
    workgroupBarrier();
    var l4 = vec4<f32>(0.0);
    for (var t = 0u; t < 16u; t++) {
        l4 += sa[t * 16u + tr];
    }

#for r in 0..4
    if (valid_{r}) {
        let fin = finish(m_{r}, l4[{r}]);
        let slot = split_slot(wid.y, wid.z, rows, r0 + tr * 4u + {r}u);
#for u in 0..NU
        if (tc + {u}u * 16u < D4) {
            store_col(row_{r}, slot, tc + {u}u * 16u, o_{r}_{u} * fin.x);
        }
#endfor
        if (tc == 0u) {
            store_lse(row_{r}, slot, fin.y);
        }
    }
#endfor
}
