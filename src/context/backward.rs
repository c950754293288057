//! The host path of the backward pass: slices in, [`Grads`] back.

use super::Context;
use crate::error::{Error, Result};
use crate::plan::{BackwardBuffers, BackwardSizes};
use crate::planner::BackwardMode;
use crate::spec::{AttentionSpec, DType, Grads, Inputs, Tensor, gpu_bytes, mask_bytes};

impl Context {
    /// Gradients of attention on the GPU: `inputs` as for [`Context::attention_with`], `out`
    /// and `lse` the forward's results for them (lse `[B, Hq, Sq]`, −∞ for fully masked rows),
    /// `d_out` the upstream gradient (shape and layout of q). With dtype f16, q, k, v, out and
    /// d_out are rounded to f16 first; gradients are f32. `dbias` is computed when the spec
    /// declares a bias. The probability matrix is never formed: P is recomputed from q, k and
    /// lse block by block.
    ///
    /// Runs in the default [`BackwardMode`] (row statistics recomputed for accuracy; `out`
    /// and `lse` are checked but not read); see [`Context::attention_backward_mode`].
    pub fn attention_backward<'a>(
        &self,
        spec: &AttentionSpec,
        inputs: &Inputs,
        out: impl Into<Tensor<'a>>,
        lse: &[f32],
        d_out: impl Into<Tensor<'a>>,
    ) -> Result<Grads> {
        self.attention_backward_mode(spec, inputs, out, lse, d_out, BackwardMode::default())
    }

    /// [`Context::attention_backward`] in the given mode.
    pub fn attention_backward_mode<'a>(
        &self,
        spec: &AttentionSpec,
        inputs: &Inputs,
        out: impl Into<Tensor<'a>>,
        lse: &[f32],
        d_out: impl Into<Tensor<'a>>,
        mode: BackwardMode,
    ) -> Result<Grads> {
        let (out, d_out) = (out.into(), d_out.into());
        spec.validate(self.limits())?;
        spec.check_inputs(inputs)?;
        check_forward_results(spec, &out, lse)?;
        spec.check_d_out(&d_out)?;
        let plan = self.plan_backward_with(spec, mode)?;
        let sizes = BackwardSizes::of(spec);
        use wgpu::BufferUsages as U;
        let device = self.device();
        let make = |label: &str, size: u64, usage: U| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: size.max(4),
                usage,
                mapped_at_creation: false,
            })
        };
        let input = U::STORAGE | U::COPY_DST;
        let output = U::STORAGE | U::COPY_SRC;
        let read = U::MAP_READ | U::COPY_DST;
        let has_bias = spec.bias.is_some();
        let bufs = self.gpu.gpu_scope("allocating backward buffers", || {
            let b = |l, s| make(l, s, input);
            (
                [
                    b("wgattn q", sizes.q),
                    b("wgattn k", sizes.kv),
                    b("wgattn v", sizes.kv),
                    b("wgattn out", sizes.q),
                    b("wgattn lse", sizes.lse),
                    b("wgattn d_out", sizes.q),
                ],
                [
                    make("wgattn dq", sizes.dq, output),
                    make("wgattn dk", sizes.dkv, output),
                    make("wgattn dv", sizes.dkv, output),
                    make("wgattn dbias", sizes.dbias, output),
                ],
                [
                    make("wgattn read dq", sizes.dq, read),
                    make("wgattn read dk", sizes.dkv, read),
                    make("wgattn read dv", sizes.dkv, read),
                    make("wgattn read dbias", sizes.dbias, read),
                ],
                has_bias.then(|| b("wgattn bias", sizes.bias)),
                spec.mask.map(|_| b("wgattn mask", sizes.mask)),
            )
        })?;
        let (ins, grads, reads, bias, mask) = &bufs;
        let grad_sizes = [sizes.dq, sizes.dkv, sizes.dkv, sizes.dbias];
        self.gpu
            .gpu_scope("running the backward pass", || -> Result<()> {
                let queue = self.queue();
                queue.write_buffer(&ins[0], 0, &gpu_bytes(&inputs.q, spec.dtype));
                queue.write_buffer(&ins[1], 0, &gpu_bytes(&inputs.k, spec.dtype));
                queue.write_buffer(&ins[2], 0, &gpu_bytes(&inputs.v, spec.dtype));
                queue.write_buffer(&ins[3], 0, &gpu_bytes(&out, spec.dtype));
                queue.write_buffer(&ins[4], 0, bytemuck::cast_slice(lse));
                queue.write_buffer(&ins[5], 0, &gpu_bytes(&d_out, spec.dtype));
                if let (Some(buf), Some(data)) = (bias, &inputs.bias) {
                    queue.write_buffer(buf, 0, &gpu_bytes(data, DType::F32));
                }
                if let (Some(buf), Some(data)) = (mask, inputs.mask) {
                    queue.write_buffer(buf, 0, &mask_bytes(data));
                }
                let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("wgattn backward"),
                });
                plan.encode(
                    &mut enc,
                    &BackwardBuffers::from_sets(ins, grads, bias.as_ref(), mask.as_ref(), has_bias),
                )?;
                for ((g, r), &size) in grads.iter().zip(reads).zip(&grad_sizes) {
                    if size > 0 {
                        enc.copy_buffer_to_buffer(g, 0, r, 0, size);
                    }
                }
                queue.submit([enc.finish()]);
                Ok(())
            })??;
        let floats = |i: usize| -> Result<Vec<f32>> {
            Ok(bytemuck::pod_collect_to_vec(
                &self.gpu.read_buffer(&reads[i], grad_sizes[i])?,
            ))
        };
        Ok(Grads {
            dq: floats(0)?,
            dk: floats(1)?,
            dv: floats(2)?,
            dbias: if has_bias { Some(floats(3)?) } else { None },
        })
    }
}

/// Checks the forward's `out` and `lse` given to the backward: lengths, out finite, lse not
/// NaN or +∞ (−∞ marks a fully masked row).
fn check_forward_results(spec: &AttentionSpec, out: &Tensor, lse: &[f32]) -> Result<()> {
    let shape = format!("{:?} in layout {}", spec.q_shape(), spec.layout.name());
    if out.len() != spec.q_len() {
        return Err(Error::InputLength {
            tensor: "out",
            expected: spec.q_len(),
            got: out.len(),
            shape,
        });
    }
    if lse.len() != spec.lse_len() {
        return Err(Error::InputLength {
            tensor: "lse",
            expected: spec.lse_len(),
            got: lse.len(),
            shape: format!("[{}, {}, {}]", spec.batch, spec.q_heads, spec.seq_q),
        });
    }
    let values = out.to_f32();
    if let Some(index) = values.iter().position(|x| !x.is_finite()) {
        return Err(Error::NonFinite {
            tensor: "out",
            index,
            value: values[index],
        });
    }
    if let Some(index) = lse.iter().position(|x| x.is_nan() || *x == f32::INFINITY) {
        return Err(Error::NonFinite {
            tensor: "lse",
            index,
            value: lse[index],
        });
    }
    Ok(())
}
