// Output of the fused kernels: `o` (B_OUT, via common/elem.inc.wgsl, written with st4_out) in the
// layout of q, and lse (B_LSE) [B, Hq, Sq].
@group(0) @binding(B_LSE) var<storage, read_write> lse: array<f32>;

