//! GPU-resident timing of one attention plan, shared by `wgattn bench` and the criterion
//! benches. Inputs stay on the GPU; only the attention passes are timed.

use std::time::Duration;

// std's Instant on native targets; performance.now() in the browser.
use web_time::Instant;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::gpu::init_buffer;
use crate::plan::{Buffers, Plan};
use crate::spec::{AttentionSpec, CausalAlign, DType, Kernel, Output, gpu_bytes, mask_bytes};
use crate::testdata::{self, Dist};

/// The standard benchmark shapes (`wgattn bench --preset standard`, the web page's
/// benchmark): (B, Hq, Hkv, Sq, Sk, D, causal top-left).
pub const STANDARD: &[(usize, usize, usize, usize, usize, usize, bool)] = &[
    (1, 8, 8, 512, 512, 64, false),
    (1, 8, 8, 1024, 1024, 64, false),
    (1, 8, 8, 1024, 1024, 64, true),
    (4, 12, 12, 256, 256, 64, false),
    (1, 32, 32, 2048, 2048, 128, true),
    (1, 8, 8, 1, 4096, 64, false),
];

/// The specs of [`STANDARD`].
pub fn standard_preset() -> Vec<AttentionSpec> {
    STANDARD
        .iter()
        .map(|&(b, hq, hkv, sq, sk, d, causal)| {
            AttentionSpec::new(b, hq, hkv, sq, sk, d).causal(causal.then_some(CausalAlign::TopLeft))
        })
        .collect()
}

/// How a run is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Timing {
    /// GPU timestamps when the adapter has them, else wall time.
    #[default]
    Auto,
    /// GPU timestamps at the beginning and end of the attention pass (TIMESTAMP_QUERY).
    Gpu,
    /// Wall time from submit until the device reports the work complete (like a device sync).
    Wall,
}

impl Timing {
    /// Parses `auto`, `gpu` or `wall`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Timing::Auto),
            "gpu" => Ok(Timing::Gpu),
            "wall" => Ok(Timing::Wall),
            other => Err(Error::spec("timing", other, "is not auto, gpu or wall")),
        }
    }
}

/// When to stop measuring.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BenchConfig {
    /// Untimed runs first (compilation, caches).
    pub warmup: usize,
    /// At least this many timed runs.
    pub min_runs: usize,
    /// At most this many timed runs.
    pub max_runs: usize,
    /// Stop after this much measuring once `min_runs` are done.
    pub target: Duration,
    /// How to time.
    pub timing: Timing,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            warmup: 1,
            min_runs: 5,
            max_runs: 1000,
            target: Duration::from_secs(2),
            timing: Timing::Auto,
        }
    }
}

/// Timing of one spec.
#[derive(Debug, Clone)]
pub struct BenchResult {
    /// What ran.
    pub spec: AttentionSpec,
    /// The kernel the planner chose.
    pub kernel: Kernel,
    /// Key splits (split-KV).
    pub splits: u32,
    /// The shader variants (tile choice) that ran.
    pub shaders: Vec<String>,
    /// Timed runs.
    pub runs: usize,
    /// Median time, ms.
    pub median_ms: f64,
    /// Fastest run, ms.
    pub min_ms: f64,
    /// Slowest run, ms.
    pub max_ms: f64,
    /// `"gpu-timestamp"` or `"wall"`.
    pub timing: &'static str,
    /// FLOPs per run by [`AttentionSpec::flops`].
    pub flops: f64,
    /// A tuned choice (`wgattn tune`'s cache) decided the variant or split count.
    pub tuned: bool,
    /// The fused variant (and splits) that ran, in words, or the kernel.
    pub variant: String,
}

impl BenchResult {
    /// GFLOP/s at the median time.
    pub fn gflops(&self) -> f64 {
        self.flops / (self.median_ms * 1e-3) / 1e9
    }

    /// GB/s of K and V read once (2·B·Hkv·Sk·D·4 bytes) at the median time: the bound of decoding.
    pub fn kv_gbps(&self) -> f64 {
        let s = &self.spec;
        let bytes = 2.0 * (s.batch * s.kv_heads * s.seq_k * s.head_dim) as f64 * 4.0;
        bytes / (self.median_ms * 1e-3) / 1e9
    }
}

struct Inputs {
    q: wgpu::Buffer,
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    out: wgpu::Buffer,
    lse: wgpu::Buffer,
    bias: Option<wgpu::Buffer>,
    mask: Option<wgpu::Buffer>,
}

/// Random inputs (with the bias and mask the spec declares) uploaded in the spec's storage.
fn upload(ctx: &Context, plan: &Plan) -> Result<Inputs> {
    let spec = plan.spec();
    let data = testdata::generate(spec, Dist::Normal, Runner::SEED);
    let inputs = data.inputs();
    let sizes = plan.sizes();
    let device = ctx.device();
    ctx.gpu().gpu_scope("allocating benchmark buffers", || {
        let init = |label, bytes: &[u8]| {
            init_buffer(
                device,
                ctx.queue(),
                label,
                bytes,
                wgpu::BufferUsages::STORAGE,
            )
        };
        let empty = |label, size: u64| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: size.max(4),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        };
        let gpu = gpu_bytes;
        Inputs {
            q: init("bench q", &gpu(&inputs.q, spec.dtype)),
            k: init("bench k", &gpu(&inputs.k, spec.dtype)),
            v: init("bench v", &gpu(&inputs.v, spec.dtype)),
            out: empty("bench out", sizes.q),
            lse: empty("bench lse", sizes.lse),
            bias: inputs
                .bias
                .map(|b| init("bench bias", &gpu(&b, DType::F32))),
            mask: inputs.mask.map(|m| init("bench mask", &mask_bytes(m))),
        }
    })
}

/// A plan with its GPU-resident inputs, ready to be timed run after run.
pub struct Runner<'a> {
    ctx: &'a Context,
    plan: Plan,
    inputs: Inputs,
    queries: Option<(wgpu::QuerySet, wgpu::Buffer, wgpu::Buffer)>,
}

impl<'a> Runner<'a> {
    /// Seed of the random inputs (`testdata::generate` with `Dist::Normal`).
    pub const SEED: u64 = 1;

    /// Plans `spec` (weights off), uploads random inputs and prepares the timing.
    pub fn new(ctx: &'a Context, spec: &AttentionSpec, timing: Timing) -> Result<Self> {
        let spec = spec.clone().with_weights(false);
        Self::from_plan(ctx, ctx.plan(&spec)?, timing)
    }

    /// Like [`Runner::new`] for a plan already made (e.g. with other tuned choices); the
    /// plan's spec must not ask for the probability matrix.
    pub fn from_plan(ctx: &'a Context, plan: Plan, timing: Timing) -> Result<Self> {
        if plan.spec().return_weights {
            return Err(Error::KernelUnsupported {
                kernel: "bench".into(),
                reason: "timing runs do not return the probability matrix".into(),
            });
        }
        let inputs = upload(ctx, &plan)?;
        let has_ts = ctx.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let use_gpu = match timing {
            Timing::Wall => false,
            Timing::Auto => has_ts,
            Timing::Gpu if has_ts => true,
            Timing::Gpu => {
                return Err(Error::KernelUnsupported {
                    kernel: "bench --timing gpu".into(),
                    reason: format!("adapter {} lacks TIMESTAMP_QUERY", ctx.adapter_info().name),
                });
            }
        };
        let device = ctx.device();
        let queries = use_gpu.then(|| {
            let set = device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("wgattn bench timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let buffer = |label, usage| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: 16,
                    usage,
                    mapped_at_creation: false,
                })
            };
            use wgpu::BufferUsages as U;
            (
                set,
                buffer("wgattn timestamps", U::QUERY_RESOLVE | U::COPY_SRC),
                buffer("wgattn timestamps read", U::MAP_READ | U::COPY_DST),
            )
        });
        Ok(Runner {
            ctx,
            plan,
            inputs,
            queries,
        })
    }

    /// The output of the last run (out as f32; lse when the spec asks for it), read back.
    /// Blocks until then ([`Runner::read_output_async`] driven to completion; not on the web).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_output(&self) -> Result<Output> {
        pollster::block_on(self.read_output_async())
    }

    /// [`Runner::read_output`] as a future (the only form on the web).
    pub async fn read_output_async(&self) -> Result<Output> {
        let spec = self.plan.spec();
        let sizes = self.plan.sizes();
        let mut sources = vec![(&self.inputs.out, sizes.q)];
        if spec.return_lse {
            sources.push((&self.inputs.lse, sizes.lse));
        }
        let staging = self.ctx.gpu().gpu_scope("reading benchmark output", || {
            let device = self.ctx.device();
            let mut enc = device.create_command_encoder(&Default::default());
            let staging: Vec<wgpu::Buffer> = sources
                .iter()
                .map(|&(buf, bytes)| {
                    let staging = device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("wgattn bench read"),
                        size: bytes.max(4),
                        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    });
                    enc.copy_buffer_to_buffer(buf, 0, &staging, 0, bytes);
                    staging
                })
                .collect();
            self.ctx.queue().submit([enc.finish()]);
            staging
        })?;
        self.ctx.settle().await?;
        let reads: Vec<(&wgpu::Buffer, u64)> = staging
            .iter()
            .zip(&sources)
            .map(|(s, &(_, bytes))| (s, bytes))
            .collect();
        let mut raw = self.ctx.gpu().read_buffers(&reads).await?.into_iter();
        let out_bytes = raw.next().unwrap_or_default();
        let out = match spec.dtype {
            DType::F32 => bytemuck::pod_collect_to_vec(&out_bytes),
            DType::F16 => {
                bytemuck::pod_collect_to_vec::<u8, half::f16>(&out_bytes[..spec.q_len() * 2])
                    .into_iter()
                    .map(half::f16::to_f32)
                    .collect()
            }
        };
        let lse = spec
            .return_lse
            .then(|| bytemuck::pod_collect_to_vec(&raw.next().unwrap_or_default()));
        Ok(Output {
            out,
            lse,
            weights: None,
        })
    }

    /// The plan being timed.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// `"gpu-timestamp"` or `"wall"`.
    pub fn timing(&self) -> &'static str {
        if self.queries.is_some() {
            "gpu-timestamp"
        } else {
            "wall"
        }
    }

    /// Runs the attention once and returns its time in ms: between the pass's timestamps, or
    /// wall time from submit until the device reports the work complete. Blocks until then
    /// ([`Runner::run_once_async`] driven to completion; not on the web).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run_once(&self) -> Result<f64> {
        pollster::block_on(self.run_once_async())
    }

    /// [`Runner::run_once`] as a future (the only form on the web).
    pub async fn run_once_async(&self) -> Result<f64> {
        let (ctx, inputs) = (self.ctx, &self.inputs);
        let cmd = ctx
            .gpu()
            .gpu_scope("benchmark", || -> Result<wgpu::CommandBuffer> {
                let mut enc =
                    ctx.device()
                        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                            label: Some("wgattn bench"),
                        });
                let ts =
                    self.queries
                        .as_ref()
                        .map(|(set, _, _)| wgpu::ComputePassTimestampWrites {
                            query_set: set,
                            beginning_of_pass_write_index: Some(0),
                            end_of_pass_write_index: Some(1),
                        });
                let bufs = Buffers {
                    lse: Some(&inputs.lse),
                    bias: inputs.bias.as_ref(),
                    mask: inputs.mask.as_ref(),
                    ..Buffers::new(&inputs.q, &inputs.k, &inputs.v, &inputs.out)
                };
                self.plan.encode_timed(&mut enc, &bufs, ts)?;
                if let Some((set, resolve, read)) = &self.queries {
                    enc.resolve_query_set(set, 0..2, resolve, 0);
                    enc.copy_buffer_to_buffer(resolve, 0, read, 0, 16);
                }
                Ok(enc.finish())
            })??;
        let started = Instant::now();
        ctx.gpu()
            .gpu_scope("benchmark", || ctx.queue().submit([cmd]))?;
        ctx.gpu().wait_async().await?;
        let wall = started.elapsed().as_secs_f64() * 1e3;
        ctx.settle().await?;
        match &self.queries {
            Some((_, _, read)) => {
                let bytes = ctx.gpu().read_buffers(&[(read, 16)]).await?.concat();
                let t: [u64; 2] = bytemuck::pod_read_unaligned(&bytes);
                let period_ns = ctx.queue().get_timestamp_period() as f64;
                Ok(t[1].saturating_sub(t[0]) as f64 * period_ns / 1e6)
            }
            None => Ok(wall),
        }
    }
}

/// Times `spec` on `ctx`. `progress(done, expected)` is called after every run. Blocks until
/// done ([`bench_async`] driven to completion; not on the web).
#[cfg(not(target_arch = "wasm32"))]
pub fn bench(
    ctx: &Context,
    spec: &AttentionSpec,
    config: &BenchConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<BenchResult> {
    pollster::block_on(bench_async(ctx, spec, config, progress))
}

/// [`bench()`] as a future (the only form on the web): `progress(done, expected)` is called
/// after every run, between which the future yields to the browser.
pub async fn bench_async(
    ctx: &Context,
    spec: &AttentionSpec,
    config: &BenchConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<BenchResult> {
    let runner = Runner::new(ctx, spec, config.timing)?;
    for _ in 0..config.warmup {
        runner.run_once_async().await?;
    }
    let mut times = Vec::new();
    let started = Instant::now();
    while times.len() < config.max_runs.max(1)
        && (times.len() < config.min_runs.max(1) || started.elapsed() < config.target)
    {
        times.push(runner.run_once_async().await?);
        let expected = if started.elapsed() < config.target {
            let per = started.elapsed().as_secs_f64() / times.len() as f64;
            ((config.target.as_secs_f64() / per) as usize).clamp(config.min_runs, config.max_runs)
        } else {
            times.len()
        };
        progress(times.len(), expected.max(times.len()));
    }
    times.sort_by(f64::total_cmp);
    let plan = runner.plan();
    Ok(BenchResult {
        kernel: plan.kernel(),
        splits: plan.splits(),
        shaders: plan.shaders(),
        runs: times.len(),
        median_ms: times[times.len() / 2],
        min_ms: times[0],
        max_ms: times[times.len() - 1],
        timing: runner.timing(),
        flops: plan.spec().flops(),
        spec: plan.spec().clone(),
        tuned: plan.choice().tuned,
        variant: plan.describe(),
    })
}
