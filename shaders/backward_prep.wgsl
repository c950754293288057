// Backward pre-pass: D[r] = Σ_d dO[r, d]·O[r, d] for every query row r = (b·Hq + h)·Sq + i.
// One invocation per row.
@group(0) @binding(5) var<storage, read> o: Store;
@group(0) @binding(9) var<storage, read_write> dd: array<f32>;
#define USE_dout
#include "backward_common.wgsl"

fn ld_o(i: u32) -> f32 {
#if PACKED
    return unpack2x16float(o[i >> 1u])[i & 1u];
#else
    return f32(o[i]);
#endif
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = item(gid, nwg);
    if (r >= P.items) {
        return;
    }
    let i = r % P.seq_q;
    let h = (r / P.seq_q) % P.q_heads;
    let b = r / (P.seq_q * P.q_heads);
    let at = q_at(b, h, i);
    var acc = 0.0;
    for (var t = 0u; t < P.head_dim; t++) {
        acc += ld_do(at + t) * ld_o(at + t);
    }
    dd[r] = acc;
}
