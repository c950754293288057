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
#![warn(missing_docs)]

pub mod backward;
pub mod bench;
mod context;
mod error;
mod host;
mod inputs;
#[cfg(feature = "safetensors")]
pub mod io;
mod kernels;
pub mod layer;
mod limits;
mod output;
mod plan;
pub mod planner;
pub mod record;
pub mod reference;
pub mod shaders;
mod sizes;
mod spec;
pub mod testdata;
pub mod tiles;
pub mod tune;
pub mod validation;

pub use backward::{BackwardBuffers, BackwardMode, BackwardPlan, BackwardSizes, Grads};
pub use context::{AdapterSummary, Context, ContextOptions};
#[cfg(not(target_arch = "wasm32"))]
pub use context::{adapter_summaries, adapters};
pub use error::{Error, Result, SpecProblem};
pub use inputs::{Inputs, Tensor};
pub use limits::DeviceLimits;
pub use output::{ErrorStats, Measure, Output, TensorVerdict, Verdict};
pub use plan::{BufferSizes, Buffers, Plan};
pub use planner::Caps;
pub use sizes::{Sizes, Strides64};
pub use spec::{
    Alibi, AttentionSpec, Broadcast, CausalAlign, DType, Kernel, Layout, MASKED_LOGIT,
    MAX_HEAD_DIM, Strides, Window, standard_alibi_slopes,
};
pub use tune::{TuneCacheSource, Tuning};

/// Every Rust block of the README, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
