//! `wgattn plot`: draw the results of `wgattn bench --json` files.

use std::path::PathBuf;

use wgattn::Result;

use crate::Outcome;
use crate::bench_plot::{self, PlotData};
use crate::picture::Format;

/// Arguments of `wgattn plot`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files written by `wgattn bench --json` (one JSON object per line, or a JSON array).
    #[arg(required = true, value_name = "RESULTS.json")]
    inputs: Vec<PathBuf>,
    /// The picture: median time and GFLOP/s per shape, one series per kernel, adapter and
    /// dtype (.svg or .png).
    #[arg(long, value_name = "FILE.svg|png")]
    output: PathBuf,
}

/// Runs `wgattn plot`.
pub fn run(args: Args) -> Result<Outcome> {
    Format::of(&args.output)?;
    let mut records = Vec::new();
    for f in &args.inputs {
        records.extend(bench_plot::read_records(f)?);
    }
    let data = PlotData::new(&records);
    bench_plot::write(&args.output, &data)?;
    println!(
        "wrote {} ({} results: {} shapes, {} series)",
        args.output.display(),
        records.len(),
        data.shapes.len(),
        data.series.len()
    );
    Ok(Outcome::Ok)
}
