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
pub use crate::kernels::bindings::Binding;

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
    ("flash_mma.wgsl", include_str!("../shaders/flash_mma.wgsl")),
    ("mma_coop.wgsl", include_str!("../shaders/mma_coop.wgsl")),
    (
        "mma_portable.wgsl",
        include_str!("../shaders/mma_portable.wgsl"),
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
    (
        "layer_linear.wgsl",
        include_str!("../shaders/layer_linear.wgsl"),
    ),
    (
        "layer_norm.wgsl",
        include_str!("../shaders/layer_norm.wgsl"),
    ),
    (
        "layer_gather.wgsl",
        include_str!("../shaders/layer_gather.wgsl"),
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
        if on && !self.flags.contains(&name) {
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
        self.render_mapped().map(|r| r.source)
    }

    /// The specialised WGSL source with its source map (where each line came from).
    pub fn render_mapped(&self) -> Result<Rendered> {
        self.render_from(TEMPLATES)
    }

    /// The bindings this variant's shader declares (its bind group), from the crate's one
    /// binding table.
    pub fn bindings(&self) -> Vec<Binding> {
        crate::kernels::bindings::of_variant(self)
    }

    /// Renders with the templates of `table` (the embedded ones, or a test's).
    fn render_from(&self, table: &[(&'static str, &'static str)]) -> Result<Rendered> {
        let mut out = Rendered::default();
        if self.flags.contains(&"F16") || self.flags.contains(&"TE16") {
            out.push("enable f16;", PRELUDE, 0);
        }
        if self.flags.contains(&"COOP") {
            out.push("enable wgpu_cooperative_matrix;", PRELUDE, 0);
        }
        for (name, value) in &self.consts {
            out.push(&format!("const {name}: u32 = {value}u;"), PRELUDE, 0);
        }
        for line in Binding::wgsl_constants().lines() {
            out.push(line, PRELUDE, 0);
        }
        expand(self.template, self, table, &mut out).map_err(|message| Error::Shader {
            shader: self.key(),
            message,
        })?;
        Ok(out)
    }
}

/// The template name of the lines the template step prepends (f16, constants, bindings).
pub const PRELUDE: &str = "<prelude>";

/// A rendered shader and its source map: for each line of `source`, the template file and
/// line (1-based) it came from; lines prepended by the template step come from [`PRELUDE`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    /// The WGSL source.
    pub source: String,
    /// `(template, line)` of each line of `source`.
    pub origins: Vec<(&'static str, usize)>,
}

impl Rendered {
    fn push(&mut self, line: &str, template: &'static str, n: usize) {
        self.source.push_str(line);
        self.source.push('\n');
        self.origins.push((template, n));
    }

    /// Number of lines.
    pub fn lines(&self) -> usize {
        self.origins.len()
    }

    /// Where rendered line `line` (1-based) came from, as `template:line`.
    pub fn origin(&self, line: usize) -> Option<String> {
        let (t, n) = *self.origins.get(line.checked_sub(1)?)?;
        Some(if t == PRELUDE {
            t.to_string()
        } else {
            format!("{t}:{n}")
        })
    }

    /// `message` (a compiler's diagnostic about `source`) with every `LINE:COLUMN` position
    /// followed by the template position it came from, e.g. `wgsl:41:5 [flash.wgsl:123]`.
    pub fn annotate(&self, message: &str) -> String {
        let mut out = String::with_capacity(message.len());
        let bytes = message.as_bytes();
        let mut k = 0;
        while k < bytes.len() {
            // a position is ':' digits ':' digits, not followed by another digit
            if bytes[k] == b':' {
                let digits = |from: usize| {
                    bytes[from..]
                        .iter()
                        .take_while(|c| c.is_ascii_digit())
                        .count()
                };
                let l = digits(k + 1);
                if l > 0 && bytes.get(k + 1 + l) == Some(&b':') {
                    let c = digits(k + 2 + l);
                    if c > 0 {
                        let end = k + 2 + l + c;
                        let line: usize = message[k + 1..k + 1 + l].parse().unwrap_or(0);
                        out.push_str(&message[k..end]);
                        if let Some(origin) = self.origin(line) {
                            out.push_str(&format!(" [{origin}]"));
                        }
                        k = end;
                        continue;
                    }
                }
            }
            let ch = message[k..].chars().next().unwrap_or(' ');
            out.push(ch);
            k += ch.len_utf8();
        }
        out
    }
}

fn lookup(
    name: &str,
    table: &[(&'static str, &'static str)],
) -> Option<(&'static str, &'static str)> {
    table.iter().find(|(n, _)| *n == name).copied()
}

/// Appends template `name` to `out`, resolving directives.
fn expand(
    name: &str,
    variant: &ShaderVariant,
    templates: &[(&'static str, &'static str)],
    out: &mut Rendered,
) -> Result<(), String> {
    Expander {
        variant,
        templates,
        state: State {
            flags: variant.flags.iter().map(|f| f.to_string()).collect(),
            loops: Vec::new(),
        },
    }
    .file(name, out, 0)
}

/// Most nested `#include`s.
const MAX_INCLUDE_DEPTH: usize = 8;

/// Expansion state: the flags set so far (the variant's and `#define`d ones) and the values
/// of the enclosing `#for` loops.
struct State {
    flags: Vec<String>,
    loops: Vec<(String, String)>,
}

/// The template step over a table of templates (the embedded ones, or a test's).
struct Expander<'a> {
    variant: &'a ShaderVariant,
    templates: &'a [(&'static str, &'static str)],
    state: State,
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

/// The directive of a (trimmed) line: `#if`, `#else`, … and its argument.
fn directive(t: &str) -> Option<(&str, &str)> {
    let rest = t.strip_prefix('#')?;
    let (word, arg) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    Some((word, arg.trim()))
}

/// Index of the line closing the block opened at `lines[start]`, counting nested blocks
/// of the same kind (`if`…`endif` or `for`…`endfor`).
fn closing(lines: &[(usize, &str)], start: usize, open: &str, close: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (k, (_, l)) in lines.iter().enumerate().skip(start) {
        match directive(l.trim()) {
            Some((w, _)) if w == open => depth += 1,
            Some((w, _)) if w == close => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

/// The first `{NAME}` placeholder left in `line` (NAME a WGSL-style identifier).
fn placeholder(line: &str) -> Option<&str> {
    let mut rest = line;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..name_len];
        if name_len > 0
            && after[name_len..].starts_with('}')
            && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        {
            return Some(name);
        }
        rest = after;
    }
    None
}

impl Expander<'_> {
    fn file(&mut self, name: &str, out: &mut Rendered, depth: usize) -> Result<(), String> {
        let (file, text) =
            lookup(name, self.templates).ok_or_else(|| format!("no template named {name}"))?;
        let lines: Vec<(usize, &str)> = text.lines().enumerate().map(|(n, l)| (n + 1, l)).collect();
        self.block(file, &lines, out, depth)
    }

    /// Emits `lines`, resolving `#if`/`#else`/`#endif`, `#for`/`#endfor` (body repeated with
    /// `{var}` replaced by each value), `#define FLAG` and `#include`.
    fn block(
        &mut self,
        name: &'static str,
        lines: &[(usize, &str)],
        out: &mut Rendered,
        depth: usize,
    ) -> Result<(), String> {
        let mut k = 0;
        while k < lines.len() {
            let (n, raw) = lines[k];
            let mut subst = raw.to_string();
            for (var, value) in self.state.loops.iter() {
                subst = subst.replace(&format!("{{{var}}}"), value);
            }
            let line = subst.as_str();
            let at = || format!("{name}:{n}");
            if let Some(p) = placeholder(line) {
                return Err(format!("{}: unknown placeholder {{{p}}}", at()));
            }
            match directive(line.trim()) {
                Some(("if", rest)) => {
                    let end = closing(lines, k, "if", "endif")
                        .ok_or_else(|| format!("{}: #if without #endif", at()))?;
                    let (neg, flag) = match rest.strip_prefix('!') {
                        Some(f) => (true, f.trim()),
                        None => (false, rest),
                    };
                    if flag.is_empty() || flag.contains(char::is_whitespace) {
                        return Err(format!("{}: expected `#if NAME` or `#if !NAME`", at()));
                    }
                    let on = self.state.flags.iter().any(|f| f == flag) != neg;
                    // Find this level's #else, skipping nested #if blocks.
                    let mut split = end;
                    let mut j = k + 1;
                    while j < end {
                        match directive(lines[j].1.trim()) {
                            Some(("if", _)) => {
                                j = closing(lines, j, "if", "endif").unwrap_or(end);
                            }
                            Some(("else", _)) if split != end => {
                                return Err(format!("{name}:{}: second #else", lines[j].0));
                            }
                            Some(("else", _)) => split = j,
                            _ => {}
                        }
                        j += 1;
                    }
                    let (lo, hi) = if on {
                        (k + 1, split)
                    } else {
                        ((split + 1).min(end), end)
                    };
                    self.block(name, &lines[lo..hi], out, depth)?;
                    k = end + 1;
                }
                Some(("for", rest)) => {
                    let end = closing(lines, k, "for", "endfor")
                        .ok_or_else(|| format!("{}: #for without #endfor", at()))?;
                    let (var, range) = rest.split_once(" in ").ok_or_else(|| {
                        format!("{}: expected `#for NAME in A..B` or `in a,b,c`", at())
                    })?;
                    let values: Vec<String> = match range.trim().split_once("..") {
                        Some((a, b)) => {
                            match (bound(a.trim(), self.variant), bound(b.trim(), self.variant)) {
                                (Some(a), Some(b)) => (a..b).map(|v| v.to_string()).collect(),
                                _ => return Err(format!("{}: unknown bound in {range}", at())),
                            }
                        }
                        None => range.split(',').map(|w| w.trim().to_string()).collect(),
                    };
                    for value in values {
                        self.state.loops.push((var.trim().to_string(), value));
                        self.block(name, &lines[k + 1..end], out, depth)?;
                        self.state.loops.pop();
                    }
                    k = end + 1;
                }
                Some(("include", rest)) => {
                    if depth >= MAX_INCLUDE_DEPTH {
                        return Err(format!("{}: #include nested too deeply", at()));
                    }
                    let file = rest.trim_matches('"');
                    self.file(file, out, depth + 1)
                        .map_err(|e| format!("{}: {e}", at()))?;
                    k += 1;
                }
                Some(("define", flag)) => {
                    self.state.flags.push(flag.to_string());
                    k += 1;
                }
                Some((word, _)) => {
                    return Err(format!("{}: unexpected directive #{word}", at()));
                }
                None => {
                    out.push(line, name, n);
                    k += 1;
                }
            }
        }
        Ok(())
    }
}

/// Every shader variant wgattn can generate (for validation and translation tests).
pub fn all_variants() -> Vec<ShaderVariant> {
    let mut all = crate::kernels::three_pass::variants();
    all.extend(crate::kernels::flash::variants());
    all.extend(crate::backward::variants());
    all.extend(crate::layer::kernels::variants());
    all.sort();
    all.dedup();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders `template` of `table` for `variant`'s constants and flags.
    fn render(table: &[(&'static str, &'static str)], variant: ShaderVariant) -> Result<Rendered> {
        variant.render_from(table)
    }

    /// The lines a test template renders to, without the prelude.
    fn body(table: &[(&'static str, &'static str)], variant: ShaderVariant) -> Vec<String> {
        let r = render(table, variant).expect("renders");
        r.source
            .lines()
            .zip(&r.origins)
            .filter(|(_, (t, _))| *t != PRELUDE)
            .map(|(l, _)| l.to_string())
            .collect()
    }

    fn message(e: Error) -> String {
        match e {
            Error::Shader { message, .. } => message,
            e => panic!("expected Error::Shader, got {e:?}"),
        }
    }

    fn fails(table: &[(&'static str, &'static str)], variant: ShaderVariant) -> String {
        message(render(table, variant).expect_err("must fail"))
    }

    /// naga's parse and validation errors of a rendered shader, positions mapped to template
    /// lines (what the naga tests print).
    fn naga_errors(r: &Rendered) -> Option<String> {
        let module = match naga::front::wgsl::parse_str(&r.source) {
            Ok(m) => m,
            Err(e) => return Some(r.annotate(&e.emit_to_string(&r.source))),
        };
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .err()
        .map(|e| r.annotate(&e.emit_to_string(&r.source)))
    }

    #[test]
    fn includes_defines_and_conditions() {
        let table = [
            (
                "main.wgsl",
                "a\n#include \"inc.wgsl\"\n#if INC\nafter include\n#else\nno define\n#endif\nz",
            ),
            ("inc.wgsl", "#define INC\ninside"),
        ];
        assert_eq!(
            body(&table, ShaderVariant::new("main.wgsl")),
            ["a", "inside", "after include", "z"]
        );
    }

    #[test]
    fn if_else_negation_and_nesting() {
        let table = [(
            "t.wgsl",
            "#if A\n a\n#if !B\n  a not b\n#else\n  a and b\n#endif\n#else\n not a\n#if B\n  b\n#endif\n#endif\n#if !A\n neg\n#endif",
        )];
        let run = |a, b| {
            body(
                &table,
                ShaderVariant::new("t.wgsl").flag("A", a).flag("B", b),
            )
        };
        assert_eq!(run(true, false), [" a", "  a not b"]);
        assert_eq!(run(true, true), [" a", "  a and b"]);
        assert_eq!(run(false, true), [" not a", "  b", " neg"]);
        assert_eq!(run(false, false), [" not a", " neg"]);
    }

    #[test]
    fn for_loops_over_ranges_words_and_constants() {
        let table = [(
            "t.wgsl",
            "#for i in 0..3\nx{i}\n#endfor\n#for w in q,k , v\n#if USE_{w}\nuse {w}\n#endif\n#endfor\n#for j in 1..N\n#for c in a,b\ny{j}{c}\n#endfor\n#endfor",
        )];
        let v = ShaderVariant::new("t.wgsl")
            .constant("N", 3)
            .flag("USE_k", true);
        assert_eq!(
            body(&table, v),
            ["x0", "x1", "x2", "use k", "y1a", "y1b", "y2a", "y2b"]
        );
        // an empty range emits nothing
        let v = ShaderVariant::new("t.wgsl").constant("N", 1);
        assert_eq!(body(&table, v), ["x0", "x1", "x2"]);
    }

    #[test]
    fn unknown_placeholders_and_bounds_are_errors() {
        let table = [("t.wgsl", "fn f() {\n  let a = {X};\n}")];
        let e = fails(&table, ShaderVariant::new("t.wgsl"));
        assert!(e.contains("t.wgsl:2") && e.contains("{X}"), "{e}");
        // a loop variable is known only inside its loop
        let table = [("t.wgsl", "#for i in 0..2\n{i}\n#endfor\n{i}")];
        let e = fails(&table, ShaderVariant::new("t.wgsl"));
        assert!(e.contains("t.wgsl:4"), "{e}");
        let table = [("t.wgsl", "#for i in 0..M\n{i}\n#endfor")];
        let e = fails(&table, ShaderVariant::new("t.wgsl"));
        assert!(e.contains("unknown bound"), "{e}");
        // braces that are not placeholders are WGSL
        let table = [("t.wgsl", "fn f() { }\nfn g() {}\nlet s = S{ a };")];
        assert_eq!(body(&table, ShaderVariant::new("t.wgsl")).len(), 3);
    }

    #[test]
    fn unbalanced_directives_are_errors() {
        for (text, expect) in [
            ("#if A\nx", "#if without #endif"),
            ("x\n#endif", "unexpected directive #endif"),
            ("x\n#else", "unexpected directive #else"),
            ("#for i in 0..2\nx", "#for without #endfor"),
            ("#endfor", "unexpected directive #endfor"),
            ("#if A\n#else\n#else\n#endif", "second #else"),
            ("#if A\n#for i in 0..2\n#endif\n#endfor", "#endfor"),
            ("#if\n#endif", "expected `#if NAME`"),
            ("#frobnicate", "unexpected directive #frobnicate"),
            (
                "#include \"missing.wgsl\"",
                "no template named missing.wgsl",
            ),
            ("#include \"t.wgsl\"", "nested too deeply"),
        ] {
            let table = [("t.wgsl", text)];
            let e = fails(&table, ShaderVariant::new("t.wgsl"));
            assert!(e.contains(expect), "{text:?}: {e}");
        }
        assert!(ShaderVariant::new("none.wgsl").render().is_err());
    }

    #[test]
    fn source_map_names_template_lines() {
        let table = [
            (
                "main.wgsl",
                "// main\n#include \"inc.wgsl\"\n#for i in 0..2\nconst C{i}: u32 = {i}u;\n#endfor",
            ),
            ("inc.wgsl", "// inc 1\n#if X\n// inc 3\n#endif"),
        ];
        let r = render(
            &table,
            ShaderVariant::new("main.wgsl")
                .constant("K", 1)
                .flag("X", true),
        )
        .unwrap();
        let prelude = r.origins.iter().take_while(|(t, _)| *t == PRELUDE).count();
        assert_eq!(prelude, 1 + Binding::ALL.len());
        let mapped: Vec<String> = (prelude + 1..=r.lines())
            .filter_map(|l| r.origin(l))
            .collect();
        assert_eq!(
            mapped,
            [
                "main.wgsl:1",
                "inc.wgsl:1",
                "inc.wgsl:3",
                "main.wgsl:4",
                "main.wgsl:4"
            ]
        );
        assert_eq!(r.origin(1).as_deref(), Some(PRELUDE));
        assert_eq!(r.origin(0), None);
        assert_eq!(r.origin(r.lines() + 1), None);
        assert_eq!(r.source.lines().count(), r.lines());
    }

    /// A deliberately broken template: naga's errors name the template line, both for a parse
    /// error and for a validation error, through an include and a loop.
    #[test]
    fn naga_errors_map_back_to_template_lines() {
        let table = [
            (
                "broken.wgsl",
                include_str!("../tests/data/wgsl/broken.wgsl"),
            ),
            ("common.wgsl", include_str!("../shaders/common.wgsl")),
            ("bad.wgsl", include_str!("../tests/data/wgsl/bad.wgsl")),
        ];
        let ok = render(&table, ShaderVariant::new("broken.wgsl")).unwrap();
        assert_eq!(naga_errors(&ok), None);
        let parse = render(
            &table,
            ShaderVariant::new("broken.wgsl").flag("BAD_PARSE", true),
        )
        .unwrap();
        let e = naga_errors(&parse).expect("parse error");
        assert!(e.contains("[bad.wgsl:5]"), "{e}");
        let typed = render(
            &table,
            ShaderVariant::new("broken.wgsl").flag("BAD_TYPE", true),
        )
        .unwrap();
        let e = naga_errors(&typed).expect("validation error");
        assert!(e.contains("[bad.wgsl:11]"), "{e}");
    }

    #[test]
    fn annotate_leaves_other_text_alone() {
        let r = Rendered {
            source: "a\nb\n".into(),
            origins: vec![("x.wgsl", 7), ("y.wgsl", 9)],
        };
        assert_eq!(
            r.annotate("error at wgsl:2:5, time 12:30 and :3:1 and x:1:2:3 é"),
            "error at wgsl:2:5 [y.wgsl:9], time 12:30 and :3:1 and x:1:2 [x.wgsl:7]:3 é"
        );
    }

    /// No template writes a binding number: they all come from the Rust table.
    #[test]
    fn templates_name_bindings_instead_of_numbers() {
        for (name, text) in TEMPLATES {
            for (n, line) in text.lines().enumerate() {
                if let Some(at) = line.find("@binding(") {
                    let arg = &line[at + "@binding(".len()..];
                    assert!(
                        arg.starts_with("B_"),
                        "{name}:{}: literal binding in {line:?}",
                        n + 1
                    );
                }
            }
        }
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
