//! What the commands print with `--json`, as serde structs: the CLI's own mirrors of the core's
//! results, and the core's benchmark record ([`BenchRecord`], shared with the browser module),
//! which `wgattn plot` also reads back.

use serde::Serialize;
use wgattn::AdapterSummary;
use wgattn::validation::CaseResult;

pub use wgattn::record::{AdapterRecord, BenchRecord, ShapeRecord};

/// How the command-line tool names a [`BenchRecord`] in tables and plots.
pub trait RecordText {
    /// The shape as `BxHqxHkvxSqxSkxD`, followed by the options other than the layout
    /// `bhsd` (e.g. `1x8x8x512x512x64 causal=top-left`).
    fn shape_text(&self) -> String;
    /// The series this record belongs to in a plot.
    fn series(&self) -> String;
}

impl RecordText for BenchRecord {
    /// The shape as `BxHqxHkvxSqxSkxD`, followed by the options other than the layout
    /// `bhsd` (e.g. `1x8x8x512x512x64 causal=top-left`).
    fn shape_text(&self) -> String {
        let s = &self.shape;
        // describe() starts with the five shape words; what follows (layout onwards) are the
        // options.
        let options: Vec<&str> = self
            .options
            .split(' ')
            .skip(5)
            .filter(|o| *o != "bhsd" && !o.is_empty())
            .collect();
        let dims = format!(
            "{}x{}x{}x{}x{}x{}",
            s.batch, s.q_heads, s.kv_heads, s.seq_q, s.seq_k, s.head_dim
        );
        if options.is_empty() {
            dims
        } else {
            format!("{dims} {}", options.join(" "))
        }
    }

    /// The series this record belongs to in a plot: kernel, adapter (and backend) and dtype.
    fn series(&self) -> String {
        format!(
            "{} on {} ({}), {}",
            self.kernel, self.adapter.name, self.adapter.backend, self.dtype
        )
    }
}

/// One tensor's verdict (lse) in `wgattn validate --json`.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct TensorRecord {
    /// Largest absolute error (null when not finite).
    pub max_abs: Option<f64>,
    /// The tolerance applied.
    pub tolerance: f64,
    /// Entries that are ±∞ on one side only (masked rows must match exactly).
    pub inf_mismatches: usize,
    /// NaN entries.
    pub nan_count: usize,
    /// Within tolerance.
    pub pass: bool,
}

/// One case of `wgattn validate --json`: its verdict, or the error that stopped it.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct CaseRecord {
    /// `grid` or `file`.
    pub source: String,
    /// Case name.
    pub name: String,
    /// Kernel that ran (absent when the case could not run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// Largest absolute error of out (null when not finite).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_abs: Option<f64>,
    /// Relative Frobenius error of out (null when not finite).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rel_fro: Option<f64>,
    /// NaN outputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nan_count: Option<usize>,
    /// The tolerance applied to out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// Which error of out the tolerance applies to: `max_abs` or `rel_fro`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerance_on: Option<String>,
    /// The lse verdict, when the case compared lse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lse: Option<TensorRecord>,
    /// Why the case could not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Within tolerance (false for an error).
    pub pass: bool,
}

impl CaseRecord {
    /// The record of case `name` from `source` (`grid` or `file`): its result or its error.
    pub fn new(source: &str, name: &str, r: &wgattn::Result<CaseResult>) -> Self {
        let finite = |x: f64| x.is_finite().then_some(x);
        match r {
            Ok(r) => {
                let v = &r.verdict;
                CaseRecord {
                    source: source.into(),
                    name: r.name.clone(),
                    kernel: Some(r.kernel.name().into()),
                    max_abs: finite(v.out.stats.max_abs),
                    rel_fro: finite(v.out.stats.rel_fro),
                    nan_count: Some(v.out.stats.nan_count),
                    tolerance: Some(v.out.tolerance),
                    tolerance_on: Some(v.out.measure.name().into()),
                    lse: v.lse.as_ref().map(|l| TensorRecord {
                        max_abs: finite(l.stats.max_abs),
                        tolerance: l.tolerance,
                        inf_mismatches: l.inf_mismatches,
                        nan_count: l.stats.nan_count,
                        pass: l.passed(),
                    }),
                    error: None,
                    pass: r.passed(),
                }
            }
            Err(e) => CaseRecord {
                source: source.into(),
                name: name.into(),
                kernel: None,
                max_abs: None,
                rel_fro: None,
                nan_count: None,
                tolerance: None,
                tolerance_on: None,
                lse: None,
                error: Some(e.to_string()),
                pass: false,
            },
        }
    }
}

/// The whole of `wgattn validate --json`.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ValidateReport {
    /// Adapter name.
    pub adapter: String,
    /// Backend, lower case.
    pub backend: String,
    /// Every case.
    pub cases: Vec<CaseRecord>,
    /// Cases out of tolerance.
    pub failed: usize,
    /// No case failed.
    pub passed: bool,
}

/// The limits wgattn uses, under wgpu's names.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct LimitsRecord {
    /// Largest storage-buffer binding, bytes.
    pub max_storage_buffer_binding_size: u64,
    /// Largest buffer, bytes.
    pub max_buffer_size: u64,
    /// Workgroup memory, bytes.
    pub max_compute_workgroup_storage_size: u32,
    /// Invocations per workgroup.
    pub max_compute_invocations_per_workgroup: u32,
    /// Workgroups per dispatch dimension.
    pub max_compute_workgroups_per_dimension: u32,
    /// Storage buffers per shader stage.
    pub max_storage_buffers_per_shader_stage: u32,
    /// Alignment of storage-buffer offsets, bytes.
    pub min_storage_buffer_offset_alignment: u32,
}

/// One adapter of `wgattn info --json`.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct AdapterInfoRecord {
    /// Adapter name.
    pub name: String,
    /// Backend, lower case.
    pub backend: String,
    /// Device type.
    pub device_type: String,
    /// Driver name.
    pub driver: String,
    /// Driver information.
    pub driver_info: String,
    /// The adapter wgattn would use.
    pub chosen: bool,
    /// Features wgattn uses that the adapter has.
    pub features: Vec<String>,
    /// Fixed subgroup size, if any.
    pub subgroup_size: Option<u32>,
    /// Shader variants wgattn would pick there.
    pub variants: Vec<String>,
    /// Limits wgattn uses.
    pub limits: LimitsRecord,
}

impl AdapterInfoRecord {
    /// The record of adapter `s`; `chosen` marks the one in use.
    pub fn new(s: &AdapterSummary, chosen: bool) -> Self {
        let l = &s.limits;
        AdapterInfoRecord {
            name: s.info.name.clone(),
            backend: format!("{:?}", s.info.backend).to_lowercase(),
            device_type: format!("{:?}", s.info.device_type),
            driver: s.info.driver.clone(),
            driver_info: s.info.driver_info.clone(),
            chosen,
            features: s.feature_names().iter().map(|f| f.to_string()).collect(),
            subgroup_size: s.caps.subgroup_size,
            variants: s.caps.variants(),
            limits: LimitsRecord {
                max_storage_buffer_binding_size: l.max_storage_binding,
                max_buffer_size: l.max_buffer_size,
                max_compute_workgroup_storage_size: l.max_workgroup_storage,
                max_compute_invocations_per_workgroup: l.max_invocations,
                max_compute_workgroups_per_dimension: l.max_workgroups_per_dim,
                max_storage_buffers_per_shader_stage: l.max_storage_buffers_per_stage,
                min_storage_buffer_offset_alignment: l.storage_offset_alignment,
            },
        }
    }
}

/// The whole of `wgattn info --json`.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct InfoReport {
    /// Every adapter, best first.
    pub adapters: Vec<AdapterInfoRecord>,
}

/// Pretty JSON of `value` (serialising these plain structs cannot fail; an empty string if it
/// somehow did).
pub fn pretty<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// One-line JSON of `value`.
pub fn line<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// One shape of `wgattn bench --backward --json`.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct BackwardRecord {
    /// The adapter.
    pub adapter: AdapterRecord,
    /// Always `backward`.
    pub pass: String,
    /// The spec in words (shape and options).
    pub options: String,
    /// Backward alone: median milliseconds (submit to completion).
    pub median_ms: f64,
    /// Backward alone: fastest run.
    pub min_ms: f64,
    /// Backward alone: slowest run.
    pub max_ms: f64,
    /// Timed runs of each kind.
    pub runs: usize,
    /// Backward alone: GFLOP/s, FLOPs = 2.5 × the forward's.
    pub gflops: f64,
    /// Forward + backward in one submission: median milliseconds.
    pub fwd_bwd_median_ms: f64,
    /// Forward + backward: fastest run.
    pub fwd_bwd_min_ms: f64,
    /// Forward + backward: GFLOP/s, FLOPs = 3.5 × the forward's.
    pub fwd_bwd_gflops: f64,
    /// The backward's shader variants.
    pub shaders: Vec<String>,
    /// How it was timed (`wall`).
    pub timing: String,
}
