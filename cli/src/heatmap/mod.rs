//! Attention heat maps: the probability matrix of one (batch entry, query head) drawn with
//! `plotters` as a PNG or SVG picture, with a perceptual colour map, masked cells in a colour
//! outside it, axes, a colour bar with tick labels, and aggregation of blocks of cells for long
//! sequences.
//!
//! The pure parts ([`render()`], [`AttentionMatrix`], [`parse_range`]) need no GPU. The GPU part
//! is [`head_weights`]: it cuts the requested head out of a batched problem with
//! [`head_problem`] (so the probability matrix on the GPU is at most about `Sq × Sk` of one
//! head, not `B × Hq × Sq × Sk`) and runs the three-pass kernel, the one that returns the
//! weights. Every option of [`AttentionSpec`](wgattn::AttentionSpec) is kept: dtype, scale,
//! soft-cap, key padding, causal mask, sliding window, ALiBi, and the bias and mask tensors.
//! Masked cells (outside [`AttentionSpec::visible_keys`](wgattn::AttentionSpec::visible_keys),
//! dropped by the mask tensor, or with a −∞ bias; see [`window_mask`]) are drawn in
//! [`MASK_COLOR`].
//!
//! Modules: [`options`] (colour map, aggregation, scale), [`window`] (what to draw),
//! [`problem`] (one head's sub-problem), [`aggregate`] (blocks → displayed cells) and
//! [`render`](mod@render) (the picture).
//!
//! ```no_run
//! use wgattn_cli::heatmap::{self, RenderOptions, Window};
//! let case = wgattn::io::read_case("case.safetensors")?;
//! let ctx = wgattn::Context::new()?;
//! let window = Window::whole(&case.spec, 0, 0);
//! let matrix = heatmap::head_weights(&ctx, &case.spec, &case.inputs(), &window)?;
//! let image = heatmap::render(&matrix, &RenderOptions::default())?;
//! image.write("attn.png", &[])?;
//! # Ok::<(), wgattn::Error>(())
//! ```

pub mod aggregate;
pub mod options;
pub mod problem;
pub mod render;
pub mod window;

pub use aggregate::format_weight;
pub use options::{
    AUTO_LOG_BELOW, Aggregate, BACKGROUND, ColorMap, INK, INVALID_COLOR, MASK_COLOR, RenderOptions,
    Scale,
};
pub use problem::{
    HeadProblem, HeadSpec, head_problem, head_spec, head_weights, rows_that_fit, window_mask,
};
pub use render::{Heatmap, Plot, Rect, render};
pub use window::{AttentionMatrix, Window, parse_range};
