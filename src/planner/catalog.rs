//! The catalog: every shader variant the crate can generate ([`all_variants`], validated and
//! translated by naga in the GPU-free tests), every fused variant the planner can choose on a
//! device ([`fused_variants`]), and the flags every attention kernel takes from its spec.

use super::{
    Caps, FusedVariant, HeadClass, Storage, backward, candidates, decode_variant, fused, layer,
    mma_default_shape, mma_wanted, rows_variant, three_pass,
};
use crate::shader::{Binding, Flag, ShaderVariant};
use crate::spec::{AttentionSpec, DType};

/// A kernel family: its folder under `shaders/` and the variants it can generate.
type Family = (&'static str, fn() -> Vec<ShaderVariant>);

/// The kernel families: adding a family is adding its planner module, its launcher, its
/// folder under `shaders/` and a line here.
const FAMILIES: &[Family] = &[
    ("three_pass", three_pass::variants),
    ("fused", fused::variants),
    ("backward", backward::variants),
    ("layer", layer::variants),
    ("common", || vec![pack_shader()]),
];

/// Every shader variant wgattn can generate (for validation and translation tests), sorted.
pub fn all_variants() -> Vec<ShaderVariant> {
    let mut all: Vec<ShaderVariant> = FAMILIES.iter().flat_map(|(_, list)| list()).collect();
    all.sort();
    all.dedup();
    all
}

/// The f32 → packed-f16 pass (`common/pack_f16.wgsl`) of [`Storage::Packed`].
pub(crate) fn pack_shader() -> ShaderVariant {
    ShaderVariant::new("common/pack_f16.wgsl").bind([
        Binding::Params,
        Binding::Out,
        Binding::Scratch,
    ])
}

/// Adds the flags every attention kernel reads from its spec: storage format and score
/// modifiers.
pub(crate) fn common_flags(
    v: ShaderVariant,
    spec: &AttentionSpec,
    storage: Storage,
) -> ShaderVariant {
    modifier_flags(storage_flags(v, storage), spec)
}

/// Adds the storage flags (f16 arrays, packed f16).
pub(crate) fn storage_flags(v: ShaderVariant, storage: Storage) -> ShaderVariant {
    v.flag(Flag::F16, storage == Storage::F16)
        .flag(Flag::PACKED, storage == Storage::Packed)
}

/// Adds the score-modifier flags of `spec` (bias, mask, soft-cap, ALiBi).
pub(crate) fn modifier_flags(v: ShaderVariant, spec: &AttentionSpec) -> ShaderVariant {
    v.flag(Flag::BIAS, spec.bias.is_some())
        .flag(Flag::MASK, spec.mask.is_some())
        .flag(Flag::SOFTCAP, spec.softcap.is_some())
        .flag(Flag::ALIBI, spec.alibi.is_some())
}

/// Every combination of the common flags (for the lists of variants).
pub(crate) fn all_flag_sets() -> Vec<Vec<Flag>> {
    let mut sets = Vec::new();
    for storage in [None, Some(Flag::F16), Some(Flag::PACKED)] {
        for mods in 0..16u32 {
            let mut f: Vec<Flag> = storage.into_iter().collect();
            for (bit, flag) in [Flag::BIAS, Flag::MASK, Flag::SOFTCAP, Flag::ALIBI]
                .iter()
                .enumerate()
            {
                if mods & (1 << bit) != 0 {
                    f.push(*flag);
                }
            }
            sets.push(f);
        }
    }
    sets
}

/// Every fused variant the planner can choose on a device with `caps`, for every head_dim
/// class and query-row count (the rows choice depends on rows only below 256).
pub fn fused_variants(caps: &Caps) -> Vec<FusedVariant> {
    let mut out = Vec::new();
    for d16 in 1..=16 {
        for vec4 in [false, true] {
            let class = HeadClass { d16, vec4 };
            for rows in 1..=512 {
                out.push(rows_variant(class, rows, caps));
                out.extend(decode_variant(class, rows, caps));
            }
            // f32 operands (f32 storage, f16 packed in u32) and f16 ones (f16 storage, or
            // f32 with reduced precision)
            for half in [false, true] {
                let wanted = mma_wanted(caps, half);
                if let Some(shape) = mma_default_shape(class, half, caps).filter(|_| wanted) {
                    out.push(FusedVariant::Mma { class, shape });
                }
            }
            // what a tuned choice can select (`wgattn tune`'s candidates)
            for dtype in [DType::F32, DType::F16] {
                let head_dim = class.d16 as usize * 16 - usize::from(!class.vec4);
                let spec = AttentionSpec::new(1, 1, 1, 64, 64, head_dim).dtype(dtype);
                if HeadClass::of(&spec, caps) != class {
                    continue;
                }
                out.extend(
                    candidates(&spec, caps)
                        .iter()
                        .filter_map(|c| c.variant(&spec, caps)),
                );
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry template of `shaders/` is compiled by some variant of the catalog.
    #[test]
    fn every_entry_template_is_used() {
        let all = all_variants();
        for (name, _) in crate::shader::templates() {
            if name.ends_with(crate::shader::INCLUDE_SUFFIX) || !name.contains('/') {
                continue;
            }
            assert!(
                all.iter().any(|v| v.template == *name),
                "{name} is in no variant"
            );
        }
        let families: std::collections::BTreeSet<&str> = all
            .iter()
            .filter_map(|v| v.template.split('/').next())
            .collect();
        let listed: std::collections::BTreeSet<&str> = FAMILIES.iter().map(|(f, _)| *f).collect();
        assert_eq!(families, listed);
    }

    /// The rendered size of every variant stays under a budget: unrolling with `#for` is
    /// what makes shaders big, and compile time grows with it.
    #[test]
    fn rendered_size_stays_within_budget() {
        /// Lines of the largest rendered variant allowed.
        const LINE_BUDGET: usize = 50_000;
        let variants = all_variants();
        let (lines, key) = variants
            .iter()
            .map(|v| (v.render_mapped().expect("renders").lines(), v.key()))
            .max()
            .expect("variants");
        println!(
            "largest of {} variants: {key} renders to {lines} lines (budget {LINE_BUDGET})",
            variants.len()
        );
        assert!(lines < LINE_BUDGET, "{key} renders to {lines} lines");
        assert!(lines > 1000, "the largest variant unrolls: {lines} lines");
    }
}
