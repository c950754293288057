//! The backward pass: gradients of attention with respect to q, k, v and the bias.
//!
//! FlashAttention-2's scheme, in three kinds of dispatch and with no `Sq×Sk` buffer: a
//! pre-pass computes `D_i = rowsum(dO_i ∘ O_i)` per query row; a key-parallel kernel
//! recomputes `P = exp(s − lse)` from q, k and the forward's lse and accumulates dK and dV of
//! its key rows (summed over the query heads of a GQA group, read in place); a query-parallel
//! kernel recomputes P the same way and accumulates dQ — no atomics, every output element has
//! one writer. dbias (when a bias buffer is given) has its own element-parallel pass that sums
//! dS over the broadcast dimensions. Extra memory: the `B·Hq·Sq` f32 `D` buffer.

mod host;
mod kernels;
mod plan;

pub use plan::{BackwardBuffers, BackwardPlan, BackwardSizes};
pub(crate) use kernels::variants;

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
