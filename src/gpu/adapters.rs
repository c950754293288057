//! Which adapter to open and how: the features wgattn requests, the preference order of
//! adapters, GL device sharing (wgpu's GL backend cannot run two GL devices of one process
//! from two threads), and opening a [`Runtime`] natively or on the web.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use super::Runtime;
use super::options::ContextOptions;
#[cfg(not(target_arch = "wasm32"))]
use super::scope::panic_text;
use crate::error::{Error, Result};
use crate::planner::{Caps, coop_f16_edge};
use crate::spec::DeviceLimits;

/// What wgattn knows about one adapter: identity, the features it uses, the limits it plans
/// with.
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
        && coop_f16_edge(&coop_properties).is_some();
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
/// Serialises opening contexts (see [`Runtime::open_native`]).
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

impl Runtime {
    /// The WebGPU adapter of the browser, opened with wgattn's features and the adapter's
    /// limits (lowered by `options`).
    #[cfg(target_arch = "wasm32")]
    pub(crate) async fn open_web(options: &ContextOptions) -> Result<Self> {
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
        let request = device_request(&adapter, options);
        let (device, queue) = adapter
            .request_device(&request.descriptor())
            .await
            .map_err(|e| Error::RequestDevice {
                adapter: info.name.clone(),
                message: e.to_string(),
            })?;
        Ok(Self::opened(device, queue, info, options, &request))
    }

    /// Chooses and opens a native adapter (see
    /// [`Context::with_options_async`](crate::Context::with_options_async)).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn open_native(options: &ContextOptions) -> Result<Self> {
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
                    let mut rt = Self::assemble(gl.device, gl.queue, gl.info, options);
                    rt.lost = gl.lost;
                    return Ok(rt);
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
        let request = device_request(&adapter, options);
        // Native back ends create the device synchronously: this future is ready at once.
        let (device, queue) = pollster::block_on(adapter.request_device(&request.descriptor()))
            .map_err(|e| Error::RequestDevice {
                adapter: info.name.clone(),
                message: e.to_string(),
            })?;
        let rt = Self::opened(device, queue, info, options, &request);
        if rt.info.backend == wgpu::Backend::Gl && !lowered {
            GL_DEVICES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(SharedGl {
                    info: rt.info.clone(),
                    device: rt.device.clone(),
                    queue: rt.queue.clone(),
                    lost: rt.lost.clone(),
                });
        }
        Ok(rt)
    }

    /// A runtime on a device wgattn opened: uncaptured errors are logged, device loss is
    /// recorded, cooperative matrices are set up.
    fn opened(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        options: &ContextOptions,
        request: &DeviceRequest,
    ) -> Self {
        // Errors outside wgattn's error scopes must not abort the process: log them instead.
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| {
            log::error!("uncaptured wgpu error: {e}");
        }));
        let mut rt = Self::assemble(device, queue, info, options);
        rt.caps = rt
            .caps
            .with_cooperative_matrices(rt.features, &request.coop_properties);
        let lost = rt.lost.clone();
        rt.device.set_device_lost_callback(move |reason, message| {
            *lost.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(format!("{reason:?}: {message}"));
        });
        rt
    }

    /// A runtime on a device and queue the caller already owns (the embedding path): the
    /// device's enabled features and limits, its error handlers left alone.
    pub(crate) fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Self {
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
        Runtime {
            caps: Caps::new(limits, device.features(), &info, options),
            features: device.features(),
            device,
            queue,
            info,
            pipelines: Mutex::new(HashMap::new()),
            compiled: AtomicU64::new(0),
            lost: Arc::new(Mutex::new(None)),
        }
    }
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
}
