//! `wgattn gen`: write a random attention case file.

use std::path::PathBuf;

use wgattn::Result;
use wgattn::testdata::{self, Dist};

use super::values::{self, BroadcastArg, DistArg, LayoutArg, Shape};
use crate::Outcome;

/// Arguments of `wgattn gen`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Shape B,Hq,Hkv,Sq,Sk,D.
    #[arg(long, value_name = "B,Hq,Hkv,Sq,Sk,D", value_parser = values::shape,
          allow_hyphen_values = true)]
    shape: Shape,
    /// Output safetensors file (tensors q, k, v, optional bias, mask and out, and metadata).
    #[arg(long)]
    output: PathBuf,
    /// Layout of the tensors.
    #[arg(long, value_enum, default_value_t)]
    layout: LayoutArg,
    #[command(flatten)]
    flags: super::spec_flags::SpecFlags,
    /// Add a random bias tensor of this broadcast.
    #[arg(long, value_enum, value_name = "BROADCAST")]
    bias: Option<BroadcastArg>,
    /// Add a random mask tensor (every fifth query row fully masked), broadcast as for --bias.
    #[arg(long, value_enum, value_name = "BROADCAST")]
    mask: Option<BroadcastArg>,
    /// Input distribution.
    #[arg(long, value_enum, default_value_t)]
    dist: DistArg,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also store the CPU reference output as `out` (makes a validation case).
    #[arg(long)]
    with_out: bool,
}

/// Runs `wgattn gen`.
pub fn run(args: Args) -> Result<Outcome> {
    let mut spec = args
        .flags
        .apply(args.shape.spec().layout(args.layout.into()));
    spec.bias = args.bias.map(Into::into);
    spec.mask = args.mask.map(Into::into);
    spec.validate(&wgattn::DeviceLimits::unbounded())?;
    let dist: Dist = args.dist.into();
    // Sizes were checked (u64, no wrap) by validate; now make sure the host can hold what
    // gen allocates — the tensors, and the file image written from them — before allocating.
    let bytes = spec.sizes()?.host_bytes(args.with_out).saturating_mul(2);
    let mut probe: Vec<u8> = Vec::new();
    if usize::try_from(bytes)
        .ok()
        .is_none_or(|n| probe.try_reserve_exact(n).is_err())
    {
        return Err(wgattn::Error::spec(
            "shape",
            {
                let s = &args.shape;
                format!(
                    "{},{},{},{},{},{}",
                    s.batch, s.q_heads, s.kv_heads, s.seq_q, s.seq_k, s.head_dim
                )
            },
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
