//! A GPU key/value cache for incremental decoding with a [`MultiHeadAttention`] layer.
//!
//! K and V live in two buffers laid out `[B, capacity, H_kv, D]` (bshd with the capacity as
//! the sequence length). A step projects its new tokens' k and v straight into rows
//! `len[b]..len[b] + T` of each sequence (the projection epilogue's row offset, rotary
//! positions `len[b] + t`) and attends over the cached keys: nothing is reallocated or
//! copied while the capacity suffices. When it does not, a growable cache doubles its
//! capacity by copying the used rows on the GPU (no host round trip); a fixed cache refuses
//! the step with a typed error.
//!
//! Masking: one sequence attends to exactly its `len + T` keys with bottom-right causal
//! alignment; a batch attends to the whole capacity with `kv_lens = len[b] + T` (keys past
//! a sequence's length are skipped by the kernels' key range), plus, for steps of more than
//! one token, a `[B, 1, T, capacity]` mask that is the causal triangle aligned to each
//! sequence's own end.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::spec::{AttentionSpec, Broadcast, CausalAlign, DType, Kernel, Layout};

use super::gpu;
use super::mha::{MhaBuffers, MhaOutput, MultiHeadAttention};

/// The key/value cache of one [`MultiHeadAttention`] layer for `batch` sequences.
pub struct KvCache {
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    batch: usize,
    kv_heads: usize,
    head_dim: usize,
    dtype: DType,
    capacity: usize,
    lens: Vec<u32>,
    growable: bool,
    allocations: u64,
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCache")
            .field("batch", &self.batch)
            .field("capacity", &self.capacity)
            .field("lens", &self.lens)
            .field("growable", &self.growable)
            .finish_non_exhaustive()
    }
}

/// What a cached decoding step returns.
pub type DecodeOutput = MhaOutput;

impl KvCache {
    /// An empty cache for `layer` (self-attention only) holding `capacity` positions per
    /// sequence, growing (doubling) when a step needs more.
    pub fn new(
        ctx: &Context,
        layer: &MultiHeadAttention,
        batch: usize,
        capacity: usize,
    ) -> Result<KvCache> {
        let c = layer.config();
        if c.kv_embed_dim.is_some() {
            return Err(Error::InvalidLayer {
                field: "cache".into(),
                problem: "a KV cache decodes a self-attention layer (cross-attention's keys \
                          are the memory's: project them once)"
                    .into(),
            });
        }
        if batch == 0 || capacity == 0 {
            return Err(Error::InvalidLayer {
                field: "cache".into(),
                problem: format!("batch {batch} and capacity {capacity} must be at least 1"),
            });
        }
        let mut cache = KvCache {
            k: gpu::scratch(ctx, "wgattn cache k", 4, wgpu::BufferUsages::empty())?,
            v: gpu::scratch(ctx, "wgattn cache v", 4, wgpu::BufferUsages::empty())?,
            batch,
            kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            dtype: c.dtype,
            capacity: 0,
            lens: vec![0; batch],
            growable: true,
            allocations: 0,
        };
        cache.allocate(ctx, capacity)?;
        Ok(cache)
    }

    /// A cache that never grows: a step past `capacity` is an error.
    pub fn fixed(
        ctx: &Context,
        layer: &MultiHeadAttention,
        batch: usize,
        capacity: usize,
    ) -> Result<KvCache> {
        let mut cache = KvCache::new(ctx, layer, batch, capacity)?;
        cache.growable = false;
        Ok(cache)
    }

    /// Positions each sequence can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Cached positions of each sequence.
    pub fn lens(&self) -> &[u32] {
        &self.lens
    }

    /// Sequences.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// How many times the cache buffers were allocated (1 until it grows).
    pub fn allocations(&self) -> u64 {
        self.allocations
    }

    /// The key buffer `[B, capacity, H_kv, D]`.
    pub fn keys(&self) -> &wgpu::Buffer {
        &self.k
    }

    /// The value buffer `[B, capacity, H_kv, D]`.
    pub fn values(&self) -> &wgpu::Buffer {
        &self.v
    }

    /// Forgets positions `len..` of sequence `b` (a shorter prompt in a padded batch, or a
    /// rejected draft); a longer `len` is an error.
    pub fn truncate(&mut self, b: usize, len: usize) -> Result<()> {
        match self.lens.get_mut(b) {
            Some(l) if len <= *l as usize => {
                *l = len as u32;
                Ok(())
            }
            Some(l) => Err(Error::InvalidLayer {
                field: "cache.truncate".into(),
                problem: format!("length {len} exceeds the {l} cached positions of sequence {b}"),
            }),
            None => Err(Error::InvalidLayer {
                field: "cache.truncate".into(),
                problem: format!("sequence {b} of a batch of {}", self.batch),
            }),
        }
    }

    fn row_elems(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Allocates buffers of `capacity` positions, copying the cached rows on the GPU.
    fn allocate(&mut self, ctx: &Context, capacity: usize) -> Result<()> {
        // f16 rows of odd width: an even capacity keeps every sequence 4-byte aligned.
        let capacity = if self.dtype == DType::F16 {
            capacity.next_multiple_of(2)
        } else {
            capacity
        };
        let elems = self
            .batch
            .checked_mul(capacity)
            .and_then(|n| n.checked_mul(self.row_elems()))
            .ok_or_else(|| Error::TooLarge {
                what: "KV cache".into(),
                needed: u64::MAX,
                allowed: ctx.limits().max_storage_binding,
                limit: "max_storage_buffer_binding_size",
            })?;
        let bytes = gpu::size_of(elems, self.dtype);
        use wgpu::BufferUsages as U;
        let k = gpu::scratch(ctx, "wgattn cache k", bytes, U::COPY_SRC | U::COPY_DST)?;
        let v = gpu::scratch(ctx, "wgattn cache v", bytes, U::COPY_SRC | U::COPY_DST)?;
        if self.capacity > 0 {
            let es = self.dtype.size();
            let row = self.row_elems() * es;
            let mut enc = ctx
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("wgattn cache growth"),
                });
            for (b, &len) in self.lens.iter().enumerate() {
                let n = (len as usize * row).next_multiple_of(4) as u64;
                if n == 0 {
                    continue;
                }
                let from = (b * self.capacity * row) as u64;
                let to = (b * capacity * row) as u64;
                enc.copy_buffer_to_buffer(&self.k, from, &k, to, n);
                enc.copy_buffer_to_buffer(&self.v, from, &v, to, n);
            }
            ctx.gpu().gpu_scope("growing the KV cache", || {
                ctx.queue().submit([enc.finish()]);
            })?;
        }
        self.k = k;
        self.v = v;
        self.capacity = capacity;
        self.allocations += 1;
        Ok(())
    }

    /// Makes room for `n` more positions in every sequence (growing if allowed).
    pub fn reserve(&mut self, ctx: &Context, n: usize) -> Result<()> {
        let need = self.lens.iter().map(|&l| l as usize).max().unwrap_or(0) + n;
        if need <= self.capacity {
            return Ok(());
        }
        if !self.growable {
            return Err(Error::InvalidLayer {
                field: "cache".into(),
                problem: format!(
                    "{need} positions exceed the fixed capacity {}",
                    self.capacity
                ),
            });
        }
        self.allocate(ctx, need.max(2 * self.capacity))
    }

    /// The attention spec of a step of `t` new tokens per sequence (before the cache
    /// advances): see the module documentation for the masking.
    pub fn step_spec(&self, layer: &MultiHeadAttention, t: usize) -> AttentionSpec {
        let c = layer.config();
        let max = self.lens.iter().map(|&l| l as usize).max().unwrap_or(0);
        let spec = if self.batch == 1 {
            AttentionSpec::new(1, c.num_heads, c.num_kv_heads, t, max + t, c.head_dim)
                .causal(CausalAlign::BottomRight)
        } else {
            let lens: Vec<u32> = self.lens.iter().map(|&l| l + t as u32).collect();
            let s = AttentionSpec::new(
                self.batch,
                c.num_heads,
                c.num_kv_heads,
                t,
                self.capacity,
                c.head_dim,
            )
            .kv_lens(lens);
            if t > 1 {
                s.mask(Broadcast {
                    per_batch: true,
                    per_head: false,
                })
            } else {
                s
            }
        };
        spec.dtype(c.dtype).layout(Layout::Bshd)
    }

    /// The `[B, 1, T, capacity]` mask of a batched step of `t > 1` tokens: query t of
    /// sequence b sees keys `j ≤ len[b] + t`.
    fn step_mask(&self, t: usize) -> Vec<u8> {
        let c = self.capacity;
        let mut m = vec![0u8; self.batch * t * c];
        for (b, &len) in self.lens.iter().enumerate() {
            for i in 0..t {
                let hi = (len as usize + i + 1).min(c);
                m[(b * t + i) * c..(b * t + i) * c + hi].fill(1);
            }
        }
        m.resize(m.len().next_multiple_of(4), 0);
        m
    }

    /// Records one step into `encoder`: projects `x` (`[B, T, E]` in the layer's dtype, on
    /// the GPU) into the cache at each sequence's end, attends and writes `[B, T, E]` into
    /// `out`. The cache's lengths advance by `t`. `kernel` picks the attention kernel
    /// (`Auto`, or `SplitKv` / `Flash` / `ThreePass`).
    #[allow(clippy::too_many_arguments)]
    pub fn encode_step(
        &mut self,
        ctx: &Context,
        layer: &MultiHeadAttention,
        encoder: &mut wgpu::CommandEncoder,
        x: &wgpu::Buffer,
        out: &wgpu::Buffer,
        t: usize,
        kernel: Kernel,
    ) -> Result<()> {
        let c = layer.config();
        if c.num_kv_heads != self.kv_heads || c.head_dim != self.head_dim || c.dtype != self.dtype {
            return Err(Error::InvalidLayer {
                field: "cache".into(),
                problem: "was made for another layer shape".into(),
            });
        }
        if t == 0 {
            return Err(Error::InvalidLayer {
                field: "tokens".into(),
                problem: "a step needs at least one token".into(),
            });
        }
        self.reserve(ctx, t)?;
        let spec = self.step_spec(layer, t).kernel(kernel);
        let mut plan = layer.build(ctx, &spec, &self.lens, Some(self.capacity))?;
        if spec.mask.is_some() {
            let mask = self.step_mask(t);
            plan.own_mask = Some(ctx.gpu().gpu_scope("uploading the step mask", || {
                crate::gpu::init_buffer(
                    ctx.device(),
                    ctx.queue(),
                    "wgattn step mask",
                    &mask,
                    wgpu::BufferUsages::STORAGE,
                )
            })?);
        }
        plan.encode_with(
            ctx.device(),
            encoder,
            &MhaBuffers::new(x, out),
            Some((&self.k, &self.v)),
        )?;
        for l in &mut self.lens {
            *l += t as u32;
        }
        Ok(())
    }

    /// The host convenience step: uploads `x` (`[B, T, E]`), runs
    /// [`KvCache::encode_step`] and reads the output `[B, T, E]` back (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn step(
        &mut self,
        ctx: &Context,
        layer: &MultiHeadAttention,
        x: &[f32],
        kernel: Kernel,
    ) -> Result<DecodeOutput> {
        let e = layer.config().embed_dim;
        let per = self.batch * e;
        if x.is_empty() || !x.len().is_multiple_of(per) {
            return Err(Error::InputLength {
                tensor: "x",
                expected: per * (x.len() / per).max(1),
                got: x.len(),
                shape: format!("[{}, T, {e}]", self.batch),
            });
        }
        if let Some((index, &value)) = x.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::NonFinite {
                tensor: "x",
                index,
                value,
            });
        }
        let t = x.len() / per;
        let dtype = layer.config().dtype;
        let xb = gpu::upload(ctx, "wgattn step x", x, dtype, wgpu::BufferUsages::empty())?;
        let out = gpu::scratch(
            ctx,
            "wgattn step out",
            gpu::size_of(x.len(), dtype),
            wgpu::BufferUsages::COPY_SRC,
        )?;
        let mut enc = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        let lens = self.lens.clone();
        if let Err(e) = self.encode_step(ctx, layer, &mut enc, &xb, &out, t, kernel) {
            self.lens = lens;
            return Err(e);
        }
        gpu::submit(ctx, enc)?;
        Ok(MhaOutput {
            out: gpu::read(ctx, &out, x.len(), dtype)?,
            weights: None,
        })
    }
}
