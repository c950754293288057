// Rows gathered from a table and added (src/planner/layer.rs, src/kernels/layer.rs): Y[m, :] =
// X[m, :] (ADD, else 0) + table[index(m), :] with index(m) = ids[m] (IDS: token or type ids) or
// the position (m % rows) + offsets[m / rows] (positional encodings; offsets in the same buffer
// after the first `ids_len` words). The table is f32; X and Y are f32, or f16 pairs packed in u32
// (Y_F16; n is even then), one invocation per output word.
#flag Y_F16 ADD IDS

struct Gather {
    m: u32, n: u32, rows: u32, table_rows: u32,
    ids_len: u32, _p0: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(B_PARAMS) var<uniform> G: Gather;
@group(0) @binding(B_AUX) var<storage, read> aux: array<u32>;
@group(0) @binding(B_WEIGHT) var<storage, read> table: array<f32>;
#if Y_F16
#if ADD
@group(0) @binding(B_INPUT) var<storage, read> xs: array<u32>;
#endif
@group(0) @binding(B_OUT) var<storage, read_write> ys: array<u32>;
const PER: u32 = 2u;
#else
#if ADD
@group(0) @binding(B_INPUT) var<storage, read> xs: array<f32>;
#endif
@group(0) @binding(B_OUT) var<storage, read_write> ys: array<f32>;
const PER: u32 = 1u;
#endif

fn row_of(m: u32) -> u32 {
#if IDS
    let r = aux[m];
#else
    let r = m % G.rows + aux[G.ids_len + m / G.rows];
#endif
    return min(r, G.table_rows - 1u);
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let w = gid.x + gid.y * nwg.x * 64u;
    let words_per_row = G.n / PER;
    if (w >= G.m * words_per_row) {
        return;
    }
    let m = w / words_per_row;
    let c = (w % words_per_row) * PER;
    let t = row_of(m) * G.n + c;
#if Y_F16
    var v = vec2<f32>(table[t], table[t + 1u]);
#if ADD
    v += unpack2x16float(xs[w]);
#endif
    ys[w] = pack2x16float(v);
#else
    var v = table[t];
#if ADD
    v += xs[w];
#endif
    ys[w] = v;
#endif
}
