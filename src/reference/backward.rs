//! The CPU reference of the backward pass: exact gradients of the forward semantics (the same
//! masks, modifiers and scale as [`super::attention_with`]) from the analytic formulas, with
//! f64 accumulation. The softmax is recomputed here in f64; the forward's `out` and `lse` are
//! not inputs.
//!
//! For one row with visible keys `j` (logit `s_j`, scaled dot product `x_j = scale·q·k_j`,
//! `s_j = cap·tanh(x_j / cap) + alibi + bias`):
//! `P_j = softmax(s)_j`, `dP_j = dO·v_j`, `D = Σ_j P_j·dP_j (= dO·O)`,
//! `dS_j = P_j·(dP_j − D)` (= dbias), `dX_j = dS_j·(1 − tanh²(x_j / cap))`,
//! `dq = scale·Σ_j dX_j·k_j`, `dk_j += scale·dX_j·q`, `dv_j += P_j·dO`.
//! Fully masked rows contribute nothing (zero gradients).

use half::f16;

use crate::error::Result;
use crate::spec::{AttentionSpec, DType, DeviceLimits, Grads, Inputs, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precision {
    F64,
    PlainF16,
}

/// Gradients of attention with respect to q, k, v (and the bias when the spec declares one),
/// for the upstream gradient `d_out` (same shape and layout as q), computed in f64. With dtype
/// f16 the inputs and `d_out` are rounded to f16 first, as the GPU sees them; the gradients are
/// not rounded. `dbias` has the bias's broadcast shape: broadcast dimensions are summed.
pub fn attention_backward(spec: &AttentionSpec, inputs: &Inputs, d_out: Tensor) -> Result<Grads> {
    compute(spec, inputs, d_out, Precision::F64)
}

/// A plain f16 backward: f16 inputs, probabilities, `dP` and `dS` rounded to f16, f32
/// accumulation, gradients rounded to f16. The f16 GPU backward is held to twice its error
/// against [`attention_backward`] (plus 1e-5), the forward's rule.
pub fn attention_backward_f16_plain(
    spec: &AttentionSpec,
    inputs: &Inputs,
    d_out: Tensor,
) -> Result<Grads> {
    compute(
        &spec.clone().dtype(DType::F16),
        inputs,
        d_out,
        Precision::PlainF16,
    )
}

fn round(x: f64, precision: Precision) -> f64 {
    match precision {
        Precision::F64 => x,
        Precision::PlainF16 => f16::from_f64(x).to_f64(),
    }
}

/// Per (batch, kv head) task: dq rows of its query heads, dk/dv of its kv head, and the dS
/// matrices of its query heads when a bias is declared.
struct Part {
    dq: Vec<f64>,
    dk: Vec<f64>,
    dv: Vec<f64>,
    ds: Vec<f64>,
}

fn compute(
    spec: &AttentionSpec,
    inputs: &Inputs,
    d_out: Tensor,
    precision: Precision,
) -> Result<Grads> {
    spec.validate(&DeviceLimits::unbounded())?;
    spec.check_inputs(inputs)?;
    spec.check_d_out(&d_out)?;
    let stored = |t: &Tensor| -> Vec<f64> {
        match spec.dtype {
            DType::F32 => t.to_f32().iter().map(|&x| x as f64).collect(),
            DType::F16 => t.to_f16().iter().map(|x| x.to_f64()).collect(),
        }
    };
    let (q, k, v, dout) = (
        stored(&inputs.q),
        stored(&inputs.k),
        stored(&inputs.v),
        stored(&d_out),
    );
    let bias: Option<Vec<f32>> = inputs.bias.as_ref().map(|b| b.to_f32().into_owned());
    let slopes = spec.alibi.as_ref().map(|a| a.slopes(spec.q_heads));
    let (d, sq, sk, group) = (spec.head_dim, spec.seq_q, spec.seq_k, spec.group());
    let scale = spec.effective_scale() as f64;
    let (qs, ks) = (spec.q_strides(), spec.kv_strides());
    let tasks: Vec<(usize, usize)> = (0..spec.batch)
        .flat_map(|b| (0..spec.kv_heads).map(move |g| (b, g)))
        .collect();
    let dot = |a: &[f64], b: &[f64]| -> f64 {
        match precision {
            Precision::F64 => a.iter().zip(b).map(|(x, y)| x * y).sum(),
            Precision::PlainF16 => a
                .iter()
                .zip(b)
                .map(|(&x, &y)| x as f32 * y as f32)
                .sum::<f32>() as f64,
        }
    };
    let parts = parallel_map(&tasks, |&(b, g)| {
        let mut part = Part {
            dq: vec![0.0; group * sq * d],
            dk: vec![0.0; sk * d],
            dv: vec![0.0; sk * d],
            ds: if spec.bias.is_some() {
                vec![0.0; group * sq * sk]
            } else {
                Vec::new()
            },
        };
        // (key, scaled dot x, logit s) of the visible keys of one row
        let mut keys: Vec<(usize, f64, f64)> = Vec::with_capacity(sk);
        for hh in 0..group {
            let h = g * group + hh;
            for i in 0..sq {
                let qa = qs.at(b, h, i);
                let (qrow, dorow) = (&q[qa..qa + d], &dout[qa..qa + d]);
                let diag = i as i64 + spec.align_offset();
                keys.clear();
                for j in spec.visible_keys(b, i) {
                    if let (Some(mask), Some(m)) = (inputs.mask, spec.mask)
                        && !mask[m.index(spec, b, h, i, j)]
                    {
                        continue;
                    }
                    let ka = ks.at(b, g, j);
                    let x = dot(qrow, &k[ka..ka + d]) * scale;
                    let mut s = x;
                    if let Some(cap) = spec.softcap {
                        s = cap as f64 * (x / cap as f64).tanh();
                    }
                    if let Some(sl) = &slopes {
                        s -= sl[h] as f64 * (diag - j as i64).abs() as f64;
                    }
                    if let (Some(bias), Some(bb)) = (&bias, spec.bias) {
                        s += bias[bb.index(spec, b, h, i, j)] as f64;
                    }
                    if s == f64::NEG_INFINITY {
                        continue;
                    }
                    keys.push((j, x, round(s, precision)));
                }
                if keys.is_empty() {
                    continue;
                }
                let max = keys
                    .iter()
                    .fold(f64::NEG_INFINITY, |m, &(_, _, s)| m.max(s));
                let sum: f64 = keys.iter().map(|&(_, _, s)| (s - max).exp()).sum();
                // P_j and dP_j, then D = Σ P·dP
                let pdp: Vec<(f64, f64)> = keys
                    .iter()
                    .map(|&(j, _, s)| {
                        let va = ks.at(b, g, j);
                        (
                            round((s - max).exp() / sum, precision),
                            round(dot(dorow, &v[va..va + d]), precision),
                        )
                    })
                    .collect();
                let dd: f64 = pdp.iter().map(|&(p, dp)| p * dp).sum();
                let dq = &mut part.dq[(hh * sq + i) * d..(hh * sq + i + 1) * d];
                for (&(j, x, _), &(p, dp)) in keys.iter().zip(&pdp) {
                    let ds = round(p * (dp - dd), precision);
                    if !part.ds.is_empty() {
                        part.ds[(hh * sq + i) * sk + j] = ds;
                    }
                    let dx = match spec.softcap {
                        Some(cap) => {
                            let t = (x / cap as f64).tanh();
                            ds * (1.0 - t * t)
                        }
                        None => ds,
                    };
                    let ka = ks.at(b, g, j);
                    let (dk, dv) = (
                        &mut part.dk[j * d..(j + 1) * d],
                        &mut part.dv[j * d..(j + 1) * d],
                    );
                    for t in 0..d {
                        dq[t] += scale * dx * k[ka + t];
                        dk[t] += scale * dx * qrow[t];
                        dv[t] += p * dorow[t];
                    }
                }
            }
        }
        part
    });
    let out = |x: f64| round(x, precision) as f32;
    let mut grads = Grads {
        dq: vec![0.0; spec.q_len()],
        dk: vec![0.0; spec.kv_len()],
        dv: vec![0.0; spec.kv_len()],
        dbias: spec.bias.map(|bb| vec![0.0; bb.len(spec)]),
    };
    let mut dbias64: Option<Vec<f64>> = spec.bias.map(|bb| vec![0.0; bb.len(spec)]);
    for (&(b, g), part) in tasks.iter().zip(parts) {
        for hh in 0..group {
            let h = g * group + hh;
            for i in 0..sq {
                let at = qs.at(b, h, i);
                let src = &part.dq[(hh * sq + i) * d..(hh * sq + i + 1) * d];
                for (o, &x) in grads.dq[at..at + d].iter_mut().zip(src) {
                    *o = out(x);
                }
                if let (Some(all), Some(bb)) = (dbias64.as_mut(), spec.bias) {
                    let row = &part.ds[(hh * sq + i) * sk..(hh * sq + i + 1) * sk];
                    let at = bb.index(spec, b, h, i, 0);
                    for (o, &x) in all[at..at + sk].iter_mut().zip(row) {
                        *o += x;
                    }
                }
            }
        }
        for j in 0..sk {
            let at = ks.at(b, g, j);
            for t in 0..d {
                grads.dk[at + t] = out(part.dk[j * d + t]);
                grads.dv[at + t] = out(part.dv[j * d + t]);
            }
        }
    }
    if let (Some(dst), Some(src)) = (grads.dbias.as_mut(), dbias64) {
        for (o, x) in dst.iter_mut().zip(src) {
            *o = out(x);
        }
    }
    Ok(grads)
}

/// Maps `f` over `items` on all cores, keeping the order.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(items.len().max(1));
    if threads <= 1 {
        // One core, or no threads at all (WebAssembly): map on this thread.
        return items.iter().map(&f).collect();
    }
    let per = items.len().div_ceil(threads).max(1);
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

#[cfg(test)]
mod tests {
    //! Finite-difference check of the analytic gradients on tiny shapes: the loss
    //! `L = Σ d_out ∘ out` is differentiated numerically (central differences of an f64
    //! forward that is itself checked against `reference::attention_with`).

    use super::*;
    use crate::spec::{Alibi, Broadcast, CausalAlign, Layout};
    use crate::testdata::Rng;

    /// f64 forward with the reference's semantics: out in the layout of q.
    fn forward64(
        spec: &AttentionSpec,
        q: &[f64],
        k: &[f64],
        v: &[f64],
        bias: Option<&[f64]>,
        mask: Option<&[bool]>,
    ) -> Vec<f64> {
        let (d, g) = (spec.head_dim, spec.group());
        let (qs, ks) = (spec.q_strides(), spec.kv_strides());
        let scale = spec.effective_scale() as f64;
        let slopes = spec.alibi.as_ref().map(|a| a.slopes(spec.q_heads));
        let mut out = vec![0.0; spec.q_len()];
        for b in 0..spec.batch {
            for h in 0..spec.q_heads {
                for i in 0..spec.seq_q {
                    let qa = qs.at(b, h, i);
                    let diag = i as i64 + spec.align_offset();
                    let mut logits = Vec::new();
                    for j in spec.visible_keys(b, i) {
                        if let (Some(m), Some(bm)) = (mask, spec.mask)
                            && !m[bm.index(spec, b, h, i, j)]
                        {
                            continue;
                        }
                        let ka = ks.at(b, h / g, j);
                        let mut s: f64 = (0..d).map(|t| q[qa + t] * k[ka + t]).sum::<f64>() * scale;
                        if let Some(cap) = spec.softcap {
                            s = cap as f64 * (s / cap as f64).tanh();
                        }
                        if let Some(sl) = &slopes {
                            s -= sl[h] as f64 * (diag - j as i64).abs() as f64;
                        }
                        if let (Some(x), Some(bb)) = (bias, spec.bias) {
                            s += x[bb.index(spec, b, h, i, j)];
                        }
                        if s > f64::NEG_INFINITY {
                            logits.push((j, s));
                        }
                    }
                    let max = logits.iter().fold(f64::NEG_INFINITY, |m, x| m.max(x.1));
                    let sum: f64 = logits.iter().map(|x| (x.1 - max).exp()).sum();
                    for &(j, s) in &logits {
                        let p = (s - max).exp() / sum;
                        let va = ks.at(b, h / g, j);
                        for t in 0..d {
                            out[qa + t] += p * v[va + t];
                        }
                    }
                }
            }
        }
        out
    }

    fn f64s(x: &[f32]) -> Vec<f64> {
        x.iter().map(|&v| v as f64).collect()
    }

    /// Checks every gradient of `spec` against central differences; returns how many
    /// non-zero gradient entries were checked.
    fn fd_check(spec: &AttentionSpec, seed: u64) -> usize {
        let mut rng = Rng::new(seed);
        let q = rng.normals(spec.q_len(), 0.0, 1.0);
        let k = rng.normals(spec.kv_len(), 0.0, 1.0);
        let v = rng.normals(spec.kv_len(), 0.0, 1.0);
        let d_out = rng.normals(spec.q_len(), 0.0, 1.0);
        let mut bias = spec.bias.map(|bb| rng.normals(bb.len(spec), 0.0, 1.0));
        if let Some(b) = bias.as_mut() {
            b[1] = f32::NEG_INFINITY; // a masked key: zero gradient everywhere it acts
        }
        let mask: Option<Vec<bool>> = spec
            .mask
            .map(|m| (0..m.len(spec)).map(|_| rng.uniform() > 0.3).collect());
        let mut inputs = Inputs::new(&q, &k, &v);
        if let Some(b) = &bias {
            inputs = inputs.with_bias(b);
        }
        if let Some(m) = &mask {
            inputs = inputs.with_mask(m);
        }
        let grads = attention_backward(spec, &inputs, Tensor::F32(&d_out)).unwrap();
        // The f64 forward used for differences agrees with the crate's reference forward.
        let (q64, k64, v64) = (f64s(&q), f64s(&k), f64s(&v));
        let bias64 = bias.as_deref().map(f64s);
        let base = forward64(spec, &q64, &k64, &v64, bias64.as_deref(), mask.as_deref());
        let reference = super::super::attention_with(spec, &inputs).unwrap();
        for (a, b) in base.iter().zip(&reference.out) {
            assert!(
                (a - *b as f64).abs() <= 1e-5 * (1.0 + a.abs()),
                "{a} vs {b}"
            );
        }
        let loss = |o: &[f64]| {
            o.iter()
                .zip(&d_out)
                .map(|(a, &g)| a * g as f64)
                .sum::<f64>()
        };
        let eps = 1e-5;
        let mut checked = 0;
        let mut check = |name: &str, analytic: &[f32], which: usize| {
            let n = analytic.len();
            for idx in 0..n {
                let mut tensors = [
                    q64.clone(),
                    k64.clone(),
                    v64.clone(),
                    bias64.clone().unwrap_or_default(),
                ];
                if which == 3 && !tensors[3][idx].is_finite() {
                    assert_eq!(analytic[idx], 0.0, "{name}[{idx}] behind a -inf bias");
                    continue;
                }
                let x0 = tensors[which][idx];
                tensors[which][idx] = x0 + eps;
                let bias_p = (which == 3).then(|| tensors[3].clone());
                let plus = loss(&forward64(
                    spec,
                    &tensors[0],
                    &tensors[1],
                    &tensors[2],
                    bias_p.as_deref().or(bias64.as_deref()),
                    mask.as_deref(),
                ));
                tensors[which][idx] = x0 - eps;
                let bias_m = (which == 3).then(|| tensors[3].clone());
                let minus = loss(&forward64(
                    spec,
                    &tensors[0],
                    &tensors[1],
                    &tensors[2],
                    bias_m.as_deref().or(bias64.as_deref()),
                    mask.as_deref(),
                ));
                let numeric = (plus - minus) / (2.0 * eps);
                let a = analytic[idx] as f64;
                assert!(
                    (a - numeric).abs() <= 1e-6 + 1e-5 * numeric.abs(),
                    "{name}[{idx}]: analytic {a} vs finite difference {numeric} for {spec:?}"
                );
                if numeric.abs() > 1e-3 {
                    checked += 1;
                }
            }
        };
        check("dq", &grads.dq, 0);
        check("dk", &grads.dk, 1);
        check("dv", &grads.dv, 2);
        if let Some(db) = &grads.dbias {
            check("dbias", db, 3);
        }
        checked
    }

    fn tiny() -> AttentionSpec {
        AttentionSpec::new(2, 4, 2, 3, 5, 3)
    }

    #[test]
    fn reference_backward_matches_finite_differences() {
        let specs = [
            tiny(),
            tiny().layout(Layout::Bshd).scale(0.7),
            tiny().causal(CausalAlign::TopLeft),
            tiny().causal(CausalAlign::BottomRight).kv_lens(vec![5, 2]),
            AttentionSpec::new(1, 3, 1, 4, 4, 2).window(1, 0),
            tiny().alibi(Alibi::Standard),
            tiny().softcap(1.5),
            tiny().bias(Broadcast::FULL),
            tiny().bias(Broadcast::SHARED),
            tiny().bias(Broadcast {
                per_batch: false,
                per_head: true,
            }),
            tiny().mask(Broadcast {
                per_batch: true,
                per_head: false,
            }),
            tiny()
                .causal(CausalAlign::BottomRight)
                .softcap(2.0)
                .alibi(Alibi::Standard)
                .bias(Broadcast {
                    per_batch: true,
                    per_head: false,
                })
                .window(2, 1),
        ];
        for (n, spec) in specs.iter().enumerate() {
            let checked = fd_check(spec, 100 + n as u64);
            assert!(
                checked > 10,
                "only {checked} non-zero gradients checked for {spec:?}"
            );
        }
    }

    #[test]
    fn fully_masked_rows_have_zero_gradients() {
        // top-left causal with kv_lens 0 for batch 1: every row of batch 1 is fully masked
        let spec = tiny().kv_lens(vec![5, 0]);
        let mut rng = Rng::new(3);
        let q = rng.normals(spec.q_len(), 0.0, 1.0);
        let k = rng.normals(spec.kv_len(), 0.0, 1.0);
        let v = rng.normals(spec.kv_len(), 0.0, 1.0);
        let d_out = rng.normals(spec.q_len(), 0.0, 1.0);
        let g = attention_backward(&spec, &Inputs::new(&q, &k, &v), Tensor::F32(&d_out)).unwrap();
        let half_q = spec.q_len() / 2;
        let half_k = spec.kv_len() / 2;
        assert!(g.dq[half_q..].iter().all(|&x| x == 0.0));
        assert!(
            g.dk[half_k..]
                .iter()
                .chain(&g.dv[half_k..])
                .all(|&x| x == 0.0)
        );
        assert!(g.dq[..half_q].iter().any(|&x| x != 0.0));
    }
}
