//! # wgattn
//!
//! Scaled dot-product attention, `softmax(Q·Kᵀ·scale + mask)·V`, on any GPU through wgpu
//! compute shaders written in WGSL, with an f64 CPU reference that every GPU result is tested
//! against.
//!
//! ```no_run
//! use wgattn::{AttentionSpec, CausalAlign, Context};
//! let ctx = Context::new()?;
//! let spec = AttentionSpec::new(1, 8, 2, 128, 128, 64).causal(CausalAlign::BottomRight);
//! let (q, k, v) = (vec![0.1f32; spec.q_len()], vec![0.2; spec.kv_len()], vec![0.3; spec.kv_len()]);
//! let gpu = ctx.attention(&spec, &q, &k, &v)?;
//! let cpu = wgattn::reference::attention(&spec, &q, &k, &v)?;
//! assert!(wgattn::ErrorStats::compare(&gpu.out, &cpu.out).within(1e-5));
//! # Ok::<(), wgattn::Error>(())
//! ```
//!
//! The crate is layered, each layer naming only those before it (a test keeps it so):
//! `spec` (shapes, options, sizes, errors) → `shader` (templates and their variants) →
//! [`planner`] (every decision, from plain-data [`Caps`]) → `gpu` (the device runtime) →
//! `kernels` (launchers) → `plan` ([`Plan`], [`BackwardPlan`]) → `context` ([`Context`]) →
//! the tools ([`layer`], [`backward`], [`bench`](mod@bench), [`tune`], [`validation`], `io`,
//! [`record`], [`reference`](mod@reference), [`testdata`]). The CPU
//! [`reference`](mod@reference) names only the spec.
#![warn(missing_docs)]

// The core (its layer order is written, and checked, in `layers`).
mod context;
mod error;
mod gpu;
mod kernels;
mod plan;
pub mod planner;
mod shader;
mod spec;
// The tools.
pub mod backward;
pub mod bench;
#[cfg(feature = "safetensors")]
pub mod io;
pub mod layer;
pub mod record;
pub mod reference;
pub mod testdata;
pub mod tune;
pub mod validation;

#[cfg(test)]
mod layers;

pub use context::Context;
pub use error::{Error, Result, SpecProblem};
pub use gpu::{AdapterSummary, ContextOptions, TuneCacheSource};
#[cfg(not(target_arch = "wasm32"))]
pub use gpu::{adapter_summaries, adapters};
pub use plan::{BackwardBuffers, BackwardPlan, BackwardSizes, BufferSizes, Buffers, Plan};
pub use planner::{BackwardMode, Caps, Tuning, tiles};
pub use spec::{
    Alibi, AttentionSpec, Broadcast, CausalAlign, DType, DeviceLimits, ErrorStats, Grads, Inputs,
    Kernel, Layout, MASKED_LOGIT, MAX_HEAD_DIM, Measure, Output, Sizes, Strides, Strides64, Tensor,
    TensorVerdict, Verdict, Window, standard_alibi_slopes,
};

/// WGSL templates and their specialisations: [`ShaderVariant`](shaders::ShaderVariant), the
/// template step's [`Rendered`](shaders::Rendered) source maps, and the catalog of every
/// variant the crate can generate ([`all_variants`](shaders::all_variants)).
pub mod shaders {
    pub use crate::planner::all_variants;
    pub use crate::shader::*;
}

/// Every Rust block of the README, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
