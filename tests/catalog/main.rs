//! Every shader variant of the catalog (`wgattn::shaders::all_variants`: the fused variants
//! derived from what the planner can choose on every class of device, and the fixed ones)
//! validates with naga, uses exactly the bindings it carries, and translates to SPIR-V, MSL,
//! HLSL and GLSL ES 3.1 where wgpu may select it — no GPU needed. About 9,000 variants of
//! 85 KB each (the templates unroll their per-row loops): a few minutes on two cores, so this
//! binary is left out of `cargo test` (`test = false` in Cargo.toml; the `it` binary checks one
//! variant of every template and flag set) and CI runs it: `cargo test --test catalog`.

#[path = "../it/common.rs"]
mod common;
#[path = "../it/naga_check.rs"]
mod naga_check;

use wgattn::shaders;

#[test]
fn every_variant_validates_and_translates_to_every_backend() {
    let variants = shaders::all_variants();
    assert!(
        variants.len() > 2000,
        "expected the full variant list, got {}",
        variants.len()
    );
    let failures = naga_check::check_all(&variants);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{} variants validated and translated", variants.len());
}
