// f32 -> f16 pairs packed in u32, for adapters without SHADER_F16: the kernels write an f32
// output, this pass converts it into the caller's f16 buffer. One invocation per u32 word, so
// rows of odd head_dim (whose f16 values share words) never race.
struct Pack {
    words: u32,
    elems: u32,
}

@group(0) @binding(B_PARAMS) var<uniform> K: Pack;
@group(0) @binding(B_SCRATCH) var<storage, read> src: array<f32>;
@group(0) @binding(B_OUT) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let w = gid.x + gid.y * nwg.x * 64u;
    if (w >= K.words) {
        return;
    }
    let e = 2u * w;
    let hi = select(0.0, src[min(e + 1u, K.elems - 1u)], e + 1u < K.elems);
    dst[w] = pack2x16float(vec2<f32>(src[e], hi));
}
