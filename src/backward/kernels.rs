//! The backward kernels' shader variants and parameters (`shaders/backward_*.wgsl`).

use bytemuck::{Pod, Zeroable};

use crate::kernels::params::{Storage, all_flag_sets};
use crate::shaders::ShaderVariant;
use crate::spec::AttentionSpec;

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
            Pass::Prep => "backward_prep.wgsl",
            Pass::Dkv => "backward_dkv.wgsl",
            Pass::Dq => "backward_dq.wgsl",
            Pass::Dbias => "backward_dbias.wgsl",
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
/// recomputes the row statistics (see [`crate::BackwardMode`]).
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
    let mods = pass != Pass::Prep || recompute;
    v.flag("RECOMPUTE", pass == Pass::Prep && recompute)
        .flag("VEC4", spec.head_dim.is_multiple_of(4))
        .flag("F16", storage == Storage::F16)
        .flag("PACKED", storage == Storage::Packed)
        .flag("BIAS", spec.bias.is_some() && mods)
        .flag("MASK", spec.mask.is_some() && mods)
        .flag("SOFTCAP", spec.softcap.is_some() && mods)
        .flag("ALIBI", spec.alibi.is_some() && mods)
}

/// Every backward variant (for the naga test).
pub(crate) fn variants() -> Vec<ShaderVariant> {
    let mut out = Vec::new();
    for flags in all_flag_sets().into_iter().flat_map(|f| {
        let mut with_vec4 = f.clone();
        with_vec4.insert(0, "VEC4");
        [f, with_vec4]
    }) {
        let storage: Vec<&'static str> = flags
            .iter()
            .copied()
            .filter(|f| matches!(*f, "F16" | "PACKED" | "VEC4"))
            .collect();
        if storage.len() == flags.len() {
            let mut v = ShaderVariant::new(Pass::Prep.template());
            v.flags = storage.clone();
            out.push(v);
        }
        for d4 in D4_CLASSES {
            let mut v = ShaderVariant::new(Pass::Prep.template()).constant("D4", d4);
            v.flags = std::iter::once("RECOMPUTE").chain(flags.clone()).collect();
            out.push(v);
            for pass in [Pass::Dkv, Pass::Dq] {
                let mut v = ShaderVariant::new(pass.template()).constant("D4", d4);
                v.flags = flags.clone();
                out.push(v);
            }
        }
        if flags.contains(&"BIAS") {
            let mut v = ShaderVariant::new(Pass::Dbias.template());
            v.flags = flags.clone();
            out.push(v);
        }
    }
    out
}

/// Mirrors `struct Params` in `shaders/backward_common.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub(crate) struct BwdParams {
    batch: u32,
    q_heads: u32,
    kv_heads: u32,
    group: u32,
    seq_q: u32,
    seq_k: u32,
    head_dim: u32,
    scale: f32,
    q_sb: u32,
    q_sh: u32,
    q_ss: u32,
    k_sb: u32,
    k_sh: u32,
    k_ss: u32,
    causal: u32,
    causal_off: i32,
    has_kv_lens: u32,
    alibi_at: u32,
    align_off: i32,
    win_left: i32,
    win_right: i32,
    softcap: f32,
    bias_sb: u32,
    bias_sh: u32,
    bias_shift: u32,
    mask_sb: u32,
    mask_sh: u32,
    mask_shift: u32,
    db_nb: u32,
    db_nh: u32,
    items: u32,
    /// Always 0: OR-ed into the two-float logit sums' intermediates so that the shader
    /// compiler cannot re-associate them away (see shaders/backward_common.wgsl).
    zero: u32,
}

/// The parameters of `pass` for `spec`; `alibi_at` is where the slopes start in the aux
/// buffer.
pub(crate) fn params(spec: &AttentionSpec, pass: Pass, alibi_at: u32) -> BwdParams {
    let qs = spec.q_strides();
    let ks = spec.kv_strides();
    let (bias_sb, bias_sh) = spec.bias.map_or((0, 0), |b| b.strides(spec));
    let (mask_sb, mask_sh) = spec.mask.map_or((0, 0), |m| m.strides(spec));
    let (win_left, win_right) = spec.window.map_or((-1, -1), |w| (w.left, w.right));
    let [db_nb, db_nh, _, _] = spec
        .bias
        .map_or([1, 1, 0, 0], |b| b.shape(spec))
        .map(|x| x as u32);
    BwdParams {
        batch: spec.batch as u32,
        q_heads: spec.q_heads as u32,
        kv_heads: spec.kv_heads as u32,
        group: spec.group() as u32,
        seq_q: spec.seq_q as u32,
        seq_k: spec.seq_k as u32,
        head_dim: spec.head_dim as u32,
        scale: spec.effective_scale(),
        q_sb: qs.batch as u32,
        q_sh: qs.head as u32,
        q_ss: qs.row as u32,
        k_sb: ks.batch as u32,
        k_sh: ks.head as u32,
        k_ss: ks.row as u32,
        causal: spec.causal.is_some() as u32,
        causal_off: spec.causal_offset().unwrap_or(0) as i32,
        has_kv_lens: spec.kv_lens.is_some() as u32,
        alibi_at,
        align_off: spec.align_offset() as i32,
        win_left: win_left.clamp(-1, i32::MAX as i64) as i32,
        win_right: win_right.clamp(-1, i32::MAX as i64) as i32,
        softcap: spec.softcap.unwrap_or(1.0),
        bias_sb: bias_sb as u32,
        bias_sh: bias_sh as u32,
        bias_shift: 0,
        mask_sb: mask_sb as u32,
        mask_sh: mask_sh as u32,
        mask_shift: 0,
        db_nb,
        db_nh,
        items: items(spec, pass) as u32,
        zero: 0,
    }
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
