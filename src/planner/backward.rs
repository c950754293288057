//! The backward pass's kernels (`shaders/backward/`): how each row's softmax normaliser is
//! obtained ([`BackwardMode`]), the compile key of each pass (template, register-row class,
//! flags, bindings) and its workgroup grid. Pure: the launcher is `kernels::backward`.

use super::Storage;
use super::catalog::{all_flag_sets, modifier_flags, storage_flags};
use crate::shader::{Binding, Flag, ShaderVariant};
use crate::spec::AttentionSpec;

/// How the backward pass gets each row's softmax normaliser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackwardMode {
    /// The pre-pass recomputes each row's largest logit m and l = Σ exp(s − m), and
    /// D = Σ P·dP, in one online-softmax sweep over the row's keys, with logits computed
    /// bit-identically to the other passes. P = exp(s − m − log l) is then consistent to the
    /// last bit (Σ P = 1, Σ dS = 0 in f32), which keeps the gradients within 1e-4 of the f64
    /// reference when logits are ~10³. Costs one more QKᵀ and dO·Vᵀ sweep (about 9 instead of
    /// 7 matrix products, +30%). The forward's out and lse are checked but not read.
    #[default]
    Recompute,
    /// FlashAttention-2's scheme: P = exp(s − lse) with the forward's lse and
    /// D = rowsum(dO ∘ O) from the forward's out. Cheaper, but P inherits the f32 rounding of
    /// both the forward's and the backward's logits: with logits of order 10³ the gradients'
    /// relative error grows to ~1e-3..1e-2 (near-one-hot rows, where dS nearly cancels).
    ForwardLse,
}

/// Invocations per workgroup of every backward kernel.
pub(crate) const WG: u32 = 64;

/// Register-row lengths (in vec4, unrolled) the dq / dkv kernels are compiled for: head_dim
/// ≤ 16, 32, 64, 128, 256.
const D4_CLASSES: [u32; 5] = [4, 8, 16, 32, 64];

/// The four backward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// D = rowsum(dO ∘ O).
    Prep,
    /// dk, dv per key row.
    Dkv,
    /// dq per query row.
    Dq,
    /// dbias per element of the bias's broadcast shape.
    Dbias,
}

impl Pass {
    fn template(self) -> &'static str {
        match self {
            Pass::Prep => "backward/row_stats.wgsl",
            Pass::Dkv => "backward/dkv.wgsl",
            Pass::Dq => "backward/dq.wgsl",
            Pass::Dbias => "backward/dbias.wgsl",
        }
    }
}

/// The register-row length (vec4s) for `head_dim`.
fn d4_for(head_dim: usize) -> u32 {
    let need = head_dim.div_ceil(4) as u32;
    D4_CLASSES
        .into_iter()
        .find(|&c| c >= need)
        .unwrap_or(D4_CLASSES[D4_CLASSES.len() - 1])
}

/// The variant of `pass` for `spec` with `storage`; `recompute` selects the pre-pass that
/// recomputes the row statistics (see [`BackwardMode`]).
pub(crate) fn variant(
    pass: Pass,
    spec: &AttentionSpec,
    storage: Storage,
    recompute: bool,
) -> ShaderVariant {
    let mut v = ShaderVariant::new(pass.template());
    if matches!(pass, Pass::Dkv | Pass::Dq) || (pass == Pass::Prep && recompute) {
        v = v.constant("D4", d4_for(spec.head_dim));
    }
    let v = v
        .flag(Flag::RECOMPUTE, pass == Pass::Prep && recompute)
        .flag(Flag::VEC4, spec.head_dim.is_multiple_of(4));
    let v = storage_flags(v, storage);
    // the pre-pass of FlashAttention-2's scheme computes no logits: no score modifiers
    let v = if pass != Pass::Prep || recompute {
        modifier_flags(v, spec)
    } else {
        v
    };
    with_bindings(pass, v)
}

/// The bindings `pass` uses once its flags are set: the row statistics (Scratch) and dO
/// always; the forward's out and lse for the pre-pass of FlashAttention-2's scheme, else q,
/// k, v, aux (and the bias and mask when flagged); and the pass's gradients.
fn with_bindings(pass: Pass, v: ShaderVariant) -> ShaderVariant {
    use Binding::*;
    let reads = if pass == Pass::Prep && !v.has(Flag::RECOMPUTE) {
        vec![Out, Lse]
    } else {
        vec![Q, K, V, Aux]
    };
    let writes: &[Binding] = match pass {
        Pass::Prep => &[],
        Pass::Dkv => &[Dk, Dv],
        Pass::Dq => &[Dq],
        Pass::Dbias => &[Dbias],
    };
    let (bias, mask) = (v.has(Flag::BIAS), v.has(Flag::MASK));
    v.bind([Params, Scratch, DOut])
        .bind(reads)
        .bind(writes.iter().copied())
        .bind_if(bias, Bias)
        .bind_if(mask, Mask)
}

/// Every backward variant (for the naga test).
pub(crate) fn variants() -> Vec<ShaderVariant> {
    let mut out = Vec::new();
    for flags in all_flag_sets().into_iter().flat_map(|f| {
        let mut with_vec4 = f.clone();
        with_vec4.insert(0, Flag::VEC4);
        [f, with_vec4]
    }) {
        let storage: Vec<Flag> = flags
            .iter()
            .copied()
            .filter(|f| matches!(f, Flag::F16 | Flag::PACKED | Flag::VEC4))
            .collect();
        if storage.len() == flags.len() {
            let mut v = ShaderVariant::new(Pass::Prep.template());
            v.flags = storage.clone();
            out.push(with_bindings(Pass::Prep, v));
        }
        for d4 in D4_CLASSES {
            let mut v = ShaderVariant::new(Pass::Prep.template()).constant("D4", d4);
            v.flags = std::iter::once(Flag::RECOMPUTE)
                .chain(flags.clone())
                .collect();
            out.push(with_bindings(Pass::Prep, v));
            for pass in [Pass::Dkv, Pass::Dq] {
                let mut v = ShaderVariant::new(pass.template()).constant("D4", d4);
                v.flags = flags.clone();
                out.push(with_bindings(pass, v));
            }
        }
        if flags.contains(&Flag::BIAS) {
            let mut v = ShaderVariant::new(Pass::Dbias.template());
            v.flags = flags.clone();
            out.push(with_bindings(Pass::Dbias, v));
        }
    }
    out
}

/// Work items (invocations doing work) of `pass`.
pub(crate) fn items(spec: &AttentionSpec, pass: Pass) -> u64 {
    match pass {
        Pass::Prep | Pass::Dq => spec.lse_len() as u64,
        Pass::Dkv => (spec.batch * spec.kv_heads * spec.seq_k) as u64,
        Pass::Dbias => spec.bias.map_or(0, |b| b.len(spec)) as u64,
    }
}

/// The workgroup grid of `pass`: 64 query rows of one (batch, head) pair per workgroup for
/// dq (x: row blocks, y·z: pairs), else `items` work items numbered x + y·64·nx.
pub(crate) fn groups(spec: &AttentionSpec, pass: Pass, max_dim: u32) -> (u32, u32, u32) {
    match pass {
        Pass::Dq => {
            let pairs = (spec.batch * spec.q_heads) as u64;
            let y = pairs.min(max_dim as u64);
            (
                spec.seq_q.div_ceil(WG as usize) as u32,
                y as u32,
                pairs.div_ceil(y) as u32,
            )
        }
        _ => {
            let (x, y) = grid(items(spec, pass), max_dim);
            (x, y, 1)
        }
    }
}

/// Workgroups (x, y) covering `items` work items, x ≤ `max_x`.
pub(crate) fn grid(items: u64, max_x: u32) -> (u32, u32) {
    let groups = items.div_ceil(WG as u64).max(1);
    let x = groups.min(max_x as u64);
    (x as u32, groups.div_ceil(x) as u32)
}
