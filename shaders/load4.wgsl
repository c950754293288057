// q, k, v bindings 1..3 of the fused kernels and vec4 loads from them: elements d..d+3 of the
// row starting at element `at`, zero past head_dim. Needs `P: Params`.
#if VEC4
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;

fn load4_q(at: u32, d: u32) -> vec4<f32> {
    return select(vec4<f32>(0.0), q[(at + d) / 4u], d < P.head_dim);
}
fn load4_k(at: u32, d: u32) -> vec4<f32> {
    return select(vec4<f32>(0.0), k[(at + d) / 4u], d < P.head_dim);
}
fn load4_v(at: u32, d: u32) -> vec4<f32> {
    return select(vec4<f32>(0.0), v[(at + d) / 4u], d < P.head_dim);
}
#else
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;

fn load4_q(at: u32, d: u32) -> vec4<f32> {
    let hd = P.head_dim;
    return vec4<f32>(select(0.0, q[at + d], d < hd), select(0.0, q[at + d + 1u], d + 1u < hd),
                     select(0.0, q[at + d + 2u], d + 2u < hd), select(0.0, q[at + d + 3u], d + 3u < hd));
}
fn load4_k(at: u32, d: u32) -> vec4<f32> {
    let hd = P.head_dim;
    return vec4<f32>(select(0.0, k[at + d], d < hd), select(0.0, k[at + d + 1u], d + 1u < hd),
                     select(0.0, k[at + d + 2u], d + 2u < hd), select(0.0, k[at + d + 3u], d + 3u < hd));
}
fn load4_v(at: u32, d: u32) -> vec4<f32> {
    let hd = P.head_dim;
    return vec4<f32>(select(0.0, v[at + d], d < hd), select(0.0, v[at + d + 1u], d + 1u < hd),
                     select(0.0, v[at + d + 2u], d + 2u < hd), select(0.0, v[at + d + 3u], d + 3u < hd));
}
#endif
