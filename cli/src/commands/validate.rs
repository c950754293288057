//! `wgattn validate`: GPU against the CPU reference on the built-in grid and on case files.

use std::path::PathBuf;

use wgattn::validation::{self, CaseResult};
use wgattn::{Kernel, Result};

use super::values::KernelArg;
use crate::Outcome;
use crate::report::{self, CaseRecord, ValidateReport};
use crate::table;

/// Arguments of `wgattn validate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory of case files (*.safetensors with q, k, v, out and metadata).
    #[arg(long)]
    cases: Option<PathBuf>,
    /// Kernel to validate.
    #[arg(long, value_enum, default_value_t)]
    kernel: KernelArg,
    /// Skip the built-in shape grid (only the case files; needs --cases).
    #[arg(long, requires = "cases")]
    no_grid: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `wgattn validate`.
pub fn run(args: Args, adapter: Option<String>) -> Result<Outcome> {
    let kernel: Kernel = args.kernel.into();
    let files = match &args.cases {
        Some(dir) => validation::case_files(dir)?,
        None => Vec::new(),
    };
    if let Some(dir) = &args.cases
        && files.is_empty()
    {
        return Err(wgattn::Error::BadFile {
            path: dir.clone(),
            message: "holds no *.safetensors case files".into(),
        });
    }
    let ctx = super::open(adapter)?;
    let mut results: Vec<(&str, CaseResult)> = Vec::new();
    if !args.no_grid {
        for case in validation::grid(2e7) {
            results.push(("grid", validation::run_grid_case(&ctx, &case, kernel)?));
        }
    }
    for f in &files {
        results.push(("file", validation::run_case_file(&ctx, f, kernel)?));
    }
    let failed = results.iter().filter(|(_, r)| !r.passed()).count();
    if args.json {
        let report = ValidateReport {
            adapter: ctx.adapter_info().name.clone(),
            backend: format!("{:?}", ctx.adapter_info().backend).to_lowercase(),
            cases: results
                .iter()
                .map(|(src, r)| CaseRecord::new(src, r))
                .collect(),
            failed,
            passed: failed == 0,
        };
        println!("{}", report::pretty(&report));
    } else {
        println!("adapter: {}", super::adapter_line(&ctx));
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|(src, r)| {
                vec![
                    src.to_string(),
                    r.name.clone(),
                    r.kernel.name().into(),
                    table::sci(r.out.max_abs),
                    table::sci(r.out.rel_fro),
                    if r.max_abs_rule {
                        format!("max_abs ≤ {:.1e}", r.tolerance)
                    } else {
                        format!("rel_fro ≤ {:.0e}", r.tolerance)
                    },
                    if r.passed() { "ok" } else { "FAIL" }.into(),
                ]
            })
            .collect();
        print!(
            "{}",
            table::render(
                &[
                    "src",
                    "case",
                    "kernel",
                    "max_abs",
                    "rel_fro",
                    "tolerance",
                    "result"
                ],
                &rows
            )
        );
        println!("{} cases, {} failed", results.len(), failed);
    }
    Ok(if failed == 0 {
        Outcome::Ok
    } else {
        Outcome::OutOfTolerance
    })
}
