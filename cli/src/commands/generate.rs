//! `wgattn gen`: write a random attention case file.

use std::path::PathBuf;

use wgattn::testdata::{self, Dist};
use wgattn::{Broadcast, Error, Layout, Result};

use crate::Outcome;

/// Arguments of `wgattn gen`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Shape B,Hq,Hkv,Sq,Sk,D.
    #[arg(long, value_name = "B,Hq,Hkv,Sq,Sk,D")]
    shape: String,
    /// Output safetensors file (tensors q, k, v, optional bias, mask and out, and metadata).
    #[arg(long)]
    output: PathBuf,
    /// Layout of the tensors.
    #[arg(long, default_value = "bhsd")]
    layout: String,
    #[command(flatten)]
    flags: super::spec_flags::SpecFlags,
    /// Add a random bias tensor: shared [1,1,Sq,Sk], batch [B,1,..], head [1,Hq,..] or full.
    #[arg(long, value_name = "BROADCAST")]
    bias: Option<String>,
    /// Add a random mask tensor (every fifth query row fully masked), broadcast as for --bias.
    #[arg(long, value_name = "BROADCAST")]
    mask: Option<String>,
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

/// Parses a broadcast name: shared, batch, head or full.
pub fn broadcast(field: &str, s: &str) -> Result<Broadcast> {
    match s {
        "shared" => Ok(Broadcast::SHARED),
        "batch" => Ok(Broadcast {
            per_batch: true,
            per_head: false,
        }),
        "head" => Ok(Broadcast {
            per_batch: false,
            per_head: true,
        }),
        "full" => Ok(Broadcast::FULL),
        other => Err(Error::spec(
            field,
            other,
            "is not shared, batch, head or full",
        )),
    }
}

/// Runs `wgattn gen`.
pub fn run(args: Args) -> Result<Outcome> {
    let spec = super::bench::parse_shape(&args.shape)?.layout(Layout::parse(&args.layout)?);
    let mut spec = args.flags.apply(spec)?;
    spec.bias = args
        .bias
        .as_deref()
        .map(|b| broadcast("bias", b))
        .transpose()?;
    spec.mask = args
        .mask
        .as_deref()
        .map(|m| broadcast("mask", m))
        .transpose()?;
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
    // Sizes were checked (u64, no wrap) by validate; now make sure the host can hold what
    // gen allocates — the tensors, and the file image written from them — before allocating.
    let bytes = spec.sizes()?.host_bytes(args.with_out).saturating_mul(2);
    let mut probe: Vec<u8> = Vec::new();
    if usize::try_from(bytes)
        .ok()
        .is_none_or(|n| probe.try_reserve_exact(n).is_err())
    {
        return Err(Error::spec(
            "shape",
            &args.shape,
            format!(
                "needs {bytes} bytes of host memory (tensors and file image), more than can be allocated"
            ),
        ));
    }
    drop(probe);
    let data = testdata::generate(&spec, dist, args.seed);
    let out = if args.with_out {
        Some(wgattn::reference::attention_with(&spec, &data.inputs())?.out)
    } else {
        None
    };
    wgattn::io::write_case_with(
        &args.output,
        &spec,
        &data.q,
        &data.k,
        &data.v,
        data.bias.as_deref(),
        data.mask.as_deref(),
        out.as_deref(),
    )?;
    println!(
        "wrote {} ({})",
        args.output.display(),
        wgattn::validation::describe(&spec)
    );
    Ok(Outcome::Ok)
}
