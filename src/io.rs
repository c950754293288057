//! Safetensors files: reading attention cases (q, k, v + metadata, optional `bias`, `mask` and
//! expected `out`) and writing results, in the case-file format of the README ("Files") and of
//! the oracle cases in `tests/data/validation`.
//!
//! Tensors q, k, v, bias and out may be F32 or F16 (an F16 q makes the spec's dtype f16);
//! mask is BOOL (or U8, nonzero = keep). Metadata: `layout`, `causal`, `causal_align`,
//! `scale`, `kv_lens`, `num_q_heads`, `num_kv_heads`, and `dtype`, `window` ("L,R"), `alibi`
//! ("true" for the standard slopes, or "s0,s1,…"), `softcap`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use half::f16;

use crate::error::{Error, Result};
#[cfg(not(target_arch = "wasm32"))]
use crate::spec::Output;
use crate::spec::{
    Alibi, AttentionSpec, Broadcast, CausalAlign, DType, Inputs, Layout, Tensor, Window,
};

/// One attention case read from a file.
#[derive(Debug, Clone)]
pub struct Case {
    /// The file it came from.
    pub path: PathBuf,
    /// The spec given by the tensor shapes and the metadata.
    pub spec: AttentionSpec,
    /// Queries.
    pub q: Vec<f32>,
    /// Keys.
    pub k: Vec<f32>,
    /// Values.
    pub v: Vec<f32>,
    /// Additive bias, when the file holds one (its broadcast is in `spec.bias`).
    pub bias: Option<Vec<f32>>,
    /// Boolean mask, when the file holds one (its broadcast is in `spec.mask`).
    pub mask: Option<Vec<bool>>,
    /// Expected output, when the file holds one.
    pub out: Option<Vec<f32>>,
    /// All string metadata of the file.
    pub metadata: HashMap<String, String>,
}

impl Case {
    /// The case's tensors as inputs for `Context::attention_with` or the reference.
    pub fn inputs(&self) -> Inputs<'_> {
        Inputs {
            q: Tensor::F32(&self.q),
            k: Tensor::F32(&self.k),
            v: Tensor::F32(&self.v),
            bias: self.bias.as_deref().map(Tensor::F32),
            mask: self.mask.as_deref(),
        }
    }
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::BadFile {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads a float tensor as f32 (F16 converted exactly); returns its shape, the values and
/// whether it was stored as F16. Other dtypes are rejected with a message.
fn tensor_f32(path: &Path, st: &SafeTensors, name: &str) -> Result<(Vec<usize>, Vec<f32>, bool)> {
    let t = st
        .tensor(name)
        .map_err(|_| bad(path, format!("missing tensor `{name}`")))?;
    let (data, half) = match t.dtype() {
        Dtype::F32 => (bytemuck::pod_collect_to_vec::<u8, f32>(t.data()), false),
        Dtype::F16 => (
            bytemuck::pod_collect_to_vec::<u8, f16>(t.data())
                .into_iter()
                .map(f16::to_f32)
                .collect(),
            true,
        ),
        other => {
            return Err(bad(
                path,
                format!("tensor `{name}` has dtype {other:?}, expected F32 or F16"),
            ));
        }
    };
    Ok((t.shape().to_vec(), data, half))
}

/// Reads a boolean tensor (BOOL, or U8 with nonzero = true).
fn tensor_bool(path: &Path, st: &SafeTensors, name: &str) -> Result<(Vec<usize>, Vec<bool>)> {
    let t = st
        .tensor(name)
        .map_err(|_| bad(path, format!("missing tensor `{name}`")))?;
    match t.dtype() {
        Dtype::BOOL | Dtype::U8 => Ok((
            t.shape().to_vec(),
            t.data().iter().map(|&b| b != 0).collect(),
        )),
        other => Err(bad(
            path,
            format!("tensor `{name}` has dtype {other:?}, expected BOOL or U8"),
        )),
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn load(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_file<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes)
        .map_err(|e| bad(path, format!("not a valid safetensors file: {e}")))
}

#[cfg(not(target_arch = "wasm32"))]
/// Reads tensor `name` (F32 or F16) of a safetensors file as f32, with its shape.
pub fn read_float_tensor(path: impl AsRef<Path>, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let path = path.as_ref();
    let bytes = load(path)?;
    let (shape, data, _) = tensor_f32(path, &parse_file(path, &bytes)?, name)?;
    Ok((shape, data))
}

#[cfg(not(target_arch = "wasm32"))]
/// Reads tensor `name` (BOOL, or U8 with nonzero = true) of a safetensors file, with its shape.
pub fn read_bool_tensor(path: impl AsRef<Path>, name: &str) -> Result<(Vec<usize>, Vec<bool>)> {
    let path = path.as_ref();
    let bytes = load(path)?;
    tensor_bool(path, &parse_file(path, &bytes)?, name)
}

/// Parses a comma-separated list of numbers.
fn numbers<T: std::str::FromStr>(field: &str, s: &str) -> Result<Vec<T>> {
    s.split(',')
        .map(|x| {
            x.trim()
                .parse::<T>()
                .map_err(|_| Error::spec(field, s, format!("has {x:?}, not a number")))
        })
        .collect()
}

/// Parses a sliding window "L,R" (−1 = unbounded).
pub fn parse_window(s: &str) -> Result<Window> {
    match numbers::<i64>("window", s)?.as_slice() {
        &[left, right] => Ok(Window { left, right }),
        _ => Err(Error::spec(
            "window",
            s,
            "is not two integers L,R (-1 = unbounded)",
        )),
    }
}

/// Parses ALiBi metadata: "true"/"standard" for the standard slopes, or one slope per head.
pub fn parse_alibi(s: &str) -> Result<Option<Alibi>> {
    match s.trim().to_ascii_lowercase().as_str() {
        "" | "false" | "none" => Ok(None),
        "true" | "standard" => Ok(Some(Alibi::Standard)),
        _ => Ok(Some(Alibi::Slopes(numbers("alibi", s)?))),
    }
}

fn meta_usize(path: &Path, meta: &HashMap<String, String>, key: &str) -> Result<Option<usize>> {
    match meta.get(key).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| bad(path, format!("metadata {key} = {s:?} is not an integer"))),
    }
}

/// Parses `"3,7"` into kv_lens (empty → None).
pub fn parse_kv_lens(s: &str) -> Result<Option<Vec<u32>>> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.split(',')
        .map(|x| {
            x.trim()
                .parse::<u32>()
                .map_err(|_| Error::spec("kv_lens", s, format!("has {x:?}, not an integer")))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

#[cfg(not(target_arch = "wasm32"))]
/// Reads a case file. The spec comes from the tensor shapes and the metadata (`layout`,
/// `causal`, `causal_align`, `scale`, `kv_lens`, `num_q_heads`, `num_kv_heads`); shapes and
/// metadata must agree.
pub fn read_case(path: impl AsRef<Path>) -> Result<Case> {
    read_case_as(path, None)
}

/// Like [`read_case`], with the layout given by the caller instead of the file's metadata.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_case_as(path: impl AsRef<Path>, layout: Option<Layout>) -> Result<Case> {
    let path = path.as_ref();
    case_from_bytes(&load(path)?, path, layout)
}

/// Reads a case from the bytes of a safetensors file (as [`read_case_as`] reads a file; the
/// only form on the web, where a page fetches the bytes). `path` names the case in errors and
/// in [`Case::path`].
pub fn case_from_bytes(bytes: &[u8], path: &Path, layout: Option<Layout>) -> Result<Case> {
    let st = parse_file(path, bytes)?;
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(path, format!("not a valid safetensors file: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let layout = match (layout, metadata.get("layout")) {
        (Some(l), _) => l,
        (None, Some(l)) => Layout::parse(l).map_err(|e| bad(path, e.to_string()))?,
        (None, None) => Layout::Bhsd,
    };
    let (qshape, q, q_half) = tensor_f32(path, &st, "q")?;
    let (kshape, k, k_half) = tensor_f32(path, &st, "k")?;
    let (vshape, v, v_half) = tensor_f32(path, &st, "v")?;
    if k_half != q_half || v_half != q_half {
        let name = |half: bool| if half { "F16" } else { "F32" };
        return Err(bad(
            path,
            format!(
                "q is {}, k is {} and v is {}: q, k and v must share one dtype",
                name(q_half),
                name(k_half),
                name(v_half)
            ),
        ));
    }
    for (name, shape) in [("q", &qshape), ("k", &kshape), ("v", &vshape)] {
        if shape.len() != 4 {
            return Err(bad(
                path,
                format!("tensor `{name}` has shape {shape:?}, expected 4 dimensions"),
            ));
        }
    }
    if vshape != kshape {
        return Err(bad(
            path,
            format!("`v` has shape {vshape:?} but `k` has {kshape:?}; they must match"),
        ));
    }
    // [B, H, S, D] in bhsd, [B, S, H, D] in bshd.
    let split = |s: &[usize]| match layout {
        Layout::Bhsd => (s[0], s[1], s[2], s[3]),
        Layout::Bshd => (s[0], s[2], s[1], s[3]),
    };
    let (b, hq, sq, d) = split(&qshape);
    let (bk, hkv, sk, dk) = split(&kshape);
    if bk != b || dk != d {
        return Err(bad(
            path,
            format!(
                "`q` {qshape:?} and `k` {kshape:?} disagree on batch or head_dim (layout {})",
                layout.name()
            ),
        ));
    }
    for (key, value) in [
        ("batch", b),
        ("num_q_heads", hq),
        ("num_kv_heads", hkv),
        ("seq_q", sq),
        ("seq_k", sk),
        ("head_dim", d),
        ("v_head_dim", d),
    ] {
        if let Some(m) = meta_usize(path, &metadata, key)?
            && m != value
        {
            return Err(bad(
                path,
                format!("metadata {key} = {m} but the tensor shapes give {value}"),
            ));
        }
    }
    let mut spec = AttentionSpec::new(b, hq, hkv, sq, sk, d).layout(layout);
    let causal = match metadata
        .get("causal")
        .map(|s| s.trim().to_ascii_lowercase())
    {
        None => false,
        Some(s) if s == "true" || s == "1" => true,
        Some(s) if s == "false" || s == "0" || s.is_empty() => false,
        Some(s) => {
            return Err(bad(
                path,
                format!("metadata causal = {s:?} is not true/false"),
            ));
        }
    };
    if causal {
        let align = match metadata.get("causal_align") {
            Some(a) => CausalAlign::parse(a).map_err(|e| bad(path, e.to_string()))?,
            None => CausalAlign::TopLeft,
        };
        spec = spec.causal(align);
    }
    if let Some(s) = metadata
        .get("scale")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        let scale: f32 = s
            .parse()
            .map_err(|_| bad(path, format!("metadata scale = {s:?} is not a number")))?;
        spec = spec.scale(scale);
    }
    if let Some(s) = metadata.get("kv_lens") {
        spec.kv_lens = parse_kv_lens(s).map_err(|e| bad(path, e.to_string()))?;
    }
    let meta_err = |e: Error| bad(path, e.to_string());
    spec.dtype = match metadata.get("dtype") {
        Some(d) => DType::parse(d).map_err(meta_err)?,
        None if q_half => DType::F16,
        None => DType::F32,
    };
    if let Some(w) = metadata
        .get("window")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        spec.window = Some(parse_window(w).map_err(meta_err)?);
    }
    if let Some(a) = metadata.get("alibi") {
        spec.alibi = parse_alibi(a).map_err(meta_err)?;
    }
    if let Some(c) = metadata
        .get("softcap")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        spec.softcap = Some(
            c.parse()
                .map_err(|_| bad(path, format!("metadata softcap = {c:?} is not a number")))?,
        );
    }
    let names = st.names();
    let bias = if names.contains(&"bias") {
        let (shape, data, _) = tensor_f32(path, &st, "bias")?;
        spec.bias = Some(Broadcast::from_shape("bias", &shape, &spec).map_err(meta_err)?);
        Some(data)
    } else {
        None
    };
    let mask = if names.contains(&"mask") {
        let (shape, data) = tensor_bool(path, &st, "mask")?;
        spec.mask = Some(Broadcast::from_shape("mask", &shape, &spec).map_err(meta_err)?);
        Some(data)
    } else {
        None
    };
    let out = match st.tensor("out") {
        Ok(_) => {
            let (oshape, out, _) = tensor_f32(path, &st, "out")?;
            if oshape != qshape {
                return Err(bad(
                    path,
                    format!("`out` has shape {oshape:?}, expected that of `q` {qshape:?}"),
                ));
            }
            Some(out)
        }
        Err(_) => None,
    };
    Ok(Case {
        path: path.to_path_buf(),
        spec,
        q,
        k,
        v,
        bias,
        mask,
        out,
        metadata,
    })
}

/// The metadata of a case file for a spec (see the module docs).
pub fn spec_metadata(spec: &AttentionSpec) -> HashMap<String, String> {
    let mut m = HashMap::new();
    m.insert("layout".into(), spec.layout.name().into());
    m.insert("causal".into(), spec.causal.is_some().to_string());
    m.insert(
        "causal_align".into(),
        match spec.causal {
            Some(CausalAlign::BottomRight) => "bottom_right",
            _ => "top_left",
        }
        .into(),
    );
    m.insert("scale".into(), spec.effective_scale().to_string());
    m.insert("dtype".into(), spec.dtype.name().into());
    if let Some(w) = spec.window {
        m.insert("window".into(), format!("{},{}", w.left, w.right));
    }
    match &spec.alibi {
        Some(Alibi::Standard) => {
            m.insert("alibi".into(), "true".into());
        }
        Some(Alibi::Slopes(s)) => {
            let list: Vec<String> = s.iter().map(|x| x.to_string()).collect();
            m.insert("alibi".into(), list.join(","));
        }
        None => {}
    }
    if let Some(c) = spec.softcap {
        m.insert("softcap".into(), c.to_string());
    }
    m.insert(
        "kv_lens".into(),
        spec.kv_lens
            .as_ref()
            .map(|l| {
                l.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default(),
    );
    for (k, v) in [
        ("batch", spec.batch),
        ("num_q_heads", spec.q_heads),
        ("num_kv_heads", spec.kv_heads),
        ("seq_q", spec.seq_q),
        ("seq_k", spec.seq_k),
        ("head_dim", spec.head_dim),
        ("v_head_dim", spec.head_dim),
    ] {
        m.insert(k.into(), v.to_string());
    }
    m
}

#[cfg(not(target_arch = "wasm32"))]
/// A tensor to write.
#[derive(Debug, Clone, Copy)]
pub enum TensorOut<'a> {
    /// Stored as F32.
    F32(&'a [f32]),
    /// Stored as F16 (values rounded to nearest).
    F16(&'a [f32]),
    /// Stored as BOOL.
    Bool(&'a [bool]),
}

#[cfg(not(target_arch = "wasm32"))]
/// Writes named f32 tensors and metadata to a safetensors file.
pub fn write_tensors(
    path: impl AsRef<Path>,
    tensors: &[(&str, Vec<usize>, &[f32])],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let typed: Vec<_> = tensors
        .iter()
        .map(|(n, s, d)| (*n, s.clone(), TensorOut::F32(d)))
        .collect();
    write_typed(path, &typed, metadata)
}

#[cfg(not(target_arch = "wasm32"))]
/// Writes named tensors of any supported type and metadata to a safetensors file.
pub fn write_typed(
    path: impl AsRef<Path>,
    tensors: &[(&str, Vec<usize>, TensorOut)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let path = path.as_ref();
    let bytes: Vec<(Dtype, Vec<u8>)> = tensors
        .iter()
        .map(|(_, _, t)| match t {
            TensorOut::F32(x) => (Dtype::F32, bytemuck::cast_slice(x).to_vec()),
            TensorOut::F16(x) => {
                let h: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
                (Dtype::F16, bytemuck::cast_slice(&h).to_vec())
            }
            TensorOut::Bool(x) => (Dtype::BOOL, x.iter().map(|&b| b as u8).collect()),
        })
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), (dtype, data))| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), data)
                .map(|v| (name.to_string(), v))
                .map_err(|e| bad(path, format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| bad(path, format!("cannot serialise: {e}")))?;
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(not(target_arch = "wasm32"))]
/// Writes an attention result: `out` (shape of q, in the spec's dtype), and `lse`
/// `[B, Hq, Sq]` / `weights` `[B, Hq, Sq, Sk]` (f32) when present, with the spec's metadata.
pub fn write_output(path: impl AsRef<Path>, spec: &AttentionSpec, output: &Output) -> Result<()> {
    let out = match spec.dtype {
        DType::F32 => TensorOut::F32(&output.out),
        DType::F16 => TensorOut::F16(&output.out),
    };
    let mut tensors = vec![("out", spec.q_shape().to_vec(), out)];
    if let Some(lse) = &output.lse {
        tensors.push((
            "lse",
            vec![spec.batch, spec.q_heads, spec.seq_q],
            TensorOut::F32(lse),
        ));
    }
    if let Some(w) = &output.weights {
        tensors.push((
            "weights",
            vec![spec.batch, spec.q_heads, spec.seq_q, spec.seq_k],
            TensorOut::F32(w),
        ));
    }
    write_typed(path, &tensors, spec_metadata(spec))
}

#[cfg(not(target_arch = "wasm32"))]
/// Writes a case file (q, k, v, and `out` when given) with the spec's metadata.
pub fn write_case(
    path: impl AsRef<Path>,
    spec: &AttentionSpec,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: Option<&[f32]>,
) -> Result<()> {
    write_case_with(path, spec, q, k, v, None, None, out)
}

#[cfg(not(target_arch = "wasm32"))]
/// Writes a full case file: q, k, v in the spec's dtype, `bias` (f32) and `mask` (BOOL) in the
/// shapes the spec declares, `out` (f32) when given, and the spec's metadata.
#[allow(clippy::too_many_arguments)]
pub fn write_case_with(
    path: impl AsRef<Path>,
    spec: &AttentionSpec,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bias: Option<&[f32]>,
    mask: Option<&[bool]>,
    out: Option<&[f32]>,
) -> Result<()> {
    let stored = |x| match spec.dtype {
        DType::F32 => TensorOut::F32(x),
        DType::F16 => TensorOut::F16(x),
    };
    let mut tensors = vec![
        ("q", spec.q_shape().to_vec(), stored(q)),
        ("k", spec.kv_shape().to_vec(), stored(k)),
        ("v", spec.kv_shape().to_vec(), stored(v)),
    ];
    if let (Some(b), Some(data)) = (spec.bias, bias) {
        tensors.push(("bias", b.shape(spec).to_vec(), TensorOut::F32(data)));
    }
    if let (Some(m), Some(data)) = (spec.mask, mask) {
        tensors.push(("mask", m.shape(spec).to_vec(), TensorOut::Bool(data)));
    }
    if let Some(out) = out {
        tensors.push(("out", spec.q_shape().to_vec(), TensorOut::F32(out)));
    }
    write_typed(path, &tensors, spec_metadata(spec))
}
