//! Preparing the multi-head attention layer for one spec: the projections' calls (q, k and v
//! written in the attention layout, rotary embedding, cache rows), the positional encoding,
//! the attention plan and the output projection, recorded into a caller's encoder.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::layer::{GatherCall, LinearBuffers, LinearCall};
use crate::plan::{Buffers, Plan};
use crate::planner::layer::{Gather, GatherBy, LinearShape, RopeCall};
use crate::spec::{AttentionSpec, Layout};

use super::config::{PositionEncoding, RopePairing};
use super::gpu;
use super::mha::{GpuLinear, MhaBuffers, MultiHeadAttention};

impl MultiHeadAttention {
    /// The plan of `spec` with the positions of `start`; with `cache_capacity`, k and v are
    /// appended to a [`KvCache`](super::KvCache) of that capacity at rows `start[b]..` (the
    /// spec's seq_k is then the attended key range, not the new rows).
    pub(crate) fn build(
        &self,
        ctx: &Context,
        spec: &AttentionSpec,
        start: &[u32],
        cache_capacity: Option<usize>,
    ) -> Result<MhaPlan> {
        spec.validate(ctx.limits())?;
        let c = self.config();
        if start.len() != spec.batch {
            return Err(Error::InvalidLayer {
                field: "positions".into(),
                problem: format!("{} start positions for batch {}", start.len(), spec.batch),
            });
        }
        let max_pos = c.position.max_positions();
        if let Some(&p) = start.iter().max()
            && c.position != PositionEncoding::None
            && p as usize + spec.seq_q > max_pos
        {
            return Err(Error::InvalidLayer {
                field: "positions".into(),
                problem: format!(
                    "positions up to {} exceed the encoding's {max_pos}",
                    p as usize + spec.seq_q - 1
                ),
            });
        }
        let (b, s) = (spec.batch, spec.seq_q);
        // Rows projected into k and v: the new tokens when appending to a cache.
        let skv = if cache_capacity.is_some() {
            s
        } else {
            spec.seq_k
        };
        let (e, ekv, d) = (c.embed_dim, c.kv_input_dim(), c.head_dim);
        let dtype = c.dtype;
        let offsets = gpu::upload_u32(ctx, "wgattn layer positions", start)?;
        use wgpu::BufferUsages as U;
        let pe = match (&self.positions, c.position) {
            (Some(_), p) => {
                let call = GatherCall::new(
                    ctx.gpu(),
                    b * s,
                    e,
                    p.max_positions(),
                    GatherBy::Positions {
                        rows: s,
                        ids_len: 0,
                    },
                    true,
                    dtype,
                )?;
                let buf = gpu::scratch(
                    ctx,
                    "wgattn x+pe",
                    gpu::size_of(b * s * e, dtype),
                    U::empty(),
                )?;
                Some((call, buf))
            }
            (None, _) => None,
        };
        let rope = match c.position {
            PositionEncoding::Rotary(r) => Some(RopeCall {
                dims: r.rotated(d),
                half: r.pairing == RopePairing::Half,
                max_pos: r.max_positions,
            }),
            _ => None,
        };
        let layout = |heads: usize, seq: usize| match spec.layout {
            Layout::Bhsd => Gather::bhsd(heads, seq, d),
            Layout::Bshd => Gather::bshd(heads, seq, d),
        };
        let proj = |w: &GpuLinear,
                    rows: usize,
                    k: usize,
                    heads: usize,
                    rope: Option<RopeCall>,
                    cache: Option<usize>|
         -> Result<LinearCall> {
            LinearCall::new(
                ctx.gpu(),
                &LinearShape {
                    m: b * rows,
                    n: w.out_features,
                    k,
                    rows,
                    x: Gather::rows(rows, k),
                    y: match cache {
                        Some(capacity) => Gather::bshd(heads, capacity, d),
                        None => layout(heads, rows),
                    },
                    x_dtype: dtype,
                    w_dtype: dtype,
                    y_dtype: dtype,
                    w_row0: w.row0,
                    bias: w.bias.is_some(),
                    rope,
                    gelu: false,
                    residual: false,
                    row_offset: cache.is_some(),
                    tiled: c.tiled_projections,
                },
            )
        };
        let q_call = proj(&self.q, s, e, c.num_heads, rope, None)?;
        let k_call = proj(&self.k, skv, ekv, c.num_kv_heads, rope, cache_capacity)?;
        let v_call = proj(&self.v, skv, ekv, c.num_kv_heads, None, cache_capacity)?;
        let o_call = LinearCall::new(
            ctx.gpu(),
            &LinearShape {
                m: b * s,
                n: e,
                k: c.q_dim(),
                rows: s,
                x: layout(c.num_heads, s),
                y: Gather::rows(s, e),
                x_dtype: dtype,
                w_dtype: dtype,
                y_dtype: dtype,
                w_row0: 0,
                bias: self.o.bias.is_some(),
                rope: None,
                gelu: false,
                residual: c.residual,
                row_offset: false,
                tiled: c.tiled_projections,
            },
        )?;
        let attention = ctx.plan(spec)?;
        let sizes = attention.sizes();
        let q = gpu::scratch(ctx, "wgattn layer q", sizes.q, U::empty())?;
        let kv_bytes = if cache_capacity.is_some() {
            4
        } else {
            sizes.kv
        };
        let k = gpu::scratch(ctx, "wgattn layer k", kv_bytes, U::empty())?;
        let v = gpu::scratch(ctx, "wgattn layer v", kv_bytes, U::empty())?;
        let attn = gpu::scratch(ctx, "wgattn layer attention", sizes.q, U::empty())?;
        Ok(MhaPlan {
            spec: spec.clone(),
            cache_capacity,
            own_mask: None,
            x_bytes: gpu::size_of(b * s * e, dtype),
            memory_bytes: c.kv_embed_dim.map(|_| gpu::size_of(b * skv * ekv, dtype)),
            q_call,
            k_call,
            v_call,
            o_call,
            pe,
            offsets,
            attention,
            q,
            k,
            v,
            attn,
            weights: Weights {
                q: self.q.clone(),
                k: self.k.clone(),
                v: self.v.clone(),
                o: self.o.clone(),
                rope: self.rope.clone(),
                positions: self.positions.clone(),
            },
        })
    }
}

/// The weight buffers a plan binds (shared with the layer).
struct Weights {
    q: GpuLinear,
    k: GpuLinear,
    v: GpuLinear,
    o: GpuLinear,
    rope: Option<wgpu::Buffer>,
    positions: Option<wgpu::Buffer>,
}

/// A [`MultiHeadAttention`] prepared for one attention spec: pipelines, parameters and the
/// q/k/v/attention scratch buffers, recorded into a caller's encoder by
/// [`MhaPlan::encode`].
pub struct MhaPlan {
    spec: AttentionSpec,
    /// Appends k and v to a cache of this capacity.
    pub(crate) cache_capacity: Option<usize>,
    /// The mask a cached decoding step makes for itself.
    pub(crate) own_mask: Option<wgpu::Buffer>,
    x_bytes: u64,
    memory_bytes: Option<u64>,
    q_call: LinearCall,
    k_call: LinearCall,
    v_call: LinearCall,
    o_call: LinearCall,
    pe: Option<(GatherCall, wgpu::Buffer)>,
    offsets: wgpu::Buffer,
    attention: Plan,
    q: wgpu::Buffer,
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    attn: wgpu::Buffer,
    weights: Weights,
}

impl std::fmt::Debug for MhaPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MhaPlan")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl MhaPlan {
    /// The attention spec.
    pub fn spec(&self) -> &AttentionSpec {
        &self.spec
    }

    /// The attention plan (kernel choice, shaders).
    pub fn attention(&self) -> &Plan {
        &self.attention
    }

    /// Bytes of X and of the output.
    pub fn x_bytes(&self) -> u64 {
        self.x_bytes
    }

    /// Records the layer into `encoder`. Checks the buffers first ([`Error::BadBuffer`]);
    /// nothing is recorded when a check fails.
    pub fn encode(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        bufs: &MhaBuffers,
    ) -> Result<()> {
        if self.cache_capacity.is_some() {
            return Err(Error::InvalidLayer {
                field: "plan".into(),
                problem: "a decoding plan is recorded with KvCache::encode_step".into(),
            });
        }
        self.encode_with(device, encoder, bufs, None)
    }

    /// Records the layer; with `cache`, k and v are appended to the cache's buffers and the
    /// attention reads them there.
    pub(crate) fn encode_with(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        bufs: &MhaBuffers,
        cache: Option<(&wgpu::Buffer, &wgpu::Buffer)>,
    ) -> Result<()> {
        gpu::check_buffer("x", bufs.x, self.x_bytes)?;
        gpu::check_buffer("out", bufs.out, self.x_bytes)?;
        if bufs.out == bufs.x || bufs.memory == Some(bufs.out) {
            return Err(Error::BadBuffer {
                buffer: "out",
                problem: "aliases an input".into(),
            });
        }
        match (self.memory_bytes, bufs.memory) {
            (Some(n), Some(m)) => gpu::check_buffer("memory", m, n)?,
            (Some(_), None) => {
                return Err(Error::BadBuffer {
                    buffer: "memory",
                    problem: "a cross-attention layer needs a memory".into(),
                });
            }
            (None, Some(_)) => {
                return Err(Error::BadBuffer {
                    buffer: "memory",
                    problem: "given to a self-attention layer".into(),
                });
            }
            (None, None) => {}
        }
        // The attention's buffers are checked before anything is recorded.
        let (kb, vb) = cache.unwrap_or((&self.k, &self.v));
        let attn_bufs = Buffers {
            q: &self.q,
            k: kb,
            v: vb,
            out: &self.attn,
            lse: None,
            weights: bufs.weights,
            bias: bufs.bias,
            mask: bufs.mask.or(self.own_mask.as_ref()),
        };
        self.attention.check_buffers(&attn_bufs)?;
        let x = match &self.pe {
            Some((call, buf)) => {
                call.encode(
                    device,
                    encoder,
                    &self.offsets,
                    self.weights.positions.as_ref().expect("position table"),
                    Some(bufs.x),
                    buf,
                );
                buf
            }
            None => bufs.x,
        };
        let kv_in = bufs.memory.unwrap_or(x);
        let w = &self.weights;
        for (call, lin, input, out, rope) in [
            (&self.q_call, &w.q, x, &self.q, true),
            (&self.k_call, &w.k, kv_in, kb, true),
            (&self.v_call, &w.v, kv_in, vb, false),
        ] {
            call.encode(
                device,
                encoder,
                &LinearBuffers {
                    x: input,
                    w: &lin.weight,
                    bias: lin.bias.as_ref(),
                    offsets: Some(&self.offsets),
                    table: if rope { w.rope.as_ref() } else { None },
                    residual: None,
                    y: out,
                },
            );
        }
        self.attention.encode(encoder, &attn_bufs)?;
        self.o_call.encode(
            device,
            encoder,
            &LinearBuffers {
                x: &self.attn,
                w: &w.o.weight,
                bias: w.o.bias.as_ref(),
                offsets: None,
                table: None,
                residual: Some(x),
                y: bufs.out,
            },
        );
        Ok(())
    }
}
