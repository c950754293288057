//! The layers of the crate, in order, and the test that keeps them: code in a layer names
//! (through `crate::` paths, or names `lib.rs` re-exports) only its own layer and those
//! before it; the top-level modules form no import cycle (the tools too); the pure tools
//! (the CPU reference, the test data) name nothing but the spec layer; and no non-test
//! source file is longer than [`MAX_LINES`]. Read from the source files, so a new `use` that
//! breaks the order fails `cargo test` and names the offending file and path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first, and their top-level modules.
const LAYERS: &[(&str, &[&str])] = &[
    // shapes, options, sizes, errors, host inputs and outputs: pure data
    ("spec", &["error", "spec"]),
    // the template step; each ShaderVariant carries its bindings
    ("shader", &["shader"]),
    // every decision, from plain-data Caps: variants, compile keys, chunks, tuned choices
    ("planner", &["planner"]),
    // adapter choice, device, pipeline cache, error scopes, readback
    ("gpu", &["gpu"]),
    // one launcher per kernel family, on the gpu runtime
    ("kernels", &["kernels"]),
    // compiled plans and their buffers
    ("plan", &["plan"]),
    // the facade users hold: runtime + tuning + host path
    ("context", &["context"]),
    // what is built on the core
    (
        "tools",
        &[
            "backward",
            "bench",
            "io",
            "layer",
            "record",
            "reference",
            "testdata",
            "tune",
            "validation",
        ],
    ),
];

/// Tools that must stay pure: they name only the spec layer (the CPU reference is the oracle
/// every GPU result is checked against, so it shares no code with the GPU paths).
const PURE: &[&str] = &["reference", "testdata"];

/// Modules that are not part of the product (this test).
const EXCLUDED: &[&str] = &["layers"];

/// Most lines of a non-test source file.
const MAX_LINES: usize = 600;

/// The part of a file before its `#[cfg(test)] mod … {` tail.
fn strip_tests(text: &str) -> &str {
    let mut at = 0;
    while let Some(i) = text[at..].find("\n#[cfg(test)]") {
        let start = at + i;
        let rest = text[start + "\n#[cfg(test)]".len()..].trim_start();
        let rest = rest.strip_prefix("pub ").unwrap_or(rest).trim_start();
        if let Some(r) = rest.strip_prefix("mod ") {
            let name_end = r
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(r.len());
            if r[name_end..].trim_start().starts_with('{') {
                return &text[..start];
            }
        }
        at = start + 1;
    }
    text
}

/// `text` without comments (`//` to the end of the line, and `/* … */`).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        rest = rest[i + 2..]
            .split_once("*/")
            .map_or("", |(_, after)| after);
    }
    out.push_str(rest);
    out.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The leading identifier of `s`.
fn ident(s: &str) -> &str {
    let s = s.trim_start();
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first segment of every path named after `crate::`, with `crate::{a::B, c}` groups
/// expanded to `a`, `c`.
fn crate_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = text[at..].find("crate::") {
        let start = at + i + "crate::".len();
        at = start;
        let rest = &text[start..];
        if let Some(group) = rest.strip_prefix('{') {
            // the top-level items of the group
            let (mut depth, mut item) = (1, String::new());
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 || (depth == 1 && ch == ',') {
                    out.push(ident(&item).to_string());
                    item.clear();
                    if depth == 0 {
                        break;
                    }
                } else {
                    item.push(ch);
                }
            }
        } else {
            out.push(ident(rest).to_string());
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// The names `lib.rs` re-exports, and the top-level module each comes from.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for stmt in strip_comments(lib).split(';') {
        let Some(i) = stmt.find("pub use ") else {
            continue;
        };
        let path = stmt[i + "pub use ".len()..].trim();
        let path = path.strip_prefix("crate::").unwrap_or(path);
        let module = ident(path).to_string();
        let rest = &path[module.len()..];
        for name in rest.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            if !name.is_empty() && name != "self" && name != "as" {
                map.insert(name.to_string(), module.clone());
            }
        }
    }
    map
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reads src/") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module of a file under `src/` (`None` for `lib.rs`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).expect("under src/");
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.strip_suffix(".rs") {
        Some("lib") => None,
        Some(m) => Some(m.to_string()),
        None => Some(first),
    }
}

struct Crate {
    /// Module → the modules its code names, each with the file and path that names it.
    edges: BTreeMap<String, BTreeMap<String, (PathBuf, String)>>,
    /// Non-test lines of every file.
    lines: Vec<(PathBuf, usize)>,
}

fn read_crate() -> Crate {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let names = reexports(&lib);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeMap<String, (PathBuf, String)>> = BTreeMap::new();
    let mut lines = Vec::new();
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&src, f)).collect();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        if EXCLUDED.contains(&module.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("reads a source file");
        let body = strip_tests(&text);
        lines.push((file.clone(), body.matches('\n').count()));
        let entry = edges.entry(module.clone()).or_default();
        for first in crate_paths(&strip_comments(body)) {
            let target = if modules.contains(&first) {
                first.clone()
            } else {
                match names.get(&first) {
                    Some(m) => m.clone(),
                    None => continue,
                }
            };
            if target != module {
                entry
                    .entry(target)
                    .or_insert_with(|| (file.clone(), format!("crate::{first}")));
            }
        }
    }
    Crate { edges, lines }
}

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, ms)| ms.contains(&module))
}

/// Every module is in a layer, and names only its own layer and those below it.
#[test]
fn lower_layers_never_name_higher_ones() {
    let krate = read_crate();
    let mut problems = Vec::new();
    for (module, targets) in &krate.edges {
        let Some(from) = rank(module) else {
            problems.push(format!("module `{module}` is in no layer of LAYERS"));
            continue;
        };
        for (target, (file, path)) in targets {
            let Some(to) = rank(target) else { continue };
            let pure = PURE.contains(&module.as_str());
            if to > from || (pure && to > 0) {
                problems.push(format!(
                    "{} ({}, layer {}) names `{path}` ({target}, layer {})",
                    file.display(),
                    module,
                    LAYERS[from].0,
                    LAYERS[to].0
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // the checker sees the edges it must see
    assert!(krate.edges["context"].contains_key("plan"));
    assert!(krate.edges["planner"].contains_key("shader"));
}

/// No import cycle among the top-level modules, the tools included.
#[test]
fn top_level_modules_form_no_cycle() {
    let krate = read_crate();
    // depth-first search for a back edge; the path to it is the cycle
    fn visit<'a>(
        m: &'a str,
        edges: &'a BTreeMap<String, BTreeMap<String, (PathBuf, String)>>,
        state: &mut BTreeMap<&'a str, bool>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(m) {
            Some(true) => {
                let start = path.iter().position(|p| *p == m).unwrap_or(0);
                let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                cycle.push(m.to_string());
                return Some(cycle);
            }
            Some(false) => return None,
            None => {}
        }
        state.insert(m, true);
        path.push(m);
        for target in edges.get(m).into_iter().flat_map(|t| t.keys()) {
            if let Some(c) = visit(target, edges, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(m, false);
        None
    }
    let mut state = BTreeMap::new();
    for m in krate.edges.keys() {
        if let Some(cycle) = visit(m, &krate.edges, &mut state, &mut Vec::new()) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn no_source_file_is_too_long() {
    let long: Vec<String> = read_crate()
        .lines
        .into_iter()
        .filter(|(_, n)| *n > MAX_LINES)
        .map(|(f, n)| format!("{}: {n} lines", f.display()))
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines (tests excluded):\n{}",
        long.join("\n")
    );
}

/// The checker's parsing: groups, comments, test tails and re-exports.
#[test]
fn the_checker_reads_paths_groups_and_reexports() {
    let text = "use crate::{a::B, c, d::{e, f}};\nlet x = crate::g::h(); // crate::comment";
    assert_eq!(crate_paths(&strip_comments(text)), ["a", "c", "d", "g"]);
    let with_tests = "fn f() {}\n#[cfg(test)]\nmod tests {\n use crate::x;\n}";
    assert_eq!(strip_tests(with_tests), "fn f() {}");
    let map = reexports("pub use spec::{Output, Inputs};\npub use crate::gpu::adapters;");
    assert_eq!(map["Output"], "spec");
    assert_eq!(map["adapters"], "gpu");
}
