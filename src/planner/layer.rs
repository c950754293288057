//! The layers' kernels (`shaders/layer/`): the register-tiled projection (`linear.wgsl`),
//! layer normalisation (`norm.wgsl`) and the row gather used by embeddings and absolute
//! positional encodings (`gather.wgsl`). What each call computes ([`LinearShape`],
//! [`Gather`]), the choices made for it (tile rows by problem size, direct loads on CPU
//! adapters) and the compile keys. Pure: the launchers are `kernels::layer`.

use super::Caps;
use crate::error::{Error, Result};
use crate::shader::{Binding, Flag, ShaderVariant};
use crate::spec::DType;

/// Rows per invocation of the projection kernel: 4 (64-row tiles) for prefill-sized inputs,
/// 1 (16-row tiles) for decoding steps of a few rows.
pub(crate) fn tile_rows(m: usize) -> u32 {
    if m >= 48 { 4 } else { 1 }
}

/// Rows of the projection's workgroup tile for `m` rows.
pub(crate) fn block_rows(m: usize) -> usize {
    16 * tile_rows(m) as usize
}

/// CPU adapters (llvmpipe) run the projection without workgroup memory: barriers across
/// 256 invocations cost more there than the loads they save.
fn direct(caps: &Caps) -> bool {
    caps.is_cpu()
}

/// Where a matrix's rows and columns live in a buffer: row m is `(b, s) = (m / rows, m %
/// rows)` and column c is `(head, d) = (c / head_dim, c % head_dim)`, at element `b·batch +
/// head·head + s·row + d`. Plain row-major `[M, N]` is [`Gather::rows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gather {
    /// Columns per head.
    pub head_dim: usize,
    /// Stride between batch entries.
    pub batch: usize,
    /// Stride between heads.
    pub head: usize,
    /// Stride between rows (sequence positions).
    pub row: usize,
}

impl Gather {
    /// Row-major `[B·S, N]`.
    pub fn rows(seq: usize, n: usize) -> Self {
        Gather {
            head_dim: n.max(1),
            batch: seq * n,
            head: 0,
            row: n,
        }
    }

    /// `[B, H, S, D]` (`seq` rows per batch entry).
    pub fn bhsd(heads: usize, seq: usize, head_dim: usize) -> Self {
        Gather {
            head_dim,
            batch: heads * seq * head_dim,
            head: seq * head_dim,
            row: head_dim,
        }
    }

    /// `[B, S, H, D]` (the same as row-major with N = H·D).
    pub fn bshd(heads: usize, seq: usize, head_dim: usize) -> Self {
        Gather {
            head_dim,
            batch: seq * heads * head_dim,
            head: head_dim,
            row: heads * head_dim,
        }
    }
}

/// Rotary embedding as the projection applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RopeCall {
    /// Rotated dimensions R of each head (even, ≤ head_dim).
    pub dims: usize,
    /// Rotate-half pairing (d, d + R/2) rather than interleaved (2i, 2i + 1).
    pub half: bool,
    /// Positions in the cos/sin table.
    pub max_pos: usize,
}

/// What one projection computes (shapes, storage, epilogue).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LinearShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Rows per batch entry.
    pub rows: usize,
    pub x: Gather,
    pub y: Gather,
    pub x_dtype: DType,
    pub w_dtype: DType,
    pub y_dtype: DType,
    /// First row of W (and element of the bias) used: packed projections.
    pub w_row0: usize,
    pub bias: bool,
    pub rope: Option<RopeCall>,
    pub gelu: bool,
    pub residual: bool,
    /// Rows written at `s + offsets[b]` (a KV cache).
    pub row_offset: bool,
    /// Workgroup-memory tiles (true) or direct loads (false); `None`: by adapter.
    pub tiled: Option<bool>,
}

/// How a gather finds its table row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GatherBy {
    /// `aux[m]` (token or type ids).
    Ids,
    /// `m % rows + aux[ids_len + m / rows]` (positions with a per-batch offset).
    Positions { rows: usize, ids_len: usize },
}

/// The projection's compile key for `s` on `caps`, after checking the shape can be stored:
/// f16 outputs need head_dim and rotary dims that keep f16 pairs in one word.
pub(crate) fn linear_shader(s: &LinearShape, caps: &Caps) -> Result<ShaderVariant> {
    let f16 = |d: DType| d == DType::F16;
    if f16(s.y_dtype) {
        let align = if s.rope.is_some_and(|r| r.half) { 4 } else { 2 };
        let rot = s.rope.map_or(0, |r| r.dims);
        if !s.y.head_dim.is_multiple_of(align)
            || !rot.is_multiple_of(align)
            || !s.n.is_multiple_of(2)
        {
            return Err(Error::spec(
                "head_dim",
                s.y.head_dim,
                format!(
                    "f16 outputs need head_dim and rotary dims multiples of {align} and an even width"
                ),
            ));
        }
    }
    let v = ShaderVariant::new("layer/linear.wgsl")
        .constant("TM", tile_rows(s.m))
        .flag(Flag::X_F16, f16(s.x_dtype))
        .flag(Flag::W_F16, f16(s.w_dtype))
        .flag(Flag::Y_F16, f16(s.y_dtype))
        .flag(Flag::BIAS, s.bias)
        .flag(Flag::ROW_OFFSET, s.row_offset)
        .flag(Flag::ROPE, s.rope.is_some())
        .flag(Flag::ROPE_HALF, s.rope.is_some_and(|r| r.half))
        .flag(Flag::GELU, s.gelu)
        .flag(Flag::RESIDUAL, s.residual)
        .flag(Flag::DIRECT, !s.tiled.unwrap_or(!direct(caps)));
    Ok(linear_bindings(v))
}

/// The projection's bindings once its flags are set: X, W, Y; the bias, the rotary table,
/// the per-batch offsets (rotary positions, cache rows) and the residual as flagged.
fn linear_bindings(v: ShaderVariant) -> ShaderVariant {
    let rope = v.has(Flag::ROPE);
    let offsets = rope || v.has(Flag::ROW_OFFSET);
    let (bias, residual) = (v.has(Flag::BIAS), v.has(Flag::RESIDUAL));
    v.bind([
        Binding::Params,
        Binding::Input,
        Binding::Weight,
        Binding::Out,
    ])
    .bind_if(bias, Binding::Bias)
    .bind_if(rope, Binding::Table)
    .bind_if(offsets, Binding::Aux)
    .bind_if(residual, Binding::Residual)
}

/// The layer-norm compile key (f16 input `x16`, f16 output `y16`).
pub(crate) fn norm_shader(x16: bool, y16: bool) -> ShaderVariant {
    ShaderVariant::new("layer/norm.wgsl")
        .flag(Flag::X_F16, x16)
        .flag(Flag::Y_F16, y16)
        .bind([
            Binding::Params,
            Binding::Input,
            Binding::Weight,
            Binding::Bias,
            Binding::Out,
        ])
}

/// The gather compile key (f16 output `y16`, added to an input, rows by ids).
pub(crate) fn gather_shader(y16: bool, add: bool, ids: bool) -> ShaderVariant {
    ShaderVariant::new("layer/gather.wgsl")
        .flag(Flag::Y_F16, y16)
        .flag(Flag::ADD, add)
        .flag(Flag::IDS, ids)
        .bind([Binding::Params, Binding::Aux, Binding::Weight, Binding::Out])
        .bind_if(add, Binding::Input)
}

/// Every layer kernel variant the crate can generate (for the naga validation test). The
/// layers store X, W and Y in one dtype; rotary embedding and cache rows come with the
/// attention projections, GELU and the residual with the other ones.
pub(crate) fn variants() -> Vec<ShaderVariant> {
    let mut all = Vec::new();
    let on_off = [false, true];
    let mut epilogues: Vec<Vec<Flag>> = Vec::new();
    for rope in [vec![], vec![Flag::ROPE], vec![Flag::ROPE, Flag::ROPE_HALF]] {
        for row_offset in on_off {
            let mut e = rope.clone();
            if row_offset {
                e.push(Flag::ROW_OFFSET);
            }
            epilogues.push(e);
        }
    }
    epilogues.extend([
        vec![Flag::GELU],
        vec![Flag::RESIDUAL],
        vec![Flag::GELU, Flag::RESIDUAL],
    ]);
    for (tm, direct) in [(1, false), (4, false), (1, true), (4, true)] {
        for f16 in on_off {
            for bias in on_off {
                for epilogue in &epilogues {
                    let mut v = ShaderVariant::new("layer/linear.wgsl")
                        .constant("TM", tm)
                        .flag(Flag::X_F16, f16)
                        .flag(Flag::W_F16, f16)
                        .flag(Flag::Y_F16, f16)
                        .flag(Flag::BIAS, bias);
                    for &f in epilogue {
                        v = v.flag(f, true);
                    }
                    all.push(linear_bindings(v.flag(Flag::DIRECT, direct)));
                }
            }
        }
    }
    for x in on_off {
        for y in on_off {
            all.push(norm_shader(x, y));
            for ids in on_off {
                all.push(gather_shader(y, x, ids));
            }
        }
    }
    all
}
