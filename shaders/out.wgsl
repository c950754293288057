// Output of the fused kernels: `o` in the layout of q (vec4 access with VEC4) and lse
// [B, Hq, Sq]. Needs `P: Params`, `Row` (rows.wgsl) and the constant D4.
#if VEC4
@group(0) @binding(5) var<storage, read_write> o: array<vec4<f32>>;
#else
@group(0) @binding(5) var<storage, read_write> o: array<f32>;
#endif
@group(0) @binding(6) var<storage, read_write> lse: array<f32>;

// Writes acc * inv as the output row and row_lse as its lse.
fn store_out(row: Row, acc: array<vec4<f32>, D4>, inv: f32, row_lse: f32) {
    let at = row.b * P.q_sb + row.h * P.q_sh + row.i * P.q_ss - P.o_shift;
    for (var d4 = 0u; d4 < D4; d4++) {
        let d = d4 * 4u;
        let x = acc[d4] * inv;
#if VEC4
        if (d < P.head_dim) {
            o[(at + d) / 4u] = x;
        }
#else
        for (var t = 0u; t < 4u; t++) {
            if (d + t < P.head_dim) {
                o[at + d + t] = x[t];
            }
        }
#endif
    }
    lse[lse_index(row) - P.lse_shift] = row_lse;
}
