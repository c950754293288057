//! Every shader variant the crate can generate (the fused variants derived from what the
//! planner can choose on every class of device) validates with naga, declares exactly the
//! bindings of the crate's binding table, and translates to SPIR-V
//! (Vulkan), MSL (Metal), HLSL (DX12) and GLSL ES 3.1 (GL), as wgpu does on each platform —
//! no GPU needed. Variants a back end cannot express (f16 and subgroups in GLSL) are ones the
//! crate never selects there: wgpu's GL backend exposes neither SHADER_F16 nor SUBGROUP, and
//! the planner only uses them when the device has them (tests/it/gl.rs checks that on the
//! GL adapter).

use crate::common;
use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};
use wgattn::shaders::{self, ShaderVariant};

/// What one back end can express.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    SpirV,
    Msl,
    Hlsl,
    Glsl,
}

impl Backend {
    /// True when the crate may select `v` on this back end.
    fn selectable(self, v: &ShaderVariant) -> bool {
        match self {
            Backend::Glsl => !v
                .flags
                .iter()
                .any(|f| matches!(*f, "F16" | "TE16" | "SUBGROUPS" | "COOP")),
            // wgpu exposes cooperative matrices on Vulkan and Metal only
            Backend::Hlsl => !v.flags.contains(&"COOP"),
            _ => true,
        }
    }

    fn translate(self, module: &naga::Module, info: &ModuleInfo) -> Result<usize, String> {
        match self {
            Backend::SpirV => {
                let options = spv::Options {
                    lang_version: (1, 3),
                    ..Default::default()
                };
                spv::write_vec(module, info, &options, None)
                    .map(|w| w.len() * 4)
                    .map_err(|e| e.to_string())
            }
            Backend::Msl => {
                let options = msl::Options {
                    lang_version: (2, 4),
                    ..Default::default()
                };
                let pipeline = msl::PipelineOptions {
                    entry_point: Some((naga::ShaderStage::Compute, "main".into())),
                    ..Default::default()
                };
                msl::write_string(module, info, &options, &pipeline)
                    .map(|(s, _)| s.len())
                    .map_err(|e| e.to_string())
            }
            Backend::Hlsl => {
                let options = hlsl::Options {
                    shader_model: hlsl::ShaderModel::V6_2,
                    ..Default::default()
                };
                let pipeline = hlsl::PipelineOptions::default();
                let mut out = String::new();
                hlsl::Writer::new(&mut out, &options, &pipeline)
                    .write(module, info, None)
                    .map(|_| out.len())
                    .map_err(|e| e.to_string())
            }
            Backend::Glsl => {
                // wgpu's GL backend assigns GL binding slots per resource; do the same.
                let mut binding_map = glsl::BindingMap::default();
                let mut slot = 0u8;
                for (_, var) in module.global_variables.iter() {
                    if let Some(rb) = var.binding {
                        binding_map.insert(rb, slot);
                        slot += 1;
                    }
                }
                let options = glsl::Options {
                    version: glsl::Version::new_gles(310),
                    binding_map,
                    ..Default::default()
                };
                let pipeline = glsl::PipelineOptions {
                    shader_stage: naga::ShaderStage::Compute,
                    entry_point: "main".into(),
                    multiview: None,
                };
                let mut out = String::new();
                glsl::Writer::new(
                    &mut out,
                    module,
                    info,
                    &options,
                    &pipeline,
                    naga::proc::BoundsCheckPolicies::default(),
                )
                .and_then(|mut w| w.write())
                .map(|_| out.len())
                .map_err(|e| e.to_string())
            }
        }
    }
}

const BACKENDS: [Backend; 4] = [Backend::SpirV, Backend::Msl, Backend::Hlsl, Backend::Glsl];

/// Validates and translates `variants` on all cores; returns the failures.
fn check_all(variants: &[ShaderVariant]) -> Vec<String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = variants.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = variants
            .chunks(per)
            .map(|chunk| {
                s.spawn(move || {
                    let mut failures = Vec::new();
                    for v in chunk {
                        let rendered = match v.render_mapped() {
                            Ok(s) => s,
                            Err(e) => {
                                failures.push(format!("{}: {e}", v.key()));
                                continue;
                            }
                        };
                        let (module, info) = match common::validate_rendered(&rendered) {
                            Ok(x) => x,
                            Err(e) => {
                                failures.push(format!("{} (naga validation):\n{e}", v.key()));
                                continue;
                            }
                        };
                        // the bindings are the Rust table's, the uniform at Params
                        let mut declared: Vec<(u32, bool)> = module
                            .global_variables
                            .iter()
                            .filter_map(|(_, g)| {
                                let rb = g.binding.as_ref()?;
                                Some((
                                    rb.group * 1000 + rb.binding,
                                    g.space == naga::AddressSpace::Uniform,
                                ))
                            })
                            .collect();
                        declared.sort();
                        let table: Vec<(u32, bool)> = v
                            .bindings()
                            .iter()
                            .map(|b| (b.index(), !b.is_storage()))
                            .collect();
                        if declared != table {
                            failures.push(format!(
                                "{}: bindings {declared:?}, table {table:?}",
                                v.key()
                            ));
                        }
                        for b in BACKENDS {
                            if b.selectable(v)
                                && let Err(e) = b.translate(&module, &info)
                            {
                                failures.push(format!("{} ({b:?}): {e}", v.key()));
                            }
                        }
                    }
                    failures
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("checker thread"))
            .collect()
    })
}

#[test]
fn every_variant_validates_and_translates_to_every_backend() {
    let variants = shaders::all_variants();
    assert!(
        variants.len() > 2000,
        "expected the full variant list, got {}",
        variants.len()
    );
    let failures = check_all(&variants);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The matrix-tile variants (`flash_mma.wgsl`): cooperative-matrix ones for both tile edges
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
        .filter(|v| v.template == "flash_mma.wgsl")
        .collect();
    let coop = |edge: u32| {
        mma.iter()
            .filter(|v| v.flags.contains(&"COOP") && v.consts.contains(&("MT", edge)))
            .count()
    };
    assert!(coop(8) >= 20 && coop(16) >= 20, "{} {}", coop(8), coop(16));
    let portable: Vec<&ShaderVariant> = mma.iter().filter(|v| !v.flags.contains(&"COOP")).collect();
    assert!(portable.len() >= 40, "{}", portable.len());
    for flag in ["SPLIT", "MODS", "PACKED", "F16"] {
        assert!(portable.iter().any(|v| v.flags.contains(&flag)), "{flag}");
        assert!(
            flag == "PACKED"
                || mma
                    .iter()
                    .any(|v| v.flags.contains(&"COOP") && v.flags.contains(&flag)),
            "coop {flag}"
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
        assert_eq!(uses_coop, v.flags.contains(&"COOP"), "{}", v.key());
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
    for flag in ["F16", "TE16"] {
        let v = shaders::all_variants()
            .into_iter()
            .find(|v| v.flags.contains(&flag) && !v.flags.contains(&"COOP"))
            .expect("an f16 variant");
        let src = v.render().unwrap();
        let (module, info) = common::validate_wgsl(&src).unwrap();
        assert!(Backend::Glsl.translate(&module, &info).is_err(), "{flag}");
        assert!(Backend::SpirV.translate(&module, &info).is_ok(), "{flag}");
    }
}

#[test]
fn template_errors_are_reported_not_panics() {
    let v = ShaderVariant::new("no_such_template.wgsl");
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
