//! `wgattn bench`: time attention shapes on the GPU.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use wgattn::bench::{self, BenchConfig, BenchResult, Timing};
use wgattn::{AttentionSpec, CausalAlign, Context, Error, Kernel, Result};

use crate::Outcome;
use crate::table;

/// Arguments of `wgattn bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Shape B,Hq,Hkv,Sq,Sk,D (repeatable).
    #[arg(long = "shape", value_name = "B,Hq,Hkv,Sq,Sk,D")]
    shapes: Vec<String>,
    /// A named set of shapes: `standard` (the shapes of BENCHMARKS.md).
    #[arg(long)]
    preset: Option<String>,
    #[command(flatten)]
    flags: super::spec_flags::SpecFlags,
    /// Time with a random bias tensor: shared, batch, head or full broadcast.
    #[arg(long, value_name = "BROADCAST")]
    bias: Option<String>,
    /// Time with a random mask tensor: shared, batch, head or full broadcast.
    #[arg(long, value_name = "BROADCAST")]
    mask: Option<String>,
    /// Kernel to time.
    #[arg(long, default_value = "auto")]
    kernel: String,
    /// Timed runs (after one warm-up); default: as many as fit --seconds, at least 5.
    #[arg(long, conflicts_with = "seconds")]
    runs: Option<usize>,
    /// Seconds of measuring per shape (default 2).
    #[arg(long)]
    seconds: Option<f64>,
    /// gpu (timestamp queries), wall (submit to completion) or auto (gpu when available).
    #[arg(long, default_value = "auto")]
    timing: String,
    /// Run on every adapter and print one comparison table (JSON: one object per line).
    #[arg(long)]
    all_adapters: bool,
    /// One JSON object per shape on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Time the backward pass instead (wall time, --runs runs, default 5).
    #[arg(long, conflicts_with_all = ["all_adapters", "seconds"])]
    backward: bool,
}

/// The standard benchmark shapes: (B, Hq, Hkv, Sq, Sk, D, causal).
pub const STANDARD: &[(usize, usize, usize, usize, usize, usize, bool)] = &[
    (1, 8, 8, 512, 512, 64, false),
    (1, 8, 8, 1024, 1024, 64, false),
    (1, 8, 8, 1024, 1024, 64, true),
    (4, 12, 12, 256, 256, 64, false),
    (1, 32, 32, 2048, 2048, 128, true),
    (1, 8, 8, 1, 4096, 64, false),
];

/// Parses `B,Hq,Hkv,Sq,Sk,D`.
pub fn parse_shape(s: &str) -> Result<AttentionSpec> {
    let v: Vec<usize> = s
        .split(',')
        .map(|x| x.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::spec("shape", s, "is not six integers B,Hq,Hkv,Sq,Sk,D"))?;
    match v.as_slice() {
        &[b, hq, hkv, sq, sk, d] => Ok(AttentionSpec::new(b, hq, hkv, sq, sk, d)),
        _ => Err(Error::spec(
            "shape",
            s,
            "is not six integers B,Hq,Hkv,Sq,Sk,D",
        )),
    }
}

fn specs(args: &Args) -> Result<Vec<AttentionSpec>> {
    let kernel = Kernel::parse(&args.kernel)?;
    let mut out = Vec::new();
    match args.preset.as_deref() {
        None => {}
        Some("standard") => {
            for &(b, hq, hkv, sq, sk, d, c) in STANDARD {
                out.push(
                    AttentionSpec::new(b, hq, hkv, sq, sk, d)
                        .causal(c.then_some(CausalAlign::TopLeft)),
                );
            }
        }
        Some(other) => return Err(Error::spec("preset", other, "is not `standard`")),
    }
    for s in &args.shapes {
        out.push(parse_shape(s)?);
    }
    if out.is_empty() {
        return Err(Error::spec(
            "shape",
            "none",
            "give --shape B,Hq,Hkv,Sq,Sk,D or --preset standard",
        ));
    }
    let bias = args
        .bias
        .as_deref()
        .map(|b| super::generate::broadcast("bias", b))
        .transpose()?;
    let mask = args
        .mask
        .as_deref()
        .map(|m| super::generate::broadcast("mask", m))
        .transpose()?;
    out.into_iter()
        .map(|s| {
            let s = args.flags.apply(s)?.bias(bias).mask(mask);
            Ok(AttentionSpec { kernel, ..s })
        })
        .collect()
}

fn shape_text(s: &AttentionSpec) -> String {
    let full = wgattn::validation::describe(s);
    // describe() starts with the shape; keep what follows it (layout onwards) as options
    let options: Vec<&str> = full.split(' ').skip(5).filter(|o| *o != "bhsd").collect();
    format!(
        "{}x{}x{}x{}x{}x{}{}{}",
        s.batch,
        s.q_heads,
        s.kv_heads,
        s.seq_q,
        s.seq_k,
        s.head_dim,
        if options.is_empty() { "" } else { " " },
        options.join(" ")
    )
}

fn result_json(ctx: &Context, r: &BenchResult) -> serde_json::Value {
    let i = ctx.adapter_info();
    let s = &r.spec;
    json!({
        "adapter": {
            "name": i.name,
            "backend": format!("{:?}", i.backend).to_lowercase(),
            "device_type": format!("{:?}", i.device_type),
            "driver": format!("{} {}", i.driver, i.driver_info).trim(),
        },
        "shape": {
            "batch": s.batch, "q_heads": s.q_heads, "kv_heads": s.kv_heads,
            "seq_q": s.seq_q, "seq_k": s.seq_k, "head_dim": s.head_dim,
            "causal": s.causal.map(|c| c.name()),
        },
        "kernel": r.kernel.name(),
        "splits": r.splits,
        "shaders": r.shaders,
        "dtype": s.dtype.name(),
        "options": wgattn::validation::describe(s),
        "median_ms": r.median_ms,
        "min_ms": r.min_ms,
        "max_ms": r.max_ms,
        "runs": r.runs,
        "gflops": r.gflops(),
        "kv_gbps": r.kv_gbps(),
        "timing": r.timing,
    })
}

fn row(ctx: &Context, r: &BenchResult) -> Vec<String> {
    let decode = r.spec.seq_q <= 16;
    vec![
        ctx.adapter_info().name.clone(),
        format!("{:?}", ctx.adapter_info().backend).to_lowercase(),
        shape_text(&r.spec),
        if r.splits > 1 {
            format!("{} ({} splits)", r.kernel.name(), r.splits)
        } else {
            r.kernel.name().into()
        },
        format!("{:.3}", r.median_ms),
        format!("{:.3}", r.min_ms),
        format!("{:.3}", r.max_ms),
        r.runs.to_string(),
        format!("{:.2}", r.gflops()),
        if decode {
            format!("{:.2}", r.kv_gbps())
        } else {
            "-".into()
        },
        r.timing.into(),
    ]
}

/// Runs `wgattn bench`.
pub fn run(args: Args, adapter: Option<String>) -> Result<Outcome> {
    let specs = specs(&args)?;
    if args.backward {
        return super::grad::bench(&super::open(adapter)?, &specs, args.runs, args.json);
    }
    let timing = Timing::parse(&args.timing)?;
    let config = BenchConfig {
        warmup: 1,
        min_runs: args.runs.unwrap_or(5),
        max_runs: args.runs.unwrap_or(10_000),
        target: match args.runs {
            Some(_) => Duration::ZERO,
            None => Duration::from_secs_f64(args.seconds.unwrap_or(2.0).max(0.0)),
        },
        timing,
    };
    let contexts: Vec<Context> = if args.all_adapters {
        let mut seen: Vec<String> = Vec::new();
        let mut contexts = Vec::new();
        for s in wgattn::adapter_summaries() {
            let name = format!("{} {}", s.info.name, s.info.backend).to_lowercase();
            if seen.contains(&name) {
                continue;
            }
            seen.push(name.clone());
            match super::open(Some(name.clone())) {
                Ok(c) => contexts.push(c),
                Err(e) => eprintln!("wgattn: skipping adapter {name}: {e}"),
            }
        }
        if contexts.is_empty() {
            return Err(Error::NoAdapter {
                filter: None,
                available: seen,
            });
        }
        contexts
    } else {
        vec![super::open(adapter)?]
    };
    let mut rows = Vec::new();
    for ctx in &contexts {
        for spec in &specs {
            let bar = ProgressBar::new(config.min_runs as u64);
            bar.set_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} runs")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message(shape_text(spec));
            let r = bench::bench(ctx, spec, &config, &mut |done, expected| {
                bar.set_length(expected as u64);
                bar.set_position(done as u64);
            });
            bar.finish_and_clear();
            let r = r?;
            if args.json {
                println!("{}", result_json(ctx, &r));
            } else {
                rows.push(row(ctx, &r));
            }
        }
    }
    if !args.json {
        print!(
            "{}",
            table::render(
                &[
                    "adapter",
                    "backend",
                    "shape (BxHqxHkvxSqxSkxD)",
                    "kernel",
                    "median ms",
                    "min ms",
                    "max ms",
                    "runs",
                    "GFLOP/s",
                    "KV GB/s",
                    "timing"
                ],
                &rows
            )
        );
    }
    Ok(Outcome::Ok)
}
