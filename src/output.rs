//! What an attention call returns, and the error measures used to compare two results.

/// The result of one attention call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    /// The attention output, same shape and layout as q.
    pub out: Vec<f32>,
    /// Log-sum-exp per row, `[B, Hq, Sq]` (natural log, logits already scaled); −∞ for rows
    /// with no visible key. Present when the spec asked for it.
    pub lse: Option<Vec<f32>>,
    /// Probability matrix `[B, Hq, Sq, Sk]`. Present when the spec asked for it.
    pub weights: Option<Vec<f32>>,
}

/// How far one tensor is from another.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorStats {
    /// Largest absolute difference.
    pub max_abs: f64,
    /// ‖a − b‖_F / ‖b‖_F (or ‖a − b‖_F when b is all zero).
    pub rel_fro: f64,
    /// Elements of `a` that are NaN.
    pub nan_count: usize,
}

impl ErrorStats {
    /// Compares `got` with `expected` in f64. Differing lengths count as an infinite error.
    /// Infinities in the same place with the same sign (e.g. lse of fully masked rows) match.
    pub fn compare(got: &[f32], expected: &[f32]) -> ErrorStats {
        if got.len() != expected.len() {
            return ErrorStats {
                max_abs: f64::INFINITY,
                rel_fro: f64::INFINITY,
                nan_count: got.iter().filter(|x| x.is_nan()).count(),
            };
        }
        let (mut diff2, mut ref2, mut max_abs, mut nans) = (0.0f64, 0.0f64, 0.0f64, 0usize);
        for (&g, &e) in got.iter().zip(expected) {
            if g.is_nan() {
                nans += 1;
                continue;
            }
            if g.is_infinite() || e.is_infinite() {
                if g != e {
                    max_abs = f64::INFINITY;
                    diff2 = f64::INFINITY;
                }
                continue;
            }
            let d = g as f64 - e as f64;
            diff2 += d * d;
            ref2 += (e as f64) * (e as f64);
            max_abs = max_abs.max(d.abs());
        }
        let rel_fro = if ref2 > 0.0 {
            (diff2 / ref2).sqrt()
        } else {
            diff2.sqrt()
        };
        ErrorStats {
            max_abs: if nans > 0 { f64::INFINITY } else { max_abs },
            rel_fro: if nans > 0 { f64::INFINITY } else { rel_fro },
            nan_count: nans,
        }
    }

    /// True when there is no NaN and the relative Frobenius error is at most `tol`.
    pub fn within(&self, tol: f64) -> bool {
        self.nan_count == 0 && self.rel_fro <= tol
    }
}
