//! The shader variants the crate can generate (the fused variants derived from what the
//! planner can choose on every class of device) validate with naga, use exactly the
//! bindings their variant carries (what its pipeline layout holds), and translate to SPIR-V
//! (Vulkan), MSL (Metal), HLSL (DX12) and GLSL ES 3.1 (GL), as wgpu does on each platform —
//! no GPU needed. Variants a back end cannot express (f16 and subgroups in GLSL) are ones the
//! crate never selects there: wgpu's GL backend exposes neither SHADER_F16 nor SUBGROUP, and
//! the planner only uses them when the device has them (tests/it/gl.rs checks that on the
//! GL adapter). Here: one variant of every template and flag set, and every matrix-tile
//! variant; every variant of the catalog in the `catalog` test binary (tests/catalog).

use crate::common;
use crate::naga_check::{Backend, check_all};
use naga::back::{msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use wgattn::shaders::{self, Flag, ShaderVariant};

/// One variant of every template and flag set of the catalog (the first listed; its other
/// variants differ only in constants such as head_dim, rows or tile sizes, i.e. the same
/// template code with other loop bounds) validates and translates to every back end. The
/// whole catalog — every variant — is checked by the `catalog` test binary
/// (`cargo test --test catalog`, run by CI).
#[test]
fn every_template_and_flag_set_validates_and_translates_to_every_backend() {
    let variants = shaders::all_variants();
    assert!(
        variants.len() > 2000,
        "expected the full variant list, got {}",
        variants.len()
    );
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<ShaderVariant> = variants
        .iter()
        .filter(|v| {
            let mut flags = v.flags.clone();
            flags.sort();
            seen.insert((v.template, flags))
        })
        .cloned()
        .collect();
    // every template is there, and several flag sets of the fused ones
    let templates: std::collections::HashSet<_> = variants.iter().map(|v| v.template).collect();
    assert_eq!(
        firsts
            .iter()
            .map(|v| v.template)
            .collect::<std::collections::HashSet<_>>(),
        templates
    );
    assert!(firsts.len() >= 100, "{} flag sets", firsts.len());
    let failures = check_all(&firsts);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The matrix-tile variants (`fused/mma.wgsl`): cooperative-matrix ones for both tile edges
/// and the portable ones, each storage and modifier set, split or not, validate and translate
/// to SPIR-V and MSL (the back ends with cooperative matrices); the portable ones to HLSL and
/// GLSL too. The cooperative ones use the matrix operations, the portable ones do not.
#[test]
fn matrix_tile_variants_validate_and_translate() {
    let all = shaders::all_variants();
    // no variant is listed twice under another spelling (a flag set twice)
    for v in &all {
        let mut flags = v.flags.clone();
        flags.sort();
        flags.dedup();
        assert_eq!(flags.len(), v.flags.len(), "{}", v.key());
    }
    let mma: Vec<ShaderVariant> = all
        .into_iter()
        .filter(|v| v.template == "fused/mma.wgsl")
        .collect();
    let coop = |edge: u32| {
        mma.iter()
            .filter(|v| v.has(Flag::COOP) && v.consts.contains(&("MT", edge)))
            .count()
    };
    assert!(coop(8) >= 20 && coop(16) >= 20, "{} {}", coop(8), coop(16));
    let portable: Vec<&ShaderVariant> = mma.iter().filter(|v| !v.has(Flag::COOP)).collect();
    assert!(portable.len() >= 40, "{}", portable.len());
    for flag in [Flag::SPLIT, Flag::MODS, Flag::PACKED, Flag::F16] {
        assert!(portable.iter().any(|v| v.has(flag)), "{flag:?}");
        assert!(
            flag == Flag::PACKED || mma.iter().any(|v| v.has(Flag::COOP) && v.has(flag)),
            "coop {flag:?}"
        );
    }
    let failures = check_all(&mma);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for v in &mma {
        let src = v.render().unwrap();
        let (module, info) = common::validate_wgsl(&src).unwrap();
        let uses_coop = module
            .types
            .iter()
            .any(|(_, t)| matches!(t.inner, naga::TypeInner::CooperativeMatrix { .. }));
        assert_eq!(uses_coop, v.has(Flag::COOP), "{}", v.key());
        if uses_coop {
            let msl_text = {
                let options = msl::Options {
                    lang_version: (2, 4),
                    ..Default::default()
                };
                let pipeline = msl::PipelineOptions {
                    entry_point: Some((naga::ShaderStage::Compute, "main".into())),
                    ..Default::default()
                };
                msl::write_string(&module, &info, &options, &pipeline)
                    .unwrap()
                    .0
            };
            assert!(
                msl_text.contains("simdgroup_multiply_accumulate"),
                "{}",
                v.key()
            );
            let words = spv::write_vec(
                &module,
                &info,
                &spv::Options {
                    lang_version: (1, 3),
                    ..Default::default()
                },
                None,
            )
            .unwrap();
            // OpCooperativeMatrixMulAddKHR = 4459
            assert!(
                words.iter().any(|w| w & 0xffff == 4459),
                "no OpCooperativeMatrixMulAddKHR in {}",
                v.key()
            );
        }
    }
}

/// The variants the crate keeps off GLSL really cannot be written there: f16 storage and
/// f16 operands (TE16, without f16 storage) fail.
#[test]
fn f16_variants_do_not_translate_to_glsl() {
    for flag in [Flag::F16, Flag::TE16] {
        let v = shaders::all_variants()
            .into_iter()
            .find(|v| v.has(flag) && !v.has(Flag::COOP))
            .expect("an f16 variant");
        let src = v.render().unwrap();
        let (module, info) = common::validate_wgsl(&src).unwrap();
        assert!(Backend::Glsl.translate(&module, &info).is_err(), "{flag:?}");
        assert!(Backend::SpirV.translate(&module, &info).is_ok(), "{flag:?}");
    }
}

#[test]
fn template_errors_are_reported_not_panics() {
    let v = ShaderVariant::new("fused/no_such_template.wgsl");
    assert!(v.render().is_err());
    // Every variant validates with exactly the capabilities it needs.
    let caps = Capabilities::SHADER_FLOAT16 | Capabilities::SUBGROUP;
    let v = shaders::all_variants().into_iter().next().unwrap();
    let module = naga::front::wgsl::parse_str(&v.render().unwrap()).unwrap();
    assert!(
        Validator::new(ValidationFlags::all(), caps)
            .validate(&module)
            .is_ok()
    );
}
