// Layer normalisation of the rows of X [rows, n] (src/planner/layer.rs, src/kernels/layer.rs):
// one workgroup of 64 invocations per row computes the mean and the (biased) variance in f32 by
// a two-pass reduction, then y = (x − mean) / sqrt(var + eps) · gamma + beta. X and Y may be f16
// (X_F16, Y_F16: pairs packed in u32 words; n is even then); gamma and beta are f32.
#flag X_F16 Y_F16

struct Norm {
    rows: u32, n: u32, eps: f32, _pad: u32,
}

@group(0) @binding(B_PARAMS) var<uniform> N: Norm;
#if X_F16
@group(0) @binding(B_INPUT) var<storage, read> xs: array<u32>;
#else
@group(0) @binding(B_INPUT) var<storage, read> xs: array<f32>;
#endif
@group(0) @binding(B_WEIGHT) var<storage, read> gamma: array<f32>;
@group(0) @binding(B_BIAS) var<storage, read> beta: array<f32>;
#if Y_F16
@group(0) @binding(B_OUT) var<storage, read_write> ys: array<u32>;
#else
@group(0) @binding(B_OUT) var<storage, read_write> ys: array<f32>;
#endif

var<workgroup> part: array<f32, 64>;

fn load(i: u32) -> f32 {
#if X_F16
    return unpack2x16float(xs[i >> 1u])[i & 1u];
#else
    return xs[i];
#endif
}

// The sum of every invocation's `x`, in all of them.
fn total(t: u32, x: f32) -> f32 {
    part[t] = x;
    workgroupBarrier();
    for (var w = 32u; w > 0u; w >>= 1u) {
        if (t < w) {
            part[t] += part[t + w];
        }
        workgroupBarrier();
    }
    let s = part[0];
    workgroupBarrier();
    return s;
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wg.x + wg.y * nwg.x;
    // Uniform control flow: every invocation of a workgroup takes the same branch.
    if (row >= N.rows) {
        return;
    }
    let t = lid.x;
    let base = row * N.n;
    var s = 0.0;
    for (var i = t; i < N.n; i += 64u) {
        s += load(base + i);
    }
    let mean = total(t, s) / f32(N.n);
    var q = 0.0;
    for (var i = t; i < N.n; i += 64u) {
        let d = load(base + i) - mean;
        q += d * d;
    }
    let inv = inverseSqrt(total(t, q) / f32(N.n) + N.eps);
#if Y_F16
    for (var i = 2u * t; i < N.n; i += 128u) {
        let a = (load(base + i) - mean) * inv * gamma[i] + beta[i];
        let b = (load(base + i + 1u) - mean) * inv * gamma[i + 1u] + beta[i + 1u];
        ys[(base + i) >> 1u] = pack2x16float(vec2<f32>(a, b));
    }
#else
    for (var i = t; i < N.n; i += 64u) {
        ys[base + i] = (load(base + i) - mean) * inv * gamma[i] + beta[i];
    }
#endif
}
