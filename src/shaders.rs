//! WGSL templates from `shaders/` and the small template step that specialises them.
//!
//! A template is plain WGSL plus directive lines: `#include "file.wgsl"`, `#define FLAG`,
//! `#if NAME` / `#if !NAME`, `#else`, `#endif`, and `#for VAR in A..B` … `#endfor`, which
//! repeats its body with `{VAR}` replaced by A, A+1, …, B−1 (A and B are integers or constant
//! names), or `#for VAR in q,k,v` over words; `{VAR}` is replaced in directive lines too. Unrolling with `#for` keeps per-invocation vectors in registers: compilers such as
//! Mesa's llvmpipe turn loops over private arrays into per-lane memory gathers. A
//! [`ShaderVariant`] names the template, the flags that are set and the `u32` constants to
//! prepend as `const NAME: u32 = V;`. Every variant the crate can generate is listed by
//! [`all_variants`], so tests can validate (and translate) each one without a GPU.

use crate::error::{Error, Result};

/// The template files, embedded at build time.
const TEMPLATES: &[(&str, &str)] = &[
    ("common.wgsl", include_str!("../shaders/common.wgsl")),
    ("visible.wgsl", include_str!("../shaders/visible.wgsl")),
    ("qk.wgsl", include_str!("../shaders/qk.wgsl")),
    ("softmax.wgsl", include_str!("../shaders/softmax.wgsl")),
    ("pv.wgsl", include_str!("../shaders/pv.wgsl")),
    ("rows.wgsl", include_str!("../shaders/rows.wgsl")),
    ("elem.wgsl", include_str!("../shaders/elem.wgsl")),
    ("score.wgsl", include_str!("../shaders/score.wgsl")),
    ("pack.wgsl", include_str!("../shaders/pack.wgsl")),
    ("out.wgsl", include_str!("../shaders/out.wgsl")),
    ("flash.wgsl", include_str!("../shaders/flash.wgsl")),
    (
        "flash_tiled.wgsl",
        include_str!("../shaders/flash_tiled.wgsl"),
    ),
    ("combine.wgsl", include_str!("../shaders/combine.wgsl")),
    ("decode.wgsl", include_str!("../shaders/decode.wgsl")),
    ("fused.wgsl", include_str!("../shaders/fused.wgsl")),
    (
        "backward_common.wgsl",
        include_str!("../shaders/backward_common.wgsl"),
    ),
    (
        "backward_prep.wgsl",
        include_str!("../shaders/backward_prep.wgsl"),
    ),
    (
        "backward_dq.wgsl",
        include_str!("../shaders/backward_dq.wgsl"),
    ),
    (
        "backward_dkv.wgsl",
        include_str!("../shaders/backward_dkv.wgsl"),
    ),
    (
        "backward_dbias.wgsl",
        include_str!("../shaders/backward_dbias.wgsl"),
    ),
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
        expand(self.template, self, &mut out, 0).map_err(|message| Error::Shader {
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
fn expand(
    name: &str,
    variant: &ShaderVariant,
    out: &mut String,
    depth: usize,
) -> Result<(), String> {
    if depth > 8 {
        return Err(format!("#include nested too deeply at {name}"));
    }
    let text = template(name).ok_or_else(|| format!("no template named {name}"))?;
    let lines: Vec<(usize, &str)> = text.lines().enumerate().map(|(n, l)| (n + 1, l)).collect();
    let mut state = State {
        flags: variant.flags.iter().map(|f| f.to_string()).collect(),
        loops: Vec::new(),
    };
    block(name, &lines, variant, &mut state, out, depth)
}

/// Expansion state: the flags set so far (the variant's and `#define`d ones) and the values
/// of the enclosing `#for` loops.
struct State {
    flags: Vec<String>,
    loops: Vec<(String, String)>,
}

/// The value of a `#for` bound: an integer or the name of a constant of the variant.
fn bound(word: &str, variant: &ShaderVariant) -> Option<u32> {
    word.parse().ok().or_else(|| {
        variant
            .consts
            .iter()
            .find(|(n, _)| *n == word)
            .map(|(_, v)| *v)
    })
}

/// Index of the line closing the block opened at `lines[start]`, counting nested blocks
/// of the same kind (`#if`…`#endif` or `#for`…`#endfor`).
fn closing(lines: &[(usize, &str)], start: usize, open: &str, close: &str) -> Option<usize> {
    let mut depth = 0;
    for (k, (_, l)) in lines.iter().enumerate().skip(start) {
        let t = l.trim();
        if t.starts_with(open) {
            depth += 1;
        } else if t == close {
            depth -= 1;
            if depth == 0 {
                return Some(k);
            }
        }
    }
    None
}

/// Emits `lines`, resolving `#if`/`#else`/`#endif`, `#for`/`#endfor` (body repeated with
/// `{var}` replaced by each value), `#define FLAG` and `#include`.
fn block(
    name: &str,
    lines: &[(usize, &str)],
    variant: &ShaderVariant,
    state: &mut State,
    out: &mut String,
    depth: usize,
) -> Result<(), String> {
    let mut k = 0;
    while k < lines.len() {
        let (n, raw) = lines[k];
        let mut subst = raw.to_string();
        for (var, value) in state.loops.iter() {
            subst = subst.replace(&format!("{{{var}}}"), value);
        }
        let line = subst.as_str();
        let t = line.trim();
        let at = || format!("{name}:{n}");
        if let Some(rest) = t.strip_prefix("#if ") {
            let end = closing(lines, k, "#if ", "#endif")
                .ok_or_else(|| format!("{}: #if without #endif", at()))?;
            let rest = rest.trim();
            let (neg, flag) = match rest.strip_prefix('!') {
                Some(f) => (true, f.trim()),
                None => (false, rest),
            };
            let on = state.flags.iter().any(|f| f == flag) != neg;
            // Find this level's #else, skipping nested #if blocks.
            let mut split = end;
            let mut j = k + 1;
            while j < end {
                let tj = lines[j].1.trim();
                if tj.starts_with("#if ") {
                    j = closing(lines, j, "#if ", "#endif").unwrap_or(end);
                } else if tj == "#else" {
                    split = j;
                    break;
                }
                j += 1;
            }
            let (lo, hi) = if on {
                (k + 1, split)
            } else {
                ((split + 1).min(end), end)
            };
            block(name, &lines[lo..hi], variant, state, out, depth)?;
            k = end + 1;
        } else if let Some(rest) = t.strip_prefix("#for ") {
            let end = closing(lines, k, "#for ", "#endfor")
                .ok_or_else(|| format!("{}: #for without #endfor", at()))?;
            let (var, range) = rest
                .split_once(" in ")
                .ok_or_else(|| format!("{}: expected `#for NAME in A..B` or `in a,b,c`", at()))?;
            let values: Vec<String> = match range.trim().split_once("..") {
                Some((a, b)) => match (bound(a.trim(), variant), bound(b.trim(), variant)) {
                    (Some(a), Some(b)) => (a..b).map(|v| v.to_string()).collect(),
                    _ => return Err(format!("{}: unknown bound in {range}", at())),
                },
                None => range.split(',').map(|w| w.trim().to_string()).collect(),
            };
            for value in values {
                state.loops.push((var.trim().to_string(), value));
                block(name, &lines[k + 1..end], variant, state, out, depth)?;
                state.loops.pop();
            }
            k = end + 1;
        } else if let Some(rest) = t.strip_prefix("#include ") {
            let file = rest.trim().trim_matches('"');
            let text =
                template(file).ok_or_else(|| format!("{}: no template named {file}", at()))?;
            if depth > 8 {
                return Err(format!("{}: #include nested too deeply", at()));
            }
            let inner: Vec<(usize, &str)> =
                text.lines().enumerate().map(|(n, l)| (n + 1, l)).collect();
            block(file, &inner, variant, state, out, depth + 1)?;
            k += 1;
        } else if let Some(flag) = t.strip_prefix("#define ") {
            state.flags.push(flag.trim().to_string());
            k += 1;
        } else if t.starts_with('#') {
            return Err(format!("{}: unexpected directive {t}", at()));
        } else {
            out.push_str(line);
            out.push('\n');
            k += 1;
        }
    }
    Ok(())
}

/// Every shader variant wgattn can generate (for validation and translation tests).
pub fn all_variants() -> Vec<ShaderVariant> {
    let mut all = crate::kernels::three_pass::variants();
    all.extend(crate::kernels::flash::variants());
    all.extend(crate::backward::variants());
    all.sort();
    all.dedup();
    all
}
