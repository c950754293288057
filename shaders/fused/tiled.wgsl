// Fused attention with online softmax for GPUs: workgroup tiles with register tiles (the
// variant GPU adapters use; fused/rows.wgsl keeps whole rows in each invocation, which suits CPU
// adapters but not the register files and shuffle rates of GPUs).
//
// A workgroup of WG = RT·CT invocations owns BR = 4·TI·RT query rows (common/row_index.inc.wgsl
// numbering: the rows of all query heads that share one kv head) and walks their keys in blocks of
// BC = 4·TJ·CT. Invocation (tr, tc) = (li / CT, li % CT) holds a TM×TN = 4·TI × 4·TJ register
// tile of the block's scores: row quads tr + i·RT (i < TI) and key quads tc + j·CT (j < TJ),
// strided so that neighbouring invocations read neighbouring vec4 of workgroup memory; and
// the output columns tc, tc + CT, … (vec4 each, NU of them) of its TM rows.
// Per key block:
//   1. S = Q·Kᵀ in slices of KD dims. Every invocation stages SU units of 4 rows × 4 dims
//      (Q pre-scaled by scale·log2 e, then K) into workgroup memory, transposed to
//      [dim][row quad] vec4 with an XOR swizzle of the quad index by the dim (stores without
//      bank conflicts, loads unchanged: the swizzle stays within aligned groups of 8 vec4).
//      Slices are double buffered in workgroup memory and prefetched into registers one
//      slice ahead (the global loads of slice a+1 are in flight while slice a is multiplied),
//      so each slice costs one barrier. Per dim, an invocation loads TI + TJ vec4 and does
//      TM·TJ vec4 FMAs; per slice the partial sums are added to S (two-level summation, as in
//      every kernel).
//   2. masks / score modifiers; the rows' block maxima are exchanged through workgroup
//      memory (two barriers), or with SUBGROUPS by a butterfly of subgroupShuffleXor among
//      the CT lanes of the row band (no barrier: the tile coordinates then come from the
//      subgroup id and lane, so a band is always within one subgroup); online-softmax
//      rescale; P written to workgroup memory ([key][row quad], the quad swizzled by the key).
//   3. O += P·V with V staged in chunks of VK keys, each chunk prefetched into registers
//      while the previous one is multiplied (the first one while the softmax runs), and the
//      first Q/K slice of the next block while the last chunk is multiplied.
// Row sums stay per invocation (own keys) and are added up once at the end.
// Keys no row of the tile sees are skipped (causal, kv_lens, window); blocks every row sees
// in full are not masked. SPLIT: grid.y splits the keys; partial outputs as in fused/rows.wgsl.
// Constants (src/planner/fused.rs, src/planner/tiles.rs): D16 (head_dim class / 16), TI, TJ, RT,
// CT, KD (dims per slice), NS (slices), SU (staging units per invocation), VK (keys per V
// chunk), VU (V vec4 per invocation and chunk), NU (= ceil(D4 / CT)), SA (vec4 of the staging
// area).
#param D16 TI TJ CT RT KD NS SU VK VU NU SA
#flag VEC4 SUBGROUPS SPLIT MODS F16 PACKED BIAS MASK SOFTCAP ALIBI
#include "fused/fused.inc.wgsl"

const WG: u32 = RT * CT;
const BR: u32 = 4u * TI * RT;
const BC: u32 = 4u * TJ * CT;
// Row quads (Q) and key quads (K) of a block; a staged slice row holds both.
const QC: u32 = BR / 4u;
const KC: u32 = BC / 4u;
const STR: u32 = QC + KC;
const SLICE: u32 = KD * STR;
const UNITS: u32 = STR * (KD / 4u);

// Staging area: the two Q/K slice buffers; then the row-maximum exchange, the chunks of V
// ([key][vec4 column]) and the row-sum exchange.
var<workgroup> sa: array<vec4<f32>, SA>;
// P of the block: [key][row quad] as vec4 of the quad's 4 rows.
var<workgroup> sp: array<vec4<f32>, BC * QC>;

// Swizzle of a quad index in staged dim `d` (< KD): 0..7, distinct for the dims one store
// instruction of 8 neighbouring invocations covers.
fn swz(d: u32) -> u32 {
    return (d >> 2u) * (32u / KD);
}

// Swizzle of a row quad in P's row of key `j`.
fn pswz(j: u32) -> u32 {
    return (j >> 2u) & 7u;
}

// Unit of a slice: 4 rows of Q (quad < QC; their element offsets in `qa`) or 4 keys from
// `j0` (below k_hi; K rows at `kv_base`), dims d .. d+3 each, as the columns of a matrix.
fn load_unit(isq: bool, qa: vec4<u32>, j0: u32, k_hi: u32, kv_base: u32, d: u32, qscale: f32) -> mat4x4<f32> {
    if (isq) {
        return mat4x4<f32>(ld4_q(qa.x, d) * qscale, ld4_q(qa.y, d) * qscale, ld4_q(qa.z, d) * qscale, ld4_q(qa.w, d) * qscale);
    }
    var x: mat4x4<f32>;
#for e in 0..4
    {
        let j = j0 + {e}u;
        x[{e}] = select(vec4<f32>(0.0), ld4_k(kv_base + min(j, k_hi - 1u) * P.k_ss - P.k_shift, d), j < k_hi);
    }
#endfor
    return x;
}

// Stores a unit (quad, dim quad dq) into the slice buffer at `buf`, transposed.
fn store_unit(buf: u32, quad: u32, dq: u32, x: mat4x4<f32>) {
#for e in 0..4
    {
        let d = dq * 4u + {e}u;
        sa[buf + d * STR + (quad ^ swz(d))] = vec4<f32>(x[0][{e}], x[1][{e}], x[2][{e}], x[3][{e}]);
    }
#endfor
}

// Element e (< VK·D4) of the V chunk of keys t .. t+VK-1.
fn load_v(t: u32, e: u32, k_hi: u32, kv_base: u32) -> vec4<f32> {
    let j = t + e / D4;
    let vx = ld4_v(kv_base + min(j, k_hi - 1u) * P.k_ss - P.v_shift, (e % D4) * 4u);
    return select(vec4<f32>(0.0), vx, j < k_hi && e < VK * D4);
}

@compute @workgroup_size(WG, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
#if SUBGROUPS
    @builtin(subgroup_id) sg_id: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) sg_size: u32,
#endif
) {
    let rows = P.group * P.nq;
    let r0 = wid.x * BR;
    let kvh = kv_pair(wid.z).y;
    let b = kv_pair(wid.z).x;
#if SUBGROUPS
    // (the planner uses this only with a fixed subgroup size that is a multiple of CT and
    // divides WG)
    let tr = sg_id * (sg_size / CT) + lane / CT;
    let tc = lane % CT;
#else
    let tr = li / CT;
    let tc = li % CT;
#endif

    // Keys of this workgroup (uniform, as the barriers need).
    let keys = tile_keys(b, r0, BR, rows);
    let split = split_keys(keys.x, keys.y, wid.y);
    let k_lo = split.x;
    let k_hi = split.y;
    let full_lo = keys.z;
    let full_hi = keys.w;

    // This invocation's rows: visible keys, running maxima, its share of the row sums and
    // its output columns.
#for i in 0..TI
#for r in 0..4
    let at_{i}_{r} = r0 + (tr + {i}u * RT) * 4u + {r}u;
    let valid_{i}_{r} = at_{i}_{r} < rows;
    let row_{i}_{r} = row_of(wid.z, min(at_{i}_{r}, rows - 1u));
    let rng_{i}_{r} = select(vec2<u32>(0u), visible_range(b, row_{i}_{r}.i), valid_{i}_{r});
    var m_{i}_{r} = MASKED;
    var l_{i}_{r} = 0.0;
#for u in 0..NU
    var o_{i}_{r}_{u} = vec4<f32>(0.0);
#endfor
#endfor
#endfor
    let qscale = P.scale * LOG2E;
    let kv_base = b * P.k_sb + kvh * P.k_sh;

    // Staging units of this invocation: unit li + s·WG is dim quad u % (KD/4) of row or key
    // quad u / (KD/4) (Q quads first), so that neighbouring invocations read neighbouring
    // vec4 of a row.
#for s in 0..SU
    let un_{s} = li + {s}u * WG;
    let uok_{s} = un_{s} < UNITS;
    let dq_{s} = un_{s} % (KD / 4u);
    let quad_{s} = min(un_{s} / (KD / 4u), STR - 1u);
    let isq_{s} = quad_{s} < QC;
    var qa_{s} = vec4<u32>(0u);
#for e in 0..4
    {
        let rw = row_of(wid.z, min(r0 + quad_{s} * 4u + {e}u, rows - 1u));
        qa_{s}[{e}] = b * P.q_sb + rw.h * P.q_sh + rw.i * P.q_ss - P.q_shift;
    }
#endfor
    let kq_{s} = select(quad_{s} - QC, 0u, isq_{s}) * 4u;
    var x_{s}: mat4x4<f32>;
#endfor
#for s in 0..VU
    var y_{s} = vec4<f32>(0.0);
#endfor

    // The first slice of the first block.
    if (k_lo < k_hi) {
#for s in 0..SU
        if (uok_{s}) {
            x_{s} = load_unit(isq_{s}, qa_{s}, k_lo + kq_{s}, k_hi, kv_base, dq_{s} * 4u, qscale);
        }
#endfor
    }

    for (var t0 = k_lo; t0 < k_hi; t0 += BC) {
        // 1. Scores of the block.
#for i in 0..TI
#for j in 0..TJ
#for r in 0..4
        var s_{i}_{j}_{r} = vec4<f32>(0.0);
#endfor
#endfor
#endfor
        workgroupBarrier();
        for (var a = 0u; a < NS; a++) {
            let buf = (a % 2u) * SLICE;
#for s in 0..SU
            if (uok_{s}) {
                store_unit(buf, quad_{s}, dq_{s}, x_{s});
            }
#endfor
            workgroupBarrier();
            if (a + 1u < NS) {
#for s in 0..SU
                if (uok_{s}) {
                    x_{s} = load_unit(isq_{s}, qa_{s}, t0 + kq_{s}, k_hi, kv_base, (a + 1u) * KD + dq_{s} * 4u, qscale);
                }
#endfor
            }
#for i in 0..TI
#for j in 0..TJ
#for r in 0..4
            var t_{i}_{j}_{r} = vec4<f32>(0.0);
#endfor
#endfor
#endfor
            for (var dd = 0u; dd < KD; dd++) {
                let row_at = buf + dd * STR;
                let sw = swz(dd);
#for i in 0..TI
                let q{i} = sa[row_at + ((tr + {i}u * RT) ^ sw)];
#endfor
#for j in 0..TJ
                let k{j} = sa[row_at + QC + ((tc + {j}u * CT) ^ sw)];
#endfor
#for i in 0..TI
#for j in 0..TJ
                t_{i}_{j}_0 += q{i}.x * k{j};
                t_{i}_{j}_1 += q{i}.y * k{j};
                t_{i}_{j}_2 += q{i}.z * k{j};
                t_{i}_{j}_3 += q{i}.w * k{j};
#endfor
#endfor
            }
#for i in 0..TI
#for j in 0..TJ
#for r in 0..4
            s_{i}_{j}_{r} += t_{i}_{j}_{r};
#endfor
#endfor
#endfor
        }
        // The first V chunk, in flight while the softmax runs.
#for s in 0..VU
        y_{s} = load_v(t0, li + {s}u * WG, k_hi, kv_base);
#endfor

        // 2. Masks and modifiers, block maxima, online softmax, P.
#for j in 0..TJ
        let j0_{j} = t0 + (tc + {j}u * CT) * 4u;
#endfor
#if MODS
#for i in 0..TI
#for j in 0..TJ
#for r in 0..4
#for c in 0..4
        s_{i}_{j}_{r}[{c}] = modify2(s_{i}_{j}_{r}[{c}], b, row_{i}_{r}.h, row_{i}_{r}.i, j0_{j} + {c}u);
#endfor
#endfor
#endfor
#endfor
#endif
        if (t0 < full_lo || t0 + BC > min(full_hi, k_hi)) {
#for j in 0..TJ
            let jv_{j} = vec4<u32>(j0_{j}, j0_{j} + 1u, j0_{j} + 2u, j0_{j} + 3u);
#for i in 0..TI
#for r in 0..4
            s_{i}_{j}_{r} = select(vec4<f32>(MASKED), s_{i}_{j}_{r}, jv_{j} >= vec4<u32>(rng_{i}_{r}.x) & jv_{j} < vec4<u32>(min(rng_{i}_{r}.y, k_hi)));
#endfor
#endfor
#endfor
        }
#for i in 0..TI
        var mx_{i} = vec4<f32>(MASKED);
#for j in 0..TJ
        mx_{i} = max(mx_{i}, vec4<f32>(
            max(max(s_{i}_{j}_0.x, s_{i}_{j}_0.y), max(s_{i}_{j}_0.z, s_{i}_{j}_0.w)),
            max(max(s_{i}_{j}_1.x, s_{i}_{j}_1.y), max(s_{i}_{j}_1.z, s_{i}_{j}_1.w)),
            max(max(s_{i}_{j}_2.x, s_{i}_{j}_2.y), max(s_{i}_{j}_2.z, s_{i}_{j}_2.w)),
            max(max(s_{i}_{j}_3.x, s_{i}_{j}_3.y), max(s_{i}_{j}_3.z, s_{i}_{j}_3.w)),
        ));
#endfor
#endfor
#if SUBGROUPS
        for (var off = 1u; off < CT; off <<= 1u) {
#for i in 0..TI
            mx_{i} = max(mx_{i}, subgroupShuffleXor(mx_{i}, off));
#endfor
        }
#else
        workgroupBarrier();
#for i in 0..TI
        sa[(tr + {i}u * RT) * CT + tc] = mx_{i};
#endfor
        workgroupBarrier();
#for i in 0..TI
        for (var t = 0u; t < CT; t++) {
            mx_{i} = max(mx_{i}, sa[(tr + {i}u * RT) * CT + t]);
        }
#endfor
#endif
        let cut = vec4<f32>(MASKED_CUT2);
#for i in 0..TI
        {
            let bm = max(vec4<f32>(m_{i}_0, m_{i}_1, m_{i}_2, m_{i}_3), mx_{i});
#for r in 0..4
            let corr_{r} = exp2(m_{i}_{r} - bm[{r}]);
            var ls_{r} = l_{i}_{r} * corr_{r};
#for j in 0..TJ
            let p_{j}_{r} = select(vec4<f32>(0.0), exp2(s_{i}_{j}_{r} - vec4<f32>(bm[{r}])), s_{i}_{j}_{r} > cut);
            ls_{r} += (p_{j}_{r}.x + p_{j}_{r}.y) + (p_{j}_{r}.z + p_{j}_{r}.w);
#endfor
            l_{i}_{r} = ls_{r};
            m_{i}_{r} = bm[{r}];
#for u in 0..NU
            o_{i}_{r}_{u} *= corr_{r};
#endfor
#endfor
            let quad = tr + {i}u * RT;
#for j in 0..TJ
            {
                let kq = tc + {j}u * CT;
                let at_p = kq * 4u * QC + (quad ^ pswz(kq * 4u));
                sp[at_p] = vec4<f32>(p_{j}_0.x, p_{j}_1.x, p_{j}_2.x, p_{j}_3.x);
                sp[at_p + QC] = vec4<f32>(p_{j}_0.y, p_{j}_1.y, p_{j}_2.y, p_{j}_3.y);
                sp[at_p + 2u * QC] = vec4<f32>(p_{j}_0.z, p_{j}_1.z, p_{j}_2.z, p_{j}_3.z);
                sp[at_p + 3u * QC] = vec4<f32>(p_{j}_0.w, p_{j}_1.w, p_{j}_2.w, p_{j}_3.w);
            }
#endfor
        }
#endfor

        // 3. O += P·V, V in chunks of VK keys.
        for (var c0 = 0u; c0 < BC; c0 += VK) {
            workgroupBarrier();
#for s in 0..VU
            if (li + {s}u * WG < VK * D4) {
                sa[li + {s}u * WG] = y_{s};
            }
#endfor
            workgroupBarrier();
            if (c0 + VK < BC) {
#for s in 0..VU
                y_{s} = load_v(t0 + c0 + VK, li + {s}u * WG, k_hi, kv_base);
#endfor
            } else if (t0 + BC < k_hi) {
                // the first slice of the next block
#for s in 0..SU
                if (uok_{s}) {
                    x_{s} = load_unit(isq_{s}, qa_{s}, t0 + BC + kq_{s}, k_hi, kv_base, dq_{s} * 4u, qscale);
                }
#endfor
            }
            for (var kk = 0u; kk < VK; kk++) {
                let j = c0 + kk;
#for i in 0..TI
                let p{i} = sp[j * QC + ((tr + {i}u * RT) ^ pswz(j))];
#endfor
#for u in 0..NU
                {
                    let v4 = sa[kk * D4 + min(tc + {u}u * CT, D4 - 1u)];
#for i in 0..TI
                    o_{i}_0_{u} += p{i}.x * v4;
                    o_{i}_1_{u} += p{i}.y * v4;
                    o_{i}_2_{u} += p{i}.z * v4;
                    o_{i}_3_{u} += p{i}.w * v4;
#endfor
                }
#endfor
            }
        }
    }

    // Row sums: add up the invocations' shares.
#for i in 0..TI
    var l4_{i} = vec4<f32>(l_{i}_0, l_{i}_1, l_{i}_2, l_{i}_3);
#endfor
#if SUBGROUPS
    for (var off = 1u; off < CT; off <<= 1u) {
#for i in 0..TI
        l4_{i} += subgroupShuffleXor(l4_{i}, off);
#endfor
    }
#else
    workgroupBarrier();
#for i in 0..TI
    sa[(tr + {i}u * RT) * CT + tc] = l4_{i};
#endfor
    workgroupBarrier();
#for i in 0..TI
    l4_{i} = vec4<f32>(0.0);
    for (var t = 0u; t < CT; t++) {
        l4_{i} += sa[(tr + {i}u * RT) * CT + t];
    }
#endfor
#endif
#for i in 0..TI
    {
        let l4 = l4_{i};
#for r in 0..4
        if (valid_{i}_{r}) {
            let fin = finish(m_{i}_{r}, l4[{r}]);
            let slot = split_slot(wid.y, wid.z, rows, at_{i}_{r});
#for u in 0..NU
            if (tc + {u}u * CT < D4) {
                store_col(row_{i}_{r}, slot, tc + {u}u * CT, o_{i}_{r}_{u} * fin.x);
            }
#endfor
            if (tc == 0u) {
                store_lse(row_{i}_{r}, slot, fin.y);
            }
        }
#endfor
    }
#endfor
}
