//! Attention heat maps: the probability matrix of one (batch entry, query head) drawn as an
//! RGB image, with a perceptual colour map, masked cells in a colour outside it, a colour bar
//! with tick labels, and aggregation of blocks of cells for long sequences.
//!
//! The pure parts ([`render`], [`AttentionMatrix`], [`parse_range`]) need no GPU. The GPU part
//! is [`head_weights`]: it cuts the requested head out of a batched problem with
//! [`head_problem`] (so the probability matrix on the GPU is at most about `Sq × Sk` of one
//! head, not `B × Hq × Sq × Sk`) and runs the three-pass kernel, the one that returns the
//! weights. Every option of [`AttentionSpec`] is kept: dtype, scale, soft-cap, key padding,
//! causal mask, sliding window, ALiBi, and the bias and mask tensors. Masked cells (outside
//! [`AttentionSpec::visible_keys`], dropped by the mask tensor, or with a −∞ bias; see
//! [`window_mask`]) are drawn in [`MASK_COLOR`].
//!
//! ```no_run
//! use wgattn_cli::heatmap::{self, RenderOptions, Window};
//! let case = wgattn::io::read_case("case.safetensors")?;
//! let ctx = wgattn::Context::new()?;
//! let window = Window::whole(&case.spec, 0, 0);
//! let matrix = heatmap::head_weights(&ctx, &case.spec, &case.inputs(), &window)?;
//! let image = heatmap::render(&matrix, &RenderOptions::default());
//! image.write_png("attn.png", &[])?;
//! # Ok::<(), wgattn::Error>(())
//! ```

use std::ops::Range;
use std::path::Path;

use wgattn::Context;
use wgattn::DeviceLimits;
use wgattn::{Alibi, AttentionSpec, Broadcast, CausalAlign, Kernel, Window as SlidingWindow};
use wgattn::{Error, Result};
use wgattn::{Inputs, Tensor};

/// Colour of masked cells: a neutral mid grey, which none of the [`ColorMap`]s contains.
pub const MASK_COLOR: [u8; 3] = [128, 128, 128];
/// Colour of cells whose weight is NaN or infinite (a GPU fault; never expected): magenta.
pub const INVALID_COLOR: [u8; 3] = [255, 0, 255];
/// [`Scale::Auto`] picks a log scale when the median displayed cell would sit below this
/// position (0..=1) of a linear colour range.
pub const AUTO_LOG_BELOW: f64 = 0.1;
/// Background of the image around the plot.
pub const BACKGROUND: [u8; 3] = [255, 255, 255];
/// Colour of text, frames and tick marks.
pub const INK: [u8; 3] = [0, 0, 0];

/// Perceptual colour maps (from `colorous`, i.e. d3-scale-chromatic / matplotlib), low to high.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ColorMap {
    /// Dark purple → teal → yellow (the default).
    #[default]
    Viridis,
    /// Black → red → pale yellow.
    Inferno,
    /// Black → pink → pale yellow.
    Magma,
    /// Blue → magenta → yellow.
    Plasma,
}

impl ColorMap {
    /// Every colour map name the CLI accepts.
    pub const NAMES: &'static [&'static str] = &["viridis", "inferno", "magma", "plasma"];

    /// Name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ColorMap::Viridis => "viridis",
            ColorMap::Inferno => "inferno",
            ColorMap::Magma => "magma",
            ColorMap::Plasma => "plasma",
        }
    }

    /// Parses a colour map name.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "viridis" => Ok(ColorMap::Viridis),
            "inferno" => Ok(ColorMap::Inferno),
            "magma" => Ok(ColorMap::Magma),
            "plasma" => Ok(ColorMap::Plasma),
            other => Err(Error::spec(
                "colormap",
                other,
                format!("is not one of {}", ColorMap::NAMES.join(", ")),
            )),
        }
    }

    /// The colour at position `t` (clamped to 0..=1; 0 is the low end).
    pub fn color(self, t: f64) -> [u8; 3] {
        let gradient = match self {
            ColorMap::Viridis => colorous::VIRIDIS,
            ColorMap::Inferno => colorous::INFERNO,
            ColorMap::Magma => colorous::MAGMA,
            ColorMap::Plasma => colorous::PLASMA,
        };
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        gradient.eval_continuous(t).into_array()
    }
}

/// How the cells of one block become one displayed cell when the matrix is larger than the
/// image allows. Masked cells are left out; a block with no visible cell is drawn masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Aggregate {
    /// The largest weight of the block (the default: sharp peaks stay visible).
    #[default]
    Max,
    /// The mean weight of the visible cells of the block.
    Mean,
}

impl Aggregate {
    /// Name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Aggregate::Max => "max",
            Aggregate::Mean => "mean",
        }
    }

    /// Parses `max` / `mean`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "max" => Ok(Aggregate::Max),
            "mean" => Ok(Aggregate::Mean),
            other => Err(Error::spec("aggregate", other, "is not `max` or `mean`")),
        }
    }
}

/// How weights map onto the colour map between the smallest and the largest displayed weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scale {
    /// [`Scale::Log`] when a linear scale would put the median displayed cell in the lowest
    /// [`AUTO_LOG_BELOW`] of the colour range (typical of long sequences, where most weights
    /// are near 1/Sk and a few are large), else [`Scale::Linear`]. The default.
    #[default]
    Auto,
    /// Linear in the weight.
    Linear,
    /// Linear in log(weight), from the smallest positive displayed weight; zero weights get the
    /// low end. Shows the spread of small weights in long sequences.
    Log,
}

impl Scale {
    /// Name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scale::Auto => "auto",
            Scale::Linear => "linear",
            Scale::Log => "log",
        }
    }

    /// Parses `auto` / `linear` / `log`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Scale::Auto),
            "linear" | "lin" => Ok(Scale::Linear),
            "log" => Ok(Scale::Log),
            other => Err(Error::spec(
                "scale",
                other,
                "is not `auto`, `linear` or `log`",
            )),
        }
    }
}

/// Options of [`render`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenderOptions {
    /// Colour map of the weights.
    pub colormap: ColorMap,
    /// How blocks of cells are combined when the matrix is larger than `max_side`.
    pub aggregate: Aggregate,
    /// Linear, logarithmic or automatic colour scale.
    pub scale: Scale,
    /// Most displayed cells along a side: longer axes are aggregated in blocks of
    /// `ceil(n / max_side)` cells (at least 1).
    pub max_side: usize,
    /// Small axes are scaled up, each cell drawn as a square of up to `max_cell` pixels, until
    /// the side reaches about this many pixels.
    pub min_side: usize,
    /// Largest size in pixels of one cell along an axis.
    pub max_cell: usize,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            colormap: ColorMap::Viridis,
            aggregate: Aggregate::Max,
            scale: Scale::Auto,
            max_side: 1024,
            min_side: 400,
            max_cell: 64,
        }
    }
}

/// Which part of which head's probability matrix to draw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Batch entry.
    pub batch: usize,
    /// Query head.
    pub head: usize,
    /// Query rows (half-open), the rows of the image.
    pub queries: Range<usize>,
    /// Keys (half-open), the columns of the image.
    pub keys: Range<usize>,
}

impl Window {
    /// All query rows and keys of head `head` of batch entry `batch`.
    pub fn whole(spec: &AttentionSpec, batch: usize, head: usize) -> Self {
        Window {
            batch,
            head,
            queries: 0..spec.seq_q,
            keys: 0..spec.seq_k,
        }
    }

    /// Checks the window against `spec`: batch entry and head exist, ranges are non-empty and
    /// inside the sequences. Reports every problem as one [`Error::InvalidSpec`].
    pub fn check(&self, spec: &AttentionSpec) -> Result<()> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, value: String, reason: String| {
            problems.push(wgattn::SpecProblem {
                field: field.to_string(),
                value,
                reason,
            })
        };
        if self.batch >= spec.batch {
            bad(
                "batch",
                self.batch.to_string(),
                format!("is out of range: the input has batch = {}", spec.batch),
            );
        }
        if self.head >= spec.q_heads {
            bad(
                "head",
                self.head.to_string(),
                format!(
                    "is out of range: the input has {} query heads",
                    spec.q_heads
                ),
            );
        }
        for (field, r, len, what) in [
            ("query_range", &self.queries, spec.seq_q, "seq_q"),
            ("key_range", &self.keys, spec.seq_k, "seq_k"),
        ] {
            if r.start >= r.end {
                bad(
                    field,
                    format!("{}..{}", r.start, r.end),
                    "is empty (start must be below end)".into(),
                );
            } else if r.end > len {
                bad(
                    field,
                    format!("{}..{}", r.start, r.end),
                    format!("ends past {what} = {len}"),
                );
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidSpec { problems })
        }
    }
}

/// Parses a half-open range `a..b` of indices into a sequence of `len` (`a..` runs to the end,
/// `..b` starts at 0, `..` or an empty string is everything). Errors name `field`.
pub fn parse_range(field: &str, s: &str, len: usize) -> Result<Range<usize>> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(0..len);
    }
    let Some((a, b)) = t.split_once("..") else {
        return Err(Error::spec(field, s, "is not of the form a..b (half-open)"));
    };
    let bound = |x: &str, default: usize| -> Result<usize> {
        let x = x.trim();
        if x.is_empty() {
            return Ok(default);
        }
        x.parse().map_err(|_| {
            Error::spec(
                field,
                s,
                format!("has {x:?}, not a non-negative integer (expected a..b)"),
            )
        })
    };
    let (start, end) = (bound(a, 0)?, bound(b, len)?);
    if start >= end {
        return Err(Error::spec(field, s, "is empty (start must be below end)"));
    }
    if end > len {
        return Err(Error::spec(
            field,
            s,
            format!("ends past the sequence length {len}"),
        ));
    }
    Ok(start..end)
}

/// The probabilities of one head in a [`Window`], row-major (`rows × cols`), with the mask.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionMatrix {
    /// Where the matrix comes from; rows are `window.queries`, columns `window.keys`.
    pub window: Window,
    /// Probabilities, `rows × cols` row-major (0 where masked).
    pub weights: Vec<f32>,
    /// True where the cell is masked, same indexing as `weights`.
    pub masked: Vec<bool>,
}

impl AttentionMatrix {
    /// A matrix from its parts; `weights` and `masked` must both hold
    /// `window.queries.len() × window.keys.len()` elements.
    pub fn new(window: Window, weights: Vec<f32>, masked: Vec<bool>) -> Result<Self> {
        let expected = window.queries.len() * window.keys.len();
        for (tensor, got) in [("weights", weights.len()), ("masked", masked.len())] {
            if got != expected {
                return Err(Error::InputLength {
                    tensor,
                    expected,
                    got,
                    shape: format!("[{}, {}]", window.queries.len(), window.keys.len()),
                });
            }
        }
        Ok(AttentionMatrix {
            window,
            weights,
            masked,
        })
    }

    /// Cuts the window out of a full probability matrix `[B, Hq, Sq, Sk]` of `spec` (e.g. the
    /// `weights` of [`reference::attention_with`](wgattn::reference::attention_with) with
    /// `with_weights(true)`), given the inputs it was computed from (for the bias and mask
    /// tensors). The mask is [`window_mask`].
    pub fn from_weights(
        spec: &AttentionSpec,
        inputs: &Inputs,
        weights: &[f32],
        window: &Window,
    ) -> Result<Self> {
        let masked = window_mask(spec, inputs, window)?;
        if weights.len() != spec.weights_len() {
            return Err(Error::InputLength {
                tensor: "weights",
                expected: spec.weights_len(),
                got: weights.len(),
                shape: format!(
                    "[{}, {}, {}, {}]",
                    spec.batch, spec.q_heads, spec.seq_q, spec.seq_k
                ),
            });
        }
        let base = (window.batch * spec.q_heads + window.head) * spec.seq_q * spec.seq_k;
        let mut cut = Vec::with_capacity(masked.len());
        for i in window.queries.clone() {
            let row = base + i * spec.seq_k;
            cut.extend_from_slice(&weights[row + window.keys.start..row + window.keys.end]);
        }
        Ok(AttentionMatrix {
            window: window.clone(),
            weights: cut,
            masked,
        })
    }

    /// Rows (query rows of the window).
    pub fn rows(&self) -> usize {
        self.window.queries.len()
    }

    /// Columns (keys of the window).
    pub fn cols(&self) -> usize {
        self.window.keys.len()
    }
}

/// Validates a spec the way the reference does (no device limits).
fn check_spec(spec: &AttentionSpec) -> Result<()> {
    spec.validate(&DeviceLimits::unbounded())
}

/// Which cells of `window` are masked, row-major (`rows × cols`): keys outside
/// [`AttentionSpec::visible_keys`] (causal mask, key padding, sliding window), keys the mask
/// tensor drops (false), and keys whose bias is −∞. These are the cells the kernels leave out
/// of the softmax; a finite bias or ALiBi term, however negative, does not mask a cell.
///
/// Checks the spec, the inputs (as [`AttentionSpec::check_inputs`]) and the window first.
pub fn window_mask(spec: &AttentionSpec, inputs: &Inputs, window: &Window) -> Result<Vec<bool>> {
    check_spec(spec)?;
    spec.check_inputs(inputs)?;
    window.check(spec)?;
    let bias = match (spec.bias, &inputs.bias) {
        (Some(shape), Some(data)) => Some((shape, data.to_f32())),
        _ => None,
    };
    let mask = match (spec.mask, inputs.mask) {
        (Some(shape), Some(data)) => Some((shape, data)),
        _ => None,
    };
    let (b, h) = (window.batch, window.head);
    let mut masked = Vec::with_capacity(window.queries.len() * window.keys.len());
    for i in window.queries.clone() {
        let visible = spec.visible_keys(b, i);
        for j in window.keys.clone() {
            let dropped = mask
                .as_ref()
                .is_some_and(|(m, data)| !data[m.index(spec, b, h, i, j)]);
            let minus_inf = bias
                .as_ref()
                .is_some_and(|(m, data)| data[m.index(spec, b, h, i, j)] == f32::NEG_INFINITY);
            masked.push(!visible.contains(&j) || dropped || minus_inf);
        }
    }
    Ok(masked)
}

/// One head of a batched problem as a problem of its own (batch 1, one query head, one key/value
/// head, `bhsd`), holding only the query rows and keys its window needs.
///
/// Every cell of the window keeps, in the sub-problem, its visibility (causal mask, key
/// padding, sliding window, mask tensor, −∞ bias), its bias and its ALiBi distance, so its
/// probability is the original's (see [`head_problem`]).
#[derive(Debug, Clone, PartialEq)]
pub struct HeadProblem {
    /// The sub-problem: three-pass kernel, weights returned, the original effective scale,
    /// dtype, soft-cap and sliding window, the head's ALiBi slope, and a causal alignment, key
    /// padding and shape chosen so that the diagonal sits where it sits in the original.
    pub spec: AttentionSpec,
    /// Its queries: original rows `first_query..first_query + spec.seq_q` of the head (a row
    /// past the original `seq_q`, needed only to place the diagonal, is zeros).
    pub q: Vec<f32>,
    /// Its keys: original keys `first_key..first_key + spec.seq_k` of the head's key/value
    /// head (keys past the original `seq_k` are zeros, hidden by `spec.kv_lens`).
    pub k: Vec<f32>,
    /// Its values, like `k`.
    pub v: Vec<f32>,
    /// The head's bias over the same rows and keys, `[1, 1, spec.seq_q, spec.seq_k]`, when the
    /// original has a bias tensor (0 in padded rows and keys).
    pub bias: Option<Vec<f32>>,
    /// The head's mask over the same rows and keys, when the original has a mask tensor
    /// (false in padded rows and keys).
    pub mask: Option<Vec<bool>>,
    /// Original index of the sub-problem's query row 0.
    pub first_query: usize,
    /// Original index of the sub-problem's key 0.
    pub first_key: usize,
    /// The window of the original problem it was cut for.
    pub window: Window,
    /// The original problem's spec (for the structural mask).
    pub original: AttentionSpec,
}

/// How a window is cut: original rows and keys (possibly past the original sequences),
/// causal mask, sliding window, ALiBi slope and valid key length of the sub-problem, and
/// whether it carries the bias and mask tensors.
struct Cut {
    rows: Range<usize>,
    keys: Range<usize>,
    causal: Option<CausalAlign>,
    window: Option<SlidingWindow>,
    slope: Option<f32>,
    kv_len: Option<u32>,
    tensors: bool,
}

/// Appends `d` values of `t` from flat index `at` as f32, or `d` zeros when `at` is `None`.
fn push_row(t: &Tensor, at: Option<usize>, d: usize, out: &mut Vec<f32>) {
    match (t, at) {
        (Tensor::F32(x), Some(at)) => out.extend_from_slice(&x[at..at + d]),
        (Tensor::F16(x), Some(at)) => out.extend(x[at..at + d].iter().map(|v| v.to_f32())),
        (_, None) => out.resize(out.len() + d, 0.0),
    }
}

/// The `cut.rows × cut.keys` block of head (b, h) of a `[B or 1, Hq or 1, Sq, Sk]` tensor,
/// row-major; `pad` outside the original sequences.
fn head_block<T: Copy>(
    spec: &AttentionSpec,
    shape: Broadcast,
    data: &[T],
    (b, h): (usize, usize),
    cut: &Cut,
    pad: T,
) -> Vec<T> {
    let mut out = Vec::with_capacity(cut.rows.len() * cut.keys.len());
    for i in cut.rows.clone() {
        for j in cut.keys.clone() {
            out.push(if i < spec.seq_q && j < spec.seq_k {
                data[shape.index(spec, b, h, i, j)]
            } else {
                pad
            });
        }
    }
    out
}

/// The sub-problem [`head_problem`] builds for a window, without its tensors: its spec and
/// where its first query row and first key sit in the original problem.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadSpec {
    /// The sub-problem's spec (see [`HeadProblem::spec`]).
    pub spec: AttentionSpec,
    /// Original index of the sub-problem's query row 0.
    pub first_query: usize,
    /// Original index of the sub-problem's key 0.
    pub first_key: usize,
}

/// The cut of [`head_problem`]; see there. Checks the spec (no device limits) and the window.
fn cut(spec: &AttentionSpec, window: &Window) -> Result<Cut> {
    check_spec(spec)?;
    window.check(spec)?;
    let (b, h) = (window.batch, window.head);
    let kv_cap = spec
        .kv_lens
        .as_ref()
        .map_or(spec.seq_k, |l| (l[b] as usize).min(spec.seq_k));
    let slope = match &spec.alibi {
        None => None,
        Some(alibi) => Some(alibi.slopes(spec.q_heads).get(h).copied().ok_or_else(|| {
            Error::spec(
                "alibi",
                format!("{alibi:?}"),
                format!("has no slope for query head {h}"),
            )
        })?),
    };
    let (a, e) = (window.queries.start, window.queries.end);
    let visible: Vec<Range<usize>> = (a..e).map(|i| spec.visible_keys(b, i)).collect();
    let first = visible
        .iter()
        .filter(|r| !r.is_empty())
        .map(|r| r.start)
        .min();
    let last = visible.iter().map(|r| r.end).max().unwrap_or(0);
    Ok(match first {
        // No row of the window sees any key: one key, hidden.
        None => Cut {
            rows: a..e,
            keys: 0..1,
            causal: None,
            window: None,
            slope: None,
            kv_len: Some(0),
            tensors: false,
        },
        // Only key padding matters: the diagonal's position is irrelevant.
        Some(_) if slope.is_none() && visible.iter().all(|r| *r == (0..kv_cap)) => Cut {
            rows: a..e,
            keys: 0..kv_cap,
            causal: None,
            window: None,
            slope: None,
            kv_len: None,
            tensors: true,
        },
        Some(first) => {
            // Bottom-right alignment of rows a..end against keys first..end + align puts the
            // sub-problem's diagonal on the original one: (i − a) + (n − m) = i + align − first.
            let align = spec.align_offset();
            let end = (e as i64).max(last as i64 - align);
            let keys_end = end + align; // ≥ last > first ≥ 0
            let (end, keys_end) = (end as usize, keys_end as usize);
            Cut {
                rows: a..end,
                keys: first..keys_end,
                causal: spec.causal.map(|_| CausalAlign::BottomRight),
                window: spec.window,
                slope,
                kv_len: (kv_cap < keys_end).then(|| (kv_cap - first) as u32),
                tensors: true,
            }
        }
    })
}

/// The spec of the sub-problem of `cut`.
fn sub_spec(spec: &AttentionSpec, cut: &Cut) -> AttentionSpec {
    let tensor = |declared: Option<Broadcast>| {
        (cut.tensors && declared.is_some()).then_some(Broadcast::SHARED)
    };
    let mut sub = AttentionSpec::new(1, 1, 1, cut.rows.len(), cut.keys.len(), spec.head_dim)
        .scale(spec.effective_scale())
        .dtype(spec.dtype)
        .causal(cut.causal)
        .softcap(spec.softcap)
        .alibi(cut.slope.map(|s| Alibi::Slopes(vec![s])))
        .bias(tensor(spec.bias))
        .mask(tensor(spec.mask))
        .kernel(Kernel::ThreePass)
        .with_weights(true);
    sub.window = cut.window;
    if let Some(l) = cut.kv_len {
        sub = sub.kv_lens(vec![l]);
    }
    sub
}

/// The sub-problem [`head_problem`] would build for `window`, without reading any tensor:
/// cheap, to check its size against a device's limits
/// (`head_spec(..)?.spec.validate(ctx.limits())`) before gathering its inputs. Checks the
/// spec (without device limits) and the window.
pub fn head_spec(spec: &AttentionSpec, window: &Window) -> Result<HeadSpec> {
    let cut = cut(spec, window)?;
    Ok(HeadSpec {
        spec: sub_spec(spec, &cut),
        first_query: cut.rows.start,
        first_key: cut.keys.start,
    })
}

/// The most query rows from `window.queries.start` (with `window`'s batch entry, head and
/// keys) whose sub-problem fits a device with `limits`, found by bisection over the row count
/// (sub-problems grow with it); 0 when not even one row fits or the window is invalid.
pub fn rows_that_fit(spec: &AttentionSpec, window: &Window, limits: &DeviceLimits) -> usize {
    let start = window.queries.start;
    let fits = |rows: usize| {
        let w = Window {
            queries: start..start + rows,
            ..window.clone()
        };
        head_spec(spec, &w).is_ok_and(|h| h.spec.validate(limits).is_ok())
    };
    let (mut lo, mut hi) = (0, spec.seq_q.saturating_sub(start));
    if fits(hi) {
        return hi;
    }
    // fits(lo) (or lo = 0), !fits(hi).
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Cuts the query head `window.head` of batch entry `window.batch` out of `spec`'s inputs
/// (any layout; the key/value head is `head / group`) as a batch-1, one-head problem for the
/// three-pass kernel, keeping the scale, dtype, soft-cap, `kv_lens[batch]`, the head's bias
/// and mask (sliced out of their `[B or 1, Hq or 1, Sq, Sk]` broadcast), the head's ALiBi slope
/// and the sliding window.
///
/// Query rows before the window are dropped, and so are keys no row of the window can see
/// (before the first or after the last visible one). Sliding windows, ALiBi distances and the
/// causal mask are measured from the diagonal `i + align_offset()`; the sub-problem is
/// bottom-right aligned (causal or not) with its last key at original index
/// `last row + 1 + align_offset()`, which puts its diagonal on the original one. When that
/// index lies before the last visible key (no causal mask, keys visible right of the
/// diagonal), rows after the window are added until it does not (at most up to the original
/// `seq_q`; a symmetric window of `w` keys adds `w` rows, an unbounded right side all rows to
/// the end); when it lies past `seq_k` (top-left causal with `seq_q > seq_k`), zero keys hidden
/// by `kv_lens` are added. Without ALiBi, and when every row of the window sees exactly keys
/// `0..kv_len`, alignment does not matter and the sub-problem has no causal mask or window.
/// A window whose rows see no key at all becomes one key hidden by `kv_lens = [0]`.
///
/// Checks the spec (without device limits; see [`head_spec`] for a cheap check against a
/// device), the inputs and the window.
pub fn head_problem(spec: &AttentionSpec, inputs: &Inputs, window: &Window) -> Result<HeadProblem> {
    check_spec(spec)?;
    spec.check_inputs(inputs)?;
    let cut = cut(spec, window)?;
    let (b, h) = (window.batch, window.head);
    let d = spec.head_dim;
    let kvh = h / spec.group();
    let (qs, ks) = (spec.q_strides(), spec.kv_strides());
    let (m, n) = (cut.rows.len(), cut.keys.len());
    let mut q = Vec::with_capacity(m * d);
    for i in cut.rows.clone() {
        push_row(
            &inputs.q,
            (i < spec.seq_q).then(|| qs.at(b, h, i)),
            d,
            &mut q,
        );
    }
    let (mut k, mut v) = (Vec::with_capacity(n * d), Vec::with_capacity(n * d));
    for j in cut.keys.clone() {
        let at = (j < spec.seq_k).then(|| ks.at(b, kvh, j));
        push_row(&inputs.k, at, d, &mut k);
        push_row(&inputs.v, at, d, &mut v);
    }
    let bias = match (spec.bias, &inputs.bias) {
        (Some(shape), Some(data)) if cut.tensors => {
            Some(head_block(spec, shape, &data.to_f32(), (b, h), &cut, 0.0))
        }
        _ => None,
    };
    let mask = match (spec.mask, inputs.mask) {
        (Some(shape), Some(data)) if cut.tensors => {
            Some(head_block(spec, shape, data, (b, h), &cut, false))
        }
        _ => None,
    };
    Ok(HeadProblem {
        spec: sub_spec(spec, &cut),
        q,
        k,
        v,
        bias,
        mask,
        first_query: cut.rows.start,
        first_key: cut.keys.start,
        window: window.clone(),
        original: spec.clone(),
    })
}

impl HeadProblem {
    /// The sub-problem's inputs, for [`Context::attention_with`] or
    /// [`reference::attention_with`](wgattn::reference::attention_with).
    pub fn inputs(&self) -> Inputs<'_> {
        Inputs {
            q: Tensor::F32(&self.q),
            k: Tensor::F32(&self.k),
            v: Tensor::F32(&self.v),
            bias: self.bias.as_deref().map(Tensor::F32),
            mask: self.mask.as_deref(),
        }
    }

    /// The window's [`AttentionMatrix`] from the sub-problem's probability matrix
    /// (`[1, 1, spec.seq_q, spec.seq_k]`). The mask is [`window_mask`] of the original
    /// problem: its structural part from the original spec, the mask tensor and −∞ bias from
    /// the sub-problem's slices of them (every visible key of the window is a key of the
    /// sub-problem).
    pub fn matrix(&self, weights: &[f32]) -> Result<AttentionMatrix> {
        let (rows, keys) = (self.spec.seq_q, self.spec.seq_k);
        if weights.len() != rows * keys {
            return Err(Error::InputLength {
                tensor: "weights",
                expected: rows * keys,
                got: weights.len(),
                shape: format!("[1, 1, {rows}, {keys}]"),
            });
        }
        let w = &self.window;
        let (fq, fk) = (self.first_query, self.first_key);
        let n = w.queries.len() * w.keys.len();
        let (mut values, mut masked) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for i in w.queries.clone() {
            let visible = self.original.visible_keys(w.batch, i);
            for j in w.keys.clone() {
                // Inside the sub-problem: its flat index.
                let at = (i >= fq && i - fq < rows && j >= fk && j - fk < keys)
                    .then(|| (i - fq) * keys + (j - fk));
                let hidden = !visible.contains(&j)
                    || at.is_none_or(|at| {
                        self.mask.as_ref().is_some_and(|m| !m[at])
                            || self
                                .bias
                                .as_ref()
                                .is_some_and(|b| b[at] == f32::NEG_INFINITY)
                    });
                values.push(at.map_or(0.0, |at| weights[at]));
                masked.push(hidden);
            }
        }
        AttentionMatrix::new(w.clone(), values, masked)
    }
}

/// Computes the window's probabilities on the GPU (three-pass kernel on the head's
/// sub-problem, see [`head_problem`]).
pub fn head_weights(
    ctx: &Context,
    spec: &AttentionSpec,
    inputs: &Inputs,
    window: &Window,
) -> Result<AttentionMatrix> {
    let problem = head_problem(spec, inputs, window)?;
    let out = ctx.attention_with(&problem.spec, &problem.inputs())?;
    let weights = out.weights.ok_or_else(|| Error::Gpu {
        during: "reading the attention weights",
        message: "the kernel returned no probability matrix".into(),
    })?;
    problem.matrix(&weights)
}

/// A pixel rectangle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left edge.
    pub x: usize,
    /// Top edge.
    pub y: usize,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

/// Where the cells are in a rendered [`Heatmap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plot {
    /// The plot area (cells only, inside the frame).
    pub rect: Rect,
    /// Displayed rows (`ceil(matrix rows / block_rows)`).
    pub rows: usize,
    /// Displayed columns (`ceil(matrix cols / block_cols)`).
    pub cols: usize,
    /// Matrix rows per displayed row.
    pub block_rows: usize,
    /// Matrix columns per displayed column.
    pub block_cols: usize,
    /// Pixel height of a displayed row.
    pub cell_height: usize,
    /// Pixel width of a displayed column.
    pub cell_width: usize,
}

/// A rendered heat map: RGB8 pixels and where everything is.
#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap {
    /// Image width in pixels.
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// RGB8 pixels, row-major, `width × height × 3` bytes.
    pub pixels: Vec<u8>,
    /// The cells.
    pub plot: Plot,
    /// The colour bar (top is `max`).
    pub colorbar: Rect,
    /// Weight at the low end of the colour map.
    pub min: f32,
    /// Weight at the high end of the colour map.
    pub max: f32,
    /// The options it was drawn with, `scale` resolved ([`Scale::Linear`] or [`Scale::Log`],
    /// never [`Scale::Auto`]).
    pub options: RenderOptions,
    /// Displayed cells drawn in [`MASK_COLOR`].
    pub masked_cells: usize,
    /// Position (0 = low end, 1 = high end) on the colour range of the median unmasked
    /// displayed cell. Below [`AUTO_LOG_BELOW`] on a linear scale most cells share the darkest
    /// colours and [`Scale::Log`] shows more.
    pub median_position: f64,
}

/// The displayed value of a block.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cell {
    Masked,
    Value(f32),
}

/// Block size and pixel size of one axis of `n` cells.
fn axis(n: usize, o: &RenderOptions) -> (usize, usize) {
    let max_side = o.max_side.max(1);
    if n > max_side {
        (n.div_ceil(max_side), 1)
    } else {
        (1, (o.min_side / n.max(1)).clamp(1, o.max_cell.max(1)))
    }
}

/// Combines blocks of `br × bc` cells.
fn aggregate(m: &AttentionMatrix, br: usize, bc: usize, how: Aggregate) -> Vec<Cell> {
    let (rows, cols) = (m.rows(), m.cols());
    let (dr, dc) = (rows.div_ceil(br), cols.div_ceil(bc));
    // Running (max or sum, visible count, any non-finite) per displayed cell.
    let mut acc = vec![(f64::NEG_INFINITY, 0usize, false); dr * dc];
    if how == Aggregate::Mean {
        acc.iter_mut().for_each(|a| a.0 = 0.0);
    }
    for r in 0..rows {
        let line = &mut acc[(r / br) * dc..(r / br + 1) * dc];
        for c in 0..cols {
            let at = r * cols + c;
            // A matrix whose vectors are short (its fields are public) draws the missing cells
            // as masked rather than panicking.
            if m.masked.get(at).copied().unwrap_or(true) {
                continue;
            }
            let w = m.weights.get(at).copied().unwrap_or(f32::NAN);
            let a = &mut line[c / bc];
            a.1 += 1;
            if !w.is_finite() {
                a.2 = true;
                continue;
            }
            match how {
                Aggregate::Max => a.0 = a.0.max(w as f64),
                Aggregate::Mean => a.0 += w as f64,
            }
        }
    }
    acc.into_iter()
        .map(|(x, n, bad)| match (n, bad, how) {
            (0, _, _) => Cell::Masked,
            (_, true, _) => Cell::Value(f32::NAN),
            (_, _, Aggregate::Max) => Cell::Value(x as f32),
            (_, _, Aggregate::Mean) => Cell::Value((x / n as f64) as f32),
        })
        .collect()
}

/// The (min, max) of the colour scale over the displayed values.
fn value_range(cells: &[Cell], scale: Scale) -> (f32, f32) {
    let values = cells.iter().filter_map(|c| match c {
        Cell::Value(v) if v.is_finite() => Some(*v),
        _ => None,
    });
    let (mut lo, mut hi, mut lo_pos) = (f32::INFINITY, f32::NEG_INFINITY, f32::INFINITY);
    for v in values {
        lo = lo.min(v);
        hi = hi.max(v);
        if v > 0.0 {
            lo_pos = lo_pos.min(v);
        }
    }
    if !hi.is_finite() {
        return (0.0, 1.0);
    }
    match scale {
        Scale::Linear | Scale::Auto => {
            if hi > lo {
                (lo, hi)
            } else if hi > 0.0 {
                (0.0, hi)
            } else {
                (0.0, 1.0)
            }
        }
        Scale::Log => {
            if !lo_pos.is_finite() {
                (1e-6, 1.0)
            } else if hi > lo_pos {
                (lo_pos, hi)
            } else {
                (hi / 10.0, hi)
            }
        }
    }
}

/// Position (0..=1) on the colour range of `scale` of the median unmasked finite cell; 0.5
/// when there is none.
fn median_position(cells: &[Cell], scale: Scale) -> f64 {
    let (min, max) = value_range(cells, scale);
    let mut positions: Vec<f64> = cells
        .iter()
        .filter_map(|c| match c {
            Cell::Value(v) if v.is_finite() => Some(position(*v, min, max, scale)),
            _ => None,
        })
        .collect();
    if positions.is_empty() {
        return 0.5;
    }
    let mid = positions.len() / 2;
    *positions.select_nth_unstable_by(mid, f64::total_cmp).1
}

/// Position 0..=1 of `w` on the scale from `min` to `max`.
fn position(w: f32, min: f32, max: f32, scale: Scale) -> f64 {
    let (w, lo, hi) = (w as f64, min as f64, max as f64);
    let t = match scale {
        Scale::Linear | Scale::Auto => (w - lo) / (hi - lo),
        Scale::Log if w <= 0.0 => 0.0,
        Scale::Log => (w.ln() - lo.ln()) / (hi.ln() - lo.ln()),
    };
    if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// The weight at position `t` of the scale.
fn value_at(t: f64, min: f32, max: f32, scale: Scale) -> f64 {
    let (lo, hi) = (min as f64, max as f64);
    match scale {
        Scale::Linear | Scale::Auto => lo + t * (hi - lo),
        Scale::Log => (lo.ln() + t * (hi.ln() - lo.ln())).exp(),
    }
}

/// A probability as a short label: `0.125`, `1.000`, `2.44e-4`.
pub fn format_weight(w: f64) -> String {
    if w == 0.0 {
        "0".into()
    } else if w.abs() >= 0.01 {
        format!("{w:.3}")
    } else {
        format!("{w:.2e}")
    }
}

/// Draws the matrix: rows are query rows, columns keys, blocks aggregated when an axis is
/// longer than `options.max_side` and small matrices scaled up, with a frame, index labels, a
/// title, a colour bar with labelled ticks and, when anything is masked, a legend swatch.
pub fn render(m: &AttentionMatrix, options: &RenderOptions) -> Heatmap {
    let (br, mut ph) = axis(m.rows(), options);
    let (bc, mut pw) = axis(m.cols(), options);
    if br == 1 && bc == 1 {
        // Square cells when neither axis is aggregated, unless that squeezes a side below
        // 64 px (e.g. one query row against many keys).
        let side = ph.min(pw);
        if m.rows() * side >= (m.rows() * ph).min(64) && m.cols() * side >= (m.cols() * pw).min(64)
        {
            (ph, pw) = (side, side);
        }
    }
    let (dr, dc) = (m.rows().div_ceil(br), m.cols().div_ceil(bc));
    let cells = aggregate(m, br, bc, options.aggregate);
    let scale = match options.scale {
        Scale::Auto if median_position(&cells, Scale::Linear) < AUTO_LOG_BELOW => Scale::Log,
        Scale::Auto => Scale::Linear,
        other => other,
    };
    let options = &RenderOptions { scale, ..*options };
    let (min, max) = value_range(&cells, scale);
    let (plot_w, plot_h) = (dc * pw, dr * ph);

    // Text at 8 px per glyph, doubled on large images.
    let s = if plot_w.max(plot_h) >= 768 { 2 } else { 1 };
    let glyph = 8 * s;
    let line = 11 * s;
    let margin = 10 * s;
    let w = &m.window;
    let mut title = vec![format!(
        "batch {} head {}: queries {}..{} (rows) x keys {}..{} (columns)",
        w.batch, w.head, w.queries.start, w.queries.end, w.keys.start, w.keys.end
    )];
    title.push(if br > 1 || bc > 1 {
        format!(
            "{} of {}x{} cells per pixel, {} scale",
            options.aggregate.name(),
            br,
            bc,
            options.scale.name()
        )
    } else {
        format!(
            "{} scale, one cell = {}x{} px",
            options.scale.name(),
            pw,
            ph
        )
    });
    let text_w = |t: &str| t.chars().count() * glyph;

    let first_row = w.queries.start.to_string();
    let last_row = w.queries.end.saturating_sub(1).to_string();
    // Left of the plot: "queries" written downwards (when the plot is tall enough), then the
    // first and last query row numbers.
    let caption = "queries";
    let caption_h = caption.len() * (glyph + s);
    let vertical_caption = plot_h >= caption_h;
    let caption_w = if vertical_caption { glyph + 6 * s } else { 0 };
    let ylab_w = text_w(&first_row).max(text_w(&last_row)) + 4 * s;
    let plot_x = margin + caption_w + ylab_w + 2;
    let plot_y = margin + title.len() * line + 4 * s + line + 2;

    let bar_w = 16 * s;
    let bar_x = plot_x + plot_w + 1 + 14 * s;
    let bar_h = plot_h.max(100 * s);
    let ticks = if bar_h >= 240 * s { 5 } else { 3 };
    let labels: Vec<(f64, String)> = (0..ticks)
        .map(|k| {
            let t = k as f64 / (ticks - 1) as f64;
            (t, format_weight(value_at(t, min, max, options.scale)))
        })
        .collect();
    let label_x = bar_x + bar_w + 1 + 6 * s;
    let label_w = labels.iter().map(|(_, l)| text_w(l)).max().unwrap_or(0);
    let masked_cells = cells.iter().filter(|c| **c == Cell::Masked).count();
    let median_position = median_position(&cells, scale);
    let invalid = cells
        .iter()
        .any(|c| matches!(c, Cell::Value(v) if !v.is_finite()));
    let mut legend = Vec::new();
    if masked_cells > 0 {
        legend.push((MASK_COLOR, "masked"));
    }
    if invalid {
        legend.push((INVALID_COLOR, "NaN/inf"));
    }
    let legend_y = plot_y + bar_h + 10 * s;
    let legend_w = legend
        .iter()
        .map(|(_, t)| bar_w + 4 * s + text_w(t))
        .max()
        .unwrap_or(0);

    let title_w = title.iter().map(|t| margin + text_w(t)).max().unwrap_or(0);
    let width = (label_x + label_w).max(bar_x + legend_w).max(title_w) + margin;
    let bottom = (plot_y + plot_h + 1)
        .max(plot_y + bar_h + 1)
        .max(legend_y + legend.len() * (line + 2 * s));
    let height = bottom + margin;

    let mut img = Canvas::new(width, height);
    for (n, t) in title.iter().enumerate() {
        img.text(margin, margin + n * line, s, t, INK);
    }
    // Index labels: first/last query row on the left, first/last key above, each centred on
    // its (displayed) cell and kept apart from the other.
    let ylab_right = plot_x - 2 - 4 * s;
    let first_y = (plot_y + ph / 2).saturating_sub(glyph / 2).max(plot_y);
    img.text(ylab_right - text_w(&first_row), first_y, s, &first_row, INK);
    if m.rows() > 1 {
        let last_y = (plot_y + plot_h - ph / 2)
            .saturating_sub(glyph / 2)
            .min(plot_y + plot_h - glyph)
            .max(first_y + line);
        img.text(ylab_right - text_w(&last_row), last_y, s, &last_row, INK);
    }
    if vertical_caption {
        let top = plot_y + (plot_h - caption_h) / 2;
        for (n, ch) in caption.chars().enumerate() {
            img.text(margin, top + n * (glyph + s), s, &ch.to_string(), INK);
        }
    }
    let key_y = plot_y - 2 - line;
    let first_key = w.keys.start.to_string();
    let last_key = w.keys.end.saturating_sub(1).to_string();
    let first_x = (plot_x + pw / 2)
        .saturating_sub(text_w(&first_key) / 2)
        .max(plot_x);
    img.text(first_x, key_y, s, &first_key, INK);
    let first_end = first_x + text_w(&first_key);
    let mut last_x = first_end;
    if m.cols() > 1 {
        last_x = (plot_x + plot_w - pw / 2)
            .saturating_sub(text_w(&last_key) / 2)
            .min(plot_x + plot_w - text_w(&last_key).min(plot_w))
            .max(first_end + glyph);
        img.text(last_x, key_y, s, &last_key, INK);
    }
    let keys_caption = "keys";
    let caption_x = (plot_x + plot_w / 2).saturating_sub(text_w(keys_caption) / 2);
    if caption_x >= first_end + glyph && caption_x + text_w(keys_caption) + glyph <= last_x {
        img.text(caption_x, key_y, s, keys_caption, INK);
    }

    // Cells.
    let color_of = |c: &Cell| match c {
        Cell::Masked => MASK_COLOR,
        Cell::Value(v) if !v.is_finite() => INVALID_COLOR,
        Cell::Value(v) => options
            .colormap
            .color(position(*v, min, max, options.scale)),
    };
    for r in 0..dr {
        for c in 0..dc {
            let color = color_of(&cells[r * dc + c]);
            img.fill(plot_x + c * pw, plot_y + r * ph, pw, ph, color);
        }
    }
    img.frame(plot_x, plot_y, plot_w, plot_h);

    // Colour bar, top = max, with ticks and labels.
    for y in 0..bar_h {
        let t = 1.0 - y as f64 / (bar_h - 1).max(1) as f64;
        img.fill(bar_x, plot_y + y, bar_w, 1, options.colormap.color(t));
    }
    img.frame(bar_x, plot_y, bar_w, bar_h);
    for (t, label) in &labels {
        let y = plot_y + ((1.0 - t) * (bar_h - 1) as f64).round() as usize;
        img.fill(bar_x + bar_w + 1, y, 4 * s, s, INK);
        let ty = (y.saturating_sub(glyph / 2)).clamp(plot_y, plot_y + bar_h - glyph);
        img.text(label_x, ty, s, label, INK);
    }
    for (n, (color, label)) in legend.iter().enumerate() {
        let y = legend_y + n * (line + 2 * s);
        img.fill(bar_x, y, bar_w, glyph, *color);
        img.frame(bar_x, y, bar_w, glyph);
        img.text(bar_x + bar_w + 4 * s, y, s, label, INK);
    }

    Heatmap {
        width,
        height,
        pixels: img.pixels,
        plot: Plot {
            rect: Rect {
                x: plot_x,
                y: plot_y,
                width: plot_w,
                height: plot_h,
            },
            rows: dr,
            cols: dc,
            block_rows: br,
            block_cols: bc,
            cell_height: ph,
            cell_width: pw,
        },
        colorbar: Rect {
            x: bar_x,
            y: plot_y,
            width: bar_w,
            height: bar_h,
        },
        min,
        max,
        options: *options,
        masked_cells,
        median_position,
    }
}

impl Heatmap {
    /// The RGB colour of pixel (x, y); `None` outside the image.
    pub fn pixel(&self, x: usize, y: usize) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let at = (y * self.width + x) * 3;
        Some([self.pixels[at], self.pixels[at + 1], self.pixels[at + 2]])
    }

    /// The pixel at the centre of displayed cell (row, col).
    pub fn cell_center(&self, row: usize, col: usize) -> (usize, usize) {
        let p = &self.plot;
        (
            p.rect.x + col * p.cell_width + p.cell_width / 2,
            p.rect.y + row * p.cell_height + p.cell_height / 2,
        )
    }

    /// The colour of displayed cell (row, col); `None` outside the plot.
    pub fn cell_color(&self, row: usize, col: usize) -> Option<[u8; 3]> {
        if row >= self.plot.rows || col >= self.plot.cols {
            return None;
        }
        let (x, y) = self.cell_center(row, col);
        self.pixel(x, y)
    }

    /// The colour an unmasked cell of weight `w` gets in this image (its scale and range).
    pub fn color_of(&self, w: f32) -> [u8; 3] {
        if !w.is_finite() {
            return INVALID_COLOR;
        }
        self.options
            .colormap
            .color(position(w, self.min, self.max, self.options.scale))
    }

    /// Writes the image as an 8-bit RGB PNG with `text` as tEXt chunks (keyword, text; Latin-1,
    /// keywords of 1–79 characters), plus `Software` and the colour range (`Weight min`,
    /// `Weight max`, `Colormap`, `Scale`, `Aggregate`).
    pub fn write_png(&self, path: impl AsRef<Path>, text: &[(&str, String)]) -> Result<()> {
        let path = path.as_ref();
        let fail = |e: png::EncodingError| match e {
            png::EncodingError::IoError(source) => Error::Io {
                path: path.to_path_buf(),
                source,
            },
            other => Error::BadFile {
                path: path.to_path_buf(),
                message: format!("cannot encode the PNG: {other}"),
            },
        };
        let mut bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut bytes, self.width as u32, self.height as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut chunks: Vec<(&str, String)> = vec![
                ("Software", format!("wgattn {}", env!("CARGO_PKG_VERSION"))),
                ("Weight min", self.min.to_string()),
                ("Weight max", self.max.to_string()),
                ("Colormap", self.options.colormap.name().into()),
                ("Scale", self.options.scale.name().into()),
                (
                    "Aggregate",
                    format!(
                        "{} of {}x{} cells",
                        self.options.aggregate.name(),
                        self.plot.block_rows,
                        self.plot.block_cols
                    ),
                ),
            ];
            chunks.extend(text.iter().cloned());
            for (k, t) in chunks {
                enc.add_text_chunk(k.to_string(), t).map_err(fail)?;
            }
            let mut writer = enc.write_header().map_err(fail)?;
            writer.write_image_data(&self.pixels).map_err(fail)?;
            writer.finish().map_err(fail)?;
        }
        std::fs::write(path, bytes).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// An RGB8 drawing surface.
struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Self {
        let mut pixels = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            pixels.extend_from_slice(&BACKGROUND);
        }
        Canvas {
            width,
            height,
            pixels,
        }
    }

    fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, color: [u8; 3]) {
        for yy in y..(y + h).min(self.height) {
            let row = yy * self.width;
            for xx in x..(x + w).min(self.width) {
                let at = (row + xx) * 3;
                self.pixels[at..at + 3].copy_from_slice(&color);
            }
        }
    }

    /// A one-pixel frame just outside the rectangle.
    fn frame(&mut self, x: usize, y: usize, w: usize, h: usize) {
        let (x0, y0) = (x.saturating_sub(1), y.saturating_sub(1));
        self.fill(x0, y0, w + 2, 1, INK);
        self.fill(x0, y + h, w + 2, 1, INK);
        self.fill(x0, y0, 1, h + 2, INK);
        self.fill(x + w, y0, 1, h + 2, INK);
    }

    /// ASCII text in the 8×8 bitmap font, each font pixel drawn as `s × s`.
    fn text(&mut self, x: usize, y: usize, s: usize, text: &str, color: [u8; 3]) {
        for (n, ch) in text.chars().enumerate() {
            let code = if ch.is_ascii() {
                ch as usize
            } else {
                '?' as usize
            };
            let glyph = font8x8::legacy::BASIC_LEGACY[code];
            for (gy, bits) in glyph.iter().enumerate() {
                for gx in 0..8 {
                    if bits & (1 << gx) != 0 {
                        self.fill(x + (n * 8 + gx) * s, y + gy * s, s, s, color);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(
        rows: usize,
        cols: usize,
        f: impl Fn(usize, usize) -> Option<f32>,
    ) -> AttentionMatrix {
        let mut weights = Vec::new();
        let mut masked = Vec::new();
        for r in 0..rows {
            for c in 0..cols {
                let v = f(r, c);
                weights.push(v.unwrap_or(0.0));
                masked.push(v.is_none());
            }
        }
        let window = Window {
            batch: 0,
            head: 0,
            queries: 0..rows,
            keys: 0..cols,
        };
        AttentionMatrix::new(window, weights, masked).expect("lengths match")
    }

    #[test]
    fn mask_colour_is_far_from_every_colour_map() {
        for &name in ColorMap::NAMES {
            let map = ColorMap::parse(name).expect("known name");
            let closest = (0..=1000)
                .map(|i| {
                    let c = map.color(i as f64 / 1000.0);
                    (0..3)
                        .map(|k| (c[k] as f64 - MASK_COLOR[k] as f64).powi(2))
                        .sum::<f64>()
                        .sqrt()
                })
                .fold(f64::INFINITY, f64::min);
            assert!(
                closest > 60.0,
                "{name}: mask grey within {closest} of the map"
            );
        }
    }

    #[test]
    fn ranges_parse_and_reject() {
        assert_eq!(parse_range("r", "2..5", 7).ok(), Some(2..5));
        assert_eq!(parse_range("r", "2..", 7).ok(), Some(2..7));
        assert_eq!(parse_range("r", "..3", 7).ok(), Some(0..3));
        assert_eq!(parse_range("r", "", 7).ok(), Some(0..7));
        for bad in ["5..2", "3..3", "0..8", "a..b", "4", "-1..3"] {
            let e = parse_range("query_range", bad, 7).expect_err(bad);
            assert!(
                e.is_input_error() && e.to_string().contains("query_range"),
                "{e}"
            );
        }
    }

    #[test]
    fn small_matrices_scale_up_and_long_ones_aggregate() {
        let o = RenderOptions::default();
        assert_eq!(axis(7, &o), (1, 57));
        assert_eq!(axis(1, &o), (1, 64));
        assert_eq!(axis(1024, &o), (1, 1));
        assert_eq!(axis(4096, &o), (4, 1));
        assert_eq!(axis(4097, &o), (5, 1));
    }

    #[test]
    fn aggregation_skips_masked_cells() {
        // 4×4, lower triangle visible, value = r + c/10.
        let m = matrix(4, 4, |r, c| (c <= r).then_some(r as f32 + c as f32 / 10.0));
        let max = aggregate(&m, 2, 2, Aggregate::Max);
        assert_eq!(
            max,
            vec![
                Cell::Value(1.1),
                Cell::Masked,
                Cell::Value(3.1),
                Cell::Value(3.3)
            ]
        );
        let mean = aggregate(&m, 2, 2, Aggregate::Mean);
        let Cell::Value(v) = mean[0] else {
            panic!("visible")
        };
        assert!((v - (0.0 + 1.0 + 1.1) / 3.0).abs() < 1e-6);
    }

    #[test]
    fn degenerate_ranges_stay_drawable() {
        assert_eq!(value_range(&[Cell::Value(0.5)], Scale::Linear), (0.0, 0.5));
        assert_eq!(value_range(&[Cell::Masked], Scale::Linear), (0.0, 1.0));
        assert_eq!(
            value_range(&[Cell::Value(0.0), Cell::Value(0.25)], Scale::Log),
            (0.25 / 10.0, 0.25)
        );
        assert_eq!(position(0.0, 0.01, 1.0, Scale::Log), 0.0);
        assert!((position(0.1, 0.01, 1.0, Scale::Log) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn odd_matrices_do_not_panic() {
        let empty = matrix(0, 0, |_, _| None);
        let img = render(&empty, &RenderOptions::default());
        assert_eq!((img.plot.rows, img.plot.cols), (0, 0));
        let mut short = matrix(2, 3, |_, _| Some(0.5));
        short.weights.truncate(2);
        short.masked.truncate(4);
        let img = render(&short, &RenderOptions::default());
        assert_eq!(img.cell_color(1, 2), Some(MASK_COLOR));
        assert_eq!(img.cell_color(0, 2), Some(INVALID_COLOR));
    }

    #[test]
    fn rendered_cells_have_their_colours() {
        let m = matrix(3, 5, |r, c| (c != 4).then_some((r * 5 + c) as f32 / 20.0));
        let img = render(&m, &RenderOptions::default());
        assert_eq!(img.pixels.len(), img.width * img.height * 3);
        assert_eq!((img.plot.rows, img.plot.cols), (3, 5));
        assert_eq!(img.masked_cells, 3);
        for r in 0..3 {
            for c in 0..5 {
                let expected = if c == 4 {
                    MASK_COLOR
                } else {
                    img.color_of((r * 5 + c) as f32 / 20.0)
                };
                assert_eq!(img.cell_color(r, c), Some(expected), "cell ({r}, {c})");
            }
        }
        assert_eq!(img.cell_color(0, 0), Some(ColorMap::Viridis.color(0.0)));
        assert_eq!(img.cell_color(2, 3), Some(ColorMap::Viridis.color(1.0)));
    }
}
