// Shared by all kernels: the per-dispatch parameters and the masked-logit sentinel.
// Specialised by wgattn's template step (src/shaders.rs): constants are prepended, and
// #if / #else / #endif / #for / #define / #include lines are resolved before compilation.
//
// Bindings, the same in every kernel, are named by constants the template step prepends from
// the Rust table (src/kernels/bindings.rs): B_PARAMS, B_Q, B_K, B_V, B_AUX (kv_lens, then
// ALiBi slopes as f32 bits), B_OUT, B_LSE, B_BIAS, B_MASK, B_SCRATCH (scores / partial
// outputs), B_SCRATCH2 (weights / partial lse). Never write a binding number here.

struct Params {
    batch: u32, q_heads: u32, kv_heads: u32, group: u32,
    seq_q: u32, seq_k: u32, head_dim: u32, scale: f32,
    // element strides of q/out (batch, head, row) and the start of q's bound window
    q_sb: u32, q_sh: u32, q_ss: u32, q_shift: u32,
    // element strides of k/v and the start of k's bound window
    k_sb: u32, k_sh: u32, k_ss: u32, k_shift: u32,
    v_shift: u32, o_shift: u32, lse_shift: u32, w_shift: u32,
    // causal: 0 = none, 1 = j <= i + causal_off; has_kv_lens: 0/1; s_stride: score row stride
    causal: u32, causal_off: i32, has_kv_lens: u32, s_stride: u32,
    // the chunk of work: (batch*head) rows bh0..bh0+nbh, query rows i0..i0+nq
    bh0: u32, nbh: u32, i0: u32, nq: u32,
    // flash / split-KV: number of key splits and keys per split
    neg_inf: f32, n_splits: u32, split_len: u32, alibi_at: u32,
    // sliding window around the diagonal i + align_off (-1: unbounded); soft-cap
    align_off: i32, win_left: i32, win_right: i32, softcap: f32,
    // bias / mask (bytes) strides per batch and head (0 when broadcast) and window starts
    bias_sb: u32, bias_sh: u32, bias_shift: u32, mask_sb: u32,
    mask_sh: u32, mask_shift: u32,
    // first workgroup along x of this dispatch (three-pass QKᵀ column blocks)
    x0: u32, _pad1: u32,
}

// The masking rule: a logit (scale·q·k after soft-cap, ALiBi and bias, natural units) at or
// below MASKED_CUT is masked, exactly like -inf. MASKED_CUT mirrors wgattn::MASKED_LOGIT
// (src/spec.rs; a unit test checks they agree) and the CPU reference applies the same rule.
// Masked logits hold MASKED. Kernels that keep scores in base 2 compare with MASKED_CUT2.
const MASKED: f32 = -3.0e38;
const MASKED_CUT: f32 = -1.0e38;
const MASKED_CUT2: f32 = MASKED_CUT * 1.4426950408889634;
