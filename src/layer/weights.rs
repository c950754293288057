//! Host-side weights of the layers, and (feature `safetensors`) loading them by name from a
//! safetensors file with the naming schemes of BERT, GPT-2 and Llama.

use crate::error::{Error, Result};

use super::config::{MhaConfig, PositionEncoding};

/// The weights of one projection, `y = x·Wᵀ + b`, with W stored `[out_features,
/// in_features]` row-major (as `torch.nn.Linear`).
#[derive(Debug, Clone, PartialEq)]
pub struct LinearWeights {
    /// Output features (rows of W).
    pub out_features: usize,
    /// Input features (columns of W).
    pub in_features: usize,
    /// `[out_features, in_features]` row-major.
    pub weight: Vec<f32>,
    /// `[out_features]`, if the projection has a bias.
    pub bias: Option<Vec<f32>>,
}

impl LinearWeights {
    /// A projection from its weight `[out, in]` and optional bias `[out]`.
    pub fn new(
        out_features: usize,
        in_features: usize,
        weight: Vec<f32>,
        bias: Option<Vec<f32>>,
    ) -> Self {
        LinearWeights {
            out_features,
            in_features,
            weight,
            bias,
        }
    }

    /// Checks the sizes against `[out, in]`, naming the tensor `name` in the error.
    pub fn check(&self, name: &str, out: usize, inp: usize) -> Result<()> {
        let problem = |p: String| {
            Err(Error::Weight {
                tensor: name.to_string(),
                problem: p,
            })
        };
        if self.out_features != out || self.in_features != inp {
            return problem(format!(
                "shape [{}, {}], the layer needs [{out}, {inp}]",
                self.out_features, self.in_features
            ));
        }
        if self.weight.len() != out * inp {
            return problem(format!(
                "{} values for shape [{out}, {inp}]",
                self.weight.len()
            ));
        }
        if let Some(b) = &self.bias
            && b.len() != out
        {
            return problem(format!(
                "bias has {} values, the layer needs {out}",
                b.len()
            ));
        }
        if let Some(i) = self
            .weight
            .iter()
            .chain(self.bias.iter().flatten())
            .position(|v| !v.is_finite())
        {
            return problem(format!("non-finite value at flat index {i}"));
        }
        Ok(())
    }

    /// Rows `lo..hi` of the projection (a slice of a packed one).
    pub fn rows(&self, lo: usize, hi: usize) -> LinearWeights {
        LinearWeights {
            out_features: hi - lo,
            in_features: self.in_features,
            weight: self.weight[lo * self.in_features..hi * self.in_features].to_vec(),
            bias: self.bias.as_ref().map(|b| b[lo..hi].to_vec()),
        }
    }
}

/// The query, key and value projections: three matrices, or one packed `W_qkv` whose rows
/// are q's (H·D), then k's (H_kv·D), then v's (H_kv·D).
#[derive(Debug, Clone, PartialEq)]
pub enum QkvWeights {
    /// Separate projections.
    Separate {
        /// Query projection `[H·D, E]`.
        q: LinearWeights,
        /// Key projection `[H_kv·D, E_kv]`.
        k: LinearWeights,
        /// Value projection `[H_kv·D, E_kv]`.
        v: LinearWeights,
    },
    /// One packed projection `[(H + 2·H_kv)·D, E]`.
    Packed(LinearWeights),
}

/// Everything a [`MultiHeadAttention`](super::MultiHeadAttention) layer needs from a model.
#[derive(Debug, Clone, PartialEq)]
pub struct MhaWeights {
    /// q, k and v.
    pub qkv: QkvWeights,
    /// The output projection `[E, H·D]`.
    pub o: LinearWeights,
    /// The learned position table `[max_positions, E]` ([`PositionEncoding::Learned`]).
    pub positions: Option<Vec<f32>>,
}

impl MhaWeights {
    /// The separate q, k and v projections (sliced out of a packed one).
    pub fn split(&self, config: &MhaConfig) -> (LinearWeights, LinearWeights, LinearWeights) {
        match &self.qkv {
            QkvWeights::Separate { q, k, v } => (q.clone(), k.clone(), v.clone()),
            QkvWeights::Packed(p) => {
                let (nq, nkv) = (config.q_dim(), config.kv_dim());
                (
                    p.rows(0, nq),
                    p.rows(nq, nq + nkv),
                    p.rows(nq + nkv, nq + 2 * nkv),
                )
            }
        }
    }

    /// Checks every tensor against `config`; errors name the tensor.
    pub fn check(&self, config: &MhaConfig) -> Result<()> {
        let (e, ekv) = (config.embed_dim, config.kv_input_dim());
        let (nq, nkv) = (config.q_dim(), config.kv_dim());
        match &self.qkv {
            QkvWeights::Separate { q, k, v } => {
                q.check("q", nq, e)?;
                k.check("k", nkv, ekv)?;
                v.check("v", nkv, ekv)?;
            }
            QkvWeights::Packed(p) => {
                if ekv != e {
                    return Err(Error::Weight {
                        tensor: "qkv".into(),
                        problem: format!(
                            "a packed projection needs the memory width ({ekv}) to equal embed_dim ({e})"
                        ),
                    });
                }
                p.check("qkv", nq + 2 * nkv, e)?;
            }
        }
        self.o.check("o", e, nq)?;
        match (config.position, &self.positions) {
            (PositionEncoding::Learned { max_positions }, Some(t))
                if t.len() != max_positions * e =>
            {
                return Err(Error::Weight {
                    tensor: "positions".into(),
                    problem: format!("{} values, the layer needs [{max_positions}, {e}]", t.len()),
                });
            }
            (PositionEncoding::Learned { .. }, Some(_)) => {}
            (PositionEncoding::Learned { .. }, None) => {
                return Err(Error::Weight {
                    tensor: "positions".into(),
                    problem: "learned positional encoding without a table".into(),
                });
            }
            (_, Some(_)) => {
                return Err(Error::Weight {
                    tensor: "positions".into(),
                    problem: "a table was given but the layer's encoding is not learned".into(),
                });
            }
            _ => {}
        }
        Ok(())
    }
}

/// The naming schemes `load_mha` (feature `safetensors`) knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NamingScheme {
    /// BERT (`transformers` `BertModel`): `{prefix}attention.self.{query,key,value}.{weight,bias}`
    /// and `{prefix}attention.output.dense.{weight,bias}`, W as `[out, in]`.
    Bert,
    /// GPT-2: `{prefix}attn.c_attn.{weight,bias}` packed q|k|v and `{prefix}attn.c_proj`,
    /// stored `[in, out]` (Conv1D) and transposed on load.
    Gpt2,
    /// Llama: `{prefix}self_attn.{q,k,v,o}_proj.weight`, `[out, in]`, biases when present.
    Llama,
}

impl NamingScheme {
    /// The tensor names of q, k, v (or the packed one) and o, for a layer prefix such as
    /// `encoder.layer.0.` / `h.0.` / `model.layers.0.`.
    pub fn names(self, prefix: &str) -> Vec<String> {
        let f = |s: &str| format!("{prefix}{s}");
        match self {
            NamingScheme::Bert => vec![
                f("attention.self.query"),
                f("attention.self.key"),
                f("attention.self.value"),
                f("attention.output.dense"),
            ],
            NamingScheme::Gpt2 => vec![f("attn.c_attn"), f("attn.c_proj")],
            NamingScheme::Llama => vec![
                f("self_attn.q_proj"),
                f("self_attn.k_proj"),
                f("self_attn.v_proj"),
                f("self_attn.o_proj"),
            ],
        }
    }
}

#[cfg(feature = "safetensors")]
pub use self::file::{TensorFile, load_mha};

#[cfg(feature = "safetensors")]
mod file {
    use std::path::{Path, PathBuf};

    use safetensors::{Dtype, SafeTensors};

    use super::*;

    /// A safetensors file read into memory, with typed access to its float tensors by name.
    pub struct TensorFile {
        path: PathBuf,
        bytes: Vec<u8>,
    }

    impl std::fmt::Debug for TensorFile {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("TensorFile")
                .field("path", &self.path)
                .finish_non_exhaustive()
        }
    }

    impl TensorFile {
        /// Reads `path` and checks its header.
        pub fn open(path: impl AsRef<Path>) -> Result<TensorFile> {
            let path = path.as_ref().to_path_buf();
            let bytes = std::fs::read(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            let file = TensorFile { path, bytes };
            file.tensors()?;
            Ok(file)
        }

        fn tensors(&self) -> Result<SafeTensors<'_>> {
            SafeTensors::deserialize(&self.bytes).map_err(|e| Error::BadFile {
                path: self.path.clone(),
                message: e.to_string(),
            })
        }

        /// The names of every tensor.
        pub fn names(&self) -> Vec<String> {
            self.tensors()
                .map(|t| t.names().into_iter().map(|s| s.to_string()).collect())
                .unwrap_or_default()
        }

        /// The value of metadata entry `key`, if the file has it.
        pub fn metadata(&self, key: &str) -> Option<String> {
            let (_, meta) = SafeTensors::read_metadata(&self.bytes).ok()?;
            meta.metadata().as_ref()?.get(key).cloned()
        }

        /// True when the file holds `name`.
        pub fn has(&self, name: &str) -> bool {
            self.tensors().is_ok_and(|t| t.tensor(name).is_ok())
        }

        /// The shape of `name` and its values as f32 (f32, f16 and bf16 tensors).
        pub fn floats(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
            let tensors = self.tensors()?;
            let t = tensors.tensor(name).map_err(|_| Error::Weight {
                tensor: name.to_string(),
                problem: format!("not in {}", self.path.display()),
            })?;
            let data = t.data();
            let values: Vec<f32> = match t.dtype() {
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                Dtype::F16 => data
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => data
                    .chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                other => {
                    return Err(Error::Weight {
                        tensor: name.to_string(),
                        problem: format!("dtype {other:?} is not f32, f16 or bf16"),
                    });
                }
            };
            Ok((t.shape().to_vec(), values))
        }

        /// `name` with exactly `shape`, else a typed error naming the tensor.
        pub fn shaped(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
            let (found, values) = self.floats(name)?;
            if found != shape {
                return Err(Error::Weight {
                    tensor: name.to_string(),
                    problem: format!("shape {found:?}, expected {shape:?}"),
                });
            }
            Ok(values)
        }

        /// The projection `{base}.weight` (`[out, in]`, or `[in, out]` when `transposed`)
        /// with `{base}.bias` when present.
        pub fn linear(
            &self,
            base: &str,
            out: usize,
            inp: usize,
            transposed: bool,
        ) -> Result<LinearWeights> {
            let wname = format!("{base}.weight");
            let weight = if transposed {
                let w = self.shaped(&wname, &[inp, out])?;
                let mut t = vec![0f32; out * inp];
                for i in 0..inp {
                    for o in 0..out {
                        t[o * inp + i] = w[i * out + o];
                    }
                }
                t
            } else {
                self.shaped(&wname, &[out, inp])?
            };
            let bname = format!("{base}.bias");
            let bias = if self.has(&bname) {
                Some(self.shaped(&bname, &[out])?)
            } else {
                None
            };
            Ok(LinearWeights::new(out, inp, weight, bias))
        }
    }

    /// Loads the attention weights of the layer at `prefix` (e.g. `encoder.layer.3.`,
    /// `h.0.`, `model.layers.0.`) by the names of `scheme`, checked against `config`: a
    /// missing tensor or a shape that does not fit is an [`Error::Weight`] naming the tensor.
    pub fn load_mha(
        file: &TensorFile,
        scheme: NamingScheme,
        prefix: &str,
        config: &MhaConfig,
    ) -> Result<MhaWeights> {
        let (e, ekv) = (config.embed_dim, config.kv_input_dim());
        let (nq, nkv) = (config.q_dim(), config.kv_dim());
        let names = scheme.names(prefix);
        let weights = match scheme {
            NamingScheme::Bert | NamingScheme::Llama => MhaWeights {
                qkv: QkvWeights::Separate {
                    q: file.linear(&names[0], nq, e, false)?,
                    k: file.linear(&names[1], nkv, ekv, false)?,
                    v: file.linear(&names[2], nkv, ekv, false)?,
                },
                o: file.linear(&names[3], e, nq, false)?,
                positions: None,
            },
            NamingScheme::Gpt2 => MhaWeights {
                qkv: QkvWeights::Packed(file.linear(&names[0], nq + 2 * nkv, e, true)?),
                o: file.linear(&names[1], e, nq, true)?,
                positions: None,
            },
        };
        weights.check(config)?;
        Ok(weights)
    }
}
