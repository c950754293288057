//! Deterministic random inputs for tests, `wgattn validate`, `demo` and benchmarks.
//!
//! A hand-written SplitMix64 generator is used on purpose: the same seed gives the same
//! tensors on every platform and every version of every dependency, so a failing case named by
//! its seed can always be reproduced.

use crate::spec::AttentionSpec;

/// SplitMix64 with Box–Muller normals.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal.
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// `n` values of N(mean, std²) as f32.
    pub fn normals(&mut self, n: usize, mean: f64, std: f64) -> Vec<f32> {
        (0..n)
            .map(|_| (mean + std * self.normal()) as f32)
            .collect()
    }
}

/// Input distributions used by the validation cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dist {
    /// q, k, v ~ N(0, 1).
    Normal,
    /// q, k, v ~ 30·N(0, 1): logits of order 10³.
    Normal30,
    /// q, k ~ N(3, 1), v ~ N(0, 1): large positive logits with a common offset.
    Offset3,
}

impl Dist {
    /// Name used in case files (`dist` metadata).
    pub fn name(self) -> &'static str {
        match self {
            Dist::Normal => "normal",
            Dist::Normal30 => "normal30",
            Dist::Offset3 => "offset3",
        }
    }
}

/// Random q, k, v for `spec`.
pub fn inputs(spec: &AttentionSpec, dist: Dist, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let (qk_mean, std) = match dist {
        Dist::Normal => (0.0, 1.0),
        Dist::Normal30 => (0.0, 30.0),
        Dist::Offset3 => (3.0, 1.0),
    };
    let q = rng.normals(spec.q_len(), qk_mean, std);
    let k = rng.normals(spec.kv_len(), qk_mean, std);
    let v = rng.normals(
        spec.kv_len(),
        0.0,
        if dist == Dist::Normal30 { 30.0 } else { 1.0 },
    );
    (q, k, v)
}

/// Generated inputs for a spec: q, k, v and, when the spec declares them, bias and mask.
#[derive(Debug, Clone)]
pub struct Generated {
    /// Queries.
    pub q: Vec<f32>,
    /// Keys.
    pub k: Vec<f32>,
    /// Values.
    pub v: Vec<f32>,
    /// Bias: N(0, 1) with about 2% −∞ entries (masked keys).
    pub bias: Option<Vec<f32>>,
    /// Mask: about 75% of keys kept; every fifth query row (i % 5 == 3) fully masked.
    pub mask: Option<Vec<bool>>,
}

impl Generated {
    /// The inputs, borrowed.
    pub fn inputs(&self) -> crate::spec::Inputs<'_> {
        crate::spec::Inputs {
            q: crate::spec::Tensor::F32(&self.q),
            k: crate::spec::Tensor::F32(&self.k),
            v: crate::spec::Tensor::F32(&self.v),
            bias: self.bias.as_deref().map(crate::spec::Tensor::F32),
            mask: self.mask.as_deref(),
        }
    }
}

/// Random inputs for `spec`, including the bias and mask tensors it declares.
pub fn generate(spec: &AttentionSpec, dist: Dist, seed: u64) -> Generated {
    let (q, k, v) = inputs(spec, dist, seed);
    let mut rng = Rng::new(seed ^ 0xB1A5);
    let bias = spec.bias.map(|b| {
        (0..b.len(spec))
            .map(|_| {
                if rng.uniform() < 0.02 {
                    f32::NEG_INFINITY
                } else {
                    rng.normal() as f32
                }
            })
            .collect()
    });
    let mask = spec.mask.map(|m| {
        (0..m.len(spec))
            .map(|e| {
                let i = (e / spec.seq_k) % spec.seq_q;
                i % 5 != 3 && rng.uniform() < 0.75
            })
            .collect()
    });
    Generated {
        q,
        k,
        v,
        bias,
        mask,
    }
}
