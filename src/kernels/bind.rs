//! Bind groups from the bindings a [`ShaderVariant`] carries: each binding's resource comes
//! from a function of the caller's; a binding it leaves out is left out of the group, which
//! wgpu then reports as a validation error (a bug in wgattn, never silent).

use crate::planner::chunks::Window;
use crate::shader::{Binding, ShaderVariant};

/// `window` of `buffer` as a binding.
pub(crate) fn window<'a>(w: &Window, buffer: &'a wgpu::Buffer) -> wgpu::BindingResource<'a> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
        buffer,
        offset: w.offset,
        size: std::num::NonZeroU64::new(w.size),
    })
}

/// The first `size` bytes (at least 4) of `buffer` as a binding.
pub(crate) fn prefix(buffer: &wgpu::Buffer, size: u64) -> wgpu::BindingResource<'_> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
        buffer,
        offset: 0,
        size: std::num::NonZeroU64::new(size.max(4)),
    })
}

/// The bind group (group 0) of `variant`'s `pipeline`, each binding's resource from
/// `resource`.
pub(crate) fn group<'a>(
    device: &wgpu::Device,
    label: &str,
    pipeline: &wgpu::ComputePipeline,
    variant: &ShaderVariant,
    mut resource: impl FnMut(Binding) -> Option<wgpu::BindingResource<'a>>,
) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry> = variant
        .bindings
        .iter()
        .filter_map(|&b| {
            resource(b).map(|resource| wgpu::BindGroupEntry {
                binding: b.index(),
                resource,
            })
        })
        .collect();
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &entries,
    })
}
