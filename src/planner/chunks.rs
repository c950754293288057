//! Splitting one attention problem into chunks that fit the device's binding limits.
//!
//! A chunk is a run of (batch·head) pairs `bh0..bh0+nbh` and query rows `i0..i0+nq`. For each
//! tensor it binds only the window of the buffer the chunk touches (aligned down to the
//! device's offset alignment; the shader subtracts the window's start, `shift`, from its
//! indices), so tensors and score matrices larger than one binding are still handled.

use crate::error::{Error, Result};
use crate::spec::{AttentionSpec, DeviceLimits, Sizes};

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

/// Most chunks one plan may hold. Each chunk is one set of dispatches with its own bind
/// group; beyond this the plan itself would take more memory than the problem.
pub(crate) const MAX_CHUNKS: u64 = 1 << 16;

/// Chunks of `nbh` (batch·head) pairs and `nq` query rows needed to cover `sizes`.
fn chunk_count(sizes: &Sizes, sq: u64, nbh: u64, nq: u64) -> u64 {
    sizes.bh.div_ceil(nbh.max(1)) * sq.div_ceil(nq.max(1))
}

/// Splits `spec` into as few chunks as fit `limits`: whole (batch·head) groups first, then
/// query-row ranges. Every size comes from [`AttentionSpec::sizes`] (checked u64), and a
/// split that would need more than [`MAX_CHUNKS`] chunks is refused before any chunk is built.
pub(crate) fn split(
    spec: &AttentionSpec,
    limits: &DeviceLimits,
    elem_bytes: ElemBytes,
    rule: &SplitRule,
) -> Result<Vec<Chunk>> {
    let sizes = spec.sizes()?;
    let sq = spec.seq_q as u64;
    let fits = |nbh: u64, nq: u64| try_split(spec, &sizes, limits, elem_bytes, rule, nbh, nq);
    // `fits` fails both for chunks too large and for too many chunks; the search looks for the
    // largest chunks that fit, and treats "too many" (small chunks) as fitting so that it stays
    // monotone: if the largest chunks that fit are still too many, the split is refused below.
    let fits_or_too_many = |nbh: u64, nq: u64| {
        chunk_count(&sizes, sq, nbh, nq) > MAX_CHUNKS || fits(nbh, nq).is_some()
    };
    // Whole query ranges first, with as many (batch·head) pairs per chunk as fit ...
    let unit = rule.bh_multiple.max(1) as u64;
    let max_units = (sizes.bh / unit).min(rule.max_units_per_dispatch.max(1) as u64);
    let mut tried = None;
    if let Some(n) = largest(max_units, |n| fits_or_too_many(n * unit, sq)) {
        if let Some(chunks) = fits(n * unit, sq) {
            return Ok(chunks);
        }
        tried = Some((n * unit, sq));
    }
    // ... else one unit per chunk and as many query rows (in whole tiles when possible) as fit.
    if tried.is_none()
        && let Some(nq) = largest(sq, |n| fits_or_too_many(unit, n))
    {
        let tile = rule.row_tile as u64;
        let nq = if nq >= tile { nq / tile * tile } else { nq };
        if let Some(chunks) = fits(unit, nq) {
            return Ok(chunks);
        }
        tried = Some((unit, nq));
    }
    if let Some((nbh, nq)) = tried {
        // Chunks of this size are already too many; the ones that fit one binding are at
        // least as many.
        return Err(Error::TooLarge {
            what: "splitting into chunks that each fit one storage binding (at least)".into(),
            needed: chunk_count(&sizes, sq, nbh, nq),
            allowed: MAX_CHUNKS,
            limit: "chunks per plan, at max_storage_buffer_binding_size",
        });
    }
    // Even one row of one head does not fit: say what is too big.
    let scratch = (rule.scratch_bytes)(unit, 1);
    let ks = sizes.kv_strides;
    let kv = (spec.seq_k as u64 - 1)
        .saturating_mul(ks.row)
        .saturating_add(spec.head_dim as u64)
        .saturating_mul(elem_bytes.input);
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

/// The chunks of `nbh` pairs × `nq` rows, or `None` when one of their windows exceeds the
/// binding limit or there would be more than [`MAX_CHUNKS`] of them.
fn try_split(
    spec: &AttentionSpec,
    sizes: &Sizes,
    limits: &DeviceLimits,
    elem_bytes: ElemBytes,
    rule: &SplitRule,
    nbh: u64,
    nq: u64,
) -> Option<Vec<Chunk>> {
    let max = limits.max_storage_binding;
    let (hq, sq, sk, d) = (
        spec.q_heads as u64,
        spec.seq_q as u64,
        spec.seq_k as u64,
        spec.head_dim as u64,
    );
    if nbh == 0 || nq == 0 || chunk_count(sizes, sq, nbh, nq) > MAX_CHUNKS {
        return None;
    }
    if (rule.scratch_bytes)(nbh, nq) > max {
        return None;
    }
    let align = limits.storage_offset_alignment.max(4) as u64;
    let group = spec.group() as u64;
    let (qs, ks) = (sizes.q_strides, sizes.kv_strides);
    let bh_total = sizes.bh;
    let matrix_index =
        |(sb, sh): (u64, u64), b: u64, h: u64, i: u64, j: u64| b * sb + h * sh + i * sk + j;
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
            let (q_first, q_last) = (qs.at(b0, h0, i0), qs.at(b1, h1, i1) + d - 1);
            let q = Window::new(q_first, q_last, elem_bytes.input, align);
            let out = Window::new(q_first, q_last, elem_bytes.out, align);
            let kv = Window::new(
                ks.at(b0, h0 / group, 0),
                ks.at(b1, h1 / group, sk - 1) + d - 1,
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
            let matrix = |strides: (u64, u64), bytes| {
                let first = matrix_index(strides, b0, h0, i0, 0);
                let last = matrix_index(strides, b1, h1, i1, sk - 1);
                Window::new(first, last, bytes, align)
            };
            let bias = spec.bias.map(|_| matrix(sizes.bias_strides, 4));
            let mask = spec.mask.map(|_| matrix(sizes.mask_strides, 1));
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

// Keeping every dispatch within the device's `max_compute_workgroups_per_dimension`: chunks
// whose query rows need more workgroups than one dispatch may have are cut into several
// dispatches over fewer rows. Each piece keeps its chunk's buffer windows and starts at its
// own first row (`Params.i0`, the base offset every kernel adds), so no shader changes.

/// Cuts `chunks` into pieces whose grids (`grids(nbh, nq)`, every dimension) stay within
/// `max_dim` workgroups; a chunk that fits is kept whole.
pub(crate) fn rows_within_limit(
    chunks: Vec<Chunk>,
    max_dim: u32,
    grids: impl Fn(u32, u32) -> Vec<[u32; 3]>,
) -> Result<Vec<Chunk>> {
    let fits = |nbh: u32, nq: u32| grids(nbh, nq).iter().flatten().all(|&n| n <= max_dim);
    let mut out = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        if fits(chunk.nbh, chunk.nq) {
            out.push(chunk);
            continue;
        }
        if !fits(chunk.nbh, 1) {
            let needed = grids(chunk.nbh, 1)
                .iter()
                .flatten()
                .copied()
                .max()
                .unwrap_or(0);
            return Err(Error::TooLarge {
                what: format!(
                    "workgroups per dimension for one query row of {} heads",
                    chunk.nbh
                ),
                needed: needed as u64,
                allowed: max_dim as u64,
                limit: "max_compute_workgroups_per_dimension",
            });
        }
        // the largest row count that fits (grids grow with the rows)
        let (mut lo, mut hi) = (1, chunk.nq - 1);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if fits(chunk.nbh, mid) {
                lo = mid
            } else {
                hi = mid - 1
            }
        }
        let mut i = 0;
        while i < chunk.nq {
            let n = lo.min(chunk.nq - i);
            out.push(Chunk {
                i0: chunk.i0 + i,
                nq: n,
                ..chunk.clone()
            });
            i += n;
        }
    }
    Ok(out)
}

/// Dispatches of `blocks` workgroups along x, each at most `max_dim`: (first block, count).
pub(crate) fn pieces(blocks: u32, max_dim: u32) -> Vec<(u32, u32)> {
    let max_dim = max_dim.max(1);
    (0..blocks.div_ceil(max_dim))
        .map(|n| {
            let first = n * max_dim;
            (first, max_dim.min(blocks - first))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! GPU-free tests of the chunker: coverage, binding limits, odd sizes and refusals.
    use super::*;
    use crate::spec::{Broadcast, CausalAlign, Layout};

    fn limits(max_binding: u64, align: u32) -> DeviceLimits {
        DeviceLimits {
            max_storage_binding: max_binding,
            storage_offset_alignment: align,
            ..DeviceLimits::unbounded()
        }
    }

    /// A three-pass-like rule: a score row of Sk f32 per (pair, row) as scratch.
    fn scores(spec: &AttentionSpec) -> impl Fn(u64, u64) -> u64 {
        let sk = spec.seq_k as u64;
        move |nbh, nq| nbh * nq * sk * 4
    }

    fn rule<'a>(
        scratch: &'a dyn Fn(u64, u64) -> u64,
        row_tile: u32,
        bh_multiple: u32,
    ) -> SplitRule<'a> {
        SplitRule {
            scratch_bytes: scratch,
            row_tile,
            max_units_per_dispatch: 65535,
            bh_multiple,
        }
    }

    const F32: ElemBytes = ElemBytes { input: 4, out: 4 };

    /// Asserts that `chunks` cover every (batch·head, row) of `spec` exactly once, that every
    /// window respects `limits` and holds the elements its chunk touches.
    fn assert_valid(spec: &AttentionSpec, limits: &DeviceLimits, chunks: &[Chunk], unit: u32) {
        let sizes = spec.sizes().unwrap();
        let (sq, sk, d) = (spec.seq_q as u64, spec.seq_k as u64, spec.head_dim as u64);
        let mut seen = vec![0u8; (sizes.bh * sq) as usize];
        let inside = |w: &Window, first: u64, last: u64, eb: u64, what: &str| {
            assert!(
                w.shift as u64 <= first && (last + 1) * eb <= w.offset + w.size,
                "{what} window {w:?} misses elements {first}..={last} of {spec:?}"
            );
            assert_eq!(w.offset % limits.storage_offset_alignment.max(4) as u64, 0);
        };
        for c in chunks {
            assert!(c.nbh >= 1 && c.nq >= 1, "empty chunk {c:?}");
            assert_eq!(c.bh0 % unit, 0, "chunk does not start at a unit: {c:?}");
            for w in [
                Some(c.q),
                Some(c.out),
                Some(c.kv),
                Some(c.lse),
                c.weights,
                c.bias,
                c.mask,
            ]
            .iter()
            .flatten()
            {
                assert!(w.size <= limits.max_storage_binding, "window {w:?} too big");
            }
            for bh in c.bh0 as u64..(c.bh0 + c.nbh) as u64 {
                let (b, h) = (bh / spec.q_heads as u64, bh % spec.q_heads as u64);
                let kvh = h / spec.group() as u64;
                for i in c.i0 as u64..(c.i0 + c.nq) as u64 {
                    seen[(bh * sq + i) as usize] += 1;
                    let q = sizes.q_strides.at(b, h, i);
                    inside(&c.q, q, q + d - 1, 4, "q");
                    inside(&c.out, q, q + d - 1, 4, "out");
                    let k0 = sizes.kv_strides.at(b, kvh, 0);
                    let k1 = sizes.kv_strides.at(b, kvh, sk - 1);
                    inside(&c.kv, k0, k1 + d - 1, 4, "kv");
                    inside(&c.lse, bh * sq + i, bh * sq + i, 4, "lse");
                    if let Some(w) = &c.weights {
                        let r = (bh * sq + i) * sk;
                        inside(w, r, r + sk - 1, 4, "weights");
                    }
                    if let Some(w) = &c.bias {
                        let (sb, sh) = sizes.bias_strides;
                        let r = b * sb + h * sh + i * sk;
                        inside(w, r, r + sk - 1, 4, "bias");
                    }
                    if let Some(w) = &c.mask {
                        let (sb, sh) = sizes.mask_strides;
                        let r = b * sb + h * sh + i * sk;
                        inside(w, r, r + sk - 1, 1, "mask");
                    }
                }
            }
        }
        assert!(
            seen.iter().all(|&n| n == 1),
            "rows not covered exactly once for {spec:?}: {:?}",
            seen.iter()
                .enumerate()
                .filter(|(_, n)| **n != 1)
                .take(5)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn chunks_cover_every_row_once_within_the_binding_limit() {
        let specs = [
            AttentionSpec::new(2, 4, 2, 100, 300, 32).causal(CausalAlign::BottomRight),
            AttentionSpec::new(1, 4, 2, 130, 120, 64).layout(Layout::Bshd),
            AttentionSpec::new(3, 6, 3, 37, 41, 7)
                .layout(Layout::Bshd)
                .bias(Broadcast {
                    per_batch: true,
                    per_head: false,
                })
                .mask(Broadcast::FULL)
                .with_weights(true),
            AttentionSpec::new(5, 3, 1, 1, 257, 40).bias(Broadcast::SHARED),
            AttentionSpec::new(1, 1, 1, 1, 1, 1),
        ];
        for spec in &specs {
            let scratch = scores(spec);
            for (max_binding, align) in [(u64::MAX, 4), (96 * 1024, 64), (64 * 1024, 256)] {
                let lim = limits(max_binding, align);
                for (tile, unit) in [(1, 1), (16, 1), (64, spec.group() as u32)] {
                    let r = rule(&scratch, tile, unit);
                    match split(spec, &lim, F32, &r) {
                        Ok(chunks) => {
                            if max_binding == u64::MAX {
                                assert_eq!(chunks.len(), 1, "{spec:?}");
                            }
                            assert_valid(spec, &lim, &chunks, unit)
                        }
                        Err(e) => panic!("{spec:?} at binding {max_binding}: {e}"),
                    }
                }
            }
        }
    }

    #[test]
    fn small_bindings_split_by_rows_in_whole_tiles() {
        // One head's score matrix is 100·300·4 = 120 KB: rows must be split.
        let spec = AttentionSpec::new(1, 2, 2, 100, 300, 16);
        let scratch = scores(&spec);
        let lim = limits(32 * 1024, 4);
        let chunks = split(&spec, &lim, F32, &rule(&scratch, 16, 1)).unwrap();
        assert!(chunks.len() > 2, "{}", chunks.len());
        for c in &chunks {
            assert_eq!(c.nbh, 1);
            assert!(c.nq % 16 == 0 || c.i0 + c.nq == 100, "{c:?}");
        }
        assert_valid(&spec, &lim, &chunks, 1);
    }

    #[test]
    fn a_row_that_cannot_fit_is_refused_by_name() {
        // One score row (1000 keys · 4 B) exceeds a 2 KB binding.
        let spec = AttentionSpec::new(1, 1, 1, 8, 1000, 1);
        let scratch = scores(&spec);
        match split(&spec, &limits(2048, 4), F32, &rule(&scratch, 1, 1)) {
            Err(Error::TooLarge { what, needed, .. }) => {
                assert!(what.contains("score row"), "{what}");
                assert_eq!(needed, 4000);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // Keys of one head (512 keys · 64 dims · 4 B = 128 KB) beyond a 64 KB binding.
        let spec = AttentionSpec::new(1, 1, 1, 4, 512, 64);
        let none = |_: u64, _: u64| 0;
        match split(&spec, &limits(64 * 1024, 4), F32, &rule(&none, 1, 1)) {
            Err(Error::TooLarge { what, .. }) => assert!(what.contains("keys"), "{what}"),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn too_many_chunks_are_refused_without_building_them() {
        // 2^20 heads of one row each, one head per chunk (its score row fills the binding):
        // 2^20 chunks would be built one by one before; now refused up front.
        let spec = AttentionSpec::new(1, 1 << 20, 1 << 20, 1, 256, 1);
        let scratch = scores(&spec);
        let started = std::time::Instant::now();
        match split(&spec, &limits(1024, 4), F32, &rule(&scratch, 1, 1)) {
            Err(Error::TooLarge {
                needed, allowed, ..
            }) => {
                assert_eq!(allowed, MAX_CHUNKS);
                assert!(needed > MAX_CHUNKS, "{needed}");
            }
            Ok(c) => panic!("accepted {} chunks", c.len()),
            Err(e) => panic!("unexpected error {e}"),
        }
        assert!(started.elapsed().as_secs() < 5, "{:?}", started.elapsed());
    }

    #[test]
    fn overflowing_shapes_are_refused_before_splitting() {
        // `wgattn bench --shape 1048576,1048576,1048576,65536,65536,256`: q has 2^64 elements.
        let spec = AttentionSpec::new(1 << 20, 1 << 20, 1 << 20, 1 << 16, 1 << 16, 256);
        let scratch = scores(&spec);
        let r = rule(&scratch, 64, 1);
        assert!(matches!(
            split(&spec, &limits(1 << 27, 256), F32, &r),
            Err(Error::InvalidSpec { .. })
        ));
        assert!(matches!(
            spec.validate(&DeviceLimits::unbounded()),
            Err(Error::InvalidSpec { .. })
        ));
    }

    #[test]
    fn pieces_cover_every_block_once_within_the_limit() {
        assert_eq!(pieces(10, 4), vec![(0, 4), (4, 4), (8, 2)]);
        assert_eq!(pieces(4, 4), vec![(0, 4)]);
        assert_eq!(pieces(1, 65535), vec![(0, 1)]);
        assert!(pieces(0, 4).is_empty());
    }
}
