//! The backward pass's launcher (`shaders/backward/`): its parameters, one step per pass
//! (pipeline, uniform, grid), the row statistics and the aux buffer; the caller's buffers
//! are bound through a function of the plan's. What runs (compile keys, grids, the mode) is
//! the planner's (`planner::backward`).

use std::sync::Arc;

use super::bind;
use super::params::{SpecParams, aux_words, params_struct};
use crate::error::Result;
use crate::gpu::{Runtime, init_buffer};
use crate::planner::backward::{self as backward_pass, Pass};
use crate::planner::{BackwardMode, Storage};
use crate::shader::{Binding, ShaderVariant};
use crate::spec::AttentionSpec;

params_struct! {
    /// The backward kernels' parameters: the spec's fields, then the backward's own; mirrors
    /// `struct Params` in `shaders/backward/backward.inc.wgsl`.
    pub(crate) struct BwdParams {
        spec: SpecParams,
        db_nb: u32,
        db_nh: u32,
        items: u32,
        /// Always 0: OR-ed into the two-float logit sums' intermediates so that the shader
        /// compiler cannot re-associate them away (see shaders/backward/backward.inc.wgsl).
        zero: u32,
    }
}

/// The parameters of `pass` for `spec`; `alibi_at` is where the slopes start in the aux
/// buffer.
fn bwd_params(spec: &AttentionSpec, pass: Pass, alibi_at: u32) -> BwdParams {
    let [db_nb, db_nh, _, _] = spec
        .bias
        .map_or([1, 1, 0, 0], |b| b.shape(spec))
        .map(|x| x as u32);
    BwdParams {
        spec: SpecParams::of(spec, alibi_at),
        db_nb,
        db_nh,
        items: backward_pass::items(spec, pass) as u32,
        zero: 0,
    }
}

struct Step {
    pass: Pass,
    shader: ShaderVariant,
    pipeline: Arc<wgpu::ComputePipeline>,
    uniform: wgpu::Buffer,
    groups: (u32, u32, u32),
}

/// The compiled passes of a backward plan and the buffers they own: `4·B·Hq·Sq` f32 of row
/// statistics, the aux buffer and one uniform per pass — no score matrix.
pub(crate) struct Backward {
    steps: Vec<Step>,
    aux: wgpu::Buffer,
    stats: wgpu::Buffer,
}

impl Backward {
    /// The passes of `spec` in `mode`: the pre-pass, dK/dV, dQ, and dbias when the spec has
    /// a bias. `stats_bytes` is the size of the row statistics.
    pub(crate) fn new(
        rt: &Runtime,
        spec: &AttentionSpec,
        mode: BackwardMode,
        stats_bytes: u64,
    ) -> Result<Self> {
        let storage = Storage::of(spec, rt.caps());
        let mut passes = vec![Pass::Prep, Pass::Dkv, Pass::Dq];
        if spec.bias.is_some() {
            passes.push(Pass::Dbias);
        }
        let (words, alibi_at) = aux_words(spec);
        let max_x = rt.limits().max_workgroups_per_dim.min(65535);
        let mut steps = Vec::new();
        for pass in passes {
            let shader =
                backward_pass::variant(pass, spec, storage, mode == BackwardMode::Recompute);
            let pipeline = rt.pipeline(&shader)?;
            let p = bwd_params(spec, pass, alibi_at);
            let uniform = rt.gpu_scope("allocating backward parameters", || {
                init_buffer(
                    rt.device(),
                    rt.queue(),
                    "wgattn backward params",
                    bytemuck::bytes_of(&p),
                    wgpu::BufferUsages::UNIFORM,
                )
            })?;
            steps.push(Step {
                pass,
                shader,
                pipeline,
                uniform,
                groups: backward_pass::groups(spec, pass, max_x),
            });
        }
        let (aux, stats) = rt.gpu_scope("allocating backward buffers", || {
            let aux = init_buffer(
                rt.device(),
                rt.queue(),
                "wgattn backward aux",
                bytemuck::cast_slice(&words),
                wgpu::BufferUsages::STORAGE,
            );
            let stats = rt.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgattn backward row statistics"),
                size: stats_bytes.max(8),
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            (aux, stats)
        })?;
        Ok(Backward { steps, aux, stats })
    }

    /// The shader variants run, in order (the dbias pass last, when the spec has a bias).
    pub(crate) fn shaders(&self) -> impl Iterator<Item = &ShaderVariant> {
        self.steps.iter().map(|s| &s.shader)
    }

    /// Records the passes (dbias only `with_dbias`); `caller` gives the caller's buffers
    /// (q, k, v, out, lse, dO, the gradients, bias, mask) as bindings.
    pub(crate) fn encode<'a>(
        &'a self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        with_dbias: bool,
        caller: impl Fn(Binding) -> Option<wgpu::BindingResource<'a>>,
    ) {
        let groups: Vec<(&Step, wgpu::BindGroup)> = self
            .steps
            .iter()
            .filter(|s| s.pass != Pass::Dbias || with_dbias)
            .map(|step| {
                let group = bind::group(
                    device,
                    "wgattn backward",
                    &step.pipeline,
                    &step.shader,
                    |b| match b {
                        Binding::Params => Some(step.uniform.as_entire_binding()),
                        Binding::Scratch => Some(self.stats.as_entire_binding()),
                        Binding::Aux => Some(self.aux.as_entire_binding()),
                        b => caller(b),
                    },
                );
                (step, group)
            })
            .collect();
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("wgattn backward"),
            timestamp_writes: None,
        });
        for (step, group) in &groups {
            pass.set_pipeline(&step.pipeline);
            pass.set_bind_group(0, group, &[]);
            pass.dispatch_workgroups(step.groups.0, step.groups.1, step.groups.2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::params::{flattened, wgsl_params};
    use super::*;

    /// The Rust `BwdParams` and the backward kernels' WGSL `struct Params` agree field by
    /// field, and share the forward's header.
    #[test]
    fn backward_params_layout_matches_wgsl() {
        let spec = AttentionSpec::new(1, 1, 1, 4, 4, 8);
        let source = backward_pass::variant(Pass::Dq, &spec, Storage::F32, true)
            .render()
            .expect("renders");
        let (wgsl, span) = wgsl_params(&source);
        assert_eq!(flattened(BwdParams::FIELDS), wgsl);
        assert_eq!(std::mem::size_of::<BwdParams>() as u32, span);
        assert_eq!(span % 16, 0);
        assert_eq!(
            wgsl[..SpecParams::FIELDS.len()],
            flattened(super::super::params::Params::FIELDS)[..SpecParams::FIELDS.len()]
        );
    }
}
