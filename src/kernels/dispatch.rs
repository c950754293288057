//! Keeping every dispatch within the device's `max_compute_workgroups_per_dimension`: chunks
//! whose query rows need more workgroups than one dispatch may have are cut into several
//! dispatches over fewer rows. Each piece keeps its chunk's buffer windows and starts at its
//! own first row (`Params.i0`, the base offset every kernel adds), so no shader changes.

use super::chunks::Chunk;
use crate::error::{Error, Result};

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
    use super::*;

    #[test]
    fn pieces_cover_every_block_once_within_the_limit() {
        assert_eq!(pieces(10, 4), vec![(0, 4), (4, 4), (8, 2)]);
        assert_eq!(pieces(4, 4), vec![(0, 4)]);
        assert_eq!(pieces(1, 65535), vec![(0, 1)]);
        assert!(pieces(0, 4).is_empty());
    }
}
