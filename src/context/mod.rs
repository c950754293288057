//! The facade users hold: a [`Context`] is the GPU runtime of one device, the tuned choices
//! the planner consults there, and the host convenience path (slices in, results back) with
//! its reusable buffers. Plans are made here from the planner's decision; everything below
//! (planner, runtime, kernels, plans) knows nothing of the context.

// The blocking backward host path (readback waits on the device): native targets only.
#[cfg(not(target_arch = "wasm32"))]
mod backward;
mod host;
pub(crate) mod tune_cache;

use crate::error::Result;
use crate::gpu::{ContextOptions, Runtime};
use crate::plan::{BackwardPlan, Plan};
use crate::planner::{self, BackwardMode, Caps, Tuning};
use crate::spec::{AttentionSpec, DeviceLimits};

/// A device and queue with wgattn's pipeline cache, tuned choices and host buffers. Cheap to
/// share behind `&`; all methods take `&self` and it is `Send + Sync`.
pub struct Context {
    gpu: Runtime,
    host: host::HostCache,
    /// Tuned choices of this adapter (`ContextOptions::tune_cache`).
    tuning: Tuning,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let info = self.gpu.adapter_info();
        f.debug_struct("Context")
            .field("adapter", &info.name)
            .field("backend", &info.backend)
            .field("caps", self.gpu.caps())
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Opens the best adapter (see [`adapters`](crate::adapters)), narrowed by `WGATTN_ADAPTER` if set. Blocks
    /// until the device is open: [`Context::new_async`] driven to completion (not on the web,
    /// where nothing may block; use [`Context::new_async`] there).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Self> {
        Self::with_options(ContextOptions::default())
    }

    /// Opens an adapter with explicit options: [`Context::with_options_async`] driven to
    /// completion (not on the web).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn with_options(options: ContextOptions) -> Result<Self> {
        pollster::block_on(Self::with_options_async(options))
    }

    /// Opens the best adapter: on native targets as [`Context::new`] does, in the browser (and
    /// Deno) the WebGPU adapter `navigator.gpu.requestAdapter` gives with the high-performance
    /// preference.
    pub async fn new_async() -> Result<Self> {
        Self::with_options_async(ContextOptions::default()).await
    }

    /// Opens an adapter with explicit options.
    ///
    /// Native targets: the best adapter of every back end that matches `options.adapter` (or
    /// `WGATTN_ADAPTER`). GL contexts of one process share one device per adapter (unless
    /// options lower the limits): wgpu's GL backend cannot run two GL devices from two
    /// threads. Destroying that device through [`Context::device`] loses it for every such
    /// context. wgpu's native back ends open devices synchronously, so this future is ready
    /// when first polled.
    ///
    /// WebAssembly: the browser's WebGPU adapter; `options.adapter`, when set, must be a
    /// substring of its name (else [`Error::NoAdapter`](crate::Error::NoAdapter)). The future resolves when the browser
    /// has opened the device.
    pub async fn with_options_async(options: ContextOptions) -> Result<Self> {
        let gpu = Runtime::open(&options).await?;
        let tuning = tune_cache::load(&options.tune_cache, gpu.adapter_info())?;
        Ok(Context {
            gpu,
            host: Default::default(),
            tuning,
        })
    }

    /// The tuned choices the planner consults on this context (empty: untuned defaults).
    pub fn tuning(&self) -> &Tuning {
        &self.tuning
    }

    /// This context with `tuning` as its tuned choices (e.g. [`crate::tune::load`] for a
    /// context made by [`Context::from_device`], which starts untuned).
    pub fn with_tuning(mut self, tuning: Tuning) -> Self {
        self.tuning = tuning;
        self
    }

    /// Wraps a device and queue the caller already owns (the embedding path). wgattn uses the
    /// device's enabled features and limits and never changes its error handlers. No tuned
    /// choices are read (see [`Context::with_tuning`]).
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        Context {
            gpu: Runtime::from_device(device, queue),
            host: Default::default(),
            tuning: Tuning::none(),
        }
    }

    /// The runtime kernels launch on.
    pub(crate) fn gpu(&self) -> &Runtime {
        &self.gpu
    }

    /// The adapter this context runs on.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        self.gpu.adapter_info()
    }

    /// The limits plans are made against.
    pub fn limits(&self) -> &DeviceLimits {
        self.gpu.limits()
    }

    /// The limits and optional features that select shader variants.
    pub fn caps(&self) -> &Caps {
        self.gpu.caps()
    }

    /// The device's enabled features.
    pub fn features(&self) -> wgpu::Features {
        self.gpu.features()
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        self.gpu.device()
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        self.gpu.queue()
    }

    /// How many shader pipelines this context has compiled (each variant compiles once).
    pub fn shader_compilations(&self) -> u64 {
        self.gpu.shader_compilations()
    }

    /// Reports the first GPU error of the work recorded so far. Native targets check every
    /// error scope as it closes, so there is nothing left to report. On the web, error scopes
    /// resolve asynchronously: every scope closed since the last call is awaited here, and a
    /// failure also empties the pipeline cache (a pipeline that failed to compile must not be
    /// reused).
    pub async fn settle(&self) -> Result<()> {
        self.gpu.settle().await
    }

    /// Validates `spec` against this device, lets the [`planner`] choose kernel, variant and
    /// splits (with this context's tuned choices), and compiles (or takes from the cache) its
    /// pipelines.
    pub fn plan(&self, spec: &AttentionSpec) -> Result<Plan> {
        self.plan_tuned(spec, &self.tuning)
    }

    /// Like [`Context::plan`] with the tuned choices of `tuning` instead of this context's
    /// (the tuner times candidates this way).
    pub fn plan_tuned(&self, spec: &AttentionSpec, tuning: &Tuning) -> Result<Plan> {
        spec.validate(self.limits())?;
        let choice = planner::plan_tuned(spec, self.caps(), tuning)?;
        Plan::new(&self.gpu, spec, choice)
    }

    /// Validates `spec` for the backward pass on this device and compiles (or takes from the
    /// cache) its pipelines, in the default [`BackwardMode`]. The spec's kernel, lse and
    /// weights settings are ignored.
    pub fn plan_backward(&self, spec: &AttentionSpec) -> Result<BackwardPlan> {
        self.plan_backward_with(spec, BackwardMode::default())
    }

    /// [`Context::plan_backward`] in the given mode.
    pub fn plan_backward_with(
        &self,
        spec: &AttentionSpec,
        mode: BackwardMode,
    ) -> Result<BackwardPlan> {
        BackwardPlan::new(&self.gpu, spec, mode)
    }
}

/// The planner plans against a context's caps and tuned choices
/// (`wgattn::planner::choose(&spec, &ctx)`).
impl planner::Target for Context {
    fn caps(&self) -> &Caps {
        self.gpu.caps()
    }
    fn tuning(&self) -> &Tuning {
        &self.tuning
    }
}
