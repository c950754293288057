//! GPU-resident attention: a [`Plan`] is built once per spec from the planner's decision and
//! records its passes into a caller's `CommandEncoder`, reading and writing caller-owned
//! buffers ([`Buffers`]); [`BackwardPlan`] is the same for the gradients.

mod backward;

pub use backward::{BackwardBuffers, BackwardPlan, BackwardSizes};

use crate::error::{Error, Result};
use crate::gpu::{Runtime, gpu_scope};
use crate::kernels::Targets;
use crate::kernels::fused::Fused;
use crate::kernels::pack::Pack;
use crate::kernels::three_pass::ThreePass;
use crate::planner::{self, Storage};
use crate::shader::ShaderVariant;
use crate::spec::{AttentionSpec, Kernel};

/// The caller's buffers for one [`Plan::encode`]. All need `STORAGE` usage and at least the
/// sizes of [`Plan::sizes`]. `out`, `lse` and `weights` must not alias any other buffer.
///
/// Formats: q, k, v and out hold the spec's dtype (f16 as IEEE half, 2 bytes per element,
/// sizes padded to 4 bytes); lse and weights are f32; bias is f32; mask holds one byte per
/// element (0 = masked, anything else = keep), padded to 4 bytes.
#[derive(Debug, Clone, Copy)]
pub struct Buffers<'a> {
    /// Queries, layout of the spec.
    pub q: &'a wgpu::Buffer,
    /// Keys.
    pub k: &'a wgpu::Buffer,
    /// Values.
    pub v: &'a wgpu::Buffer,
    /// Output, same shape as q.
    pub out: &'a wgpu::Buffer,
    /// Log-sum-exp `[B, Hq, Sq]`; required when the spec asks for lse, else optional.
    pub lse: Option<&'a wgpu::Buffer>,
    /// Probabilities `[B, Hq, Sq, Sk]`; required exactly when the spec asks for weights.
    pub weights: Option<&'a wgpu::Buffer>,
    /// Additive bias; required exactly when the spec declares one.
    pub bias: Option<&'a wgpu::Buffer>,
    /// Boolean mask as bytes; required exactly when the spec declares one.
    pub mask: Option<&'a wgpu::Buffer>,
}

impl<'a> Buffers<'a> {
    /// q, k, v and out, nothing optional.
    pub fn new(
        q: &'a wgpu::Buffer,
        k: &'a wgpu::Buffer,
        v: &'a wgpu::Buffer,
        out: &'a wgpu::Buffer,
    ) -> Self {
        Buffers {
            q,
            k,
            v,
            out,
            lse: None,
            weights: None,
            bias: None,
            mask: None,
        }
    }
}

/// Bytes each buffer of a plan needs (0 for buffers the spec does not use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BufferSizes {
    /// q and out.
    pub q: u64,
    /// k and v.
    pub kv: u64,
    /// lse.
    pub lse: u64,
    /// weights.
    pub weights: u64,
    /// bias.
    pub bias: u64,
    /// mask.
    pub mask: u64,
}

impl BufferSizes {
    /// The sizes for `spec`, from [`AttentionSpec::sizes`]. A spec whose sizes overflow (one
    /// that [`AttentionSpec::validate`] refuses) gets `u64::MAX` everywhere, which no buffer
    /// satisfies.
    pub fn of(spec: &AttentionSpec) -> Self {
        let Ok(s) = spec.sizes() else {
            return BufferSizes {
                q: u64::MAX,
                kv: u64::MAX,
                lse: u64::MAX,
                weights: u64::MAX,
                bias: u64::MAX,
                mask: u64::MAX,
            };
        };
        let es = spec.dtype.size() as u64;
        let bytes = |elems: u64, es: u64| {
            (elems.saturating_mul(es).checked_next_multiple_of(4)).unwrap_or(u64::MAX)
        };
        BufferSizes {
            q: bytes(s.q, es),
            kv: bytes(s.kv, es),
            lse: bytes(s.lse, 4),
            weights: if spec.return_weights {
                bytes(s.weights, 4)
            } else {
                0
            },
            bias: s.bias.map_or(0, |n| bytes(n, 4)),
            mask: s.mask.map_or(0, |n| bytes(n, 1)),
        }
    }
}

enum Inner {
    ThreePass(Box<ThreePass>),
    Fused(Fused),
}

/// A compiled attention plan for one spec on one device.
pub struct Plan {
    spec: AttentionSpec,
    kernel: Kernel,
    choice: planner::Choice,
    device: wgpu::Device,
    inner: Inner,
    /// Where lse goes when the caller passes none.
    lse_scratch: wgpu::Buffer,
    /// f32 output and its packing pass, for f16 without SHADER_F16.
    packing: Option<(wgpu::Buffer, Pack)>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("kernel", &self.kernel)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl Plan {
    /// Compiles (or takes from `rt`'s cache) the pipelines of the planner's `choice` for
    /// `spec`, after validating `spec` against the device.
    pub(crate) fn new(rt: &Runtime, spec: &AttentionSpec, choice: planner::Choice) -> Result<Plan> {
        spec.validate(rt.limits())?;
        let kernel = choice.kernel;
        let inner = match choice.variant {
            None => Inner::ThreePass(Box::new(ThreePass::new(rt, spec, choice.storage)?)),
            Some(_) => Inner::Fused(Fused::new(rt, spec, &choice)?),
        };
        let packing = match choice.storage {
            Storage::Packed => {
                let pack = Pack::new(rt, spec.q_len() as u64)?;
                let scratch = rt.gpu_scope("allocating f32 output scratch", || {
                    rt.device().create_buffer(&wgpu::BufferDescriptor {
                        label: Some("wgattn f32 out"),
                        size: spec.q_len() as u64 * 4,
                        usage: wgpu::BufferUsages::STORAGE,
                        mapped_at_creation: false,
                    })
                })?;
                Some((scratch, pack))
            }
            _ => None,
        };
        let lse_scratch = rt.gpu_scope("allocating lse scratch", || {
            rt.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgattn lse scratch"),
                size: (spec.lse_len() as u64 * 4).max(4),
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        })?;
        Ok(Plan {
            spec: spec.clone(),
            kernel,
            choice,
            device: rt.device().clone(),
            inner,
            lse_scratch,
            packing,
        })
    }
}

impl Plan {
    /// The spec this plan computes.
    pub fn spec(&self) -> &AttentionSpec {
        &self.spec
    }

    /// The kernel the planner chose (never `Auto`).
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The planner's whole decision: kernel, fused variant, splits and storage.
    pub fn choice(&self) -> &planner::Choice {
        &self.choice
    }

    /// How many chunks the work was split into to fit the device's binding limits and
    /// workgroups per dispatch dimension (one dispatch of each pass per chunk; QKᵀ may cut its
    /// key columns into more).
    pub fn chunks(&self) -> usize {
        match &self.inner {
            Inner::ThreePass(t) => t.chunk_count(),
            Inner::Fused(f) => f.chunk_count(),
        }
    }

    /// How many key splits the split-KV kernel uses (1 for the other kernels).
    pub fn splits(&self) -> u32 {
        match &self.inner {
            Inner::ThreePass(_) => 1,
            Inner::Fused(f) => f.splits(),
        }
    }

    /// The shader variants the plan runs, e.g.
    /// `fused/rows.wgsl[WG=64,R=4,KB=8,D16=4,VEC4,SUBGROUPS]`: the tile choice for this
    /// adapter.
    pub fn shaders(&self) -> Vec<String> {
        self.shader_variants().iter().map(|v| v.key()).collect()
    }

    /// The shader variants the plan runs (with their constants, flags and bindings).
    pub fn shader_variants(&self) -> Vec<ShaderVariant> {
        let mut v = match &self.inner {
            Inner::ThreePass(t) => t.shaders().to_vec(),
            Inner::Fused(f) => f.shaders().to_vec(),
        };
        if let Some((_, pack)) = &self.packing {
            v.push(pack.shader().clone());
        }
        v
    }

    /// What the plan runs, in words: its fused variant (and splits), or its kernel.
    pub fn describe(&self) -> String {
        self.choice.describe()
    }

    /// True when f16 data is read and written packed in u32 words (no SHADER_F16), with an
    /// extra packing pass at the end.
    pub fn packs_f16(&self) -> bool {
        self.packing.is_some()
    }

    /// Bytes each caller buffer needs.
    pub fn sizes(&self) -> BufferSizes {
        BufferSizes::of(&self.spec)
    }

    /// Records the attention into `encoder`. Checks every buffer first (typed
    /// [`Error::BadBuffer`]); nothing is recorded when a check fails.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder, bufs: &Buffers) -> Result<()> {
        self.encode_timed(encoder, bufs, None)
    }

    /// Like [`Plan::encode`], writing the begin/end timestamps of the attention pass into
    /// `timestamps`.
    pub fn encode_timed(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        bufs: &Buffers,
        timestamps: Option<wgpu::ComputePassTimestampWrites>,
    ) -> Result<()> {
        self.check_buffers(bufs)?;
        let targets = Targets {
            q: bufs.q,
            k: bufs.k,
            v: bufs.v,
            out: self
                .packing
                .as_ref()
                .map_or(bufs.out, |(scratch, _)| scratch),
            lse: bufs.lse.unwrap_or(&self.lse_scratch),
            weights: bufs.weights,
            bias: bufs.bias,
            mask: bufs.mask,
        };
        gpu_scope(&self.device, "encoding attention", || {
            match &self.inner {
                Inner::ThreePass(t) => t.encode(&self.device, encoder, &targets, timestamps),
                Inner::Fused(f) => f.encode(&self.device, encoder, &targets, timestamps),
            }
            if let Some((scratch, pack)) = &self.packing {
                pack.encode(&self.device, encoder, scratch, bufs.out);
            }
        })
    }

    /// The checks of [`Plan::encode`] (also for callers that record other passes first).
    pub(crate) fn check_buffers(&self, bufs: &Buffers) -> Result<()> {
        let sizes = self.sizes();
        let bad = |buffer, problem: String| Err(Error::BadBuffer { buffer, problem });
        let s = &self.spec;
        let list = [
            ("q", Some(bufs.q), sizes.q),
            ("k", Some(bufs.k), sizes.kv),
            ("v", Some(bufs.v), sizes.kv),
            ("out", Some(bufs.out), sizes.q),
            ("lse", bufs.lse, sizes.lse),
            ("weights", bufs.weights, sizes.weights),
            ("bias", bufs.bias, sizes.bias),
            ("mask", bufs.mask, sizes.mask),
        ];
        if s.return_lse && bufs.lse.is_none() {
            return bad("lse", "the spec asks for lse but none was given".into());
        }
        for (name, wanted, given) in [
            ("weights", s.return_weights, bufs.weights.is_some()),
            ("bias", s.bias.is_some(), bufs.bias.is_some()),
            ("mask", s.mask.is_some(), bufs.mask.is_some()),
        ] {
            match (wanted, given) {
                (true, false) => {
                    return bad(name, format!("the spec asks for {name} but none was given"));
                }
                (false, true) => {
                    return bad(
                        name,
                        format!("given, but the plan was built without {name}"),
                    );
                }
                _ => {}
            }
        }
        check_given(&list, &["out", "lse", "weights"])
    }
}

/// The checks shared by the forward and backward plans' `encode` on the buffers given
/// (`(name, buffer, bytes needed)`, `None` for one not given): each has STORAGE usage and at
/// least the bytes needed, and none of the `written` ones is the same buffer as another.
pub(crate) fn check_given(
    list: &[(&'static str, Option<&wgpu::Buffer>, u64)],
    written: &[&str],
) -> Result<()> {
    let bad = |buffer, problem: String| Err(Error::BadBuffer { buffer, problem });
    for (name, buf, need) in list {
        let Some(buf) = buf else { continue };
        if !buf.usage().contains(wgpu::BufferUsages::STORAGE) {
            return bad(name, format!("usage {:?} lacks STORAGE", buf.usage()));
        }
        if buf.size() < *need {
            return bad(
                name,
                format!("holds {} bytes, the spec needs {need}", buf.size()),
            );
        }
    }
    let given: Vec<_> = list
        .iter()
        .filter_map(|(n, b, _)| b.map(|b| (*n, b)))
        .collect();
    for (i, (name, buf)) in given.iter().enumerate() {
        for (other, obuf) in &given[..i] {
            if (written.contains(name) || written.contains(other)) && buf == obuf {
                return bad(name, format!("is the same buffer as `{other}`"));
            }
        }
    }
    Ok(())
}
