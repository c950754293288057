//! The layers' kernels' launchers (`shaders/layer/`): the register-tiled projection, layer
//! normalisation and the row gather. Each call is prepared once (pipeline and uniform
//! parameters) and recorded into an encoder with the caller's buffers. What runs (the shapes,
//! tile rows, direct loads, compile keys) is the planner's (`planner::layer`).

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use super::bind;
use crate::error::{Error, Result};
use crate::gpu::{Runtime, init_buffer};
use crate::planner::layer::{
    GatherBy, LinearShape, block_rows, gather_shader, linear_shader, norm_shader,
};
use crate::shader::{Binding, Flag, ShaderVariant};
use crate::spec::DType;

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
    pub(crate) fn new(rt: &Runtime, s: &LinearShape) -> Result<LinearCall> {
        let variant = linear_shader(s, rt.caps())?;
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
            rt,
            &variant,
            "allocating projection parameters",
            "wgattn linear params",
            &p,
        )?;
        let bm = block_rows(s.m);
        let gx = u32_of("projection workgroups", s.n.div_ceil(64))?;
        let gy = u32_of("projection workgroups", s.m.div_ceil(bm))?;
        let max = rt.limits().max_workgroups_per_dim;
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
        self.variant.has(Flag::RESIDUAL)
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
    let group = bind::group(device, label, pipeline, variant, resource);
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some(label),
        timestamp_writes: None,
    });
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, &group, &[]);
    pass.dispatch_workgroups(groups.0, groups.1, 1);
}

/// Splits `n` workgroups over x and y within the per-dimension limit.
fn grid(rt: &Runtime, n: usize, what: &str) -> Result<(u32, u32)> {
    let max = rt.limits().max_workgroups_per_dim.max(1) as usize;
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
        rt: &Runtime,
        rows: usize,
        n: usize,
        eps: f32,
        x: DType,
        y: DType,
    ) -> Result<NormCall> {
        if (x == DType::F16 || y == DType::F16) && !n.is_multiple_of(2) {
            return Err(Error::spec("hidden", n, "must be even for f16 storage"));
        }
        let variant = norm_shader(x == DType::F16, y == DType::F16);
        let p = NormParams {
            rows: u32_of("layer-norm rows", rows)?,
            n: u32_of("layer-norm width", n)?,
            eps,
            _pad: 0,
        };
        let (pipeline, params) = pipeline_and_params(
            rt,
            &variant,
            "allocating layer-norm parameters",
            "wgattn norm params",
            &p,
        )?;
        Ok(NormCall {
            pipeline,
            variant,
            params,
            groups: grid(rt, rows, "layer-norm rows")?,
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

/// A prepared gather-add dispatch: `Y[m, :] = X[m, :] + table[row(m), :]`.
pub(crate) struct GatherCall {
    pipeline: Arc<wgpu::ComputePipeline>,
    variant: ShaderVariant,
    params: wgpu::Buffer,
    groups: (u32, u32),
}

impl GatherCall {
    pub(crate) fn new(
        rt: &Runtime,
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
        let variant = gather_shader(y == DType::F16, add, by == GatherBy::Ids);
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
            rt,
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
            groups: grid(rt, words.div_ceil(64), "gathered rows")?,
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
    rt: &Runtime,
    variant: &ShaderVariant,
    during: &'static str,
    label: &str,
    params: &T,
) -> Result<(Arc<wgpu::ComputePipeline>, wgpu::Buffer)> {
    let pipeline = rt.pipeline(variant)?;
    let buffer = rt.gpu_scope(during, || {
        init_buffer(
            rt.device(),
            rt.queue(),
            label,
            bytemuck::bytes_of(params),
            wgpu::BufferUsages::UNIFORM,
        )
    })?;
    Ok((pipeline, buffer))
}
