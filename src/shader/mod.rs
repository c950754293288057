//! The shader layer: the WGSL templates of `shaders/` (a folder per kernel family, embedded
//! at build time), the template step that specialises them ([`template`](self) directives:
//! `#param`, `#flag`, `#define`, `#if`, `#for`, `#include`), and [`ShaderVariant`], the unit
//! that is compiled into a pipeline and cached. A variant names its template, its constants,
//! its typed [`Flag`]s and the [`Binding`]s its shader declares; the planner and the kernels
//! build them, and the catalog lists every variant the crate can make, so that tests validate
//! and translate each one without a GPU.

mod binding;
mod template;

pub use binding::Binding;
pub use template::{INCLUDE_SUFFIX, PRELUDE, Rendered};

use crate::error::{Error, Result};
use template::Specialisation;

include!(concat!(env!("OUT_DIR"), "/templates.rs"));

/// The templates embedded at build time: `(path under shaders/, text)`.
pub fn templates() -> &'static [(&'static str, &'static str)] {
    TEMPLATES
}

macro_rules! flags {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// A template flag: a switch that `#if` tests. Every template declares the flags it
        /// reads (`#flag`), so a variant flag its template does not know is an error.
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Flag {
            $($(#[$doc])* $name,)*
        }

        impl Flag {
            /// Every flag.
            pub const ALL: &'static [Flag] = &[$(Flag::$name,)*];

            /// The name the templates test (`#if NAME`).
            pub fn name(self) -> &'static str {
                match self {
                    $(Flag::$name => stringify!($name),)*
                }
            }
        }
    };
}

flags! {
    /// q, k, v and out are f16 arrays (SHADER_F16).
    F16,
    /// q, k, v are f16 pairs packed in u32 words (no SHADER_F16); out is written as f32.
    PACKED,
    /// An additive bias tensor.
    BIAS,
    /// A boolean mask tensor.
    MASK,
    /// Logit soft-capping.
    SOFTCAP,
    /// ALiBi.
    ALIBI,
    /// Any of the score modifiers (bias, mask, soft-cap, ALiBi).
    MODS,
    /// head_dim and every offset are multiples of 4: vec4 access.
    VEC4,
    /// Subgroup operations (K/V broadcast, row exchanges).
    SUBGROUPS,
    /// Split-KV: per-split partial outputs for the combine pass.
    SPLIT,
    /// Tile multiplies on cooperative matrices (tensor cores).
    COOP,
    /// f16 operands in the matrix-tile variant's tiles.
    TE16,
    /// 16×16 cooperative-matrix tiles (else 8×8).
    MT16,
    /// Three-pass softmax also writes the probabilities.
    WEIGHTS,
    /// Backward pre-pass: recompute the row statistics.
    RECOMPUTE,
    /// Layer kernels: the input is f16.
    X_F16,
    /// Layer kernels: the weight is f16.
    W_F16,
    /// Layer kernels: the output is f16.
    Y_F16,
    /// Projection: rows written at a per-batch offset (a KV cache).
    ROW_OFFSET,
    /// Projection: rotary embedding in the epilogue.
    ROPE,
    /// Projection: rotate-half pairing of the rotary embedding.
    ROPE_HALF,
    /// Projection: GELU in the epilogue.
    GELU,
    /// Projection: a residual added in the epilogue.
    RESIDUAL,
    /// Projection: direct loads instead of workgroup-memory tiles.
    DIRECT,
    /// Gather: add the gathered rows to an input.
    ADD,
    /// Gather: rows by ids rather than by positions.
    IDS,
}

/// One specialisation of a template: the unit that is compiled into a pipeline and cached.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShaderVariant {
    /// Template path under `shaders/`, e.g. `fused/rows.wgsl`.
    pub template: &'static str,
    /// `u32` constants prepended to the source.
    pub consts: Vec<(&'static str, u32)>,
    /// Flags that are set for `#if`.
    pub flags: Vec<Flag>,
    /// The bindings the shader declares (its bind group), in index order.
    pub bindings: Vec<Binding>,
}

impl ShaderVariant {
    /// A variant of `template` with no constants, flags or bindings yet.
    pub fn new(template: &'static str) -> Self {
        ShaderVariant {
            template,
            consts: Vec::new(),
            flags: Vec::new(),
            bindings: Vec::new(),
        }
    }

    /// Adds a constant.
    pub fn constant(mut self, name: &'static str, value: u32) -> Self {
        self.consts.push((name, value));
        self
    }

    /// Sets a flag when `on`.
    pub fn flag(mut self, flag: Flag, on: bool) -> Self {
        if on && !self.flags.contains(&flag) {
            self.flags.push(flag);
        }
        self
    }

    /// True when `flag` is set.
    pub fn has(&self, flag: Flag) -> bool {
        self.flags.contains(&flag)
    }

    /// Declares the bindings of the shader (kept sorted in index order).
    pub fn bind(mut self, bindings: impl IntoIterator<Item = Binding>) -> Self {
        self.bindings.extend(bindings);
        self.bindings.sort();
        self.bindings.dedup();
        self
    }

    /// Declares `binding` when `on`.
    pub fn bind_if(self, on: bool, binding: Binding) -> Self {
        if on { self.bind([binding]) } else { self }
    }

    /// A readable unique name, e.g. `three_pass/scores.wgsl[WG_X=16,WG_Y=16,TK=16]`.
    pub fn key(&self) -> String {
        let mut parts: Vec<String> = self
            .consts
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        parts.extend(self.flags.iter().map(|f| f.name().to_string()));
        format!("{}[{}]", self.template, parts.join(","))
    }

    /// The specialised WGSL source.
    pub fn render(&self) -> Result<String> {
        self.render_mapped().map(|r| r.source)
    }

    /// The specialised WGSL source with its source map (where each line came from).
    pub fn render_mapped(&self) -> Result<Rendered> {
        let flags: Vec<&str> = self.flags.iter().map(|f| f.name()).collect();
        render_with(self.template, &self.consts, flags, TEMPLATES).map_err(|message| {
            Error::Shader {
                shader: self.key(),
                message,
            }
        })
    }
}

/// Renders `template` of `table` with `consts` and `flags` (by name): the prelude (enables,
/// constants, binding constants), then the expanded template.
fn render_with(
    template: &str,
    consts: &[(&'static str, u32)],
    flags: Vec<&str>,
    table: &[(&'static str, &'static str)],
) -> std::result::Result<Rendered, String> {
    let mut out = Rendered::default();
    let set = |f: Flag| flags.contains(&f.name());
    if set(Flag::F16) || set(Flag::TE16) {
        out.push("enable f16;", PRELUDE, 0);
    }
    if set(Flag::COOP) {
        out.push("enable wgpu_cooperative_matrix;", PRELUDE, 0);
    }
    for (name, value) in consts {
        out.push(&format!("const {name}: u32 = {value}u;"), PRELUDE, 0);
    }
    for line in Binding::wgsl_constants().lines() {
        out.push(line, PRELUDE, 0);
    }
    let spec = Specialisation { consts, flags };
    template::expand(template, &spec, table, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders `template` of `table` with constants and flags given by name.
    fn render(
        table: &[(&'static str, &'static str)],
        template: &str,
        consts: &[(&'static str, u32)],
        flags: &[&str],
    ) -> std::result::Result<Rendered, String> {
        render_with(template, consts, flags.to_vec(), table)
    }

    /// The lines a test template renders to, without the prelude.
    fn body(
        table: &[(&'static str, &'static str)],
        template: &str,
        consts: &[(&'static str, u32)],
        flags: &[&str],
    ) -> Vec<String> {
        let r = render(table, template, consts, flags).expect("renders");
        r.source
            .lines()
            .zip(&r.origins)
            .filter(|(_, (t, _))| *t != PRELUDE)
            .map(|(l, _)| l.to_string())
            .collect()
    }

    fn fails(table: &[(&'static str, &'static str)], consts: &[(&'static str, u32)]) -> String {
        render(table, table[0].0, consts, &[]).expect_err("must fail")
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
                "a\n#include \"inc.inc.wgsl\"\n#if INC\nafter include\n#else\nno define\n#endif\nz",
            ),
            ("inc.inc.wgsl", "#define INC\ninside"),
        ];
        assert_eq!(
            body(&table, "main.wgsl", &[], &[]),
            ["a", "inside", "after include", "z"]
        );
    }

    #[test]
    fn if_else_negation_and_nesting() {
        let table = [(
            "t.wgsl",
            "#flag A B\n#if A\n a\n#if !B\n  a not b\n#else\n  a and b\n#endif\n#else\n not a\n#if B\n  b\n#endif\n#endif\n#if !A\n neg\n#endif",
        )];
        let run = |a: bool, b: bool| {
            let flags: Vec<&str> = [("A", a), ("B", b)]
                .into_iter()
                .filter_map(|(f, on)| on.then_some(f))
                .collect();
            body(&table, "t.wgsl", &[], &flags)
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
            "#param N\n#flag USE_q USE_k USE_v\n#for i in 0..3\nx{i}\n#endfor\n#for w in q,k , v\n#if USE_{w}\nuse {w}\n#endif\n#endfor\n#for j in 1..N\n#for c in a,b\ny{j}{c}\n#endfor\n#endfor",
        )];
        assert_eq!(
            body(&table, "t.wgsl", &[("N", 3)], &["USE_k"]),
            ["x0", "x1", "x2", "use k", "y1a", "y1b", "y2a", "y2b"]
        );
        // an empty range emits nothing
        assert_eq!(body(&table, "t.wgsl", &[("N", 1)], &[]), ["x0", "x1", "x2"]);
    }

    #[test]
    fn unknown_placeholders_and_bounds_are_errors() {
        let table = [("t.wgsl", "fn f() {\n  let a = {X};\n}")];
        let e = fails(&table, &[]);
        assert!(e.contains("t.wgsl:2") && e.contains("{X}"), "{e}");
        // a loop variable is known only inside its loop
        let table = [("t.wgsl", "#for i in 0..2\n{i}\n#endfor\n{i}")];
        let e = fails(&table, &[]);
        assert!(e.contains("t.wgsl:4"), "{e}");
        let table = [("t.wgsl", "#for i in 0..M\n{i}\n#endfor")];
        let e = fails(&table, &[]);
        assert!(e.contains("unknown bound"), "{e}");
        // a constant that is given but not declared is no bound either
        let e = fails(&table, &[("M", 2)]);
        assert!(e.contains("unknown bound"), "{e}");
        // braces that are not placeholders are WGSL
        let table = [("t.wgsl", "fn f() { }\nfn g() {}\nlet s = S{ a };")];
        assert_eq!(body(&table, "t.wgsl", &[], &[]).len(), 3);
    }

    /// The declarations: a misspelt `#if` flag, a variant flag or constant the template does
    /// not declare, and a declared constant the variant does not give are errors naming the
    /// name and the line.
    #[test]
    fn undeclared_flags_and_constants_are_errors() {
        let table = [("t.wgsl", "#flag SPLIT\n#param WG\n#if SPLT\nx\n#endif")];
        let e = fails(&table, &[("WG", 64)]);
        assert!(
            e.contains("t.wgsl:3") && e.contains("unknown flag SPLT"),
            "{e}"
        );
        let table = [("t.wgsl", "#flag SPLIT\n#param WG\n#if SPLIT\nx\n#endif")];
        assert_eq!(body(&table, "t.wgsl", &[("WG", 64)], &["SPLIT"]), ["x"]);
        let e = render(&table, "t.wgsl", &[("WG", 64)], &["SPILT"]).unwrap_err();
        assert!(e.contains("flag SPILT is not a #flag of t.wgsl"), "{e}");
        let e = render(&table, "t.wgsl", &[("WG", 64), ("W", 1)], &[]).unwrap_err();
        assert!(e.contains("constant W is not a #param of t.wgsl"), "{e}");
        let e = render(&table, "t.wgsl", &[], &[]).unwrap_err();
        assert!(
            e.contains("t.wgsl:2") && e.contains("needs constant WG"),
            "{e}"
        );
        // declarations inside a branch that is not taken do not count
        let table = [("t.wgsl", "#flag A\n#if A\n#flag B\n#endif\n#if B\n#endif")];
        assert!(render(&table, "t.wgsl", &[], &["A"]).is_ok());
        let e = render(&table, "t.wgsl", &[], &[]).unwrap_err();
        assert!(
            e.contains("t.wgsl:5") && e.contains("unknown flag B"),
            "{e}"
        );
        // names must be identifiers
        let table = [("t.wgsl", "#flag A-B")];
        assert!(fails(&table, &[]).contains("not a flag name"));
    }

    /// Includes are `*.inc.wgsl` and entry points are not.
    #[test]
    fn includes_are_marked() {
        let table = [("t.wgsl", "#include \"u.wgsl\""), ("u.wgsl", "x")];
        assert!(fails(&table, &[]).contains("u.wgsl is not an include"));
        let table = [("t.inc.wgsl", "x")];
        assert!(fails(&table, &[]).contains("is an include"));
    }

    #[test]
    fn unbalanced_directives_are_errors() {
        for (text, expect) in [
            ("#flag A\n#if A\nx", "#if without #endif"),
            ("x\n#endif", "unexpected directive #endif"),
            ("x\n#else", "unexpected directive #else"),
            ("#for i in 0..2\nx", "#for without #endfor"),
            ("#endfor", "unexpected directive #endfor"),
            ("#flag A\n#if A\n#else\n#else\n#endif", "second #else"),
            ("#flag A\n#if A\n#for i in 0..2\n#endif\n#endfor", "#endfor"),
            ("#if\n#endif", "expected `#if NAME`"),
            ("#frobnicate", "unexpected directive #frobnicate"),
            (
                "#include \"missing.inc.wgsl\"",
                "no template named missing.inc.wgsl",
            ),
            ("#include \"t.inc.wgsl\"", "nested too deeply"),
        ] {
            let table = [("t.wgsl", text), ("t.inc.wgsl", "#include \"t.inc.wgsl\"")];
            let e = fails(&table, &[]);
            assert!(e.contains(expect), "{text:?}: {e}");
        }
        assert!(ShaderVariant::new("none.wgsl").render().is_err());
    }

    #[test]
    fn source_map_names_template_lines() {
        let table = [
            (
                "main.wgsl",
                "// main\n#param K\n#flag X\n#include \"inc.inc.wgsl\"\n#for i in 0..2\nconst C{i}: u32 = {i}u;\n#endfor",
            ),
            ("inc.inc.wgsl", "// inc 1\n#if X\n// inc 3\n#endif"),
        ];
        let r = render(&table, "main.wgsl", &[("K", 1)], &["X"]).unwrap();
        let prelude = r.origins.iter().take_while(|(t, _)| *t == PRELUDE).count();
        assert_eq!(prelude, 1 + Binding::ALL.len());
        let mapped: Vec<String> = (prelude + 1..=r.lines())
            .filter_map(|l| r.origin(l))
            .collect();
        assert_eq!(
            mapped,
            [
                "main.wgsl:1",
                "inc.inc.wgsl:1",
                "inc.inc.wgsl:3",
                "main.wgsl:6",
                "main.wgsl:6"
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
                include_str!("../../tests/data/wgsl/broken.wgsl"),
            ),
            (
                "common/params.inc.wgsl",
                include_str!("../../shaders/common/params.inc.wgsl"),
            ),
            (
                "common/spec_params.inc.wgsl",
                include_str!("../../shaders/common/spec_params.inc.wgsl"),
            ),
            (
                "common/masking.inc.wgsl",
                include_str!("../../shaders/common/masking.inc.wgsl"),
            ),
            (
                "bad.inc.wgsl",
                include_str!("../../tests/data/wgsl/bad.inc.wgsl"),
            ),
        ];
        let ok = render(&table, "broken.wgsl", &[], &[]).unwrap();
        assert_eq!(naga_errors(&ok), None);
        let parse = render(&table, "broken.wgsl", &[], &["BAD_PARSE"]).unwrap();
        let e = naga_errors(&parse).expect("parse error");
        assert!(e.contains("[bad.inc.wgsl:6]"), "{e}");
        let typed = render(&table, "broken.wgsl", &[], &["BAD_TYPE"]).unwrap();
        let e = naga_errors(&typed).expect("validation error");
        assert!(e.contains("[bad.inc.wgsl:12]"), "{e}");
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

    /// Every template lives in a family folder, and every include is included somewhere.
    #[test]
    fn templates_are_in_family_folders_and_includes_are_used() {
        assert!(TEMPLATES.len() > 20, "{}", TEMPLATES.len());
        for (name, _) in TEMPLATES {
            assert!(name.contains('/'), "{name} is not in a family folder");
        }
        for (name, _) in TEMPLATES
            .iter()
            .filter(|(n, _)| n.ends_with(INCLUDE_SUFFIX))
        {
            let quoted = format!("#include \"{name}\"");
            assert!(
                TEMPLATES.iter().any(|(_, text)| text.contains(&quoted)),
                "{name} is included nowhere"
            );
        }
    }

    #[test]
    fn flag_names_are_distinct() {
        let names: std::collections::BTreeSet<_> = Flag::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names.len(), Flag::ALL.len());
        assert_eq!(Flag::TE16.name(), "TE16");
    }
}
