// Shared by all kernels: the per-dispatch parameters and the mask rule.
// Specialised by wgattn's template step (src/shaders.rs): constants are prepended, and
// `#if NAME` / `#else` / `#endif` / `#include "file"` lines are resolved before compilation.

struct Params {
    batch: u32, q_heads: u32, kv_heads: u32, group: u32,
    seq_q: u32, seq_k: u32, head_dim: u32, scale: f32,
    // element strides of q/out (batch, head, row) and the shift of the bound window
    q_sb: u32, q_sh: u32, q_ss: u32, q_shift: u32,
    // element strides of k/v and the shift of k's bound window
    k_sb: u32, k_sh: u32, k_ss: u32, k_shift: u32,
    v_shift: u32, o_shift: u32, lse_shift: u32, w_shift: u32,
    // causal: 0 = none, 1 = j <= i + causal_off; has_kv_lens: 0/1; s_stride: score row stride
    causal: u32, causal_off: i32, has_kv_lens: u32, s_stride: u32,
    // the chunk of work: (batch*head) rows bh0..bh0+nbh, query rows i0..i0+nq
    bh0: u32, nbh: u32, i0: u32, nq: u32,
    // flash / split-KV: number of key splits and keys per split
    neg_inf: f32, n_splits: u32, split_len: u32, _pad0: u32,
}

// Masked logits hold MASKED; anything at or below MASKED_CUT counts as masked.
const MASKED: f32 = -3.0e38;
const MASKED_CUT: f32 = -1.0e38;
