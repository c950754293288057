//! The template step: a template is plain WGSL plus directive lines, resolved before
//! compilation.
//!
//! - `#param A B …`: the `u32` constants this file reads (prepended as `const A: u32 = …;`).
//!   A declared parameter the variant does not give is an error, and so is a constant the
//!   variant gives that no file it reaches declares.
//! - `#flag A B …`: the flags this file tests. `#if` on a name that is neither declared nor
//!   `#define`d before is an error (a misspelt flag is never silently false), and so is a
//!   variant flag that no file it reaches declares. An entry template declares its whole
//!   interface (every flag and constant a variant may set) at its top.
//! - `#define FLAG`: sets (and declares) a flag for the rest of the expansion.
//! - `#if NAME` / `#if !NAME`, `#else`, `#endif`.
//! - `#for VAR in A..B` … `#endfor` repeats its body with `{VAR}` replaced by A, A+1, …, B−1
//!   (A and B integers or declared parameters), `#for VAR in q,k,v` over words; `{VAR}` is
//!   replaced in directive lines too. Unrolling with `#for` keeps per-invocation vectors in
//!   registers: compilers such as Mesa's llvmpipe turn loops over private arrays into
//!   per-lane memory gathers.
//! - `#include "family/name.inc.wgsl"`: another template, by its path under `shaders/`. Only
//!   files named `*.inc.wgsl` are includes, and only other files are entry points.

use std::collections::BTreeSet;

/// The template name of the lines the template step prepends (f16, constants, bindings).
pub const PRELUDE: &str = "<prelude>";

/// The suffix of the templates that are included, never compiled on their own.
pub const INCLUDE_SUFFIX: &str = ".inc.wgsl";

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
    pub(crate) fn push(&mut self, line: &str, template: &'static str, n: usize) {
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
    /// followed by the template position it came from, e.g. `wgsl:41:5 [fused/rows.wgsl:123]`.
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

/// What one template is specialised with: its `u32` constants and the flags that are set.
pub(crate) struct Specialisation<'a> {
    pub consts: &'a [(&'static str, u32)],
    pub flags: Vec<&'a str>,
}

/// Appends entry template `name` (of `table`) specialised by `spec` to `out`.
pub(crate) fn expand(
    name: &str,
    spec: &Specialisation,
    table: &[(&'static str, &'static str)],
    out: &mut Rendered,
) -> Result<(), String> {
    if name.ends_with(INCLUDE_SUFFIX) {
        return Err(format!(
            "{name} is an include (`*{INCLUDE_SUFFIX}`), not an entry point"
        ));
    }
    let mut e = Expander {
        spec,
        templates: table,
        flags: spec.flags.iter().map(|f| f.to_string()).collect(),
        known: BTreeSet::new(),
        params: BTreeSet::new(),
        loops: Vec::new(),
    };
    e.file(name, out, 0)?;
    if let Some((c, _)) = spec.consts.iter().find(|(c, _)| !e.params.contains(*c)) {
        return Err(format!(
            "constant {c} is not a #param of {name} or of what it includes"
        ));
    }
    if let Some(f) = spec.flags.iter().find(|f| !e.known.contains(**f)) {
        return Err(format!(
            "flag {f} is not a #flag of {name} or of what it includes"
        ));
    }
    Ok(())
}

/// Most nested `#include`s.
const MAX_INCLUDE_DEPTH: usize = 8;

/// The template step over a table of templates (the embedded ones, or a test's): the flags
/// set so far (the variant's and `#define`d ones), the names declared so far, and the values
/// of the enclosing `#for` loops.
struct Expander<'a> {
    spec: &'a Specialisation<'a>,
    templates: &'a [(&'static str, &'static str)],
    flags: Vec<String>,
    known: BTreeSet<String>,
    params: BTreeSet<String>,
    loops: Vec<(String, String)>,
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

/// True for a WGSL-style identifier.
fn identifier(w: &str) -> bool {
    w.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Expander<'_> {
    fn file(&mut self, name: &str, out: &mut Rendered, depth: usize) -> Result<(), String> {
        let (file, text) = self
            .templates
            .iter()
            .find(|(n, _)| *n == name)
            .copied()
            .ok_or_else(|| format!("no template named {name}"))?;
        let lines: Vec<(usize, &str)> = text.lines().enumerate().map(|(n, l)| (n + 1, l)).collect();
        self.block(file, &lines, out, depth)
    }

    /// The value of a `#for` bound: an integer or a declared parameter.
    fn bound(&self, word: &str) -> Option<u32> {
        word.parse().ok().or_else(|| {
            self.params.contains(word).then_some(())?;
            self.spec
                .consts
                .iter()
                .find(|(n, _)| *n == word)
                .map(|(_, v)| *v)
        })
    }

    /// The names of a `#param` / `#flag` line.
    fn names<'l>(rest: &'l str, at: &str, what: &str) -> Result<Vec<&'l str>, String> {
        let names: Vec<&str> = rest.split_whitespace().collect();
        match names.iter().find(|n| !identifier(n)) {
            _ if names.is_empty() => Err(format!("{at}: expected `#{what} NAME …`")),
            Some(bad) => Err(format!("{at}: `{bad}` is not a {what} name")),
            None => Ok(names),
        }
    }

    /// Emits `lines`, resolving the directives (see the module docs).
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
            for (var, value) in self.loops.iter() {
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
                    if !self.known.contains(flag) {
                        return Err(format!(
                            "{}: #if on unknown flag {flag} (declare it with #flag)",
                            at()
                        ));
                    }
                    let on = self.flags.iter().any(|f| f == flag) != neg;
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
                        Some((a, b)) => match (self.bound(a.trim()), self.bound(b.trim())) {
                            (Some(a), Some(b)) => (a..b).map(|v| v.to_string()).collect(),
                            _ => return Err(format!("{}: unknown bound in {range}", at())),
                        },
                        None => range.split(',').map(|w| w.trim().to_string()).collect(),
                    };
                    for value in values {
                        self.loops.push((var.trim().to_string(), value));
                        self.block(name, &lines[k + 1..end], out, depth)?;
                        self.loops.pop();
                    }
                    k = end + 1;
                }
                Some(("include", rest)) => {
                    if depth >= MAX_INCLUDE_DEPTH {
                        return Err(format!("{}: #include nested too deeply", at()));
                    }
                    let file = rest.trim_matches('"');
                    if !file.ends_with(INCLUDE_SUFFIX) {
                        return Err(format!(
                            "{}: {file} is not an include (`*{INCLUDE_SUFFIX}`)",
                            at()
                        ));
                    }
                    self.file(file, out, depth + 1)
                        .map_err(|e| format!("{}: {e}", at()))?;
                    k += 1;
                }
                Some(("define", flag)) => {
                    for f in Self::names(flag, &at(), "define")? {
                        self.flags.push(f.to_string());
                        self.known.insert(f.to_string());
                    }
                    k += 1;
                }
                Some(("flag", rest)) => {
                    for f in Self::names(rest, &at(), "flag")? {
                        self.known.insert(f.to_string());
                    }
                    k += 1;
                }
                Some(("param", rest)) => {
                    for p in Self::names(rest, &at(), "param")? {
                        if !self.spec.consts.iter().any(|(c, _)| *c == p) {
                            return Err(format!("{}: needs constant {p} (#param)", at()));
                        }
                        self.params.insert(p.to_string());
                    }
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
