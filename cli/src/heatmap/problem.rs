//! One head's problem cut out of a batched one: only its query rows and keys, every mask,
//! bias and ALiBi term kept, so that the GPU's probability matrix is at most `Sq × Sk` of one
//! head.

use std::ops::Range;

use wgattn::Context;
use wgattn::DeviceLimits;
use wgattn::{Alibi, AttentionSpec, Broadcast, CausalAlign, Kernel, Window as SlidingWindow};
use wgattn::{Error, Result};
use wgattn::{Inputs, Tensor};

use super::window::{AttentionMatrix, Window};

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
