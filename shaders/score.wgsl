// Score modifiers, applied to the scaled logit s of (b, h, i, j) in this order: soft-cap
// (SOFTCAP), ALiBi (ALIBI), additive bias (BIAS), boolean mask (MASK). Declares the bias
// (B_BIAS, f32) and mask (B_MASK, bytes packed 4 per u32) bindings. Needs `P` and `aux`.
#if BIAS
@group(0) @binding(B_BIAS) var<storage, read> bias: array<f32>;
#endif
#if MASK
@group(0) @binding(B_MASK) var<storage, read> mask: array<u32>;
#endif

fn modify(s: f32, b: u32, h: u32, i: u32, j: u32) -> f32 {
    var x = s;
#if SOFTCAP
    // tanh saturates long before |x| = 20 in f32; clamping avoids inf/inf inside tanh.
    x = P.softcap * tanh(clamp(x / P.softcap, -20.0, 20.0));
#endif
#if ALIBI
    x -= bitcast<f32>(aux[P.alibi_at + h]) * abs(f32(i32(i) + P.align_off - i32(j)));
#endif
#if BIAS
    x += bias[b * P.bias_sb + h * P.bias_sh + i * P.seq_k + j - P.bias_shift];
#endif
#if MASK
    let e = b * P.mask_sb + h * P.mask_sh + i * P.seq_k + j - P.mask_shift;
    if (((mask[e / 4u] >> ((e % 4u) * 8u)) & 0xffu) == 0u) {
        x = MASKED;
    }
#endif
    return x;
}
