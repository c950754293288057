//! The `wgattn` command-line tool: its subcommands and the modules only it needs (tables,
//! heat maps, benchmark plots, JSON reports). The attention engine itself is the `wgattn` library crate.

pub mod bench_plot;
pub mod commands;
pub mod heatmap;
pub mod picture;
pub mod report;
pub mod table;

/// What a command ends with when it does not fail: success, or numbers out of tolerance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything ran and every number is within tolerance (exit 0).
    Ok,
    /// Everything ran but some number is out of tolerance (exit 1).
    OutOfTolerance,
}
