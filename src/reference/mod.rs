//! The CPU reference: the semantics of the README ("Semantics") exactly, with f64
//! accumulation. Every GPU path is tested against it. [`attention_f16_plain`] is the "plain
//! f16 implementation" that bounds the tolerance of the f16 paths. Pure: it names no GPU
//! module (a test of the crate's layers keeps it so).

use half::f16;

mod backward;
pub use backward::{attention_backward, attention_backward_f16_plain};

use crate::error::Result;
use crate::spec::{AttentionSpec, DType, DeviceLimits, Inputs, Output};

/// One query row, named by batch entry, query head and row index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RowId {
    /// Batch entry.
    pub b: usize,
    /// Query head.
    pub h: usize,
    /// Query row.
    pub i: usize,
}

/// The reference result for one query row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowOutput {
    /// Which row.
    pub row: RowId,
    /// Output vector (head_dim values).
    pub out: Vec<f32>,
    /// Log-sum-exp of the row (−∞ when fully masked).
    pub lse: f32,
}

/// Computes attention on the CPU with f64 accumulation from f32 slices (no bias or mask).
pub fn attention(spec: &AttentionSpec, q: &[f32], k: &[f32], v: &[f32]) -> Result<Output> {
    attention_with(spec, &Inputs::new(q, k, v))
}

/// Computes attention on the CPU with f64 accumulation. Returns lse and weights when the spec
/// asks for them. With `dtype` f16 the inputs are first rounded to f16, as the GPU sees them;
/// the output is not rounded (it is the exact answer for those inputs).
pub fn attention_with(spec: &AttentionSpec, inputs: &Inputs) -> Result<Output> {
    compute(spec, inputs, Precision::F64)
}

/// A plain f16 implementation: f16 inputs, logits and probabilities rounded to f16, f32
/// accumulation, output rounded to f16. The f16 GPU paths are held to twice its error
/// against [`attention_with`] (plus 1e-5), as FlashAttention's tests do.
pub fn attention_f16_plain(spec: &AttentionSpec, inputs: &Inputs) -> Result<Output> {
    compute(&spec.clone().dtype(DType::F16), inputs, Precision::PlainF16)
}

/// Computes only the given query rows (for checking problems too large for a full reference).
pub fn attention_rows(
    spec: &AttentionSpec,
    inputs: &Inputs,
    rows: &[RowId],
) -> Result<Vec<RowOutput>> {
    rows_with(spec, inputs, rows, Precision::F64)
}

/// [`attention_f16_plain`] for the given query rows only.
pub fn attention_rows_f16_plain(
    spec: &AttentionSpec,
    inputs: &Inputs,
    rows: &[RowId],
) -> Result<Vec<RowOutput>> {
    rows_with(
        &spec.clone().dtype(DType::F16),
        inputs,
        rows,
        Precision::PlainF16,
    )
}

fn rows_with(
    spec: &AttentionSpec,
    inputs: &Inputs,
    rows: &[RowId],
    precision: Precision,
) -> Result<Vec<RowOutput>> {
    spec.validate(&DeviceLimits::unbounded())?;
    spec.check_inputs(inputs)?;
    for r in rows {
        if r.b >= spec.batch || r.h >= spec.q_heads || r.i >= spec.seq_q {
            return Err(crate::Error::spec(
                "row",
                format!("({}, {}, {})", r.b, r.h, r.i),
                format!(
                    "is outside batch = {}, q_heads = {}, seq_q = {}",
                    spec.batch, spec.q_heads, spec.seq_q
                ),
            ));
        }
    }
    let data = Data::new(spec, inputs);
    Ok(parallel_map(rows, |&r| {
        let mut out = vec![0f64; spec.head_dim];
        let mut w = vec![0f64; spec.seq_k];
        let lse = row(spec, &data, r, &mut out, &mut w, precision);
        RowOutput {
            row: r,
            out: out.into_iter().map(|x| x as f32).collect(),
            lse: lse as f32,
        }
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precision {
    F64,
    PlainF16,
}

/// The inputs as f32 (rounded through f16 when the spec stores f16), plus the ALiBi slopes.
struct Data<'a> {
    q: std::borrow::Cow<'a, [f32]>,
    k: std::borrow::Cow<'a, [f32]>,
    v: std::borrow::Cow<'a, [f32]>,
    bias: Option<std::borrow::Cow<'a, [f32]>>,
    mask: Option<&'a [bool]>,
    slopes: Option<Vec<f32>>,
}

impl<'a> Data<'a> {
    fn new(spec: &AttentionSpec, inputs: &Inputs<'a>) -> Self {
        let stored = |t: &crate::spec::Tensor<'a>| match spec.dtype {
            DType::F32 => t.to_f32(),
            DType::F16 => std::borrow::Cow::Owned(t.to_f16().iter().map(|x| x.to_f32()).collect()),
        };
        Data {
            q: stored(&inputs.q),
            k: stored(&inputs.k),
            v: stored(&inputs.v),
            bias: inputs.bias.as_ref().map(|b| b.to_f32()),
            mask: inputs.mask,
            slopes: spec.alibi.as_ref().map(|a| a.slopes(spec.q_heads)),
        }
    }
}

fn compute(spec: &AttentionSpec, inputs: &Inputs, precision: Precision) -> Result<Output> {
    spec.validate(&DeviceLimits::unbounded())?;
    spec.check_inputs(inputs)?;
    let data = Data::new(spec, inputs);
    let (d, sq, sk) = (spec.head_dim, spec.seq_q, spec.seq_k);
    let pairs: Vec<(usize, usize)> = (0..spec.batch)
        .flat_map(|b| (0..spec.q_heads).map(move |h| (b, h)))
        .collect();
    // One (b, h) pair per task; results are scattered afterwards (the layouts interleave rows).
    let per_pair = parallel_map(&pairs, |&(b, h)| {
        let mut out = vec![0f32; sq * d];
        let mut lse = vec![0f32; sq];
        let mut weights = spec.return_weights.then(|| vec![0f32; sq * sk]);
        let mut row_out = vec![0f64; d];
        let mut row_w = vec![0f64; sk];
        for i in 0..sq {
            lse[i] = row(
                spec,
                &data,
                RowId { b, h, i },
                &mut row_out,
                &mut row_w,
                precision,
            ) as f32;
            for (o, &x) in out[i * d..(i + 1) * d].iter_mut().zip(&row_out) {
                *o = x as f32;
            }
            if let Some(w) = weights.as_mut() {
                for (o, &x) in w[i * sk..(i + 1) * sk].iter_mut().zip(&row_w) {
                    *o = x as f32;
                }
            }
        }
        (out, lse, weights)
    });
    let qs = spec.q_strides();
    let mut result = Output {
        out: vec![0f32; spec.q_len()],
        lse: spec.return_lse.then(|| vec![0f32; spec.lse_len()]),
        weights: spec.return_weights.then(|| vec![0f32; spec.weights_len()]),
    };
    for (&(b, h), (out, lse, weights)) in pairs.iter().zip(per_pair) {
        for i in 0..sq {
            let at = qs.at(b, h, i);
            result.out[at..at + d].copy_from_slice(&out[i * d..(i + 1) * d]);
        }
        let row0 = (b * spec.q_heads + h) * sq;
        if let Some(all) = result.lse.as_mut() {
            all[row0..row0 + sq].copy_from_slice(&lse);
        }
        if let (Some(all), Some(w)) = (result.weights.as_mut(), weights) {
            all[row0 * sk..(row0 + sq) * sk].copy_from_slice(&w);
        }
    }
    Ok(result)
}

/// Rounds through f16 in the plain-f16 mode.
fn round(x: f64, precision: Precision) -> f64 {
    match precision {
        Precision::F64 => x,
        Precision::PlainF16 => f16::from_f64(x).to_f64(),
    }
}

/// One query row: fills `out` (head_dim) and `weights` (seq_k), returns lse.
fn row(
    spec: &AttentionSpec,
    data: &Data,
    r: RowId,
    out: &mut [f64],
    weights: &mut [f64],
    precision: Precision,
) -> f64 {
    let d = spec.head_dim;
    let scale = spec.effective_scale() as f64;
    let kvh = r.h / spec.group();
    let qa = spec.q_strides().at(r.b, r.h, r.i);
    let qrow = &data.q[qa..qa + d];
    let ks = spec.kv_strides();
    let diag = r.i as i64 + spec.align_offset();
    out.fill(0.0);
    weights.fill(0.0);
    // Logits of the visible keys; None where the mask tensor or a −∞ bias hides the key.
    let visible = spec.visible_keys(r.b, r.i);
    let mut logits: Vec<(usize, f64)> = Vec::with_capacity(visible.len());
    for j in visible {
        if let (Some(mask), Some(m)) = (data.mask, spec.mask)
            && !mask[m.index(spec, r.b, r.h, r.i, j)]
        {
            continue;
        }
        let ka = ks.at(r.b, kvh, j);
        let dot = match precision {
            Precision::F64 => qrow
                .iter()
                .zip(&data.k[ka..ka + d])
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>(),
            Precision::PlainF16 => qrow
                .iter()
                .zip(&data.k[ka..ka + d])
                .map(|(&a, &b)| a * b)
                .sum::<f32>() as f64,
        };
        let mut s = dot * scale;
        if let Some(cap) = spec.softcap {
            s = cap as f64 * (s / cap as f64).tanh();
        }
        if let Some(slopes) = &data.slopes {
            s -= slopes[r.h] as f64 * (diag - j as i64).abs() as f64;
        }
        if let (Some(bias), Some(bb)) = (&data.bias, spec.bias) {
            s += bias[bb.index(spec, r.b, r.h, r.i, j)] as f64;
        }
        // The masking rule of every kernel (crate::MASKED_LOGIT): −∞ and anything at or
        // below −1e38 mask the key.
        if s <= crate::spec::MASKED_LOGIT as f64 {
            continue;
        }
        logits.push((j, round(s, precision)));
    }
    if logits.is_empty() {
        return f64::NEG_INFINITY;
    }
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, &(_, s)| m.max(s));
    let sum: f64 = logits.iter().map(|&(_, s)| (s - max).exp()).sum();
    for &(j, s) in &logits {
        let p = round((s - max).exp() / sum, precision);
        weights[j] = p;
        let va = ks.at(r.b, kvh, j);
        for (o, &x) in out.iter_mut().zip(&data.v[va..va + d]) {
            *o += p * x as f64;
        }
    }
    if precision == Precision::PlainF16 {
        for o in out.iter_mut() {
            *o = round(*o as f32 as f64, precision);
        }
    }
    max + sum.ln()
}

/// Maps `f` over `items` on all cores (rayon's global pool), keeping the order.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync + Send) -> Vec<R> {
    use rayon::prelude::*;
    items.par_iter().map(f).collect()
}
