//! Blocks of cells combined into displayed cells, and where a weight sits on the colour scale.

use super::options::{Aggregate, RenderOptions, Scale};
use super::window::AttentionMatrix;

/// The displayed value of a block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Cell {
    /// No visible cell in the block.
    Masked,
    /// The aggregated weight.
    Value(f32),
}

/// Block size and pixel size of one axis of `n` cells.
pub(super) fn axis(n: usize, o: &RenderOptions) -> (usize, usize) {
    let max_side = o.max_side.max(1);
    if n > max_side {
        (n.div_ceil(max_side), 1)
    } else {
        (1, (o.min_side / n.max(1)).clamp(1, o.max_cell.max(1)))
    }
}

/// Combines blocks of `br × bc` cells.
pub(super) fn aggregate(m: &AttentionMatrix, br: usize, bc: usize, how: Aggregate) -> Vec<Cell> {
    let (rows, cols) = (m.rows(), m.cols());
    let (dr, dc) = (rows.div_ceil(br), cols.div_ceil(bc));
    // Running (max or sum, visible count, any non-finite) per displayed cell.
    let mut acc = vec![(f64::NEG_INFINITY, 0usize, false); dr * dc];
    if how == Aggregate::Mean {
        acc.iter_mut().for_each(|a| a.0 = 0.0);
    }
    for r in 0..rows {
        let line = &mut acc[(r / br) * dc..(r / br + 1) * dc];
        for c in 0..cols {
            let at = r * cols + c;
            // A matrix whose vectors are short (its fields are public) draws the missing cells
            // as masked rather than panicking.
            if m.masked.get(at).copied().unwrap_or(true) {
                continue;
            }
            let w = m.weights.get(at).copied().unwrap_or(f32::NAN);
            let a = &mut line[c / bc];
            a.1 += 1;
            if !w.is_finite() {
                a.2 = true;
                continue;
            }
            match how {
                Aggregate::Max => a.0 = a.0.max(w as f64),
                Aggregate::Mean => a.0 += w as f64,
            }
        }
    }
    acc.into_iter()
        .map(|(x, n, bad)| match (n, bad, how) {
            (0, _, _) => Cell::Masked,
            (_, true, _) => Cell::Value(f32::NAN),
            (_, _, Aggregate::Max) => Cell::Value(x as f32),
            (_, _, Aggregate::Mean) => Cell::Value((x / n as f64) as f32),
        })
        .collect()
}

/// The (min, max) of the colour scale over the displayed values.
pub(super) fn value_range(cells: &[Cell], scale: Scale) -> (f32, f32) {
    let values = cells.iter().filter_map(|c| match c {
        Cell::Value(v) if v.is_finite() => Some(*v),
        _ => None,
    });
    let (mut lo, mut hi, mut lo_pos) = (f32::INFINITY, f32::NEG_INFINITY, f32::INFINITY);
    for v in values {
        lo = lo.min(v);
        hi = hi.max(v);
        if v > 0.0 {
            lo_pos = lo_pos.min(v);
        }
    }
    if !hi.is_finite() {
        return (0.0, 1.0);
    }
    match scale {
        Scale::Linear | Scale::Auto => {
            if hi > lo {
                (lo, hi)
            } else if hi > 0.0 {
                (0.0, hi)
            } else {
                (0.0, 1.0)
            }
        }
        Scale::Log => {
            if !lo_pos.is_finite() {
                (1e-6, 1.0)
            } else if hi > lo_pos {
                (lo_pos, hi)
            } else {
                (hi / 10.0, hi)
            }
        }
    }
}

/// Position (0..=1) on the colour range of `scale` of the median unmasked finite cell; 0.5
/// when there is none.
pub(super) fn median_position(cells: &[Cell], scale: Scale) -> f64 {
    let (min, max) = value_range(cells, scale);
    let mut positions: Vec<f64> = cells
        .iter()
        .filter_map(|c| match c {
            Cell::Value(v) if v.is_finite() => Some(position(*v, min, max, scale)),
            _ => None,
        })
        .collect();
    if positions.is_empty() {
        return 0.5;
    }
    let mid = positions.len() / 2;
    *positions.select_nth_unstable_by(mid, f64::total_cmp).1
}

/// Position 0..=1 of `w` on the scale from `min` to `max`.
pub(super) fn position(w: f32, min: f32, max: f32, scale: Scale) -> f64 {
    let (w, lo, hi) = (w as f64, min as f64, max as f64);
    let t = match scale {
        Scale::Linear | Scale::Auto => (w - lo) / (hi - lo),
        Scale::Log if w <= 0.0 => 0.0,
        Scale::Log => (w.ln() - lo.ln()) / (hi.ln() - lo.ln()),
    };
    if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// The weight at position `t` (0..=1) of the scale from `min` to `max`.
pub(super) fn value_at(t: f64, min: f32, max: f32, scale: Scale) -> f64 {
    let (lo, hi) = (min as f64, max as f64);
    match scale {
        Scale::Linear | Scale::Auto => lo + t * (hi - lo),
        Scale::Log => (lo.ln() + t * (hi.ln() - lo.ln())).exp(),
    }
}

/// A probability as a short label: `0.125`, `1.000`, `2.44e-4`.
pub fn format_weight(w: f64) -> String {
    if w == 0.0 {
        "0".into()
    } else if w.abs() >= 0.01 {
        format!("{w:.3}")
    } else {
        format!("{w:.2e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(
        rows: usize,
        cols: usize,
        f: impl Fn(usize, usize) -> Option<f32>,
    ) -> AttentionMatrix {
        AttentionMatrix::from_fn(rows, cols, f)
    }

    #[test]
    fn small_matrices_scale_up_and_long_ones_aggregate() {
        let o = RenderOptions::default();
        assert_eq!(axis(7, &o), (1, 57));
        assert_eq!(axis(1, &o), (1, 64));
        assert_eq!(axis(1024, &o), (1, 1));
        assert_eq!(axis(4096, &o), (4, 1));
        assert_eq!(axis(4097, &o), (5, 1));
    }

    #[test]
    fn aggregation_skips_masked_cells() {
        // 4×4, lower triangle visible, value = r + c/10.
        let m = matrix(4, 4, |r, c| (c <= r).then_some(r as f32 + c as f32 / 10.0));
        let max = aggregate(&m, 2, 2, Aggregate::Max);
        assert_eq!(
            max,
            vec![
                Cell::Value(1.1),
                Cell::Masked,
                Cell::Value(3.1),
                Cell::Value(3.3)
            ]
        );
        let mean = aggregate(&m, 2, 2, Aggregate::Mean);
        let Cell::Value(v) = mean[0] else {
            panic!("visible")
        };
        assert!((v - (0.0 + 1.0 + 1.1) / 3.0).abs() < 1e-6);
    }

    #[test]
    fn degenerate_ranges_stay_drawable() {
        assert_eq!(value_range(&[Cell::Value(0.5)], Scale::Linear), (0.0, 0.5));
        assert_eq!(value_range(&[Cell::Masked], Scale::Linear), (0.0, 1.0));
        assert_eq!(
            value_range(&[Cell::Value(0.0), Cell::Value(0.25)], Scale::Log),
            (0.25 / 10.0, 0.25)
        );
        assert_eq!(position(0.0, 0.01, 1.0, Scale::Log), 0.0);
        assert!((position(0.1, 0.01, 1.0, Scale::Log) - 0.5).abs() < 1e-6);
    }
}
