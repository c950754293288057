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
//!
//! The pieces live in their layers: the passes' compile keys and grids in the planner, their
//! launcher in the kernels, [`BackwardPlan`] with the plans, the host path
//! ([`Context::attention_backward`](crate::Context::attention_backward)) in the context; this
//! module gathers them and times the pass ([`bench_backward`]).

// Blocking paths (readback waits on the device): native targets only.
#[cfg(not(target_arch = "wasm32"))]
mod bench;

pub use crate::plan::{BackwardBuffers, BackwardPlan, BackwardSizes};
pub use crate::planner::BackwardMode;
pub use crate::spec::Grads;
#[cfg(not(target_arch = "wasm32"))]
pub use bench::{BackwardTiming, bench_backward};
