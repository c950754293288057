//! Flags that change an attention spec, shared by `run`, `gen` and `bench`.

use std::path::PathBuf;

use wgattn::{Alibi, AttentionSpec, CausalAlign, DType, Result};

/// Mask, scale and storage flags. Unset flags leave the spec (e.g. a file's metadata) as it is.
#[derive(clap::Args, Debug, Default)]
pub struct SpecFlags {
    /// Causal mask: top-left, bottom-right or none.
    #[arg(long, value_name = "top-left|bottom-right|none")]
    pub causal: Option<String>,
    /// Softmax scale (default 1/sqrt(head_dim)).
    #[arg(long, allow_negative_numbers = true)]
    pub scale: Option<f32>,
    /// Valid key length per batch entry, e.g. 3,7 (empty string: none).
    #[arg(long, value_name = "A,B,...")]
    pub kv_lens: Option<String>,
    /// Storage type of q, k, v and out: f32 or f16 (f32 data is rounded on the way in).
    #[arg(long, value_name = "f32|f16")]
    pub dtype: Option<String>,
    /// Sliding window L,R in keys around the (causal-aligned) diagonal; -1 = unbounded.
    #[arg(long, value_name = "L,R", allow_hyphen_values = true)]
    pub window: Option<String>,
    /// ALiBi: the standard slopes for the query heads, or one slope per head (s0,s1,...).
    #[arg(long, value_name = "SLOPES", num_args = 0..=1, default_missing_value = "standard")]
    pub alibi: Option<String>,
    /// Logit soft-capping: s <- cap * tanh(s / cap) before bias and masks.
    #[arg(long, value_name = "CAP", allow_negative_numbers = true)]
    pub softcap: Option<f32>,
}

impl SpecFlags {
    /// `spec` with these flags applied.
    pub fn apply(&self, mut spec: AttentionSpec) -> Result<AttentionSpec> {
        if let Some(c) = &self.causal {
            spec.causal = match c.trim() {
                "none" | "false" => None,
                other => Some(CausalAlign::parse(other)?),
            };
        }
        if let Some(s) = self.scale {
            spec.scale = Some(s);
        }
        if let Some(l) = &self.kv_lens {
            spec.kv_lens = wgattn::io::parse_kv_lens(l)?;
        }
        if let Some(d) = &self.dtype {
            spec.dtype = DType::parse(d)?;
        }
        if let Some(w) = &self.window {
            spec.window = Some(wgattn::io::parse_window(w)?);
        }
        if let Some(a) = &self.alibi {
            spec.alibi = match a.as_str() {
                "standard" => Some(Alibi::Standard),
                other => wgattn::io::parse_alibi(other)?,
            };
        }
        if let Some(c) = self.softcap {
            spec.softcap = Some(c);
        }
        Ok(spec)
    }
}

/// Bias and mask tensors from their own files, shared by `run` and `heatmap`.
#[derive(clap::Args, Debug, Default)]
pub struct TensorFiles {
    /// Additive bias: a safetensors file with tensor `bias` [B or 1, Hq or 1, Sq, Sk] (F32 or
    /// F16; -inf masks a key). Default: the input file's `bias`, if any.
    #[arg(long, value_name = "F")]
    pub bias_file: Option<PathBuf>,
    /// Boolean mask: a safetensors file with tensor `mask` [B or 1, Hq or 1, Sq, Sk] (BOOL or
    /// U8; true = keep). Default: the input file's `mask`, if any.
    #[arg(long, value_name = "F")]
    pub mask_file: Option<PathBuf>,
}

impl TensorFiles {
    /// Reads the files given into `case`, declaring their broadcast in `spec`.
    pub fn load(&self, spec: &mut AttentionSpec, case: &mut wgattn::io::Case) -> Result<()> {
        if let Some(f) = &self.bias_file {
            let (shape, data) = wgattn::io::read_float_tensor(f, "bias")?;
            spec.bias = Some(wgattn::Broadcast::from_shape("bias", &shape, spec)?);
            case.bias = Some(data);
        }
        if let Some(f) = &self.mask_file {
            let (shape, data) = wgattn::io::read_bool_tensor(f, "mask")?;
            spec.mask = Some(wgattn::Broadcast::from_shape("mask", &shape, spec)?);
            case.mask = Some(data);
        }
        Ok(())
    }
}
