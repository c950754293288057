//! Embeds every WGSL template of `shaders/` (a folder per kernel family) as the table the
//! template step reads (`src/shader/mod.rs`): adding a template is adding its file, with no
//! list to update. A few lines of build script rather than a directory-embedding crate:
//! `rerun-if-changed` on the folder makes Cargo rebuild when a template is added, removed or
//! edited, which an embedding macro cannot tell it.

use std::path::{Path, PathBuf};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    let mut table = String::from(
        "/// Every template in `shaders/`, by its path there (`family/name.wgsl`).\n\
         pub(crate) const TEMPLATES: &[(&str, &str)] = &[\n",
    );
    for file in &files {
        let name = file
            .strip_prefix(&root)
            .expect("under shaders/")
            .to_str()
            .expect("template paths are UTF-8")
            .replace('\\', "/");
        table.push_str(&format!(
            "    ({name:?}, include_str!({:?})),\n",
            file.display().to_string()
        ));
    }
    table.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("templates.rs");
    std::fs::write(out, table).expect("writes templates.rs");
}

/// Every `.wgsl` file under `dir`.
fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "wgsl") {
            out.push(path);
        }
    }
}
