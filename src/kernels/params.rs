//! The per-dispatch parameters every kernel reads (`struct Params` in shaders/common.wgsl).

use bytemuck::{Pod, Zeroable};
use wgpu::util::DeviceExt;

use super::chunks::Chunk;
use crate::spec::AttentionSpec;

/// Per-dispatch parameters; mirrors `struct Params` in `shaders/common.wgsl`.
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
    _pad: u32,
}

/// The kv_lens storage buffer (a single unused 0 when the spec has none).
pub(crate) fn kv_lens_buffer(device: &wgpu::Device, spec: &AttentionSpec) -> wgpu::Buffer {
    let lens: Vec<u32> = spec.kv_lens.clone().unwrap_or_else(|| vec![0]);
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("wgattn kv_lens"),
        contents: bytemuck::cast_slice(&lens),
        usage: wgpu::BufferUsages::STORAGE,
    })
}

/// The parameters of `chunk` of `spec`; `s_stride` is the three-pass score row stride.
pub(crate) fn params(spec: &AttentionSpec, c: &Chunk, s_stride: u32) -> Params {
    let qs = spec.q_strides();
    let ks = spec.kv_strides();
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
        o_shift: c.q.shift,
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
        _pad: 0,
    }
}
