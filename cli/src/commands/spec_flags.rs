//! Flags that change an attention spec, shared by `run`, `gen` and `bench`.

use std::path::{Path, PathBuf};

use wgattn::{Alibi, AttentionSpec, Error, Result, Window};

use super::values::{self, CausalArg, DTypeArg, PresetArg, Shape};

/// Mask, scale and storage flags. Unset flags leave the spec (e.g. a file's metadata) as it is.
#[derive(clap::Args, Debug, Default)]
pub struct SpecFlags {
    /// Causal mask.
    #[arg(long, value_enum)]
    pub causal: Option<CausalArg>,
    /// Softmax scale (default 1/sqrt(head_dim)); finite.
    #[arg(long, allow_negative_numbers = true, value_parser = super::values::finite)]
    pub scale: Option<f32>,
    /// Valid key length per batch entry, e.g. 3,7.
    #[arg(long, value_name = "A,B,...", value_delimiter = ',')]
    pub kv_lens: Option<Vec<u32>>,
    /// Storage type of q, k, v and out (f32 data is rounded on the way in for f16).
    #[arg(long, value_enum)]
    pub dtype: Option<DTypeArg>,
    /// Sliding window L,R in keys around the (causal-aligned) diagonal; -1 = unbounded.
    #[arg(long, value_name = "L,R", allow_hyphen_values = true, value_parser = window)]
    pub window: Option<Window>,
    /// ALiBi: the standard slopes for the query heads, or one slope per head (s0,s1,...).
    #[arg(long, value_name = "SLOPES", num_args = 0..=1, default_missing_value = "standard",
          allow_negative_numbers = true, value_parser = alibi)]
    pub alibi: Option<Alibi>,
    /// Logit soft-capping: s <- cap * tanh(s / cap) before bias and masks; finite.
    #[arg(long, value_name = "CAP", allow_negative_numbers = true, value_parser = super::values::finite)]
    pub softcap: Option<f32>,
    /// Allow f16 products for f32 inputs where the adapter has f16 cooperative matrices
    /// (tensor cores), like PyTorch's allow_tf32; accuracy then that of f16 operands.
    #[arg(long)]
    pub reduced_precision: bool,
}

/// The shapes `bench` and `tune` work on: `--shape` (repeatable) and `--preset`, with the
/// spec flags applied to each.
#[derive(clap::Args, Debug)]
pub struct ShapeArgs {
    /// Shape B,Hq,Hkv,Sq,Sk,D (repeatable).
    #[arg(long = "shape", value_name = "B,Hq,Hkv,Sq,Sk,D", value_parser = values::shape,
          allow_hyphen_values = true, required_unless_present = "preset")]
    pub shapes: Vec<Shape>,
    /// A named set of shapes (`standard`: the shapes of BENCHMARKS.md).
    #[arg(long, value_enum)]
    pub preset: Option<PresetArg>,
    #[command(flatten)]
    pub flags: SpecFlags,
}

impl ShapeArgs {
    /// The preset's shapes, then the given ones, each with the flags applied (not yet
    /// validated).
    pub fn specs(&self) -> Vec<AttentionSpec> {
        let mut out = Vec::new();
        if let Some(PresetArg::Standard) = self.preset {
            out.extend(wgattn::bench::standard_preset());
        }
        out.extend(self.shapes.iter().map(|s| s.spec()));
        out.into_iter().map(|s| self.flags.apply(s)).collect()
    }
}

/// Parses `L,R` (two integers, -1 = unbounded).
fn window(s: &str) -> std::result::Result<Window, String> {
    wgattn::io::parse_window(s).map_err(|_| format!("{s:?} is not two integers L,R"))
}

/// Parses `standard` or slopes `s0,s1,...`.
fn alibi(s: &str) -> std::result::Result<Alibi, String> {
    match s.trim() {
        "standard" => Ok(Alibi::Standard),
        other => match wgattn::io::parse_alibi(other) {
            Ok(Some(a)) => Ok(a),
            _ => Err(format!(
                "{s:?} is neither `standard` nor numbers s0,s1,... (one slope per query head)"
            )),
        },
    }
}

impl SpecFlags {
    /// `spec` with these flags applied.
    pub fn apply(&self, mut spec: AttentionSpec) -> AttentionSpec {
        if let Some(c) = self.causal {
            spec.causal = c.into();
        }
        if let Some(s) = self.scale {
            spec.scale = Some(s);
        }
        if let Some(l) = &self.kv_lens {
            spec.kv_lens = Some(l.clone());
        }
        if let Some(d) = self.dtype {
            spec.dtype = d.into();
        }
        if let Some(w) = self.window {
            spec.window = Some(w);
        }
        if let Some(a) = &self.alibi {
            spec.alibi = Some(a.clone());
        }
        if let Some(c) = self.softcap {
            spec.softcap = Some(c);
        }
        if self.reduced_precision {
            spec.reduced_precision = true;
        }
        spec
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
    /// Reads the files given into `case`, declaring their broadcast in `spec`. Every error
    /// names the file it is about.
    pub fn load(&self, spec: &mut AttentionSpec, case: &mut wgattn::io::Case) -> Result<()> {
        if let Some(f) = &self.bias_file {
            let (shape, data) = wgattn::io::read_float_tensor(f, "bias")?;
            spec.bias = Some(
                wgattn::Broadcast::from_shape("bias", &shape, spec).map_err(|e| in_file(f, e))?,
            );
            case.bias = Some(data);
        }
        if let Some(f) = &self.mask_file {
            let (shape, data) = wgattn::io::read_bool_tensor(f, "mask")?;
            spec.mask = Some(
                wgattn::Broadcast::from_shape("mask", &shape, spec).map_err(|e| in_file(f, e))?,
            );
            case.mask = Some(data);
        }
        Ok(())
    }
}

/// An error about the contents of file `path` as one that names it ([`Error::BadFile`], still
/// an input error); errors that already name a file, and device errors, pass through.
pub fn in_file(path: &Path, e: Error) -> Error {
    match e {
        Error::InvalidSpec { .. } | Error::InputLength { .. } | Error::NonFinite { .. } => {
            Error::BadFile {
                path: path.to_path_buf(),
                message: e.to_string(),
            }
        }
        other => other,
    }
}
