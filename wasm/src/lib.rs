//! # wgattn in the browser
//!
//! The JavaScript API of wgattn (an ES module built by `scripts/build-web.sh` into
//! `web/pkg/wgattn.js`): attention on the visitor's GPU through WebGPU, the f64 CPU reference,
//! the standard benchmark and the public case files.
//!
//! ```js
//! import init, { Wgattn } from "./pkg/wgattn.js";
//! await init();
//! const ctx = await Wgattn.create();
//! const { out, lse } = await ctx.attention(q, k, v, {
//!   batch: 1, qHeads: 8, kvHeads: 2, seqQ: 128, seqK: 128, headDim: 64,
//!   layout: "bhsd", causal: "bottom-right", returnLse: true,
//! });
//! ```
//!
//! Errors reject the promise with a JavaScript `Error` whose message is the Rust error's.
//! The crate also builds natively (its bindings then do nothing), for clippy. Its benchmark
//! records are `wgattn::record::BenchRecord`, the type of `wgattn bench --json`'s lines.

use std::rc::Rc;

use half::f16;
use js_sys::{Array, Float32Array, Function, Object, Promise, Reflect, Uint16Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;
use wgattn::bench::{BenchConfig, Timing};
use wgattn::{AttentionSpec, Context, ContextOptions, Error, Inputs, Output, Tensor};

pub mod spec;

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &'static str = r#"
/** One attention problem. Tensors are row-major in `layout`: q and out [B, Hq, Sq, D] (bhsd)
 * or [B, Sq, Hq, D] (bshd); k and v the same with Hkv and Sk. */
export interface AttentionSpec {
  batch: number; qHeads: number; kvHeads: number; seqQ: number; seqK: number; headDim: number;
  /** Default "bhsd". */
  layout?: "bhsd" | "bshd";
  /** Default "none". "bottom-right": query i sees keys j ≤ i + (seqK − seqQ). */
  causal?: "none" | "top-left" | "bottom-right";
  /** Softmax scale; default 1/√headDim. */
  scale?: number;
  /** Valid keys per batch entry (key padding); a row with none returns out 0 and lse −∞. */
  kvLens?: number[] | Uint32Array;
  /** Sliding window [left, right] around the aligned diagonal; −1 = unbounded. */
  window?: [number, number] | { left: number; right: number };
  /** ALiBi: true for the paper's slopes, or one slope per query head. */
  alibi?: boolean | number[] | Float32Array;
  /** Soft-capping of the logits: cap · tanh(logit / cap). */
  softcap?: number;
  /** Also return the log-sum-exp of every row [B, Hq, Sq]. */
  returnLse?: boolean;
  /** Also return the probability matrix [B, Hq, Sq, Sk] (three-pass kernel). */
  returnWeights?: boolean;
  /** Storage type on the GPU; "f16" when the inputs are Uint16Arrays (f16 bits). */
  dtype?: "f32" | "f16";
  /** Kernel; default "auto" (the planner's choice). */
  kernel?: "auto" | "three-pass" | "flash" | "split-kv";
}

/** What `attention` and `referenceAttention` return. */
export interface AttentionResult {
  out: Float32Array;
  lse?: Float32Array;
  weights?: Float32Array;
}

/** The adapter a context runs on and what wgattn uses of it. */
export interface AdapterInfo {
  name: string; backend: string; deviceType: string; driver: string;
  /** GPUAdapter.info's vendor and architecture (empty where the browser withholds them). */
  vendor: string; architecture: string;
  features: string[];
  limits: Record<string, number>;
  subgroupSize: number | null; shaderF16: boolean;
}

/** How long `bench` measures: `runs` timed runs, or as many as fit `seconds` (default 2, at
 * least 5 runs); one untimed warm-up run first. */
export interface BenchOptions {
  seconds?: number; runs?: number; timing?: "auto" | "gpu" | "wall";
}

/** One line of `wgattn bench --json`. */
export interface BenchRecord {
  adapter: { name: string; backend: string; device_type: string; driver: string };
  shape: { batch: number; q_heads: number; kv_heads: number; seq_q: number; seq_k: number;
           head_dim: number; causal: string | null };
  kernel: string; splits: number; shaders: string[]; dtype: string; options: string;
  median_ms: number; min_ms: number; max_ms: number; runs: number;
  gflops: number; kv_gbps: number; timing: string; tuned: boolean; variant: string;
}

/** A case file: its spec, inputs and stored expected output. */
export interface CaseFile {
  name: string; spec: AttentionSpec;
  q: Float32Array; k: Float32Array; v: Float32Array; out: Float32Array;
}
"#;

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// A JavaScript `Error` with the message of `e`.
fn js_error(e: impl std::fmt::Display) -> JsValue {
    JsError::new(&e.to_string()).into()
}

/// How a JavaScript value reads in an error message.
fn text(v: &JsValue) -> String {
    v.as_string()
        .or_else(|| js_sys::JSON::stringify(v).ok().and_then(|s| s.as_string()))
        .unwrap_or_else(|| format!("{v:?}"))
}

/// `obj[key] = value`.
fn set(obj: &Object, key: &str, value: impl Into<JsValue>) {
    let _ = Reflect::set(obj, &JsValue::from_str(key), &value.into());
}

/// One input tensor, copied out of JavaScript.
enum Data {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl Data {
    fn read(name: &str, v: &JsValue) -> wgattn::Result<Data> {
        if let Some(a) = v.dyn_ref::<Float32Array>() {
            Ok(Data::F32(a.to_vec()))
        } else if let Some(a) = v.dyn_ref::<Uint16Array>() {
            Ok(Data::F16(
                a.to_vec().into_iter().map(f16::from_bits).collect(),
            ))
        } else {
            Err(Error::spec(
                name,
                text(v),
                "must be a Float32Array, or a Uint16Array of f16 bits",
            ))
        }
    }

    fn tensor(&self) -> Tensor<'_> {
        match self {
            Data::F32(x) => Tensor::F32(x),
            Data::F16(x) => Tensor::F16(x),
        }
    }
}

/// A call's spec and inputs, read before anything runs.
struct Call {
    spec: AttentionSpec,
    q: Data,
    k: Data,
    v: Data,
}

impl Call {
    fn read(q: &JsValue, k: &JsValue, v: &JsValue, spec: &JsValue) -> wgattn::Result<Call> {
        let (q, k, v) = (
            Data::read("q", q)?,
            Data::read("k", k)?,
            Data::read("v", v)?,
        );
        let f16 = |d: &Data| matches!(d, Data::F16(_));
        if f16(&q) != f16(&k) || f16(&q) != f16(&v) {
            let kind = |d: &Data| {
                if f16(d) {
                    "Uint16Array"
                } else {
                    "Float32Array"
                }
            };
            return Err(Error::spec(
                "q, k, v",
                format!("{}, {}, {}", kind(&q), kind(&k), kind(&v)),
                "must all be Float32Arrays or all Uint16Arrays (f16 bits)",
            ));
        }
        let spec = spec::from_js(spec, f16(&q))?;
        Ok(Call { spec, q, k, v })
    }

    fn inputs(&self) -> Inputs<'_> {
        Inputs::new(self.q.tensor(), self.k.tensor(), self.v.tensor())
    }
}

/// `{out, lse?, weights?}` as Float32Arrays.
fn output_to_js(o: &Output) -> JsValue {
    let obj = Object::new();
    set(&obj, "out", Float32Array::from(o.out.as_slice()));
    if let Some(lse) = &o.lse {
        set(&obj, "lse", Float32Array::from(lse.as_slice()));
    }
    if let Some(w) = &o.weights {
        set(&obj, "weights", Float32Array::from(w.as_slice()));
    }
    obj.into()
}

/// A wgattn context on the browser's WebGPU adapter.
#[wasm_bindgen]
pub struct Wgattn {
    ctx: Rc<Context>,
    /// The adapter as the browser describes it (`GPUAdapter.info`): vendor, architecture.
    vendor: String,
    architecture: String,
}

/// `GPUAdapter.info`'s vendor and architecture of the adapter the browser gives (wgpu keeps
/// only the description, which browsers often leave empty).
async fn browser_adapter_info() -> Option<(String, String)> {
    let gpu = Reflect::get(
        &Reflect::get(&js_sys::global(), &"navigator".into()).ok()?,
        &"gpu".into(),
    )
    .ok()?;
    let request: Function = Reflect::get(&gpu, &"requestAdapter".into())
        .ok()?
        .dyn_into()
        .ok()?;
    let options = Object::new();
    set(&options, "powerPreference", "high-performance");
    let promise: Promise = request.call1(&gpu, &options).ok()?.dyn_into().ok()?;
    let adapter = wasm_bindgen_futures::JsFuture::from(promise).await.ok()?;
    let info = Reflect::get(&adapter, &"info".into()).ok()?;
    let field = |k: &str| {
        Reflect::get(&info, &k.into())
            .ok()
            .and_then(|v| v.as_string())
            .unwrap_or_default()
    };
    Some((field("vendor"), field("architecture")))
}

impl Wgattn {
    /// The adapter's description, with the name made from vendor and architecture when the
    /// browser leaves the description empty.
    fn info(&self) -> wgpu::AdapterInfo {
        let mut info = self.ctx.adapter_info().clone();
        if info.name.trim().is_empty() {
            info.name = format!("{} {}", self.vendor, self.architecture)
                .trim()
                .to_string();
        }
        info
    }
}

#[wasm_bindgen]
impl Wgattn {
    /// Opens the WebGPU adapter (`navigator.gpu.requestAdapter`, high-performance) with the
    /// features wgattn uses. `options` (optional): `{ adapter?: string }`; `adapter`, when
    /// given, must be a substring of the adapter's name. Rejects when the browser has no WebGPU or no adapter.
    #[wasm_bindgen(unchecked_return_type = "Promise<Wgattn>")]
    pub fn create(options: Option<JsValue>) -> Promise {
        future_to_promise(async move {
            let adapter = options
                .filter(|o| o.is_object())
                .and_then(|o| Reflect::get(&o, &"adapter".into()).ok())
                .and_then(|a| a.as_string());
            let ctx = Context::with_options_async(ContextOptions {
                adapter,
                ..Default::default()
            })
            .await
            .map_err(js_error)?;
            let (vendor, architecture) = browser_adapter_info().await.unwrap_or_default();
            Ok(Wgattn {
                ctx: Rc::new(ctx),
                vendor,
                architecture,
            }
            .into())
        })
    }

    /// The adapter, its features and limits as wgattn plans with them.
    #[wasm_bindgen(js_name = adapterInfo, unchecked_return_type = "AdapterInfo")]
    pub fn adapter_info(&self) -> JsValue {
        let info = self.info();
        let caps = self.ctx.caps();
        let obj = Object::new();
        set(&obj, "name", info.name.as_str());
        set(
            &obj,
            "backend",
            format!("{:?}", info.backend).to_lowercase(),
        );
        set(&obj, "deviceType", format!("{:?}", info.device_type));
        set(
            &obj,
            "driver",
            format!("{} {}", info.driver, info.driver_info).trim(),
        );
        set(&obj, "vendor", self.vendor.as_str());
        set(&obj, "architecture", self.architecture.as_str());
        let features: Array = self
            .ctx
            .features()
            .iter_names()
            .map(|(name, _)| JsValue::from_str(&name.to_lowercase().replace('_', "-")))
            .collect();
        set(&obj, "features", features);
        let limits = Object::new();
        let l = self.ctx.limits();
        for (k, v) in [
            ("maxStorageBufferBindingSize", l.max_storage_binding as f64),
            ("maxBufferSize", l.max_buffer_size as f64),
            (
                "maxComputeWorkgroupStorageSize",
                l.max_workgroup_storage as f64,
            ),
            (
                "maxComputeInvocationsPerWorkgroup",
                l.max_invocations as f64,
            ),
            (
                "maxComputeWorkgroupsPerDimension",
                l.max_workgroups_per_dim as f64,
            ),
            (
                "maxStorageBuffersPerShaderStage",
                l.max_storage_buffers_per_stage as f64,
            ),
            (
                "minStorageBufferOffsetAlignment",
                l.storage_offset_alignment as f64,
            ),
        ] {
            set(&limits, k, v);
        }
        set(&obj, "limits", limits);
        set(
            &obj,
            "subgroupSize",
            caps.subgroup_size.map_or(JsValue::NULL, JsValue::from),
        );
        set(&obj, "shaderF16", caps.shader_f16);
        obj.into()
    }

    /// Attention on the GPU: `q`, `k`, `v` as Float32Arrays (or Uint16Arrays of f16 bits) in
    /// the spec's layout. Resolves to `{out, lse?, weights?}` (Float32Arrays); rejects with
    /// the Rust error's message on a bad spec, bad inputs or a GPU error.
    #[wasm_bindgen(unchecked_return_type = "Promise<AttentionResult>")]
    pub fn attention(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Float32Array | Uint16Array")] q: JsValue,
        #[wasm_bindgen(unchecked_param_type = "Float32Array | Uint16Array")] k: JsValue,
        #[wasm_bindgen(unchecked_param_type = "Float32Array | Uint16Array")] v: JsValue,
        #[wasm_bindgen(unchecked_param_type = "AttentionSpec")] spec: JsValue,
    ) -> Promise {
        let ctx = self.ctx.clone();
        let call = Call::read(&q, &k, &v, &spec);
        future_to_promise(async move {
            let call = call.map_err(js_error)?;
            let out = ctx
                .attention_with_async(&call.spec, &call.inputs())
                .await
                .map_err(js_error)?;
            Ok(output_to_js(&out))
        })
    }

    /// Times `spec` on the GPU with random inputs that stay on the GPU (as `wgattn bench`):
    /// resolves to the same record as one line of `wgattn bench --json`. `options`
    /// (optional): a `BenchOptions`; `onProgress(done, expected)` (optional) is called after
    /// every timed run.
    #[wasm_bindgen(unchecked_return_type = "Promise<BenchRecord>")]
    pub fn bench(
        &self,
        #[wasm_bindgen(unchecked_param_type = "AttentionSpec")] spec: JsValue,
        options: Option<JsValue>,
        #[wasm_bindgen(js_name = onProgress)] on_progress: Option<Function>,
    ) -> Promise {
        let options = options.unwrap_or(JsValue::UNDEFINED);
        let ctx = self.ctx.clone();
        let info = self.info();
        let prepared = spec::from_js(&spec, false).and_then(|s| Ok((s, bench_config(&options)?)));
        let progress = on_progress;
        future_to_promise(async move {
            let (spec, config) = prepared.map_err(js_error)?;
            let mut report = |done: usize, expected: usize| {
                if let Some(f) = &progress {
                    let _ = f.call2(
                        &JsValue::NULL,
                        &(done as f64).into(),
                        &(expected as f64).into(),
                    );
                }
            };
            let r = wgattn::bench::bench_async(&ctx, &spec, &config, &mut report)
                .await
                .map_err(js_error)?;
            let json = serde_json::to_string(&wgattn::record::BenchRecord::new(&info, &r))
                .map_err(|e| JsError::new(&e.to_string()))?;
            js_sys::JSON::parse(&json)
        })
    }
}

/// The benchmark configuration of `{seconds?, runs?, timing?}` (as `wgattn bench`'s flags).
fn bench_config(options: &JsValue) -> wgattn::Result<BenchConfig> {
    let get = |k: &str| {
        if options.is_object() {
            Reflect::get(options, &k.into())
                .ok()
                .filter(|v| !v.is_undefined() && !v.is_null())
        } else {
            None
        }
    };
    let runs = match get("runs") {
        Some(v) => match v.as_f64() {
            Some(x) if x >= 1.0 && x.fract() == 0.0 => Some(x as usize),
            _ => return Err(Error::spec("runs", text(&v), "must be a whole number ≥ 1")),
        },
        None => None,
    };
    let seconds = match get("seconds") {
        Some(v) => match v.as_f64() {
            Some(x) if x > 0.0 && x.is_finite() => x,
            _ => return Err(Error::spec("seconds", text(&v), "must be a number above 0")),
        },
        None => 2.0,
    };
    let timing = match get("timing") {
        Some(v) => Timing::parse(&v.as_string().unwrap_or_else(|| text(&v)))?,
        None => Timing::Auto,
    };
    Ok(BenchConfig {
        warmup: 1,
        min_runs: runs.unwrap_or(5),
        max_runs: runs.unwrap_or(10_000),
        target: match runs {
            Some(_) => std::time::Duration::ZERO,
            None => std::time::Duration::from_secs_f64(seconds),
        },
        timing,
    })
}

/// The standard benchmark shapes (`wgattn bench --preset standard`) as spec objects.
#[wasm_bindgen(js_name = standardPreset, unchecked_return_type = "AttentionSpec[]")]
pub fn standard_preset() -> Array {
    wgattn::bench::standard_preset()
        .iter()
        .map(spec::to_js)
        .collect()
}

/// The f64 CPU reference (wgattn's `reference::attention`) on the same inputs and spec as
/// `Wgattn.attention`: `{out, lse?, weights?}`. Throws the Rust error's message.
#[wasm_bindgen(js_name = referenceAttention, unchecked_return_type = "AttentionResult")]
pub fn reference_attention(
    #[wasm_bindgen(unchecked_param_type = "Float32Array | Uint16Array")] q: JsValue,
    #[wasm_bindgen(unchecked_param_type = "Float32Array | Uint16Array")] k: JsValue,
    #[wasm_bindgen(unchecked_param_type = "Float32Array | Uint16Array")] v: JsValue,
    #[wasm_bindgen(unchecked_param_type = "AttentionSpec")] spec: JsValue,
) -> Result<JsValue, JsValue> {
    let call = Call::read(&q, &k, &v, &spec).map_err(js_error)?;
    let out = wgattn::reference::attention_with(&call.spec, &call.inputs()).map_err(js_error)?;
    Ok(output_to_js(&out))
}

/// The magnitude the logits of these inputs can reach (`wgattn::validation::logit_scale`):
/// lse's tolerance is the relative tolerance times this.
#[wasm_bindgen(js_name = logitScale)]
pub fn logit_scale(
    #[wasm_bindgen(unchecked_param_type = "Float32Array | Uint16Array")] q: JsValue,
    #[wasm_bindgen(unchecked_param_type = "Float32Array | Uint16Array")] k: JsValue,
    #[wasm_bindgen(unchecked_param_type = "Float32Array | Uint16Array")] v: JsValue,
    #[wasm_bindgen(unchecked_param_type = "AttentionSpec")] spec: JsValue,
) -> Result<f64, JsValue> {
    let call = Call::read(&q, &k, &v, &spec).map_err(js_error)?;
    Ok(wgattn::validation::logit_scale(&call.spec, &call.inputs()))
}

/// The tolerances wgattn's tests hold a result of these inputs to
/// (`wgattn::validation::Tolerances::for_inputs`, from the inputs and the f64 reference,
/// never from the values checked): `{out: {measure: "rel_fro" | "max_abs", bound}, lse,
/// weights}`. `f32Tol` is the relative tolerance of f32 results (1e-5 for unit-scale inputs,
/// 1e-4 for logits of order 10³ and for case files); f16 storage gets FlashAttention's rule.
#[wasm_bindgen(
    unchecked_return_type = "{ out: { measure: string; bound: number }; lse: number; weights: number }"
)]
pub fn tolerances(
    #[wasm_bindgen(unchecked_param_type = "Float32Array | Uint16Array")] q: JsValue,
    #[wasm_bindgen(unchecked_param_type = "Float32Array | Uint16Array")] k: JsValue,
    #[wasm_bindgen(unchecked_param_type = "Float32Array | Uint16Array")] v: JsValue,
    #[wasm_bindgen(unchecked_param_type = "AttentionSpec")] spec: JsValue,
    #[wasm_bindgen(js_name = f32Tol)] f32_tol: f64,
) -> Result<JsValue, JsValue> {
    let call = Call::read(&q, &k, &v, &spec).map_err(js_error)?;
    let inputs = call.inputs();
    let reference = wgattn::reference::attention_with(&call.spec, &inputs).map_err(js_error)?;
    let t =
        wgattn::validation::Tolerances::for_inputs(&call.spec, &inputs, &reference.out, f32_tol)
            .map_err(js_error)?;
    let out = Object::new();
    set(&out, "measure", t.out.0.name());
    set(&out, "bound", t.out.1);
    let obj = Object::new();
    set(&obj, "out", out);
    set(&obj, "lse", t.lse);
    set(&obj, "weights", t.weights);
    Ok(obj.into())
}

/// The spec named compactly, e.g. `b2 h8/2 q33 k100 d64 bshd causal-br`.
#[wasm_bindgen(js_name = describeSpec)]
pub fn describe_spec(
    #[wasm_bindgen(unchecked_param_type = "AttentionSpec")] spec: JsValue,
) -> Result<String, JsValue> {
    let spec = spec::from_js(&spec, false).map_err(js_error)?;
    Ok(wgattn::validation::describe(&spec))
}

/// A case file (safetensors bytes, as in `tests/data/validation`): its spec, q, k, v and
/// stored `out`. Throws when the file is malformed, has no `out`, or holds a bias or mask
/// (which the JavaScript spec does not take).
#[wasm_bindgen(js_name = caseFromSafetensors, unchecked_return_type = "CaseFile")]
pub fn case_from_safetensors(bytes: &[u8], name: &str) -> Result<JsValue, JsValue> {
    let case =
        wgattn::io::case_from_bytes(bytes, std::path::Path::new(name), None).map_err(js_error)?;
    if case.bias.is_some() || case.mask.is_some() {
        return Err(js_error(format!(
            "{name}: holds a bias or mask tensor, which the JavaScript API does not take"
        )));
    }
    let out = case
        .out
        .as_ref()
        .ok_or_else(|| js_error(format!("{name}: has no `out` tensor to compare with")))?;
    let obj = Object::new();
    set(&obj, "name", name);
    set(&obj, "spec", spec::to_js(&case.spec));
    set(&obj, "q", Float32Array::from(case.q.as_slice()));
    set(&obj, "k", Float32Array::from(case.k.as_slice()));
    set(&obj, "v", Float32Array::from(case.v.as_slice()));
    set(&obj, "out", Float32Array::from(out.as_slice()));
    Ok(obj.into())
}
