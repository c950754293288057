//! `wgattn bench`: time attention shapes on the GPU.

use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use wgattn::bench::{self, BenchConfig};
use wgattn::{AttentionSpec, Context, DeviceLimits, Error, Result};

use super::values::{self, BroadcastArg, KernelArg, TimingArg};
use crate::Outcome;
use crate::bench_plot::{self, PlotData};
use crate::picture::Format;
use crate::report::{self, BenchRecord, RecordText};
use crate::table;

/// Arguments of `wgattn bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    shapes: super::spec_flags::ShapeArgs,
    /// Time with a random bias tensor of this broadcast.
    #[arg(long, value_enum, value_name = "BROADCAST")]
    bias: Option<BroadcastArg>,
    /// Time with a random mask tensor of this broadcast.
    #[arg(long, value_enum, value_name = "BROADCAST")]
    mask: Option<BroadcastArg>,
    /// Kernel to time.
    #[arg(long, value_enum, default_value_t)]
    kernel: KernelArg,
    /// Timed runs (after one warm-up), at least 1; default: as many as fit --seconds, at
    /// least 5.
    #[arg(long, conflicts_with = "seconds", allow_negative_numbers = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    runs: Option<u64>,
    /// Seconds of measuring per shape, above 0 (default 2).
    #[arg(long, value_parser = values::seconds, allow_negative_numbers = true)]
    seconds: Option<f64>,
    /// How to time.
    #[arg(long, value_enum, default_value_t)]
    timing: TimingArg,
    /// Run on every adapter and print one comparison table (JSON: one object per line).
    #[arg(long)]
    all_adapters: bool,
    /// One JSON object per shape on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Also draw median time and GFLOP/s per shape, one series per kernel, adapter and dtype,
    /// to this file (.svg or .png).
    #[arg(long, value_name = "FILE.svg|png")]
    plot: Option<PathBuf>,
    /// Time the backward pass instead (wall time, --runs runs, default 5).
    #[arg(long, conflicts_with_all = ["all_adapters", "seconds"])]
    backward: bool,
    /// Ignore the tune cache: the planner's untuned defaults.
    #[arg(long)]
    untuned: bool,
    /// Read tuned choices from this file instead of the user's tune cache.
    #[arg(long, value_name = "PATH", conflicts_with = "untuned")]
    tune_cache: Option<PathBuf>,
}

impl Args {
    /// Where the contexts read tuned choices from.
    fn tune_source(&self) -> wgattn::TuneCacheSource {
        match (&self.tune_cache, self.untuned) {
            (_, true) => wgattn::TuneCacheSource::Off,
            (Some(p), false) => wgattn::TuneCacheSource::File(p.clone()),
            (None, false) => wgattn::TuneCacheSource::User,
        }
    }
}

/// The specs to time, each checked (without device limits) so that a bad shape is reported
/// before any adapter is opened.
fn specs(args: &Args) -> Result<Vec<AttentionSpec>> {
    let out = args.shapes.specs();
    if out.is_empty() {
        return Err(Error::spec(
            "shape",
            "none",
            "give --shape B,Hq,Hkv,Sq,Sk,D or --preset standard",
        ));
    }
    let (bias, mask) = (args.bias.map(Into::into), args.mask.map(Into::into));
    out.into_iter()
        .map(|s| {
            let s = AttentionSpec {
                kernel: args.kernel.into(),
                ..s.bias(bias).mask(mask)
            };
            s.validate(&DeviceLimits::unbounded())?;
            Ok(s)
        })
        .collect()
}

fn row(r: &BenchRecord) -> Vec<String> {
    let decode = r.shape.seq_q <= 16;
    vec![
        r.adapter.name.clone(),
        r.adapter.backend.clone(),
        r.shape_text(),
        format!(
            "{}{}{}",
            r.kernel,
            if r.splits > 1 {
                format!(" ({} splits)", r.splits)
            } else {
                String::new()
            },
            if r.tuned { ", tuned" } else { "" }
        ),
        format!("{:.3}", r.median_ms),
        format!("{:.3}", r.min_ms),
        format!("{:.3}", r.max_ms),
        r.runs.to_string(),
        format!("{:.2}", r.gflops),
        if decode {
            format!("{:.2}", r.kv_gbps)
        } else {
            "-".into()
        },
        r.timing.clone(),
    ]
}

/// Runs `wgattn bench`.
pub fn run(args: Args, adapter: Option<String>) -> Result<Outcome> {
    let specs = specs(&args)?;
    if let Some(plot) = &args.plot {
        Format::of(plot)?;
    }
    let runs = args.runs.map(|n| n as usize);
    if args.backward {
        return super::grad::bench(
            &super::open_tuned(adapter, args.tune_source())?,
            &specs,
            runs,
            args.json,
        );
    }
    let config = BenchConfig {
        warmup: 1,
        min_runs: runs.unwrap_or(5),
        max_runs: runs.unwrap_or(10_000),
        target: match runs {
            Some(_) => Duration::ZERO,
            None => Duration::from_secs_f64(args.seconds.unwrap_or(2.0)),
        },
        timing: args.timing.into(),
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
            match super::open_tuned(Some(name.clone()), args.tune_source()) {
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
        vec![super::open_tuned(adapter, args.tune_source())?]
    };
    let mut records = Vec::new();
    for ctx in &contexts {
        for spec in &specs {
            let bar = ProgressBar::new(config.min_runs as u64);
            bar.set_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} runs")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message(wgattn::validation::describe(spec));
            let r = bench::bench(ctx, spec, &config, &mut |done, expected| {
                bar.set_length(expected as u64);
                bar.set_position(done as u64);
            });
            bar.finish_and_clear();
            let record = BenchRecord::new(ctx.adapter_info(), &r?);
            if args.json {
                println!("{}", report::line(&record));
            }
            records.push(record);
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
                &records.iter().map(row).collect::<Vec<_>>()
            )
        );
    }
    if let Some(path) = &args.plot {
        bench_plot::write(path, &PlotData::new(&records))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(Outcome::Ok)
}
