//! The backward pass: gradients of attention with respect to q, k, v and the bias.
//!
//! FlashAttention-2's scheme, in three kinds of dispatch and with no `Sq×Sk` buffer: a
//! row-parallel pre-pass computes each query row's statistics — `D_i = Σ_j P_ij·dP_ij`
//! (= rowsum(dO_i ∘ O_i)) and the softmax normaliser (see [`BackwardMode`]: recomputed, the
//! default, or the forward's lse); a key-parallel kernel recomputes P from q, k and those
//! statistics and accumulates dK and dV of its key rows in registers (summed over the query
//! heads of a GQA group, read in place; query rows the causal / window masks hide from the
//! key are never visited); a query-parallel kernel recomputes P the same way and accumulates
//! dQ — no atomics, every output element has one writer. dbias (when a dbias buffer is given)
//! has its own element-parallel pass that sums dS over the broadcast dimensions. Extra
//! memory: `4·B·Hq·Sq` f32 of row statistics.

// Blocking paths (readback waits on the device): native targets only.
#[cfg(not(target_arch = "wasm32"))]
mod bench;
#[cfg(not(target_arch = "wasm32"))]
mod host;
mod kernels;
mod plan;

#[cfg(not(target_arch = "wasm32"))]
pub use bench::{BackwardTiming, bench_backward};
pub(crate) use kernels::variants;
pub use plan::{BackwardBuffers, BackwardPlan, BackwardSizes};

/// How the backward pass gets each row's softmax normaliser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackwardMode {
    /// The pre-pass recomputes each row's largest logit m and l = Σ exp(s − m), and
    /// D = Σ P·dP, in one online-softmax sweep over the row's keys, with logits computed
    /// bit-identically to the other passes. P = exp(s − m − log l) is then consistent to the
    /// last bit (Σ P = 1, Σ dS = 0 in f32), which keeps the gradients within 1e-4 of the f64
    /// reference when logits are ~10³. Costs one more QKᵀ and dO·Vᵀ sweep (about 9 instead of
    /// 7 matrix products, +30%). The forward's out and lse are checked but not read.
    #[default]
    Recompute,
    /// FlashAttention-2's scheme: P = exp(s − lse) with the forward's lse and
    /// D = rowsum(dO ∘ O) from the forward's out. Cheaper, but P inherits the f32 rounding of
    /// both the forward's and the backward's logits: with logits of order 10³ the gradients'
    /// relative error grows to ~1e-3..1e-2 (near-one-hot rows, where dS nearly cancels).
    ForwardLse,
}

/// Gradients of one attention call. All are f32, whatever the storage dtype.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grads {
    /// dL/dq, same shape and layout as q.
    pub dq: Vec<f32>,
    /// dL/dk, same shape and layout as k.
    pub dk: Vec<f32>,
    /// dL/dv, same shape and layout as v.
    pub dv: Vec<f32>,
    /// dL/dbias in the bias's broadcast shape (broadcast dimensions summed); present when the
    /// spec declares a bias.
    pub dbias: Option<Vec<f32>>,
}
