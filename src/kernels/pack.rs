//! The f32 → packed-f16 pass (`shaders/common/pack_f16.wgsl`) for adapters without SHADER_F16: the
//! kernels write an f32 output into a scratch buffer and this pass packs it into the caller's
//! f16 buffer, a few binding-sized ranges at a time.

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use super::bind;
use crate::error::Result;
use crate::gpu::{Runtime, init_buffer};
use crate::planner::pack_shader;
use crate::shader::{Binding, ShaderVariant};

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct PackParams {
    words: u32,
    elems: u32,
    _pad: [u32; 2],
}

/// One dispatch: a range of output words.
struct Range {
    first_word: u64,
    words: u64,
    uniform: wgpu::Buffer,
}

/// A packing pass for `elems` f32 values.
pub(crate) struct Pack {
    pipeline: Arc<wgpu::ComputePipeline>,
    shader: ShaderVariant,
    ranges: Vec<Range>,
    elems: u64,
    /// The device's workgroups per dimension.
    max_dim: u32,
}

impl Pack {
    pub(crate) fn new(rt: &Runtime, elems: u64) -> Result<Pack> {
        let shader = pack_shader();
        let pipeline = rt.pipeline(&shader)?;
        let limits = rt.limits();
        let words = elems.div_ceil(2);
        // Ranges start at multiples of 256 bytes on both sides (8·64 f32 in, 4·64 words out).
        let align_words = (limits.storage_offset_alignment as u64).max(256) / 4;
        let per = (limits.max_storage_binding / 8 / align_words * align_words)
            .min(limits.max_workgroups_per_dim as u64 * 64)
            .max(align_words);
        let device = rt.device();
        let ranges = rt.gpu_scope("allocating pack parameters", || {
            (0..words)
                .step_by(per as usize)
                .map(|first_word| {
                    let n = per.min(words - first_word);
                    let p = PackParams {
                        words: n as u32,
                        elems: (elems - 2 * first_word).min(2 * n) as u32,
                        _pad: [0; 2],
                    };
                    Range {
                        first_word,
                        words: n,
                        uniform: init_buffer(
                            device,
                            rt.queue(),
                            "wgattn pack params",
                            bytemuck::bytes_of(&p),
                            wgpu::BufferUsages::UNIFORM,
                        ),
                    }
                })
                .collect()
        })?;
        Ok(Pack {
            pipeline,
            shader,
            ranges,
            elems,
            max_dim: limits.max_workgroups_per_dim.max(1),
        })
    }

    /// The pass's shader.
    pub(crate) fn shader(&self) -> &ShaderVariant {
        &self.shader
    }

    /// Records the packing of `src` (f32) into `dst` (packed f16).
    pub(crate) fn encode(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        src: &wgpu::Buffer,
        dst: &wgpu::Buffer,
    ) {
        let groups: Vec<(wgpu::BindGroup, u64)> = self
            .ranges
            .iter()
            .map(|r| {
                let src_bytes = (self.elems - 2 * r.first_word).min(2 * r.words) * 4;
                let bind = |buffer, offset, size: u64| {
                    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer,
                        offset,
                        size: std::num::NonZeroU64::new(size.next_multiple_of(4)),
                    })
                };
                let resource = |b: Binding| match b {
                    Binding::Params => Some(r.uniform.as_entire_binding()),
                    Binding::Scratch => Some(bind(src, r.first_word * 8, src_bytes)),
                    Binding::Out => Some(bind(dst, r.first_word * 4, r.words * 4)),
                    _ => None,
                };
                let group = bind::group(
                    device,
                    "wgattn pack",
                    &self.pipeline,
                    &self.shader,
                    resource,
                );
                (group, r.words)
            })
            .collect();
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("wgattn pack f16"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&self.pipeline);
        for (group, words) in &groups {
            let blocks = words.div_ceil(64) as u32;
            pass.set_bind_group(0, group, &[]);
            pass.dispatch_workgroups(blocks.min(self.max_dim), blocks.div_ceil(self.max_dim), 1);
        }
    }
}
