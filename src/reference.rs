//! The CPU reference: exact DESIGN.md semantics with f64 accumulation. Every GPU path is tested
//! against it.

use crate::error::Result;
use crate::limits::DeviceLimits;
use crate::output::Output;
use crate::spec::AttentionSpec;

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

/// Computes attention on the CPU with f64 accumulation. Returns lse and weights when the spec
/// asks for them. Validates the spec and the inputs like the GPU path does.
pub fn attention(spec: &AttentionSpec, q: &[f32], k: &[f32], v: &[f32]) -> Result<Output> {
    spec.validate(&DeviceLimits::unbounded())?;
    spec.check_inputs(q, k, v)?;
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
            lse[i] = row(spec, q, k, v, RowId { b, h, i }, &mut row_out, &mut row_w) as f32;
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

/// Computes only the given query rows (for checking problems too large for a full reference).
pub fn attention_rows(
    spec: &AttentionSpec,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    rows: &[RowId],
) -> Result<Vec<RowOutput>> {
    spec.validate(&DeviceLimits::unbounded())?;
    spec.check_inputs(q, k, v)?;
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
    Ok(parallel_map(rows, |&r| {
        let mut out = vec![0f64; spec.head_dim];
        let mut w = vec![0f64; spec.seq_k];
        let lse = row(spec, q, k, v, r, &mut out, &mut w);
        RowOutput {
            row: r,
            out: out.into_iter().map(|x| x as f32).collect(),
            lse: lse as f32,
        }
    }))
}

/// One query row: fills `out` (head_dim) and `weights` (seq_k), returns lse.
fn row(
    spec: &AttentionSpec,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    r: RowId,
    out: &mut [f64],
    weights: &mut [f64],
) -> f64 {
    let d = spec.head_dim;
    let scale = spec.effective_scale() as f64;
    let kvh = r.h / spec.group();
    let qa = spec.q_strides().at(r.b, r.h, r.i);
    let qrow = &q[qa..qa + d];
    let ks = spec.kv_strides();
    out.fill(0.0);
    weights.fill(0.0);
    let visible = spec.visible_keys(r.b, r.i);
    if visible.is_empty() {
        return f64::NEG_INFINITY;
    }
    let mut max = f64::NEG_INFINITY;
    for j in visible.clone() {
        let ka = ks.at(r.b, kvh, j);
        let dot: f64 = qrow
            .iter()
            .zip(&k[ka..ka + d])
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum();
        weights[j] = dot * scale;
        max = max.max(weights[j]);
    }
    let mut sum = 0.0;
    for j in visible.clone() {
        weights[j] = (weights[j] - max).exp();
        sum += weights[j];
    }
    for j in visible {
        weights[j] /= sum;
        let va = ks.at(r.b, kvh, j);
        for (o, &x) in out.iter_mut().zip(&v[va..va + d]) {
            *o += weights[j] * x as f64;
        }
    }
    max + sum.ln()
}

/// Maps `f` over `items` on all cores, keeping the order.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(items.len().max(1));
    let per = items.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(per)
            .map(|chunk| s.spawn(|| chunk.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}
