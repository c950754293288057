//! `wgattn run`: attention on a safetensors file.

use std::path::PathBuf;

use wgattn::{ErrorStats, Result};

use super::values::{KernelArg, LayoutArg};
use crate::Outcome;

/// Arguments of `wgattn run`. Metadata in the input file gives defaults; flags override.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input safetensors file with tensors q, k, v.
    #[arg(long)]
    input: PathBuf,
    /// Output safetensors file (tensor `out`, plus `lse` / `weights` when asked).
    #[arg(long)]
    output: PathBuf,
    #[command(flatten)]
    flags: super::spec_flags::SpecFlags,
    #[command(flatten)]
    files: super::spec_flags::TensorFiles,
    /// Layout of the tensors in the file (default: the file's metadata, else bhsd).
    #[arg(long, value_enum)]
    layout: Option<LayoutArg>,
    /// Kernel to use.
    #[arg(long, value_enum, default_value_t)]
    kernel: KernelArg,
    /// Also write the log-sum-exp `lse` [B, Hq, Sq].
    #[arg(long)]
    lse: bool,
    /// Also write the probability matrix `weights` [B, Hq, Sq, Sk].
    #[arg(long)]
    weights: bool,
    /// Also run the CPU reference and print the error (exit 1 above 1e-4).
    #[arg(long)]
    check: bool,
    /// With --check, compare only these query rows (in every batch entry and head), e.g.
    /// 0,100,16383: the reference then costs O(rows·Sk) instead of O(Sq·Sk).
    #[arg(
        long,
        value_name = "I,J,...",
        requires = "check",
        value_delimiter = ','
    )]
    check_rows: Option<Vec<usize>>,
}

/// Runs `wgattn run`.
pub fn run(args: Args, adapter: Option<String>) -> Result<Outcome> {
    let mut case = wgattn::io::read_case_as(&args.input, args.layout.map(Into::into))?;
    let mut spec = args.flags.apply(case.spec.clone());
    args.files.load(&mut spec, &mut case)?;
    spec.kernel = args.kernel.into();
    spec.return_lse = args.lse;
    spec.return_weights = args.weights;
    // Everything about the input is checked before the GPU is opened; errors name the file.
    spec.validate(&wgattn::DeviceLimits::unbounded())
        .and_then(|()| spec.check_inputs(&case.inputs()))
        .map_err(|e| super::spec_flags::in_file(&args.input, e))?;
    if let Some(rows) = &args.check_rows
        && let Some(bad) = rows.iter().find(|&&i| i >= spec.seq_q)
    {
        return Err(wgattn::Error::spec(
            "check_rows",
            bad,
            format!(
                "is not a query row of {} (seq_q = {})",
                args.input.display(),
                spec.seq_q
            ),
        ));
    }
    let ctx = super::open(adapter)?;
    let started = std::time::Instant::now();
    let out = ctx.attention_with(&spec, &case.inputs())?;
    let elapsed = started.elapsed();
    wgattn::io::write_output(&args.output, &spec, &out)?;
    println!(
        "{}: {} with {} on {} in {:.1} ms -> {}",
        args.input.display(),
        wgattn::validation::describe(&spec),
        wgattn::planner::choose(&spec, &ctx)?,
        ctx.adapter_info().name,
        elapsed.as_secs_f64() * 1e3,
        args.output.display()
    );
    if args.check {
        let inputs = case.inputs();
        let (got, expected, plain) = match &args.check_rows {
            None => {
                let cpu = wgattn::reference::attention_with(&spec, &inputs)?;
                let plain = match spec.dtype {
                    wgattn::DType::F16 => {
                        Some(wgattn::reference::attention_f16_plain(&spec, &inputs)?.out)
                    }
                    wgattn::DType::F32 => None,
                };
                (out.out.clone(), cpu.out, plain)
            }
            Some(rows) => sampled_rows(&spec, &inputs, &out.out, rows)?,
        };
        let e = ErrorStats::compare(&got, &expected);
        let (tol, on_max_abs) = wgattn::validation::tolerance_for(
            &spec,
            plain.as_deref(),
            &expected,
            wgattn::validation::TOL_F32_LARGE,
        );
        let ok = if on_max_abs {
            e.nan_count == 0 && e.max_abs <= tol
        } else {
            e.within(tol)
        };
        println!(
            "check against CPU reference: max_abs {:.3e}, rel_fro {:.3e} (tolerance: {} ≤ {tol:.2e}) {}",
            e.max_abs,
            e.rel_fro,
            if on_max_abs {
                "max_abs, 2× plain f16 + 1e-5"
            } else {
                "rel_fro"
            },
            if ok { "ok" } else { "FAIL" }
        );
        if !ok {
            return Ok(Outcome::OutOfTolerance);
        }
    }
    Ok(Outcome::Ok)
}

/// GPU output, reference output, and (f16) the plain f16 reference's output.
type Compared = (Vec<f32>, Vec<f32>, Option<Vec<f32>>);

/// The GPU output, the reference and (f16) the plain f16 reference on query rows `list`
/// (every batch entry and head).
fn sampled_rows(
    spec: &wgattn::AttentionSpec,
    inputs: &wgattn::Inputs,
    gpu: &[f32],
    list: &[usize],
) -> Result<Compared> {
    let mut rows = Vec::new();
    for &i in list {
        for b in 0..spec.batch {
            for h in 0..spec.q_heads {
                rows.push(wgattn::reference::RowId { b, h, i });
            }
        }
    }
    let cpu = wgattn::reference::attention_rows(spec, inputs, &rows)?;
    let plain = match spec.dtype {
        wgattn::DType::F16 => Some(
            wgattn::reference::attention_rows_f16_plain(spec, inputs, &rows)?
                .into_iter()
                .flat_map(|r| r.out)
                .collect(),
        ),
        wgattn::DType::F32 => None,
    };
    let qs = spec.q_strides();
    let mut got = Vec::new();
    let mut expected = Vec::new();
    for r in cpu {
        let at = qs.at(r.row.b, r.row.h, r.row.i);
        got.extend_from_slice(&gpu[at..at + spec.head_dim]);
        expected.extend_from_slice(&r.out);
    }
    Ok((got, expected, plain))
}
