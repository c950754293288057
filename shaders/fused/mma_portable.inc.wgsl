// Tile-multiply helpers of fused/mma.wgsl, portable implementation: workgroup memory and
// scalar FMAs, on any adapter. Same operands, shapes and layouts as mma_coop.inc.wgsl (the
// cooperative-matrix implementation), so the kernel around them is the same code on both:
//   mma_scores: tf[BR×BC] (row-major) = tq[BR×DP] (row-major) · tkv[BC×DP]ᵀ
//   mma_pv:     tf[BR×DP] (row-major) = tp[BR×BC] (row-major) · tkv[BC×DP] (row-major)
// Sums run over slices of MT (the tile's K) added up in f32, as the cooperative matrices do.
// Every invocation of the workgroup takes part (`li`); `sg` / `nsg` (subgroup id and count)
// are what the cooperative implementation shares tiles by.

fn mma_scores(li: u32, sg: u32, nsg: u32) {
    for (var e = li; e < BR * BC; e += WG) {
        let qa = (e / BC) * DP;
        let ka = (e % BC) * DP;
        var acc = 0.0;
        for (var kk = 0u; kk < DP; kk += MT) {
            var part = 0.0;
            for (var d = 0u; d < MT; d++) {
                part = fma(f32(tq[qa + kk + d]), f32(tkv[ka + kk + d]), part);
            }
            acc += part;
        }
        tf[e] = acc;
    }
}

fn mma_pv(li: u32, sg: u32, nsg: u32) {
    for (var e = li; e < BR * DP; e += WG) {
        let pa = (e / DP) * BC;
        let c = e % DP;
        var acc = 0.0;
        for (var kk = 0u; kk < BC; kk += MT) {
            var part = 0.0;
            for (var t = 0u; t < MT; t++) {
                part = fma(f32(tp[pa + kk + t]), f32(tkv[(kk + t) * DP + c]), part);
            }
            acc += part;
        }
        tf[e] = acc;
    }
}
