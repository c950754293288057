//! The naga check of shader variants shared by the `it` and `catalog` test binaries: each
//! variant renders, validates, uses exactly the bindings it carries (what its pipeline layout
//! holds), and translates to the back ends wgpu may select it on.
#![allow(dead_code)]

use crate::common;
use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::ModuleInfo;
use wgattn::shaders::{Flag, ShaderVariant};

/// What one back end can express.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    SpirV,
    Msl,
    Hlsl,
    Glsl,
}

impl Backend {
    /// True when the crate may select `v` on this back end.
    pub fn selectable(self, v: &ShaderVariant) -> bool {
        match self {
            Backend::Glsl => !v
                .flags
                .iter()
                .any(|f| matches!(f, Flag::F16 | Flag::TE16 | Flag::SUBGROUPS | Flag::COOP)),
            // wgpu exposes cooperative matrices on Vulkan and Metal only
            Backend::Hlsl => !v.has(Flag::COOP),
            _ => true,
        }
    }

    pub fn translate(self, module: &naga::Module, info: &ModuleInfo) -> Result<usize, String> {
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

pub const BACKENDS: [Backend; 4] = [Backend::SpirV, Backend::Msl, Backend::Hlsl, Backend::Glsl];

/// Validates and translates `variants` on all cores; returns the failures.
pub fn check_all(variants: &[ShaderVariant]) -> Vec<String> {
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
                        // the bindings `main` uses are the ones the variant carries, the
                        // uniform at Params
                        let main = module
                            .entry_points
                            .iter()
                            .position(|e| e.name == "main")
                            .expect("main");
                        let used = info.get_entry_point(main);
                        let mut declared: Vec<(u32, bool)> = module
                            .global_variables
                            .iter()
                            .filter(|(h, _)| !used[*h].is_empty())
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
                            .bindings
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
