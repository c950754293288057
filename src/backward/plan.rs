//! GPU-resident backward: a [`BackwardPlan`] is built once per spec and records its passes into
//! a caller's `CommandEncoder`, reading and writing caller-owned buffers.

use std::sync::Arc;

use super::BackwardMode;
use super::kernels::{self, BwdParams, Pass};
use crate::context::{Context, gpu_scope, init_buffer};
use crate::error::{Error, Result};
use crate::kernels::params::Storage;
use crate::plan::BufferSizes;
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

struct Step {
    pass: Pass,
    key: String,
    pipeline: Arc<wgpu::ComputePipeline>,
    uniform: wgpu::Buffer,
    groups: (u32, u32, u32),
}

/// A compiled backward plan for one spec on one device. Memory it owns: `4·B·Hq·Sq` f32 of
/// row statistics (m, log l, and D split in two), the aux buffer and four uniforms — no score
/// matrix.
pub struct BackwardPlan {
    spec: AttentionSpec,
    mode: BackwardMode,
    device: wgpu::Device,
    steps: Vec<Step>,
    aux: wgpu::Buffer,
    stats: wgpu::Buffer,
}

impl std::fmt::Debug for BackwardPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackwardPlan")
            .field("spec", &self.spec)
            .field("shaders", &self.shaders())
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Validates `spec` for the backward pass on this device and compiles (or takes from the
    /// cache) its pipelines, in the default [`BackwardMode`]. The spec's kernel, lse and
    /// weights settings are ignored.
    pub fn plan_backward(&self, spec: &AttentionSpec) -> Result<BackwardPlan> {
        self.plan_backward_with(spec, BackwardMode::default())
    }

    /// [`Context::plan_backward`] in the given mode.
    pub fn plan_backward_with(
        &self,
        spec: &AttentionSpec,
        mode: BackwardMode,
    ) -> Result<BackwardPlan> {
        spec.validate(self.limits())?;
        let sizes = BackwardSizes::of(spec);
        let limit = self.limits().max_storage_binding;
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
        let storage = Storage::of(spec, self.caps());
        let mut passes = vec![Pass::Prep, Pass::Dkv, Pass::Dq];
        if spec.bias.is_some() {
            passes.push(Pass::Dbias);
        }
        let (aux_words, alibi_at) = aux_words(spec);
        let max_x = self.limits().max_workgroups_per_dim.min(65535);
        let mut steps = Vec::new();
        for pass in passes {
            let variant = kernels::variant(pass, spec, storage, mode == BackwardMode::Recompute);
            let pipeline = self.pipeline(&variant)?;
            let p: BwdParams = kernels::params(spec, pass, alibi_at);
            let uniform = self.gpu_scope("allocating backward parameters", || {
                init_buffer(
                    self.device(),
                    self.queue(),
                    "wgattn backward params",
                    bytemuck::bytes_of(&p),
                    wgpu::BufferUsages::UNIFORM,
                )
            })?;
            steps.push(Step {
                pass,
                key: variant.key(),
                pipeline,
                uniform,
                groups: kernels::groups(spec, pass, max_x),
            });
        }
        let (aux, stats) = self.gpu_scope("allocating backward buffers", || {
            let aux = init_buffer(
                self.device(),
                self.queue(),
                "wgattn backward aux",
                bytemuck::cast_slice(&aux_words),
                wgpu::BufferUsages::STORAGE,
            );
            let scratch = |label, size: u64| {
                self.device().create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: size.max(8),
                    usage: wgpu::BufferUsages::STORAGE,
                    mapped_at_creation: false,
                })
            };
            (
                aux,
                scratch("wgattn backward row statistics", sizes.lse * 4),
            )
        })?;
        Ok(BackwardPlan {
            spec: spec.clone(),
            device: self.device().clone(),
            mode,
            steps,
            aux,
            stats,
        })
    }
}

/// kv_lens (or one unused 0) followed by the ALiBi slopes as f32 bits; where the slopes start.
fn aux_words(spec: &AttentionSpec) -> (Vec<u32>, u32) {
    let mut words: Vec<u32> = spec.kv_lens.clone().unwrap_or_else(|| vec![0]);
    let alibi_at = words.len() as u32;
    if let Some(alibi) = &spec.alibi {
        words.extend(alibi.slopes(spec.q_heads).iter().map(|s| s.to_bits()));
    }
    (words, alibi_at)
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
    /// bias), e.g. `backward_dq.wgsl[D4=16,BIAS]`.
    pub fn shaders(&self) -> Vec<String> {
        self.steps.iter().map(|s| s.key.clone()).collect()
    }

    /// Records the backward pass into `encoder`. Checks every buffer first (typed
    /// [`Error::BadBuffer`]); nothing is recorded when a check fails. dbias is computed only
    /// when `bufs.dbias` is given.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder, bufs: &BackwardBuffers) -> Result<()> {
        self.check(bufs)?;
        let sizes = self.sizes();
        let whole = |b: &wgpu::Buffer| b.size();
        gpu_scope(&self.device, "encoding the backward pass", || {
            let mut groups = Vec::new();
            for step in &self.steps {
                if step.pass == Pass::Dbias && bufs.dbias.is_none() {
                    continue;
                }
                use crate::kernels::bindings::Binding as B;
                // (binding, buffer, bytes bound)
                let mut list: Vec<(u32, &wgpu::Buffer, u64)> =
                    vec![(B::Params.index(), &step.uniform, whole(&step.uniform))];
                list.push((B::Scratch.index(), &self.stats, whole(&self.stats)));
                list.push((B::DOut.index(), bufs.d_out, sizes.q));
                if step.pass == Pass::Prep && self.mode == BackwardMode::ForwardLse {
                    list.push((B::Out.index(), bufs.out, sizes.q));
                    list.push((B::Lse.index(), bufs.lse, sizes.lse));
                } else {
                    list.extend([
                        (B::Q.index(), bufs.q, sizes.q),
                        (B::K.index(), bufs.k, sizes.kv),
                        (B::V.index(), bufs.v, sizes.kv),
                        (B::Aux.index(), &self.aux, whole(&self.aux)),
                    ]);
                    if let Some(b) = bufs.bias {
                        list.push((B::Bias.index(), b, sizes.bias));
                    }
                    if let Some(m) = bufs.mask {
                        list.push((B::Mask.index(), m, sizes.mask));
                    }
                }
                match step.pass {
                    Pass::Prep => {}
                    Pass::Dkv => {
                        list.push((B::Dk.index(), bufs.dk, sizes.dkv));
                        list.push((B::Dv.index(), bufs.dv, sizes.dkv));
                    }
                    Pass::Dq => list.push((B::Dq.index(), bufs.dq, sizes.dq)),
                    Pass::Dbias => {
                        if let Some(db) = bufs.dbias {
                            list.push((B::Dbias.index(), db, sizes.dbias));
                        }
                    }
                }
                let entries: Vec<wgpu::BindGroupEntry> = list
                    .into_iter()
                    .map(|(binding, buffer, size)| wgpu::BindGroupEntry {
                        binding,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer,
                            offset: 0,
                            size: std::num::NonZeroU64::new(size.max(4)),
                        }),
                    })
                    .collect();
                let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("wgattn backward"),
                    layout: &step.pipeline.get_bind_group_layout(0),
                    entries: &entries,
                });
                groups.push((step, group));
            }
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("wgattn backward"),
                timestamp_writes: None,
            });
            for (step, group) in &groups {
                pass.set_pipeline(&step.pipeline);
                pass.set_bind_group(0, group, &[]);
                pass.dispatch_workgroups(step.groups.0, step.groups.1, step.groups.2);
            }
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
        crate::plan::check_given(&list, &["dq", "dk", "dv", "dbias"])
    }
}
