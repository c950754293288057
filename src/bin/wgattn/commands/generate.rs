//! `wgattn gen`: write a random attention case file.

use std::path::PathBuf;

use wgattn::testdata::{self, Dist};
use wgattn::{CausalAlign, Error, Layout, Result};

use crate::Outcome;

/// Arguments of `wgattn gen`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Shape B,Hq,Hkv,Sq,Sk,D.
    #[arg(long, value_name = "B,Hq,Hkv,Sq,Sk,D")]
    shape: String,
    /// Output safetensors file (tensors q, k, v and metadata).
    #[arg(long)]
    output: PathBuf,
    /// Layout of the tensors.
    #[arg(long, default_value = "bhsd")]
    layout: String,
    /// Causal mask recorded in the metadata: top-left or bottom-right.
    #[arg(long)]
    causal: Option<String>,
    /// Input distribution: normal, normal30 or offset3.
    #[arg(long, default_value = "normal")]
    dist: String,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also store the CPU reference output as `out` (makes a validation case).
    #[arg(long)]
    with_out: bool,
}

/// Runs `wgattn gen`.
pub fn run(args: Args) -> Result<Outcome> {
    let mut spec = super::bench::parse_shape(&args.shape)?.layout(Layout::parse(&args.layout)?);
    if let Some(c) = &args.causal {
        spec = spec.causal(CausalAlign::parse(c)?);
    }
    spec.validate(&wgattn::DeviceLimits::unbounded())?;
    let dist = match args.dist.as_str() {
        "normal" => Dist::Normal,
        "normal30" => Dist::Normal30,
        "offset3" => Dist::Offset3,
        other => {
            return Err(Error::spec(
                "dist",
                other,
                "is not normal, normal30 or offset3",
            ));
        }
    };
    let (q, k, v) = testdata::inputs(&spec, dist, args.seed);
    let out = if args.with_out {
        Some(wgattn::reference::attention(&spec, &q, &k, &v)?.out)
    } else {
        None
    };
    wgattn::io::write_case(&args.output, &spec, &q, &k, &v, out.as_deref())?;
    println!(
        "wrote {} ({})",
        args.output.display(),
        wgattn::validation::describe(&spec)
    );
    Ok(Outcome::Ok)
}
