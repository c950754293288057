//! Which part of which head to draw ([`Window`], [`parse_range`]) and the probabilities found
//! there ([`AttentionMatrix`]).

use std::ops::Range;

use wgattn::{AttentionSpec, Error, Inputs, Result};

use super::problem::window_mask;

/// Which part of which head's probability matrix to draw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Batch entry.
    pub batch: usize,
    /// Query head.
    pub head: usize,
    /// Query rows (half-open), the rows of the image.
    pub queries: Range<usize>,
    /// Keys (half-open), the columns of the image.
    pub keys: Range<usize>,
}

impl Window {
    /// All query rows and keys of head `head` of batch entry `batch`.
    pub fn whole(spec: &AttentionSpec, batch: usize, head: usize) -> Self {
        Window {
            batch,
            head,
            queries: 0..spec.seq_q,
            keys: 0..spec.seq_k,
        }
    }

    /// Checks the window against `spec`: batch entry and head exist, ranges are non-empty and
    /// inside the sequences. Reports every problem as one [`Error::InvalidSpec`].
    pub fn check(&self, spec: &AttentionSpec) -> Result<()> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, value: String, reason: String| {
            problems.push(wgattn::SpecProblem {
                field: field.to_string(),
                value,
                reason,
            })
        };
        if self.batch >= spec.batch {
            bad(
                "batch",
                self.batch.to_string(),
                format!("is out of range: the input has batch = {}", spec.batch),
            );
        }
        if self.head >= spec.q_heads {
            bad(
                "head",
                self.head.to_string(),
                format!(
                    "is out of range: the input has {} query heads",
                    spec.q_heads
                ),
            );
        }
        for (field, r, len, what) in [
            ("query_range", &self.queries, spec.seq_q, "seq_q"),
            ("key_range", &self.keys, spec.seq_k, "seq_k"),
        ] {
            if r.start >= r.end {
                bad(
                    field,
                    format!("{}..{}", r.start, r.end),
                    "is empty (start must be below end)".into(),
                );
            } else if r.end > len {
                bad(
                    field,
                    format!("{}..{}", r.start, r.end),
                    format!("ends past {what} = {len}"),
                );
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidSpec { problems })
        }
    }
}

/// Parses a half-open range `a..b` of indices into a sequence of `len` (`a..` runs to the end,
/// `..b` starts at 0, `..` or an empty string is everything). Errors name `field`.
pub fn parse_range(field: &str, s: &str, len: usize) -> Result<Range<usize>> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(0..len);
    }
    let Some((a, b)) = t.split_once("..") else {
        return Err(Error::spec(field, s, "is not of the form a..b (half-open)"));
    };
    let bound = |x: &str, default: usize| -> Result<usize> {
        let x = x.trim();
        if x.is_empty() {
            return Ok(default);
        }
        x.parse().map_err(|_| {
            Error::spec(
                field,
                s,
                format!("has {x:?}, not a non-negative integer (expected a..b)"),
            )
        })
    };
    let (start, end) = (bound(a, 0)?, bound(b, len)?);
    if start >= end {
        return Err(Error::spec(field, s, "is empty (start must be below end)"));
    }
    if end > len {
        return Err(Error::spec(
            field,
            s,
            format!("ends past the sequence length {len}"),
        ));
    }
    Ok(start..end)
}

/// The probabilities of one head in a [`Window`], row-major (`rows × cols`), with the mask.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionMatrix {
    /// Where the matrix comes from; rows are `window.queries`, columns `window.keys`.
    pub window: Window,
    /// Probabilities, `rows × cols` row-major (0 where masked).
    pub weights: Vec<f32>,
    /// True where the cell is masked, same indexing as `weights`.
    pub masked: Vec<bool>,
    /// Text labels of the query rows and of the keys (e.g. tokens), drawn on the axes
    /// instead of indices when no axis is aggregated; `None`: indices.
    pub labels: Option<(Vec<String>, Vec<String>)>,
}

#[cfg(test)]
impl AttentionMatrix {
    /// A `rows × cols` matrix of head 0 whose cell (r, c) is `f(r, c)` (`None`: masked).
    pub(crate) fn from_fn(
        rows: usize,
        cols: usize,
        f: impl Fn(usize, usize) -> Option<f32>,
    ) -> AttentionMatrix {
        let mut weights = Vec::new();
        let mut masked = Vec::new();
        for r in 0..rows {
            for c in 0..cols {
                let v = f(r, c);
                weights.push(v.unwrap_or(0.0));
                masked.push(v.is_none());
            }
        }
        let window = Window {
            batch: 0,
            head: 0,
            queries: 0..rows,
            keys: 0..cols,
        };
        AttentionMatrix::new(window, weights, masked).expect("lengths match")
    }
}

impl AttentionMatrix {
    /// A matrix from its parts; `weights` and `masked` must both hold
    /// `window.queries.len() × window.keys.len()` elements.
    pub fn new(window: Window, weights: Vec<f32>, masked: Vec<bool>) -> Result<Self> {
        let expected = window.queries.len() * window.keys.len();
        for (tensor, got) in [("weights", weights.len()), ("masked", masked.len())] {
            if got != expected {
                return Err(Error::InputLength {
                    tensor,
                    expected,
                    got,
                    shape: format!("[{}, {}]", window.queries.len(), window.keys.len()),
                });
            }
        }
        Ok(AttentionMatrix {
            window,
            weights,
            masked,
            labels: None,
        })
    }

    /// Cuts the window out of a full probability matrix `[B, Hq, Sq, Sk]` of `spec` (e.g. the
    /// `weights` of [`reference::attention_with`](wgattn::reference::attention_with) with
    /// `with_weights(true)`), given the inputs it was computed from (for the bias and mask
    /// tensors). The mask is [`window_mask`].
    pub fn from_weights(
        spec: &AttentionSpec,
        inputs: &Inputs,
        weights: &[f32],
        window: &Window,
    ) -> Result<Self> {
        let masked = window_mask(spec, inputs, window)?;
        if weights.len() != spec.weights_len() {
            return Err(Error::InputLength {
                tensor: "weights",
                expected: spec.weights_len(),
                got: weights.len(),
                shape: format!(
                    "[{}, {}, {}, {}]",
                    spec.batch, spec.q_heads, spec.seq_q, spec.seq_k
                ),
            });
        }
        let base = (window.batch * spec.q_heads + window.head) * spec.seq_q * spec.seq_k;
        let mut cut = Vec::with_capacity(masked.len());
        for i in window.queries.clone() {
            let row = base + i * spec.seq_k;
            cut.extend_from_slice(&weights[row + window.keys.start..row + window.keys.end]);
        }
        Ok(AttentionMatrix {
            window: window.clone(),
            weights: cut,
            masked,
            labels: None,
        })
    }

    /// Labels the query rows and keys of the window with `tokens` (the labels of positions
    /// 0.., e.g. a sentence's tokens), or an error when they do not cover the window.
    pub fn with_tokens(mut self, query_tokens: &[String], key_tokens: &[String]) -> Result<Self> {
        let w = &self.window;
        for (name, tokens, range) in [
            ("query tokens", query_tokens, &w.queries),
            ("key tokens", key_tokens, &w.keys),
        ] {
            if tokens.len() < range.end {
                return Err(Error::spec(
                    name,
                    tokens.len(),
                    format!("labels do not cover positions up to {}", range.end),
                ));
            }
        }
        self.labels = Some((
            query_tokens[w.queries.clone()].to_vec(),
            key_tokens[w.keys.clone()].to_vec(),
        ));
        Ok(self)
    }

    /// Rows (query rows of the window).
    pub fn rows(&self) -> usize {
        self.window.queries.len()
    }

    /// Columns (keys of the window).
    pub fn cols(&self) -> usize {
        self.window.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_reject() {
        assert_eq!(parse_range("r", "2..5", 7).ok(), Some(2..5));
        assert_eq!(parse_range("r", "2..", 7).ok(), Some(2..7));
        assert_eq!(parse_range("r", "..3", 7).ok(), Some(0..3));
        assert_eq!(parse_range("r", "", 7).ok(), Some(0..7));
        for bad in ["5..2", "3..3", "0..8", "a..b", "4", "-1..3"] {
            let e = parse_range("query_range", bad, 7).expect_err(bad);
            assert!(
                e.is_input_error() && e.to_string().contains("query_range"),
                "{e}"
            );
        }
    }
}
