//! Host-side input tensors: q, k, v in f32 or f16, and the optional bias and mask.

use std::borrow::Cow;

use half::f16;

use crate::error::{Error, Result};
use crate::spec::AttentionSpec;

/// A host tensor in f32 or f16.
#[derive(Debug, Clone, Copy)]
pub enum Tensor<'a> {
    /// 32-bit floats.
    F32(&'a [f32]),
    /// 16-bit floats.
    F16(&'a [f16]),
}

impl<'a> From<&'a [f32]> for Tensor<'a> {
    fn from(x: &'a [f32]) -> Self {
        Tensor::F32(x)
    }
}
impl<'a> From<&'a Vec<f32>> for Tensor<'a> {
    fn from(x: &'a Vec<f32>) -> Self {
        Tensor::F32(x)
    }
}
impl<'a> From<&'a [f16]> for Tensor<'a> {
    fn from(x: &'a [f16]) -> Self {
        Tensor::F16(x)
    }
}
impl<'a> From<&'a Vec<f16>> for Tensor<'a> {
    fn from(x: &'a Vec<f16>) -> Self {
        Tensor::F16(x)
    }
}

impl<'a> Tensor<'a> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Tensor::F32(x) => x.len(),
            Tensor::F16(x) => x.len(),
        }
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as f32 (exact for f16).
    pub fn to_f32(&self) -> Cow<'a, [f32]> {
        match *self {
            Tensor::F32(x) => Cow::Borrowed(x),
            Tensor::F16(x) => Cow::Owned(x.iter().map(|v| v.to_f32()).collect()),
        }
    }

    /// The values as f16 (f32 values are rounded to nearest).
    pub fn to_f16(&self) -> Cow<'a, [f16]> {
        match *self {
            Tensor::F16(x) => Cow::Borrowed(x),
            Tensor::F32(x) => Cow::Owned(x.iter().map(|&v| f16::from_f32(v)).collect()),
        }
    }

    /// Largest |value| (0 when empty).
    fn max_abs(&self) -> f64 {
        match self {
            Tensor::F32(x) => x.iter().fold(0f64, |m, v| m.max(v.abs() as f64)),
            Tensor::F16(x) => x.iter().fold(0f64, |m, v| m.max(v.to_f64().abs())),
        }
    }

    /// Largest finite value (−∞ when there is none).
    fn max_finite(&self) -> f64 {
        let keep = |v: f64| if v.is_finite() { v } else { f64::NEG_INFINITY };
        match self {
            Tensor::F32(x) => x
                .iter()
                .fold(f64::NEG_INFINITY, |m, &v| m.max(keep(v as f64))),
            Tensor::F16(x) => x
                .iter()
                .fold(f64::NEG_INFINITY, |m, v| m.max(keep(v.to_f64()))),
        }
    }

    /// Index and value of the first element that `bad` rejects.
    fn find(&self, bad: impl Fn(f32) -> bool) -> Option<(usize, f32)> {
        match self {
            Tensor::F32(x) => x.iter().position(|&v| bad(v)).map(|i| (i, x[i])),
            Tensor::F16(x) => x
                .iter()
                .position(|v| bad(v.to_f32()))
                .map(|i| (i, x[i].to_f32())),
        }
    }
}

/// Everything one attention call reads from the host.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// Queries, layout of the spec.
    pub q: Tensor<'a>,
    /// Keys.
    pub k: Tensor<'a>,
    /// Values.
    pub v: Tensor<'a>,
    /// Additive bias `[B or 1, Hq or 1, Sq, Sk]` as declared by `AttentionSpec::bias`;
    /// −∞ entries mask their key.
    pub bias: Option<Tensor<'a>>,
    /// Boolean mask `[B or 1, Hq or 1, Sq, Sk]` as declared by `AttentionSpec::mask`
    /// (true = keep).
    pub mask: Option<&'a [bool]>,
}

impl<'a> Inputs<'a> {
    /// q, k and v, without bias or mask.
    pub fn new(
        q: impl Into<Tensor<'a>>,
        k: impl Into<Tensor<'a>>,
        v: impl Into<Tensor<'a>>,
    ) -> Self {
        Inputs {
            q: q.into(),
            k: k.into(),
            v: v.into(),
            bias: None,
            mask: None,
        }
    }

    /// Adds the bias tensor.
    pub fn with_bias(mut self, bias: impl Into<Tensor<'a>>) -> Self {
        self.bias = Some(bias.into());
        self
    }

    /// Adds the mask tensor.
    pub fn with_mask(mut self, mask: &'a [bool]) -> Self {
        self.mask = Some(mask);
        self
    }
}

/// `bytes` padded with zeros to a multiple of 4 (the copy alignment).
fn padded(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.resize(bytes.len().next_multiple_of(4), 0);
    bytes
}

/// A boolean mask in its GPU format: one byte per element (0 = masked), padded to 4 bytes.
pub fn mask_bytes(mask: &[bool]) -> Vec<u8> {
    padded(mask.iter().map(|&m| m as u8).collect())
}

/// A tensor in the GPU storage format of `dtype` (f32, or IEEE half), padded to 4 bytes.
pub fn gpu_bytes(t: &Tensor, dtype: crate::spec::DType) -> Vec<u8> {
    match dtype {
        crate::spec::DType::F32 => padded(bytemuck::cast_slice(&t.to_f32()).to_vec()),
        crate::spec::DType::F16 => padded(bytemuck::cast_slice(&t.to_f16()).to_vec()),
    }
}

impl AttentionSpec {
    /// Checks host inputs against the spec: lengths, presence of bias and mask as declared,
    /// and values: q, k, v must be finite (the host paths reject NaN and ±Inf rather than let
    /// them spread through a row); bias may hold −∞ (a masked key) but not NaN or +∞.
    pub fn check_inputs(&self, inputs: &Inputs) -> Result<()> {
        let shape = |s: [usize; 4]| format!("{s:?} in layout {}", self.layout.name());
        let length = |tensor, expected: usize, got: usize, shape: String| {
            if expected == got {
                Ok(())
            } else {
                Err(Error::InputLength {
                    tensor,
                    expected,
                    got,
                    shape,
                })
            }
        };
        for (tensor, data, expected, s) in [
            ("q", &inputs.q, self.q_len(), self.q_shape()),
            ("k", &inputs.k, self.kv_len(), self.kv_shape()),
            ("v", &inputs.v, self.kv_len(), self.kv_shape()),
        ] {
            length(tensor, expected, data.len(), shape(s))?;
            if let Some((index, value)) = data.find(|x| !x.is_finite()) {
                return Err(Error::NonFinite {
                    tensor,
                    index,
                    value,
                });
            }
        }
        let declared = |name: &str, spec: bool, given: bool| match (spec, given) {
            (true, false) => Err(Error::spec(
                name,
                "missing",
                format!("is declared by the spec but no {name} tensor was given"),
            )),
            (false, true) => Err(Error::spec(
                name,
                "given",
                format!("but the spec declares no {name} (AttentionSpec::{name})"),
            )),
            _ => Ok(()),
        };
        declared("bias", self.bias.is_some(), inputs.bias.is_some())?;
        declared("mask", self.mask.is_some(), inputs.mask.is_some())?;
        if let (Some(b), Some(data)) = (self.bias, &inputs.bias) {
            length(
                "bias",
                b.len(self),
                data.len(),
                format!("{:?}", b.shape(self)),
            )?;
            if let Some((index, value)) = data.find(|x| x.is_nan() || x == f32::INFINITY) {
                return Err(Error::NonFinite {
                    tensor: "bias",
                    index,
                    value,
                });
            }
        }
        if let (Some(m), Some(data)) = (self.mask, inputs.mask) {
            length(
                "mask",
                m.len(self),
                data.len(),
                format!("{:?}", m.shape(self)),
            )?;
        }
        self.check_logit_range(inputs)
    }

    /// Checks an upstream gradient `d_out` against the spec: one element per element of out,
    /// all finite ([`Error::InputLength`], [`Error::NonFinite`]).
    pub fn check_d_out(&self, d_out: &Tensor) -> Result<()> {
        if d_out.len() != self.q_len() {
            return Err(Error::InputLength {
                tensor: "d_out",
                expected: self.q_len(),
                got: d_out.len(),
                shape: format!("{:?} in layout {}", self.q_shape(), self.layout.name()),
            });
        }
        let values = d_out.to_f32();
        if let Some(index) = values.iter().position(|x| !x.is_finite()) {
            return Err(Error::NonFinite {
                tensor: "d_out",
                index,
                value: values[index],
            });
        }
        Ok(())
    }

    /// Refuses finite inputs whose logits could overflow f32 (and turn rows into NaN), from a
    /// cheap bound. The kernels compute q·(scale·log2 e)·k in f32 (base 2) and add the bias
    /// and ALiBi after soft-capping, so with m = max(|scale|·log2 e, 1), a = max |q|,
    /// b = max |k| and D = head_dim these must stay below f32::MAX / 2 (a margin for the
    /// rounding of sums): a·m (pre-scaled q), D·a·b·m (the dot product and its partial sums),
    /// and log2 e · (D·a·b·|scale| + largest positive bias + largest ALiBi bonus) (the largest
    /// logit, in base 2). Very negative logits need no bound: at or below
    /// [`MASKED_LOGIT`](crate::MASKED_LOGIT) they are masked, in the kernels as in the
    /// reference.
    pub fn check_logit_range(&self, inputs: &Inputs) -> Result<()> {
        let limit = f32::MAX as f64 / 2.0;
        let log2e = std::f64::consts::LOG2_E;
        let (a, b) = (inputs.q.max_abs(), inputs.k.max_abs());
        let (a, b) = match self.dtype {
            // f16 storage rounds; the bound only needs the magnitude
            crate::spec::DType::F16 => (a.min(65504.0), b.min(65504.0)),
            crate::spec::DType::F32 => (a, b),
        };
        let scale = (self.effective_scale() as f64).abs();
        let d = self.head_dim as f64;
        let m = (scale * log2e).max(1.0);
        let bias = inputs
            .bias
            .as_ref()
            .map_or(0.0, |t| t.max_finite().max(0.0));
        let alibi = self.alibi.as_ref().map_or(0.0, |al| {
            let worst = al
                .slopes(self.q_heads)
                .iter()
                .fold(0f64, |w, &s| w.max(-(s as f64)));
            worst * (self.seq_q as f64 + self.seq_k as f64)
        });
        let checks = [
            (
                format!("max |q| · max(|scale|·log2 e, 1) = {a:e} · {m:e}"),
                a * m,
            ),
            (
                format!(
                    "D · max |q| · max |k| · max(|scale|·log2 e, 1) = {d} · {a:e} · {b:e} · {m:e}"
                ),
                d * a * b * m,
            ),
            (
                format!(
                    "log2 e · (D · max |q| · max |k| · |scale| + max bias + ALiBi) = \
                     log2 e · ({d} · {a:e} · {b:e} · {scale:e} + {bias:e} + {alibi:e})"
                ),
                log2e * (d * a * b * scale + bias + alibi),
            ),
        ];
        for (detail, bound) in checks {
            // NaN (0 · ∞ cannot occur: inputs are finite) would fail too
            if bound.is_nan() || bound > limit {
                return Err(Error::LogitOverflow {
                    detail,
                    bound,
                    limit,
                });
            }
        }
        Ok(())
    }
}
