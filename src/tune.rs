//! Autotuning: the fused-kernel choices measured fastest on one adapter, per shape class,
//! kept in a cache file that the planner consults.
//!
//! `wgattn tune` (or [`tune_spec`]) sweeps the knobs of the fused kernels on the actual adapter
//! — rows per invocation and workgroup size of the rows variant, the workgroup-tiled variant,
//! the matrix-tile variant's rows, keys, workgroup size and tile (cooperative or portable), and
//! the key-split count of split-KV for decoding — checks every candidate against the f64 CPU
//! reference on a small problem of the same class before timing it, and stores the fastest in
//! a [`TuneFile`] keyed by adapter name + backend + driver ([`AdapterKey`]) and
//! [`ShapeClass`] (storage, head_dim class, vec4 access, decoding / short / long).
//!
//! A [`Context`] reads the entries of its adapter when it opens ([`Tuning`], from
//! `ContextOptions::tune_cache`); the planner uses a tuned choice when the spec's class has
//! one that can run it, and the untuned defaults otherwise. Variants forced by
//! `ContextOptions::flash_tiles` / `flash_mma` win over tuned ones.
//!
//! The cache file (feature `tune-cache`, on in the command-line tool) is JSON, by default
//! `$XDG_CACHE_HOME/wgattn/tune.json` (else `~/.cache/wgattn/tune.json`, on Windows
//! `%LOCALAPPDATA%\wgattn\tune.json`); the `WGATTN_TUNE_CACHE` environment variable names
//! another file, or `off`. A missing file means no tuning. A default-location file that
//! cannot be read or parsed is ignored with a warning (log): attention must not stop working
//! because of a stale cache. A file named explicitly ([`TuneCacheSource::File`]) that cannot
//! be read or parsed is an error ([`Error::TuneCache`](crate::Error::TuneCache)).
//!
//! This module is the search; the choice model is the planner's, the cache file the
//! context's, and both are re-exported here.

#[cfg(not(target_arch = "wasm32"))]
use std::time::{Duration, Instant};

pub use crate::context::tune_cache::{
    AdapterKey, CACHE_ENV, CACHE_VERSION, TuneEntry, TuneFile, default_path, load, resolve,
};
pub use crate::gpu::TuneCacheSource;
pub use crate::planner::{
    LONG_ROWS, RowsClass, ShapeClass, TunedChoice, Tuning, candidates, check_spec, tunable,
};

use crate::bench::Timing;
#[cfg(not(target_arch = "wasm32"))]
use crate::error::Result;
use crate::spec::AttentionSpec;
// Tuning times candidates with the blocking runner: native targets only.
#[cfg(not(target_arch = "wasm32"))]
use crate::{
    bench::Runner,
    context::Context,
    planner::{FusedVariant, reduced_precision_applies},
    testdata::{self, Dist},
    validation::{TOL_F32, TOL_REDUCED, Tolerances},
};

/// How the tuner times candidates.
#[derive(Debug, Clone, Copy)]
pub struct TuneConfig {
    /// Untimed runs before timing.
    pub warmup: usize,
    /// Timed runs at least.
    pub min_runs: usize,
    /// Seconds of timing per candidate (runs beyond `min_runs` while time is left).
    pub seconds: f64,
    /// How to time.
    pub timing: Timing,
}

impl Default for TuneConfig {
    fn default() -> Self {
        TuneConfig {
            warmup: 1,
            min_runs: 3,
            seconds: 0.5,
            timing: Timing::Auto,
        }
    }
}

/// What happened to one candidate.
#[derive(Debug, Clone)]
pub struct CandidateResult {
    /// The candidate (`None`: the untuned default).
    pub choice: Option<TunedChoice>,
    /// What ran (the plan's variant).
    pub ran: String,
    /// Median ms, or why it was rejected (reference check failed, did not plan or run).
    pub outcome: std::result::Result<f64, String>,
}

/// The result of tuning one shape.
#[derive(Debug, Clone)]
pub struct TuneOutcome {
    /// The class tuned.
    pub class: ShapeClass,
    /// The shape timed.
    pub spec: AttentionSpec,
    /// The untuned default first, then every candidate.
    pub results: Vec<CandidateResult>,
    /// The entry to store (`None` when nothing passed, not even the default).
    pub entry: Option<TuneEntry>,
}

/// What a plan runs, in words: its variant (and splits), or its kernel
/// ([`Plan::describe`](crate::Plan::describe)).
pub fn plan_variant(plan: &crate::Plan) -> String {
    plan.describe()
}

#[cfg(not(target_arch = "wasm32"))]
/// Checks the plan of `spec` with `tuning` against the CPU reference on a small problem of
/// the same class; `Err` says why it is rejected.
fn check_candidate(
    ctx: &Context,
    spec: &AttentionSpec,
    tuning: &Tuning,
) -> std::result::Result<(), String> {
    let small = check_spec(spec);
    let plan = ctx.plan_tuned(&small, tuning).map_err(|e| e.to_string())?;
    if !tuning.is_empty() && !plan.choice().tuned {
        return Err("not applicable to the check shape".into());
    }
    let runner = Runner::from_plan(ctx, plan, Timing::Wall).map_err(|e| e.to_string())?;
    runner.run_once().map_err(|e| e.to_string())?;
    let gpu = runner.read_output().map_err(|e| e.to_string())?;
    let data = testdata::generate(&small, Dist::Normal, Runner::SEED);
    let inputs = data.inputs();
    let cpu = crate::reference::attention_with(&small, &inputs).map_err(|e| e.to_string())?;
    // f16 products where the spec allows them and they apply
    let tolerance = if reduced_precision_applies(&small, ctx.caps()) {
        TOL_REDUCED
    } else {
        TOL_F32
    };
    let tol =
        Tolerances::for_inputs(&small, &inputs, &cpu.out, tolerance).map_err(|e| e.to_string())?;
    let verdict = tol.verdict(&gpu, &cpu);
    if verdict.passed() {
        Ok(())
    } else {
        Err(format!("reference check failed: {verdict}"))
    }
}

#[cfg(not(target_arch = "wasm32"))]
/// Times the plan of `spec` with `tuning`: (median ms, what ran, timing). A candidate whose
/// first timed run is slower than `cutoff_ms` is not timed further (that run is its time).
fn time_candidate(
    ctx: &Context,
    spec: &AttentionSpec,
    tuning: &Tuning,
    config: &TuneConfig,
    cutoff_ms: f64,
) -> Result<(f64, String, &'static str)> {
    let plan = ctx.plan_tuned(&spec.clone().with_weights(false), tuning)?;
    let ran = plan_variant(&plan);
    let runner = Runner::from_plan(ctx, plan, config.timing)?;
    for _ in 0..config.warmup {
        runner.run_once()?;
    }
    let first = runner.run_once()?;
    if first > cutoff_ms {
        return Ok((first, ran, runner.timing()));
    }
    let mut times = vec![first];
    let started = Instant::now();
    let budget = Duration::from_secs_f64(config.seconds.max(0.0));
    while times.len() < config.min_runs.max(1) || started.elapsed() < budget {
        times.push(runner.run_once()?);
        if times.len() >= 1000 {
            break;
        }
    }
    Ok((median(&mut times), ran, runner.timing()))
}

#[cfg(not(target_arch = "wasm32"))]
/// Tunes `spec`'s class on `ctx`: the untuned default and every candidate are checked
/// against the reference on [`check_spec`], those that pass are timed on `spec`, the fastest
/// becomes the entry. `progress` gets one line per candidate.
pub fn tune_spec(
    ctx: &Context,
    spec: &AttentionSpec,
    config: &TuneConfig,
    progress: &mut dyn FnMut(&CandidateResult),
) -> Result<TuneOutcome> {
    spec.validate(ctx.limits())?;
    let caps = ctx.caps();
    let class = ShapeClass::of(spec, caps);
    let mut results = Vec::new();
    let mut timing = "wall";
    let mut default_ms = None;
    let mut default_ran = String::new();
    let mut seen_variants: Vec<String> = Vec::new();
    let mut best: Option<(f64, TunedChoice)> = None;
    let mut timed = 0;
    let choices = std::iter::once(None).chain(candidates(spec, caps).into_iter().map(Some));
    for choice in choices {
        let tuning = match choice {
            Some(c) => Tuning::one(class.clone(), c),
            None => Tuning::none(),
        };
        // far slower than the default after one run: not worth timing further
        let cutoff = default_ms.map_or(f64::INFINITY, |d| 4.0 * d);
        let outcome = check_candidate(ctx, spec, &tuning).and_then(|()| {
            time_candidate(ctx, spec, &tuning, config, cutoff).map_err(|e| e.to_string())
        });
        let result = match outcome {
            Ok((ms, ran, t)) => {
                timing = t;
                // a candidate that plans to what already ran (e.g. the default) is not
                // timed twice as a different choice
                let duplicate = choice.is_some() && seen_variants.contains(&ran);
                seen_variants.push(ran.clone());
                match choice {
                    None => {
                        default_ms = Some(ms);
                        default_ran = ran.clone();
                    }
                    Some(c) if !duplicate => {
                        timed += 1;
                        if best.is_none_or(|(b, _)| ms < b) {
                            best = Some((ms, c));
                        }
                    }
                    Some(_) => {}
                }
                CandidateResult {
                    choice,
                    ran,
                    outcome: Ok(ms),
                }
            }
            Err(why) => CandidateResult {
                choice,
                ran: String::new(),
                outcome: Err(why),
            },
        };
        progress(&result);
        results.push(result);
    }
    // The default wins unless a candidate is faster; its own choice is stored then (the
    // default of a class with a tunable variant), so the cache records the decision.
    let default_choice = crate::planner::plan(spec, caps)
        .ok()
        .and_then(|c| match c.variant {
            Some(FusedVariant::Decode { .. }) | None => {
                (class.rows == RowsClass::Decode).then_some(TunedChoice::Splits { shift: 0 })
            }
            Some(v) => TunedChoice::of_variant(&v),
        });
    // A candidate that beat the default in the sweep is timed again against it, alternating,
    // CONFIRM_ROUNDS times: it is stored only if the medians of those rounds still show it
    // MIN_GAIN faster (timing noise must not replace a default with a slower choice).
    let winner = match (default_ms, best) {
        (Some(d), Some((ms, c))) if ms < d => {
            let untuned = Tuning::none();
            let tuned = Tuning::one(class.clone(), c);
            let (mut ds, mut bs) = (Vec::new(), Vec::new());
            for _ in 0..CONFIRM_ROUNDS {
                ds.push(time_candidate(ctx, spec, &untuned, config, f64::INFINITY)?.0);
                bs.push(time_candidate(ctx, spec, &tuned, config, f64::INFINITY)?.0);
            }
            let (d, b) = (median(&mut ds), median(&mut bs));
            default_ms = Some(d);
            if b < d * (1.0 - MIN_GAIN) {
                Some((b, c))
            } else {
                default_choice.map(|c| (d, c))
            }
        }
        (Some(d), _) => default_choice.map(|c| (d, c)),
        (None, Some((ms, c))) => Some((ms, c)),
        (None, None) => None,
    };
    let entry = winner.map(|(ms, choice)| TuneEntry {
        adapter: AdapterKey::of(ctx.adapter_info()),
        class: class.clone(),
        choice,
        shape: crate::validation::describe(spec),
        median_ms: ms,
        default_ms: default_ms.unwrap_or(f64::NAN),
        default: default_ran.clone(),
        timed,
        timing: timing.into(),
    });
    Ok(TuneOutcome {
        class,
        spec: spec.clone(),
        results,
        entry,
    })
}

/// Rounds of the default against the sweep's winner before the winner is stored.
pub const CONFIRM_ROUNDS: usize = 3;

/// How much faster than the default (fraction of its time) a candidate must be to be stored.
pub const MIN_GAIN: f64 = 0.02;

#[cfg(not(target_arch = "wasm32"))]
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
