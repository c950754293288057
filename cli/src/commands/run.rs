//! `wgattn run`: attention on a safetensors file.

use std::path::PathBuf;

use wgattn::{ErrorStats, Kernel, Layout, Result};

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
    /// Layout of the tensors in the file.
    #[arg(long, value_name = "bhsd|bshd")]
    layout: Option<String>,
    /// Kernel to use.
    #[arg(long, default_value = "auto")]
    kernel: String,
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
    #[arg(long, value_name = "I,J,...", requires = "check")]
    check_rows: Option<String>,
    /// Also run the backward pass: reads tensor `d_out` (shape of q) from the input and writes
    /// `dq`, `dk`, `dv` (+ `dbias` with a bias) with `out` and `lse`; `--check` then compares
    /// the gradients with the CPU reference.
    #[arg(long, conflicts_with_all = ["weights", "check_rows"])]
    grad: bool,
}

/// Runs `wgattn run`.
pub fn run(args: Args, adapter: Option<String>) -> Result<Outcome> {
    let layout = args.layout.as_deref().map(Layout::parse).transpose()?;
    let mut case = wgattn::io::read_case_as(&args.input, layout)?;
    let mut spec = args.flags.apply(case.spec.clone())?;
    args.files.load(&mut spec, &mut case)?;
    spec.kernel = Kernel::parse(&args.kernel)?;
    spec.return_lse = args.lse || args.grad;
    spec.return_weights = args.weights;
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
            Some(list) => sampled_rows(&spec, &inputs, &out.out, list)?,
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

/// The GPU output, the reference and (f16) the plain f16 reference on the query rows in
/// `list` (every batch entry and head).
fn sampled_rows(
    spec: &wgattn::AttentionSpec,
    inputs: &wgattn::Inputs,
    gpu: &[f32],
    list: &str,
) -> Result<Compared> {
    let mut rows = Vec::new();
    for item in list.split(',') {
        let i: usize = item.trim().parse().map_err(|_| {
            wgattn::Error::spec("check_rows", list, format!("has {item:?}, not an integer"))
        })?;
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
