// Fused attention with online softmax on matrix tiles: S = Q·Kᵀ and O += P·V are tile
// multiplies by the helpers of mma_coop.inc.wgsl (COOP: cooperative matrices, i.e. tensor cores,
// f16 operands and f32 accumulators) or mma_portable.inc.wgsl (workgroup memory and scalar FMAs,
// any adapter; same tile shapes and layouts). Everything else — staging, masks, online
// softmax, the P round trip through workgroup memory, stores — is this one file.
//
// A workgroup of WG invocations owns BR query rows (common/row_index.inc.wgsl numbering: the
// rows of all query heads that share one kv head) and walks their keys in blocks of BC. Operands
// live in workgroup memory as TE (f16 with TE16: f16 storage, or f32 storage with reduced
// precision; else f32), head_dim padded to DP (multiple of 16) with zeros:
//   tq [BR×DP]  Q of the tile, staged once (unscaled: f16 inputs stay exact)
//   tkv[BC×DP]  K of the block, then V of the block
//   tf          f32 products: S [BR×BC], then P·V [BR×DP]
//   tp [BR×BC]  P (rounded to TE, as the multiply reads it)
// Invocation li handles row lr = li / RL (RL = WG / BR lanes per row), lane part = li % RL:
// keys part + RL·t (t < NK) of each block, output vec4 columns part + RL·u (u < NO4), the
// row's running maximum and its share of the row sum (added up at the end).
// Per block: stage K; S = mma_scores; masks, maxima exchanged through `red`, online-softmax
// rescale, P to tp; stage V; mma_pv; o = o·corr + P·V in registers.
// Keys no row of the tile sees are skipped (causal, kv_lens, window); blocks every row sees
// in full are not masked. SPLIT: grid.y splits the keys; partial outputs as in fused/rows.wgsl.
// Constants: D16, BR, BC, WG, MT (tile edge: 8, or 16 with MT16), NK = BC / RL,
// NO4 = DP / (4·RL), TF = max(BR·BC, BR·DP).
#param D16 BR BC WG MT NK NO4 TF
#flag COOP TE16 MT16 VEC4 SPLIT MODS F16 PACKED BIAS MASK SOFTCAP ALIBI
#include "fused/fused.inc.wgsl"

#if TE16
alias TE = f16;
#else
alias TE = f32;
#endif
const DP: u32 = D16 * 16u;
const RL: u32 = WG / BR;

var<workgroup> tq: array<TE, BR * DP>;
var<workgroup> tkv: array<TE, BC * DP>;
var<workgroup> tp: array<TE, BR * BC>;
var<workgroup> tf: array<f32, TF>;
var<workgroup> red: array<f32, WG>;

#if COOP
#include "fused/mma_coop.inc.wgsl"
#else
#include "fused/mma_portable.inc.wgsl"
#endif

// K (or V, `is_v`) rows t0 .. t0+BC-1 of the block into tkv as TE; keys past k_hi are zero.
fn stage_kv(li: u32, t0: u32, k_hi: u32, kv_base: u32, is_v: bool) {
    for (var e = li; e < BC * D4; e += WG) {
        let j = t0 + e / D4;
        let d = (e % D4) * 4u;
        let row = kv_base + min(j, k_hi - 1u) * P.k_ss;
        var x: vec4<f32>;
        if (is_v) {
            x = ld4_v(row - P.v_shift, d);
        } else {
            x = ld4_k(row - P.k_shift, d);
        }
        x = select(vec4<f32>(0.0), x, j < k_hi);
        let at = (e / D4) * DP + d;
        tkv[at] = TE(x.x);
        tkv[at + 1u] = TE(x.y);
        tkv[at + 2u] = TE(x.z);
        tkv[at + 3u] = TE(x.w);
    }
}

@compute @workgroup_size(WG, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
#if COOP
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) nsg: u32,
#endif
) {
#if !COOP
    let sg = 0u;
    let nsg = 1u;
#endif
    let rows = P.group * P.nq;
    let r0 = wid.x * BR;
    let kvh = kv_pair(wid.z).y;
    let b = kv_pair(wid.z).x;

    // Keys of this workgroup (uniform, as the barriers and cooperative operations need).
    let keys = tile_keys(b, r0, BR, rows);
    let split = split_keys(keys.x, keys.y, wid.y);
    let k_lo = split.x;
    let k_hi = split.y;
    let full_lo = keys.z;
    let full_hi = keys.w;

    let lr = li / RL;
    let part = li % RL;
    let valid = r0 + lr < rows;
    let row = row_of(wid.z, min(r0 + lr, rows - 1u));
    let rng = select(vec2<u32>(0u), visible_range(b, row.i), valid);
    var m = MASKED;
    var l = 0.0;
#for u in 0..NO4
    var o_{u} = vec4<f32>(0.0);
#endfor
    let qscale = P.scale * LOG2E;
    let kv_base = b * P.k_sb + kvh * P.k_sh;

    // Q of the tile, once (rows past the last repeat it; their results are never stored).
    for (var e = li; e < BR * D4; e += WG) {
        let qr = row_of(wid.z, min(r0 + e / D4, rows - 1u));
        let d = (e % D4) * 4u;
        let x = ld4_q(b * P.q_sb + qr.h * P.q_sh + qr.i * P.q_ss - P.q_shift, d);
        let at = (e / D4) * DP + d;
        tq[at] = TE(x.x);
        tq[at + 1u] = TE(x.y);
        tq[at + 2u] = TE(x.z);
        tq[at + 3u] = TE(x.w);
    }

    for (var t0 = k_lo; t0 < k_hi; t0 += BC) {
        // K of the block.
        workgroupBarrier();
        stage_kv(li, t0, k_hi, kv_base, false);
        workgroupBarrier();
        mma_scores(li, sg, nsg);
        workgroupBarrier();

        // Masks and modifiers, block maxima, online softmax, P.
        let masked_block = t0 < full_lo || t0 + BC > min(full_hi, k_hi);
        var bm = m;
#for t in 0..NK
        let j_{t} = t0 + part + {t}u * RL;
        var s_{t} = tf[lr * BC + part + {t}u * RL] * qscale;
#if MODS
        s_{t} = modify2(s_{t}, b, row.h, row.i, j_{t});
#endif
        if (masked_block) {
            s_{t} = select(MASKED, s_{t}, j_{t} >= rng.x && j_{t} < min(rng.y, k_hi));
        }
        bm = max(bm, s_{t});
#endfor
        red[li] = bm;
        workgroupBarrier();
        for (var p = 0u; p < RL; p++) {
            bm = max(bm, red[lr * RL + p]);
        }
        let corr = exp2(m - bm);
        var ps = 0.0;
#for t in 0..NK
        let p_{t} = select(0.0, exp2(s_{t} - bm), s_{t} > MASKED_CUT2);
        ps += p_{t};
        tp[lr * BC + part + {t}u * RL] = TE(p_{t});
#endfor
        l = l * corr + ps;
        m = bm;

        // V of the block into tkv (K is no longer read), then P·V.
        stage_kv(li, t0, k_hi, kv_base, true);
        workgroupBarrier();
        mma_pv(li, sg, nsg);
        workgroupBarrier();
#for u in 0..NO4
        {
            let at = lr * DP + (part + {u}u * RL) * 4u;
            o_{u} = o_{u} * corr + vec4<f32>(tf[at], tf[at + 1u], tf[at + 2u], tf[at + 3u]);
        }
#endfor
    }

    // Row sums: add up the lanes' shares.
    workgroupBarrier();
    red[li] = l;
    workgroupBarrier();
    var lsum = 0.0;
    for (var p = 0u; p < RL; p++) {
        lsum += red[lr * RL + p];
    }

    if (valid) {
        let fin = finish(m, lsum);
        let slot = split_slot(wid.y, wid.z, rows, r0 + lr);
#for u in 0..NO4
        store_col(row, slot, part + {u}u * RL, o_{u} * fin.x);
#endfor
        if (part == 0u) {
            store_lse(row, slot, fin.y);
        }
    }
}
