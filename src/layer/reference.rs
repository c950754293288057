//! The f64 CPU reference of the multi-head attention layer: positional encoding, projections
//! and rotary embedding in f64, attention by [`crate::reference`] (f64 accumulation; q, k
//! and v handed to it as f32), the output projection and the residual in f64.

use crate::error::Result;
use crate::spec::{AttentionSpec, DType, Inputs};

use super::config::{MhaConfig, PositionEncoding, RopePairing, sinusoidal_table};
use super::mha::{MhaInputs, MhaOutput};
use super::weights::{LinearWeights, MhaWeights};

/// `x·Wᵀ + b` for `rows` rows of `w.in_features`, in f64.
pub fn linear(x: &[f64], rows: usize, w: &LinearWeights) -> Vec<f64> {
    let (n, k) = (w.out_features, w.in_features);
    let mut y = vec![0f64; rows * n];
    for r in 0..rows {
        let xr = &x[r * k..(r + 1) * k];
        for c in 0..n {
            let wr = &w.weight[c * k..(c + 1) * k];
            let mut acc = w.bias.as_ref().map_or(0.0, |b| b[c] as f64);
            for (a, b) in xr.iter().zip(wr) {
                acc += a * *b as f64;
            }
            y[r * n + c] = acc;
        }
    }
    y
}

/// Rotates the `[rows, heads·head_dim]` matrix `y` in place by the rotary embedding of
/// `config` (if any); row `r` of batch entry `b` is at position `start[b] + r % seq`.
fn rope(y: &mut [f64], seq: usize, heads: usize, config: &MhaConfig, start: &[u32]) {
    let PositionEncoding::Rotary(r) = config.position else {
        return;
    };
    let d = config.head_dim;
    let dims = r.rotated(d);
    let half = dims / 2;
    for (row, chunk) in y.chunks_mut(heads * d).enumerate() {
        let pos = (start[row / seq] as usize + row % seq) as f64;
        for head in chunk.chunks_mut(d) {
            for i in 0..half {
                let (a, b) = match r.pairing {
                    RopePairing::Half => (i, i + half),
                    RopePairing::Interleaved => (2 * i, 2 * i + 1),
                };
                let angle = pos * r.base.powf(-2.0 * i as f64 / dims as f64);
                let (s, c) = angle.sin_cos();
                let (x1, x2) = (head[a], head[b]);
                head[a] = x1 * c - x2 * s;
                head[b] = x2 * c + x1 * s;
            }
        }
    }
}

/// `[B·S, H·D]` rows → the attention layout of `spec` (as f32).
fn to_layout(y: &[f64], spec: &AttentionSpec, heads: usize, seq: usize) -> Vec<f32> {
    let d = spec.head_dim;
    let st = spec_strides(spec, heads, seq);
    let mut out = vec![0f32; spec.batch * heads * seq * d];
    for b in 0..spec.batch {
        for s in 0..seq {
            for h in 0..heads {
                let src = ((b * seq + s) * heads + h) * d;
                let dst = st.at(b, h, s);
                for i in 0..d {
                    out[dst + i] = y[src + i] as f32;
                }
            }
        }
    }
    out
}

fn spec_strides(spec: &AttentionSpec, heads: usize, seq: usize) -> crate::spec::Strides {
    let probe =
        AttentionSpec::new(spec.batch, heads, heads, seq, seq, spec.head_dim).layout(spec.layout);
    probe.q_strides()
}

/// The layer of `config` with `weights` on `inputs` for `spec` (as
/// [`MultiHeadAttention::forward_at`](super::MultiHeadAttention::forward_at) runs it), each
/// batch entry's first query at position `start[b]`. With an f16 layer the reference is
/// still f32/f64 (compare with an f16 tolerance).
pub fn mha(
    config: &MhaConfig,
    weights: &MhaWeights,
    spec: &AttentionSpec,
    inputs: &MhaInputs,
    start: &[u32],
) -> Result<MhaOutput> {
    config.validate()?;
    weights.check(config)?;
    let (b, s, skv) = (spec.batch, spec.seq_q, spec.seq_k);
    let e = config.embed_dim;
    let mut x: Vec<f64> = inputs.x.iter().map(|&v| v as f64).collect();
    let table = match config.position {
        PositionEncoding::Sinusoidal { max_positions } => Some(sinusoidal_table(max_positions, e)),
        PositionEncoding::Learned { .. } => weights.positions.clone(),
        _ => None,
    };
    if let Some(t) = &table {
        for (row, chunk) in x.chunks_mut(e).enumerate() {
            let p = start[row / s] as usize + row % s;
            for (v, &pe) in chunk.iter_mut().zip(&t[p * e..(p + 1) * e]) {
                *v += pe as f64;
            }
        }
    }
    let memory: Vec<f64> = match inputs.memory {
        Some(m) => m.iter().map(|&v| v as f64).collect(),
        None => x.clone(),
    };
    let (wq, wk, wv) = weights.split(config);
    let mut q = linear(&x, b * s, &wq);
    let mut k = linear(&memory, b * skv, &wk);
    let v = linear(&memory, b * skv, &wv);
    rope(&mut q, s, config.num_heads, config, start);
    rope(&mut k, skv, config.num_kv_heads, config, start);
    let qh = to_layout(&q, spec, config.num_heads, s);
    let kh = to_layout(&k, spec, config.num_kv_heads, skv);
    let vh = to_layout(&v, spec, config.num_kv_heads, skv);
    let aspec = spec.clone().dtype(DType::F32);
    let mut ai = Inputs::new(&qh[..], &kh[..], &vh[..]);
    ai.bias = inputs.bias.map(Into::into);
    ai.mask = inputs.mask;
    let att = crate::reference::attention_with(&aspec, &ai)?;
    // Back to [B·S, H·D] rows.
    let d = config.head_dim;
    let hq = config.num_heads;
    let st = spec_strides(spec, hq, s);
    let mut merged = vec![0f64; b * s * hq * d];
    for bi in 0..b {
        for si in 0..s {
            for h in 0..hq {
                let src = st.at(bi, h, si);
                let dst = ((bi * s + si) * hq + h) * d;
                for i in 0..d {
                    merged[dst + i] = att.out[src + i] as f64;
                }
            }
        }
    }
    let mut out = linear(&merged, b * s, &weights.o);
    if config.residual {
        for (o, xv) in out.iter_mut().zip(&x) {
            *o += xv;
        }
    }
    Ok(MhaOutput {
        out: out.into_iter().map(|v| v as f32).collect(),
        weights: att.weights,
    })
}
