// Output of the fused kernels: `o` (binding 5, via elem.wgsl) in the layout of q and lse
// (binding 6) [B, Hq, Sq]. Needs `P`, `Row` (rows.wgsl), D4 and `#define USE_out`.
@group(0) @binding(6) var<storage, read_write> lse: array<f32>;

// Writes acc * inv as the output row and row_lse as its lse.
fn store_out(row: Row, acc: array<vec4<f32>, D4>, inv: f32, row_lse: f32) {
    let at = row.b * P.q_sb + row.h * P.q_sh + row.i * P.q_ss - P.o_shift;
    for (var d4 = 0u; d4 < D4; d4++) {
        st4_out(at, d4 * 4u, acc[d4] * inv);
    }
    lse[lse_index(row) - P.lse_shift] = row_lse;
}
