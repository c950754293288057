//! One module per subcommand.

pub mod bench;
pub mod demo;
pub mod generate;
pub mod grad;
pub mod heatmap;
pub mod info;
pub mod plot;
pub mod run;
pub mod spec_flags;
pub mod tune;
pub mod validate;
pub mod values;

use wgattn::{Context, ContextOptions, Result};

/// Opens the context for a command: `--adapter` wins over `WGATTN_ADAPTER`.
pub fn open(adapter: Option<String>) -> Result<Context> {
    Context::with_options(ContextOptions {
        adapter,
        ..Default::default()
    })
}

/// Opens the context for a command with the tuned choices of `tune_cache`.
pub fn open_tuned(adapter: Option<String>, tune_cache: wgattn::TuneCacheSource) -> Result<Context> {
    Context::with_options(ContextOptions {
        adapter,
        tune_cache,
        ..Default::default()
    })
}

/// One line naming the adapter of a context.
pub fn adapter_line(ctx: &Context) -> String {
    let i = ctx.adapter_info();
    format!(
        "{} ({:?}, {:?}, {} {})",
        i.name, i.backend, i.device_type, i.driver, i.driver_info
    )
}
