// Shared by the backward kernels (backward_*.wgsl): their parameters, the forward's inputs
// and the helpers that recompute one probability. Reuses the forward's element storage
// (elem.wgsl: q, k, v as f32, f16 or packed f16), structural masks (visible.wgsl) and score
// modifiers (score.wgsl), whose `P` fields keep the forward's names.
//
// Bindings (named by the Rust table, src/kernels/bindings.rs): B_PARAMS, B_Q, B_K, B_V,
// B_AUX (kv_lens, then ALiBi slopes as f32 bits), B_OUT and B_LSE (the forward's outputs),
// B_SCRATCH the row statistics per query row (r = (b·Hq + h)·Sq + i), written by the
// pre-pass: (m, log l, ref, D') with P = exp(s − m − log l) and D = ref + D' (D = Σ_j P·dP =
// rowsum(dO ∘ O)), so that dS = P·((dP − ref) − D'); B_BIAS, B_MASK, B_DOUT, B_DQ, B_DK,
// B_DV, B_DBIAS. Gradients are f32. Work items are numbered
// x + y·(64·workgroups in x).

struct Params {
    batch: u32, q_heads: u32, kv_heads: u32, group: u32,
    seq_q: u32, seq_k: u32, head_dim: u32, scale: f32,
    // element strides (batch, head, row) of q / out / d_out / dq and of k / v / dk / dv
    q_sb: u32, q_sh: u32, q_ss: u32, k_sb: u32,
    k_sh: u32, k_ss: u32, causal: u32, causal_off: i32,
    has_kv_lens: u32, alibi_at: u32, align_off: i32, win_left: i32,
    win_right: i32, softcap: f32, bias_sb: u32, bias_sh: u32,
    bias_shift: u32, mask_sb: u32, mask_sh: u32, mask_shift: u32,
    // dbias: batch entries and heads of its broadcast shape; work items of this dispatch
    db_nb: u32, db_nh: u32, items: u32, _pad: u32,
}

@group(0) @binding(B_PARAMS) var<uniform> P: Params;
@group(0) @binding(B_AUX) var<storage, read> aux: array<u32>;

const MASKED: f32 = -3.0e38;
const MASKED_CUT: f32 = -1.0e38;

#include "elem.wgsl"
#include "visible.wgsl"
#include "score.wgsl"

#if USE_stats
@group(0) @binding(B_SCRATCH) var<storage, read> stats: array<vec4<f32>>;
#endif
#if USE_dout
#if VEC4
@group(0) @binding(B_DOUT) var<storage, read> dout: Store4;

fn ld4_do(at: u32, d: u32) -> vec4<f32> {
#if PACKED
    let w = dout[(at + d) / 4u];
    let x = vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
#else
    let x = vec4<f32>(dout[(at + d) / 4u]);
#endif
    return select(vec4<f32>(0.0), x, d < P.head_dim);
}
#else
@group(0) @binding(B_DOUT) var<storage, read> dout: Store;

fn ld_do(i: u32) -> f32 {
#if PACKED
    return unpack2x16float(dout[i >> 1u])[i & 1u];
#else
    return f32(dout[i]);
#endif
}
fn ld4_do(at: u32, d: u32) -> vec4<f32> {
    let hd = P.head_dim;
    return vec4<f32>(select(0.0, ld_do(at + d), d < hd), select(0.0, ld_do(at + d + 1u), d + 1u < hd),
                     select(0.0, ld_do(at + d + 2u), d + 2u < hd), select(0.0, ld_do(at + d + 3u), d + 3u < hd));
}
#endif
#endif

// The sum of a dot product's four partial sums, in the one order every kernel uses.
fn fin(acc: vec4<f32>) -> f32 {
    return (acc.x + acc.y) + (acc.z + acc.w);
}

// The work item of this invocation.
fn item(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

// Element offset of row i of head h of batch entry b in q / out / d_out / dq.
fn q_at(b: u32, h: u32, i: u32) -> u32 {
    return b * P.q_sb + h * P.q_sh + i * P.q_ss;
}
// Element offset of row j of kv head g of batch entry b in k / v / dk / dv.
fn k_at(b: u32, g: u32, j: u32) -> u32 {
    return b * P.k_sb + g * P.k_sh + j * P.k_ss;
}

// exp(s − m − log l): the probability of a logit s (after the modifiers) in a row with
// statistics st = (m, log l); 0 for masked logits and for rows with no visible key
// (m ≤ MASKED_CUT). With m the row's largest logit, computed exactly as here, s − m is exact.

// dS / P = dP − D for the row statistics st, as (dP − ref) − D': with ref the dP of the row's
// largest logit (recomputed bit-identically), the near-one-hot rows of large logits lose
// nothing to the cancellation of dP − D.
fn ds_over_p(dp: f32, st: vec4<f32>) -> f32 {
    return (dp - st.z) - st.w;
}
fn prob(s: f32, st: vec4<f32>) -> f32 {
    if (s <= MASKED_CUT || st.x <= MASKED_CUT) {
        return 0.0;
    }
    return exp((s - st.x) - st.y);
}

// The scaled dot product q_row · k_row · scale. Every kernel sums it the same way — four
// partial sums over 4-element chunks in order, acc += q·k, then fin(acc) · scale — whether
// the rows come from registers or memory, so every pass recomputes bit-identical logits.
#if USE_q
fn qk(qa: u32, ka: u32) -> f32 {
    var acc = vec4<f32>(0.0);
    for (var c = 0u; c < P.head_dim; c += 4u) {
        acc += ld4_q(qa, c) * ld4_k(ka, c);
    }
    return fin(acc) * P.scale;
}
#endif
#if USE_dout
#if USE_v
// dP = dO_row · v_row, summed like qk (acc += dO·v).
fn dov(qa: u32, ka: u32) -> f32 {
    var acc = vec4<f32>(0.0);
    for (var c = 0u; c < P.head_dim; c += 4u) {
        acc += ld4_do(qa, c) * ld4_v(ka, c);
    }
    return fin(acc);
}
#endif
#endif

// d(soft-cap)/dx at the scaled logit x: 1 − tanh²(x / cap) (1 without soft-capping).
fn cap_grad(x: f32) -> f32 {
#if SOFTCAP
    let t = tanh(clamp(x / P.softcap, -20.0, 20.0));
    return 1.0 - t * t;
#else
    return 1.0;
#endif
}
