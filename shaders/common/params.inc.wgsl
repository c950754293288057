// The forward kernels' per-dispatch parameters (`Params` in src/kernels/params.rs): the spec's
// fields, then the chunk of work and the kernel's own. Specialised by wgattn's template step
// (src/shader/): constants are prepended, and the directive lines are resolved before
// compilation.
//
// Bindings, the same in every kernel, are named by constants the template step prepends from
// the Rust table (src/shader/binding.rs): B_PARAMS, B_Q, B_K, B_V, B_AUX (kv_lens, then
// ALiBi slopes as f32 bits), B_OUT, B_LSE, B_BIAS, B_MASK, B_SCRATCH (scores / partial
// outputs), B_SCRATCH2 (weights / partial lse). Never write a binding number here.

struct Params {
#include "common/spec_params.inc.wgsl"
    // the start of q's, k's, v's, out's, lse's and the weights' bound windows
    q_shift: u32, k_shift: u32, v_shift: u32, o_shift: u32,
    lse_shift: u32, w_shift: u32,
    // three-pass: score row stride
    s_stride: u32,
    // the chunk of work: (batch*head) rows bh0..bh0+nbh, query rows i0..i0+nq
    bh0: u32, nbh: u32, i0: u32, nq: u32,
    // -inf; flash / split-KV: number of key splits and keys per split
    neg_inf: f32, n_splits: u32, split_len: u32,
    // first workgroup along x of this dispatch (three-pass QKᵀ column blocks)
    x0: u32, _pad1: u32,
}

#include "common/masking.inc.wgsl"
