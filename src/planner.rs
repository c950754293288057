//! The kernel planner: the one place that decides which kernel runs a spec.
//!
//! The rule behind [`Kernel::Auto`]:
//! 1. The probability matrix is asked for → three-pass (the only kernel that stores it).
//! 2. Decoding (`seq_q ≤ 16`), when the device has the decoding variant (fixed subgroups of 8,
//!    16 or 32 and at most 8 query rows per kv head: lanes split head_dim, K/V rows are read
//!    contiguously) or when splitting the keys gives the device more workgroups (see
//!    [`split_count`]) → split-KV, with as many key splits as [`split_count`] says (one split
//!    means no combine pass).
//! 3. Otherwise → flash: it never stores the Sq×Sk score matrix, so its memory is O(B·H·S·D)
//!    and on the adapters measured it is faster than three-pass at every size (BENCHMARKS.md).
//!
//! An explicit kernel is used as asked, after checking it can run the spec.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::flash::{Tiles, choose_splits};

/// True when split-KV would use the decoding variant for `spec` on `ctx`.
pub fn has_decode_variant(spec: &AttentionSpec, ctx: &Context) -> bool {
    Tiles::decode(spec, ctx.caps()).is_some()
}
use crate::spec::{AttentionSpec, Kernel};

/// Largest `seq_q` that counts as decoding for `Auto`.
pub const DECODE_MAX_SEQ_Q: usize = 16;

/// The planner's decision: a kernel and its key splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The kernel (never `Auto`).
    pub kernel: Kernel,
    /// Key splits (1 except for split-KV).
    pub splits: u32,
}

/// How many key splits split-KV would use for `spec` on `ctx`.
pub fn split_count(spec: &AttentionSpec, ctx: &Context) -> u32 {
    let caps = ctx.caps();
    let tiles = Tiles::decode(spec, caps).unwrap_or_else(|| Tiles::choose(spec, caps));
    choose_splits(spec, &tiles, caps)
}

/// The kernel and splits that will run `spec` on `ctx`.
pub fn plan_kernel(spec: &AttentionSpec, ctx: &Context) -> Result<Choice> {
    let fused_cannot = |kernel: Kernel| -> Result<()> {
        if spec.return_weights {
            return Err(Error::KernelUnsupported {
                kernel: kernel.name().into(),
                reason:
                    "it never forms the probability matrix; use three-pass (or auto) for weights"
                        .into(),
            });
        }
        Ok(())
    };
    let choice = |kernel, splits| Ok(Choice { kernel, splits });
    match spec.kernel {
        Kernel::ThreePass => choice(Kernel::ThreePass, 1),
        Kernel::Flash => {
            fused_cannot(Kernel::Flash)?;
            choice(Kernel::Flash, 1)
        }
        Kernel::SplitKv => {
            fused_cannot(Kernel::SplitKv)?;
            choice(Kernel::SplitKv, split_count(spec, ctx).max(2))
        }
        Kernel::Auto => {
            if spec.return_weights {
                return choice(Kernel::ThreePass, 1);
            }
            let splits = split_count(spec, ctx);
            if spec.seq_q <= DECODE_MAX_SEQ_Q && (splits > 1 || has_decode_variant(spec, ctx)) {
                choice(Kernel::SplitKv, splits)
            } else {
                choice(Kernel::Flash, 1)
            }
        }
    }
}

/// The kernel that will run `spec` on `ctx` (never `Auto`).
pub fn choose(spec: &AttentionSpec, ctx: &Context) -> Result<Kernel> {
    plan_kernel(spec, ctx).map(|c| c.kernel)
}
