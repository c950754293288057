//! The device limits wgattn plans against.

/// The subset of a device's limits that shapes wgattn's plans. Taken from the device's real
/// limits, possibly lowered on purpose through [`ContextOptions`](crate::ContextOptions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Largest storage-buffer binding, in bytes.
    pub max_storage_binding: u64,
    /// Largest buffer, in bytes.
    pub max_buffer_size: u64,
    /// Workgroup (shared) memory per workgroup, in bytes.
    pub max_workgroup_storage: u32,
    /// Invocations per workgroup.
    pub max_invocations: u32,
    /// Workgroups per dispatch dimension.
    pub max_workgroups_per_dim: u32,
    /// Storage buffers one shader stage may bind.
    pub max_storage_buffers_per_stage: u32,
    /// Alignment of storage-buffer binding offsets, in bytes.
    pub storage_offset_alignment: u32,
}

impl DeviceLimits {
    /// No practical limit: used by the CPU reference.
    pub fn unbounded() -> Self {
        DeviceLimits {
            max_storage_binding: u64::MAX,
            max_buffer_size: u64::MAX,
            max_workgroup_storage: u32::MAX,
            max_invocations: u32::MAX,
            max_workgroups_per_dim: u32::MAX,
            max_storage_buffers_per_stage: u32::MAX,
            storage_offset_alignment: 4,
        }
    }

    /// The limits of a wgpu device.
    pub fn from_wgpu(l: &wgpu::Limits) -> Self {
        DeviceLimits {
            max_storage_binding: l.max_storage_buffer_binding_size,
            max_buffer_size: l.max_buffer_size,
            max_workgroup_storage: l.max_compute_workgroup_storage_size,
            max_invocations: l.max_compute_invocations_per_workgroup,
            max_workgroups_per_dim: l.max_compute_workgroups_per_dimension,
            max_storage_buffers_per_stage: l.max_storage_buffers_per_shader_stage,
            storage_offset_alignment: l.min_storage_buffer_offset_alignment,
        }
    }
}
