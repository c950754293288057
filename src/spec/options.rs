//! The options of a spec: layout, causal alignment, kernel, storage type, bias/mask
//! broadcast, sliding window and ALiBi.

use crate::error::{Error, Result};

use super::AttentionSpec;

/// Largest head_dim any kernel supports.
pub const MAX_HEAD_DIM: usize = 256;

/// The masking rule, the same in every kernel and in the CPU reference: a logit (scale·q·k
/// after soft-cap, ALiBi and bias, natural units) at or below this value is masked exactly
/// like −∞ — its key gets probability 0, and a row whose keys are all masked returns out 0
/// and lse −∞. Mirrored as `MASKED_CUT` in `shaders/common/masking.inc.wgsl`.
pub const MASKED_LOGIT: f32 = -1.0e38;

/// Memory layout of q, k, v and out (all contiguous, row-major).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Layout {
    /// `[batch, heads, seq, dim]` (the default).
    #[default]
    Bhsd,
    /// `[batch, seq, heads, dim]`.
    Bshd,
}

impl Layout {
    /// Name used in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Bhsd => "bhsd",
            Layout::Bshd => "bshd",
        }
    }

    /// Parses `bhsd` / `bshd`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bhsd" => Ok(Layout::Bhsd),
            "bshd" => Ok(Layout::Bshd),
            other => Err(Error::spec("layout", other, "is not `bhsd` or `bshd`")),
        }
    }
}

/// Where the causal triangle is anchored when seq_q ≠ seq_k.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CausalAlign {
    /// Query i sees keys j ≤ i (PyTorch / JAX `is_causal`).
    TopLeft,
    /// Query i sees keys j ≤ i + (seq_k − seq_q) (FlashAttention, KV-cache decoding).
    BottomRight,
}

impl CausalAlign {
    /// Name used on the command line (`top-left` / `bottom-right`).
    pub fn name(self) -> &'static str {
        match self {
            CausalAlign::TopLeft => "top-left",
            CausalAlign::BottomRight => "bottom-right",
        }
    }

    /// Parses `top-left`/`top_left` or `bottom-right`/`bottom_right`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "top-left" => Ok(CausalAlign::TopLeft),
            "bottom-right" => Ok(CausalAlign::BottomRight),
            other => Err(Error::spec(
                "causal_align",
                other,
                "is not `top-left` or `bottom-right`",
            )),
        }
    }
}

/// Which GPU kernel family computes the attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Kernel {
    /// Let the planner choose from the shape and the adapter (see `Kernel::resolve`).
    #[default]
    Auto,
    /// QKᵀ → softmax → P·V through a stored score matrix (split when it exceeds device limits).
    /// The only kernel that can return the probability matrix.
    ThreePass,
    /// Fused online-softmax kernel: no score matrix, memory O(B·H·S·D).
    Flash,
    /// Fused kernel with the keys split across workgroups and a combine pass (decoding).
    SplitKv,
}

impl Kernel {
    /// Every kernel name the CLI accepts.
    pub const NAMES: &'static [&'static str] = &["auto", "three-pass", "flash", "split-kv"];

    /// Name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Auto => "auto",
            Kernel::ThreePass => "three-pass",
            Kernel::Flash => "flash",
            Kernel::SplitKv => "split-kv",
        }
    }

    /// Parses a kernel name.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "auto" => Ok(Kernel::Auto),
            "three-pass" | "threepass" | "3pass" => Ok(Kernel::ThreePass),
            "flash" => Ok(Kernel::Flash),
            "split-kv" | "splitkv" | "flash-decoding" => Ok(Kernel::SplitKv),
            other => Err(Error::spec(
                "kernel",
                other,
                format!("is not one of {}", Kernel::NAMES.join(", ")),
            )),
        }
    }
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Storage type of q, k, v and out on the GPU. Arithmetic is f32 in every kernel; lse and
/// weights are always f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DType {
    /// 32-bit floats.
    #[default]
    F32,
    /// 16-bit floats (`half::f16` on the host).
    F16,
}

impl DType {
    /// Name used on the command line and in benchmark output.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
        }
    }

    /// Parses `f32` / `f16`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(DType::F32),
            "f16" | "float16" | "half" => Ok(DType::F16),
            other => Err(Error::spec("dtype", other, "is not f32 or f16")),
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
        }
    }
}

/// How a bias or mask tensor of shape `[B or 1, Hq or 1, Sq, Sk]` broadcasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Broadcast {
    /// The first dimension is B (one matrix per batch entry) rather than 1.
    pub per_batch: bool,
    /// The second dimension is Hq (one matrix per query head) rather than 1.
    pub per_head: bool,
}

impl Broadcast {
    /// One `[Sq, Sk]` matrix for every batch entry and head.
    pub const SHARED: Broadcast = Broadcast {
        per_batch: false,
        per_head: false,
    };
    /// A full `[B, Hq, Sq, Sk]` tensor.
    pub const FULL: Broadcast = Broadcast {
        per_batch: true,
        per_head: true,
    };

    /// The tensor shape for `spec`.
    pub fn shape(self, spec: &AttentionSpec) -> [usize; 4] {
        [
            if self.per_batch { spec.batch } else { 1 },
            if self.per_head { spec.q_heads } else { 1 },
            spec.seq_q,
            spec.seq_k,
        ]
    }

    /// Elements of the tensor for `spec` (saturating at `usize::MAX`: a spec that passes
    /// [`AttentionSpec::validate`] never saturates; [`AttentionSpec::sizes`] is the checked
    /// form).
    pub fn len(self, spec: &AttentionSpec) -> usize {
        saturating_product(&self.shape(spec))
    }

    /// Element strides (batch, head); 0 where broadcast. Rows are `seq_k` apart. Saturating,
    /// as [`Broadcast::len`].
    pub fn strides(self, spec: &AttentionSpec) -> (usize, usize) {
        let mat = spec.seq_q.saturating_mul(spec.seq_k);
        let head = if self.per_head { mat } else { 0 };
        let batch = if self.per_batch {
            mat.saturating_mul(if self.per_head { spec.q_heads } else { 1 })
        } else {
            0
        };
        (batch, head)
    }

    /// Flat index of element (b, h, i, j).
    pub fn index(self, spec: &AttentionSpec, b: usize, h: usize, i: usize, j: usize) -> usize {
        let (sb, sh) = self.strides(spec);
        b * sb + h * sh + i * spec.seq_k + j
    }

    /// The broadcast of a tensor called `name` with `shape`, or a typed error naming the
    /// dimension that does not fit `[B or 1, Hq or 1, Sq, Sk]`.
    pub fn from_shape(name: &str, shape: &[usize], spec: &AttentionSpec) -> Result<Self> {
        // "B or 1" reads as just "1" when B is 1.
        let or_one = |n: usize| match n {
            1 => "1".to_string(),
            n => format!("{n} or 1"),
        };
        let want = format!(
            "must be [{}, {}, {}, {}]",
            or_one(spec.batch),
            or_one(spec.q_heads),
            spec.seq_q,
            spec.seq_k
        );
        let bad = || Error::spec(format!("{name}.shape"), format!("{shape:?}"), want.clone());
        let &[b, h, sq, sk] = shape else {
            return Err(bad());
        };
        if sq != spec.seq_q || sk != spec.seq_k {
            return Err(bad());
        }
        let dim = |n: usize, full: usize| match n {
            1 if full != 1 => Ok(false),
            n if n == full => Ok(true),
            _ => Err(bad()),
        };
        Ok(Broadcast {
            per_batch: dim(b, spec.batch)?,
            per_head: dim(h, spec.q_heads)?,
        })
    }
}

/// A sliding window in keys around the aligned diagonal (FlashAttention's `window_size`):
/// query i sees keys `i' − left ..= i' + right` with `i' = i + offset` (the causal alignment
/// if causal is set, else bottom-right). `-1` means unbounded on that side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// Keys to the left of the diagonal (−1: unbounded).
    pub left: i64,
    /// Keys to the right of the diagonal (−1: unbounded).
    pub right: i64,
}

/// ALiBi: a bias of −slope_h · |i' − j| (with i' as for [`Window`]) added to every logit.
#[derive(Debug, Clone, PartialEq)]
pub enum Alibi {
    /// The geometric slopes of the ALiBi paper for Hq heads (2^(−8k/n), with the usual
    /// interleaving when Hq is not a power of two).
    Standard,
    /// One slope per query head.
    Slopes(Vec<f32>),
}

impl Alibi {
    /// The slope of every query head.
    pub fn slopes(&self, q_heads: usize) -> Vec<f32> {
        match self {
            Alibi::Slopes(s) => s.clone(),
            Alibi::Standard => standard_alibi_slopes(q_heads),
        }
    }
}

/// The ALiBi paper's slopes for `n` heads.
pub fn standard_alibi_slopes(n: usize) -> Vec<f32> {
    fn pow2(n: usize) -> Vec<f64> {
        let start = 2f64.powf(-8.0 / n as f64);
        (1..=n).map(|i| start.powi(i as i32)).collect()
    }
    if n == 0 {
        return Vec::new();
    }
    let m = 1usize << (usize::BITS - 1 - n.leading_zeros());
    let mut slopes = pow2(m);
    if m < n {
        slopes.extend(pow2(2 * m).into_iter().step_by(2).take(n - m));
    }
    slopes.into_iter().map(|x| x as f32).collect()
}

/// The product of `dims`, saturating at `usize::MAX` instead of wrapping.
pub(super) fn saturating_product(dims: &[usize]) -> usize {
    dims.iter().fold(1usize, |a, &n| a.saturating_mul(n))
}
