//! What one attention call computes: shapes, layout, scale, masks and kernel choice.

use crate::error::{Error, Result, SpecProblem};
use crate::limits::DeviceLimits;

/// Largest head_dim any kernel supports.
pub const MAX_HEAD_DIM: usize = 256;

/// The masking rule, the same in every kernel and in the CPU reference: a logit (scale·q·k
/// after soft-cap, ALiBi and bias, natural units) at or below this value is masked exactly
/// like −∞ — its key gets probability 0, and a row whose keys are all masked returns out 0
/// and lse −∞. Mirrored as `MASKED_CUT` in `shaders/common.wgsl`.
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

/// One scaled dot-product attention problem.
///
/// Build it with [`AttentionSpec::new`] and the chained setters; every field is public for
/// reading. [`AttentionSpec::validate`] reports every problem before any GPU work.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionSpec {
    /// Batch size B.
    pub batch: usize,
    /// Query heads Hq.
    pub q_heads: usize,
    /// Key/value heads Hkv (Hq % Hkv == 0; Hkv = 1 is MQA).
    pub kv_heads: usize,
    /// Query rows Sq.
    pub seq_q: usize,
    /// Key rows Sk.
    pub seq_k: usize,
    /// Head dimension D (1..=256) of q, k and v.
    pub head_dim: usize,
    /// Memory layout of all tensors.
    pub layout: Layout,
    /// Softmax scale; `None` means 1/√head_dim.
    pub scale: Option<f32>,
    /// Causal mask and its alignment; `None` means no causal mask.
    pub causal: Option<CausalAlign>,
    /// Valid key length per batch entry (keys j ≥ kv_lens\[b\] are masked).
    pub kv_lens: Option<Vec<u32>>,
    /// Storage type of q, k, v and out.
    pub dtype: DType,
    /// An additive bias tensor `[B or 1, Hq or 1, Sq, Sk]` is given (f32 on the GPU; −∞ masks).
    pub bias: Option<Broadcast>,
    /// A boolean mask tensor `[B or 1, Hq or 1, Sq, Sk]` is given (true = keep, as in PyTorch).
    pub mask: Option<Broadcast>,
    /// Sliding window.
    pub window: Option<Window>,
    /// ALiBi slopes.
    pub alibi: Option<Alibi>,
    /// Logit soft-capping: s ← cap·tanh(s / cap) on the scaled logits, before bias and masks.
    pub softcap: Option<f32>,
    /// Kernel to use.
    pub kernel: Kernel,
    /// Also return the log-sum-exp of each row, `[B, Hq, Sq]`.
    pub return_lse: bool,
    /// Also return the probability matrix, `[B, Hq, Sq, Sk]` (three-pass kernel only; `Auto`
    /// picks it when this is set).
    pub return_weights: bool,
    /// Allow reduced-precision products for f32 inputs (off by default; like PyTorch's
    /// `allow_tf32`): where the adapter has f16 cooperative matrices (tensor cores), flash
    /// and split-KV round Q, K, V and P to f16 and multiply them there, accumulating in f32.
    /// Softmax, masks and all sums stay f32. Accuracy is then that of f16 operands:
    /// [`crate::validation::TOL_REDUCED`] relative Frobenius for inputs of order 1, worse for
    /// large logits, and inputs beyond ±65504 overflow. Without cooperative matrices, for
    /// f16 storage, for three-pass and for the backward pass it changes nothing.
    pub reduced_precision: bool,
}

impl AttentionSpec {
    /// A plain (unmasked, `bhsd`, default-scale) attention of the given shape.
    pub fn new(
        batch: usize,
        q_heads: usize,
        kv_heads: usize,
        seq_q: usize,
        seq_k: usize,
        head_dim: usize,
    ) -> Self {
        AttentionSpec {
            batch,
            q_heads,
            kv_heads,
            seq_q,
            seq_k,
            head_dim,
            layout: Layout::Bhsd,
            scale: None,
            causal: None,
            kv_lens: None,
            dtype: DType::F32,
            bias: None,
            mask: None,
            window: None,
            alibi: None,
            softcap: None,
            kernel: Kernel::Auto,
            return_lse: false,
            return_weights: false,
            reduced_precision: false,
        }
    }

    /// Sets the layout.
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }
    /// Sets an explicit softmax scale.
    pub fn scale(mut self, scale: f32) -> Self {
        self.scale = Some(scale);
        self
    }
    /// Sets (or clears) the causal mask.
    pub fn causal(mut self, causal: impl Into<Option<CausalAlign>>) -> Self {
        self.causal = causal.into();
        self
    }
    /// Sets per-batch valid key lengths.
    pub fn kv_lens(mut self, kv_lens: impl Into<Vec<u32>>) -> Self {
        self.kv_lens = Some(kv_lens.into());
        self
    }
    /// Sets the storage type.
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }
    /// Declares an additive bias tensor with this broadcast.
    pub fn bias(mut self, bias: impl Into<Option<Broadcast>>) -> Self {
        self.bias = bias.into();
        self
    }
    /// Declares a boolean mask tensor with this broadcast.
    pub fn mask(mut self, mask: impl Into<Option<Broadcast>>) -> Self {
        self.mask = mask.into();
        self
    }
    /// Sets a sliding window (−1 = unbounded on that side).
    pub fn window(mut self, left: i64, right: i64) -> Self {
        self.window = Some(Window { left, right });
        self
    }
    /// Sets ALiBi.
    pub fn alibi(mut self, alibi: impl Into<Option<Alibi>>) -> Self {
        self.alibi = alibi.into();
        self
    }
    /// Sets logit soft-capping.
    pub fn softcap(mut self, cap: impl Into<Option<f32>>) -> Self {
        self.softcap = cap.into();
        self
    }
    /// Allows (or forbids) reduced-precision products for f32 inputs; see
    /// [`AttentionSpec::reduced_precision`](#structfield.reduced_precision).
    pub fn reduced_precision(mut self, allow: bool) -> Self {
        self.reduced_precision = allow;
        self
    }
    /// Chooses the kernel.
    pub fn kernel(mut self, kernel: Kernel) -> Self {
        self.kernel = kernel;
        self
    }
    /// Asks for the log-sum-exp output.
    pub fn with_lse(mut self, yes: bool) -> Self {
        self.return_lse = yes;
        self
    }
    /// Asks for the probability matrix.
    pub fn with_weights(mut self, yes: bool) -> Self {
        self.return_weights = yes;
        self
    }

    /// The scale actually used: the given one or 1/√head_dim.
    pub fn effective_scale(&self) -> f32 {
        self.scale
            .unwrap_or_else(|| (1.0 / (self.head_dim.max(1) as f64).sqrt()) as f32)
    }

    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.q_heads / self.kv_heads.max(1)
    }

    /// Elements of q (and out). Like every `*_len` here it saturates at `usize::MAX` instead
    /// of wrapping: a spec that passes [`AttentionSpec::validate`] never saturates, and
    /// [`AttentionSpec::sizes`] gives the checked u64 sizes.
    pub fn q_len(&self) -> usize {
        saturating_product(&[self.batch, self.q_heads, self.seq_q, self.head_dim])
    }
    /// Elements of k (and of v).
    pub fn kv_len(&self) -> usize {
        saturating_product(&[self.batch, self.kv_heads, self.seq_k, self.head_dim])
    }
    /// Elements of lse, `[B, Hq, Sq]` whatever the layout.
    pub fn lse_len(&self) -> usize {
        saturating_product(&[self.batch, self.q_heads, self.seq_q])
    }
    /// Elements of the probability matrix, `[B, Hq, Sq, Sk]` whatever the layout.
    pub fn weights_len(&self) -> usize {
        self.lse_len().saturating_mul(self.seq_k)
    }

    /// Shape of a tensor with `heads` heads and `seq` rows in this spec's layout.
    pub fn shape(&self, heads: usize, seq: usize) -> [usize; 4] {
        match self.layout {
            Layout::Bhsd => [self.batch, heads, seq, self.head_dim],
            Layout::Bshd => [self.batch, seq, heads, self.head_dim],
        }
    }
    /// Shape of q and out.
    pub fn q_shape(&self) -> [usize; 4] {
        self.shape(self.q_heads, self.seq_q)
    }
    /// Shape of k and v.
    pub fn kv_shape(&self) -> [usize; 4] {
        self.shape(self.kv_heads, self.seq_k)
    }

    /// Element strides (batch, head, row) of a tensor with `heads` heads and `seq` rows;
    /// the dim stride is 1. Saturating, as [`AttentionSpec::q_len`].
    pub fn strides(&self, heads: usize, seq: usize) -> Strides {
        let d = self.head_dim;
        match self.layout {
            Layout::Bhsd => Strides {
                batch: saturating_product(&[heads, seq, d]),
                head: seq.saturating_mul(d),
                row: d,
            },
            Layout::Bshd => Strides {
                batch: saturating_product(&[seq, heads, d]),
                head: d,
                row: heads.saturating_mul(d),
            },
        }
    }
    /// Strides of q and out.
    pub fn q_strides(&self) -> Strides {
        self.strides(self.q_heads, self.seq_q)
    }
    /// Strides of k and v.
    pub fn kv_strides(&self) -> Strides {
        self.strides(self.kv_heads, self.seq_k)
    }

    /// Offset added to the query row index to get the last visible key under the causal mask,
    /// or `None` without one.
    pub fn causal_offset(&self) -> Option<i64> {
        self.causal.map(|c| match c {
            CausalAlign::TopLeft => 0,
            CausalAlign::BottomRight => self.seq_k as i64 - self.seq_q as i64,
        })
    }

    /// Offset of the diagonal that sliding windows and ALiBi distances are measured from:
    /// the causal alignment when causal is set, else bottom-right (as FlashAttention).
    pub fn align_offset(&self) -> i64 {
        self.causal_offset()
            .unwrap_or(self.seq_k as i64 - self.seq_q as i64)
    }

    /// The keys visible to query row `i` of batch entry `b` under the structural masks
    /// (causal, key padding, sliding window): the half-open range `lo..hi`, empty when the row
    /// is fully masked. This is the single definition of those masks; a mask tensor, if any,
    /// hides further keys inside the range.
    pub fn visible_keys(&self, b: usize, i: usize) -> std::ops::Range<usize> {
        let mut lo = 0i64;
        let mut hi = self.seq_k as i64;
        if let Some(lens) = &self.kv_lens {
            hi = hi.min(lens[b] as i64);
        }
        if let Some(off) = self.causal_offset() {
            hi = hi.min(i as i64 + off + 1);
        }
        if let Some(w) = self.window {
            let diag = i as i64 + self.align_offset();
            if w.left >= 0 {
                lo = lo.max(diag - w.left);
            }
            if w.right >= 0 {
                hi = hi.min(diag + w.right + 1);
            }
        }
        let hi = hi.max(0);
        lo.clamp(0, hi) as usize..hi as usize
    }

    /// Floating-point operations by the convention of the benchmarks: 4·B·Hq·Sq·Sk·D, halved
    /// for causal with Sq = Sk; other causal shapes and sliding windows count their visible
    /// (query, key) pairs exactly. Key padding and mask tensors are not subtracted.
    pub fn flops(&self) -> f64 {
        let per_pair = 4.0 * (self.batch * self.q_heads * self.head_dim) as f64;
        let pairs = if self.window.is_none() && (self.causal.is_none() || self.seq_q == self.seq_k)
        {
            let all = (self.seq_q * self.seq_k) as f64;
            if self.causal.is_some() {
                all / 2.0
            } else {
                all
            }
        } else {
            let unpadded = AttentionSpec {
                kv_lens: None,
                ..self.clone()
            };
            (0..self.seq_q)
                .map(|i| unpadded.visible_keys(0, i).len() as f64)
                .sum()
        };
        per_pair * pairs
    }

    /// Every problem with this spec on a device with `limits`, as one [`Error::InvalidSpec`];
    /// `Ok(())` when there is none.
    pub fn validate(&self, limits: &DeviceLimits) -> Result<()> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, value: String, reason: String| {
            problems.push(SpecProblem {
                field: field.to_string(),
                value,
                reason,
            })
        };
        for (name, v) in [
            ("batch", self.batch),
            ("q_heads", self.q_heads),
            ("kv_heads", self.kv_heads),
            ("seq_q", self.seq_q),
            ("seq_k", self.seq_k),
        ] {
            if v == 0 {
                bad(name, "0".into(), "must be at least 1".into());
            }
        }
        if self.head_dim == 0 || self.head_dim > MAX_HEAD_DIM {
            bad(
                "head_dim",
                self.head_dim.to_string(),
                format!("must be in 1..={MAX_HEAD_DIM}"),
            );
        }
        if self.kv_heads != 0 && !self.q_heads.is_multiple_of(self.kv_heads) {
            bad(
                "q_heads",
                self.q_heads.to_string(),
                format!("is not a multiple of kv_heads = {}", self.kv_heads),
            );
        }
        if let Some(s) = self.scale
            && !s.is_finite()
        {
            bad("scale", s.to_string(), "must be finite".into());
        }
        if let Some(w) = self.window {
            for (side, n) in [("window.left", w.left), ("window.right", w.right)] {
                if n < -1 {
                    bad(
                        side,
                        n.to_string(),
                        "must be >= 0, or -1 for unbounded".into(),
                    );
                }
            }
        }
        if let Some(cap) = self.softcap
            && !(cap.is_finite() && cap > 0.0)
        {
            bad("softcap", cap.to_string(), "must be finite and > 0".into());
        }
        if let Some(Alibi::Slopes(slopes)) = &self.alibi {
            if slopes.len() != self.q_heads {
                bad(
                    "alibi",
                    format!("{} slopes", slopes.len()),
                    format!("must have one slope per query head = {}", self.q_heads),
                );
            }
            if let Some(x) = slopes.iter().find(|x| !x.is_finite()) {
                bad("alibi", x.to_string(), "slopes must be finite".into());
            }
        }
        if let Some(lens) = &self.kv_lens {
            if lens.len() != self.batch {
                bad(
                    "kv_lens",
                    format!("{} entries", lens.len()),
                    format!("must have one entry per batch = {}", self.batch),
                );
            }
            for (b, &l) in lens.iter().enumerate() {
                if l as usize > self.seq_k {
                    bad(
                        &format!("kv_lens[{b}]"),
                        l.to_string(),
                        format!("exceeds seq_k = {}", self.seq_k),
                    );
                }
            }
        }
        // Shaders hold positions (query rows, keys, diagonals) in i32.
        for (name, v) in [("seq_q", self.seq_q), ("seq_k", self.seq_k)] {
            if v > i32::MAX as usize {
                bad(
                    name,
                    v.to_string(),
                    format!("exceeds {} (shaders index positions with i32)", i32::MAX),
                );
            }
        }
        // Sizes, computed once with checked arithmetic: every tensor must be addressable with
        // u32 element indices and fit a buffer.
        match self.sizes() {
            Err(Error::InvalidSpec { problems: p }) => problems.extend(p),
            Err(e) => return Err(e),
            Ok(sizes) => {
                let es = self.dtype.size() as u64;
                let mut sized = vec![
                    ("q", sizes.q, es),
                    ("k", sizes.kv, es),
                    ("v", sizes.kv, es),
                    ("out", sizes.q, es),
                ];
                if self.return_weights {
                    sized.push(("weights", sizes.weights, 4));
                }
                if let Some(n) = sizes.bias {
                    sized.push(("bias", n, 4));
                }
                if let Some(n) = sizes.mask {
                    sized.push(("mask", n, 1));
                }
                for (name, elems, elem_bytes) in sized {
                    let bytes = elems.saturating_mul(elem_bytes);
                    if elems > u32::MAX as u64 {
                        problems.push(SpecProblem {
                            field: name.into(),
                            value: format!("{elems} elements"),
                            reason: "exceeds the 2^32-1 elements a shader can index".into(),
                        });
                    } else if bytes > limits.max_buffer_size {
                        problems.push(SpecProblem {
                            field: name.into(),
                            value: format!("{bytes} bytes"),
                            reason: format!("exceeds max_buffer_size = {}", limits.max_buffer_size),
                        });
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidSpec { problems })
        }
    }
}

/// The product of `dims`, saturating at `usize::MAX` instead of wrapping.
fn saturating_product(dims: &[usize]) -> usize {
    dims.iter().fold(1usize, |a, &n| a.saturating_mul(n))
}

/// Element strides of a 4-d tensor; the head_dim stride is always 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strides {
    /// Stride between batch entries.
    pub batch: usize,
    /// Stride between heads.
    pub head: usize,
    /// Stride between sequence rows.
    pub row: usize,
}

impl Strides {
    /// Flat index of element (b, h, i, 0).
    pub fn at(&self, b: usize, h: usize, i: usize) -> usize {
        b * self.batch + h * self.head + i * self.row
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shaders' MASKED_CUT is the Rust MASKED_LOGIT, and MASKED (what masked scores
    /// hold) is below both cuts (natural and base 2).
    #[test]
    fn shader_masking_constants_mirror_masked_logit() {
        for (file, common) in [
            ("common.wgsl", include_str!("../shaders/common.wgsl")),
            (
                "backward_common.wgsl",
                include_str!("../shaders/backward_common.wgsl"),
            ),
        ] {
            check_masking_constants(file, common);
        }
    }

    fn check_masking_constants(file: &str, common: &str) {
        let value = |name: &str| -> f32 {
            let prefix = format!("const {name}: f32 = ");
            let line = common
                .lines()
                .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
                .unwrap_or_else(|| panic!("no `{prefix}` in {file}"));
            line.trim_end_matches(';').trim().parse().unwrap()
        };
        assert_eq!(value("MASKED_CUT"), MASKED_LOGIT);
        let masked = value("MASKED");
        assert!(masked < MASKED_LOGIT * std::f32::consts::LOG2_E);
    }
}
