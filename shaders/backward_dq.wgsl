// Backward, query-parallel: dq of one query row per invocation, over its visible keys:
// dq = scale·Σ_j dS_j·cap'(x_j)·k_j with dS = P·(dP − D), P recomputed from q, k and the
// row statistics of the pre-pass. q and dO of the row, and dq, live in registers (D4 vec4s:
// head_dim rounded up to a multiple of 4, over 4); logits are summed exactly as qk() does.
#define USE_q
#define USE_k
#define USE_v
#define USE_stats
#define USE_dout
#include "backward_common.wgsl"
@group(0) @binding(11) var<storage, read_write> dq: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = item(gid, nwg);
    if (r >= P.items) {
        return;
    }
    let i = r % P.seq_q;
    let h = (r / P.seq_q) % P.q_heads;
    let b = r / (P.seq_q * P.q_heads);
    let g = h / P.group;
    let at = q_at(b, h, i);
    let n4 = (P.head_dim + 3u) / 4u;
    var qr: array<vec4<f32>, D4>;
    var dor: array<vec4<f32>, D4>;
    var acc: array<vec4<f32>, D4>;
    for (var c = 0u; c < n4; c++) {
        qr[c] = ld4_q(at, c * 4u);
        dor[c] = ld4_do(at, c * 4u);
        acc[c] = vec4<f32>(0.0);
    }
    let st = stats[r];
    let range = visible_range(b, i);
    if (st.x > MASKED_CUT) {
        for (var j = range.x; j < range.y; j++) {
            let ka = k_at(b, g, j);
            var sx = vec4<f32>(0.0);
            for (var c = 0u; c < n4; c++) {
                sx += qr[c] * ld4_k(ka, c * 4u);
            }
            let x = fin(sx) * P.scale;
            let p = prob(modify(x, b, h, i, j), st);
            if (p == 0.0) {
                continue;
            }
            var sp = vec4<f32>(0.0);
            for (var c = 0u; c < n4; c++) {
                sp += dor[c] * ld4_v(ka, c * 4u);
            }
            let ds = p * ds_over_p(fin(sp), st) * cap_grad(x);
            for (var c = 0u; c < n4; c++) {
                acc[c] += ds * ld4_k(ka, c * 4u);
            }
        }
    }
    for (var c = 0u; c < n4; c++) {
        for (var t = 0u; t < 4u; t++) {
            if (c * 4u + t < P.head_dim) {
                dq[at + c * 4u + t] = acc[c][t] * P.scale;
            }
        }
    }
}
