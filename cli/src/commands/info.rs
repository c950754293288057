//! `wgattn info`: adapters, the chosen one, features and limits.

use serde_json::json;
use wgattn::{AdapterSummary, Result};

use crate::Outcome;

/// Arguments of `wgattn info`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn summary_json(s: &AdapterSummary, chosen: bool) -> serde_json::Value {
    let l = &s.limits;
    json!({
        "name": s.info.name,
        "backend": format!("{:?}", s.info.backend).to_lowercase(),
        "device_type": format!("{:?}", s.info.device_type),
        "driver": s.info.driver,
        "driver_info": s.info.driver_info,
        "chosen": chosen,
        "features": s.feature_names(),
        "subgroup_size": s.caps.subgroup_size,
        "variants": s.caps.variants(),
        "limits": {
            "max_storage_buffer_binding_size": l.max_storage_binding,
            "max_buffer_size": l.max_buffer_size,
            "max_compute_workgroup_storage_size": l.max_workgroup_storage,
            "max_compute_invocations_per_workgroup": l.max_invocations,
            "max_compute_workgroups_per_dimension": l.max_workgroups_per_dim,
            "max_storage_buffers_per_shader_stage": l.max_storage_buffers_per_stage,
            "min_storage_buffer_offset_alignment": l.storage_offset_alignment,
        },
    })
}

/// Runs `wgattn info`.
pub fn run(args: Args, adapter: Option<String>) -> Result<Outcome> {
    let all = wgattn::adapter_summaries();
    let ctx = super::open(adapter)?;
    let chosen = ctx.adapter_info();
    let is_chosen =
        |s: &AdapterSummary| s.info.name == chosen.name && s.info.backend == chosen.backend;
    if args.json {
        let adapters: Vec<_> = all.iter().map(|s| summary_json(s, is_chosen(s))).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "adapters": adapters })).unwrap_or_default()
        );
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
