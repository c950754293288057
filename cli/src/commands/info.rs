//! `wgattn info`: adapters, the chosen one, features and limits.

use wgattn::{AdapterSummary, Result};

use crate::Outcome;
use crate::report::{self, AdapterInfoRecord, InfoReport};

/// Arguments of `wgattn info`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `wgattn info`.
pub fn run(args: Args, adapter: Option<String>) -> Result<Outcome> {
    let all = wgattn::adapter_summaries();
    let ctx = super::open(adapter)?;
    let chosen = ctx.adapter_info();
    let is_chosen =
        |s: &AdapterSummary| s.info.name == chosen.name && s.info.backend == chosen.backend;
    if args.json {
        let adapters = all
            .iter()
            .map(|s| AdapterInfoRecord::new(s, is_chosen(s)))
            .collect();
        println!("{}", report::pretty(&InfoReport { adapters }));
        return Ok(Outcome::Ok);
    }
    println!("adapters (best first):");
    for s in &all {
        let mark = if is_chosen(s) { "*" } else { " " };
        println!(
            " {mark} {} | {:?} | {:?} | {} {}",
            s.info.name, s.info.backend, s.info.device_type, s.info.driver, s.info.driver_info
        );
        println!("     features: {}", s.feature_names().join(", "));
        for v in s.caps.variants() {
            println!("     {v}");
        }
        let l = &s.limits;
        println!(
            "     limits: storage binding {} B, buffer {} B, workgroup storage {} B, {} invocations, {} storage buffers/stage",
            l.max_storage_binding,
            l.max_buffer_size,
            l.max_workgroup_storage,
            l.max_invocations,
            l.max_storage_buffers_per_stage
        );
    }
    println!("chosen: {}", super::adapter_line(&ctx));
    Ok(Outcome::Ok)
}
