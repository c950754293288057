//! [`AttentionSpec::validate`]: every problem of a spec, before any GPU work.

use crate::error::{Error, Result, SpecProblem};

use super::{Alibi, AttentionSpec, DeviceLimits, MAX_HEAD_DIM};

impl AttentionSpec {
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
