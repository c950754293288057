//! What one attention call computes: shapes, layout, scale, masks and kernel choice — the
//! spec layer, pure data shared by every other: the options ([`options`](self)), the checked
//! sizes ([`Sizes`]), the device limits plans are made against ([`DeviceLimits`]), host inputs
//! ([`Inputs`]) and outputs ([`Output`], [`Grads`]).

mod inputs;
mod limits;
mod options;
mod output;
mod sizes;
mod validate;

pub use inputs::{Inputs, Tensor, gpu_bytes, mask_bytes};
pub use limits::DeviceLimits;
pub use options::{
    Alibi, Broadcast, CausalAlign, DType, Kernel, Layout, MASKED_LOGIT, MAX_HEAD_DIM, Window,
    standard_alibi_slopes,
};
pub use output::{ErrorStats, Grads, Measure, Output, TensorVerdict, Verdict};
pub use sizes::{Sizes, Strides64};

use options::saturating_product;

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
        check_masking_constants(
            "common/masking.inc.wgsl",
            include_str!("../../shaders/common/masking.inc.wgsl"),
        );
        // every kernel takes the constants from that one file
        for (name, text) in crate::shader::templates() {
            if *name != "common/masking.inc.wgsl" {
                assert!(
                    !text.contains("const MASKED"),
                    "{name} defines MASKED itself"
                );
            }
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
