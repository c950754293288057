//! Safetensors files: reading attention cases (q, k, v + metadata, optional expected `out`)
//! and writing results, in the format of DESIGN.md and `shared/validation/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::output::Output;
use crate::spec::{AttentionSpec, CausalAlign, Layout};

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
    /// Expected output, when the file holds one.
    pub out: Option<Vec<f32>>,
    /// All string metadata of the file.
    pub metadata: HashMap<String, String>,
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::BadFile {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads a tensor as f32 (F32 stored; other dtypes are rejected with a message).
fn tensor_f32(path: &Path, st: &SafeTensors, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let t = st
        .tensor(name)
        .map_err(|_| bad(path, format!("missing tensor `{name}`")))?;
    let data = match t.dtype() {
        Dtype::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(t.data()),
        other => {
            return Err(bad(
                path,
                format!("tensor `{name}` has dtype {other:?}, expected F32"),
            ));
        }
    };
    Ok((t.shape().to_vec(), data))
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

/// Reads a case file. The spec comes from the tensor shapes and the metadata (`layout`,
/// `causal`, `causal_align`, `scale`, `kv_lens`, `num_q_heads`, `num_kv_heads`); shapes and
/// metadata must agree.
pub fn read_case(path: impl AsRef<Path>) -> Result<Case> {
    read_case_as(path, None)
}

/// Like [`read_case`], with the layout given by the caller instead of the file's metadata.
pub fn read_case_as(path: impl AsRef<Path>, layout: Option<Layout>) -> Result<Case> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(path, format!("not a valid safetensors file: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(path, format!("not a valid safetensors file: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let layout = match (layout, metadata.get("layout")) {
        (Some(l), _) => l,
        (None, Some(l)) => Layout::parse(l).map_err(|e| bad(path, e.to_string()))?,
        (None, None) => Layout::Bhsd,
    };
    let (qshape, q) = tensor_f32(path, &st, "q")?;
    let (kshape, k) = tensor_f32(path, &st, "k")?;
    let (vshape, v) = tensor_f32(path, &st, "v")?;
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
    let out = match st.tensor("out") {
        Ok(_) => {
            let (oshape, out) = tensor_f32(path, &st, "out")?;
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
        out,
        metadata,
    })
}

/// The metadata DESIGN.md defines for a spec.
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

/// Writes named f32 tensors and metadata to a safetensors file.
pub fn write_tensors(
    path: impl AsRef<Path>,
    tensors: &[(&str, Vec<usize>, &[f32])],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let path = path.as_ref();
    let views = tensors
        .iter()
        .map(|(name, shape, data)| {
            safetensors::tensor::TensorView::new(
                Dtype::F32,
                shape.clone(),
                bytemuck::cast_slice(data),
            )
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

/// Writes an attention result: `out` (shape of q), and `lse` `[B, Hq, Sq]` / `weights`
/// `[B, Hq, Sq, Sk]` when present, with the spec's metadata.
pub fn write_output(path: impl AsRef<Path>, spec: &AttentionSpec, output: &Output) -> Result<()> {
    let mut tensors = vec![("out", spec.q_shape().to_vec(), output.out.as_slice())];
    if let Some(lse) = &output.lse {
        tensors.push(("lse", vec![spec.batch, spec.q_heads, spec.seq_q], lse));
    }
    if let Some(w) = &output.weights {
        tensors.push((
            "weights",
            vec![spec.batch, spec.q_heads, spec.seq_q, spec.seq_k],
            w,
        ));
    }
    write_tensors(path, &tensors, spec_metadata(spec))
}

/// Writes a case file (q, k, v, and `out` when given) with the spec's metadata.
pub fn write_case(
    path: impl AsRef<Path>,
    spec: &AttentionSpec,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: Option<&[f32]>,
) -> Result<()> {
    let mut tensors = vec![
        ("q", spec.q_shape().to_vec(), q),
        ("k", spec.kv_shape().to_vec(), k),
        ("v", spec.kv_shape().to_vec(), v),
    ];
    if let Some(out) = out {
        tensors.push(("out", spec.q_shape().to_vec(), out));
    }
    write_tensors(path, &tensors, spec_metadata(spec))
}
