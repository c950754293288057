//! The multi-head attention layer: projections (register-tiled WGSL matmul whose epilogue
//! writes q, k and v in the attention layout and applies rotary embedding), positional
//! encodings, attention through the planner, the output projection and the residual.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::plan::{Buffers, Plan};
use crate::spec::{AttentionSpec, DType, Layout};

use super::config::{MhaConfig, PositionEncoding, RopePairing, sinusoidal_table};
use super::gpu;
use super::kernels::{
    Gather, GatherBy, GatherCall, LinearBuffers, LinearCall, LinearShape, RopeCall,
};
use super::weights::{LinearWeights, MhaWeights, QkvWeights};

/// One projection's weights on the GPU: a buffer (possibly shared by a packed q|k|v) and the
/// first row used.
#[derive(Debug, Clone)]
pub(crate) struct GpuLinear {
    pub weight: wgpu::Buffer,
    pub bias: Option<wgpu::Buffer>,
    pub row0: usize,
    pub out_features: usize,
    pub in_features: usize,
}

impl GpuLinear {
    /// Uploads `w` in `dtype` (the bias stays f32).
    pub(crate) fn upload(ctx: &Context, w: &LinearWeights, dtype: DType) -> Result<GpuLinear> {
        Ok(GpuLinear {
            weight: gpu::upload(
                ctx,
                "wgattn layer weight",
                &w.weight,
                dtype,
                wgpu::BufferUsages::empty(),
            )?,
            bias: match &w.bias {
                Some(b) => Some(gpu::upload(
                    ctx,
                    "wgattn layer bias",
                    b,
                    DType::F32,
                    wgpu::BufferUsages::empty(),
                )?),
                None => None,
            },
            row0: 0,
            out_features: w.out_features,
            in_features: w.in_features,
        })
    }

    /// Rows `row0..row0 + n` of this projection.
    fn rows(&self, row0: usize, n: usize) -> GpuLinear {
        GpuLinear {
            row0: self.row0 + row0,
            out_features: n,
            ..self.clone()
        }
    }
}

/// A multi-head attention layer on the GPU:
/// `out = [X +] softmax(Q·Kᵀ·scale + masks)·V·W_oᵀ + b_o` with `Q = X'·W_qᵀ + b_q`, `K = M'·W_kᵀ + b_k`, `V = M'·W_vᵀ + b_v` (M = X for
/// self-attention; X' = X plus an absolute positional encoding if configured; RoPE rotates q
/// and k).
///
/// Build it once with [`MultiHeadAttention::new`]; [`MultiHeadAttention::plan`] prepares one
/// shape (an [`MhaPlan`] that records into a caller's encoder), and
/// [`MultiHeadAttention::forward`] is the host convenience call.
pub struct MultiHeadAttention {
    config: MhaConfig,
    pub(crate) q: GpuLinear,
    pub(crate) k: GpuLinear,
    pub(crate) v: GpuLinear,
    pub(crate) o: GpuLinear,
    /// f32 `[max_positions, E]` (sinusoidal or learned), added to X.
    pub(crate) positions: Option<wgpu::Buffer>,
    /// f32 `[max_positions, R/2]` (cos, sin).
    pub(crate) rope: Option<wgpu::Buffer>,
}

impl std::fmt::Debug for MultiHeadAttention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiHeadAttention")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Host inputs of [`MultiHeadAttention::forward`].
#[derive(Debug, Clone, Copy)]
pub struct MhaInputs<'a> {
    /// X `[B, S, E]`.
    pub x: &'a [f32],
    /// The memory `[B, S_kv, E_kv]` for cross-attention.
    pub memory: Option<&'a [f32]>,
    /// The attention bias declared by the spec (`[B or 1, H or 1, S, S_kv]`).
    pub bias: Option<&'a [f32]>,
    /// The attention mask declared by the spec (true = keep).
    pub mask: Option<&'a [bool]>,
}

impl<'a> MhaInputs<'a> {
    /// Self-attention over `x`.
    pub fn new(x: &'a [f32]) -> Self {
        MhaInputs {
            x,
            memory: None,
            bias: None,
            mask: None,
        }
    }
    /// Cross-attention to `memory`.
    pub fn memory(mut self, memory: &'a [f32]) -> Self {
        self.memory = Some(memory);
        self
    }
    /// Adds the attention bias.
    pub fn bias(mut self, bias: &'a [f32]) -> Self {
        self.bias = Some(bias);
        self
    }
    /// Adds the attention mask.
    pub fn mask(mut self, mask: &'a [bool]) -> Self {
        self.mask = Some(mask);
        self
    }
}

/// What [`MultiHeadAttention::forward`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct MhaOutput {
    /// The layer output `[B, S, E]`.
    pub out: Vec<f32>,
    /// The attention probabilities `[B, H, S, S_kv]` when the spec asks for them.
    pub weights: Option<Vec<f32>>,
}

/// The caller's buffers of one [`MhaPlan::encode`] (all with `STORAGE` usage).
#[derive(Debug, Clone, Copy)]
pub struct MhaBuffers<'a> {
    /// X `[B, S, E]` in the layer's dtype.
    pub x: &'a wgpu::Buffer,
    /// The memory `[B, S_kv, E_kv]` (cross-attention only).
    pub memory: Option<&'a wgpu::Buffer>,
    /// The output `[B, S, E]` in the layer's dtype; must not alias any other buffer.
    pub out: &'a wgpu::Buffer,
    /// Attention bias (f32) when the spec declares one.
    pub bias: Option<&'a wgpu::Buffer>,
    /// Attention mask (bytes) when the spec declares one.
    pub mask: Option<&'a wgpu::Buffer>,
    /// Attention probabilities (f32) when the spec asks for them.
    pub weights: Option<&'a wgpu::Buffer>,
}

impl<'a> MhaBuffers<'a> {
    /// Self-attention buffers without extras.
    pub fn new(x: &'a wgpu::Buffer, out: &'a wgpu::Buffer) -> Self {
        MhaBuffers {
            x,
            memory: None,
            out,
            bias: None,
            mask: None,
            weights: None,
        }
    }
}

impl MultiHeadAttention {
    /// Checks `config` and `weights` and uploads the weights (in the config's dtype; biases
    /// and position tables f32).
    pub fn new(ctx: &Context, config: &MhaConfig, weights: &MhaWeights) -> Result<Self> {
        config.validate()?;
        weights.check(config)?;
        let dtype = config.dtype;
        let (nq, nkv) = (config.q_dim(), config.kv_dim());
        let (q, k, v) = match &weights.qkv {
            QkvWeights::Separate { q, k, v } => (
                GpuLinear::upload(ctx, q, dtype)?,
                GpuLinear::upload(ctx, k, dtype)?,
                GpuLinear::upload(ctx, v, dtype)?,
            ),
            QkvWeights::Packed(p) => {
                let all = GpuLinear::upload(ctx, p, dtype)?;
                (all.rows(0, nq), all.rows(nq, nkv), all.rows(nq + nkv, nkv))
            }
        };
        let o = GpuLinear::upload(ctx, &weights.o, dtype)?;
        let e = config.embed_dim;
        let positions = match config.position {
            PositionEncoding::Sinusoidal { max_positions } => Some(gpu::upload(
                ctx,
                "wgattn sinusoidal table",
                &sinusoidal_table(max_positions, e),
                DType::F32,
                wgpu::BufferUsages::empty(),
            )?),
            PositionEncoding::Learned { .. } => Some(gpu::upload(
                ctx,
                "wgattn position table",
                weights.positions.as_deref().unwrap_or_default(),
                DType::F32,
                wgpu::BufferUsages::empty(),
            )?),
            _ => None,
        };
        let rope = match config.position {
            PositionEncoding::Rotary(r) => {
                let table: Vec<f32> = r.table(config.head_dim).into_iter().flatten().collect();
                Some(gpu::upload(
                    ctx,
                    "wgattn rope table",
                    &table,
                    DType::F32,
                    wgpu::BufferUsages::empty(),
                )?)
            }
            _ => None,
        };
        Ok(MultiHeadAttention {
            config: config.clone(),
            q,
            k,
            v,
            o,
            positions,
            rope,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MhaConfig {
        &self.config
    }

    /// The attention spec of this layer for `batch` sequences of `seq` queries and `seq_kv`
    /// keys (= seq for self-attention): heads, head_dim, dtype and layout filled in. Add any
    /// mask or option (causal, kv_lens, bias, mask, window, ALiBi, soft-cap, kernel, weights)
    /// before [`MultiHeadAttention::plan`].
    pub fn attention_spec(&self, batch: usize, seq: usize, seq_kv: usize) -> AttentionSpec {
        let c = &self.config;
        AttentionSpec::new(batch, c.num_heads, c.num_kv_heads, seq, seq_kv, c.head_dim)
            .dtype(c.dtype)
            .layout(c.layout)
    }

    /// Checks that `spec` is this layer's (shape fields as [`attention_spec`] makes them).
    ///
    /// [`attention_spec`]: MultiHeadAttention::attention_spec
    fn check_spec(&self, spec: &AttentionSpec) -> Result<()> {
        let c = &self.config;
        let mut problems = Vec::new();
        for (field, got, want) in [
            ("q_heads", spec.q_heads, c.num_heads),
            ("kv_heads", spec.kv_heads, c.num_kv_heads),
            ("head_dim", spec.head_dim, c.head_dim),
        ] {
            if got != want {
                problems.push(format!("spec.{field} = {got}, the layer has {want}"));
            }
        }
        if spec.dtype != c.dtype {
            problems.push(format!(
                "spec.dtype = {}, the layer stores {}",
                spec.dtype.name(),
                c.dtype.name()
            ));
        }
        if spec.layout != c.layout {
            problems.push(format!(
                "spec.layout = {}, the layer writes {}",
                spec.layout.name(),
                c.layout.name()
            ));
        }
        if c.kv_embed_dim.is_none() && spec.seq_k != spec.seq_q {
            problems.push(format!(
                "self-attention needs seq_k = seq_q, got {} and {}",
                spec.seq_k, spec.seq_q
            ));
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(Error::InvalidLayer {
                field: "spec".into(),
                problem: problems.join("; "),
            }),
        }
    }

    /// Prepares the layer for `spec` (from [`MultiHeadAttention::attention_spec`], with any
    /// options), positions starting at 0.
    pub fn plan(&self, ctx: &Context, spec: &AttentionSpec) -> Result<MhaPlan> {
        self.plan_at(ctx, spec, &vec![0; spec.batch])
    }

    /// Like [`MultiHeadAttention::plan`] with the position of the first query of each batch
    /// entry (positional encodings of a continued sequence).
    pub fn plan_at(&self, ctx: &Context, spec: &AttentionSpec, start: &[u32]) -> Result<MhaPlan> {
        self.check_spec(spec)?;
        self.build(ctx, spec, start, None)
    }

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
        let c = &self.config;
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
                    ctx,
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
                ctx,
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
            ctx,
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

    /// Runs the layer on host data and reads the output (native only; in the browser, record
    /// an [`MhaPlan`] and read the output buffer asynchronously) (and the attention weights when
    /// `spec.return_weights`) back. f16 layers round X and the memory to f16 first.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward(
        &self,
        ctx: &Context,
        spec: &AttentionSpec,
        inputs: &MhaInputs,
    ) -> Result<MhaOutput> {
        self.forward_at(ctx, spec, inputs, &vec![0; spec.batch])
    }

    /// [`MultiHeadAttention::forward`] with the position of each batch entry's first query.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_at(
        &self,
        ctx: &Context,
        spec: &AttentionSpec,
        inputs: &MhaInputs,
        start: &[u32],
    ) -> Result<MhaOutput> {
        let plan = self.plan_at(ctx, spec, start)?;
        let c = &self.config;
        let (b, s, skv) = (spec.batch, spec.seq_q, spec.seq_k);
        let check_len = |tensor: &'static str, got: usize, expected: usize, shape: String| {
            if got != expected {
                return Err(Error::InputLength {
                    tensor,
                    expected,
                    got,
                    shape,
                });
            }
            Ok(())
        };
        check_len(
            "x",
            inputs.x.len(),
            b * s * c.embed_dim,
            format!("[{b}, {s}, {}]", c.embed_dim),
        )?;
        match (c.kv_embed_dim, inputs.memory) {
            (Some(ekv), Some(m)) => check_len(
                "memory",
                m.len(),
                b * skv * ekv,
                format!("[{b}, {skv}, {ekv}]"),
            )?,
            (Some(_), None) => {
                return Err(Error::InvalidLayer {
                    field: "memory".into(),
                    problem: "a cross-attention layer needs a memory".into(),
                });
            }
            (None, Some(_)) => {
                return Err(Error::InvalidLayer {
                    field: "memory".into(),
                    problem: "given to a self-attention layer".into(),
                });
            }
            (None, None) => {}
        }
        for (name, data) in [("x", Some(inputs.x)), ("memory", inputs.memory)] {
            if let Some((index, &value)) =
                data.and_then(|d| d.iter().enumerate().find(|(_, v)| !v.is_finite()))
            {
                return Err(Error::NonFinite {
                    tensor: name,
                    index,
                    value,
                });
            }
        }
        for (name, declared, given) in [
            ("bias", spec.bias, inputs.bias.map(|v| v.len())),
            ("mask", spec.mask, inputs.mask.map(|v| v.len())),
        ] {
            match (declared, given) {
                (Some(bc), Some(n)) => {
                    check_len(name, n, bc.len(spec), format!("{:?}", bc.shape(spec)))?
                }
                (None, None) => {}
                (Some(_), None) => {
                    return Err(Error::spec(name, "missing", "is declared by the spec"));
                }
                (None, Some(_)) => {
                    return Err(Error::spec(name, "given", "is not declared by the spec"));
                }
            }
        }
        if let Some((index, &value)) = inputs
            .bias
            .and_then(|d| d.iter().enumerate().find(|(_, v)| v.is_nan()))
        {
            return Err(Error::NonFinite {
                tensor: "bias",
                index,
                value,
            });
        }
        use wgpu::BufferUsages as U;
        let x = gpu::upload(ctx, "wgattn layer x", inputs.x, c.dtype, U::empty())?;
        let memory = match inputs.memory {
            Some(m) => Some(gpu::upload(
                ctx,
                "wgattn layer memory",
                m,
                c.dtype,
                U::empty(),
            )?),
            None => None,
        };
        let bias = match inputs.bias {
            Some(v) => Some(gpu::upload(
                ctx,
                "wgattn layer attn bias",
                v,
                DType::F32,
                U::empty(),
            )?),
            None => None,
        };
        let mask = match inputs.mask {
            Some(m) => {
                let mut bytes: Vec<u8> = m.iter().map(|&v| v as u8).collect();
                bytes.resize(bytes.len().next_multiple_of(4).max(4), 0);
                Some(ctx.gpu_scope("uploading the attention mask", || {
                    crate::context::init_buffer(
                        ctx.device(),
                        ctx.queue(),
                        "wgattn layer mask",
                        &bytes,
                        U::STORAGE,
                    )
                })?)
            }
            None => None,
        };
        let out = gpu::scratch(ctx, "wgattn layer out", plan.x_bytes, U::COPY_SRC)?;
        let weights = match spec.return_weights {
            true => Some(gpu::scratch(
                ctx,
                "wgattn layer weights",
                (spec.weights_len() as u64 * 4).max(4),
                U::COPY_SRC,
            )?),
            false => None,
        };
        let mut enc = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        plan.encode(
            ctx.device(),
            &mut enc,
            &MhaBuffers {
                x: &x,
                memory: memory.as_ref(),
                out: &out,
                bias: bias.as_ref(),
                mask: mask.as_ref(),
                weights: weights.as_ref(),
            },
        )?;
        gpu::submit(ctx, enc)?;
        Ok(MhaOutput {
            out: gpu::read(ctx, &out, b * s * c.embed_dim, c.dtype)?,
            weights: match &weights {
                Some(w) => Some(gpu::read(ctx, w, spec.weights_len(), DType::F32)?),
                None => None,
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
