// Pass 2 of 3: numerically stable softmax of each score row, in place, and its log-sum-exp.
// One workgroup per row: row max, then exp(s - max) and their sum, then normalise.
// A row with no visible key becomes all zeros with lse = -inf (never NaN).
// With WEIGHTS the probabilities are also written to the caller's [B, Hq, Sq, Sk] buffer.
#param WG
#flag WEIGHTS
#include "common/params.inc.wgsl"

@group(0) @binding(B_PARAMS) var<uniform> P: Params;
@group(0) @binding(B_SCRATCH) var<storage, read_write> s: array<vec4<f32>>;
@group(0) @binding(B_LSE) var<storage, read_write> lse: array<f32>;
#if WEIGHTS
@group(0) @binding(B_SCRATCH2) var<storage, read_write> w: array<f32>;
#endif

var<workgroup> red: array<f32, WG>;

fn reduce_max(li: u32, x: f32) -> f32 {
    red[li] = x;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half = half / 2u) {
        if (li < half) {
            red[li] = max(red[li], red[li + half]);
        }
        workgroupBarrier();
    }
    let m = workgroupUniformLoad(&red[0]);
    workgroupBarrier();
    return m;
}

fn reduce_sum(li: u32, x: f32) -> f32 {
    red[li] = x;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half = half / 2u) {
        if (li < half) {
            red[li] = red[li] + red[li + half];
        }
        workgroupBarrier();
    }
    let t = workgroupUniformLoad(&red[0]);
    workgroupBarrier();
    return t;
}

@compute @workgroup_size(WG, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= P.nbh * P.nq) {
        return;
    }
    let n4 = P.s_stride / 4u;
    let base = row * n4;
    let bh = P.bh0 + row / P.nq;
    let g_row = bh * P.seq_q + P.i0 + row % P.nq;

    var m = MASKED;
    for (var c = li; c < n4; c += WG) {
        let x = s[base + c];
        m = max(m, max(max(x.x, x.y), max(x.z, x.w)));
    }
    m = reduce_max(li, m);
    if (m <= MASKED_CUT) {
        for (var c = li; c < n4; c += WG) {
            s[base + c] = vec4<f32>(0.0);
#if WEIGHTS
            for (var t = 0u; t < 4u; t++) {
                let j = c * 4u + t;
                if (j < P.seq_k) {
                    w[g_row * P.seq_k + j - P.w_shift] = 0.0;
                }
            }
#endif
        }
        if (li == 0u) {
            lse[g_row - P.lse_shift] = P.neg_inf;
        }
        return;
    }
    var sum = 0.0;
    for (var c = li; c < n4; c += WG) {
        let e = exp(s[base + c] - vec4<f32>(m));
        s[base + c] = e;
        sum += (e.x + e.y) + (e.z + e.w);
    }
    sum = reduce_sum(li, sum);
    let inv = 1.0 / sum;
    for (var c = li; c < n4; c += WG) {
        let p = s[base + c] * inv;
        s[base + c] = p;
#if WEIGHTS
        for (var t = 0u; t < 4u; t++) {
            let j = c * 4u + t;
            if (j < P.seq_k) {
                w[g_row * P.seq_k + j - P.w_shift] = p[t];
            }
        }
#endif
    }
    if (li == 0u) {
        lse[g_row - P.lse_shift] = m + log(sum);
    }
}
