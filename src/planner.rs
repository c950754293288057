//! The kernel planner: the one place that decides which kernel runs a spec.
//!
//! Rule: an explicit kernel in the spec is used as is (after checking it can run the spec);
//! `Auto` picks the three-pass kernel, which handles every spec.

use crate::context::Context;
use crate::error::Result;
use crate::spec::{AttentionSpec, Kernel};

/// The kernel that will run `spec` on `ctx` (never `Auto`).
pub fn choose(spec: &AttentionSpec, _ctx: &Context) -> Result<Kernel> {
    Ok(match spec.kernel {
        Kernel::Auto | Kernel::ThreePass => Kernel::ThreePass,
    })
}
