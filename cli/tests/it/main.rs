//! Tests of the `wgattn` command-line tool: the real binary, its files and pictures.

mod cli;
mod common;
mod grad;
mod heatmap;
mod quiet;
mod tune;
