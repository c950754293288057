//! The GPU runtime every kernel launches on: one device and queue (opened by wgattn on the
//! best adapter, or the caller's own), the planner's [`Caps`] of it, the pipeline cache keyed
//! by [`ShaderVariant`], GPU error scopes, device loss, completion and readback. It knows
//! nothing of attention: kernels, plans and the context build on it.

mod adapters;
mod options;
mod scope;

pub use adapters::AdapterSummary;
#[cfg(not(target_arch = "wasm32"))]
pub use adapters::{adapter_summaries, adapters};
pub use options::{ContextOptions, TuneCacheSource};
pub(crate) use scope::{gpu_scope, init_buffer};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::planner::Caps;
use crate::shader::{Rendered, ShaderVariant};
use crate::spec::DeviceLimits;

/// A device and queue with wgattn's pipeline cache. Cheap to share behind `&`; all methods
/// take `&self` and it is `Send + Sync`.
pub(crate) struct Runtime {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    caps: Caps,
    features: wgpu::Features,
    pipelines: Mutex<HashMap<ShaderVariant, Arc<wgpu::ComputePipeline>>>,
    compiled: AtomicU64,
    /// Set by the device-lost callback of devices wgattn opened.
    lost: Arc<Mutex<Option<String>>>,
}

impl Runtime {
    /// Opens an adapter with `options`: natively the best adapter of every back end that
    /// matches (see [`Context::with_options_async`](crate::Context::with_options_async)), on
    /// the web the browser's WebGPU adapter.
    pub(crate) async fn open(options: &ContextOptions) -> Result<Runtime> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            Self::open_native(options)
        }
        #[cfg(target_arch = "wasm32")]
        {
            Self::open_web(options).await
        }
    }

    /// The adapter this runtime runs on.
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

    /// How many shader pipelines this runtime has compiled (each variant compiles once).
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
    /// (see [`Rendered::annotate`]). On the web the report
    /// comes from the next [`Runtime::settle`].
    pub(crate) fn shader_module(
        &self,
        label: &str,
        rendered: &Rendered,
    ) -> Result<wgpu::ShaderModule> {
        self.check_lost("shader compilation")?;
        let shader = label.to_string();
        let annotate = rendered.clone();
        scope::gpu_scope_mapped(
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
                Error::Gpu { message, .. } if scope::is_shader_error(&message) => Error::Shader {
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

    /// Runs `f` inside wgpu error scopes; see [`gpu_scope`](scope::gpu_scope). Fails at once,
    /// without calling `f`, when the device is known to be lost.
    pub(crate) fn gpu_scope<T, F: FnOnce() -> T>(&self, during: &'static str, f: F) -> Result<T> {
        self.check_lost(during)?;
        scope::gpu_scope(&self.device, during, f)
    }

    /// Reports the first GPU error of the work recorded so far. Native targets check every
    /// error scope as it closes, so there is nothing left to report. On the web, error scopes
    /// resolve asynchronously: every scope closed since the last call is awaited here, and a
    /// failure also empties the pipeline cache (a pipeline that failed to compile must not be
    /// reused).
    pub(crate) async fn settle(&self) -> Result<()> {
        #[cfg(target_arch = "wasm32")]
        {
            let result = scope::web_scopes::settle().await;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A shader the compiler rejects at pipeline creation is `Error::Shader` naming the
    /// template line (needs an adapter; lavapipe in CI).
    #[test]
    fn rejected_shader_names_the_template_line() {
        let ctx = match pollster::block_on(Runtime::open(&ContextOptions::default())) {
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
            source: include_str!("../../tests/data/wgsl/rejected.wgsl").into(),
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
            source: include_str!("../../tests/data/wgsl/fine.wgsl").into(),
            origins: vec![("fine.wgsl", 1), ("fine.wgsl", 2)],
        };
        assert!(ctx.shader_module("fine", &fine).is_ok());
    }
}
