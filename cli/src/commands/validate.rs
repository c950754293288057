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
    // Every case is reported: one that cannot run (bad file, GPU error) is a row with its
    // error, and the exit status is the worst of all rows (GPU error 3 > bad input 2 > out of
    // tolerance 1 > ok 0).
    let mut results: Vec<(&str, String, Result<CaseResult>)> = Vec::new();
    if !args.no_grid {
        for case in validation::grid(2e7) {
            let r = validation::run_grid_case(&ctx, &case, kernel);
            results.push(("grid", case.name.clone(), r));
        }
    }
    for f in &files {
        let name = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| f.display().to_string());
        results.push(("file", name, validation::run_case_file(&ctx, f, kernel)));
    }
    let failed = results
        .iter()
        .filter(|(_, _, r)| !r.as_ref().is_ok_and(CaseResult::passed))
        .count();
    let mut worst = Worst::Ok;
    for (_, name, r) in &results {
        match r {
            Ok(r) if r.passed() => {}
            Ok(_) => worst = worst.max(Worst::OutOfTolerance),
            Err(e) => {
                eprintln!("wgattn: error: {name}: {e}");
                worst = worst.max(if e.is_input_error() {
                    Worst::BadInput
                } else {
                    Worst::Gpu
                });
            }
        }
    }
    if args.json {
        let report = ValidateReport {
            adapter: ctx.adapter_info().name.clone(),
            backend: format!("{:?}", ctx.adapter_info().backend).to_lowercase(),
            cases: results
                .iter()
                .map(|(src, name, r)| CaseRecord::new(src, name, r))
                .collect(),
            failed,
            passed: failed == 0,
        };
        println!("{}", report::pretty(&report));
    } else {
        println!("adapter: {}", super::adapter_line(&ctx));
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|(src, name, r)| match r {
                Ok(r) => {
                    let v = &r.verdict;
                    vec![
                        src.to_string(),
                        r.name.clone(),
                        r.kernel.name().into(),
                        table::sci(v.out.stats.max_abs),
                        table::sci(v.out.stats.rel_fro),
                        format!("{} ≤ {:.1e}", v.out.measure.name(), v.out.tolerance),
                        v.lse.as_ref().map_or("-".into(), |l| {
                            format!("{} ≤ {:.1e}", table::sci(l.stats.max_abs), l.tolerance)
                        }),
                        if r.passed() { "ok" } else { "FAIL" }.into(),
                    ]
                }
                Err(e) => vec![
                    src.to_string(),
                    name.clone(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    format!("ERROR: {e}"),
                ],
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
                    "lse max_abs",
                    "result"
                ],
                &rows
            )
        );
        println!("{} cases, {} failed", results.len(), failed);
    }
    match worst {
        Worst::Ok => Ok(Outcome::Ok),
        Worst::OutOfTolerance => Ok(Outcome::OutOfTolerance),
        // The worst error decides the exit status: main maps it to 2 (input) or 3 (GPU).
        Worst::BadInput | Worst::Gpu => Err(results
            .into_iter()
            .filter_map(|(_, _, r)| r.err())
            .max_by_key(|e| !e.is_input_error())
            .expect("an error was counted")),
    }
}

/// Severity of a validate row, in exit-status order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Worst {
    Ok,
    OutOfTolerance,
    BadInput,
    Gpu,
}
