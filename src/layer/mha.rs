//! The multi-head attention layer: projections (register-tiled WGSL matmul whose epilogue
//! writes q, k and v in the attention layout and applies rotary embedding), positional
//! encodings, attention through the planner, the output projection and the residual.

use crate::context::Context;
use crate::error::{Error, Result};

use crate::spec::{AttentionSpec, DType};

use super::config::{MhaConfig, PositionEncoding, sinusoidal_table};
use super::gpu;
pub use super::mha_plan::MhaPlan;
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
                Some(ctx.gpu().gpu_scope("uploading the attention mask", || {
                    crate::gpu::init_buffer(
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
        let out = gpu::scratch(ctx, "wgattn layer out", plan.x_bytes(), U::COPY_SRC)?;
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
