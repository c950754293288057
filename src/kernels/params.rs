//! The kernels' uniform parameters: the spec's fields every kernel reads ([`SpecParams`],
//! `shaders/common/spec_params.inc.wgsl`), filled once here for the forward [`Params`] and
//! the backward's, and the aux buffer (kv_lens and ALiBi slopes).

use crate::gpu::{Runtime, init_buffer};
use crate::planner::chunks::Chunk;
use crate::spec::AttentionSpec;

/// Defines a `#[repr(C)]` parameter struct and (in tests) `FIELDS` (every field's name,
/// offset and type), which a unit test compares with naga's reflection of the WGSL struct.
macro_rules! params_struct {
    ($(#[$m:meta])* $vis:vis struct $name:ident { $($(#[$fm:meta])* $fvis:vis $field:ident: $ty:ty,)* }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name { $($(#[$fm])* $fvis $field: $ty,)* }

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
pub(crate) use params_struct;

params_struct! {
    /// The spec's fields of every kernel's `Params`, forward and backward: the first fields of
    /// both, mirroring `shaders/common/spec_params.inc.wgsl`.
    pub(crate) struct SpecParams {
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
        pub(crate) bias_shift: u32,
        mask_sb: u32,
        mask_sh: u32,
        pub(crate) mask_shift: u32,
    }
}

impl SpecParams {
    /// The fields of `spec`, the ALiBi slopes at `alibi_at` in the aux buffer; the bias and
    /// mask windows start at 0.
    pub(crate) fn of(spec: &AttentionSpec, alibi_at: u32) -> SpecParams {
        let qs = spec.q_strides();
        let ks = spec.kv_strides();
        let (bias_sb, bias_sh) = spec.bias.map_or((0, 0), |b| b.strides(spec));
        let (mask_sb, mask_sh) = spec.mask.map_or((0, 0), |m| m.strides(spec));
        let (win_left, win_right) = spec.window.map_or((-1, -1), |w| (w.left, w.right));
        SpecParams {
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
        }
    }
}

params_struct! {
    /// The forward kernels' per-dispatch parameters: the spec's fields, then the chunk's;
    /// mirrors `struct Params` in `shaders/common/params.inc.wgsl`.
    pub(crate) struct Params {
        spec: SpecParams,
        q_shift: u32,
        k_shift: u32,
        v_shift: u32,
        o_shift: u32,
        lse_shift: u32,
        w_shift: u32,
        s_stride: u32,
        bh0: u32,
        nbh: u32,
        i0: u32,
        nq: u32,
        neg_inf: f32,
        pub(crate) n_splits: u32,
        pub(crate) split_len: u32,
        pub(crate) x0: u32,
        _pad1: u32,
    }
}

/// The aux words: kv_lens (B entries, or one unused 0) followed by the ALiBi slopes (Hq
/// entries, f32 bits); and where the slopes start.
pub(crate) fn aux_words(spec: &AttentionSpec) -> (Vec<u32>, u32) {
    let mut words: Vec<u32> = spec.kv_lens.clone().unwrap_or_else(|| vec![0]);
    let alibi_at = words.len() as u32;
    if let Some(alibi) = &spec.alibi {
        words.extend(alibi.slopes(spec.q_heads).iter().map(|s| s.to_bits()));
    }
    (words, alibi_at)
}

/// The aux storage buffer of [`aux_words`] and where the slopes start.
pub(crate) fn aux_buffer(rt: &Runtime, spec: &AttentionSpec) -> (wgpu::Buffer, u32) {
    let (words, alibi_at) = aux_words(spec);
    let buffer = init_buffer(
        rt.device(),
        rt.queue(),
        "wgattn aux",
        bytemuck::cast_slice(&words),
        wgpu::BufferUsages::STORAGE,
    );
    (buffer, alibi_at)
}

/// The parameters of `chunk` of `spec`; `s_stride` is the three-pass score row stride and
/// `alibi_at` where the slopes start in the aux buffer.
pub(crate) fn params(spec: &AttentionSpec, c: &Chunk, s_stride: u32, alibi_at: u32) -> Params {
    let mut header = SpecParams::of(spec, alibi_at);
    header.bias_shift = c.bias.map_or(0, |w| w.shift);
    header.mask_shift = c.mask.map_or(0, |w| w.shift);
    Params {
        spec: header,
        q_shift: c.q.shift,
        k_shift: c.kv.shift,
        v_shift: c.kv.shift,
        o_shift: c.out.shift,
        lse_shift: c.lse.shift,
        w_shift: c.weights.map_or(0, |w| w.shift),
        s_stride,
        bh0: c.bh0,
        nbh: c.nbh,
        i0: c.i0,
        nq: c.nq,
        neg_inf: f32::NEG_INFINITY,
        n_splits: 1,
        split_len: spec.seq_k as u32,
        x0: 0,
        _pad1: 0,
    }
}

/// The fields of a parameter struct that begins with [`SpecParams`] (its first field
/// `header`), flattened as WGSL lays them out: the header's fields, then the rest.
#[cfg(test)]
pub(crate) fn flattened(
    fields: &[(&'static str, usize, &'static str)],
) -> Vec<(String, u32, String)> {
    let (first, rest) = fields.split_first().expect("fields");
    assert_eq!(first.2, "SpecParams", "the header comes first");
    SpecParams::FIELDS
        .iter()
        .chain(rest)
        .map(|(n, o, t)| (n.to_string(), *o as u32, t.to_string()))
        .collect()
}

/// naga's reflection of `struct Params` in a rendered shader: (name, offset, scalar type) of
/// each member and the struct's size.
#[cfg(test)]
pub(crate) fn wgsl_params(source: &str) -> (Vec<(String, u32, String)>, u32) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::{Storage, three_pass};

    /// The source of a forward shader (its `struct Params`).
    fn forward_source() -> String {
        three_pass::shader_variants(&AttentionSpec::new(1, 1, 1, 4, 4, 8), Storage::F32)[0]
            .render()
            .expect("renders")
    }

    /// The Rust `Params` and the WGSL `struct Params` (as naga lays it out) agree field by
    /// field: name, order, offset, type, and total size.
    #[test]
    fn params_layout_matches_wgsl() {
        let (wgsl, span) = wgsl_params(&forward_source());
        assert_eq!(flattened(Params::FIELDS), wgsl);
        assert_eq!(std::mem::size_of::<Params>() as u32, span);
        // a uniform struct's size is a multiple of 16 bytes
        assert_eq!(span % 16, 0);
    }

    /// The check above fails when the two sides differ: a WGSL struct with two fields swapped
    /// is caught.
    #[test]
    fn params_layout_check_catches_a_swap() {
        let source =
            forward_source().replacen("batch: u32, q_heads: u32,", "q_heads: u32, batch: u32,", 1);
        let (wgsl, _) = wgsl_params(&source);
        assert_eq!(wgsl[0].0, "q_heads");
        assert_ne!(flattened(Params::FIELDS)[0].0, wgsl[0].0);
    }
}
