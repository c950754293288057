//! The GPU context: adapter choice, device, pipeline cache and GPU error handling.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::limits::DeviceLimits;
use crate::planner::Caps;
use crate::shaders::{Rendered, ShaderVariant};
use crate::tune::{TuneCacheSource, Tuning};

/// How to open a [`Context`]. `Default` reads `WGATTN_ADAPTER` and uses the adapter's limits.
#[derive(Debug, Clone, Default)]
pub struct ContextOptions {
    /// Case-insensitive substring of "adapter name + backend" that the adapter must match
    /// (e.g. `llvmpipe`, `vulkan`, `gl`). `None` reads `WGATTN_ADAPTER`.
    pub adapter: Option<String>,
    /// Lower the storage-binding limit on purpose (to test splitting on a small machine).
    pub max_storage_binding: Option<u64>,
    /// Lower the buffer-size limit on purpose.
    pub max_buffer_size: Option<u64>,
    /// Use the workgroup-memory variants even when the adapter has subgroups (testing).
    pub disable_subgroups: bool,
    /// Read and write f16 data packed in u32 words even when the adapter has SHADER_F16, as on
    /// adapters without it (testing).
    pub disable_shader_f16: bool,
    /// Which flash / split-KV variant to use: `Some(true)` the workgroup-tiled one
    /// (`shaders/flash_tiled.wgsl`), `Some(false)` the rows-per-invocation ones
    /// (`shaders/flash.wgsl`). `None` reads `WGATTN_FLASH_TILES` (`1` / `0`), else chooses by
    /// adapter: tiled on GPUs, rows on CPU adapters (lavapipe, llvmpipe). The tiled variant
    /// needs 32 KiB of workgroup memory; adapters with less always use rows.
    pub flash_tiles: Option<bool>,
    /// Which fused variant f16 (and, forced, any) storage uses: `Some(true)` the matrix-tile
    /// one (`shaders/flash_mma.wgsl`) — on cooperative matrices (tensor cores) where the
    /// adapter reports an f16×f16→f32 shape, else with portable tile multiplies — `Some(false)`
    /// never. `None` reads `WGATTN_FLASH_MMA` (`1` / `0`), else uses it for f16 storage where
    /// the adapter has cooperative matrices.
    pub flash_mma: Option<bool>,
    /// Never request cooperative matrices, even where the adapter has them.
    pub disable_cooperative_matrix: bool,
    /// Where the planner's tuned choices come from (`wgattn tune`): by default the user's
    /// cache file (or `WGATTN_TUNE_CACHE`), [`TuneCacheSource::Off`] for the untuned
    /// defaults, or a given file. See [`crate::tune`] for missing and corrupt files.
    pub tune_cache: TuneCacheSource,
    /// Lower the workgroups-per-dimension limit on purpose: larger grids are cut into several
    /// dispatches (testing).
    pub max_workgroups_per_dim: Option<u32>,
    /// Lower the storage-buffers-per-shader-stage limit on purpose: kernels that need more
    /// are not chosen (testing).
    pub max_storage_buffers_per_stage: Option<u32>,
}

impl Caps {
    /// The caps of a device: its limits, its features (minus those `options` disable) and
    /// the tiles override of `options` or `WGATTN_FLASH_TILES`. The subgroup variants need
    /// one fixed subgroup size among [`SUBGROUP_SIZES`](crate::planner::SUBGROUP_SIZES).
    pub fn new(
        limits: DeviceLimits,
        features: wgpu::Features,
        info: &wgpu::AdapterInfo,
        options: &ContextOptions,
    ) -> Caps {
        let fixed = info.subgroup_min_size == info.subgroup_max_size;
        let size = info.subgroup_min_size;
        Caps {
            limits,
            subgroup_size: (features.contains(wgpu::Features::SUBGROUP)
                && fixed
                && crate::planner::SUBGROUP_SIZES.contains(&size)
                && !options.disable_subgroups)
                .then_some(size),
            shader_f16: features.contains(wgpu::Features::SHADER_F16)
                && !options.disable_shader_f16,
            device_type: info.device_type,
            tiles: options.flash_tiles.or_else(flash_tiles_from_env),
            host_threads: std::thread::available_parallelism().map_or(2, |n| n.get() as u32),
            coop_f16: None,
            mma: options
                .flash_mma
                .or_else(|| bool_from_env("WGATTN_FLASH_MMA")),
        }
    }
}

/// A boolean environment switch: `1`/`true`/`on` or `0`/`false`/`off`.
fn bool_from_env(name: &str) -> Option<bool> {
    match std::env::var(name).ok()?.trim() {
        "1" | "true" | "on" => Some(true),
        "0" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// `WGATTN_FLASH_TILES`: `1` / `0` force the tiled / rows flash variants.
fn flash_tiles_from_env() -> Option<bool> {
    bool_from_env("WGATTN_FLASH_TILES")
}

/// What wgattn knows about one adapter: identity, the features it uses, the limits it plans with.
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    /// wgpu's description (name, backend, device type, driver).
    pub info: wgpu::AdapterInfo,
    /// The features that matter to wgattn.
    pub features: wgpu::Features,
    /// The limits that matter to wgattn.
    pub limits: DeviceLimits,
    /// What the kernels would use on this adapter.
    pub caps: Caps,
}

impl AdapterSummary {
    /// Names of the features wgattn can use that this adapter has.
    pub fn feature_names(&self) -> Vec<&'static str> {
        WANTED_FEATURES
            .iter()
            .filter(|(f, _)| self.features.contains(*f))
            .map(|(_, n)| *n)
            .collect()
    }
}

/// Features wgattn enables when the adapter has them.
const WANTED_FEATURES: &[(wgpu::Features, &str)] = &[
    (wgpu::Features::SHADER_F16, "shader-f16"),
    (wgpu::Features::SUBGROUP, "subgroup"),
    (wgpu::Features::TIMESTAMP_QUERY, "timestamp-query"),
    (
        wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS,
        "timestamp-query-inside-encoders",
    ),
    (
        wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES,
        "timestamp-query-inside-passes",
    ),
];

fn wanted(features: wgpu::Features) -> wgpu::Features {
    WANTED_FEATURES
        .iter()
        .fold(wgpu::Features::empty(), |acc, (f, _)| {
            if features.contains(*f) { acc | *f } else { acc }
        })
}

/// What wgattn requests of an adapter: the adapter's limits lowered by `options`, the features
/// wgattn uses that the adapter has (cooperative matrices only where the matrix-tile variant
/// can use them), and the adapter's cooperative-matrix shapes.
struct DeviceRequest {
    limits: wgpu::Limits,
    features: wgpu::Features,
    experimental: bool,
    coop_properties: Vec<wgpu::CooperativeMatrixProperties>,
}

impl DeviceRequest {
    /// The descriptor of wgattn's devices.
    fn descriptor(&self) -> wgpu::DeviceDescriptor<'static> {
        wgpu::DeviceDescriptor {
            label: Some("wgattn"),
            required_features: self.features,
            required_limits: self.limits.clone(),
            experimental_features: if self.experimental {
                // SAFETY: wgpu marks cooperative matrices experimental (the API may change and
                // may have bugs). They are requested only where the adapter lists an
                // f16×f16→f32 shape, used only by the matrix-tile shaders (validated by naga
                // like every other variant), and `disable_cooperative_matrix` turns them off.
                unsafe { wgpu::ExperimentalFeatures::enabled() }
            } else {
                wgpu::ExperimentalFeatures::disabled()
            },
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }
    }
}

/// The [`DeviceRequest`] of `adapter` under `options`.
fn device_request(adapter: &wgpu::Adapter, options: &ContextOptions) -> DeviceRequest {
    let mut limits = adapter.limits();
    if let Some(m) = options.max_storage_binding {
        limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(m);
    }
    if let Some(m) = options.max_buffer_size {
        limits.max_buffer_size = limits.max_buffer_size.min(m);
        limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(m);
    }
    if let Some(m) = options.max_workgroups_per_dim {
        limits.max_compute_workgroups_per_dimension =
            limits.max_compute_workgroups_per_dimension.min(m);
    }
    if let Some(m) = options.max_storage_buffers_per_stage {
        limits.max_storage_buffers_per_shader_stage =
            limits.max_storage_buffers_per_shader_stage.min(m);
    }
    let mut features = wanted(adapter.features());
    let coop_properties = adapter.cooperative_matrix_properties();
    let coop = !options.disable_cooperative_matrix
        && adapter
            .features()
            .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
        && crate::planner::coop_f16_edge(&coop_properties).is_some();
    if coop {
        features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
    }
    DeviceRequest {
        limits,
        features,
        experimental: coop,
        coop_properties,
    }
}

/// One wgpu instance per process: contexts made by wgattn share it, so resources of two such
/// contexts mixed up are reported by wgpu as a device mismatch rather than unknown ids.
#[cfg(not(target_arch = "wasm32"))]
fn instance() -> &'static wgpu::Instance {
    static INSTANCE: std::sync::OnceLock<wgpu::Instance> = std::sync::OnceLock::new();
    INSTANCE.get_or_init(|| {
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
    })
}

#[cfg(not(target_arch = "wasm32"))]
/// Preference order: discrete > integrated > virtual > CPU > other; then Vulkan, Metal, DX12, GL.
fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let ty = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan => 0,
        wgpu::Backend::Metal => 1,
        wgpu::Backend::Dx12 => 2,
        wgpu::Backend::Gl => 3,
        _ => 4,
    };
    (ty, backend)
}

#[cfg(not(target_arch = "wasm32"))]
/// The index of the best-ranked adapter of `list` that `matches` accepts (the order `info`
/// prints: [`rank`], stable for equal ranks).
fn best_match(list: &[wgpu::Adapter], matches: &impl Fn(&wgpu::Adapter) -> bool) -> Option<usize> {
    let infos: Vec<wgpu::AdapterInfo> = list.iter().map(|a| a.get_info()).collect();
    let accepted: Vec<bool> = list.iter().map(matches).collect();
    best_index(&infos, &accepted)
}

#[cfg(not(target_arch = "wasm32"))]
/// The best-ranked accepted entry of `infos`; the first of equal rank.
fn best_index(infos: &[wgpu::AdapterInfo], accepted: &[bool]) -> Option<usize> {
    (0..infos.len())
        .filter(|&i| accepted[i])
        .min_by_key(|&i| (rank(&infos[i]), i))
}

#[cfg(not(target_arch = "wasm32"))]
/// Whether a GL adapter could rank above `best` (the best Vulkan/Metal/DX12 match): only a
/// discrete GPU cannot be beaten, since at equal device type the primary back ends win.
fn gl_could_win(best: Option<&wgpu::AdapterInfo>) -> bool {
    best.is_none_or(|b| b.device_type != wgpu::DeviceType::DiscreteGpu)
}

#[cfg(not(target_arch = "wasm32"))]
/// The text an adapter filter is matched against: "name backend", lowercase.
fn match_text(info: &wgpu::AdapterInfo) -> String {
    format!("{} {}", info.name, info.backend).to_lowercase()
}

#[cfg(not(target_arch = "wasm32"))]
/// Serialises enumerating and dropping adapters: wgpu's GL backend makes its EGL context
/// current when an adapter is dropped and panics (BadAccess) when another thread does the same.
static ADAPTER_LOCK: Mutex<()> = Mutex::new(());

#[cfg(not(target_arch = "wasm32"))]
/// A GL device wgattn opened, shared by every later GL context of the process that asks for
/// the adapter's own limits. wgpu 30's GL (EGL) backend panics (BadAccess) when two GL devices
/// of one process are used from two threads, or when adapters are enumerated while another
/// thread uses one; with one device per adapter its own lock serialises the EGL context, and
/// later contexts find their adapter here without enumerating.
#[derive(Clone)]
struct SharedGl {
    info: wgpu::AdapterInfo,
    device: wgpu::Device,
    queue: wgpu::Queue,
    lost: Arc<Mutex<Option<String>>>,
}

#[cfg(not(target_arch = "wasm32"))]
static GL_DEVICES: Mutex<Vec<SharedGl>> = Mutex::new(Vec::new());

#[cfg(not(target_arch = "wasm32"))]
/// Serialises opening contexts (see [`Context::with_options`]).
static OPEN_LOCK: Mutex<()> = Mutex::new(());

#[cfg(not(target_arch = "wasm32"))]
/// The adapters of `backends` (∩ `WGPU_BACKEND`), best first. The GL backend is enumerated
/// on its own: wgpu's EGL code panics (BadAccess) when another thread of the process is using
/// a GL device at that moment; that panic is caught and reported, and only GL's adapters are
/// missing from the list.
fn enumerate(backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    let allowed = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all()) & backends;
    let mut list = Vec::new();
    for group in [allowed - wgpu::Backends::GL, allowed & wgpu::Backends::GL] {
        if group.is_empty() {
            continue;
        }
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pollster::block_on(instance().enumerate_adapters(group))
        }));
        match found {
            Ok(adapters) => list.extend(adapters),
            Err(panic) => log::warn!(
                "wgpu panicked while enumerating {group:?} adapters ({}); skipping them",
                panic_text(panic.as_ref())
            ),
        }
    }
    list.sort_by_key(|a| rank(&a.get_info()));
    list
}

#[cfg(not(target_arch = "wasm32"))]
/// Every adapter wgpu sees (honouring `WGPU_BACKEND`), best first.
pub fn adapters() -> Vec<wgpu::Adapter> {
    let _opening = OPEN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _lock = ADAPTER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    enumerate(wgpu::Backends::all())
}

#[cfg(not(target_arch = "wasm32"))]
/// Summaries of every adapter, best first. While this process has a GL device open, GL is
/// summarised from that device instead of being enumerated again (enumerating GL while another
/// thread uses a GL device makes wgpu's EGL code panic).
pub fn adapter_summaries() -> Vec<AdapterSummary> {
    // Not while a context is being opened (a GL device being created is not yet listed).
    let _opening = OPEN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _lock = ADAPTER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let summary = |info: wgpu::AdapterInfo, limits: &wgpu::Limits, features: wgpu::Features| {
        let limits = DeviceLimits::from_wgpu(limits);
        let features = wanted(features);
        AdapterSummary {
            caps: Caps::new(limits, features, &info, &ContextOptions::default()),
            info,
            features,
            limits,
        }
    };
    let open_gl: Vec<SharedGl> = GL_DEVICES.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let backends = if open_gl.is_empty() {
        wgpu::Backends::all()
    } else {
        wgpu::Backends::all() - wgpu::Backends::GL
    };
    let mut list: Vec<AdapterSummary> = enumerate(backends)
        .iter()
        .map(|a| {
            let mut s = summary(a.get_info(), &a.limits(), a.features());
            s.caps = s
                .caps
                .with_cooperative_matrices(a.features(), &a.cooperative_matrix_properties());
            s
        })
        .collect();
    let allowed = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
    if allowed.contains(wgpu::Backends::GL) {
        list.extend(
            open_gl
                .into_iter()
                .map(|d| summary(d.info, &d.device.limits(), d.device.features())),
        );
    }
    list.sort_by_key(|a| rank(&a.info));
    list
}

#[cfg(not(target_arch = "wasm32"))]
fn env_filter() -> Option<String> {
    std::env::var("WGATTN_ADAPTER")
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// A device and queue with wgattn's pipeline cache. Cheap to share behind `&`; all methods take
/// `&self` and it is `Send + Sync`.
pub struct Context {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    caps: Caps,
    features: wgpu::Features,
    pipelines: Mutex<HashMap<ShaderVariant, Arc<wgpu::ComputePipeline>>>,
    compiled: AtomicU64,
    /// Set by the device-lost callback of contexts wgattn created.
    lost: Arc<Mutex<Option<String>>>,
    pub(crate) host: crate::host::HostCache,
    /// Tuned choices of this adapter (`ContextOptions::tune_cache`).
    tuning: Tuning,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .field("caps", &self.caps)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Opens the best adapter (see [`adapters`]), narrowed by `WGATTN_ADAPTER` if set. Blocks
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
    /// substring of its name (else [`Error::NoAdapter`]). The future resolves when the browser
    /// has opened the device.
    pub async fn with_options_async(options: ContextOptions) -> Result<Self> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            Self::open_native(options)
        }
        #[cfg(target_arch = "wasm32")]
        {
            Self::open_web(options).await
        }
    }

    /// The WebGPU adapter of the browser, opened with wgattn's features and the adapter's
    /// limits (lowered by `options`).
    #[cfg(target_arch = "wasm32")]
    async fn open_web(options: ContextOptions) -> Result<Self> {
        // The instance lives as long as the page: when it is dropped, the browser loses every
        // device made through it ("A valid external Instance reference no longer exists").
        thread_local! {
            static INSTANCE: wgpu::Instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
                backends: wgpu::Backends::BROWSER_WEBGPU,
                ..wgpu::InstanceDescriptor::new_without_display_handle()
            });
        }
        let instance = INSTANCE.with(wgpu::Instance::clone);
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::NoAdapter {
                filter: Some(format!("WebGPU ({e})")),
                available: Vec::new(),
            })?;
        let info = adapter.get_info();
        if let Some(f) = &options.adapter {
            let text = format!("{} {}", info.name, info.backend).to_lowercase();
            if !text.contains(&f.to_lowercase()) {
                return Err(Error::NoAdapter {
                    filter: Some(f.clone()),
                    available: vec![format!("{} ({})", info.name, info.backend)],
                });
            }
        }
        let request = device_request(&adapter, &options);
        let (device, queue) = adapter
            .request_device(&request.descriptor())
            .await
            .map_err(|e| Error::RequestDevice {
                adapter: info.name.clone(),
                message: e.to_string(),
            })?;
        Self::opened(device, queue, info, &options, &request)
    }

    /// Chooses and opens a native adapter (see [`Context::with_options_async`]).
    #[cfg(not(target_arch = "wasm32"))]
    fn open_native(options: ContextOptions) -> Result<Self> {
        // One context opens at a time: a GL device is created and registered as shared before
        // another thread looks for one (two GL devices in one process make wgpu's EGL code
        // panic), and GL is never enumerated while a GL device is being created.
        let _opening = OPEN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let filter = options.adapter.clone().or_else(env_filter);
        let matches = |a: &wgpu::Adapter| {
            filter
                .as_ref()
                .is_none_or(|f| match_text(&a.get_info()).contains(&f.to_lowercase()))
        };
        let lowered = options.max_storage_binding.is_some()
            || options.max_buffer_size.is_some()
            || options.max_workgroups_per_dim.is_some()
            || options.max_storage_buffers_per_stage.is_some();
        let adapter = {
            let _lock = ADAPTER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            // Vulkan, Metal and DX12 first. GL is only enumerated when it could hold a better
            // adapter than they do (nothing beats a discrete GPU; at equal type the primary
            // back ends win): a discrete GPU reachable only through GL beats lavapipe.
            let mut all = enumerate(wgpu::Backends::PRIMARY);
            let mut found = best_match(&all, &matches);
            let best = found.map(|i| all[i].get_info());
            if gl_could_win(best.as_ref()) && !lowered {
                let shared = GL_DEVICES.lock().unwrap_or_else(|e| e.into_inner());
                let gl = shared.iter().find(|d| {
                    filter
                        .as_ref()
                        .is_none_or(|f| match_text(&d.info).contains(&f.to_lowercase()))
                        && best.as_ref().is_none_or(|b| rank(&d.info) < rank(b))
                });
                if let Some(gl) = gl {
                    let gl = gl.clone();
                    let mut ctx = Self::assemble(gl.device, gl.queue, gl.info, &options);
                    ctx.lost = gl.lost;
                    ctx.tuning = crate::tune::load(&options.tune_cache, &ctx.info)?;
                    return Ok(ctx);
                }
                // A GL device this process already opened is the only GL adapter worth having
                // (see SharedGl); enumerate GL only when none is open.
                if shared.is_empty() || best.is_none() {
                    drop(shared);
                    all.extend(enumerate(wgpu::Backends::GL));
                    all.sort_by_key(|a| rank(&a.get_info()));
                    found = best_match(&all, &matches);
                }
            }
            if found.is_none() {
                all.extend(enumerate(!wgpu::Backends::PRIMARY - wgpu::Backends::GL));
                all.sort_by_key(|a| rank(&a.get_info()));
                found = best_match(&all, &matches);
            }
            match found {
                Some(i) => all.swap_remove(i),
                None => {
                    return Err(Error::NoAdapter {
                        filter: filter.clone(),
                        available: all
                            .iter()
                            .map(|a| {
                                let i = a.get_info();
                                format!("{} ({})", i.name, i.backend)
                            })
                            .collect(),
                    });
                }
            }
        };
        let info = adapter.get_info();
        let request = device_request(&adapter, &options);
        // Native back ends create the device synchronously: this future is ready at once.
        let (device, queue) = pollster::block_on(adapter.request_device(&request.descriptor()))
            .map_err(|e| Error::RequestDevice {
                adapter: info.name.clone(),
                message: e.to_string(),
            })?;
        let ctx = Self::opened(device, queue, info, &options, &request)?;
        if ctx.info.backend == wgpu::Backend::Gl && !lowered {
            GL_DEVICES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(SharedGl {
                    info: ctx.info.clone(),
                    device: ctx.device.clone(),
                    queue: ctx.queue.clone(),
                    lost: ctx.lost.clone(),
                });
        }
        Ok(ctx)
    }

    /// A context on a device wgattn opened: uncaptured errors are logged, device loss is
    /// recorded, cooperative matrices and tuned choices are set up.
    fn opened(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        options: &ContextOptions,
        request: &DeviceRequest,
    ) -> Result<Self> {
        // Errors outside wgattn's error scopes must not abort the process: log them instead.
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| {
            log::error!("uncaptured wgpu error: {e}");
        }));
        let mut ctx = Self::assemble(device, queue, info, options);
        ctx.caps = ctx
            .caps
            .with_cooperative_matrices(ctx.features, &request.coop_properties);
        ctx.tuning = crate::tune::load(&options.tune_cache, &ctx.info)?;
        let lost = ctx.lost.clone();
        ctx.device.set_device_lost_callback(move |reason, message| {
            *lost.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(format!("{reason:?}: {message}"));
        });
        Ok(ctx)
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
        let info = device.adapter_info();
        Self::assemble(device, queue, info, &ContextOptions::default())
    }

    fn assemble(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        options: &ContextOptions,
    ) -> Self {
        let limits = DeviceLimits::from_wgpu(&device.limits());
        Context {
            caps: Caps::new(limits, device.features(), &info, options),
            features: device.features(),
            device,
            queue,
            info,
            pipelines: Mutex::new(HashMap::new()),
            compiled: AtomicU64::new(0),
            lost: Arc::new(Mutex::new(None)),
            host: Default::default(),
            tuning: Tuning::none(),
        }
    }

    /// The adapter this context runs on.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The limits plans are made against.
    pub fn limits(&self) -> &DeviceLimits {
        &self.caps.limits
    }

    /// The limits and optional features that select shader variants.
    pub fn caps(&self) -> &Caps {
        &self.caps
    }

    /// The device's enabled features.
    pub fn features(&self) -> wgpu::Features {
        self.features
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// How many shader pipelines this context has compiled (each variant compiles once).
    pub fn shader_compilations(&self) -> u64 {
        self.compiled.load(Ordering::Relaxed)
    }

    /// The compute pipeline of `variant` (entry point `main`), compiled on first use.
    pub(crate) fn pipeline(&self, variant: &ShaderVariant) -> Result<Arc<wgpu::ComputePipeline>> {
        let mut cache = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cache.get(variant) {
            return Ok(p.clone());
        }
        let rendered = variant.render_mapped()?;
        let label = variant.key();
        let module = self.shader_module(&label, &rendered)?;
        let pipeline = self.gpu_scope("shader compilation", || {
            self.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(&label),
                    layout: None,
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &[],
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: None,
                })
        })?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        let pipeline = Arc::new(pipeline);
        cache.insert(variant.clone(), pipeline.clone());
        Ok(pipeline)
    }

    /// Compiles `rendered` into a shader module. A module the compiler rejects is a bug in a
    /// template: it is reported as [`Error::Shader`] with the template line of every position
    /// (see [`Rendered::annotate`](crate::shaders::Rendered::annotate)). On the web the report
    /// comes from the next [`Context::settle`].
    fn shader_module(&self, label: &str, rendered: &Rendered) -> Result<wgpu::ShaderModule> {
        self.check_lost("shader compilation")?;
        let shader = label.to_string();
        let annotate = rendered.clone();
        gpu_scope_mapped(
            &self.device,
            "shader compilation",
            || {
                self.device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(label),
                        source: wgpu::ShaderSource::Wgsl(rendered.source.as_str().into()),
                    })
            },
            move |e| match e {
                Error::Gpu { message, .. } if is_shader_error(&message) => Error::Shader {
                    shader,
                    message: annotate.annotate(&message),
                },
                e => e,
            },
        )
    }

    /// An error when the device is known to be lost.
    fn check_lost(&self, during: &'static str) -> Result<()> {
        match self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            Some(reason) => Err(Error::Gpu {
                during,
                message: format!("the device was lost ({reason})"),
            }),
            None => Ok(()),
        }
    }

    /// Runs `f` inside wgpu error scopes; see [`gpu_scope`]. Fails at once, without calling
    /// `f`, when the device is known to be lost.
    pub(crate) fn gpu_scope<T, F: FnOnce() -> T>(&self, during: &'static str, f: F) -> Result<T> {
        self.check_lost(during)?;
        gpu_scope(&self.device, during, f)
    }

    /// Reports the first GPU error of the work recorded so far. Native targets check every
    /// error scope as it closes, so there is nothing left to report. On the web, error scopes
    /// resolve asynchronously: every scope closed since the last call is awaited here, and a
    /// failure also empties the pipeline cache (a pipeline that failed to compile must not be
    /// reused).
    pub async fn settle(&self) -> Result<()> {
        #[cfg(target_arch = "wasm32")]
        {
            let result = web_scopes::settle().await;
            if result.is_err() {
                self.pipelines
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
            }
            result?;
        }
        self.check_lost("waiting for the GPU")
    }

    /// Waits for all submitted work.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Gpu {
                during: "waiting for the GPU",
                message: e.to_string(),
            })
    }

    /// Resolves when the GPU has finished the work submitted so far (native targets: polls the
    /// device until then; the web: `onSubmittedWorkDone`).
    pub(crate) async fn wait_async(&self) -> Result<()> {
        let (tx, rx) = futures_channel::oneshot::channel();
        self.queue.on_submitted_work_done(move || {
            let _ = tx.send(());
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.wait()?;
        rx.await.map_err(|_| Error::Gpu {
            during: "waiting for the GPU",
            message: "the device dropped the completion callback (device lost?)".into(),
        })
    }

    /// Maps `buffer` (MAP_READ) and copies its first `bytes` bytes out, blocking until then.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn read_buffer(&self, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let mut data = pollster::block_on(self.read_buffers(&[(buffer, bytes)]))?;
        Ok(data.pop().unwrap_or_default())
    }

    /// Maps each `(buffer, bytes)` (MAP_READ buffers) and copies its first `bytes` bytes out:
    /// `map_async` on every buffer, then one wait (native targets poll the device; on the web
    /// the browser resolves the mappings).
    pub(crate) async fn read_buffers(
        &self,
        reads: &[(&wgpu::Buffer, u64)],
    ) -> Result<Vec<Vec<u8>>> {
        let failed = |message: String| Error::Gpu {
            during: "reading results back",
            message,
        };
        self.check_lost("reading results back")?;
        let pending: Vec<_> = reads
            .iter()
            .map(|&(buffer, bytes)| {
                let (tx, rx) = futures_channel::oneshot::channel();
                buffer
                    .slice(..bytes)
                    .map_async(wgpu::MapMode::Read, move |r| {
                        let _ = tx.send(r);
                    });
                rx
            })
            .collect();
        #[cfg(not(target_arch = "wasm32"))]
        self.wait()?;
        let mut out = Vec::with_capacity(reads.len());
        for (&(buffer, bytes), rx) in reads.iter().zip(pending) {
            rx.await
                .map_err(|_| failed("the mapping callback was dropped (device lost?)".into()))?
                .map_err(|e| failed(e.to_string()))?;
            let data = buffer
                .slice(..bytes)
                .get_mapped_range()
                .map_err(|e| failed(e.to_string()))?
                .to_vec();
            buffer.unmap();
            out.push(data);
        }
        Ok(out)
    }
}

/// Runs `f` inside validation, out-of-memory and internal error scopes of `device` and turns
/// any error wgpu reports into [`Error::Gpu`]. A panic inside wgpu (it panics on resources
/// from another wgpu instance, for one) becomes an [`Error::Gpu`] too.
///
/// Native targets learn the scopes' errors at once. On the web they arrive asynchronously:
/// `f`'s value is returned and the scopes are awaited by the next [`Context::settle`], which
/// reports the first error (WebGPU turns a failed call into an invalid object, so later work
/// fails in its turn and the first error is the cause).
pub(crate) fn gpu_scope<T>(
    device: &wgpu::Device,
    during: &'static str,
    f: impl FnOnce() -> T,
) -> Result<T> {
    gpu_scope_mapped(device, during, f, |e| e)
}

/// [`gpu_scope`] with `map` applied to the error it reports.
fn gpu_scope_mapped<T>(
    device: &wgpu::Device,
    during: &'static str,
    f: impl FnOnce() -> T,
    map: impl FnOnce(Error) -> Error + 'static,
) -> Result<T> {
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let value = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let value = match value {
        Ok(v) => v,
        Err(panic) => {
            drop((validation, internal, oom));
            return Err(map(Error::Gpu {
                during,
                message: format!("wgpu panicked: {}", panic_text(panic.as_ref())),
            }));
        }
    };
    // Popped now, innermost first; the futures only deliver the scopes' errors.
    let popped = [validation.pop(), internal.pop(), oom.pop()];
    let first_error = async move {
        for scope in popped {
            if let Some(e) = scope.await {
                return Some(map(Error::Gpu {
                    during,
                    message: e.to_string(),
                }));
            }
        }
        None
    };
    #[cfg(not(target_arch = "wasm32"))]
    {
        match pollster::block_on(first_error) {
            None => Ok(value),
            Some(e) => Err(e),
        }
    }
    #[cfg(target_arch = "wasm32")]
    {
        web_scopes::defer(Box::pin(first_error));
        Ok(value)
    }
}

/// Error scopes waiting to be checked on the web (one thread: a thread-local list).
#[cfg(target_arch = "wasm32")]
mod web_scopes {
    use std::cell::RefCell;
    use std::future::Future;
    use std::pin::Pin;

    use crate::error::{Error, Result};

    type Check = Pin<Box<dyn Future<Output = Option<Error>>>>;

    thread_local! {
        static PENDING: RefCell<Vec<Check>> = const { RefCell::new(Vec::new()) };
    }

    /// Adds the checks of closed scopes.
    pub(super) fn defer(check: Check) {
        PENDING.with(|p| p.borrow_mut().push(check));
    }

    /// Awaits every pending check; the first error in the order the scopes closed.
    pub(super) async fn settle() -> Result<()> {
        let checks = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
        let mut first = None;
        for check in checks {
            if let Some(e) = check.await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// True when a wgpu error message is the shader compiler's (parse or validation of WGSL),
/// not a device problem.
fn is_shader_error(message: &str) -> bool {
    message.contains("parsing error") || message.to_lowercase().contains("shader validation")
}

/// A buffer holding `bytes` (padded to 4), written through the queue rather than mapped at
/// creation: mapping panics in wgpu's helper when the device is lost.
pub(crate) fn init_buffer(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    label: &str,
    bytes: &[u8],
    usage: wgpu::BufferUsages,
) -> wgpu::Buffer {
    let size = (bytes.len() as u64).next_multiple_of(4).max(4);
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size,
        usage: usage | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut padded = bytes.to_vec();
    padded.resize(size as usize, 0);
    queue.write_buffer(&buffer, 0, &padded);
    buffer
}

/// The message of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "no message".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgpu::{AdapterInfo, Backend, DeviceType};

    fn info(name: &str, ty: DeviceType, backend: Backend) -> AdapterInfo {
        AdapterInfo {
            name: name.into(),
            ..AdapterInfo::new(ty, backend)
        }
    }

    #[test]
    fn a_discrete_gpu_behind_gl_beats_lavapipe() {
        let list = [
            info("llvmpipe", DeviceType::Cpu, Backend::Vulkan),
            info("Radeon", DeviceType::DiscreteGpu, Backend::Gl),
        ];
        assert_eq!(best_index(&list, &[true, true]), Some(1));
        // GL is worth enumerating whenever the best primary adapter is not a discrete GPU.
        assert!(gl_could_win(Some(&list[0])));
        assert!(gl_could_win(None));
        assert!(!gl_could_win(Some(&info(
            "H100",
            DeviceType::DiscreteGpu,
            Backend::Vulkan
        ))));
    }

    #[test]
    fn equal_types_prefer_primary_back_ends_and_filters_apply() {
        let list = [
            info("llvmpipe", DeviceType::Cpu, Backend::Gl),
            info("llvmpipe", DeviceType::Cpu, Backend::Vulkan),
            info("Intel", DeviceType::IntegratedGpu, Backend::Gl),
        ];
        assert_eq!(best_index(&list, &[true, true, true]), Some(2));
        assert_eq!(best_index(&list, &[true, true, false]), Some(1));
        assert_eq!(best_index(&list, &[true, false, false]), Some(0));
        assert_eq!(best_index(&list, &[false, false, false]), None);
    }

    /// A shader the compiler rejects at pipeline creation is `Error::Shader` naming the
    /// template line (needs an adapter; lavapipe in CI).
    #[test]
    fn rejected_shader_names_the_template_line() {
        let ctx = match Context::new() {
            Ok(ctx) => ctx,
            Err(e) if std::env::var("WGATTN_ALLOW_NO_GPU").as_deref() == Ok("1") => {
                eprintln!("SKIPPED: no adapter ({e})");
                return;
            }
            Err(e) => panic!("no adapter: {e} (set WGATTN_ALLOW_NO_GPU=1 to skip)"),
        };
        // rendered from broken.wgsl's lines 3, 4, 5, 9 and 10; line 4 of the module (9 of
        // the template) assigns a u32 to an f32
        let rendered = Rendered {
            source: include_str!("../tests/data/wgsl/rejected.wgsl").into(),
            origins: [3, 4, 5, 9, 10].map(|n| ("broken.wgsl", n)).to_vec(),
        };
        match ctx.shader_module("broken", &rendered) {
            Err(Error::Shader { shader, message }) => {
                assert_eq!(shader, "broken");
                assert!(message.contains("[broken.wgsl:9]"), "{message}");
            }
            other => panic!("expected Error::Shader, got {other:?}"),
        }
        // a valid module compiles
        let fine = Rendered {
            source: include_str!("../tests/data/wgsl/fine.wgsl").into(),
            origins: vec![("fine.wgsl", 1), ("fine.wgsl", 2)],
        };
        assert!(ctx.shader_module("fine", &fine).is_ok());
    }
}
