//! GPU-resident attention: a [`Plan`] is built once per spec and records its passes into a
//! caller's `CommandEncoder`, reading and writing caller-owned buffers.

use crate::context::{Context, gpu_scope};
use crate::error::{Error, Result};
use crate::kernels::flash::Flash;
use crate::kernels::three_pass::ThreePass;
use crate::planner;
use crate::spec::{AttentionSpec, Kernel};

/// The caller's buffers for one [`Plan::encode`]. All need `STORAGE` usage; sizes are those of
/// [`Plan::sizes`]. `out`, `lse` and `weights` must not alias any other buffer.
#[derive(Debug, Clone, Copy)]
pub struct Buffers<'a> {
    /// Queries, f32, layout of the spec.
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
}

/// Bytes each buffer of a plan needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BufferSizes {
    /// q and out.
    pub q: u64,
    /// k and v.
    pub kv: u64,
    /// lse.
    pub lse: u64,
    /// weights (0 when not asked for).
    pub weights: u64,
}

enum Inner {
    ThreePass(ThreePass),
    Flash(Flash),
}

/// A compiled attention plan for one spec on one device.
pub struct Plan {
    spec: AttentionSpec,
    kernel: Kernel,
    device: wgpu::Device,
    inner: Inner,
    /// Where lse goes when the caller passes none.
    lse_scratch: wgpu::Buffer,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("kernel", &self.kernel)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Validates `spec` against this device, chooses the kernel (see [`planner`]) and compiles
    /// (or takes from the cache) its pipelines.
    pub fn plan(&self, spec: &AttentionSpec) -> Result<Plan> {
        spec.validate(self.limits())?;
        let choice = planner::plan_kernel(spec, self)?;
        let kernel = choice.kernel;
        let inner = match kernel {
            Kernel::Auto | Kernel::ThreePass => Inner::ThreePass(ThreePass::new(self, spec)?),
            Kernel::Flash | Kernel::SplitKv => Inner::Flash(Flash::new(self, spec, choice.splits)?),
        };
        let lse_scratch = self.gpu_scope("allocating lse scratch", || {
            self.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgattn lse scratch"),
                size: (spec.lse_len() as u64 * 4).max(4),
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        })?;
        Ok(Plan {
            spec: spec.clone(),
            kernel,
            device: self.device().clone(),
            inner,
            lse_scratch,
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

    /// How many chunks the work was split into to fit the device's binding limits.
    pub fn chunks(&self) -> usize {
        match &self.inner {
            Inner::ThreePass(t) => t.chunk_count(),
            Inner::Flash(f) => f.chunk_count(),
        }
    }

    /// How many key splits the split-KV kernel uses (1 for the other kernels).
    pub fn splits(&self) -> u32 {
        match &self.inner {
            Inner::ThreePass(_) => 1,
            Inner::Flash(f) => f.splits(),
        }
    }

    /// Bytes each caller buffer needs.
    pub fn sizes(&self) -> BufferSizes {
        let s = &self.spec;
        BufferSizes {
            q: s.q_len() as u64 * 4,
            kv: s.kv_len() as u64 * 4,
            lse: s.lse_len() as u64 * 4,
            weights: if s.return_weights {
                s.weights_len() as u64 * 4
            } else {
                0
            },
        }
    }

    /// Records the attention into `encoder`. Checks every buffer first (typed
    /// [`Error::BadBuffer`]); nothing is recorded when a check fails.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder, bufs: &Buffers) -> Result<()> {
        self.encode_timed(encoder, bufs, None)
    }

    /// Like [`Plan::encode`], writing the begin/end timestamps of the pass into `timestamps`.
    pub fn encode_timed(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        bufs: &Buffers,
        timestamps: Option<wgpu::ComputePassTimestampWrites>,
    ) -> Result<()> {
        self.check(bufs)?;
        let lse = bufs.lse.unwrap_or(&self.lse_scratch);
        gpu_scope(&self.device, "encoding attention", || match &self.inner {
            Inner::ThreePass(t) => t.encode(&self.device, encoder, bufs, lse, timestamps),
            Inner::Flash(f) => f.encode(&self.device, encoder, bufs, lse, timestamps),
        })
    }

    fn check(&self, bufs: &Buffers) -> Result<()> {
        let sizes = self.sizes();
        let bad = |buffer, problem: String| Err(Error::BadBuffer { buffer, problem });
        let mut list = vec![
            ("q", Some(bufs.q), sizes.q),
            ("k", Some(bufs.k), sizes.kv),
            ("v", Some(bufs.v), sizes.kv),
            ("out", Some(bufs.out), sizes.q),
            ("lse", bufs.lse, sizes.lse),
            ("weights", bufs.weights, sizes.weights),
        ];
        if self.spec.return_lse && bufs.lse.is_none() {
            return bad("lse", "the spec asks for lse but none was given".into());
        }
        match (self.spec.return_weights, bufs.weights.is_some()) {
            (true, false) => {
                return bad(
                    "weights",
                    "the spec asks for weights but none was given".into(),
                );
            }
            (false, true) => {
                return bad(
                    "weights",
                    "given, but the plan was built without return_weights".into(),
                );
            }
            _ => {}
        }
        for (name, buf, need) in &list {
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
        // Written buffers must not alias anything else in the same dispatch.
        list.retain(|(_, b, _)| b.is_some());
        for (i, (name, buf, _)) in list.iter().enumerate() {
            for (other, obuf, _) in &list[..i] {
                let written = matches!(*name, "out" | "lse" | "weights")
                    || matches!(*other, "out" | "lse" | "weights");
                if written && buf == obuf {
                    return bad(name, format!("is the same buffer as `{other}`"));
                }
            }
        }
        Ok(())
    }
}
