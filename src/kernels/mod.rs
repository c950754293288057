//! The kernels' launchers, a module per kernel family, on the GPU runtime: each builds its
//! pipelines, uniform parameters and scratch once (at plan time) from the planner's
//! decision, and records its dispatches into a caller's encoder. What each family runs —
//! compile keys, chunks, grids — is decided in the planner's module of the same name.

pub(crate) mod backward;
pub(crate) mod bind;
pub(crate) mod fused;
pub(crate) mod layer;
pub(crate) mod pack;
pub(crate) mod params;
pub(crate) mod three_pass;

use crate::planner::chunks::Chunk;
use crate::shader::Binding;

/// What the forward kernels bind: the caller's buffers, with plan-owned stand-ins where
/// needed (lse scratch, the f32 output of packed f16).
pub(crate) struct Targets<'a> {
    pub q: &'a wgpu::Buffer,
    pub k: &'a wgpu::Buffer,
    pub v: &'a wgpu::Buffer,
    /// Where the kernels write out (the f32 scratch when f16 is packed).
    pub out: &'a wgpu::Buffer,
    pub lse: &'a wgpu::Buffer,
    pub weights: Option<&'a wgpu::Buffer>,
    pub bias: Option<&'a wgpu::Buffer>,
    pub mask: Option<&'a wgpu::Buffer>,
}

impl<'a> Targets<'a> {
    /// The tensor of binding `b` (q, k, v, out, lse, bias or mask) over the window `chunk`
    /// binds of it; `None` for the other bindings.
    pub(crate) fn window(&self, chunk: &Chunk, b: Binding) -> Option<wgpu::BindingResource<'a>> {
        let (window, buffer) = match b {
            Binding::Q => (chunk.q, self.q),
            Binding::K => (chunk.kv, self.k),
            Binding::V => (chunk.kv, self.v),
            Binding::Out => (chunk.out, self.out),
            Binding::Lse => (chunk.lse, self.lse),
            Binding::Bias => (chunk.bias?, self.bias?),
            Binding::Mask => (chunk.mask?, self.mask?),
            _ => return None,
        };
        Some(bind::window(&window, buffer))
    }
}
