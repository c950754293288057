//! GPUs' GL drivers get the workgroup-tiled flash variant (it needs no subgroups). Forced here
//! on llvmpipe GL for flash and split-KV over the validation and edge cases. Like every GL
//! test it holds `common::gl_serial` (see gl_concurrent.rs for GL from several threads).

use crate::common;

use std::sync::OnceLock;

use wgattn::validation;
use wgattn::{Context, Kernel};

#[test]
fn tiled_flash_on_gl() {
    static CTX: OnceLock<Result<Context, String>> = OnceLock::new();
    let Some(ctx) = common::gl_with(&CTX, Some(true)) else {
        return;
    };
    assert_eq!(ctx.adapter_info().backend, wgpu::Backend::Gl);
    assert!(ctx.caps().flash_tiles());
    let dir = common::cases_dir();
    for kernel in [Kernel::Flash, Kernel::SplitKv] {
        for f in validation::case_files(&dir).unwrap() {
            let r = validation::run_case_file(&ctx, &f, kernel).unwrap();
            assert!(r.passed(), "{}: {:?} with {kernel}", r.name, r.verdict);
        }
        common::run_cases(&ctx, kernel, &validation::edge_cases());
    }
}
