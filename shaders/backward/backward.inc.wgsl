// Shared by the backward kernels (backward/*.wgsl): their parameters, the forward's inputs
// and the helpers that recompute one probability. Reuses the forward's element storage
// (common/elem.inc.wgsl: q, k, v as f32, f16 or packed f16), structural masks
// (common/visible.inc.wgsl) and score modifiers (common/score.inc.wgsl), whose `P` fields keep
// the forward's names.
//
// Bindings (named by the Rust table, src/shader/binding.rs): B_PARAMS, B_Q, B_K, B_V,
// B_AUX (kv_lens, then ALiBi slopes as f32 bits), B_OUT and B_LSE (the forward's outputs),
// B_SCRATCH the row statistics per query row (r = (b·Hq + h)·Sq + i), written by the
// pre-pass: (m, log l, ref, D') with P = exp(s − m − log l) and D = ref + D' (D = Σ_j P·dP =
// rowsum(dO ∘ O)), so that dS = P·((dP − ref) − D'); B_BIAS, B_MASK, B_DOUT, B_DQ, B_DK,
// B_DV, B_DBIAS. Gradients are f32. Work items are numbered
// x + y·(64·workgroups in x).
#flag VEC4 PACKED USE_q USE_k USE_v USE_stats USE_dout

struct Params {
#include "common/spec_params.inc.wgsl"
    // dbias: batch entries and heads of its broadcast shape; work items of this dispatch
    db_nb: u32, db_nh: u32, items: u32,
    // always 0 (see opaque())
    zero: u32,
}

@group(0) @binding(B_PARAMS) var<uniform> P: Params;
@group(0) @binding(B_AUX) var<storage, read> aux: array<u32>;

#include "common/masking.inc.wgsl"

#include "common/elem.inc.wgsl"
#include "common/visible.inc.wgsl"
#include "common/score.inc.wgsl"

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

// Logits are computed in two floats: x = hi + lo, with lo the rounding error of the f32 sum
// (the products' errors by Dekker's product, the sums' by two-sum). With logits of order 10³ the
// f32 sum alone is off by ~10⁻⁴ and so is P = exp(s − m − log l), relatively, for every key but the
// largest; the gradients inherit that. With lo carried into the exponent (m = m_hi + m_lo
// too), P is exact to f32 rounding whatever the logits' size. Every pass sums the chunks in
// the same order (partial sums per vec4 lane, acc = dot_add(acc, q, k), then logit(acc)), so
// every pass recomputes bit-identical logits.
struct Dot {
    hi: vec4<f32>,
    lo: vec4<f32>,
}
// x itself, through a value the compiler cannot see (P.zero, always 0): the error terms
// below are algebraically zero, and a compiler free to re-associate floats (SPIR-V without
// NoContraction, Mesa's NIR) folds them to zero unless their intermediates are opaque.
fn opaque(x: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(x) | P.zero);
}
fn opaque4(x: vec4<f32>) -> vec4<f32> {
    return bitcast<vec4<f32>>(bitcast<vec4<u32>>(x) | vec4<u32>(P.zero));
}
fn dot0() -> Dot {
    return Dot(vec4<f32>(0.0), vec4<f32>(0.0));
}
// The upper 12 significant bits of x (masked, so no compiler can fold it): x = hi + (x − hi)
// exactly, and the product of two such halves is exact in f32 (Dekker's split without fma,
// which some implementations evaluate unfused).
fn upper(x: vec4<f32>) -> vec4<f32> {
    return bitcast<vec4<f32>>(bitcast<vec4<u32>>(x) & vec4<u32>(0xfffff000u));
}
// a·b − p exactly, for p = a·b rounded to f32 (Dekker's product).
fn prod_err(a: vec4<f32>, b: vec4<f32>, p: vec4<f32>) -> vec4<f32> {
    let ah = upper(a);
    let al = a - ah;
    let bh = upper(b);
    let bl = b - bh;
    return (((ah * bh - p) + ah * bl) + al * bh) + al * bl;
}
// acc + a·b, lane by lane, keeping the rounding errors (of the product and of the sum) in lo.
fn dot_add(acc: Dot, a: vec4<f32>, b: vec4<f32>) -> Dot {
    let p = opaque4(a * b);
    let pe = prod_err(a, b, p);
    let s = opaque4(acc.hi + p);
    let z = opaque4(s - acc.hi);
    let e = (acc.hi - (s - z)) + (p - z);
    return Dot(s, acc.lo + (e + pe));
}
// (a + b, its rounding error)
fn two_sum(a: f32, b: f32) -> vec2<f32> {
    let s = opaque(a + b);
    let z = opaque(s - a);
    return vec2<f32>(s, (a - (s - z)) + (b - z));
}
// The scaled logit (hi, lo) of a finished dot product: the lanes' sum times P.scale.
fn logit(acc: Dot) -> vec2<f32> {
    let a = two_sum(acc.hi.x, acc.hi.y);
    let b = two_sum(acc.hi.z, acc.hi.w);
    let c = two_sum(a.x, b.x);
    let lo = (a.y + b.y + c.y) + ((acc.lo.x + acc.lo.y) + (acc.lo.z + acc.lo.w));
    let hi = opaque(c.x * P.scale);
    let e = prod_err(vec4<f32>(c.x), vec4<f32>(P.scale), vec4<f32>(hi)).x;
    return vec2<f32>(hi, e + lo * P.scale);
}
// The modified logit of x = (hi, lo), modifiers in modify()'s order on hi (so hi is
// bit-identical to modify(hi)): lo follows the soft-cap through its slope and takes the
// rounding errors of the ALiBi and bias additions (two-sum). Masked logits have lo = 0.
fn modify2(x: vec2<f32>, b: u32, h: u32, i: u32, j: u32) -> vec2<f32> {
    var hi = x.x;
    var lo = x.y;
#if SOFTCAP
    lo *= cap_grad(hi);
    hi = softcap(hi, P.softcap);
#endif
#if ALIBI
    let ta = two_sum(hi, -alibi_term(h, i, j));
    hi = ta.x;
    lo += ta.y;
#endif
#if BIAS
    let tb = two_sum(hi, bias_term(b, h, i, j));
    hi = tb.x;
    lo += tb.y;
#endif
#if MASK
    if (mask_hides(b, h, i, j)) {
        hi = MASKED;
    }
#endif
    return vec2<f32>(hi, select(0.0, lo, hi > MASKED_CUT));
}

// exp(s − m − log l): the probability of a logit s = (hi, lo) (after the modifiers) in a row
// with statistics st = (m_hi, m_lo + log l, ..); 0 for masked logits and for rows with no
// visible key (m ≤ MASKED_CUT). s_hi − m_hi is exact when the two are close, which is when
// P matters.

// dS / P = dP − D for the row statistics st, as (dP − ref) − D': with ref the dP of the row's
// largest logit (recomputed bit-identically), the near-one-hot rows of large logits lose
// nothing to the cancellation of dP − D.
fn ds_over_p(dp: f32, st: vec4<f32>) -> f32 {
    return (dp - st.z) - st.w;
}
fn prob(s: vec2<f32>, st: vec4<f32>) -> f32 {
    if (s.x <= MASKED_CUT || st.x <= MASKED_CUT) {
        return 0.0;
    }
    return exp(((s.x - st.x) + s.y) - st.y);
}

// The scaled logit q_row · k_row · scale as (hi, lo), summed as described above whether the
// rows come from registers or memory.
#if USE_q
fn qk(qa: u32, ka: u32) -> vec2<f32> {
    var acc = dot0();
    for (var c = 0u; c < P.head_dim; c += 4u) {
        acc = dot_add(acc, ld4_q(qa, c), ld4_k(ka, c));
    }
    return logit(acc);
}
#endif
#if USE_dout
#if USE_v
// dP = dO_row · v_row, summed like the other dot products (acc += dO·v, plain f32).
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
