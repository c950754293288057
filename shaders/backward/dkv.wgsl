// Backward, key-parallel: dk and dv of one key row of one kv head per invocation, summed over
// the query heads of its GQA group (read in place) and the query rows that can see the key
// (the causal / window bounds give the row range; key padding skips the key entirely).
// dv = Σ P·dO, dk = scale·Σ dS·cap'(x)·q with dS = P·(dP − D), P recomputed from q, k and
// the row statistics of the pre-pass. k and v of the key and the dk, dv accumulators are
// unrolled into D4 vec4 registers each (D4·4 ≥ head_dim; chunks past head_dim are zero);
// logits are summed exactly as qk() does.
#param D4
#flag VEC4 F16 PACKED BIAS MASK SOFTCAP ALIBI
#define USE_q
#define USE_k
#define USE_v
#define USE_stats
#define USE_dout
#include "backward/backward.inc.wgsl"
@group(0) @binding(B_DK) var<storage, read_write> dk: array<f32>;
@group(0) @binding(B_DV) var<storage, read_write> dv: array<f32>;

// The query rows lo..hi that may see key j under causal, window (key padding aside).
fn row_range(j: u32) -> vec2<u32> {
    var lo = 0;
    var hi = i32(P.seq_q);
    let jj = i32(j);
    if (P.causal != 0u) {
        lo = max(lo, jj - P.causal_off);
    }
    if (P.win_right >= 0) {
        lo = max(lo, jj - P.align_off - P.win_right);
    }
    if (P.win_left >= 0) {
        hi = min(hi, jj - P.align_off + P.win_left + 1);
    }
    hi = max(hi, 0);
    return vec2<u32>(u32(clamp(lo, 0, hi)), u32(hi));
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = item(gid, nwg);
    if (r >= P.items) {
        return;
    }
    let j = r % P.seq_k;
    let g = (r / P.seq_k) % P.kv_heads;
    let b = r / (P.seq_k * P.kv_heads);
    let ka = k_at(b, g, j);
#for C in 0..D4
    let k_{C} = ld4_k(ka, {C}u * 4u);
    let v_{C} = ld4_v(ka, {C}u * 4u);
    var dk_{C} = vec4<f32>(0.0);
    var dv_{C} = vec4<f32>(0.0);
#endfor
    var rows = row_range(j);
    if (P.has_kv_lens != 0u && j >= aux[b]) {
        rows = vec2<u32>(0u, 0u);
    }
    for (var hh = 0u; hh < P.group; hh++) {
        let h = g * P.group + hh;
        for (var i = rows.x; i < rows.y; i++) {
            let vis = visible_range(b, i);
            if (j < vis.x || j >= vis.y) {
                continue;
            }
            let row = (b * P.q_heads + h) * P.seq_q + i;
            let qa = q_at(b, h, i);
            var sx = dot0();
#for C in 0..D4
            let q_{C} = ld4_q(qa, {C}u * 4u);
            sx = dot_add(sx, q_{C}, k_{C});
#endfor
            let x = logit(sx);
            let st = stats[row];
            let p = prob(modify2(x, b, h, i, j), st);
            if (p == 0.0) {
                continue;
            }
            var sp = vec4<f32>(0.0);
#for C in 0..D4
            let do_{C} = ld4_do(qa, {C}u * 4u);
            sp += do_{C} * v_{C};
            dv_{C} += p * do_{C};
#endfor
            let dp = fin(sp);
            let ds = p * ds_over_p(dp, st) * cap_grad(x.x);
#for C in 0..D4
            dk_{C} += ds * q_{C};
#endfor
        }
    }
#for C in 0..D4
    for (var t = 0u; t < 4u; t++) {
        if ({C}u * 4u + t < P.head_dim) {
            dk[ka + {C}u * 4u + t] = dk_{C}[t] * P.scale;
            dv[ka + {C}u * 4u + t] = dv_{C}[t];
        }
    }
#endfor
}
