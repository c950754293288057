// Output of the fused kernels: `o` (binding 5, via elem.wgsl, written with st4_out) in the
// layout of q, and lse (binding 6) [B, Hq, Sq].
@group(0) @binding(6) var<storage, read_write> lse: array<f32>;

