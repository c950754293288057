// Backward, key-parallel: dk and dv of one key row of one kv head per invocation, summed over
// the query heads of its GQA group (read in place) and the query rows that can see the key
// (the causal / window bounds give the row range; key padding skips the key entirely).
// dv = Σ P·dO, dk = scale·Σ dS·cap'(x)·q with dS = P·(dP − D), P recomputed from q, k and
// the row statistics of the pre-pass. k and v of the key, dk and dv live in registers (D4
// vec4s: head_dim rounded up to a multiple of 4, over 4); logits are summed exactly as qk().
#define USE_q
#define USE_k
#define USE_v
#define USE_stats
#define USE_dout
#include "backward_common.wgsl"
@group(0) @binding(12) var<storage, read_write> dk: array<f32>;
@group(0) @binding(13) var<storage, read_write> dv: array<f32>;

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
    let n4 = (P.head_dim + 3u) / 4u;
    var kr: array<vec4<f32>, D4>;
    var vr: array<vec4<f32>, D4>;
    var dk_acc: array<vec4<f32>, D4>;
    var dv_acc: array<vec4<f32>, D4>;
    for (var c = 0u; c < n4; c++) {
        kr[c] = ld4_k(ka, c * 4u);
        vr[c] = ld4_v(ka, c * 4u);
        dk_acc[c] = vec4<f32>(0.0);
        dv_acc[c] = vec4<f32>(0.0);
    }
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
            var sx = vec4<f32>(0.0);
            for (var c = 0u; c < n4; c++) {
                sx += ld4_q(qa, c * 4u) * kr[c];
            }
            let x = fin(sx) * P.scale;
            let st = stats[row];
            let p = prob(modify(x, b, h, i, j), st);
            if (p == 0.0) {
                continue;
            }
            var sp = vec4<f32>(0.0);
            for (var c = 0u; c < n4; c++) {
                sp += ld4_do(qa, c * 4u) * vr[c];
            }
            let dp = fin(sp);
            for (var c = 0u; c < n4; c++) {
                dv_acc[c] += p * ld4_do(qa, c * 4u);
            }
            let ds = p * ds_over_p(dp, st) * cap_grad(x);
            for (var c = 0u; c < n4; c++) {
                dk_acc[c] += ds * ld4_q(qa, c * 4u);
            }
        }
    }
    for (var c = 0u; c < n4; c++) {
        for (var t = 0u; t < 4u; t++) {
            if (c * 4u + t < P.head_dim) {
                dk[ka + c * 4u + t] = dk_acc[c][t] * P.scale;
                dv[ka + c * 4u + t] = dv_acc[c][t];
            }
        }
    }
}
