//! The JavaScript spec object (`{batch, qHeads, kvHeads, seqQ, seqK, headDim, layout, causal,
//! scale?, kvLens?, window?, alibi?, softcap?, returnLse?, …}`) to an [`AttentionSpec`] and
//! back. Every problem is a [`wgattn::Error`] naming the field, so JavaScript sees the same
//! messages as Rust.

use js_sys::{Array, Object, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wgattn::{Alibi, AttentionSpec, CausalAlign, DType, Error, Kernel, Layout, Result};

/// Every key a spec object may have.
pub const KEYS: &[&str] = &[
    "batch",
    "qHeads",
    "kvHeads",
    "seqQ",
    "seqK",
    "headDim",
    "layout",
    "causal",
    "scale",
    "kvLens",
    "window",
    "alibi",
    "softcap",
    "returnLse",
    "returnWeights",
    "dtype",
    "kernel",
];

/// How a JavaScript value reads in an error message.
fn text(v: &JsValue) -> String {
    if let Some(s) = v.as_string() {
        return format!("{s:?}");
    }
    js_sys::JSON::stringify(v)
        .ok()
        .and_then(|s| s.as_string())
        .unwrap_or_else(|| format!("{v:?}"))
}

/// `obj[key]`, `None` when absent, `undefined` or `null`.
fn get(obj: &JsValue, key: &str) -> Option<JsValue> {
    Reflect::get(obj, &JsValue::from_str(key))
        .ok()
        .filter(|v| !v.is_undefined() && !v.is_null())
}

/// A whole number in `0..=2^53`.
fn whole(key: &str, v: &JsValue) -> Result<u64> {
    match v.as_f64() {
        Some(x) if x.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&x) => Ok(x as u64),
        _ => Err(Error::spec(key, text(v), "must be a whole number ≥ 0")),
    }
}

fn required_size(obj: &JsValue, key: &str) -> Result<usize> {
    let v = get(obj, key).ok_or_else(|| Error::spec(key, "undefined", "is required"))?;
    Ok(whole(key, &v)? as usize)
}

/// A finite number.
fn number(key: &str, v: &JsValue) -> Result<f64> {
    match v.as_f64() {
        Some(x) if x.is_finite() => Ok(x),
        _ => Err(Error::spec(key, text(v), "must be a finite number")),
    }
}

/// A string option.
fn string(key: &str, v: &JsValue) -> Result<String> {
    v.as_string()
        .ok_or_else(|| Error::spec(key, text(v), "must be a string"))
}

/// The numbers of an array or typed array.
fn numbers(key: &str, v: &JsValue) -> Result<Vec<f64>> {
    if !(Array::is_array(v) || v.is_instance_of::<js_sys::Object>() && has_length(v)) {
        return Err(Error::spec(key, text(v), "must be an array of numbers"));
    }
    Array::from(v)
        .iter()
        .enumerate()
        .map(|(i, x)| number(&format!("{key}[{i}]"), &x))
        .collect()
}

fn has_length(v: &JsValue) -> bool {
    get(v, "length").is_some_and(|l| l.as_f64().is_some())
}

/// Reads a JavaScript spec object. `f16_inputs` is true when q, k and v came as
/// `Uint16Array`s (f16 bits): the dtype is then f16 (a `dtype: "f32"` contradicting it is an
/// error).
pub fn from_js(obj: &JsValue, f16_inputs: bool) -> Result<AttentionSpec> {
    if !obj.is_object() || Array::is_array(obj) {
        return Err(Error::spec("spec", text(obj), "must be an object"));
    }
    let unknown: Vec<String> = Object::keys(obj.unchecked_ref::<Object>())
        .iter()
        .filter_map(|k| k.as_string())
        .filter(|k| !KEYS.contains(&k.as_str()))
        .collect();
    if !unknown.is_empty() {
        return Err(Error::spec(
            "spec",
            unknown.join(", "),
            format!("is not a spec field (the fields are {})", KEYS.join(", ")),
        ));
    }
    let mut spec = AttentionSpec::new(
        required_size(obj, "batch")?,
        required_size(obj, "qHeads")?,
        required_size(obj, "kvHeads")?,
        required_size(obj, "seqQ")?,
        required_size(obj, "seqK")?,
        required_size(obj, "headDim")?,
    );
    if let Some(v) = get(obj, "layout") {
        spec = spec.layout(Layout::parse(&string("layout", &v)?)?);
    }
    if let Some(v) = get(obj, "causal") {
        let s = string("causal", &v)?;
        spec = spec.causal(match s.trim() {
            "none" => None,
            other => Some(CausalAlign::parse(other)?),
        });
    }
    if let Some(v) = get(obj, "scale") {
        spec = spec.scale(number("scale", &v)? as f32);
    }
    if let Some(v) = get(obj, "kvLens") {
        let lens = numbers("kvLens", &v)?
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let key = format!("kvLens[{i}]");
                whole(&key, &JsValue::from_f64(x)).and_then(|n| {
                    u32::try_from(n).map_err(|_| Error::spec(key, n, "is larger than 2^32 − 1"))
                })
            })
            .collect::<Result<Vec<u32>>>()?;
        spec = spec.kv_lens(lens);
    }
    if let Some(v) = get(obj, "window") {
        let (left, right) = if Array::is_array(&v) {
            match numbers("window", &v)?.as_slice() {
                &[l, r] => (l, r),
                _ => return Err(Error::spec("window", text(&v), "must be [left, right]")),
            }
        } else {
            let side = |k: &str| {
                let key = format!("window.{k}");
                get(&v, k)
                    .ok_or_else(|| Error::spec(&key, "undefined", "is required"))
                    .and_then(|x| number(&key, &x))
            };
            (side("left")?, side("right")?)
        };
        for (k, x) in [("window.left", left), ("window.right", right)] {
            if x.fract() != 0.0 {
                return Err(Error::spec(k, x, "must be a whole number (−1: unbounded)"));
            }
        }
        spec = spec.window(left as i64, right as i64);
    }
    if let Some(v) = get(obj, "alibi") {
        spec = spec.alibi(match v.as_bool() {
            Some(true) => Some(Alibi::Standard),
            Some(false) => None,
            None => Some(Alibi::Slopes(
                numbers("alibi", &v)?
                    .into_iter()
                    .map(|x| x as f32)
                    .collect(),
            )),
        });
    }
    if let Some(v) = get(obj, "softcap") {
        spec = spec.softcap(number("softcap", &v)? as f32);
    }
    for (key, set) in [
        (
            "returnLse",
            AttentionSpec::with_lse as fn(AttentionSpec, bool) -> AttentionSpec,
        ),
        ("returnWeights", AttentionSpec::with_weights),
    ] {
        if let Some(v) = get(obj, key) {
            let yes = v
                .as_bool()
                .ok_or_else(|| Error::spec(key, text(&v), "must be true or false"))?;
            spec = set(spec, yes);
        }
    }
    let dtype = match get(obj, "dtype") {
        Some(v) => Some(DType::parse(&string("dtype", &v)?)?),
        None => None,
    };
    spec = spec.dtype(match (dtype, f16_inputs) {
        (Some(DType::F32), true) => {
            return Err(Error::spec(
                "dtype",
                "f32",
                "contradicts the inputs: q, k and v are Uint16Arrays (f16 bits)",
            ));
        }
        (Some(d), _) => d,
        (None, true) => DType::F16,
        (None, false) => DType::F32,
    });
    if let Some(v) = get(obj, "kernel") {
        spec = spec.kernel(Kernel::parse(&string("kernel", &v)?)?);
    }
    Ok(spec)
}

/// The JavaScript spec object of `spec` (the inverse of [`from_js`]; fields at their
/// defaults are left out).
pub fn to_js(spec: &AttentionSpec) -> JsValue {
    let obj = Object::new();
    let set = |k: &str, v: JsValue| {
        let _ = Reflect::set(&obj, &JsValue::from_str(k), &v);
    };
    let n = |x: usize| JsValue::from_f64(x as f64);
    set("batch", n(spec.batch));
    set("qHeads", n(spec.q_heads));
    set("kvHeads", n(spec.kv_heads));
    set("seqQ", n(spec.seq_q));
    set("seqK", n(spec.seq_k));
    set("headDim", n(spec.head_dim));
    set("layout", spec.layout.name().into());
    set("causal", spec.causal.map_or("none", |c| c.name()).into());
    if let Some(s) = spec.scale {
        set("scale", JsValue::from_f64(s as f64));
    }
    if let Some(l) = &spec.kv_lens {
        set(
            "kvLens",
            l.iter()
                .map(|&x| JsValue::from_f64(x as f64))
                .collect::<Array>()
                .into(),
        );
    }
    if let Some(w) = spec.window {
        set(
            "window",
            [w.left, w.right]
                .iter()
                .map(|&x| JsValue::from_f64(x as f64))
                .collect::<Array>()
                .into(),
        );
    }
    match &spec.alibi {
        Some(Alibi::Standard) => set("alibi", JsValue::TRUE),
        Some(Alibi::Slopes(s)) => set(
            "alibi",
            s.iter()
                .map(|&x| JsValue::from_f64(x as f64))
                .collect::<Array>()
                .into(),
        ),
        None => {}
    }
    if let Some(c) = spec.softcap {
        set("softcap", JsValue::from_f64(c as f64));
    }
    if spec.return_lse {
        set("returnLse", JsValue::TRUE);
    }
    if spec.return_weights {
        set("returnWeights", JsValue::TRUE);
    }
    if spec.dtype != DType::F32 {
        set("dtype", spec.dtype.name().into());
    }
    if spec.kernel != Kernel::Auto {
        set("kernel", spec.kernel.name().into());
    }
    obj.into()
}
