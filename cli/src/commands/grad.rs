//! The backward pass on the command line: `wgattn run --grad` and `wgattn bench --backward`.

use std::path::Path;

use wgattn::io::TensorOut;
use wgattn::{AttentionSpec, Context, DType, Error, ErrorStats, Output, Result};

use crate::Outcome;
use crate::table;

/// `wgattn run --grad`: reads tensor `d_out` (shape of q) from `input`, runs the backward on
/// the GPU and writes `out`, `lse`, `dq`, `dk`, `dv` (+ `dbias` when the spec has a bias) to
/// `output`. With `check`, compares every gradient with the f64 reference (exit 1 above
/// tolerance: relative Frobenius 1e-4 for f32, 2× the plain f16 backward's max-abs error
/// + 1e-5 for f16).
pub fn run(
    ctx: &Context,
    spec: &AttentionSpec,
    case: &wgattn::io::Case,
    input: &Path,
    output: &Path,
    fwd: &Output,
    check: bool,
) -> Result<Outcome> {
    let (shape, d_out) = wgattn::io::read_float_tensor(input, "d_out")?;
    if shape != spec.q_shape() {
        return Err(Error::BadFile {
            path: input.to_path_buf(),
            message: format!(
                "tensor `d_out` has shape {shape:?}, expected the shape of q {:?}",
                spec.q_shape()
            ),
        });
    }
    let lse = fwd.lse.as_deref().unwrap_or(&[]);
    let inputs = case.inputs();
    let started = std::time::Instant::now();
    let grads = ctx.attention_backward(spec, &inputs, &fwd.out, lse, &d_out)?;
    let elapsed = started.elapsed();
    let out = match spec.dtype {
        DType::F32 => TensorOut::F32(&fwd.out),
        DType::F16 => TensorOut::F16(&fwd.out),
    };
    let mut tensors = vec![
        ("out", spec.q_shape().to_vec(), out),
        (
            "lse",
            vec![spec.batch, spec.q_heads, spec.seq_q],
            TensorOut::F32(lse),
        ),
        ("dq", spec.q_shape().to_vec(), TensorOut::F32(&grads.dq)),
        ("dk", spec.kv_shape().to_vec(), TensorOut::F32(&grads.dk)),
        ("dv", spec.kv_shape().to_vec(), TensorOut::F32(&grads.dv)),
    ];
    if let (Some(db), Some(b)) = (&grads.dbias, spec.bias) {
        tensors.push(("dbias", b.shape(spec).to_vec(), TensorOut::F32(db)));
    }
    wgattn::io::write_typed(output, &tensors, wgattn::io::spec_metadata(spec))?;
    println!(
        "{}: backward of {} on {} in {:.1} ms -> {}",
        input.display(),
        wgattn::validation::describe(spec),
        ctx.adapter_info().name,
        elapsed.as_secs_f64() * 1e3,
        output.display()
    );
    if !check {
        return Ok(Outcome::Ok);
    }
    let d = wgattn::Tensor::F32(&d_out);
    let cpu = wgattn::reference::attention_backward(spec, &inputs, d)?;
    let plain = match spec.dtype {
        DType::F16 => Some(wgattn::reference::attention_backward_f16_plain(
            spec, &inputs, d,
        )?),
        DType::F32 => None,
    };
    let mut ok = true;
    let mut list = vec![
        ("dq", &grads.dq, &cpu.dq, plain.as_ref().map(|p| &p.dq)),
        ("dk", &grads.dk, &cpu.dk, plain.as_ref().map(|p| &p.dk)),
        ("dv", &grads.dv, &cpu.dv, plain.as_ref().map(|p| &p.dv)),
    ];
    if let (Some(g), Some(c)) = (&grads.dbias, &cpu.dbias) {
        list.push(("dbias", g, c, plain.as_ref().and_then(|p| p.dbias.as_ref())));
    }
    for (name, got, expected, plain) in list {
        let e = ErrorStats::compare(got, expected);
        let (tol, on_max_abs) = match plain {
            Some(p) => (2.0 * ErrorStats::compare(p, expected).max_abs + 1e-5, true),
            None => (1e-4, false),
        };
        let pass = e.nan_count == 0
            && if on_max_abs {
                e.max_abs <= tol
            } else {
                e.rel_fro <= tol
            };
        ok &= pass;
        println!(
            "check {name} against CPU reference: max_abs {:.3e}, rel_fro {:.3e} (tolerance: {} ≤ {tol:.2e}) {}",
            e.max_abs,
            e.rel_fro,
            if on_max_abs {
                "max_abs, 2× plain f16 + 1e-5"
            } else {
                "rel_fro"
            },
            if pass { "ok" } else { "FAIL" }
        );
    }
    Ok(if ok {
        Outcome::Ok
    } else {
        Outcome::OutOfTolerance
    })
}

/// `wgattn bench --backward`: wall-clock time of the backward of each spec (`runs` timed
/// runs, default 5), as a table or one JSON object per shape.
pub fn bench(
    ctx: &Context,
    specs: &[AttentionSpec],
    runs: Option<usize>,
    json: bool,
) -> Result<Outcome> {
    let mut rows = Vec::new();
    for spec in specs {
        let t = wgattn::backward::bench_backward(ctx, spec, runs.unwrap_or(5))?;
        if json {
            let record = crate::report::BackwardRecord {
                adapter: crate::report::AdapterRecord::of(ctx.adapter_info()),
                pass: "backward".into(),
                options: wgattn::validation::describe(spec),
                median_ms: t.median_ms,
                min_ms: t.min_ms,
                max_ms: t.max_ms,
                runs: t.runs,
                gflops: t.gflops(),
                fwd_bwd_median_ms: t.fwd_bwd_median_ms,
                fwd_bwd_min_ms: t.fwd_bwd_min_ms,
                fwd_bwd_gflops: t.fwd_bwd_gflops(),
                shaders: t.shaders.clone(),
                timing: "wall".into(),
            };
            println!("{}", crate::report::line(&record));
        } else {
            rows.push(vec![
                ctx.adapter_info().name.clone(),
                wgattn::validation::describe(spec),
                format!("{:.3}", t.median_ms),
                format!("{:.3}", t.min_ms),
                format!("{:.3}", t.max_ms),
                format!("{:.2}", t.gflops()),
                format!("{:.3}", t.fwd_bwd_median_ms),
                format!("{:.2}", t.fwd_bwd_gflops()),
                t.runs.to_string(),
            ]);
        }
    }
    if !json {
        print!(
            "{}",
            table::render(
                &[
                    "adapter",
                    "backward of",
                    "median ms",
                    "min ms",
                    "max ms",
                    "GFLOP/s (2.5× fwd)",
                    "fwd+bwd median ms",
                    "fwd+bwd GFLOP/s (3.5× fwd)",
                    "runs",
                ],
                &rows
            )
        );
    }
    Ok(Outcome::Ok)
}
