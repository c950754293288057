//! Every shader variant the crate can generate parses and validates with naga (no GPU needed).

#[test]
fn every_variant_validates_with_naga() {
    let variants = wgattn::shaders::all_variants();
    assert!(
        variants.len() >= 6,
        "expected several variants, got {}",
        variants.len()
    );
    let mut failures = Vec::new();
    for v in &variants {
        let src = v.render().expect("template renders");
        if let Err(e) = wgattn::shaders::validate_wgsl(&src) {
            failures.push(format!("{}:\n{e}", v.key()));
        }
    }
    assert!(
        failures.is_empty(),
        "naga rejected:\n{}",
        failures.join("\n")
    );
}

#[test]
fn template_errors_are_reported_not_panics() {
    let v = wgattn::shaders::ShaderVariant::new("no_such_template.wgsl");
    assert!(v.render().is_err());
}
