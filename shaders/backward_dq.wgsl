// Backward, query-parallel: dq of one query row per invocation, over its visible keys:
// dq = scale·Σ_j dS_j·cap'(x_j)·k_j with dS = P·(dP − D), P recomputed from q, k and the
// row statistics of the pre-pass. D4: head_dim rounded up to a multiple of 4, over 4 (the
// accumulator's length).
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
    var acc: array<vec4<f32>, D4>;
    for (var c = 0u; c < n4; c++) {
        acc[c] = vec4<f32>(0.0);
    }
    let st = stats[r];
    let range = visible_range(b, i);
    if (st.x > MASKED_CUT) {
        for (var j = range.x; j < range.y; j++) {
            let ka = k_at(b, g, j);
            let x = qk(at, ka);
            let p = prob(modify(x, b, h, i, j), st);
            if (p == 0.0) {
                continue;
            }
            let ds = p * ds_over_p(dov(at, ka), st) * cap_grad(x);
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
