//! How to open a device ([`ContextOptions`]: adapter filter, limits lowered on purpose,
//! features turned off, variant overrides, the tune cache), read from the options and the
//! environment, and the planner's [`Caps`] of an opened device.

use std::path::PathBuf;

use crate::planner::{Caps, SUBGROUP_SIZES};
use crate::spec::DeviceLimits;

/// How to open a [`Context`](crate::Context). `Default` reads `WGATTN_ADAPTER` and uses the adapter's limits.
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
    /// (`shaders/fused/tiled.wgsl`), `Some(false)` the rows-per-invocation ones
    /// (`shaders/fused/rows.wgsl`). `None` reads `WGATTN_FLASH_TILES` (`1` / `0`), else chooses by
    /// adapter: tiled on GPUs, rows on CPU adapters (lavapipe, llvmpipe). The tiled variant
    /// needs 32 KiB of workgroup memory; adapters with less always use rows.
    pub flash_tiles: Option<bool>,
    /// Which fused variant f16 (and, forced, any) storage uses: `Some(true)` the matrix-tile
    /// one (`shaders/fused/mma.wgsl`) — on cooperative matrices (tensor cores) where the
    /// adapter reports an f16×f16→f32 shape, else with portable tile multiplies — `Some(false)`
    /// never. `None` reads `WGATTN_FLASH_MMA` (`1` / `0`), else uses it for f16 storage where
    /// the adapter has cooperative matrices.
    pub flash_mma: Option<bool>,
    /// Never request cooperative matrices, even where the adapter has them.
    pub disable_cooperative_matrix: bool,
    /// Where the planner's tuned choices come from (`wgattn tune`): by default the user's
    /// cache file (or `WGATTN_TUNE_CACHE`), [`TuneCacheSource::Off`] for the untuned
    /// defaults, or a given file. See `wgattn::tune` for missing and corrupt files.
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
    /// one fixed subgroup size among [`SUBGROUP_SIZES`].
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
                && SUBGROUP_SIZES.contains(&size)
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

/// Where a context reads tuned choices from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TuneCacheSource {
    /// `WGATTN_TUNE_CACHE` (a path, or `off`), else the user's cache file
    /// (`wgattn::tune::default_path`). Missing: no tuning;
    /// unreadable or corrupt: ignored with a warning.
    #[default]
    User,
    /// No tuning: the untuned defaults.
    Off,
    /// This file. Missing: no tuning; unreadable or corrupt: [`Error::TuneCache`](crate::Error::TuneCache).
    File(PathBuf),
}
