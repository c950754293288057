//! `wgattn run`: attention on a safetensors file.

use std::path::PathBuf;

use wgattn::{ErrorStats, Output, Result};

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
    /// Also run the CPU reference and print the verdict on out (and lse with --lse, weights
    /// with --weights): exit 1 when out of tolerance (see README, "Verdicts").
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
    /// Also run the backward pass: reads tensor `d_out` (shape of q) from the input and writes
    /// `dq`, `dk`, `dv` (+ `dbias` with a bias) with `out` and `lse`; `--check` then compares
    /// the gradients with the CPU reference.
    #[arg(long, conflicts_with_all = ["weights", "check_rows"])]
    grad: bool,
}

/// Runs `wgattn run`.
pub fn run(args: Args, adapter: Option<String>) -> Result<Outcome> {
    let mut case = wgattn::io::read_case_as(&args.input, args.layout.map(Into::into))?;
    let mut spec = args.flags.apply(case.spec.clone());
    args.files.load(&mut spec, &mut case)?;
    spec.kernel = args.kernel.into();
    spec.return_lse = args.lse || args.grad;
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
    if args.grad {
        let (input, output) = (&args.input, &args.output);
        return super::grad::run(&ctx, &spec, &case, input, output, &out, args.check);
    }
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
        let (got, expected, plain_error) = match &args.check_rows {
            None => {
                let cpu = wgattn::reference::attention_with(&spec, &inputs)?;
                let plain = match spec.dtype {
                    wgattn::DType::F16 => Some(
                        ErrorStats::compare(
                            &wgattn::reference::attention_f16_plain(&spec, &inputs)?.out,
                            &cpu.out,
                        )
                        .max_abs,
                    ),
                    wgattn::DType::F32 => None,
                };
                let expected = Output {
                    weights: cpu.weights.filter(|_| spec.return_weights),
                    ..cpu
                };
                (out.clone(), expected, plain)
            }
            Some(rows) => sampled_rows(&spec, &inputs, &out, rows)?,
        };
        // f16 products where --reduced-precision applies
        let tolerance = if wgattn::planner::reduced_precision_applies(&spec, ctx.caps()) {
            wgattn::validation::TOL_REDUCED
        } else {
            wgattn::validation::TOL_F32_LARGE
        };
        let tolerances =
            wgattn::validation::Tolerances::new(&spec, &inputs, tolerance, plain_error);
        let verdict = tolerances.verdict(&got, &expected);
        println!(
            "check against CPU reference: {verdict} (out: {}; lse: max_abs ≤ {tolerance:.0e} × logit scale)",
            match verdict.out.measure {
                wgattn::Measure::MaxAbs => "max_abs, 2× plain f16 + 1e-5",
                wgattn::Measure::RelFro => "rel_fro",
            },
        );
        if !verdict.passed() {
            return Ok(Outcome::OutOfTolerance);
        }
    }
    Ok(Outcome::Ok)
}

/// GPU output, reference output (lse too when the run returned it) and, for f16, the max-abs
/// error of the plain f16 implementation against the reference, on the sampled rows.
type Compared = (Output, Output, Option<f64>);

/// The GPU output, the reference and (f16) the plain f16 reference's error on the query rows
/// in `list` (every batch entry and head).
fn sampled_rows(
    spec: &wgattn::AttentionSpec,
    inputs: &wgattn::Inputs,
    gpu: &Output,
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
    let expected_out: Vec<f32> = cpu.iter().flat_map(|r| r.out.iter().copied()).collect();
    let plain = match spec.dtype {
        wgattn::DType::F16 => {
            let plain: Vec<f32> = wgattn::reference::attention_rows_f16_plain(spec, inputs, &rows)?
                .into_iter()
                .flat_map(|r| r.out)
                .collect();
            Some(ErrorStats::compare(&plain, &expected_out).max_abs)
        }
        wgattn::DType::F32 => None,
    };
    let qs = spec.q_strides();
    let mut got = Output::default();
    let mut expected = Output {
        out: expected_out,
        ..Output::default()
    };
    if let Some(lse) = &gpu.lse {
        got.lse = Some(Vec::new());
        expected.lse = Some(cpu.iter().map(|r| r.lse).collect());
        for r in &cpu {
            let at = (r.row.b * spec.q_heads + r.row.h) * spec.seq_q + r.row.i;
            got.lse.as_mut().expect("set above").push(lse[at]);
        }
    }
    for r in &cpu {
        let at = qs.at(r.row.b, r.row.h, r.row.i);
        got.out.extend_from_slice(&gpu.out[at..at + spec.head_dim]);
    }
    Ok((got, expected, plain))
}
