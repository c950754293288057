//! Every element count and stride of an attention problem, computed once, in u64 with checked
//! multiplication. [`AttentionSpec::validate`], the buffer sizes of a plan and the chunker all
//! read them from here, so a shape whose sizes overflow is refused instead of wrapping.

use crate::error::{Error, Result, SpecProblem};
use crate::spec::{AttentionSpec, Broadcast, Layout};

/// Element strides of a 4-d tensor in u64; the head_dim stride is always 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strides64 {
    /// Stride between batch entries.
    pub batch: u64,
    /// Stride between heads.
    pub head: u64,
    /// Stride between sequence rows.
    pub row: u64,
}

impl Strides64 {
    /// Flat index of element (b, h, i, 0). Callers index inside a validated shape, whose flat
    /// indices fit u64 (they are below the tensor's element count).
    pub fn at(&self, b: u64, h: u64, i: u64) -> u64 {
        b * self.batch + h * self.head + i * self.row
    }
}

/// The element counts and strides of every tensor of one spec (see [`AttentionSpec::sizes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Elements of q and of out: B·Hq·Sq·D.
    pub q: u64,
    /// Elements of k and of v: B·Hkv·Sk·D.
    pub kv: u64,
    /// Elements of lse, `[B, Hq, Sq]`: B·Hq·Sq (also the number of query rows).
    pub lse: u64,
    /// Elements of the probability matrix `[B, Hq, Sq, Sk]` (whether or not it is returned).
    pub weights: u64,
    /// (batch·head) pairs: B·Hq.
    pub bh: u64,
    /// Elements of the bias tensor, when the spec declares one.
    pub bias: Option<u64>,
    /// Elements of the mask tensor, when the spec declares one.
    pub mask: Option<u64>,
    /// Strides of q and out.
    pub q_strides: Strides64,
    /// Strides of k and v.
    pub kv_strides: Strides64,
    /// (batch, head) strides of the bias; 0 where broadcast.
    pub bias_strides: (u64, u64),
    /// (batch, head) strides of the mask; 0 where broadcast.
    pub mask_strides: (u64, u64),
}

/// Multiplies `dims` (named, for the message) with overflow checking.
fn product(problems: &mut Vec<SpecProblem>, field: &str, dims: &[(&str, usize)]) -> u64 {
    let mut acc: Option<u64> = Some(1);
    for &(_, n) in dims {
        acc = acc.and_then(|a| a.checked_mul(n as u64));
    }
    acc.unwrap_or_else(|| {
        problems.push(SpecProblem {
            field: format!("{field} size"),
            value: dims
                .iter()
                .map(|(name, n)| format!("{name} {n}"))
                .collect::<Vec<_>>()
                .join(" × "),
            reason: "overflows 64 bits".into(),
        });
        u64::MAX
    })
}

impl Sizes {
    /// The sizes of `spec`, or [`Error::InvalidSpec`] naming each size that overflows u64.
    pub fn of(spec: &AttentionSpec) -> Result<Sizes> {
        let mut problems = Vec::new();
        let p = &mut problems;
        let (b, hq, hkv, sq, sk, d) = (
            ("B", spec.batch),
            ("Hq", spec.q_heads),
            ("Hkv", spec.kv_heads),
            ("Sq", spec.seq_q),
            ("Sk", spec.seq_k),
            ("D", spec.head_dim),
        );
        let q = product(p, "q", &[b, hq, sq, d]);
        let kv = product(p, "k", &[b, hkv, sk, d]);
        let lse = product(p, "lse", &[b, hq, sq]);
        let weights = product(p, "weights", &[b, hq, sq, sk]);
        let bh = product(p, "batch·heads", &[b, hq]);
        let strides = |p: &mut Vec<SpecProblem>, name: &str, heads: (&str, usize), seq| {
            // The batch stride is the largest; the others are its factors, so they fit too.
            let batch = product(p, name, &[heads, seq, d]);
            let (hs, ss, dd) = (heads.1 as u64, seq.1 as u64, d.1 as u64);
            if batch == u64::MAX {
                return Strides64 {
                    batch,
                    head: u64::MAX,
                    row: u64::MAX,
                };
            }
            match spec.layout {
                Layout::Bhsd => Strides64 {
                    batch,
                    head: ss * dd,
                    row: dd,
                },
                Layout::Bshd => Strides64 {
                    batch,
                    head: dd,
                    row: hs * dd,
                },
            }
        };
        let q_strides = strides(p, "q strides", hq, sq);
        let kv_strides = strides(p, "k strides", hkv, sk);
        let broadcast = |p: &mut Vec<SpecProblem>, name: &str, m: Option<Broadcast>| {
            let m = m?;
            let dims = [
                ("B", if m.per_batch { spec.batch } else { 1 }),
                ("Hq", if m.per_head { spec.q_heads } else { 1 }),
                sq,
                sk,
            ];
            let len = product(p, name, &dims);
            let head = if m.per_head {
                product(p, name, &[sq, sk])
            } else {
                0
            };
            let batch = if m.per_batch {
                product(p, name, &[dims[1], sq, sk])
            } else {
                0
            };
            Some((len, (batch, head)))
        };
        let bias = broadcast(p, "bias", spec.bias);
        let mask = broadcast(p, "mask", spec.mask);
        if !problems.is_empty() {
            return Err(Error::InvalidSpec { problems });
        }
        Ok(Sizes {
            q,
            kv,
            lse,
            weights,
            bh,
            bias: bias.map(|x| x.0),
            mask: mask.map(|x| x.0),
            q_strides,
            kv_strides,
            bias_strides: bias.map_or((0, 0), |x| x.1),
            mask_strides: mask.map_or((0, 0), |x| x.1),
        })
    }

    /// Bytes of host memory a case of this spec holds as f32 tensors: q, k, v, bias (f32),
    /// mask (one byte per element), and `out` when `with_out` (saturating; compare with what
    /// you can allocate).
    pub fn host_bytes(&self, with_out: bool) -> u64 {
        let f32s = self
            .q
            .saturating_add(self.kv.saturating_mul(2))
            .saturating_add(self.bias.unwrap_or(0))
            .saturating_add(if with_out { self.q } else { 0 });
        f32s.saturating_mul(4)
            .saturating_add(self.mask.unwrap_or(0))
    }
}

impl AttentionSpec {
    /// Every element count and stride of this spec, computed in u64 with checked
    /// multiplication; [`Error::InvalidSpec`] names each one that overflows.
    pub fn sizes(&self) -> Result<Sizes> {
        Sizes::of(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Broadcast;

    #[test]
    fn sizes_match_the_shapes() {
        let spec = AttentionSpec::new(2, 4, 2, 5, 7, 3).bias(Broadcast {
            per_batch: true,
            per_head: false,
        });
        let s = spec.sizes().unwrap();
        assert_eq!((s.q, s.kv, s.lse, s.weights, s.bh), (120, 84, 40, 280, 8));
        assert_eq!(s.bias, Some(70));
        assert_eq!(s.bias_strides, (35, 0));
        assert_eq!(
            s.q_strides,
            Strides64 {
                batch: 60,
                head: 15,
                row: 3
            }
        );
        let bshd = spec.layout(Layout::Bshd).sizes().unwrap();
        assert_eq!(
            bshd.kv_strides,
            Strides64 {
                batch: 42,
                head: 3,
                row: 6
            }
        );
    }

    #[test]
    fn overflowing_sizes_are_refused_by_name() {
        // 2^20 · 2^20 · 2^16 · 2^8 = 2^64 wraps to 0 when multiplied unchecked.
        let spec = AttentionSpec::new(1 << 20, 1 << 20, 1 << 20, 1 << 16, 1 << 16, 256);
        let Err(Error::InvalidSpec { problems }) = spec.sizes() else {
            panic!("sizes of a 2^64-element q were accepted");
        };
        assert!(problems.iter().any(|p| p.field == "q size"), "{problems:?}");
    }
}
