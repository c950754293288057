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

/// One line naming the adapter of a context.
pub fn adapter_line(ctx: &Context) -> String {
    let i = ctx.adapter_info();
    format!(
        "{} ({:?}, {:?}, {} {})",
        i.name, i.backend, i.device_type, i.driver, i.driver_info
    )
}
