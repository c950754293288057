// The projection kernel of the layers (src/planner/layer.rs, src/kernels/layer.rs): Y = X·Wᵀ + b
// with W stored [N, K] row-major (out_features × in_features, as torch.nn.Linear),
// register-tiled: a workgroup of 16×16 invocations computes a (16·TM)×64 tile of Y, each
// invocation TM rows × 4 columns, with the K dimension walked in steps of BK through workgroup
// memory. Arithmetic and accumulation are f32; X, W, the residual and Y may be f16 (flags X_F16,
// W_F16, Y_F16), read and written as pairs packed in u32 words, so no SHADER_F16 is needed.
//
// Gathers and scatters replace transposes: row m of X and Y is (b, s) = (m / rows, m % rows)
// and column c is (head, d) = (c / hd, c % hd), at element b·sb + head·sh + s·ss + d with each
// side's own strides, so X may be an attention output in bhsd and Y may be Q/K/V in bhsd or
// bshd, or rows of a KV cache (ROW_OFFSET: s + offsets[b]).
//
// Epilogue, in order: bias (BIAS), rotary position embedding (ROPE: the pair (2i, 2i+1) of
// each head's logical columns is rotated by the angle of position s + offsets[b] read from
// a cos/sin table; ROPE_HALF maps logical columns to the physical rotate-half order
// [0, R/2, 1, R/2+1, …] so that both pairings are the same rotation here), GELU (GELU, erf
// form), residual add (RESIDUAL, laid out like Y).
#param TM
#flag X_F16 W_F16 Y_F16 BIAS ROW_OFFSET ROPE ROPE_HALF GELU RESIDUAL DIRECT
// set below when per-batch offsets are bound
#flag OFFSETS

const BN: u32 = 64u;
const BK: u32 = 16u;
const BM: u32 = 16u * TM;

struct Lin {
    m: u32, n: u32, k: u32, rows: u32,
    x_hd: u32, x_sb: u32, x_sh: u32, x_ss: u32,
    y_hd: u32, y_sb: u32, y_sh: u32, y_ss: u32,
    // first row of W and first element of the bias (packed projections), rotary dims R,
    // positions in the cos/sin table
    w_row0: u32, b_off: u32, rot: u32, max_pos: u32,
}

@group(0) @binding(B_PARAMS) var<uniform> L: Lin;
#if X_F16
@group(0) @binding(B_INPUT) var<storage, read> xs: array<u32>;
#else
@group(0) @binding(B_INPUT) var<storage, read> xs: array<f32>;
#endif
#if W_F16
@group(0) @binding(B_WEIGHT) var<storage, read> ws: array<u32>;
#else
@group(0) @binding(B_WEIGHT) var<storage, read> ws: array<f32>;
#endif
#if BIAS
@group(0) @binding(B_BIAS) var<storage, read> bias: array<f32>;
#endif
#if ROW_OFFSET
#define OFFSETS
#endif
#if ROPE
#define OFFSETS
@group(0) @binding(B_TABLE) var<storage, read> table: array<vec2<f32>>;
#endif
#if OFFSETS
@group(0) @binding(B_AUX) var<storage, read> offsets: array<u32>;
#endif
#if Y_F16
@group(0) @binding(B_OUT) var<storage, read_write> ys: array<u32>;
#if RESIDUAL
@group(0) @binding(B_RESIDUAL) var<storage, read> res: array<u32>;
#endif
#else
@group(0) @binding(B_OUT) var<storage, read_write> ys: array<f32>;
#if RESIDUAL
@group(0) @binding(B_RESIDUAL) var<storage, read> res: array<f32>;
#endif
#endif

#if !DIRECT
var<workgroup> xt: array<f32, 256u * TM>;
var<workgroup> wt: array<vec4<f32>, 256u>;
#endif

fn load_x(i: u32) -> f32 {
#if X_F16
    return unpack2x16float(xs[i >> 1u])[i & 1u];
#else
    return xs[i];
#endif
}

fn load_w(i: u32) -> f32 {
#if W_F16
    return unpack2x16float(ws[i >> 1u])[i & 1u];
#else
    return ws[i];
#endif
}

// The physical column (within its head) of logical column c.
fn physical(c: u32) -> u32 {
#if ROPE_HALF
    if (c < L.rot) {
        return (c >> 1u) + (c & 1u) * (L.rot >> 1u);
    }
#endif
    return c;
}

// The physical column of Y / row of W of logical column c.
fn w_row(c: u32) -> u32 {
    return (c / L.y_hd) * L.y_hd + physical(c % L.y_hd);
}

// Element index of Y for row m and physical column p.
fn y_index(m: u32, p: u32) -> u32 {
    let b = m / L.rows;
    var s = m % L.rows;
#if ROW_OFFSET
    s += offsets[b];
#endif
    return b * L.y_sb + (p / L.y_hd) * L.y_sh + s * L.y_ss + p % L.y_hd;
}

// erf by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
fn erf(x: f32) -> f32 {
    let a = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
        + 0.254829592) * t * exp(-a * a);
    return select(-y, y, x >= 0.0);
}

fn epilogue(m: u32, c0: u32, acc: vec4<f32>) {
    if (m >= L.m) {
        return;
    }
    var v = acc;
    var p: vec4<u32>;
    for (var j = 0u; j < 4u; j += 1u) {
        p[j] = w_row(min(c0 + j, L.n - 1u));
#if BIAS
        v[j] += bias[L.b_off + p[j]];
#endif
    }
#if ROPE
    // Logical pairs (c, c + 1), c even, never straddle a head (head_dim is even).
    var pos = m % L.rows + offsets[m / L.rows];
    pos = min(pos, L.max_pos - 1u);
    let half = L.rot >> 1u;
    for (var j = 0u; j < 4u; j += 2u) {
        let hd = (c0 + j) % L.y_hd;
        if (hd < L.rot) {
            let cs = table[pos * half + (hd >> 1u)];
            let a = v[j];
            let b = v[j + 1u];
            v[j] = a * cs.x - b * cs.y;
            v[j + 1u] = b * cs.x + a * cs.y;
        }
    }
#endif
#if GELU
    v = 0.5 * v * (vec4<f32>(1.0) + vec4<f32>(erf(v.x * 0.70710678118654752), erf(v.y * 0.70710678118654752),
        erf(v.z * 0.70710678118654752), erf(v.w * 0.70710678118654752)));
#endif
#if Y_F16
    // Pairs of physically adjacent columns share a u32 word: (0, 1), (2, 3) in logical order,
    // (0, 2), (1, 3) in the rotate-half order (the host checks the alignment this needs).
#if ROPE_HALF
    let pairs = select(vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(0u, 2u, 1u, 3u), c0 % L.y_hd < L.rot);
#else
    let pairs = vec4<u32>(0u, 1u, 2u, 3u);
#endif
    for (var j = 0u; j < 4u; j += 2u) {
        let lo = pairs[j];
        let hi = pairs[j + 1u];
        if (c0 + max(lo, hi) < L.n) {
            let w = y_index(m, p[lo]) >> 1u;
            var pair = vec2<f32>(v[lo], v[hi]);
#if RESIDUAL
            pair += unpack2x16float(res[w]);
#endif
            ys[w] = pack2x16float(pair);
        }
    }
#else
    for (var j = 0u; j < 4u; j += 1u) {
        if (c0 + j < L.n) {
            let i = y_index(m, p[j]);
#if RESIDUAL
            ys[i] = v[j] + res[i];
#else
            ys[i] = v[j];
#endif
        }
    }
#endif
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m0 = wg.y * BM;
    let n0 = wg.x * BN;
#for r in 0..TM
    var acc{r} = vec4<f32>(0.0);
#endfor
#if DIRECT
    // CPU adapters (llvmpipe): no workgroup memory or barriers; each invocation reads its TM
    // rows of X and 4 rows of W straight from storage. Out-of-range rows and columns read
    // clamped indices and are dropped by the epilogue.
    let c0 = n0 + lid.x * 4u;
    var wb: vec4<u32>;
    for (var j = 0u; j < 4u; j += 1u) {
        wb[j] = (L.w_row0 + w_row(min(c0 + j, L.n - 1u))) * L.k;
    }
#for r in 0..TM
    let row{r} = min(m0 + lid.y * TM + {r}u, L.m - 1u);
    let xb{r} = (row{r} / L.rows) * L.x_sb + (row{r} % L.rows) * L.x_ss;
#endfor
    // The input column k is (head k / x_hd, d k % x_hd): walked without divisions.
    var xo = 0u;
    var kd = 0u;
    for (var k = 0u; k < L.k; k += 1u) {
        let w = vec4<f32>(load_w(wb.x + k), load_w(wb.y + k), load_w(wb.z + k), load_w(wb.w + k));
#for r in 0..TM
        acc{r} += load_x(xb{r} + xo) * w;
#endfor
        kd += 1u;
        xo += 1u;
        if (kd == L.x_hd) {
            kd = 0u;
            xo += L.x_sh - L.x_hd;
        }
    }
#else
    let flat = lid.y * 16u + lid.x;
    for (var k0 = 0u; k0 < L.k; k0 += BK) {
        // X tile: BM rows × BK, element e = (row e / BK, k e % BK); gathered through the
        // input's (batch, head, row) strides.
        for (var j = 0u; j < TM; j += 1u) {
            let e = flat + 256u * j;
            let ml = e / BK;
            let kl = e % BK;
            let m = m0 + ml;
            let k = k0 + kl;
            var x = 0.0;
            if (m < L.m && k < L.k) {
                let b = m / L.rows;
                let s = m % L.rows;
                x = load_x(b * L.x_sb + (k / L.x_hd) * L.x_sh + s * L.x_ss + k % L.x_hd);
            }
            xt[kl * BM + ml] = x;
        }
        // W tile: BN logical columns × BK, stored k-major as vec4s of 4 columns.
        for (var j = 0u; j < 4u; j += 1u) {
            let e = flat + 256u * j;
            let nl = e / BK;
            let kl = e % BK;
            let c = n0 + nl;
            let k = k0 + kl;
            var w = 0.0;
            if (c < L.n && k < L.k) {
                w = load_w((L.w_row0 + w_row(c)) * L.k + k);
            }
            wt[kl * 16u + (nl >> 2u)][nl & 3u] = w;
        }
        workgroupBarrier();
        for (var kl = 0u; kl < BK; kl += 1u) {
            let w = wt[kl * 16u + lid.x];
#for r in 0..TM
            acc{r} += xt[kl * BM + lid.y * TM + {r}u] * w;
#endfor
        }
        workgroupBarrier();
    }
#endif
#for r in 0..TM
    epilogue(m0 + lid.y * TM + {r}u, n0 + lid.x * 4u, acc{r});
#endfor
}
