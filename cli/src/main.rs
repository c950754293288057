//! `wgattn`: run, validate and inspect attention on any GPU through wgpu.

use wgattn_cli::{Outcome, commands};

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Scaled dot-product attention on any GPU through wgpu.
///
/// Exit codes: 0 ok, 1 numbers out of tolerance, 2 bad usage or bad input,
/// 3 no adapter or GPU error.
#[derive(Parser, Debug)]
#[command(name = "wgattn", version, about, long_about = None)]
struct Cli {
    /// Use the adapter whose "name backend" contains this (case-insensitive); overrides
    /// WGATTN_ADAPTER.
    #[arg(long, global = true, value_name = "SUBSTR")]
    adapter: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List adapters, the chosen one, and the features and limits wgattn uses.
    Info(commands::info::Args),
    /// Run attention on a safetensors file (q, k, v + metadata) and write `out`.
    Run(commands::run::Args),
    /// Compare the GPU with the CPU reference on a shape grid and on case files.
    Validate(commands::validate::Args),
    /// Run attention at 1×8×512×64 on the default adapter and compare with the CPU reference.
    Demo(commands::demo::Args),
    /// Time attention shapes on the GPU (timestamp queries or wall time).
    Bench(commands::bench::Args),
    /// Find the fastest kernel variants for shapes on this adapter and store them in the tune
    /// cache the planner reads.
    Tune(commands::tune::Args),
    /// Write a random case file (q, k, v, optionally the reference `out`).
    Gen(commands::generate::Args),
    /// Draw one head's attention weights, computed on the GPU, as a PNG or SVG heat map.
    Heatmap(commands::heatmap::Args),
    /// Draw median time and GFLOP/s per shape from `wgattn bench --json` files (SVG or PNG).
    Plot(commands::plot::Args),
}

/// Mesa's Vulkan and EGL loaders print "XDG_RUNTIME_DIR is invalid or not set" on every
/// adapter probe when the variable is unset (containers, CI, `sudo`). Point it at a private
/// folder of ours in that case; nothing is written there.
fn quiet_mesa_loader() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    let dir = std::env::temp_dir().join("wgattn-xdg-runtime");
    if std::fs::create_dir_all(&dir).is_ok() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        // SAFETY: called first thing in `main`, before any other thread exists.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
    }
}

fn main() -> ExitCode {
    quiet_mesa_loader();
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("wgattn=warn,wgattn_cli=warn"),
    )
    .init();
    let cli = Cli::parse();
    let adapter = cli.adapter.clone();
    let result = match cli.command {
        Command::Info(a) => commands::info::run(a, adapter),
        Command::Run(a) => commands::run::run(a, adapter),
        Command::Validate(a) => commands::validate::run(a, adapter),
        Command::Demo(a) => commands::demo::run(a, adapter),
        Command::Bench(a) => commands::bench::run(a, adapter),
        Command::Tune(a) => commands::tune::run(a, adapter),
        Command::Gen(a) => commands::generate::run(a),
        Command::Heatmap(a) => commands::heatmap::run(a, adapter),
        Command::Plot(a) => commands::plot::run(a),
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::OutOfTolerance) => ExitCode::from(1),
        Err(e) => {
            eprintln!("wgattn: error: {e}");
            ExitCode::from(if e.is_input_error() { 2 } else { 3 })
        }
    }
}
