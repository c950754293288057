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

/// Which error measure a tolerance bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Relative Frobenius error, ‖got − expected‖_F / ‖expected‖_F.
    RelFro,
    /// Largest absolute difference.
    MaxAbs,
}

impl Measure {
    /// `rel_fro` or `max_abs`.
    pub fn name(self) -> &'static str {
        match self {
            Measure::RelFro => "rel_fro",
            Measure::MaxAbs => "max_abs",
        }
    }
}

/// The verdict on one tensor (out, lse or weights): its error, the tolerance it is held to
/// and the placement of infinities (lse −∞ of fully masked rows must match exactly).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorVerdict {
    /// The error measures.
    pub stats: ErrorStats,
    /// Which measure `tolerance` bounds.
    pub measure: Measure,
    /// The bound. It never depends on the values being checked (see
    /// [`Tolerances`](crate::validation::Tolerances)).
    pub tolerance: f64,
    /// Entries where got and expected are not both finite or the same infinity (e.g. a −∞
    /// lse where the reference has a finite one); lengths that differ count every entry.
    pub inf_mismatches: usize,
}

impl TensorVerdict {
    /// Compares `got` with `expected`, holding `measure` to `tolerance`.
    pub fn judge(got: &[f32], expected: &[f32], measure: Measure, tolerance: f64) -> Self {
        let inf_mismatches = if got.len() != expected.len() {
            got.len().max(expected.len())
        } else {
            got.iter()
                .zip(expected)
                .filter(|(g, e)| (g.is_infinite() || e.is_infinite()) && g != e)
                .count()
        };
        TensorVerdict {
            stats: ErrorStats::compare(got, expected),
            measure,
            tolerance,
            inf_mismatches,
        }
    }

    /// The measured error that `tolerance` bounds.
    pub fn error(&self) -> f64 {
        match self.measure {
            Measure::RelFro => self.stats.rel_fro,
            Measure::MaxAbs => self.stats.max_abs,
        }
    }

    /// No NaN, infinities in the same places, and the error within the tolerance.
    pub fn passed(&self) -> bool {
        self.stats.nan_count == 0 && self.inf_mismatches == 0 && self.error() <= self.tolerance
    }

    /// E.g. `rel_fro 1.2e-6 ≤ 1.0e-5 ok` or `max_abs 3.1e-2 > 1.0e-3 FAIL, 2 NaN`.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} {:.2e} {} {:.1e}",
            self.measure.name(),
            self.error(),
            if self.error() <= self.tolerance {
                "≤"
            } else {
                ">"
            },
            self.tolerance
        );
        if self.stats.nan_count > 0 {
            s.push_str(&format!(", {} NaN", self.stats.nan_count));
        }
        if self.inf_mismatches > 0 {
            s.push_str(&format!(", {} misplaced ±∞", self.inf_mismatches));
        }
        s.push_str(if self.passed() { " ok" } else { " FAIL" });
        s
    }
}

/// The verdict on a whole result: out, and lse and weights when both sides have them. One
/// type for `wgattn run --check`, `validate`, `demo` and the tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The attention output.
    pub out: TensorVerdict,
    /// Log-sum-exp, when checked.
    pub lse: Option<TensorVerdict>,
    /// Probability matrix, when checked.
    pub weights: Option<TensorVerdict>,
}

impl Verdict {
    /// True when every checked tensor passed.
    pub fn passed(&self) -> bool {
        self.out.passed()
            && self.lse.as_ref().is_none_or(TensorVerdict::passed)
            && self.weights.as_ref().is_none_or(TensorVerdict::passed)
    }

    /// One line: `out rel_fro … ok; lse max_abs … ok`.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("out {}", self.out.describe())];
        if let Some(l) = &self.lse {
            parts.push(format!("lse {}", l.describe()));
        }
        if let Some(w) = &self.weights {
            parts.push(format!("weights {}", w.describe()));
        }
        parts.join("; ")
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Gradients of one attention call. All are f32, whatever the storage dtype.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grads {
    /// dL/dq, same shape and layout as q.
    pub dq: Vec<f32>,
    /// dL/dk, same shape and layout as k.
    pub dk: Vec<f32>,
    /// dL/dv, same shape and layout as v.
    pub dv: Vec<f32>,
    /// dL/dbias in the bias's broadcast shape (broadcast dimensions summed); present when the
    /// spec declares a bias.
    pub dbias: Option<Vec<f32>>,
}
