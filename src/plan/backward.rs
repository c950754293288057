//! GPU-resident backward: a [`BackwardPlan`] is built once per spec and records its passes into
//! a caller's `CommandEncoder`, reading and writing caller-owned buffers.

use super::BufferSizes;
use crate::error::{Error, Result};
use crate::gpu::{Runtime, gpu_scope};
use crate::kernels::backward::Backward;
use crate::kernels::bind;
use crate::planner::BackwardMode;
use crate::shader::Binding;
use crate::spec::AttentionSpec;

/// The caller's buffers for one [`BackwardPlan::encode`]. All need `STORAGE` usage and at
/// least the sizes of [`BackwardPlan::sizes`]; the gradient buffers must not alias any other.
///
/// Formats: q, k, v, out and d_out hold the spec's dtype (as for [`crate::Buffers`]); lse is
/// the forward's f32 `[B, Hq, Sq]`; bias f32 and mask bytes as in the forward; dq, dk, dv and
/// dbias are written as f32 in the layout of q, k, v and the bias's broadcast shape.
#[derive(Debug, Clone, Copy)]
pub struct BackwardBuffers<'a> {
    /// Queries.
    pub q: &'a wgpu::Buffer,
    /// Keys.
    pub k: &'a wgpu::Buffer,
    /// Values.
    pub v: &'a wgpu::Buffer,
    /// The forward's output.
    pub out: &'a wgpu::Buffer,
    /// The forward's log-sum-exp (f32, `[B, Hq, Sq]`, −∞ for rows with no visible key).
    pub lse: &'a wgpu::Buffer,
    /// The upstream gradient dL/dout, same shape and dtype as out.
    pub d_out: &'a wgpu::Buffer,
    /// Written: dL/dq (f32).
    pub dq: &'a wgpu::Buffer,
    /// Written: dL/dk (f32).
    pub dk: &'a wgpu::Buffer,
    /// Written: dL/dv (f32).
    pub dv: &'a wgpu::Buffer,
    /// The additive bias; required exactly when the spec declares one.
    pub bias: Option<&'a wgpu::Buffer>,
    /// The boolean mask as bytes; required exactly when the spec declares one.
    pub mask: Option<&'a wgpu::Buffer>,
    /// Written when given: dL/dbias (f32, the bias's broadcast shape). Only with a bias.
    pub dbias: Option<&'a wgpu::Buffer>,
}

impl<'a> BackwardBuffers<'a> {
    /// The buffers wgattn allocates itself (host path, benchmark): inputs
    /// `[q, k, v, out, lse, d_out]`, gradients `[dq, dk, dv, dbias]`; dbias is computed when
    /// `with_dbias`.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn from_sets(
        ins: &'a [wgpu::Buffer; 6],
        grads: &'a [wgpu::Buffer; 4],
        bias: Option<&'a wgpu::Buffer>,
        mask: Option<&'a wgpu::Buffer>,
        with_dbias: bool,
    ) -> Self {
        let [q, k, v, out, lse, d_out] = ins;
        let [dq, dk, dv, dbias] = grads;
        BackwardBuffers {
            q,
            k,
            v,
            out,
            lse,
            d_out,
            dq,
            dk,
            dv,
            bias,
            mask,
            dbias: with_dbias.then_some(dbias),
        }
    }
}

/// Bytes each buffer of a backward plan needs (0 for buffers the spec does not use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackwardSizes {
    /// q, out and d_out (spec dtype).
    pub q: u64,
    /// k and v (spec dtype).
    pub kv: u64,
    /// lse (f32).
    pub lse: u64,
    /// bias (f32).
    pub bias: u64,
    /// mask (bytes, padded to 4).
    pub mask: u64,
    /// dq (f32).
    pub dq: u64,
    /// dk and dv (f32).
    pub dkv: u64,
    /// dbias (f32).
    pub dbias: u64,
}

impl BackwardSizes {
    /// The sizes for `spec`.
    pub fn of(spec: &AttentionSpec) -> Self {
        // The forward's checked sizes (crate::Sizes) for the tensors both passes share; the
        // gradients are f32 of q's and k's element counts (u64::MAX when they overflow, which
        // `validate` refuses before any plan is made).
        let f = BufferSizes::of(spec);
        let f32_bytes =
            |elems: Option<u64>| elems.and_then(|n| n.checked_mul(4)).unwrap_or(u64::MAX);
        let s = spec.sizes().ok();
        BackwardSizes {
            q: f.q,
            kv: f.kv,
            lse: f.lse,
            bias: f.bias,
            mask: f.mask,
            dq: f32_bytes(s.as_ref().map(|s| s.q)),
            dkv: f32_bytes(s.as_ref().map(|s| s.kv)),
            dbias: f.bias,
        }
    }
}

/// A compiled backward plan for one spec on one device. Memory it owns: `4·B·Hq·Sq` f32 of
/// row statistics (m, log l, and D split in two), the aux buffer and four uniforms — no score
/// matrix.
pub struct BackwardPlan {
    spec: AttentionSpec,
    mode: BackwardMode,
    device: wgpu::Device,
    kernels: Backward,
}

impl std::fmt::Debug for BackwardPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackwardPlan")
            .field("spec", &self.spec)
            .field("shaders", &self.shaders())
            .finish_non_exhaustive()
    }
}

impl BackwardPlan {
    /// Validates `spec` for the backward pass on `rt`'s device and compiles (or takes from the
    /// cache) its pipelines in `mode`. The spec's kernel, lse and weights settings are
    /// ignored.
    pub(crate) fn new(rt: &Runtime, spec: &AttentionSpec, mode: BackwardMode) -> Result<Self> {
        spec.validate(rt.limits())?;
        let sizes = BackwardSizes::of(spec);
        let limit = rt.limits().max_storage_binding;
        for (name, bytes) in [
            ("q", sizes.q),
            ("k", sizes.kv),
            ("lse", sizes.lse),
            ("row statistics", sizes.lse * 4),
            ("bias", sizes.bias),
            ("mask", sizes.mask),
            ("dq", sizes.dq),
            ("dk", sizes.dkv),
        ] {
            if bytes > limit {
                return Err(Error::TooLarge {
                    what: format!("backward pass: tensor `{name}` (bound whole, not split)"),
                    needed: bytes,
                    allowed: limit,
                    limit: "max_storage_buffer_binding_size",
                });
            }
        }
        Ok(BackwardPlan {
            spec: spec.clone(),
            mode,
            device: rt.device().clone(),
            kernels: Backward::new(rt, spec, mode, sizes.lse * 4)?,
        })
    }
}

impl BackwardPlan {
    /// The spec this plan differentiates.
    pub fn spec(&self) -> &AttentionSpec {
        &self.spec
    }

    /// The mode the plan was built in.
    pub fn mode(&self) -> BackwardMode {
        self.mode
    }

    /// Bytes each caller buffer needs.
    pub fn sizes(&self) -> BackwardSizes {
        BackwardSizes::of(&self.spec)
    }

    /// The shader variants the plan runs, in order (the dbias pass last, when the spec has a
    /// bias), e.g. `backward/dq.wgsl[D4=16,BIAS]`.
    pub fn shaders(&self) -> Vec<String> {
        self.kernels.shaders().map(|s| s.key()).collect()
    }

    /// Records the backward pass into `encoder`. Checks every buffer first (typed
    /// [`Error::BadBuffer`]); nothing is recorded when a check fails. dbias is computed only
    /// when `bufs.dbias` is given.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder, bufs: &BackwardBuffers) -> Result<()> {
        self.check(bufs)?;
        let sizes = self.sizes();
        // the caller's buffers, each bound over the bytes the spec needs
        let caller = |b: Binding| {
            let (buffer, bytes) = match b {
                Binding::Q => (bufs.q, sizes.q),
                Binding::K => (bufs.k, sizes.kv),
                Binding::V => (bufs.v, sizes.kv),
                Binding::Out => (bufs.out, sizes.q),
                Binding::Lse => (bufs.lse, sizes.lse),
                Binding::DOut => (bufs.d_out, sizes.q),
                Binding::Dq => (bufs.dq, sizes.dq),
                Binding::Dk => (bufs.dk, sizes.dkv),
                Binding::Dv => (bufs.dv, sizes.dkv),
                Binding::Bias => (bufs.bias?, sizes.bias),
                Binding::Mask => (bufs.mask?, sizes.mask),
                Binding::Dbias => (bufs.dbias?, sizes.dbias),
                _ => return None,
            };
            Some(bind::prefix(buffer, bytes))
        };
        gpu_scope(&self.device, "encoding the backward pass", || {
            self.kernels
                .encode(&self.device, encoder, bufs.dbias.is_some(), caller)
        })
    }

    fn check(&self, bufs: &BackwardBuffers) -> Result<()> {
        let sizes = self.sizes();
        let bad = |buffer, problem: String| Err(Error::BadBuffer { buffer, problem });
        let s = &self.spec;
        for (name, wanted, given) in [
            ("bias", s.bias.is_some(), bufs.bias.is_some()),
            ("mask", s.mask.is_some(), bufs.mask.is_some()),
        ] {
            match (wanted, given) {
                (true, false) => {
                    return bad(name, format!("the spec declares {name} but none was given"));
                }
                (false, true) => {
                    return bad(name, format!("given, but the spec declares no {name}"));
                }
                _ => {}
            }
        }
        if bufs.dbias.is_some() && s.bias.is_none() {
            return bad("dbias", "given, but the spec declares no bias".into());
        }
        let list = [
            ("q", Some(bufs.q), sizes.q),
            ("k", Some(bufs.k), sizes.kv),
            ("v", Some(bufs.v), sizes.kv),
            ("out", Some(bufs.out), sizes.q),
            ("lse", Some(bufs.lse), sizes.lse),
            ("d_out", Some(bufs.d_out), sizes.q),
            ("dq", Some(bufs.dq), sizes.dq),
            ("dk", Some(bufs.dk), sizes.dkv),
            ("dv", Some(bufs.dv), sizes.dkv),
            ("bias", bufs.bias, sizes.bias),
            ("mask", bufs.mask, sizes.mask),
            ("dbias", bufs.dbias, sizes.dbias),
        ];
        super::check_given(&list, &["dq", "dk", "dv", "dbias"])
    }
}
