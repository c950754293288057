//! The shape and options of a [`MultiHeadAttention`](super::MultiHeadAttention) layer.

use crate::error::{Error, Result};
use crate::spec::{DType, Layout, MAX_HEAD_DIM};

/// Which dimensions rotary embedding pairs up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RopePairing {
    /// `(d, d + R/2)`: GPT-NeoX, Llama in Hugging Face `transformers` (`rotate_half`).
    Half,
    /// `(2i, 2i + 1)`: GPT-J, the original RoFormer and Meta's Llama code.
    Interleaved,
}

/// Rotary position embedding (RoFormer): pair i of each head of q and k is rotated by the
/// angle `position · base^(−2i/R)`, in the projection's epilogue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rope {
    /// The base θ (10 000 in most models).
    pub base: f64,
    /// The pairing of dimensions.
    pub pairing: RopePairing,
    /// Rotated dimensions R per head (even, ≤ head_dim); `None` means all of head_dim.
    pub dims: Option<usize>,
    /// Positions the cos/sin table covers (the largest position + 1 the layer accepts).
    pub max_positions: usize,
}

impl Rope {
    /// Rotate-half pairing, base 10 000, all dimensions, 4096 positions.
    pub fn new() -> Self {
        Rope {
            base: 10_000.0,
            pairing: RopePairing::Half,
            dims: None,
            max_positions: 4096,
        }
    }
    /// Sets the pairing.
    pub fn pairing(mut self, pairing: RopePairing) -> Self {
        self.pairing = pairing;
        self
    }
    /// Sets the base θ.
    pub fn base(mut self, base: f64) -> Self {
        self.base = base;
        self
    }
    /// Rotates only the first `dims` dimensions of each head (partial rotary).
    pub fn dims(mut self, dims: usize) -> Self {
        self.dims = Some(dims);
        self
    }
    /// Sets the positions the table covers.
    pub fn max_positions(mut self, n: usize) -> Self {
        self.max_positions = n;
        self
    }
    /// Rotated dimensions for `head_dim`.
    pub fn rotated(&self, head_dim: usize) -> usize {
        self.dims.unwrap_or(head_dim)
    }
    /// The `[max_positions, R/2]` table of `(cos, sin)` pairs, computed in f64.
    pub fn table(&self, head_dim: usize) -> Vec<[f32; 2]> {
        let r = self.rotated(head_dim);
        let half = r / 2;
        let mut t = Vec::with_capacity(self.max_positions * half);
        for p in 0..self.max_positions {
            for i in 0..half {
                let a = p as f64 * self.base.powf(-2.0 * i as f64 / r as f64);
                t.push([a.cos() as f32, a.sin() as f32]);
            }
        }
        t
    }
}

impl Default for Rope {
    fn default() -> Self {
        Rope::new()
    }
}

/// How token positions enter the layer.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum PositionEncoding {
    /// None (the caller added them, or the attention uses ALiBi).
    #[default]
    None,
    /// The sinusoidal encoding of "Attention is all you need" added to X (queries only in
    /// cross-attention) before the projections: `PE[p, 2i] = sin(p / 10000^(2i/E))`,
    /// `PE[p, 2i+1] = cos(…)`.
    Sinusoidal {
        /// Positions covered.
        max_positions: usize,
    },
    /// A learned table `[max_positions, E]` (given with the weights) added to X.
    Learned {
        /// Rows of the table.
        max_positions: usize,
    },
    /// Rotary embedding of q and k, applied in the projection epilogue.
    Rotary(Rope),
}

impl PositionEncoding {
    /// The largest position + 1 the encoding covers (`usize::MAX` for none).
    pub fn max_positions(&self) -> usize {
        match *self {
            PositionEncoding::None => usize::MAX,
            PositionEncoding::Sinusoidal { max_positions }
            | PositionEncoding::Learned { max_positions } => max_positions,
            PositionEncoding::Rotary(r) => r.max_positions,
        }
    }
}

/// The sinusoidal table `[max_positions, dim]`, computed in f64.
pub fn sinusoidal_table(max_positions: usize, dim: usize) -> Vec<f32> {
    let mut t = vec![0f32; max_positions * dim];
    for p in 0..max_positions {
        for c in 0..dim {
            let i = (c / 2) as f64;
            let a = p as f64 / 10_000f64.powf(2.0 * i / dim as f64);
            t[p * dim + c] = if c % 2 == 0 { a.sin() } else { a.cos() } as f32;
        }
    }
    t
}

/// Shape and options of a multi-head attention layer.
#[derive(Debug, Clone, PartialEq)]
pub struct MhaConfig {
    /// Width E of X and of the output.
    pub embed_dim: usize,
    /// Width of the memory M for cross-attention (`None`: self-attention, K and V from X).
    pub kv_embed_dim: Option<usize>,
    /// Query heads H.
    pub num_heads: usize,
    /// Key/value heads (GQA when < H; H % kv_heads == 0).
    pub num_kv_heads: usize,
    /// Dimension D of each head (E / H by default).
    pub head_dim: usize,
    /// Positional encoding.
    pub position: PositionEncoding,
    /// Adds X to the output (`out = X + attention·W_oᵀ + b_o`).
    pub residual: bool,
    /// Storage of weights, activations, q/k/v and the output (arithmetic is f32).
    pub dtype: DType,
    /// Layout q, k and v are written in for the attention (bhsd or bshd).
    pub layout: Layout,
    /// The projection kernel's variant: workgroup-memory tiles (`Some(true)`), direct loads
    /// (`Some(false)`, faster on CPU adapters), or by adapter (`None`, the default).
    pub tiled_projections: Option<bool>,
}

impl MhaConfig {
    /// Self-attention of width `embed_dim` with `num_heads` heads of `embed_dim / num_heads`,
    /// no GQA, no positional encoding, no residual, f32, bhsd.
    pub fn new(embed_dim: usize, num_heads: usize) -> Self {
        MhaConfig {
            embed_dim,
            kv_embed_dim: None,
            num_heads,
            num_kv_heads: num_heads,
            head_dim: embed_dim.checked_div(num_heads).unwrap_or(0),
            position: PositionEncoding::None,
            residual: false,
            dtype: DType::F32,
            layout: Layout::Bhsd,
            tiled_projections: None,
        }
    }
    /// Cross-attention: K and V are projected from a memory of width `kv_embed_dim`.
    pub fn cross(mut self, kv_embed_dim: usize) -> Self {
        self.kv_embed_dim = Some(kv_embed_dim);
        self
    }
    /// Sets the key/value heads (GQA / MQA).
    pub fn kv_heads(mut self, n: usize) -> Self {
        self.num_kv_heads = n;
        self
    }
    /// Sets the head dimension (when it is not E / H).
    pub fn head_dim(mut self, d: usize) -> Self {
        self.head_dim = d;
        self
    }
    /// Sets the positional encoding.
    pub fn position(mut self, p: PositionEncoding) -> Self {
        self.position = p;
        self
    }
    /// Turns the residual add on or off.
    pub fn residual(mut self, on: bool) -> Self {
        self.residual = on;
        self
    }
    /// Sets the storage type.
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }
    /// Chooses the projection kernel's variant (see [`MhaConfig::tiled_projections`]).
    pub fn tiled_projections(mut self, tiled: Option<bool>) -> Self {
        self.tiled_projections = tiled;
        self
    }
    /// Sets the q/k/v layout.
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// Width of K and V's input (the memory's, or E).
    pub fn kv_input_dim(&self) -> usize {
        self.kv_embed_dim.unwrap_or(self.embed_dim)
    }
    /// Columns of the query projection, H·D.
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }
    /// Columns of the key and value projections, H_kv·D.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Checks the configuration; every problem is a typed [`Error::InvalidLayer`].
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, problem: String| {
            Err(Error::InvalidLayer {
                field: field.to_string(),
                problem,
            })
        };
        if self.embed_dim == 0 {
            return bad("embed_dim", "must be at least 1".into());
        }
        if self.kv_embed_dim == Some(0) {
            return bad("kv_embed_dim", "must be at least 1".into());
        }
        if self.num_heads == 0 || self.num_kv_heads == 0 {
            return bad("num_heads", "heads must be at least 1".into());
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(
                "num_kv_heads",
                format!(
                    "{} does not divide num_heads = {}",
                    self.num_kv_heads, self.num_heads
                ),
            );
        }
        if self.head_dim == 0 || self.head_dim > MAX_HEAD_DIM {
            return bad(
                "head_dim",
                format!("{} is not in 1..={MAX_HEAD_DIM}", self.head_dim),
            );
        }
        match self.position {
            PositionEncoding::Rotary(r) => {
                let dims = r.rotated(self.head_dim);
                if dims == 0 || dims % 2 != 0 || dims > self.head_dim {
                    return bad(
                        "rope.dims",
                        format!(
                            "{dims} must be even, at least 2 and at most head_dim = {}",
                            self.head_dim
                        ),
                    );
                }
                if !(r.base.is_finite() && r.base > 1.0) {
                    return bad("rope.base", format!("{} must be finite and > 1", r.base));
                }
                if r.max_positions == 0 {
                    return bad("rope.max_positions", "must be at least 1".into());
                }
            }
            PositionEncoding::Sinusoidal { max_positions }
            | PositionEncoding::Learned { max_positions } => {
                if max_positions == 0 {
                    return bad("position.max_positions", "must be at least 1".into());
                }
            }
            PositionEncoding::None => {}
        }
        if self.residual && self.q_dim() == 0 {
            return bad("residual", "needs an output".into());
        }
        if self.dtype == DType::F16 {
            let align = match self.position {
                PositionEncoding::Rotary(r) if r.pairing == RopePairing::Half => 4,
                _ => 2,
            };
            if !self.head_dim.is_multiple_of(align) || !self.embed_dim.is_multiple_of(2) {
                return bad(
                    "dtype",
                    format!(
                        "f16 storage needs an even embed_dim and head_dim a multiple of {align} \
                         (embed_dim = {}, head_dim = {})",
                        self.embed_dim, self.head_dim
                    ),
                );
            }
        }
        Ok(())
    }
}
