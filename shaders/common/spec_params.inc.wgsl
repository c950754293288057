// The spec's fields of every kernel's `struct Params`, forward and backward: included inside
// the struct (`struct Params {` … this file … the kernel family's own fields `}`). Mirrors
// `SpecParams` in src/kernels/params.rs field by field (a unit test checks both Params
// against naga's reflection).
    batch: u32, q_heads: u32, kv_heads: u32, group: u32,
    seq_q: u32, seq_k: u32, head_dim: u32, scale: f32,
    // element strides (batch, head, row) of q / out (and d_out, dq) and of k / v (dk, dv)
    q_sb: u32, q_sh: u32, q_ss: u32, k_sb: u32,
    k_sh: u32, k_ss: u32,
    // causal: 0 = none, 1 = j <= i + causal_off; has_kv_lens: 0/1; alibi_at: where the ALiBi
    // slopes start in aux (after kv_lens)
    causal: u32, causal_off: i32,
    has_kv_lens: u32, alibi_at: u32,
    // sliding window around the diagonal i + align_off (-1: unbounded); soft-cap
    align_off: i32, win_left: i32, win_right: i32, softcap: f32,
    // bias / mask (bytes) strides per batch and head (0 when broadcast) and the starts of
    // their bound windows
    bias_sb: u32, bias_sh: u32, bias_shift: u32, mask_sb: u32,
    mask_sh: u32, mask_shift: u32,
