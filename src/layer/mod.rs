//! Transformer layers around the attention core: a [`MultiHeadAttention`] layer with its
//! projections (a register-tiled WGSL matmul whose epilogue writes q, k and v straight into
//! the attention layout and applies rotary embedding), positional encodings
//! ([`PositionEncoding`]), a GPU [`KvCache`] for incremental decoding, weights by name from
//! safetensors files (`load_mha`, feature `safetensors`), an f64 CPU [`reference`](mod@reference) of the
//! whole layer, and the building blocks of an encoder ([`Linear`], [`LayerNorm`],
//! [`Embedding`]).
//!
//! ```no_run
//! use wgattn::layer::{LinearWeights, MhaConfig, MhaInputs, MhaWeights, MultiHeadAttention, QkvWeights};
//! let ctx = wgattn::Context::new()?;
//! let (e, h) = (64, 4);
//! let lin = |o, i| LinearWeights::new(o, i, vec![0.01; o * i], Some(vec![0.0; o]));
//! let weights = MhaWeights {
//!     qkv: QkvWeights::Separate { q: lin(e, e), k: lin(e, e), v: lin(e, e) },
//!     o: lin(e, e),
//!     positions: None,
//! };
//! let config = MhaConfig::new(e, h).residual(true);
//! let mha = MultiHeadAttention::new(&ctx, &config, &weights)?;
//! let spec = mha.attention_spec(1, 10, 10).causal(wgattn::CausalAlign::TopLeft);
//! let x = vec![0.5f32; 10 * e];
//! let out = mha.forward(&ctx, &spec, &MhaInputs::new(&x))?;
//! assert_eq!(out.out.len(), 10 * e);
//! # Ok::<(), wgattn::Error>(())
//! ```

mod blocks;
mod cache;
mod config;
mod gpu;
mod mha;
mod mha_plan;
pub mod reference;
mod weights;

pub use crate::planner::Gather;
pub use blocks::{Embedding, GatherPass, LayerNorm, Linear, LinearOptions, LinearPass, NormPass};
pub use cache::{DecodeOutput, KvCache};
pub use config::{MhaConfig, PositionEncoding, Rope, RopePairing, sinusoidal_table};
pub use mha::{MhaBuffers, MhaInputs, MhaOutput, MhaPlan, MultiHeadAttention};
pub use weights::{LinearWeights, MhaWeights, NamingScheme, QkvWeights};
#[cfg(feature = "safetensors")]
pub use weights::{TensorFile, load_mha};
