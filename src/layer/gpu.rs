//! Small buffer helpers shared by the layers: uploads in a storage type, read-backs.

use half::f16;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::spec::DType;

/// `values` in the GPU storage format of `dtype` (f16 as IEEE half pairs), padded to 4 bytes.
pub(crate) fn bytes_of(values: &[f32], dtype: DType) -> Vec<u8> {
    let mut b = match dtype {
        DType::F32 => bytemuck::cast_slice(values).to_vec(),
        DType::F16 => values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
    };
    b.resize(b.len().next_multiple_of(4).max(4), 0);
    b
}

/// Bytes of `elems` values of `dtype`, padded to 4.
pub(crate) fn size_of(elems: usize, dtype: DType) -> u64 {
    ((elems * dtype.size()) as u64).next_multiple_of(4).max(4)
}

/// A storage buffer holding `values` in `dtype`.
pub(crate) fn upload(
    ctx: &Context,
    label: &str,
    values: &[f32],
    dtype: DType,
    usage: wgpu::BufferUsages,
) -> Result<wgpu::Buffer> {
    let bytes = bytes_of(values, dtype);
    ctx.gpu().gpu_scope("uploading layer data", || {
        crate::gpu::init_buffer(
            ctx.device(),
            ctx.queue(),
            label,
            &bytes,
            usage | wgpu::BufferUsages::STORAGE,
        )
    })
}

/// A storage buffer holding `words`.
pub(crate) fn upload_u32(ctx: &Context, label: &str, words: &[u32]) -> Result<wgpu::Buffer> {
    ctx.gpu().gpu_scope("uploading layer data", || {
        crate::gpu::init_buffer(
            ctx.device(),
            ctx.queue(),
            label,
            bytemuck::cast_slice(words),
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        )
    })
}

/// An uninitialised storage buffer of `bytes`.
pub(crate) fn scratch(
    ctx: &Context,
    label: &str,
    bytes: u64,
    usage: wgpu::BufferUsages,
) -> Result<wgpu::Buffer> {
    let limit = ctx.limits().max_storage_binding;
    if bytes > limit {
        return Err(Error::TooLarge {
            what: format!("buffer `{label}`"),
            needed: bytes,
            allowed: limit,
            limit: "max_storage_buffer_binding_size",
        });
    }
    ctx.gpu().gpu_scope("allocating layer buffers", || {
        ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4),
            usage: usage | wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    })
}

/// Reads `elems` values of `dtype` from `buffer` (which needs `COPY_SRC`) as f32 (native
/// only: the browser reads asynchronously).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn read(
    ctx: &Context,
    buffer: &wgpu::Buffer,
    elems: usize,
    dtype: DType,
) -> Result<Vec<f32>> {
    let bytes = size_of(elems, dtype);
    let staging = ctx.gpu().gpu_scope("allocating a read-back buffer", || {
        ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgattn layer read-back"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    })?;
    ctx.gpu().gpu_scope("reading layer results", || {
        let mut enc = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
        ctx.queue().submit([enc.finish()]);
    })?;
    let raw = ctx.gpu().read_buffer(&staging, bytes)?;
    Ok(match dtype {
        DType::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(&raw)[..elems].to_vec(),
        DType::F16 => raw
            .chunks_exact(2)
            .take(elems)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    })
}

/// Checks that `buffer` (called `name`) is a storage buffer of at least `need` bytes.
pub(crate) fn check_buffer(name: &'static str, buffer: &wgpu::Buffer, need: u64) -> Result<()> {
    if !buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
        return Err(Error::BadBuffer {
            buffer: name,
            problem: format!("usage {:?} lacks STORAGE", buffer.usage()),
        });
    }
    if buffer.size() < need {
        return Err(Error::BadBuffer {
            buffer: name,
            problem: format!("holds {} bytes, the layer needs {need}", buffer.size()),
        });
    }
    Ok(())
}

/// Submits `encoder`'s work and waits for it (native only).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn submit(ctx: &Context, encoder: wgpu::CommandEncoder) -> Result<()> {
    ctx.gpu().gpu_scope("running the layer", || {
        ctx.queue().submit([encoder.finish()]);
    })?;
    ctx.gpu().wait()
}
