//! The layers' WGSL kernels (`shaders/layer_*.wgsl`): the register-tiled projection
//! (`layer_linear.wgsl`), layer normalisation (`layer_norm.wgsl`) and the row gather used by
//! embeddings and absolute positional encodings (`layer_gather.wgsl`). Each call is prepared
//! once (pipeline and uniform parameters) and recorded into an encoder with the caller's
//! buffers.

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use crate::context::{Context, init_buffer};
use crate::error::{Error, Result};
use crate::kernels::bindings::{self, Binding};
use crate::shaders::ShaderVariant;
use crate::spec::DType;

/// Rows per invocation of the projection kernel: 4 (64-row tiles) for prefill-sized inputs,
/// 1 (16-row tiles) for decoding steps of a few rows.
fn tile_rows(m: usize) -> u32 {
    if m >= 48 { 4 } else { 1 }
}

/// CPU adapters (llvmpipe) run the projection without workgroup memory: barriers across
/// 256 invocations cost more there than the loads they save.
fn direct(ctx: &Context) -> bool {
    ctx.caps().device_type == wgpu::DeviceType::Cpu
}

/// The bindings of a layer kernel variant (the crate's binding table, see
/// `kernels::bindings::of_variant`).
pub(crate) fn bindings(variant: &ShaderVariant) -> Vec<Binding> {
    use Binding::*;
    let has = |f: &str| variant.flags.contains(&f);
    let mut list = match variant.template {
        "layer_linear.wgsl" => {
            let mut l = vec![Params, Input, Weight, Out];
            if has("BIAS") {
                l.push(Bias);
            }
            if has("ROPE") {
                l.push(Table);
            }
            if has("ROPE") || has("ROW_OFFSET") {
                l.push(Aux);
            }
            if has("RESIDUAL") {
                l.push(Residual);
            }
            l
        }
        "layer_norm.wgsl" => vec![Params, Input, Weight, Bias, Out],
        "layer_gather.wgsl" => {
            let mut l = vec![Params, Aux, Weight, Out];
            if has("ADD") {
                l.push(Input);
            }
            l
        }
        _ => Vec::new(),
    };
    list.sort();
    list
}

/// Every layer kernel variant the crate can generate (for the naga validation test). The
/// layers store X, W and Y in one dtype; rotary embedding and cache rows come with the
/// attention projections, GELU and the residual with the other ones.
pub(crate) fn variants() -> Vec<ShaderVariant> {
    let mut all = Vec::new();
    let on_off = [false, true];
    let mut epilogues: Vec<Vec<&'static str>> = Vec::new();
    for rope in [vec![], vec!["ROPE"], vec!["ROPE", "ROPE_HALF"]] {
        for row_offset in on_off {
            let mut e = rope.clone();
            if row_offset {
                e.push("ROW_OFFSET");
            }
            epilogues.push(e);
        }
    }
    epilogues.extend([vec!["GELU"], vec!["RESIDUAL"], vec!["GELU", "RESIDUAL"]]);
    for (tm, direct) in [(1, false), (4, false), (1, true), (4, true)] {
        for f16 in on_off {
            for bias in on_off {
                for epilogue in &epilogues {
                    let mut v = ShaderVariant::new("layer_linear.wgsl")
                        .constant("TM", tm)
                        .flag("X_F16", f16)
                        .flag("W_F16", f16)
                        .flag("Y_F16", f16)
                        .flag("BIAS", bias);
                    for f in epilogue {
                        v = v.flag(f, true);
                    }
                    all.push(v.flag("DIRECT", direct));
                }
            }
        }
    }
    for x in on_off {
        for y in on_off {
            all.push(
                ShaderVariant::new("layer_norm.wgsl")
                    .flag("X_F16", x)
                    .flag("Y_F16", y),
            );
            for ids in on_off {
                all.push(
                    ShaderVariant::new("layer_gather.wgsl")
                        .flag("Y_F16", y)
                        .flag("ADD", x)
                        .flag("IDS", ids),
                );
            }
        }
    }
    all
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

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct LinParams {
    m: u32,
    n: u32,
    k: u32,
    rows: u32,
    x: [u32; 4],
    y: [u32; 4],
    w_row0: u32,
    b_off: u32,
    rot: u32,
    max_pos: u32,
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

/// Buffers of one projection.
pub(crate) struct LinearBuffers<'a> {
    pub x: &'a wgpu::Buffer,
    pub w: &'a wgpu::Buffer,
    pub bias: Option<&'a wgpu::Buffer>,
    /// Per-batch offsets (rope positions and cache rows).
    pub offsets: Option<&'a wgpu::Buffer>,
    pub table: Option<&'a wgpu::Buffer>,
    pub residual: Option<&'a wgpu::Buffer>,
    pub y: &'a wgpu::Buffer,
}

/// A prepared projection dispatch.
pub(crate) struct LinearCall {
    pipeline: Arc<wgpu::ComputePipeline>,
    variant: ShaderVariant,
    params: wgpu::Buffer,
    groups: (u32, u32),
}

fn u32_of(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::TooLarge {
        what: what.to_string(),
        needed: v as u64,
        allowed: u32::MAX as u64,
        limit: "u32 indexing",
    })
}

impl LinearCall {
    pub(crate) fn new(ctx: &Context, s: &LinearShape) -> Result<LinearCall> {
        let tm = tile_rows(s.m);
        let f16 = |d: DType| d == DType::F16;
        let variant = ShaderVariant::new("layer_linear.wgsl")
            .constant("TM", tm)
            .flag("X_F16", f16(s.x_dtype))
            .flag("W_F16", f16(s.w_dtype))
            .flag("Y_F16", f16(s.y_dtype))
            .flag("BIAS", s.bias)
            .flag("ROW_OFFSET", s.row_offset)
            .flag("ROPE", s.rope.is_some())
            .flag("ROPE_HALF", s.rope.is_some_and(|r| r.half))
            .flag("GELU", s.gelu)
            .flag("RESIDUAL", s.residual)
            .flag("DIRECT", !s.tiled.unwrap_or(!direct(ctx)));
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
        let p = LinParams {
            m: u32_of("projection rows", s.m)?,
            n: u32_of("projection columns", s.n)?,
            k: u32_of("projection inputs", s.k)?,
            rows: u32_of("rows per batch entry", s.rows.max(1))?,
            x: [
                u32_of("input head_dim", s.x.head_dim)?,
                u32_of("input stride", s.x.batch)?,
                u32_of("input stride", s.x.head)?,
                u32_of("input stride", s.x.row)?,
            ],
            y: [
                u32_of("output head_dim", s.y.head_dim)?,
                u32_of("output stride", s.y.batch)?,
                u32_of("output stride", s.y.head)?,
                u32_of("output stride", s.y.row)?,
            ],
            w_row0: u32_of("weight rows", s.w_row0)?,
            b_off: u32_of("bias offset", s.w_row0)?,
            rot: s.rope.map_or(0, |r| r.dims as u32),
            max_pos: s.rope.map_or(1, |r| r.max_pos as u32).max(1),
        };
        let (pipeline, params) = pipeline_and_params(
            ctx,
            &variant,
            "allocating projection parameters",
            "wgattn linear params",
            &p,
        )?;
        let bm = 16 * tm as usize;
        let gx = u32_of("projection workgroups", s.n.div_ceil(64))?;
        let gy = u32_of("projection workgroups", s.m.div_ceil(bm))?;
        let max = ctx.limits().max_workgroups_per_dim;
        if gx > max || gy > max {
            return Err(Error::TooLarge {
                what: "projection workgroups per dimension".into(),
                needed: gx.max(gy) as u64,
                allowed: max as u64,
                limit: "max_compute_workgroups_per_dimension",
            });
        }
        Ok(LinearCall {
            pipeline,
            variant,
            params,
            groups: (gx.max(1), gy.max(1)),
        })
    }

    /// True when the pass adds a residual.
    pub(crate) fn has_residual(&self) -> bool {
        self.variant.flags.contains(&"RESIDUAL")
    }

    /// Records the projection.
    pub(crate) fn encode(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        b: &LinearBuffers,
    ) {
        let resource = |binding: Binding| match binding {
            Binding::Params => Some(self.params.as_entire_binding()),
            Binding::Input => Some(b.x.as_entire_binding()),
            Binding::Weight => Some(b.w.as_entire_binding()),
            Binding::Bias => b.bias.map(|x| x.as_entire_binding()),
            Binding::Aux => b.offsets.map(|x| x.as_entire_binding()),
            Binding::Table => b.table.map(|x| x.as_entire_binding()),
            Binding::Residual => b.residual.map(|x| x.as_entire_binding()),
            Binding::Out => Some(b.y.as_entire_binding()),
            _ => None,
        };
        dispatch(
            device,
            encoder,
            &self.pipeline,
            &self.variant,
            resource,
            self.groups,
            "wgattn linear",
        );
    }
}

fn dispatch<'a>(
    device: &wgpu::Device,
    encoder: &mut wgpu::CommandEncoder,
    pipeline: &wgpu::ComputePipeline,
    variant: &ShaderVariant,
    resource: impl FnMut(Binding) -> Option<wgpu::BindingResource<'a>>,
    groups: (u32, u32),
    label: &str,
) {
    let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &bindings::entries(&bindings::of_variant(variant), resource),
    });
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some(label),
        timestamp_writes: None,
    });
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, &group, &[]);
    pass.dispatch_workgroups(groups.0, groups.1, 1);
}

/// Splits `n` workgroups over x and y within the per-dimension limit.
fn grid(ctx: &Context, n: usize, what: &str) -> Result<(u32, u32)> {
    let max = ctx.limits().max_workgroups_per_dim.max(1) as usize;
    let y = n.div_ceil(max).max(1);
    if y > max {
        return Err(Error::TooLarge {
            what: what.to_string(),
            needed: n as u64,
            allowed: (max * max) as u64,
            limit: "max_compute_workgroups_per_dimension²",
        });
    }
    Ok((n.min(max).max(1) as u32, y as u32))
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct NormParams {
    rows: u32,
    n: u32,
    eps: f32,
    _pad: u32,
}

/// A prepared layer-norm dispatch over `rows` rows of `n`.
pub(crate) struct NormCall {
    pipeline: Arc<wgpu::ComputePipeline>,
    variant: ShaderVariant,
    params: wgpu::Buffer,
    groups: (u32, u32),
}

impl NormCall {
    pub(crate) fn new(
        ctx: &Context,
        rows: usize,
        n: usize,
        eps: f32,
        x: DType,
        y: DType,
    ) -> Result<NormCall> {
        if (x == DType::F16 || y == DType::F16) && !n.is_multiple_of(2) {
            return Err(Error::spec("hidden", n, "must be even for f16 storage"));
        }
        let variant = ShaderVariant::new("layer_norm.wgsl")
            .flag("X_F16", x == DType::F16)
            .flag("Y_F16", y == DType::F16);
        let p = NormParams {
            rows: u32_of("layer-norm rows", rows)?,
            n: u32_of("layer-norm width", n)?,
            eps,
            _pad: 0,
        };
        let (pipeline, params) = pipeline_and_params(
            ctx,
            &variant,
            "allocating layer-norm parameters",
            "wgattn norm params",
            &p,
        )?;
        Ok(NormCall {
            pipeline,
            variant,
            params,
            groups: grid(ctx, rows, "layer-norm rows")?,
        })
    }

    pub(crate) fn encode(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        x: &wgpu::Buffer,
        gamma: &wgpu::Buffer,
        beta: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) {
        let resource = |b: Binding| match b {
            Binding::Params => Some(self.params.as_entire_binding()),
            Binding::Input => Some(x.as_entire_binding()),
            Binding::Weight => Some(gamma.as_entire_binding()),
            Binding::Bias => Some(beta.as_entire_binding()),
            Binding::Out => Some(y.as_entire_binding()),
            _ => None,
        };
        dispatch(
            device,
            encoder,
            &self.pipeline,
            &self.variant,
            resource,
            self.groups,
            "wgattn layer norm",
        );
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct GatherParams {
    m: u32,
    n: u32,
    rows: u32,
    table_rows: u32,
    ids_len: u32,
    _pad: [u32; 3],
}

/// How a gather finds its table row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GatherBy {
    /// `aux[m]` (token or type ids).
    Ids,
    /// `m % rows + aux[ids_len + m / rows]` (positions with a per-batch offset).
    Positions { rows: usize, ids_len: usize },
}

/// A prepared gather-add dispatch: `Y[m, :] = X[m, :] + table[row(m), :]`.
pub(crate) struct GatherCall {
    pipeline: Arc<wgpu::ComputePipeline>,
    variant: ShaderVariant,
    params: wgpu::Buffer,
    groups: (u32, u32),
}

impl GatherCall {
    pub(crate) fn new(
        ctx: &Context,
        m: usize,
        n: usize,
        table_rows: usize,
        by: GatherBy,
        add: bool,
        y: DType,
    ) -> Result<GatherCall> {
        if y == DType::F16 && !n.is_multiple_of(2) {
            return Err(Error::spec("embed_dim", n, "must be even for f16 storage"));
        }
        let variant = ShaderVariant::new("layer_gather.wgsl")
            .flag("Y_F16", y == DType::F16)
            .flag("ADD", add)
            .flag("IDS", by == GatherBy::Ids);
        let (rows, ids_len) = match by {
            GatherBy::Ids => (1, 0),
            GatherBy::Positions { rows, ids_len } => (rows, ids_len),
        };
        let p = GatherParams {
            m: u32_of("gathered rows", m)?,
            n: u32_of("gathered width", n)?,
            rows: u32_of("rows per batch entry", rows.max(1))?,
            table_rows: u32_of("table rows", table_rows.max(1))?,
            ids_len: u32_of("ids", ids_len)?,
            _pad: [0; 3],
        };
        let (pipeline, params) = pipeline_and_params(
            ctx,
            &variant,
            "allocating gather parameters",
            "wgattn gather params",
            &p,
        )?;
        let per = if y == DType::F16 { 2 } else { 1 };
        let words = m * n / per;
        Ok(GatherCall {
            pipeline,
            variant,
            params,
            groups: grid(ctx, words.div_ceil(64), "gathered rows")?,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn encode(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        aux: &wgpu::Buffer,
        table: &wgpu::Buffer,
        x: Option<&wgpu::Buffer>,
        y: &wgpu::Buffer,
    ) {
        let resource = |b: Binding| match b {
            Binding::Params => Some(self.params.as_entire_binding()),
            Binding::Aux => Some(aux.as_entire_binding()),
            Binding::Weight => Some(table.as_entire_binding()),
            Binding::Input => x.map(|x| x.as_entire_binding()),
            Binding::Out => Some(y.as_entire_binding()),
            _ => None,
        };
        dispatch(
            device,
            encoder,
            &self.pipeline,
            &self.variant,
            resource,
            self.groups,
            "wgattn gather",
        );
    }
}

/// The compiled pipeline of `variant` and a uniform buffer holding `params`.
fn pipeline_and_params<T: bytemuck::Pod>(
    ctx: &Context,
    variant: &ShaderVariant,
    during: &'static str,
    label: &str,
    params: &T,
) -> Result<(Arc<wgpu::ComputePipeline>, wgpu::Buffer)> {
    let pipeline = ctx.pipeline(variant)?;
    let buffer = ctx.gpu_scope(during, || {
        init_buffer(
            ctx.device(),
            ctx.queue(),
            label,
            bytemuck::bytes_of(params),
            wgpu::BufferUsages::UNIFORM,
        )
    })?;
    Ok((pipeline, buffer))
}
