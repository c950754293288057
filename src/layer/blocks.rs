//! The building blocks of an encoder besides attention, on the same WGSL kernels: a
//! [`Linear`] projection (optionally with GELU or a residual add in its epilogue), a
//! [`LayerNorm`] and an [`Embedding`] table gather. Each is uploaded once, prepared once per
//! row count (a pass holding its pipeline and parameters) and recorded into a caller's
//! encoder.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::spec::DType;

use super::gpu;
use super::mha::GpuLinear;
use super::weights::LinearWeights;
use crate::kernels::layer::{GatherCall, LinearBuffers, LinearCall, NormCall};
use crate::planner::layer::{Gather, GatherBy, LinearShape};

/// Epilogue options of a [`Linear`] pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinearOptions {
    /// Applies GELU (the erf form) to the output.
    pub gelu: bool,
    /// Adds a residual tensor (laid out like the output) to the output.
    pub residual: bool,
    /// The kernel variant: `Some(true)` stages tiles of X and W in workgroup memory (GPUs),
    /// `Some(false)` reads them directly (CPU adapters such as lavapipe, where barriers cost
    /// more than they save); `None` picks by adapter.
    pub tiled: Option<bool>,
}

/// A projection `y = x·Wᵀ + b` on the GPU (W in the storage dtype, b in f32).
pub struct Linear {
    w: GpuLinear,
    dtype: DType,
}

impl std::fmt::Debug for Linear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Linear")
            .field("out_features", &self.w.out_features)
            .field("in_features", &self.w.in_features)
            .field("dtype", &self.dtype)
            .finish()
    }
}

/// A [`Linear`] prepared for a number of rows.
pub struct LinearPass {
    call: LinearCall,
    w: GpuLinear,
    x_bytes: u64,
    y_bytes: u64,
}

impl std::fmt::Debug for LinearPass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinearPass").finish_non_exhaustive()
    }
}

impl Linear {
    /// Checks and uploads `w` with storage `dtype` (activations use the same dtype).
    pub fn new(ctx: &Context, name: &str, w: &LinearWeights, dtype: DType) -> Result<Linear> {
        w.check(name, w.out_features, w.in_features)?;
        Ok(Linear {
            w: GpuLinear::upload(ctx, w, dtype)?,
            dtype,
        })
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.w.out_features
    }

    /// Prepares the projection of `rows` row-major rows.
    pub fn prepare(
        &self,
        ctx: &Context,
        rows: usize,
        options: LinearOptions,
    ) -> Result<LinearPass> {
        let (n, k) = (self.w.out_features, self.w.in_features);
        let call = LinearCall::new(
            ctx.gpu(),
            &LinearShape {
                m: rows,
                n,
                k,
                rows: rows.max(1),
                x: Gather::rows(rows, k),
                y: Gather::rows(rows, n),
                x_dtype: self.dtype,
                w_dtype: self.dtype,
                y_dtype: self.dtype,
                w_row0: 0,
                bias: self.w.bias.is_some(),
                rope: None,
                gelu: options.gelu,
                residual: options.residual,
                row_offset: false,
                tiled: options.tiled,
            },
        )?;
        Ok(LinearPass {
            call,
            w: self.w.clone(),
            x_bytes: gpu::size_of(rows * k, self.dtype),
            y_bytes: gpu::size_of(rows * n, self.dtype),
        })
    }
}

impl LinearPass {
    /// Records `y = x·Wᵀ + b [+ residual]`; `residual` is required exactly when the pass was
    /// prepared with it.
    pub fn encode(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        residual: Option<&wgpu::Buffer>,
    ) -> Result<()> {
        gpu::check_buffer("x", x, self.x_bytes)?;
        gpu::check_buffer("y", y, self.y_bytes)?;
        if let Some(r) = residual {
            gpu::check_buffer("residual", r, self.y_bytes)?;
        }
        if x == y || residual == Some(y) {
            return Err(Error::BadBuffer {
                buffer: "y",
                problem: "aliases an input".into(),
            });
        }
        let wants = self.call.has_residual();
        if wants != residual.is_some() {
            return Err(Error::BadBuffer {
                buffer: "residual",
                problem: if wants {
                    "the pass adds a residual but none was given".into()
                } else {
                    "given, but the pass was prepared without one".into()
                },
            });
        }
        self.call.encode(
            device,
            encoder,
            &LinearBuffers {
                x,
                w: &self.w.weight,
                bias: self.w.bias.as_ref(),
                offsets: None,
                table: None,
                residual,
                y,
            },
        );
        Ok(())
    }
}

/// Layer normalisation over the last dimension, `γ·(x − mean)/√(var + eps) + β`.
pub struct LayerNorm {
    gamma: wgpu::Buffer,
    beta: wgpu::Buffer,
    width: usize,
    eps: f32,
}

impl std::fmt::Debug for LayerNorm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerNorm")
            .field("width", &self.width)
            .field("eps", &self.eps)
            .finish()
    }
}

/// A [`LayerNorm`] prepared for a number of rows.
pub struct NormPass {
    call: NormCall,
    gamma: wgpu::Buffer,
    beta: wgpu::Buffer,
    bytes: u64,
}

impl std::fmt::Debug for NormPass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NormPass").finish_non_exhaustive()
    }
}

impl LayerNorm {
    /// Uploads γ and β (same length, the normalised width).
    pub fn new(ctx: &Context, name: &str, gamma: &[f32], beta: &[f32], eps: f32) -> Result<Self> {
        if gamma.len() != beta.len() || gamma.is_empty() {
            return Err(Error::Weight {
                tensor: name.to_string(),
                problem: format!(
                    "weight has {} values and bias {}: they must match and be non-empty",
                    gamma.len(),
                    beta.len()
                ),
            });
        }
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(Error::InvalidLayer {
                field: "eps".into(),
                problem: format!("{eps} must be finite and ≥ 0"),
            });
        }
        let up = |v: &[f32]| gpu::upload(ctx, name, v, DType::F32, wgpu::BufferUsages::empty());
        Ok(LayerNorm {
            gamma: up(gamma)?,
            beta: up(beta)?,
            width: gamma.len(),
            eps,
        })
    }

    /// Prepares the normalisation of `rows` rows stored in `dtype`.
    pub fn prepare(&self, ctx: &Context, rows: usize, dtype: DType) -> Result<NormPass> {
        Ok(NormPass {
            call: NormCall::new(ctx.gpu(), rows, self.width, self.eps, dtype, dtype)?,
            gamma: self.gamma.clone(),
            beta: self.beta.clone(),
            bytes: gpu::size_of(rows * self.width, dtype),
        })
    }
}

impl NormPass {
    /// Records `y = LayerNorm(x)` (`x` and `y` distinct).
    pub fn encode(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> Result<()> {
        gpu::check_buffer("x", x, self.bytes)?;
        gpu::check_buffer("y", y, self.bytes)?;
        if x == y {
            return Err(Error::BadBuffer {
                buffer: "y",
                problem: "is the same buffer as x".into(),
            });
        }
        self.call
            .encode(device, encoder, x, &self.gamma, &self.beta, y);
        Ok(())
    }
}

/// A table `[rows, width]` (f32) whose rows are gathered by id or by position and added to
/// activations: word, token-type and learned position embeddings.
pub struct Embedding {
    table: wgpu::Buffer,
    rows: usize,
    width: usize,
}

impl std::fmt::Debug for Embedding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedding")
            .field("rows", &self.rows)
            .field("width", &self.width)
            .finish()
    }
}

/// An [`Embedding`] gather prepared for a number of rows.
pub struct GatherPass {
    call: GatherCall,
    table: wgpu::Buffer,
    add: bool,
    bytes: u64,
}

impl std::fmt::Debug for GatherPass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatherPass").finish_non_exhaustive()
    }
}

impl Embedding {
    /// Uploads `table` of `rows` rows.
    pub fn new(ctx: &Context, name: &str, table: &[f32], rows: usize) -> Result<Embedding> {
        if rows == 0 || table.is_empty() || !table.len().is_multiple_of(rows) {
            return Err(Error::Weight {
                tensor: name.to_string(),
                problem: format!("{} values do not form {rows} rows", table.len()),
            });
        }
        Ok(Embedding {
            table: gpu::upload(ctx, name, table, DType::F32, wgpu::BufferUsages::empty())?,
            rows,
            width: table.len() / rows,
        })
    }

    /// Rows of the table.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Prepares `y[m] = [x[m] +] table[ids[m]]` for `m` rows (ids: a `u32` buffer of `m`
    /// entries, each below [`Embedding::rows`]; larger ids read the last row).
    pub fn by_ids(&self, ctx: &Context, m: usize, add: bool, dtype: DType) -> Result<GatherPass> {
        self.pass(ctx, m, GatherBy::Ids, add, dtype)
    }

    /// Prepares `y[b, s] = [x[b, s] +] table[s + start[b]]` for `batch` sequences of `seq`
    /// rows (start: a `u32` buffer of `batch` entries).
    pub fn by_positions(
        &self,
        ctx: &Context,
        batch: usize,
        seq: usize,
        add: bool,
        dtype: DType,
    ) -> Result<GatherPass> {
        self.pass(
            ctx,
            batch * seq,
            GatherBy::Positions {
                rows: seq,
                ids_len: 0,
            },
            add,
            dtype,
        )
    }

    fn pass(
        &self,
        ctx: &Context,
        m: usize,
        by: GatherBy,
        add: bool,
        dtype: DType,
    ) -> Result<GatherPass> {
        Ok(GatherPass {
            call: GatherCall::new(ctx.gpu(), m, self.width, self.rows, by, add, dtype)?,
            table: self.table.clone(),
            add,
            bytes: gpu::size_of(m * self.width, dtype),
        })
    }
}

impl GatherPass {
    /// Records the gather: `index` holds the ids or the start positions, `x` is required
    /// exactly when the pass adds.
    pub fn encode(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        index: &wgpu::Buffer,
        x: Option<&wgpu::Buffer>,
        y: &wgpu::Buffer,
    ) -> Result<()> {
        gpu::check_buffer("y", y, self.bytes)?;
        if let Some(x) = x {
            gpu::check_buffer("x", x, self.bytes)?;
            if x == y {
                return Err(Error::BadBuffer {
                    buffer: "y",
                    problem: "is the same buffer as x".into(),
                });
            }
        }
        if self.add != x.is_some() {
            return Err(Error::BadBuffer {
                buffer: "x",
                problem: "required exactly when the pass adds".into(),
            });
        }
        gpu::check_buffer("index", index, 4)?;
        self.call.encode(device, encoder, index, &self.table, x, y);
        Ok(())
    }
}
