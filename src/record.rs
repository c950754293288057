//! The benchmark record: one line of `wgattn bench --json`, and what the browser's `bench()`
//! returns — one type for both, serialisable with the `serde` feature (fields in this order,
//! names as written).

use crate::bench::BenchResult;

/// An adapter as `bench` reports it.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AdapterRecord {
    /// Adapter name.
    pub name: String,
    /// Backend, lower case (`vulkan`, `gl`, …; `browserwebgpu` in a browser).
    pub backend: String,
    /// Device type (`Cpu`, `DiscreteGpu`, …).
    pub device_type: String,
    /// Driver name and information.
    pub driver: String,
}

impl AdapterRecord {
    /// The record of an adapter.
    pub fn of(i: &wgpu::AdapterInfo) -> Self {
        AdapterRecord {
            name: i.name.clone(),
            backend: format!("{:?}", i.backend).to_lowercase(),
            device_type: format!("{:?}", i.device_type),
            driver: format!("{} {}", i.driver, i.driver_info).trim().to_string(),
        }
    }
}

/// The shape of a benchmarked problem.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ShapeRecord {
    /// Batch size.
    pub batch: usize,
    /// Query heads.
    pub q_heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Query rows.
    pub seq_q: usize,
    /// Keys.
    pub seq_k: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Causal alignment (`top-left`, `bottom-right`) or null.
    pub causal: Option<String>,
}

/// One benchmarked shape.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BenchRecord {
    /// Where it ran.
    pub adapter: AdapterRecord,
    /// The problem's shape.
    pub shape: ShapeRecord,
    /// The kernel that ran (never `auto`).
    pub kernel: String,
    /// Key splits (split-KV; 1 otherwise).
    pub splits: u32,
    /// Shader variants used.
    pub shaders: Vec<String>,
    /// Storage type, `f32` or `f16`.
    pub dtype: String,
    /// Every option of the spec, as `wgattn::validation::describe` writes it.
    pub options: String,
    /// Median time of one run, ms.
    pub median_ms: f64,
    /// Fastest run, ms.
    pub min_ms: f64,
    /// Slowest run, ms.
    pub max_ms: f64,
    /// Timed runs.
    pub runs: usize,
    /// FLOP rate at the median time.
    pub gflops: f64,
    /// K/V read rate at the median time (meaningful for decoding).
    pub kv_gbps: f64,
    /// `gpu-timestamp` or `wall`.
    pub timing: String,
    /// A tuned choice (`wgattn tune`'s cache) decided the variant or split count (never in the
    /// browser, which has no tune cache).
    #[cfg_attr(feature = "serde", serde(default))]
    pub tuned: bool,
    /// The fused variant (and splits) that ran, in words, or the kernel.
    #[cfg_attr(feature = "serde", serde(default))]
    pub variant: String,
}

impl BenchRecord {
    /// The record of `r`, measured on the adapter `info`.
    pub fn new(info: &wgpu::AdapterInfo, r: &BenchResult) -> Self {
        let s = &r.spec;
        BenchRecord {
            adapter: AdapterRecord::of(info),
            shape: ShapeRecord {
                batch: s.batch,
                q_heads: s.q_heads,
                kv_heads: s.kv_heads,
                seq_q: s.seq_q,
                seq_k: s.seq_k,
                head_dim: s.head_dim,
                causal: s.causal.map(|c| c.name().to_string()),
            },
            kernel: r.kernel.name().into(),
            splits: r.splits,
            shaders: r.shaders.clone(),
            dtype: s.dtype.name().into(),
            options: crate::validation::describe(s),
            median_ms: r.median_ms,
            min_ms: r.min_ms,
            max_ms: r.max_ms,
            runs: r.runs,
            gflops: r.gflops(),
            kv_gbps: r.kv_gbps(),
            timing: r.timing.into(),
            tuned: r.tuned,
            variant: r.variant.clone(),
        }
    }
}
