// Backward, dbias: one invocation per element (bb, hb, i, j) of the bias's broadcast shape
// [db_nb, db_nh, Sq, Sk]; sums dS = P·(dP − D) over the batch entries and query heads that
// the element is broadcast to (all of them along a dimension of size 1). No atomics.
#flag VEC4 F16 PACKED BIAS MASK SOFTCAP ALIBI
#define USE_q
#define USE_k
#define USE_v
#define USE_stats
#define USE_dout
#include "backward/backward.inc.wgsl"
@group(0) @binding(B_DBIAS) var<storage, read_write> dbias: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = item(gid, nwg);
    if (e >= P.items) {
        return;
    }
    let j = e % P.seq_k;
    let i = (e / P.seq_k) % P.seq_q;
    let hb = (e / (P.seq_k * P.seq_q)) % P.db_nh;
    let bb = e / (P.seq_k * P.seq_q * P.db_nh);
    let per_batch = P.db_nb == P.batch && P.db_nb > 1u;
    let per_head = P.db_nh == P.q_heads && P.db_nh > 1u;
    let b0 = select(0u, bb, per_batch);
    let b1 = select(P.batch, bb + 1u, per_batch);
    let h0 = select(0u, hb, per_head);
    let h1 = select(P.q_heads, hb + 1u, per_head);
    var acc = 0.0;
    for (var b = b0; b < b1; b++) {
        let vis = visible_range(b, i);
        if (j < vis.x || j >= vis.y) {
            continue;
        }
        for (var h = h0; h < h1; h++) {
            let g = h / P.group;
            let row = (b * P.q_heads + h) * P.seq_q + i;
            let qa = q_at(b, h, i);
            let ka = k_at(b, g, j);
            let st = stats[row];
            let p = prob(modify2(qk(qa, ka), b, h, i, j), st);
            if (p == 0.0) {
                continue;
            }
            let dp = dov(qa, ka);
            acc += p * ds_over_p(dp, st);
        }
    }
    dbias[e] = acc;
}
