//! Tuned choices on the adapter: a choice in a cache file is what the planner uses (and it
//! matches the reference), the tuner checks and times candidates and its entry round-trips
//! through the cache, a corrupt cache file named explicitly is a typed error, and
//! `TuneCacheSource::Off` gives the untuned defaults.

use crate::common;

use wgattn::bench::{self, BenchConfig};
use wgattn::testdata::Dist;
use wgattn::tune::{self, AdapterKey, ShapeClass, TuneConfig, TuneEntry, TuneFile, TunedChoice};
use wgattn::{AttentionSpec, Context, ContextOptions, Error, TuneCacheSource};

fn with_cache(path: &std::path::Path) -> Context {
    Context::with_options(ContextOptions {
        tune_cache: TuneCacheSource::File(path.to_path_buf()),
        ..Default::default()
    })
    .expect("context with a tune cache")
}

/// A choice unlike the untuned default for `spec` on `ctx`.
fn other_choice(ctx: &Context, spec: &AttentionSpec) -> TunedChoice {
    let untuned = wgattn::planner::plan(spec, ctx.caps()).unwrap();
    let candidates = tune::candidates(spec, ctx.caps());
    *candidates
        .iter()
        .find(|c| c.variant(spec, ctx.caps()) != untuned.variant)
        .expect("a candidate other than the default")
}

#[test]
fn a_cached_choice_is_used_and_matches_the_reference() {
    let Some(plain) = common::ctx() else { return };
    let spec = AttentionSpec::new(1, 4, 2, 100, 130, 48);
    let choice = other_choice(plain, &spec);
    let path = common::tmp_in("tuning", "used.json");
    let mut file = TuneFile::default();
    file.upsert(TuneEntry {
        adapter: AdapterKey::of(plain.adapter_info()),
        class: ShapeClass::of(&spec, plain.caps()),
        choice,
        shape: "test".into(),
        median_ms: 1.0,
        default_ms: 2.0,
        default: "test".into(),
        timed: 1,
        timing: "wall".into(),
    });
    file.write(&path).unwrap();
    let ctx = with_cache(&path);
    assert_eq!(ctx.tuning().choices.len(), 1);
    let plan = ctx.plan(&spec).unwrap();
    assert!(plan.choice().tuned, "{:?}", plan.choice());
    assert_eq!(
        plan.choice().variant,
        choice.variant(&spec, ctx.caps()),
        "{choice:?}"
    );
    common::check(&ctx, &spec.clone().with_lse(true), Dist::Normal, 3);
    // benchmarks say so
    let config = BenchConfig {
        warmup: 0,
        min_runs: 1,
        max_runs: 1,
        target: std::time::Duration::ZERO,
        timing: bench::Timing::Wall,
    };
    let r = bench::bench(&ctx, &spec, &config, &mut |_, _| {}).unwrap();
    assert!(r.tuned);
    assert_eq!(r.variant, tune::plan_variant(&plan));
    // other classes keep the defaults
    let other = AttentionSpec::new(1, 4, 2, 100, 130, 128);
    assert!(!ctx.plan(&other).unwrap().choice().tuned);
    // and a context without the cache is untuned
    let off = Context::with_options(ContextOptions {
        tune_cache: TuneCacheSource::Off,
        ..Default::default()
    })
    .unwrap();
    assert!(off.tuning().is_empty());
    let r = bench::bench(&off, &spec, &config, &mut |_, _| {}).unwrap();
    assert!(!r.tuned);
}

#[test]
fn a_corrupt_cache_file_is_a_typed_error() {
    if common::ctx().is_none() {
        return;
    }
    let path = common::tmp_in("tuning", "corrupt.json");
    std::fs::write(&path, "{\"version\": 1, \"entries\": [ {\"oops\": 3} ]}").unwrap();
    match Context::with_options(ContextOptions {
        tune_cache: TuneCacheSource::File(path.clone()),
        ..Default::default()
    }) {
        Err(Error::TuneCache { path: p, message }) => {
            assert_eq!(p, path);
            assert!(message.contains("not a tune cache"), "{message}");
        }
        Err(e) => panic!("expected Error::TuneCache, got {e}"),
        Ok(_) => panic!("expected Error::TuneCache, got a context"),
    }
    // a missing file is no tuning
    let missing = common::tmp_in("tuning", "missing.json");
    assert!(with_cache(&missing).tuning().is_empty());
}

/// The tuner on a small shape: the default and every candidate are checked against the
/// reference and timed, the entry names one that passed, and stored it is what plans use.
#[test]
fn the_tuner_checks_times_and_stores_a_choice() {
    let Some(ctx) = common::ctx() else { return };
    for spec in [
        AttentionSpec::new(1, 2, 1, 40, 64, 16),
        AttentionSpec::new(1, 4, 2, 1, 600, 32).dtype(wgattn::DType::F16),
    ] {
        let config = TuneConfig {
            warmup: 0,
            min_runs: 1,
            seconds: 0.0,
            timing: bench::Timing::Wall,
        };
        let mut lines = 0;
        let outcome = tune::tune_spec(ctx, &spec, &config, &mut |_| lines += 1).unwrap();
        assert_eq!(lines, outcome.results.len());
        assert!(outcome.results[0].choice.is_none(), "the default first");
        assert!(
            outcome.results[0].outcome.is_ok(),
            "{:?}",
            outcome.results[0]
        );
        assert!(outcome.results.len() >= 5, "{}", outcome.results.len());
        let entry = outcome.entry.expect("an entry");
        assert!(entry.median_ms <= entry.default_ms);
        // the entry is a candidate that passed the check, or the default's own choice
        let passed = outcome
            .results
            .iter()
            .any(|r| r.choice == Some(entry.choice) && r.outcome.is_ok());
        assert!(passed || entry.median_ms == entry.default_ms, "{entry:?}");
        let path = common::tmp_in("tuning", &format!("tuner-{}.json", spec.seq_q));
        let mut file = TuneFile::default();
        file.upsert(entry.clone());
        file.write(&path).unwrap();
        let tuned = with_cache(&path);
        let plan = tuned.plan(&spec).unwrap();
        assert!(plan.choice().tuned);
        let case = wgattn::validation::GridCase {
            name: "tuned".into(),
            spec: spec.clone(),
            dist: Dist::Normal,
            seed: 5,
        };
        common::run_cases(&tuned, wgattn::Kernel::Auto, &[case]);
    }
}
