// Backward, query-parallel: dq of one query row per invocation, over its visible keys:
// dq = scale·Σ_j dS_j·cap'(x_j)·k_j with dS = P·(dP − D), P recomputed from q, k and the
// row statistics of the pre-pass. q and dO of the row and the dq accumulator are unrolled
// into D4 vec4 registers each (D4·4 ≥ head_dim; chunks past head_dim are zero); logits are
// summed exactly as qk() does (two floats, see backward.inc.wgsl).
#param D4
#flag VEC4 F16 PACKED BIAS MASK SOFTCAP ALIBI
#define USE_q
#define USE_k
#define USE_v
#define USE_stats
#define USE_dout
#include "backward/backward.inc.wgsl"
@group(0) @binding(B_DQ) var<storage, read_write> dq: array<f32>;

// Workgroup (x, y + z·ny): 64 consecutive query rows x·64.. of the (batch, head) pair y + z·ny,
// so that every invocation of a workgroup walks the same keys (the union of its rows'
// visible ranges, which are monotone in the row) and key loads are uniform.
@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let bh = wid.y + wid.z * nwg.y;
    if (bh >= P.batch * P.q_heads) {
        return;
    }
    let b = bh / P.q_heads;
    let h = bh % P.q_heads;
    let g = h / P.group;
    let i0 = wid.x * 64u;
    let i_last = min(i0 + 63u, P.seq_q - 1u);
    let i = min(i0 + lid, i_last);
    let live = i0 + lid < P.seq_q;
    let r = bh * P.seq_q + i;
    let at = q_at(b, h, i);
#for C in 0..D4
    let q_{C} = ld4_q(at, {C}u * 4u);
    let do_{C} = ld4_do(at, {C}u * 4u);
    var acc_{C} = vec4<f32>(0.0);
#endfor
    let st = stats[r];
    let range = visible_range(b, i);
    let keys = vec2<u32>(visible_range(b, i0).x, visible_range(b, i_last).y);
    for (var j = keys.x; j < keys.y; j++) {
        let ka = k_at(b, g, j);
#for C in 0..D4
        let k_{C} = ld4_k(ka, {C}u * 4u);
        let v_{C} = ld4_v(ka, {C}u * 4u);
#endfor
        if (j < range.x || j >= range.y || st.x <= MASKED_CUT) {
            continue;
        }
        var sx = dot0();
#for C in 0..D4
        sx = dot_add(sx, q_{C}, k_{C});
#endfor
        let x = logit(sx);
        let p = prob(modify2(x, b, h, i, j), st);
        if (p == 0.0) {
            continue;
        }
        var sp = vec4<f32>(0.0);
#for C in 0..D4
        sp += do_{C} * v_{C};
#endfor
        let ds = p * ds_over_p(fin(sp), st) * cap_grad(x.x);
#for C in 0..D4
        acc_{C} += ds * k_{C};
#endfor
    }
    if (!live) {
        return;
    }
#for C in 0..D4
    for (var t = 0u; t < 4u; t++) {
        if ({C}u * 4u + t < P.head_dim) {
            dq[at + {C}u * 4u + t] = acc_{C}[t] * P.scale;
        }
    }
#endfor
}
