// The "application" side of examples/embed_in_app.rs: one pass that writes Q, K and V on the
// GPU, and one pass that reads wgattn's output (a per-row checksum), as a real app's own
// passes would around the attention.

@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;

// The value the app writes at flat index i of tensor t (0 = q, 1 = k, 2 = v).
fn pattern(t: u32, i: u32) -> f32 {
    return sin(f32(i) * (0.37 + 0.11 * f32(t)) + f32(t));
}

@compute @workgroup_size(64)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 64u;
    if (i < arrayLength(&q)) { q[i] = pattern(0u, i); }
    if (i < arrayLength(&k)) { k[i] = pattern(1u, i); }
    if (i < arrayLength(&v)) { v[i] = pattern(2u, i); }
}

struct Dims {
    rows: u32,
    head_dim: u32,
}

@group(0) @binding(3) var<uniform> dims: Dims;
@group(0) @binding(4) var<storage, read> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> checksum: array<f32>;

// checksum[row] = Σ_d out[row, d] · (d + 1), for bhsd rows.
@compute @workgroup_size(64)
fn consume(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.x;
    if (row >= dims.rows) { return; }
    var s = 0.0;
    for (var d = 0u; d < dims.head_dim; d++) {
        s += out[row * dims.head_dim + d] * f32(d + 1u);
    }
    checksum[row] = s;
}
