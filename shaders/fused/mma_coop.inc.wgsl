// Tile-multiply helpers of fused/mma.wgsl on cooperative matrices (tensor cores): MT×MT×MT
// tiles, f16 A and B, f32 accumulator C (`enable wgpu_cooperative_matrix;` is prepended by the
// template step for COOP variants). Same operands, shapes and layouts as mma_portable.inc.wgsl:
//   mma_scores: tf[BR×BC] (row-major) = tq[BR×DP] (row-major) · tkv[BC×DP]ᵀ
//     A = rows of tq (coopLoadT, stride DP); B = Kᵀ, i.e. tkv read column-major (coopLoad,
//     stride DP); C stored row-major into tf (coopStoreT, stride BC).
//   mma_pv:     tf[BR×DP] (row-major) = tp[BR×BC] (row-major) · tkv[BC×DP] (row-major)
// The output tiles are shared out among the subgroups (`sg` of `nsg`); a subgroup's
// cooperative operations run in its uniform control flow.
#flag MT16
#if MT16
alias MatA = coop_mat16x16<f16, A>;
alias MatB = coop_mat16x16<f16, B>;
alias MatC = coop_mat16x16<f32, C>;
#else
alias MatA = coop_mat8x8<f16, A>;
alias MatB = coop_mat8x8<f16, B>;
alias MatC = coop_mat8x8<f32, C>;
#endif

fn mma_scores(li: u32, sg: u32, nsg: u32) {
    let tiles_n = BC / MT;
    for (var t = sg; t < (BR / MT) * tiles_n; t += nsg) {
        let i0 = (t / tiles_n) * MT;
        let n0 = (t % tiles_n) * MT;
        var acc = MatC();
        for (var kk = 0u; kk < DP; kk += MT) {
            let a = coopLoadT<MatA>(&tq[i0 * DP + kk], DP);
            let b = coopLoad<MatB>(&tkv[n0 * DP + kk], DP);
            acc = coopMultiplyAdd(a, b, acc);
        }
        coopStoreT(acc, &tf[i0 * BC + n0], BC);
    }
}

fn mma_pv(li: u32, sg: u32, nsg: u32) {
    let tiles_n = DP / MT;
    for (var t = sg; t < (BR / MT) * tiles_n; t += nsg) {
        let i0 = (t / tiles_n) * MT;
        let n0 = (t % tiles_n) * MT;
        var acc = MatC();
        for (var kk = 0u; kk < BC; kk += MT) {
            let a = coopLoadT<MatA>(&tp[i0 * BC + kk], BC);
            let b = coopLoadT<MatB>(&tkv[kk * DP + n0], DP);
            acc = coopMultiplyAdd(a, b, acc);
        }
        coopStoreT(acc, &tf[i0 * DP + n0], DP);
    }
}
