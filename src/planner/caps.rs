//! What the planner knows about a device ([`Caps`], plain data), the device-class constants
//! its rules use, and the classes of device it distinguishes ([`caps_classes`]).

use super::{HeadClass, TiledShape};
use crate::spec::DeviceLimits;

/// Largest `seq_q` that counts as decoding for `Auto`.
pub const DECODE_MAX_SEQ_Q: usize = 16;
/// Invocations per workgroup the untuned tiled shapes need at most.
pub const TILED_WG: u32 = 256;
/// Workgroup memory the untuned tiled shapes need at most (bytes).
pub const TILED_WORKGROUP_BYTES: u32 = 32 * 1024;
/// Most rows per kv head (group × seq_q) the decoding variant holds in every lane.
pub const DECODE_MAX_ROWS: u32 = 8;
/// Fixed subgroup sizes the subgroup variants are used with (other sizes get the
/// workgroup-memory variants).
pub const SUBGROUP_SIZES: [u32; 4] = [8, 16, 32, 64];
/// Subgroup sizes the decoding variant is built for.
pub const DECODE_SUBGROUPS: [u32; 3] = [8, 16, 32];
/// Keys per block of the workgroup-memory rows variant (2·8·256·4 B = 16 KiB of K and V at
/// most, WebGPU's guaranteed workgroup storage).
pub const WORKGROUP_KEYS: u32 = 8;
/// Most key splits split-KV uses.
pub const MAX_SPLITS: u32 = 1024;

/// What the planner knows about a device: its limits and the optional features that select
/// kernel variants. Plain data: build one by hand to ask the planner about any device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Limits plans are made against.
    pub limits: DeviceLimits,
    /// The subgroup size when the device has subgroups of one fixed size (and they are not
    /// disabled); `None` selects the workgroup-memory variants.
    pub subgroup_size: Option<u32>,
    /// The device has SHADER_F16 (and it is not disabled): f16 arrays in shaders.
    pub shader_f16: bool,
    /// Kind of adapter: CPU adapters get the rows variants, and their split-KV grid is sized
    /// by `host_threads`.
    pub device_type: wgpu::DeviceType,
    /// `Some(true)` / `Some(false)` forces the tiled / rows fused variants
    /// (`ContextOptions::flash_tiles`, `WGATTN_FLASH_TILES`); `None` chooses by adapter. The
    /// tiled variant is never used without its workgroup memory and invocations.
    pub tiles: Option<bool>,
    /// Threads of the host (a CPU adapter runs on them).
    pub host_threads: u32,
    /// Edge (8 or 16) of the square f16×f16→f32 cooperative-matrix shape the adapter reports,
    /// when the device has cooperative matrices, subgroups and SHADER_F16 (and they are not
    /// disabled): the matrix-tile variant then multiplies on them (tensor cores).
    pub coop_f16: Option<u32>,
    /// `Some(true)` / `Some(false)` forces / forbids the matrix-tile fused variant
    /// (`ContextOptions::flash_mma`, `WGATTN_FLASH_MMA`), with cooperative matrices where
    /// [`Caps::coop_f16`] allows, else with the portable helpers. `None`: used for f16
    /// storage where the adapter has cooperative matrices.
    pub mma: Option<bool>,
}

impl Caps {
    /// True when flash and split-KV use the workgroup-tiled variant here.
    pub fn flash_tiles(&self) -> bool {
        self.limits.max_workgroup_storage >= TILED_WORKGROUP_BYTES
            && self.limits.max_invocations >= TILED_WG
            && self
                .tiles
                .unwrap_or(self.device_type != wgpu::DeviceType::Cpu)
    }

    /// True for CPU adapters (lavapipe, llvmpipe), whose kernels run on the host's threads.
    pub fn is_cpu(&self) -> bool {
        self.device_type == wgpu::DeviceType::Cpu
    }

    /// The cooperative-matrix edge the untuned planner multiplies on without being asked
    /// ([`Caps::mma`] unset): [`Caps::coop_f16`] on GPUs. A CPU adapter's cooperative
    /// matrices are emulated on the host (Mesa 26's lavapipe: its matrix-tile variant runs
    /// several times slower than the rows variants), so there they are used only when forced
    /// (`WGATTN_FLASH_MMA=1`) or chosen by the tuner.
    pub fn coop_by_default(&self) -> Option<u32> {
        self.coop_f16.filter(|_| !self.is_cpu())
    }

    /// These caps with the cooperative-matrix edge the device can use: its features include
    /// cooperative matrices, subgroups and SHADER_F16, and `properties` (the adapter's
    /// configurations) list a square f16×f16→f32 shape of edge 16 or 8 (16 preferred).
    pub fn with_cooperative_matrices(
        mut self,
        features: wgpu::Features,
        properties: &[wgpu::CooperativeMatrixProperties],
    ) -> Caps {
        let usable = features.contains(
            wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
                | wgpu::Features::SUBGROUP
                | wgpu::Features::SHADER_F16,
        ) && self.shader_f16;
        self.coop_f16 = usable.then(|| coop_f16_edge(properties)).flatten();
        self
    }

    /// The fixed subgroup size the decoding variant can use, if any.
    pub(crate) fn decode_subgroup(&self) -> Option<u32> {
        self.subgroup_size
            .filter(|sg| DECODE_SUBGROUPS.contains(sg))
    }

    /// Which variants the kernels use here, in words (`wgattn info`).
    pub fn variants(&self) -> Vec<String> {
        let mut lines = vec![if self.flash_tiles() {
            let class = HeadClass { d16: 8, vec4: true };
            match TiledShape::default_for(class, self) {
                Some(shape) => format!(
                    "flash/split-kv: workgroup-tiled variant, {} for head_dim 128, row \
                     maxima exchanged {}",
                    shape.describe(),
                    if shape.subgroups_on(self) {
                        "by subgroup shuffles"
                    } else {
                        "through workgroup memory"
                    }
                ),
                None => "flash/split-kv: workgroup-tiled variant (no shape fits)".into(),
            }
        } else {
            match self.subgroup_size {
                Some(n) => format!(
                    "flash/split-kv: rows variant, K/V by subgroupBroadcast (subgroup size {n})"
                ),
                None => "flash/split-kv: rows variant, K/V in workgroup memory (no fixed-size \
                         subgroups)"
                    .into(),
            }
        }];
        match (self.mma, self.coop_f16) {
            (Some(false), _) => {}
            (None, Some(t)) if self.coop_by_default().is_none() => lines.push(format!(
                "flash/split-kv f16: cooperative matrices ({t}×{t}×{t} f16×f16→f32) used only \
                 when forced (WGATTN_FLASH_MMA=1) or tuned: emulated on this CPU adapter, the \
                 rows variant is faster"
            )),
            (Some(true), None) => lines.push(
                "flash/split-kv: matrix-tile variant forced, portable tile multiplies (no \
                 cooperative matrices)"
                    .into(),
            ),
            (_, Some(t)) => lines.push(format!(
                "flash/split-kv f16: matrix-tile variant on cooperative matrices ({t}×{t}×{t} \
                 f16×f16→f32)"
            )),
            (None, None) => {}
        }
        if let Some(sg) = self.decode_subgroup() {
            lines.push(format!(
                "split-kv decoding: lanes split head_dim (subgroup size {sg}, ≤ {DECODE_MAX_ROWS} \
                 rows per kv head)"
            ));
        }
        lines.push(if self.shader_f16 {
            "f16: native f16 storage (SHADER_F16)".into()
        } else {
            "f16: packed in u32 (unpack2x16float) + packing pass (no SHADER_F16)".into()
        });
        lines
    }
}

/// The largest square f16×f16→f32 cooperative-matrix edge (16 or 8) among `properties`.
pub fn coop_f16_edge(properties: &[wgpu::CooperativeMatrixProperties]) -> Option<u32> {
    [16, 8].into_iter().find(|&e| {
        properties.iter().any(|p| {
            p.m_size == e
                && p.n_size == e
                && p.k_size == e
                && p.ab_type == wgpu::CooperativeScalarType::F16
                && p.cr_type == wgpu::CooperativeScalarType::F32
        })
    })
}

/// One `Caps` per class of device the planner distinguishes: CPU adapters with each fixed
/// subgroup size and without subgroups (GL), and GPUs (tiled), each with and without
/// SHADER_F16. [`all_variants`](super::all_variants) covers what the planner chooses on all
/// of them.
pub fn caps_classes() -> Vec<Caps> {
    let limits = DeviceLimits {
        max_storage_binding: 1 << 27,
        max_buffer_size: 1 << 28,
        max_workgroup_storage: 32 * 1024,
        max_invocations: 256,
        max_workgroups_per_dim: 65535,
        max_storage_buffers_per_stage: 8,
        storage_offset_alignment: 256,
    };
    // a CPU adapter without subgroups or SHADER_F16; the classes differ from it
    let base = Caps {
        limits,
        subgroup_size: None,
        shader_f16: false,
        device_type: wgpu::DeviceType::Cpu,
        tiles: None,
        host_threads: 4,
        coop_f16: None,
        mma: None,
    };
    let mut out = Vec::new();
    for shader_f16 in [false, true] {
        for subgroup_size in std::iter::once(None).chain(SUBGROUP_SIZES.map(Some)) {
            out.push(Caps {
                subgroup_size,
                shader_f16,
                ..base
            });
        }
        out.push(Caps {
            subgroup_size: Some(32),
            shader_f16,
            device_type: wgpu::DeviceType::DiscreteGpu,
            ..base
        });
        // the matrix-tile variant forced with the portable helpers (CPU adapters, GL)
        for subgroup_size in [None, Some(8)] {
            out.push(Caps {
                subgroup_size,
                shader_f16,
                mma: Some(true),
                ..base
            });
        }
    }
    // CPU adapters with (emulated) 8×8 cooperative matrices (Mesa 26's lavapipe), untuned and
    // with the matrix-tile variant forced
    for mma in [None, Some(true)] {
        out.push(Caps {
            subgroup_size: Some(8),
            shader_f16: true,
            coop_f16: Some(8),
            mma,
            ..base
        });
    }
    // GPUs with cooperative matrices of each edge, 48 KiB of workgroup memory (NVIDIA)
    for tile in [8, 16] {
        out.push(Caps {
            limits: DeviceLimits {
                max_workgroup_storage: 48 * 1024,
                max_invocations: 1024,
                ..limits
            },
            subgroup_size: Some(32),
            shader_f16: true,
            device_type: wgpu::DeviceType::DiscreteGpu,
            coop_f16: Some(tile),
            ..base
        });
    }
    out
}
