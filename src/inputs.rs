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
        Ok(())
    }
}
