//! The planner's rules: the default variant of each fused kernel, the key splits of
//! split-KV, the kernel `Auto` picks, and how tuned choices replace the defaults.

use super::{
    Caps, Choice, DECODE_MAX_SEQ_Q, FusedVariant, HeadClass, KvSharing, MAX_SPLITS, MMA_SHAPES,
    MmaShape, Storage, TiledShape, TunedChoice, Tuning, fused, mma_coop, tuned,
};
use crate::error::{Error, Result};
use crate::spec::{AttentionSpec, Kernel};

/// What the planner plans against: a device's [`Caps`] and its tuned choices. A
/// [`Context`](crate::Context) is one; so is a `(Caps, Tuning)` pair of plain data.
pub trait Target {
    /// The device's caps.
    fn caps(&self) -> &Caps;
    /// The device's tuned choices (empty: the untuned defaults).
    fn tuning(&self) -> &Tuning;
}

impl Target for (Caps, Tuning) {
    fn caps(&self) -> &Caps {
        &self.0
    }
    fn tuning(&self) -> &Tuning {
        &self.1
    }
}

/// Query rows per kv head of `spec` (group × seq_q): the rows a fused workgroup grid covers.
pub(crate) fn kv_head_rows(spec: &AttentionSpec) -> u32 {
    (spec.group() * spec.seq_q) as u32
}

/// The rows (or tiled) variant for a head_dim class and `rows` query rows per kv head.
pub fn rows_variant(class: HeadClass, rows: u32, caps: &Caps) -> FusedVariant {
    if caps.flash_tiles()
        && let Some(shape) = TiledShape::default_for(class, caps)
    {
        return FusedVariant::Tiled {
            class,
            shape,
            subgroups: shape.subgroups_on(caps),
        };
    }
    let sharing = KvSharing::on(caps);
    let with_rows = |r: u32| {
        let few = rows.div_ceil(r);
        // One subgroup per workgroup when the rows fit it (decoding), else 64 rows.
        let wg = match sharing {
            KvSharing::Subgroup(sg) if few <= sg => sg,
            KvSharing::Subgroup(sg) => sg.max(64),
            KvSharing::Workgroup if few <= 16 => 16,
            KvSharing::Workgroup => 64,
        };
        FusedVariant::Rows {
            class,
            wg,
            rows: r,
            sharing,
        }
    };
    // More rows per invocation share each K/V fetch and broadcast (4 rows: 1.6-1.7× faster
    // than 1 on lavapipe, for every head_dim class, BENCHMARKS.md); short problems keep fewer
    // rows per invocation to keep more workgroups. The first that fits is used.
    let preferred: &[u32] = match rows {
        256.. => &[4, 2, 1],
        64.. => &[2, 1],
        _ => &[1],
    };
    preferred
        .iter()
        .map(|&r| with_rows(r))
        .find(|v| v.fits(caps))
        .unwrap_or_else(|| with_rows(1))
}

/// The decoding variant for a head_dim class and `rows` query rows per kv head, when the
/// device has a suitable fixed subgroup size and it fits (`rows ≤`
/// [`DECODE_MAX_ROWS`](super::DECODE_MAX_ROWS)).
pub fn decode_variant(class: HeadClass, rows: u32, caps: &Caps) -> Option<FusedVariant> {
    let v = FusedVariant::Decode {
        class,
        subgroup: caps.decode_subgroup()?,
        rows,
    };
    v.fits(caps).then_some(v)
}

/// True when `spec` asks for reduced-precision products and they apply on `caps`: f32
/// storage, SHADER_F16, and cooperative matrices used by default ([`Caps::coop_by_default`])
/// or the matrix-tile variant forced (which multiplies f16 operands on cooperative matrices
/// where the adapter has them, else with the portable helpers).
pub fn reduced_precision_applies(spec: &AttentionSpec, caps: &Caps) -> bool {
    spec.reduced_precision
        && Storage::of(spec, caps) == Storage::F32
        && caps.shader_f16
        && match caps.mma {
            Some(forced) => forced,
            None => caps.coop_by_default().is_some(),
        }
}

/// True when the matrix-tile variant holds f16 operands for `spec`: f16 storage, or f32
/// storage where [`reduced_precision_applies`].
pub fn half_operands(spec: &AttentionSpec, caps: &Caps) -> bool {
    Storage::of(spec, caps) == Storage::F16 || reduced_precision_applies(spec, caps)
}

/// The untuned matrix-tile shape for a head_dim class and operand type: the first of
/// [`MMA_SHAPES`] that fits, cooperative where the adapter allows.
pub fn mma_default_shape(class: HeadClass, half: bool, caps: &Caps) -> Option<MmaShape> {
    let coop = mma_coop(caps, half);
    MMA_SHAPES.iter().find_map(|&(rows, keys, wg)| {
        let shape = MmaShape {
            rows,
            keys,
            wg,
            tile: coop.unwrap_or(16),
            coop: coop.is_some(),
            half,
        };
        shape.fits(class, caps).then_some(shape)
    })
}

/// True when `shape` can run head_dim class `class` on `caps` ([`MmaShape::fits`]).
#[deprecated(note = "use MmaShape::fits")]
pub fn mma_fits(shape: &MmaShape, class: HeadClass, caps: &Caps) -> bool {
    shape.fits(class, caps)
}

/// True when the untuned planner uses the matrix-tile variant for operands of this kind:
/// forced by [`Caps::mma`], else for f16 operands where cooperative matrices are used by
/// default ([`Caps::coop_by_default`]: GPUs).
pub(crate) fn mma_wanted(caps: &Caps, half: bool) -> bool {
    caps.mma.unwrap_or(half && caps.coop_by_default().is_some())
}

/// The matrix-tile variant for `spec`, when it is used ([`Caps::mma`], else f16 operands on
/// adapters with cooperative matrices) and a shape fits.
pub fn mma_variant(spec: &AttentionSpec, caps: &Caps) -> Option<FusedVariant> {
    let half = half_operands(spec, caps);
    if !mma_wanted(caps, half) {
        return None;
    }
    let class = HeadClass::of(spec, caps);
    mma_default_shape(class, half, caps).map(|shape| FusedVariant::Mma { class, shape })
}

/// The flash variant for `spec` (no key splits).
pub fn flash_variant(spec: &AttentionSpec, caps: &Caps) -> FusedVariant {
    mma_variant(spec, caps)
        .unwrap_or_else(|| rows_variant(HeadClass::of(spec, caps), kv_head_rows(spec), caps))
}

/// The split-KV variant for `spec` given flash's variant (default or tuned): the decoding
/// variant where the device has it, else flash's. (See [`plan`] for the chunking condition.)
fn split_variant(spec: &AttentionSpec, caps: &Caps, flash: FusedVariant) -> FusedVariant {
    decode_variant(HeadClass::of(spec, caps), kv_head_rows(spec), caps).unwrap_or(flash)
}

/// True when split-KV would use the decoding variant for `spec` (shape and device allowing;
/// see [`plan`] for the chunking condition).
pub fn has_decode_variant(spec: &AttentionSpec, on: &impl Target) -> bool {
    has_decode(spec, on.caps())
}

/// True when split-KV's variant for `spec` on `caps` is the decoding one.
fn has_decode(spec: &AttentionSpec, caps: &Caps) -> bool {
    matches!(
        split_variant(spec, caps, flash_variant(spec, caps)),
        FusedVariant::Decode { .. }
    )
}

/// The most key splits split-KV may use for `spec`: each split at least 256 keys long, at
/// most [`MAX_SPLITS`] and at most the device's workgroups per dimension.
pub fn max_splits(spec: &AttentionSpec, caps: &Caps) -> u32 {
    ((spec.seq_k as u64 / 256).max(1))
        .min(MAX_SPLITS as u64)
        .min(caps.limits.max_workgroups_per_dim.max(1) as u64) as u32
}

/// How many key splits split-KV uses for `spec` with `variant`: enough workgroups to fill the
/// device, within [`max_splits`]. CPU adapters: 4 workgroups per host thread. GPUs: about
/// 2^18 invocations (what a large GPU keeps resident: an H100 holds 132 × 2048), so the
/// one-subgroup decoding workgroups get many more splits than 256-invocation tiles.
pub fn splits_for(spec: &AttentionSpec, variant: &FusedVariant, caps: &Caps) -> u32 {
    let target_workgroups: u64 = match caps.device_type {
        wgpu::DeviceType::Cpu => 4 * caps.host_threads.max(1) as u64,
        _ => (1u64 << 18) / variant.invocations() as u64,
    };
    let blocks = match variant {
        FusedVariant::Decode { .. } => 1,
        _ => (kv_head_rows(spec) as u64).div_ceil(variant.rows_per_workgroup() as u64),
    } * (spec.batch * spec.kv_heads) as u64;
    target_workgroups
        .div_ceil(blocks.max(1))
        .clamp(1, max_splits(spec, caps) as u64) as u32
}

/// `splits` × 2^`shift` within [`max_splits`].
fn shifted_splits(spec: &AttentionSpec, splits: u32, shift: i32, caps: &Caps) -> u32 {
    let s = if shift >= 0 {
        splits.saturating_mul(1 << shift.min(8))
    } else {
        splits >> (-shift).min(31)
    };
    s.clamp(1, max_splits(spec, caps))
}

/// How many key splits split-KV would use for `spec` on a device with `caps`.
pub fn split_count(spec: &AttentionSpec, caps: &Caps) -> u32 {
    let variant = split_variant(spec, caps, flash_variant(spec, caps));
    splits_for(spec, &variant, caps)
}

/// Storage buffers the most demanding shader of `choice` binds.
pub fn storage_buffers(spec: &AttentionSpec, choice: &Choice) -> u32 {
    choice
        .shaders(spec)
        .iter()
        .map(|v| v.bindings.iter().filter(|b| b.is_storage()).count() as u32)
        .max()
        .unwrap_or(0)
}

/// The typed error for a choice whose shaders bind more storage buffers than allowed.
fn too_many_buffers(spec: &AttentionSpec, choice: &Choice, caps: &Caps) -> Option<Error> {
    let needed = storage_buffers(spec, choice);
    let allowed = caps.limits.max_storage_buffers_per_stage;
    (needed > allowed).then(|| Error::TooLarge {
        what: format!("the {} kernel's storage buffers", choice.kernel),
        needed: needed as u64,
        allowed: allowed as u64,
        limit: "max_storage_buffers_per_shader_stage",
    })
}

/// The decision for `spec` on a device with `caps`: kernel, fused variant, splits, storage
/// (untuned).
pub fn plan(spec: &AttentionSpec, caps: &Caps) -> Result<Choice> {
    plan_tuned(spec, caps, &Tuning::none())
}

/// The tuned choice [`plan_tuned`] applies to `spec`: the one of its class, unless a fused
/// variant is forced ([`Caps::tiles`], [`Caps::mma`]) or the kernel is three-pass.
fn tuned_choice(spec: &AttentionSpec, caps: &Caps, tuning: &Tuning) -> Option<TunedChoice> {
    if caps.tiles.is_some() || caps.mma.is_some() || !tuned::tunable(spec) {
        return None;
    }
    tuning.get(spec, caps)
}

/// Like [`plan`], with the tuned choices of `tuning` where the spec's class has one that can
/// run it: the fused variant of flash and of split-KV's non-decoding path, or split-KV's
/// split count. Everything else is as untuned.
pub fn plan_tuned(spec: &AttentionSpec, caps: &Caps, tuning: &Tuning) -> Result<Choice> {
    let tuned_choice = tuned_choice(spec, caps, tuning);
    let tuned_variant = tuned_choice.and_then(|c| c.variant(spec, caps));
    let split_shift = match tuned_choice {
        Some(TunedChoice::Splits { shift }) => Some(shift),
        _ => None,
    };
    let flash_variant = tuned_variant.unwrap_or_else(|| flash_variant(spec, caps));
    let storage = Storage::of(spec, caps);
    let fused_cannot = |kernel: Kernel| -> Result<()> {
        if spec.return_weights {
            return Err(Error::KernelUnsupported {
                kernel: kernel.name().into(),
                reason:
                    "it never forms the probability matrix; use three-pass (or auto) for weights"
                        .into(),
            });
        }
        Ok(())
    };
    let three_pass = Choice {
        kernel: Kernel::ThreePass,
        variant: None,
        splits: 1,
        storage,
        tuned: false,
    };
    let flash = Choice {
        kernel: Kernel::Flash,
        variant: Some(flash_variant),
        splits: 1,
        storage,
        tuned: tuned_variant.is_some(),
    };
    let split_kv = |min_splits: u32| {
        let variant = split_variant(spec, caps, flash_variant);
        let mut splits = splits_for(spec, &variant, caps);
        if let Some(shift) = split_shift {
            splits = shifted_splits(spec, splits, shift, caps);
        }
        let splits = splits.max(min_splits);
        // The decoding variant holds all rows of a kv head: when the chunks that fit the
        // device's bindings cut them, flash's variant runs instead (same splits).
        let variant = match variant {
            FusedVariant::Decode { .. }
                if !fused::keeps_kv_heads_whole(spec, caps, &variant, splits) =>
            {
                flash_variant
            }
            v => v,
        };
        let tuned = match variant {
            FusedVariant::Decode { .. } => split_shift.is_some(),
            _ => tuned_variant.is_some() || split_shift.is_some(),
        };
        Choice {
            kernel: Kernel::SplitKv,
            variant: Some(variant),
            splits,
            storage,
            tuned,
        }
    };
    let checked = |choice: Choice| match too_many_buffers(spec, &choice, caps) {
        Some(e) => Err(e),
        None => Ok(choice),
    };
    match spec.kernel {
        Kernel::ThreePass => checked(three_pass),
        Kernel::Flash => {
            fused_cannot(Kernel::Flash)?;
            checked(flash)
        }
        Kernel::SplitKv => {
            fused_cannot(Kernel::SplitKv)?;
            // an explicit split-KV splits the keys even where one split would do
            checked(split_kv(2.min(caps.limits.max_workgroups_per_dim.max(1))))
        }
        Kernel::Auto => {
            if spec.return_weights {
                return checked(three_pass);
            }
            let decoding = spec.seq_q <= DECODE_MAX_SEQ_Q;
            let split = split_kv(1);
            let fused = if decoding && (split.splits > 1 || has_decode(spec, caps)) {
                split
            } else {
                flash
            };
            // a device with too few storage buffers for the fused kernels gets three-pass
            match too_many_buffers(spec, &fused, caps) {
                None => Ok(fused),
                Some(e) => checked(three_pass).map_err(|_| e),
            }
        }
    }
}

/// The kernel, variant and splits that will run `spec` on `on` (with its tuned choices).
pub fn plan_kernel(spec: &AttentionSpec, on: &impl Target) -> Result<Choice> {
    plan_tuned(spec, on.caps(), on.tuning())
}

/// The kernel that will run `spec` on `on` (never `Auto`).
pub fn choose(spec: &AttentionSpec, on: &impl Target) -> Result<Kernel> {
    plan_kernel(spec, on).map(|c| c.kernel)
}
#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;
    use crate::shader::Flag;
    use crate::spec::{DType, DeviceLimits, Layout};

    fn limits() -> DeviceLimits {
        DeviceLimits {
            max_storage_binding: 1 << 30,
            max_buffer_size: 1 << 31,
            max_workgroup_storage: 32 * 1024,
            max_invocations: 256,
            max_workgroups_per_dim: 65535,
            max_storage_buffers_per_stage: 8,
            storage_offset_alignment: 256,
        }
    }

    /// A CPU adapter (lavapipe-like) with 4 host threads.
    fn cpu(subgroup_size: Option<u32>, shader_f16: bool) -> Caps {
        Caps {
            limits: limits(),
            subgroup_size,
            shader_f16,
            device_type: wgpu::DeviceType::Cpu,
            tiles: None,
            host_threads: 4,
            coop_f16: None,
            mma: None,
        }
    }

    /// llvmpipe's GL: no subgroups, no SHADER_F16, 16 KiB of workgroup memory.
    fn gl() -> Caps {
        let mut c = cpu(None, false);
        c.limits.max_workgroup_storage = 16 * 1024;
        c
    }

    /// A discrete GPU with fixed subgroups of 32 and SHADER_F16.
    fn gpu() -> Caps {
        Caps {
            device_type: wgpu::DeviceType::DiscreteGpu,
            ..cpu(Some(32), true)
        }
    }

    fn auto(b: usize, hq: usize, hkv: usize, sq: usize, sk: usize, d: usize) -> AttentionSpec {
        AttentionSpec::new(b, hq, hkv, sq, sk, d)
    }

    #[test]
    fn weights_go_to_three_pass_and_fused_kernels_refuse_them() {
        let spec = auto(1, 2, 2, 64, 64, 32).with_weights(true);
        for caps in [cpu(Some(8), true), gl(), gpu()] {
            let c = plan(&spec, &caps).unwrap();
            assert_eq!(
                (c.kernel, c.variant, c.splits),
                (Kernel::ThreePass, None, 1)
            );
            for kernel in [Kernel::Flash, Kernel::SplitKv] {
                match plan(&spec.clone().kernel(kernel), &caps) {
                    Err(Error::KernelUnsupported { kernel: k, reason }) => {
                        assert_eq!(k, kernel.name());
                        assert!(reason.contains("probability matrix"), "{reason}");
                    }
                    other => panic!("{kernel}: expected KernelUnsupported, got {other:?}"),
                }
            }
        }
    }

    #[test]
    fn explicit_kernels_are_used_as_asked() {
        let spec = auto(1, 4, 2, 100, 300, 64);
        for caps in [cpu(Some(8), false), gl(), gpu()] {
            for kernel in [Kernel::ThreePass, Kernel::Flash, Kernel::SplitKv] {
                let c = plan(&spec.clone().kernel(kernel), &caps).unwrap();
                assert_eq!(c.kernel, kernel);
                assert_eq!(c.variant.is_none(), kernel == Kernel::ThreePass);
                match kernel {
                    Kernel::SplitKv => assert!(c.splits >= 2, "{c:?}"),
                    _ => assert_eq!(c.splits, 1),
                }
            }
        }
    }

    #[test]
    fn auto_prefers_flash_and_split_kv_for_decoding() {
        let caps = cpu(Some(8), true);
        // prefill: flash
        let c = plan(&auto(1, 8, 2, 512, 512, 64), &caps).unwrap();
        assert_eq!((c.kernel, c.splits), (Kernel::Flash, 1));
        // decoding with the decoding variant: split-KV, its variant, 16 workgroups on 4 threads
        let c = plan(&auto(1, 8, 2, 1, 4096, 64), &caps).unwrap();
        assert_eq!(c.kernel, Kernel::SplitKv);
        assert!(matches!(
            c.variant,
            Some(FusedVariant::Decode {
                rows: 4,
                subgroup: 8,
                ..
            })
        ));
        assert_eq!(c.splits, 8, "16 workgroups over 2 kv heads");
        // short decoding with the decoding variant: split-KV with one split (no combine)
        let c = plan(&auto(1, 8, 2, 1, 200, 64), &caps).unwrap();
        assert_eq!((c.kernel, c.splits), (Kernel::SplitKv, 1));
        // without subgroups (GL): split-KV only when splitting gives more workgroups
        let c = plan(&auto(1, 8, 2, 1, 4096, 64), &gl()).unwrap();
        assert_eq!(c.kernel, Kernel::SplitKv);
        assert!(matches!(
            c.variant,
            Some(FusedVariant::Rows {
                sharing: KvSharing::Workgroup,
                ..
            })
        ));
        assert!(c.splits > 1);
        let c = plan(&auto(1, 8, 2, 1, 300, 64), &gl()).unwrap();
        assert_eq!((c.kernel, c.splits), (Kernel::Flash, 1));
        // 17 query rows is not decoding
        let c = plan(&auto(1, 1, 1, 17, 1 << 16, 64), &gl()).unwrap();
        assert_eq!(c.kernel, Kernel::Flash);
        // too many rows per kv head for the decoding variant: the rows variant, split
        let c = plan(&auto(1, 16, 1, 1, 4096, 64), &caps).unwrap();
        assert_eq!(c.kernel, Kernel::SplitKv);
        assert!(
            matches!(c.variant, Some(FusedVariant::Rows { .. })),
            "{c:?}"
        );
    }

    #[test]
    fn variant_per_device_class() {
        let class = |d16, vec4| HeadClass { d16, vec4 };
        // CPU with subgroups of 8: rows shared by broadcast, 4 rows per invocation for long
        // problems with head_dim ≤ 128, 2 above, fewer rows for short problems
        let caps = cpu(Some(8), true);
        let rows = |spec: &AttentionSpec| flash_variant(spec, &caps);
        assert_eq!(
            rows(&auto(1, 2, 2, 512, 512, 64)),
            FusedVariant::Rows {
                class: class(4, true),
                wg: 64,
                rows: 4,
                sharing: KvSharing::Subgroup(8)
            }
        );
        assert!(matches!(
            rows(&auto(1, 2, 2, 512, 512, 256)),
            FusedVariant::Rows { rows: 2, .. }
        ));
        assert!(matches!(
            rows(&auto(1, 2, 2, 100, 512, 64)),
            FusedVariant::Rows {
                rows: 2,
                wg: 64,
                ..
            }
        ));
        assert_eq!(
            rows(&auto(1, 1, 1, 5, 512, 30)),
            FusedVariant::Rows {
                class: class(2, false),
                wg: 8,
                rows: 1,
                sharing: KvSharing::Subgroup(8)
            }
        );
        // CPU without subgroups (GL): K/V blocks in workgroup memory
        assert_eq!(
            flash_variant(&auto(1, 1, 1, 10, 64, 64), &gl()),
            FusedVariant::Rows {
                class: class(4, true),
                wg: 16,
                rows: 1,
                sharing: KvSharing::Workgroup
            }
        );
        // GPUs: tiled, unless the workgroup memory or invocations are missing
        assert_eq!(
            flash_variant(&auto(1, 2, 2, 512, 512, 64), &gpu()),
            FusedVariant::Tiled {
                class: class(4, true),
                shape: TiledShape::new(8, 4, 128, 16),
                // 16 lanes per row band within subgroups of 32
                subgroups: true,
            }
        );
        let mut small = gpu();
        small.limits.max_workgroup_storage = 16 * 1024;
        assert!(!small.flash_tiles());
        assert!(matches!(
            flash_variant(&auto(1, 2, 2, 512, 512, 64), &small),
            FusedVariant::Rows { .. }
        ));
        small = gpu();
        small.limits.max_invocations = 128;
        assert!(!small.flash_tiles());
        // the override forces either way (but never without the memory)
        let forced = Caps {
            tiles: Some(true),
            ..cpu(Some(8), true)
        };
        assert!(forced.flash_tiles());
        assert!(
            !Caps {
                tiles: Some(true),
                ..gl()
            }
            .flash_tiles()
        );
        assert!(
            !Caps {
                tiles: Some(false),
                ..gpu()
            }
            .flash_tiles()
        );
        // GPUs keep the decoding variant for decoding
        let c = plan(&auto(1, 8, 2, 1, 4096, 64), &gpu()).unwrap();
        assert!(matches!(
            c.variant,
            Some(FusedVariant::Decode { subgroup: 32, .. })
        ));
        // vec4 needs head_dim % 4 == 0 and 16-byte offset alignment
        let mut odd = cpu(Some(8), true);
        odd.limits.storage_offset_alignment = 4;
        assert!(!HeadClass::of(&auto(1, 1, 1, 4, 4, 64), &odd).vec4);
        assert!(!HeadClass::of(&auto(1, 1, 1, 4, 4, 66), &cpu(None, false)).vec4);
        assert_eq!(HeadClass::of(&auto(1, 1, 1, 4, 4, 1), &gl()).d16, 1);
        assert_eq!(HeadClass::of(&auto(1, 1, 1, 4, 4, 256), &gl()).d16, 16);
    }

    #[test]
    fn f16_storage_native_or_packed() {
        let spec = auto(1, 1, 1, 8, 8, 16).dtype(DType::F16);
        assert_eq!(plan(&spec, &gpu()).unwrap().storage, Storage::F16);
        assert_eq!(plan(&spec, &gl()).unwrap().storage, Storage::Packed);
        assert_eq!(
            plan(&spec, &cpu(Some(8), false)).unwrap().storage,
            Storage::Packed
        );
        let f32 = auto(1, 1, 1, 8, 8, 16);
        assert_eq!(plan(&f32, &gpu()).unwrap().storage, Storage::F32);
        assert_eq!(plan(&f32, &gl()).unwrap().storage, Storage::F32);
        // the storage shows in the shaders
        let c = plan(&spec, &gpu()).unwrap();
        assert!(c.shaders(&spec)[0].has(Flag::F16));
        let c = plan(&spec, &gl()).unwrap();
        assert!(c.shaders(&spec)[0].has(Flag::PACKED));
    }

    #[test]
    fn split_counts_stay_within_bounds() {
        for caps in [cpu(Some(8), true), gl(), gpu()] {
            for (b, hq, hkv, sq, sk) in [
                (1, 1, 1, 1, 1),
                (1, 1, 1, 1, 255),
                (1, 1, 1, 1, 1000),
                (1, 32, 8, 1, 1 << 20),
                (1, 1, 1, 1, 1 << 24),
                (16, 32, 32, 16, 8192),
            ] {
                let spec = auto(b, hq, hkv, sq, sk, 64).kernel(Kernel::SplitKv);
                let n = split_count(&spec, &caps);
                assert!((1..=MAX_SPLITS).contains(&n), "{n}");
                assert!(n as usize <= (sk / 256).max(1), "{sk} keys, {n} splits");
                let c = plan(&spec, &caps).unwrap();
                assert_eq!(c.splits, n.max(2));
            }
        }
        // a GPU fills ~2^18 invocations: one-subgroup decoding workgroups get many splits
        let spec = auto(1, 1, 1, 1, 1 << 20, 64);
        assert_eq!(split_count(&spec, &gpu()), MAX_SPLITS);
        assert_eq!(split_count(&spec, &cpu(Some(8), true)), 16);
        // never more splits than workgroups per dimension
        let mut few = gpu();
        few.limits.max_workgroups_per_dim = 5;
        assert_eq!(split_count(&spec, &few), 5);
        few.limits.max_workgroups_per_dim = 1;
        assert_eq!(
            plan(&spec.clone().kernel(Kernel::SplitKv), &few)
                .unwrap()
                .splits,
            1
        );
    }

    #[test]
    fn storage_buffer_limit_is_planned_against() {
        let spec = auto(1, 2, 2, 64, 64, 32);
        let biased = spec.clone().bias(crate::spec::Broadcast::SHARED);
        let mut caps = cpu(Some(8), true);
        let fused = plan(&spec, &caps).unwrap();
        assert_eq!(storage_buffers(&spec, &fused), 6);
        assert_eq!(storage_buffers(&biased, &plan(&biased, &caps).unwrap()), 7);
        let three = plan(&spec.clone().kernel(Kernel::ThreePass), &caps).unwrap();
        assert_eq!(storage_buffers(&spec, &three), 4);
        // 5 per stage: auto falls back to three-pass, flash asked for is a typed error
        caps.limits.max_storage_buffers_per_stage = 5;
        assert_eq!(plan(&spec, &caps).unwrap().kernel, Kernel::ThreePass);
        match plan(&spec.clone().kernel(Kernel::Flash), &caps) {
            Err(Error::TooLarge {
                needed: 6,
                allowed: 5,
                limit,
                ..
            }) => assert_eq!(limit, "max_storage_buffers_per_shader_stage"),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // 3 per stage: nothing fits
        caps.limits.max_storage_buffers_per_stage = 3;
        assert!(matches!(
            plan(&spec, &caps),
            Err(Error::TooLarge { needed: 6, .. })
        ));
    }

    /// The decoding variant holds all rows of a kv head: when the chunks that fit the
    /// bindings cut them, split-KV uses the rows variant instead.
    #[test]
    fn decode_falls_back_to_rows_when_chunks_cut_kv_heads() {
        // bshd: q rows of 4 heads interleave, so two query rows need a larger q window than
        // the 5 keys of the kv head
        let spec = auto(1, 4, 1, 2, 5, 16)
            .layout(Layout::Bshd)
            .kernel(Kernel::SplitKv);
        let mut caps = cpu(Some(8), true);
        caps.limits.storage_offset_alignment = 16;
        let whole = plan(&spec, &caps).unwrap();
        assert!(matches!(
            whole.variant,
            Some(FusedVariant::Decode { rows: 8, .. })
        ));
        caps.limits.max_storage_binding = 400;
        let decode = whole.variant.unwrap();
        assert!(!fused::keeps_kv_heads_whole(
            &spec,
            &caps,
            &decode,
            whole.splits
        ));
        let cut = plan(&spec, &caps).unwrap();
        assert_eq!(cut.kernel, Kernel::SplitKv);
        assert!(
            matches!(cut.variant, Some(FusedVariant::Rows { .. })),
            "{cut:?}"
        );
        assert_eq!(cut.splits, whole.splits);
    }

    /// Whatever the planner picks is in the list the naga tests validate.
    #[test]
    fn chosen_variants_are_listed() {
        let all = super::super::all_variants();
        for caps in caps_classes() {
            let listed = fused_variants(&caps);
            for (hq, hkv, sq, d) in [
                (1, 1, 1, 16),
                (8, 2, 1, 64),
                (8, 1, 1, 128),
                (4, 4, 16, 100),
                (2, 2, 200, 256),
                (4, 2, 300, 64),
                (1, 1, 1000, 3),
            ] {
                for (kernel, dtype) in [Kernel::Auto, Kernel::Flash, Kernel::SplitKv]
                    .into_iter()
                    .flat_map(|k| [(k, DType::F32), (k, DType::F16)])
                {
                    let spec = auto(1, hq, hkv, sq, 4096, d).kernel(kernel).dtype(dtype);
                    let c = plan(&spec, &caps).unwrap();
                    let v = c.variant.unwrap();
                    assert!(listed.contains(&v), "{v:?} not listed for {caps:?}");
                    assert!(v.fits(&caps), "{v:?} chosen but does not fit {caps:?}");
                    let mut shader = c.shaders(&spec)[0].clone();
                    // the list holds f32 storage and adds the storage flags per code path
                    shader
                        .flags
                        .retain(|f| !matches!(*f, Flag::PACKED | Flag::F16));
                    assert!(
                        all.contains(&shader),
                        "{} not in all_variants",
                        shader.key()
                    );
                }
                // every tuning candidate of the shape can be selected: listed too
                let spec = auto(1, hq, hkv, sq, 4096, d);
                for candidate in candidates(&spec, &caps) {
                    if let Some(v) = candidate.variant(&spec, &caps) {
                        assert!(listed.contains(&v), "candidate {v:?} not listed");
                    }
                }
            }
        }
    }

    /// A CPU adapter with cooperative matrices (Mesa 26's lavapipe: emulated, slower than the
    /// rows variants) keeps the rows variants for f16 and reduced precision unless the
    /// matrix-tile variant is forced, which then multiplies on its cooperative matrices.
    #[test]
    fn cpu_adapters_use_cooperative_matrices_only_when_forced() {
        let caps = Caps {
            coop_f16: Some(8),
            ..cpu(Some(8), true)
        };
        assert_eq!(caps.coop_by_default(), None);
        let f16 = auto(1, 8, 8, 512, 512, 64).dtype(DType::F16);
        let reduced = auto(1, 8, 8, 512, 512, 64).reduced_precision(true);
        let plain = Caps {
            coop_f16: None,
            ..caps
        };
        for spec in [&f16, &reduced] {
            assert!(matches!(
                plan(spec, &caps).unwrap().variant,
                Some(FusedVariant::Rows { .. })
            ));
            // the same plan as without cooperative matrices
            assert_eq!(plan(spec, &caps).unwrap(), plan(spec, &plain).unwrap());
        }
        assert!(!reduced_precision_applies(&reduced, &caps));
        let forced = Caps {
            mma: Some(true),
            ..caps
        };
        assert!(reduced_precision_applies(&reduced, &forced));
        for spec in [&f16, &reduced] {
            match plan(spec, &forced).unwrap().variant.unwrap() {
                FusedVariant::Mma { shape, .. } => {
                    assert!(shape.coop && shape.half && shape.tile == 8, "{shape:?}")
                }
                other => panic!("expected mma, got {other:?}"),
            }
        }
        // a GPU with the same cooperative matrices uses them untuned
        let gpu = Caps {
            device_type: wgpu::DeviceType::DiscreteGpu,
            ..caps
        };
        assert_eq!(gpu.coop_by_default(), Some(8));
    }

    /// The matrix-tile variant: cooperative for f16 storage where the adapter reports an
    /// f16×f16→f32 shape (the edge it reports), never for f32 unless forced, the portable
    /// helpers when forced without cooperative matrices, and only where a shape fits.
    #[test]
    fn cooperative_matrices_only_where_reported() {
        let f16 = auto(1, 8, 2, 512, 512, 128).dtype(DType::F16);
        let f32 = auto(1, 8, 2, 512, 512, 128);
        let mut caps = gpu();
        caps.limits.max_workgroup_storage = 48 * 1024;
        // no cooperative matrices: tiled as before
        assert!(matches!(
            plan(&f16, &caps).unwrap().variant,
            Some(FusedVariant::Tiled { .. })
        ));
        for edge in [16, 8] {
            caps.coop_f16 = Some(edge);
            let v = plan(&f16, &caps).unwrap().variant.unwrap();
            match v {
                FusedVariant::Mma { shape, class } => {
                    assert!(shape.coop && shape.tile == edge, "{shape:?}");
                    assert!(shape.workgroup_bytes(class, 2) <= 48 * 1024);
                    assert!(shape.valid_for(class));
                }
                other => panic!("expected mma, got {other:?}"),
            }
            // f32 storage keeps the tiled variant; decoding keeps the decoding variant
            assert!(matches!(
                plan(&f32, &caps).unwrap().variant,
                Some(FusedVariant::Tiled { .. })
            ));
            // unless it allows reduced precision: f16 operands on cooperative matrices
            let reduced = f32.clone().reduced_precision(true);
            assert!(reduced_precision_applies(&reduced, &caps));
            match plan(&reduced, &caps).unwrap().variant.unwrap() {
                FusedVariant::Mma { shape, .. } => {
                    assert!(shape.coop && shape.half && shape.tile == edge, "{shape:?}")
                }
                other => panic!("expected mma, got {other:?}"),
            }
            assert!(matches!(
                plan(&auto(1, 8, 2, 1, 4096, 128).dtype(DType::F16), &caps)
                    .unwrap()
                    .variant,
                Some(FusedVariant::Decode { .. })
            ));
            // forbidden by the override
            let off = Caps {
                mma: Some(false),
                ..caps
            };
            assert!(matches!(
                plan(&f16, &off).unwrap().variant,
                Some(FusedVariant::Tiled { .. })
            ));
        }
        // packed f16 (no SHADER_F16) never multiplies on cooperative matrices, nor does
        // reduced-precision f32 there
        let packed = Caps {
            shader_f16: false,
            ..caps
        };
        assert!(!matches!(
            plan(&f16, &packed).unwrap().variant,
            Some(FusedVariant::Mma { .. })
        ));
        let reduced = f32.clone().reduced_precision(true);
        assert!(!reduced_precision_applies(&reduced, &packed));
        assert!(matches!(
            plan(&reduced, &packed).unwrap().variant,
            Some(FusedVariant::Tiled { .. })
        ));
        // nor without cooperative matrices (the flag changes nothing there)
        assert!(!reduced_precision_applies(&reduced, &gpu()));
        assert_eq!(plan(&reduced, &gpu()).unwrap(), plan(&f32, &gpu()).unwrap());
        // forced without cooperative matrices: portable helpers, f32 tiles for f32
        let forced = Caps {
            mma: Some(true),
            ..cpu(Some(8), true)
        };
        for spec in [&f16, &f32, &auto(1, 2, 1, 100, 70, 64)] {
            match plan(spec, &forced).unwrap().variant.unwrap() {
                FusedVariant::Mma { shape, class } => {
                    assert!(!shape.coop);
                    assert_eq!(shape.half, spec.dtype == crate::spec::DType::F16);
                    let bytes = mma_elem_bytes(shape.half);
                    assert!(shape.workgroup_bytes(class, bytes) <= 32 * 1024);
                }
                other => panic!("expected mma, got {other:?}"),
            }
        }
        // head_dim 256 in f32 does not fit 32 KiB: the other variants run
        let wide = auto(1, 2, 2, 64, 64, 256);
        assert!(matches!(
            plan(&wide, &forced).unwrap().variant,
            Some(FusedVariant::Rows { .. })
        ));
        // the caps' edge comes from the adapter's list
        use wgpu::CooperativeScalarType as T;
        let prop = |m, ab, cr| wgpu::CooperativeMatrixProperties {
            m_size: m,
            n_size: m,
            k_size: m,
            ab_type: ab,
            cr_type: cr,
            saturating_accumulation: false,
        };
        let edge = coop_f16_edge;
        assert_eq!(edge(&[]), None);
        assert_eq!(edge(&[prop(8, T::F32, T::F32)]), None);
        assert_eq!(edge(&[prop(16, T::F16, T::F16)]), None);
        assert_eq!(edge(&[prop(8, T::F16, T::F32)]), Some(8));
        assert_eq!(
            edge(&[prop(8, T::F16, T::F32), prop(16, T::F16, T::F32)]),
            Some(16)
        );
    }

    /// Tuned choices replace the default variant or split count where they can run, are
    /// ignored where they cannot, and never override a forced variant.
    #[test]
    fn tuned_choices_are_used_where_they_fit() {
        let caps = cpu(Some(8), true);
        let spec = auto(1, 8, 2, 512, 512, 64);
        let class = ShapeClass::of(&spec, &caps);
        let untuned = plan(&spec, &caps).unwrap();
        assert!(!untuned.tuned);
        let with = |choice| plan_tuned(&spec, &caps, &Tuning::one(class.clone(), choice)).unwrap();
        let c = with(TunedChoice::Rows { rows: 1, wg: 128 });
        assert!(c.tuned);
        assert!(matches!(
            c.variant,
            Some(FusedVariant::Rows {
                rows: 1,
                wg: 128,
                sharing: KvSharing::Subgroup(8),
                ..
            })
        ));
        let c = with(TunedChoice::Tiled(TILED_DEFAULTS[1]));
        assert!(c.tuned && matches!(c.variant, Some(FusedVariant::Tiled { .. })));
        let mma = TunedChoice::Mma {
            rows: 32,
            keys: 32,
            wg: 128,
            tile: 16,
            coop: false,
        };
        let c = with(mma);
        assert!(c.tuned && matches!(c.variant, Some(FusedVariant::Mma { .. })));
        // explicit split-KV uses the tuned variant too
        let c = plan_tuned(
            &spec.clone().kernel(Kernel::SplitKv),
            &caps,
            &Tuning::one(class.clone(), mma),
        )
        .unwrap();
        assert!(c.tuned && matches!(c.variant, Some(FusedVariant::Mma { .. })));
        // choices that cannot run here are ignored: cooperative matrices the device lacks,
        // a workgroup larger than allowed, subgroup sharing with a workgroup off the size
        for bad in [
            TunedChoice::Mma {
                rows: 32,
                keys: 32,
                wg: 128,
                tile: 16,
                coop: true,
            },
            TunedChoice::Rows { rows: 2, wg: 512 },
            TunedChoice::Rows { rows: 2, wg: 12 },
            TunedChoice::Splits { shift: 1 },
        ] {
            let c = with(bad);
            assert!(!c.tuned, "{bad:?}");
            assert_eq!(c.variant, untuned.variant);
        }
        // another class (f16 storage) is untouched
        let f16 = spec.clone().dtype(DType::F16);
        let c = plan_tuned(
            &f16,
            &caps,
            &Tuning::one(class.clone(), TunedChoice::Tiled(TILED_DEFAULTS[1])),
        )
        .unwrap();
        assert!(!c.tuned);
        // forced variants win over tuned ones
        let forced = Caps {
            tiles: Some(false),
            ..caps
        };
        let c = plan_tuned(
            &spec,
            &forced,
            &Tuning::one(class.clone(), TunedChoice::Tiled(TILED_DEFAULTS[1])),
        )
        .unwrap();
        assert!(!c.tuned && matches!(c.variant, Some(FusedVariant::Rows { .. })));
        // three-pass is never tuned
        let c = plan_tuned(
            &spec.clone().kernel(Kernel::ThreePass),
            &caps,
            &Tuning::one(class, TunedChoice::Tiled(TILED_DEFAULTS[1])),
        )
        .unwrap();
        assert!(!c.tuned && c.variant.is_none());
        // decoding: the split count times 2^shift, within bounds
        let dec = auto(1, 8, 2, 1, 1 << 16, 64);
        let base = plan(&dec, &caps).unwrap();
        let dclass = ShapeClass::of(&dec, &caps);
        for shift in [-2, -1, 1, 2] {
            let c = plan_tuned(
                &dec,
                &caps,
                &Tuning::one(dclass.clone(), TunedChoice::Splits { shift }),
            )
            .unwrap();
            assert!(c.tuned);
            assert_eq!(c.variant, base.variant);
            let want = if shift > 0 {
                base.splits << shift
            } else {
                (base.splits >> -shift).max(1)
            };
            assert_eq!(c.splits, want.min(MAX_SPLITS), "shift {shift}");
        }
    }

    #[test]
    fn caps_describe_the_variants() {
        let text = |c: &Caps| c.variants().join("\n");
        assert!(text(&gpu()).contains("workgroup-tiled"));
        assert!(text(&gpu()).contains("decoding"));
        assert!(text(&gpu()).contains("native f16"));
        assert!(text(&cpu(Some(8), false)).contains("subgroupBroadcast (subgroup size 8)"));
        assert!(text(&gl()).contains("workgroup memory"));
        assert!(text(&gl()).contains("packed"));
        assert!(!text(&gl()).contains("decoding"));
        assert!(!text(&gpu()).contains("matrix-tile"));
        let coop = Caps {
            coop_f16: Some(16),
            ..gpu()
        };
        assert!(text(&coop).contains("cooperative matrices (16×16×16 f16×f16→f32)"));
        let forced = Caps {
            mma: Some(true),
            ..gl()
        };
        assert!(text(&forced).contains("portable tile multiplies"));
    }
}
