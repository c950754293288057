//! Attention heat maps: the probability matrix of one (batch entry, query head) drawn as an
//! RGB image, with a perceptual colour map, masked cells in a colour outside it, a colour bar
//! with tick labels, and aggregation of blocks of cells for long sequences.
//!
//! The pure parts ([`render`], [`AttentionMatrix`], [`parse_range`]) need no GPU. The GPU part
//! is [`head_weights`]: it cuts the requested head out of a batched problem with
//! [`head_problem`] (so the probability matrix on the GPU is `Sq × Sk` of one head, not
//! `B × Hq × Sq × Sk`) and runs the three-pass kernel, the one that returns the weights.
//!
//! ```no_run
//! use wgattn::heatmap::{self, RenderOptions, Window};
//! let case = wgattn::io::read_case("case.safetensors")?;
//! let ctx = wgattn::Context::new()?;
//! let window = Window::whole(&case.spec, 0, 0);
//! let matrix = heatmap::head_weights(&ctx, &case.spec, &case.q, &case.k, &case.v, &window)?;
//! let image = heatmap::render(&matrix, &RenderOptions::default());
//! image.write_png("attn.png", &[])?;
//! # Ok::<(), wgattn::Error>(())
//! ```

use std::ops::Range;
use std::path::Path;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::limits::DeviceLimits;
use crate::spec::{AttentionSpec, CausalAlign, Kernel};

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
            problems.push(crate::SpecProblem {
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
    /// `weights` of [`reference::attention`](crate::reference::attention)); the mask is
    /// [`AttentionSpec::visible_keys`].
    pub fn from_weights(spec: &AttentionSpec, weights: &[f32], window: &Window) -> Result<Self> {
        check_spec(spec)?;
        window.check(spec)?;
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
        Ok(Self::gather(spec, window, |i, j| {
            weights[base + i * spec.seq_k + j]
        }))
    }

    /// Fills the window from `weight(i, j)` (original query row i, key j) and the spec's mask.
    fn gather(spec: &AttentionSpec, window: &Window, weight: impl Fn(usize, usize) -> f32) -> Self {
        let n = window.queries.len() * window.keys.len();
        let mut weights = Vec::with_capacity(n);
        let mut masked = Vec::with_capacity(n);
        for i in window.queries.clone() {
            let visible = spec.visible_keys(window.batch, i);
            for j in window.keys.clone() {
                weights.push(weight(i, j));
                masked.push(!visible.contains(&j));
            }
        }
        AttentionMatrix {
            window: window.clone(),
            weights,
            masked,
        }
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

/// One head of a batched problem as a problem of its own (batch 1, one query head, one key/value
/// head, `bhsd`), holding only what its window needs.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadProblem {
    /// The sub-problem: three-pass kernel, weights returned, the original effective scale.
    pub spec: AttentionSpec,
    /// Its queries: rows `first_query..first_query + spec.seq_q` of the head.
    pub q: Vec<f32>,
    /// Its keys: keys `0..spec.seq_k` of the head's key/value head.
    pub k: Vec<f32>,
    /// Its values, like `k`.
    pub v: Vec<f32>,
    /// Original index of the sub-problem's query row 0.
    pub first_query: usize,
    /// The window of the original problem it was cut for.
    pub window: Window,
    /// The original problem's spec (for the mask).
    pub original: AttentionSpec,
}

/// Cuts the query head `window.head` of batch entry `window.batch` out of `spec`'s tensors
/// (any layout; the key/value head is `head / group`), keeping the scale, the causal mask and
/// `kv_lens[batch]`.
///
/// Only the query rows of the window are kept when that leaves every row's mask unchanged, and
/// keys past the last key any of those rows can see are dropped (their weights are 0): with a
/// causal mask the sub-problem uses bottom-right alignment with `seq_k` chosen so that its
/// offset equals the original row offset. When that is impossible (top-left alignment with the
/// window ending past `seq_k`), rows from 0 are kept, since a top-left mask does not depend on
/// `seq_q`.
pub fn head_problem(
    spec: &AttentionSpec,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    window: &Window,
) -> Result<HeadProblem> {
    check_spec(spec)?;
    spec.check_inputs(q, k, v)?;
    window.check(spec)?;
    let (b, h) = (window.batch, window.head);
    let kvh = h / spec.group();
    let len = spec.kv_lens.as_ref().map(|l| l[b]);
    let (a, e) = (window.queries.start, window.queries.end);
    // (query rows, keys 0..n, causal alignment, kv_len) of the sub-problem.
    let (rows, keys, causal, kv_len) = match spec.causal_offset() {
        None => (a..e, spec.seq_k, None, len),
        Some(off) => {
            // Row i sees keys < i + off + 1; the last row of the window, e − 1, sees < e + off.
            let needed = e as i64 + off;
            if needed > spec.seq_k as i64 {
                (0..e, spec.seq_k, Some(CausalAlign::TopLeft), len)
            } else if needed < 1 {
                // Every row of the window is fully masked: one key, none of it visible.
                (a..e, 1, None, Some(0))
            } else {
                let n = needed as usize;
                (
                    a..e,
                    n,
                    Some(CausalAlign::BottomRight),
                    len.map(|l| l.min(n as u32)),
                )
            }
        }
    };
    let d = spec.head_dim;
    let (qs, ks) = (spec.q_strides(), spec.kv_strides());
    let mut sq = Vec::with_capacity(rows.len() * d);
    for i in rows.clone() {
        let at = qs.at(b, h, i);
        sq.extend_from_slice(&q[at..at + d]);
    }
    let mut sk = Vec::with_capacity(keys * d);
    let mut sv = Vec::with_capacity(keys * d);
    for j in 0..keys.min(spec.seq_k) {
        let at = ks.at(b, kvh, j);
        sk.extend_from_slice(&k[at..at + d]);
        sv.extend_from_slice(&v[at..at + d]);
    }
    let mut sub = AttentionSpec::new(1, 1, 1, rows.len(), keys, d)
        .scale(spec.effective_scale())
        .causal(causal)
        .kernel(Kernel::ThreePass)
        .with_weights(true);
    if let Some(l) = kv_len {
        sub = sub.kv_lens(vec![l]);
    }
    Ok(HeadProblem {
        spec: sub,
        q: sq,
        k: sk,
        v: sv,
        first_query: rows.start,
        window: window.clone(),
        original: spec.clone(),
    })
}

impl HeadProblem {
    /// The window's [`AttentionMatrix`] from the sub-problem's probability matrix
    /// (`[1, 1, spec.seq_q, spec.seq_k]`), masked by the original spec.
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
        let first = self.first_query;
        Ok(AttentionMatrix::gather(
            &self.original,
            &self.window,
            |i, j| {
                if j < keys {
                    weights[(i - first) * keys + j]
                } else {
                    0.0
                }
            },
        ))
    }
}

/// Computes the window's probabilities on the GPU (three-pass kernel on the head's
/// sub-problem, see [`head_problem`]).
pub fn head_weights(
    ctx: &Context,
    spec: &AttentionSpec,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    window: &Window,
) -> Result<AttentionMatrix> {
    let problem = head_problem(spec, q, k, v, window)?;
    let out = ctx.attention(&problem.spec, &problem.q, &problem.k, &problem.v)?;
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
