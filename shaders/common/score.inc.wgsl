// Score modifiers, applied to the scaled logit s of (b, h, i, j) in this order: soft-cap
// (SOFTCAP), ALiBi (ALIBI), additive bias (BIAS), boolean mask (MASK). Declares the bias
// (B_BIAS, f32) and mask (B_MASK, bytes packed 4 per u32) bindings. Needs `P` and `aux`.
#flag BIAS MASK SOFTCAP ALIBI
#if BIAS
@group(0) @binding(B_BIAS) var<storage, read> bias: array<f32>;
#endif
#if MASK
@group(0) @binding(B_MASK) var<storage, read> mask: array<u32>;
#endif

// cap·tanh(x / cap), accurate for every cap. Near zero (|x / cap| < 0.5) tanh(y)/y is its
// Taylor series in y² (relative error < 1e-9 there) multiplied by x itself, so a large cap
// returns x to f32 precision (tanh of a small argument, computed as (e^2y − 1)/(e^2y + 1),
// would lose most digits); beyond, 1 − 2/(e^2|y| + 1) has no cancellation and saturates to
// 1 without inf/inf.
fn softcap(x: f32, cap: f32) -> f32 {
    let y = x / cap;
    let a = abs(y);
    if (a < 0.5) {
        let t = y * y;
        let p = 1.0 + t * (-1.0 / 3.0 + t * (2.0 / 15.0 + t * (-17.0 / 315.0 + t * (62.0 / 2835.0
            + t * (-1382.0 / 155925.0 + t * (21844.0 / 6081075.0 + t * (-929569.0 / 638512875.0
            + t * (6404582.0 / 10854718875.0))))))));
        return x * p;
    }
    return sign(y) * cap * (1.0 - 2.0 / (exp(2.0 * a) + 1.0));
}

#if ALIBI
// The ALiBi penalty of (h, i, j): slope_h · |i + align_off − j| (subtracted from the logit).
fn alibi_term(h: u32, i: u32, j: u32) -> f32 {
    return bitcast<f32>(aux[P.alibi_at + h]) * abs(f32(i32(i) + P.align_off - i32(j)));
}
#endif
#if BIAS
// The additive bias of (b, h, i, j).
fn bias_term(b: u32, h: u32, i: u32, j: u32) -> f32 {
    return bias[b * P.bias_sb + h * P.bias_sh + i * P.seq_k + j - P.bias_shift];
}
#endif
#if MASK
// Whether the boolean mask hides (b, h, i, j).
fn mask_hides(b: u32, h: u32, i: u32, j: u32) -> bool {
    let e = b * P.mask_sb + h * P.mask_sh + i * P.seq_k + j - P.mask_shift;
    return ((mask[e / 4u] >> ((e % 4u) * 8u)) & 0xffu) == 0u;
}
#endif

fn modify(s: f32, b: u32, h: u32, i: u32, j: u32) -> f32 {
    var x = s;
#if SOFTCAP
    x = softcap(x, P.softcap);
#endif
#if ALIBI
    x -= alibi_term(h, i, j);
#endif
#if BIAS
    x += bias_term(b, h, i, j);
#endif
#if MASK
    if (mask_hides(b, h, i, j)) {
        x = MASKED;
    }
#endif
    return x;
}
