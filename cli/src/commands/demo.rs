//! `wgattn demo`: attention at 1×8×512×64 on the default adapter against the CPU reference.

use std::time::Instant;

use wgattn::testdata::{self, Dist};
use wgattn::{AttentionSpec, Result};

use crate::Outcome;

/// Arguments of `wgattn demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Timed GPU runs after one warm-up, at least 1.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
}

/// Runs `wgattn demo`.
pub fn run(args: Args, adapter: Option<String>) -> Result<Outcome> {
    let ctx = super::open(adapter)?;
    let spec = AttentionSpec::new(1, 8, 8, 512, 512, 64).with_lse(true);
    let (q, k, v) = testdata::inputs(&spec, Dist::Normal, 42);
    println!("adapter: {}", super::adapter_line(&ctx));
    println!(
        "shape:   B=1 H=8 S=512 D=64 (f32, {})",
        wgattn::planner::choose(&spec, &ctx)?
    );
    let mut out = ctx.attention(&spec, &q, &k, &v)?; // warm-up: compiles shaders
    let mut times = Vec::new();
    for _ in 0..args.runs {
        let t = Instant::now();
        out = ctx.attention(&spec, &q, &k, &v)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let t = Instant::now();
    let cpu = wgattn::reference::attention(&spec, &q, &k, &v)?;
    let cpu_time = t.elapsed().as_secs_f64();
    let tol = wgattn::validation::TOL_F32;
    let inputs = wgattn::Inputs::new(&q, &k, &v);
    let verdict =
        wgattn::validation::Tolerances::new(&spec, &inputs, tol, None).verdict(&out, &cpu);
    println!(
        "GPU:     {:.2} ms median of {} (wall, upload + compute + readback), {:.2} GFLOP/s",
        median * 1e3,
        times.len(),
        spec.flops() / median / 1e9
    );
    println!("CPU f64 reference: {:.1} ms", cpu_time * 1e3);
    println!(
        "error vs reference: max_abs {:.3e}, {verdict}",
        verdict.out.stats.max_abs
    );
    Ok(if verdict.passed() {
        Outcome::Ok
    } else {
        Outcome::OutOfTolerance
    })
}
