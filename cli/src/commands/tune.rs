//! `wgattn tune`: find the fastest fused-kernel variants for shapes on this adapter and store
//! them in the tune cache the planner reads (see `wgattn::tune`).

use std::path::PathBuf;

use serde::Serialize;
use wgattn::tune::{self, CandidateResult, ShapeClass, TuneConfig, TuneEntry, TuneFile};
use wgattn::{AttentionSpec, DeviceLimits, Error, Result, TuneCacheSource};

use super::values::{self, TimingArg};
use crate::Outcome;
use crate::table;

/// Arguments of `wgattn tune`.
#[derive(clap::Args, Debug)]
pub struct Args {
    // (shapes of one class are tuned once)
    #[command(flatten)]
    shapes: super::spec_flags::ShapeArgs,
    /// The cache file to update (default: the user's tune cache, WGATTN_TUNE_CACHE or
    /// $XDG_CACHE_HOME/wgattn/tune.json).
    #[arg(long, value_name = "PATH")]
    cache: Option<PathBuf>,
    /// Seconds of timing per candidate (at least 3 runs each), above 0.
    #[arg(long, default_value_t = 0.5, value_parser = values::seconds, allow_negative_numbers = true)]
    seconds: f64,
    /// How to time.
    #[arg(long, value_enum, default_value_t)]
    timing: TimingArg,
    /// One JSON object per tuned class on stdout (the stored entry and every candidate).
    #[arg(long)]
    json: bool,
}

/// One tuned class as `--json` prints it.
#[derive(Serialize)]
struct ClassReport<'a> {
    class: &'a ShapeClass,
    shape: String,
    entry: Option<&'a TuneEntry>,
    candidates: Vec<CandidateReport>,
}

#[derive(Serialize)]
struct CandidateReport {
    choice: String,
    ran: String,
    median_ms: Option<f64>,
    rejected: Option<String>,
}

fn report(c: &CandidateResult) -> CandidateReport {
    CandidateReport {
        choice: c
            .choice
            .map(|c| c.describe())
            .unwrap_or_else(|| "default".into()),
        ran: c.ran.clone(),
        median_ms: c.outcome.as_ref().ok().copied(),
        rejected: c.outcome.as_ref().err().cloned(),
    }
}

/// The shapes to tune, checked before any adapter is opened.
fn specs(args: &Args) -> Result<Vec<AttentionSpec>> {
    args.shapes
        .specs()
        .into_iter()
        .map(|s| {
            s.validate(&DeviceLimits::unbounded())?;
            Ok(s)
        })
        .collect()
}

/// Runs `wgattn tune`.
pub fn run(args: Args, adapter: Option<String>) -> Result<Outcome> {
    let specs = specs(&args)?;
    let path = match &args.cache {
        Some(p) => p.clone(),
        None => tune::resolve(&TuneCacheSource::User)
            .map(|(p, _)| p)
            .ok_or_else(|| Error::TuneCache {
                path: PathBuf::new(),
                message: "no cache file: XDG_CACHE_HOME and HOME are unset (or \
                          WGATTN_TUNE_CACHE=off); give --cache PATH"
                    .into(),
            })?,
    };
    // A file that is not a tune cache is never overwritten.
    let mut file = TuneFile::read(&path)?.unwrap_or_default();
    // Candidates are timed against the untuned defaults, whatever the cache holds.
    let ctx = super::open_tuned(adapter, TuneCacheSource::Off)?;
    eprintln!("tuning on {}", super::adapter_line(&ctx));
    let config = TuneConfig {
        seconds: args.seconds,
        timing: args.timing.into(),
        ..TuneConfig::default()
    };
    let mut done: Vec<ShapeClass> = Vec::new();
    let mut rows = Vec::new();
    for spec in &specs {
        let class = ShapeClass::of(spec, ctx.caps());
        if done.contains(&class) {
            eprintln!(
                "{}: class {} already tuned in this run",
                wgattn::validation::describe(spec),
                class.describe()
            );
            continue;
        }
        done.push(class.clone());
        eprintln!(
            "{} (class {}):",
            wgattn::validation::describe(spec),
            class.describe()
        );
        let outcome = tune::tune_spec(&ctx, spec, &config, &mut |c| {
            let r = report(c);
            match (&r.median_ms, &r.rejected) {
                (Some(ms), _) => eprintln!("  {:<44} {:>10.3} ms  [{}]", r.choice, ms, r.ran),
                (_, Some(why)) => eprintln!("  {:<44} rejected: {why}", r.choice),
                _ => {}
            }
        })?;
        if args.json {
            let line = ClassReport {
                class: &outcome.class,
                shape: wgattn::validation::describe(spec),
                entry: outcome.entry.as_ref(),
                candidates: outcome.results.iter().map(report).collect(),
            };
            let text = serde_json::to_string(&line).map_err(|e| Error::TuneCache {
                path: path.clone(),
                message: format!("report: {e}"),
            })?;
            println!("{text}");
        }
        match &outcome.entry {
            Some(e) => {
                rows.push(vec![
                    class.describe(),
                    e.shape.split(' ').take(5).collect::<Vec<_>>().join(" "),
                    e.default.clone(),
                    format!("{:.3}", e.default_ms),
                    e.choice.describe(),
                    format!("{:.3}", e.median_ms),
                    format!("{:.2}", e.default_ms / e.median_ms),
                    e.timed.to_string(),
                ]);
                file.upsert(e.clone());
                // written after every class, so an interrupted run keeps what it measured
                file.write(&path)?;
            }
            None => eprintln!("  nothing passed the reference check; class left untuned"),
        }
    }
    if !args.json {
        print!(
            "{}",
            table::render(
                &[
                    "class",
                    "shape",
                    "default",
                    "default ms",
                    "tuned",
                    "tuned ms",
                    "speedup",
                    "timed"
                ],
                &rows
            )
        );
    }
    eprintln!(
        "{} class(es) stored in {} ({} entries)",
        rows.len(),
        path.display(),
        file.entries.len()
    );
    Ok(Outcome::Ok)
}
