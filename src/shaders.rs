//! WGSL templates from `shaders/` and the small template step that specialises them.
//!
//! A template is plain WGSL plus three kinds of directive lines:
//! `#include "file.wgsl"`, `#if NAME` / `#if !NAME`, `#else`, `#endif`. A [`ShaderVariant`]
//! names the template, the flags that are set and the `u32` constants to prepend as
//! `const NAME: u32 = V;`. Every variant the crate can generate is listed by
//! [`all_variants`], so tests can validate (and translate) each one without a GPU.

use crate::error::{Error, Result};

/// The template files, embedded at build time.
const TEMPLATES: &[(&str, &str)] = &[
    ("common.wgsl", include_str!("../shaders/common.wgsl")),
    ("visible.wgsl", include_str!("../shaders/visible.wgsl")),
    ("qk.wgsl", include_str!("../shaders/qk.wgsl")),
    ("softmax.wgsl", include_str!("../shaders/softmax.wgsl")),
    ("pv.wgsl", include_str!("../shaders/pv.wgsl")),
];

/// One specialisation of a template: the unit that is compiled into a pipeline and cached.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShaderVariant {
    /// Template file name in `shaders/`.
    pub template: &'static str,
    /// `u32` constants prepended to the source.
    pub consts: Vec<(&'static str, u32)>,
    /// Flags that are set for `#if`.
    pub flags: Vec<&'static str>,
}

impl ShaderVariant {
    /// A variant of `template` with no constants or flags yet.
    pub fn new(template: &'static str) -> Self {
        ShaderVariant {
            template,
            consts: Vec::new(),
            flags: Vec::new(),
        }
    }

    /// Adds a constant.
    pub fn constant(mut self, name: &'static str, value: u32) -> Self {
        self.consts.push((name, value));
        self
    }

    /// Sets a flag when `on`.
    pub fn flag(mut self, name: &'static str, on: bool) -> Self {
        if on {
            self.flags.push(name);
        }
        self
    }

    /// A readable unique name, e.g. `qk.wgsl[WG_X=16,WG_Y=16,TK=16]`.
    pub fn key(&self) -> String {
        let mut parts: Vec<String> = self
            .consts
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        parts.extend(self.flags.iter().map(|f| f.to_string()));
        format!("{}[{}]", self.template, parts.join(","))
    }

    /// The specialised WGSL source.
    pub fn render(&self) -> Result<String> {
        let mut out = String::new();
        if self.flags.contains(&"F16") {
            out.push_str("enable f16;\n");
        }
        for (name, value) in &self.consts {
            out.push_str(&format!("const {name}: u32 = {value}u;\n"));
        }
        expand(self.template, &self.flags, &mut out, 0).map_err(|message| Error::Shader {
            shader: self.key(),
            message,
        })?;
        Ok(out)
    }
}

fn template(name: &str) -> Option<&'static str> {
    TEMPLATES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Appends template `name` to `out`, resolving directives.
fn expand(name: &str, flags: &[&str], out: &mut String, depth: usize) -> Result<(), String> {
    if depth > 8 {
        return Err(format!("#include nested too deeply at {name}"));
    }
    let text = template(name).ok_or_else(|| format!("no template named {name}"))?;
    // Stack of (this block emits, some branch of it already taken).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let active = |stack: &[(bool, bool)]| stack.iter().all(|&(on, _)| on);
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        let at = || format!("{name}:{}", n + 1);
        if let Some(rest) = t.strip_prefix("#if ") {
            let rest = rest.trim();
            let (neg, flag) = match rest.strip_prefix('!') {
                Some(f) => (true, f.trim()),
                None => (false, rest),
            };
            let on = flags.contains(&flag) != neg;
            stack.push((on, on));
        } else if t == "#else" {
            let top = stack
                .last_mut()
                .ok_or_else(|| format!("{}: #else without #if", at()))?;
            *top = (!top.1, true);
        } else if t == "#endif" {
            stack
                .pop()
                .ok_or_else(|| format!("{}: #endif without #if", at()))?;
        } else if let Some(rest) = t.strip_prefix("#include ") {
            if active(&stack) {
                expand(rest.trim().trim_matches('"'), flags, out, depth + 1)?;
            }
        } else if t.starts_with('#') {
            return Err(format!("{}: unknown directive {t}", at()));
        } else if active(&stack) {
            out.push_str(line);
            out.push('\n');
        }
    }
    if stack.is_empty() {
        Ok(())
    } else {
        Err(format!("{name}: #if without #endif"))
    }
}

/// Every shader variant wgattn can generate (for validation and translation tests).
pub fn all_variants() -> Vec<ShaderVariant> {
    let mut all = crate::kernels::three_pass::variants();
    all.sort();
    all.dedup();
    all
}

/// Parses and validates WGSL with naga, as wgpu does before handing it to a back end.
/// Returns the module and its validation info.
pub fn validate_wgsl(source: &str) -> Result<(naga::Module, naga::valid::ModuleInfo), String> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| e.emit_to_string(source))?;
    Ok((module, info))
}
