//! The one error type of the crate.

use std::path::PathBuf;

/// One problem found in an [`AttentionSpec`](crate::AttentionSpec): the field, its value and why
/// it is rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// The field, e.g. `"kv_lens[1]"` or `"head_dim"`.
    pub field: String,
    /// The rejected value as text.
    pub value: String,
    /// Why the value is rejected, e.g. `"exceeds seq_k = 33"`.
    pub reason: String,
}

impl std::fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} = {} {}", self.field, self.value, self.reason)
    }
}

fn join_problems(problems: &[SpecProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Everything that can go wrong in wgattn. Every public fallible function returns this type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The attention spec is invalid; every problem found is listed.
    #[error("invalid attention spec: {}", join_problems(.problems))]
    InvalidSpec {
        /// All problems found, in field order.
        problems: Vec<SpecProblem>,
    },
    /// A host slice has the wrong number of elements.
    #[error("tensor `{tensor}` has {got} elements, expected {expected} ({shape})")]
    InputLength {
        /// Tensor name (`q`, `k`, `v`, ...).
        tensor: &'static str,
        /// Elements expected from the spec.
        expected: usize,
        /// Elements given.
        got: usize,
        /// The expected shape, as text.
        shape: String,
    },
    /// A host input holds NaN or ±Inf. The host path rejects them; see the README.
    #[error("tensor `{tensor}` holds a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        /// Tensor name.
        tensor: &'static str,
        /// Flat index of the first non-finite element.
        index: usize,
        /// The value found.
        value: f32,
    },
    /// Finite host inputs whose logits (or their f32 intermediates) could overflow f32, which
    /// would turn rows into NaN. Found from a cheap bound (max |q|, max |k|, scale, head_dim,
    /// largest bias, ALiBi); see the README.
    #[error(
        "logits may overflow f32: {detail} = {bound:.3e} exceeds {limit:.3e}; rescale q, k, the scale or the bias"
    )]
    LogitOverflow {
        /// The bound that is too large, as a formula with its values.
        detail: String,
        /// Its value.
        bound: f64,
        /// The largest value accepted.
        limit: f64,
    },
    /// A caller-owned GPU buffer is too small or lacks a usage flag.
    #[error("buffer `{buffer}`: {problem}")]
    BadBuffer {
        /// Which buffer of [`Buffers`](crate::Buffers).
        buffer: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The problem does not fit the device, even after splitting it.
    #[error("{what} needs {needed} but the device allows {allowed} ({limit})")]
    TooLarge {
        /// What was being sized.
        what: String,
        /// The size needed.
        needed: u64,
        /// The device's limit.
        allowed: u64,
        /// Name of the wgpu limit.
        limit: &'static str,
    },
    /// The requested kernel cannot run this spec (for example weights from a fused kernel).
    #[error("kernel {kernel} cannot run this spec: {reason}")]
    KernelUnsupported {
        /// The kernel asked for.
        kernel: String,
        /// Why not.
        reason: String,
    },
    /// No GPU adapter was found, or none matched the filter.
    #[error("no GPU adapter{}{}", .filter.as_ref().map(|f| format!(" matching `{f}`")).unwrap_or_default(), if .available.is_empty() { String::new() } else { format!(" (available: {})", .available.join(", ")) })]
    NoAdapter {
        /// The `WGATTN_ADAPTER` / `--adapter` filter, if any.
        filter: Option<String>,
        /// Names of the adapters that exist.
        available: Vec<String>,
    },
    /// The adapter refused to create a device.
    #[error("could not create a device on `{adapter}`: {message}")]
    RequestDevice {
        /// Adapter name.
        adapter: String,
        /// wgpu's message.
        message: String,
    },
    /// wgpu reported a validation, out-of-memory or internal error, or the device was lost.
    #[error("GPU error during {during}: {message}")]
    Gpu {
        /// What wgattn was doing.
        during: &'static str,
        /// wgpu's message.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The tune cache file cannot be read, is not a tune cache, or has another version.
    #[error("tune cache {}: {message}", .path.display())]
    TuneCache {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor file is malformed, truncated, or lacks what is needed.
    #[error("{}: {message}", .path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A shader template could not be specialised, or the compiler rejected the rendered
    /// shader (a bug in wgattn, reported instead of panicking); compiler positions are
    /// followed by the template line they come from, e.g. `[fused/rows.wgsl:123]`.
    #[error("shader `{shader}`: {message}")]
    Shader {
        /// Template name.
        shader: String,
        /// What went wrong.
        message: String,
    },
    /// A layer's configuration (or a call's shape) is invalid.
    #[error("invalid layer: {field}: {problem}")]
    InvalidLayer {
        /// The field or argument, e.g. `"num_kv_heads"`.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A layer weight is missing or does not fit the layer.
    #[error("weight `{tensor}`: {problem}")]
    Weight {
        /// The tensor's name (in the file when loaded by name).
        tensor: String,
        /// What is wrong, e.g. the shape found and the shape expected.
        problem: String,
    },
}

impl Error {
    /// Shorthand for a one-problem [`Error::InvalidSpec`].
    pub fn spec(field: impl Into<String>, value: impl ToString, reason: impl Into<String>) -> Self {
        Error::InvalidSpec {
            problems: vec![SpecProblem {
                field: field.into(),
                value: value.to_string(),
                reason: reason.into(),
            }],
        }
    }

    /// True for errors caused by the caller's input (exit code 2 in the CLI); false for device
    /// and GPU errors (exit code 3).
    pub fn is_input_error(&self) -> bool {
        !matches!(
            self,
            Error::NoAdapter { .. }
                | Error::RequestDevice { .. }
                | Error::Gpu { .. }
                | Error::Shader { .. }
        )
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
