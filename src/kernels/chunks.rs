//! Splitting one attention problem into chunks that fit the device's binding limits.
//!
//! A chunk is a run of (batch·head) pairs `bh0..bh0+nbh` and query rows `i0..i0+nq`. For each
//! tensor it binds only the window of the buffer the chunk touches (aligned down to the
//! device's offset alignment; the shader subtracts the window's start, `shift`, from its
//! indices), so tensors and score matrices larger than one binding are still handled.

use crate::error::{Error, Result};
use crate::limits::DeviceLimits;
use crate::spec::AttentionSpec;

/// A window of a buffer bound for one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// Byte offset of the binding.
    pub offset: u64,
    /// Byte size of the binding.
    pub size: u64,
    /// Elements before the binding start (`offset / elem_bytes`).
    pub shift: u32,
}

impl Window {
    /// The window holding elements `first..=last` of `elem_bytes` each.
    fn new(first: u64, last: u64, elem_bytes: u64, align: u64) -> Window {
        let offset = (first * elem_bytes) / align * align;
        let end = ((last + 1) * elem_bytes).next_multiple_of(4);
        Window {
            offset,
            size: end - offset,
            shift: (offset / elem_bytes) as u32,
        }
    }

    /// This window of `buffer` as a binding.
    pub fn bind<'a>(&self, buffer: &'a wgpu::Buffer) -> wgpu::BindingResource<'a> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer,
            offset: self.offset,
            size: std::num::NonZeroU64::new(self.size),
        })
    }
}

/// One chunk of work and the windows it binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub bh0: u32,
    pub nbh: u32,
    pub i0: u32,
    pub nq: u32,
    /// Window of q.
    pub q: Window,
    /// Window of the out the kernels write (same shape as q; its element size may differ).
    pub out: Window,
    /// Window of k (and of v).
    pub kv: Window,
    /// Window of lse (`[B·Hq, Sq]`).
    pub lse: Window,
    /// Window of the weights (`[B·Hq, Sq, Sk]`) when they are returned.
    pub weights: Option<Window>,
    /// Window of the bias (f32) when there is one.
    pub bias: Option<Window>,
    /// Window of the mask (bytes) when there is one.
    pub mask: Option<Window>,
}

/// Element sizes of the tensors, in bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ElemBytes {
    /// q, k, v.
    pub input: u64,
    /// The out the kernels write.
    pub out: u64,
}

/// What the caller needs besides the tensors: scratch bytes per chunk shape.
pub(crate) struct SplitRule<'a> {
    /// Bytes of per-chunk scratch that must fit one binding, for (nbh, nq).
    pub scratch_bytes: &'a dyn Fn(u64, u64) -> u64,
    /// Query rows per workgroup tile: row chunks are multiples of it when split.
    pub row_tile: u32,
    /// Most units (see `bh_multiple`) one dispatch may cover (the grid's z-dimension limit).
    pub max_units_per_dispatch: u32,
    /// Chunks hold a multiple of this many (batch·head) pairs, starting at a multiple of it
    /// (the fused kernels keep the query heads of one kv head together).
    pub bh_multiple: u32,
}

/// Splits `spec` into as few chunks as fit `limits`: whole (batch·head) groups first, then
/// query-row ranges.
pub(crate) fn split(
    spec: &AttentionSpec,
    limits: &DeviceLimits,
    elem_bytes: ElemBytes,
    rule: &SplitRule,
) -> Result<Vec<Chunk>> {
    let bh_total = (spec.batch * spec.q_heads) as u64;
    let sq = spec.seq_q as u64;
    let fits = |nbh: u64, nq: u64| try_split(spec, limits, elem_bytes, rule, nbh, nq);
    // Whole query ranges first, with as many (batch·head) pairs per chunk as fit ...
    let unit = rule.bh_multiple.max(1) as u64;
    let max_units = (bh_total / unit).min(rule.max_units_per_dispatch.max(1) as u64);
    if let Some(n) = largest(max_units, |n| fits(n * unit, sq).is_some()) {
        return Ok(fits(n * unit, sq).expect("checked above"));
    }
    // ... else one unit per chunk and as many query rows (in whole tiles when possible) as fit.
    if let Some(nq) = largest(sq, |n| fits(unit, n).is_some()) {
        let tile = rule.row_tile as u64;
        let nq = if nq >= tile { nq / tile * tile } else { nq };
        return Ok(fits(unit, nq).expect("a smaller chunk fits too"));
    }
    // Even one row of one head does not fit: say what is too big.
    let scratch = (rule.scratch_bytes)(unit, 1);
    let ks = spec.kv_strides();
    let kv = ((spec.seq_k - 1) * ks.row + spec.head_dim) as u64 * elem_bytes.input;
    let (what, needed) = if scratch >= kv {
        ("the scratch of one query row (its score row)", scratch)
    } else {
        ("the keys (or values) of one head", kv)
    };
    Err(Error::TooLarge {
        what: what.into(),
        needed,
        allowed: limits.max_storage_binding,
        limit: "max_storage_buffer_binding_size",
    })
}

/// The largest n in 1..=max with `ok(n)`, assuming `ok` holds for every n below one that
/// holds; `None` when `ok(1)` fails.
fn largest(max: u64, ok: impl Fn(u64) -> bool) -> Option<u64> {
    if max == 0 || !ok(1) {
        return None;
    }
    let (mut lo, mut hi) = (1, max); // ok(lo) holds
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if ok(mid) { lo = mid } else { hi = mid - 1 }
    }
    Some(lo)
}

fn try_split(
    spec: &AttentionSpec,
    limits: &DeviceLimits,
    elem_bytes: ElemBytes,
    rule: &SplitRule,
    nbh: u64,
    nq: u64,
) -> Option<Vec<Chunk>> {
    let max = limits.max_storage_binding;
    if (rule.scratch_bytes)(nbh, nq) > max {
        return None;
    }
    let align = limits.storage_offset_alignment.max(4) as u64;
    let (hq, sq, sk, d) = (
        spec.q_heads as u64,
        spec.seq_q as u64,
        spec.seq_k as u64,
        spec.head_dim as u64,
    );
    let group = spec.group() as u64;
    let qs = spec.q_strides();
    let ks = spec.kv_strides();
    let at = |s: &crate::spec::Strides, b: u64, h: u64, i: u64| {
        b * s.batch as u64 + h * s.head as u64 + i * s.row as u64
    };
    let bh_total = spec.batch as u64 * hq;
    let mut chunks = Vec::new();
    let mut bh0 = 0;
    while bh0 < bh_total {
        let n = nbh.min(bh_total - bh0);
        let bh1 = bh0 + n - 1;
        let (b0, h0, b1, h1) = (bh0 / hq, bh0 % hq, bh1 / hq, bh1 % hq);
        let mut i0 = 0;
        while i0 < sq {
            let m = nq.min(sq - i0);
            let i1 = i0 + m - 1;
            // Strides are positive and (b, h) pairs are visited in order, so the first and
            // last elements of the chunk sit at its first and last (b, h, i).
            let (q_first, q_last) = (at(&qs, b0, h0, i0), at(&qs, b1, h1, i1) + d - 1);
            let q = Window::new(q_first, q_last, elem_bytes.input, align);
            let out = Window::new(q_first, q_last, elem_bytes.out, align);
            let kv = Window::new(
                at(&ks, b0, h0 / group, 0),
                at(&ks, b1, h1 / group, sk - 1) + d - 1,
                elem_bytes.input,
                align,
            );
            let lse = Window::new(bh0 * sq + i0, bh1 * sq + i1, 4, align);
            let weights = spec.return_weights.then(|| {
                Window::new(
                    (bh0 * sq + i0) * sk,
                    (bh1 * sq + i1) * sk + sk - 1,
                    4,
                    align,
                )
            });
            let matrix = |m: crate::spec::Broadcast, bytes| {
                let (b0, h0, b1, h1) = (b0 as usize, h0 as usize, b1 as usize, h1 as usize);
                let first = m.index(spec, b0, h0, i0 as usize, 0) as u64;
                let last = m.index(spec, b1, h1, i1 as usize, sk as usize - 1) as u64;
                Window::new(first, last, bytes, align)
            };
            let bias = spec.bias.map(|m| matrix(m, 4));
            let mask = spec.mask.map(|m| matrix(m, 1));
            let windows = [Some(q), Some(out), Some(kv), Some(lse), weights, bias, mask];
            if windows.iter().flatten().any(|w| w.size > max) {
                return None;
            }
            chunks.push(Chunk {
                bh0: bh0 as u32,
                nbh: n as u32,
                i0: i0 as u32,
                nq: m as u32,
                q,
                out,
                kv,
                lse,
                weights,
                bias,
                mask,
            });
            i0 += m;
        }
        bh0 += n;
    }
    Some(chunks)
}
