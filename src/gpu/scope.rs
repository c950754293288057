//! GPU error handling: wgpu error scopes around every call that can fail (native targets
//! learn the errors at once, the web when the runtime settles), panics inside wgpu turned
//! into errors, and buffers written through the queue.

use crate::error::{Error, Result};

/// Runs `f` inside validation, out-of-memory and internal error scopes of `device` and turns
/// any error wgpu reports into [`Error::Gpu`]. A panic inside wgpu (it panics on resources
/// from another wgpu instance, for one) becomes an [`Error::Gpu`] too.
///
/// Native targets learn the scopes' errors at once. On the web they arrive asynchronously:
/// `f`'s value is returned and the scopes are awaited by the next [`Runtime::settle`](super::Runtime::settle), which
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
pub(crate) fn gpu_scope_mapped<T>(
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
pub(crate) mod web_scopes {
    use std::cell::RefCell;
    use std::future::Future;
    use std::pin::Pin;

    use crate::error::{Error, Result};

    type Check = Pin<Box<dyn Future<Output = Option<Error>>>>;

    thread_local! {
        static PENDING: RefCell<Vec<Check>> = const { RefCell::new(Vec::new()) };
    }

    /// Adds the checks of closed scopes.
    pub(crate) fn defer(check: Check) {
        PENDING.with(|p| p.borrow_mut().push(check));
    }

    /// Awaits every pending check; the first error in the order the scopes closed.
    pub(crate) async fn settle() -> Result<()> {
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
pub(crate) fn is_shader_error(message: &str) -> bool {
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
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "no message".into())
}
