//! What every kernel shares: the per-dispatch parameters (`struct Params` in
//! shaders/common.wgsl), the aux buffer (kv_lens and ALiBi slopes), the storage format of the
//! tensors and the shader flags that follow from the spec.

use bytemuck::{Pod, Zeroable};

use super::chunks::Chunk;
use crate::context::{Context, init_buffer};
use crate::planner::Caps;
use crate::shaders::ShaderVariant;
use crate::spec::{AttentionSpec, DType};

/// How q, k, v and out are stored on the GPU (part of the planner's [`Choice`](crate::planner::Choice)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// f32 everywhere.
    F32,
    /// f16 arrays (SHADER_F16).
    F16,
    /// f16 pairs packed in u32 (no SHADER_F16): read with `unpack2x16float`; the kernels write
    /// an f32 output that `pack.wgsl` converts.
    Packed,
}

impl Storage {
    /// The storage for `spec` on a device with `caps`.
    pub(crate) fn of(spec: &AttentionSpec, caps: &Caps) -> Storage {
        match spec.dtype {
            DType::F32 => Storage::F32,
            DType::F16 if caps.shader_f16 => Storage::F16,
            DType::F16 => Storage::Packed,
        }
    }

    /// Bytes per element of q, k, v (and of the caller's out).
    pub(crate) fn in_bytes(self) -> u64 {
        match self {
            Storage::F32 => 4,
            Storage::F16 | Storage::Packed => 2,
        }
    }

    /// Bytes per element of the out the kernels write (f32 scratch when packed).
    pub(crate) fn kernel_out_bytes(self) -> u64 {
        match self {
            Storage::F32 | Storage::Packed => 4,
            Storage::F16 => 2,
        }
    }
}

/// Adds the flags every kernel reads: storage format and score modifiers.
pub(crate) fn common_flags(
    v: ShaderVariant,
    spec: &AttentionSpec,
    storage: Storage,
) -> ShaderVariant {
    v.flag("F16", storage == Storage::F16)
        .flag("PACKED", storage == Storage::Packed)
        .flag("BIAS", spec.bias.is_some())
        .flag("MASK", spec.mask.is_some())
        .flag("SOFTCAP", spec.softcap.is_some())
        .flag("ALIBI", spec.alibi.is_some())
}

/// Every combination of the common flags (for the lists of variants).
pub(crate) fn all_flag_sets() -> Vec<Vec<&'static str>> {
    let mut sets = Vec::new();
    for storage in [None, Some("F16"), Some("PACKED")] {
        for mods in 0..16u32 {
            let mut f: Vec<&'static str> = storage.into_iter().collect();
            for (bit, name) in ["BIAS", "MASK", "SOFTCAP", "ALIBI"].iter().enumerate() {
                if mods & (1 << bit) != 0 {
                    f.push(name);
                }
            }
            sets.push(f);
        }
    }
    sets
}

/// Defines `Params` and (in tests) `Params::FIELDS` (every field's name, offset and type), which a unit
/// test compares with naga's reflection of `struct Params` in `shaders/common.wgsl`.
macro_rules! params_struct {
    ($(#[$m:meta])* $vis:vis struct $name:ident { $($fvis:vis $field:ident: $ty:ty,)* }) => {
        $(#[$m])*
        $vis struct $name { $($fvis $field: $ty,)* }

        impl $name {
            /// Every field's name, byte offset and type, in order.
            #[cfg(test)]
            pub(crate) const FIELDS: &'static [(&'static str, usize, &'static str)] = &[$((
                stringify!($field),
                std::mem::offset_of!($name, $field),
                stringify!($ty),
            ),)*];
        }
    };
}

params_struct! {
    /// Per-dispatch parameters; mirrors `struct Params` in `shaders/common.wgsl` (checked by a
    /// unit test against naga's reflection of the WGSL).
    #[repr(C)]
    #[derive(Debug, Clone, Copy, Pod, Zeroable)]
    pub(crate) struct Params {
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
    q_shift: u32,
    k_sb: u32,
    k_sh: u32,
    k_ss: u32,
    k_shift: u32,
    v_shift: u32,
    o_shift: u32,
    lse_shift: u32,
    w_shift: u32,
    causal: u32,
    causal_off: i32,
    has_kv_lens: u32,
    s_stride: u32,
    bh0: u32,
    nbh: u32,
    i0: u32,
    nq: u32,
    neg_inf: f32,
    pub(crate) n_splits: u32,
    pub(crate) split_len: u32,
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
    pub(crate) x0: u32,
    _pad1: u32,
}
}

/// The aux storage buffer: kv_lens (B entries, or one unused 0) followed by the ALiBi slopes
/// (Hq entries, f32 bits). Returns the buffer and where the slopes start.
pub(crate) fn aux_buffer(ctx: &Context, spec: &AttentionSpec) -> (wgpu::Buffer, u32) {
    let mut words: Vec<u32> = spec.kv_lens.clone().unwrap_or_else(|| vec![0]);
    let alibi_at = words.len() as u32;
    if let Some(alibi) = &spec.alibi {
        words.extend(alibi.slopes(spec.q_heads).iter().map(|s| s.to_bits()));
    }
    let buffer = init_buffer(
        ctx.device(),
        ctx.queue(),
        "wgattn aux",
        bytemuck::cast_slice(&words),
        wgpu::BufferUsages::STORAGE,
    );
    (buffer, alibi_at)
}

/// The parameters of `chunk` of `spec`; `s_stride` is the three-pass score row stride and
/// `alibi_at` where the slopes start in the aux buffer.
pub(crate) fn params(spec: &AttentionSpec, c: &Chunk, s_stride: u32, alibi_at: u32) -> Params {
    let qs = spec.q_strides();
    let ks = spec.kv_strides();
    let (bias_sb, bias_sh) = spec.bias.map_or((0, 0), |b| b.strides(spec));
    let (mask_sb, mask_sh) = spec.mask.map_or((0, 0), |m| m.strides(spec));
    let (win_left, win_right) = spec.window.map_or((-1, -1), |w| (w.left, w.right));
    Params {
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
        q_shift: c.q.shift,
        k_sb: ks.batch as u32,
        k_sh: ks.head as u32,
        k_ss: ks.row as u32,
        k_shift: c.kv.shift,
        v_shift: c.kv.shift,
        o_shift: c.out.shift,
        lse_shift: c.lse.shift,
        w_shift: c.weights.map_or(0, |w| w.shift),
        causal: spec.causal.is_some() as u32,
        causal_off: spec.causal_offset().unwrap_or(0) as i32,
        has_kv_lens: spec.kv_lens.is_some() as u32,
        s_stride,
        bh0: c.bh0,
        nbh: c.nbh,
        i0: c.i0,
        nq: c.nq,
        neg_inf: f32::NEG_INFINITY,
        n_splits: 1,
        split_len: spec.seq_k as u32,
        alibi_at,
        align_off: spec.align_offset() as i32,
        win_left: win_left.clamp(-1, i32::MAX as i64) as i32,
        win_right: win_right.clamp(-1, i32::MAX as i64) as i32,
        softcap: spec.softcap.unwrap_or(1.0),
        bias_sb: bias_sb as u32,
        bias_sh: bias_sh as u32,
        bias_shift: c.bias.map_or(0, |w| w.shift),
        mask_sb: mask_sb as u32,
        mask_sh: mask_sh as u32,
        mask_shift: c.mask.map_or(0, |w| w.shift),
        x0: 0,
        _pad1: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// naga's reflection of `struct Params` in a rendered shader: (name, offset, scalar type)
    /// of each member and the struct's size.
    fn wgsl_params(source: &str) -> (Vec<(String, u32, String)>, u32) {
        let module = naga::front::wgsl::parse_str(source).expect("parses");
        let (members, span) = module
            .types
            .iter()
            .find_map(|(_, ty)| match (&ty.name, &ty.inner) {
                (Some(name), naga::TypeInner::Struct { members, span }) if name == "Params" => {
                    Some((members.clone(), *span))
                }
                _ => None,
            })
            .expect("struct Params");
        let fields = members
            .iter()
            .map(|m| {
                let ty = match module.types[m.ty].inner {
                    naga::TypeInner::Scalar(s) => match (s.kind, s.width) {
                        (naga::ScalarKind::Uint, 4) => "u32",
                        (naga::ScalarKind::Sint, 4) => "i32",
                        (naga::ScalarKind::Float, 4) => "f32",
                        _ => "other scalar",
                    },
                    _ => "not a scalar",
                };
                (m.name.clone().unwrap_or_default(), m.offset, ty.to_string())
            })
            .collect();
        (fields, span)
    }

    /// The Rust `Params` and the WGSL `struct Params` (as naga lays it out) agree field by
    /// field: name, order, offset, type, and total size.
    #[test]
    fn params_layout_matches_wgsl() {
        let source = ShaderVariant::new("combine.wgsl")
            .constant("WG", 64)
            .constant("D16", 1)
            .render()
            .expect("renders");
        let (wgsl, span) = wgsl_params(&source);
        let rust: Vec<(String, u32, String)> = Params::FIELDS
            .iter()
            .map(|(n, o, t)| (n.to_string(), *o as u32, t.to_string()))
            .collect();
        assert_eq!(rust, wgsl);
        assert_eq!(std::mem::size_of::<Params>() as u32, span);
        // a uniform struct's size is a multiple of 16 bytes
        assert_eq!(span % 16, 0);
    }

    /// The check above fails when the two sides differ: a WGSL struct with two fields swapped
    /// is caught.
    #[test]
    fn params_layout_check_catches_a_swap() {
        let source = ShaderVariant::new("combine.wgsl")
            .constant("WG", 64)
            .constant("D16", 1)
            .render()
            .expect("renders")
            .replacen("batch: u32, q_heads: u32,", "q_heads: u32, batch: u32,", 1);
        let (wgsl, _) = wgsl_params(&source);
        assert_eq!(wgsl[0].0, "q_heads");
        assert_ne!(Params::FIELDS[0].0, wgsl[0].0);
    }
}
