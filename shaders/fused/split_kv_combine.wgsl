// Split-KV combine: merges the per-split normalised outputs and lse of fused/rows.wgsl (SPLIT) into
// the final output exactly: out = Σ_s w_s·o_s / Σ_s w_s with w_s = exp(lse_s − max lse),
// lse = max + log Σ w_s. Splits that saw no key have lse −∞ and weight 0; a row no split saw
// gets out 0 and lse −∞. One invocation per vec4 column of each row of the chunk.
#param WG D16
#flag VEC4 F16 PACKED
#include "common/params.inc.wgsl"

const D4: u32 = D16 * 4u;

@group(0) @binding(B_PARAMS) var<uniform> P: Params;
@group(0) @binding(B_SCRATCH) var<storage, read> o_part: array<vec4<f32>>;
@group(0) @binding(B_SCRATCH2) var<storage, read> lse_part: array<f32>;
#define USE_out
#include "common/elem.inc.wgsl"

#include "common/row_index.inc.wgsl"
#include "common/out.inc.wgsl"

@compute @workgroup_size(WG, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let rows = P.group * P.nq;
    let total = rows * (P.nbh / P.group);
    let n = gid.x + gid.y * nwg.x * WG;
    if (n >= total * D4) {
        return;
    }
    // Row g of the chunk, vec4 column c of it: consecutive invocations read consecutive
    // columns, and no invocation walks a whole row (with hundreds of splits that is slow).
    let g = n / D4;
    let c = n % D4;
    var mx = MASKED;
    for (var s = 0u; s < P.n_splits; s++) {
        mx = max(mx, lse_part[s * total + g]);
    }
    var acc = vec4<f32>(0.0);
    var wsum = 0.0;
    if (mx > MASKED_CUT) {
        for (var s = 0u; s < P.n_splits; s++) {
            let ls = lse_part[s * total + g];
            let w = select(0.0, exp(ls - mx), ls > MASKED_CUT);
            wsum += w;
            acc += w * o_part[(s * total + g) * D4 + c];
        }
    }
    let inv = select(0.0, 1.0 / wsum, wsum > 0.0);
    let row = row_of(g / rows, g % rows);
    st4_out(row.b * P.q_sb + row.h * P.q_sh + row.i * P.q_ss - P.o_shift, c * 4u, acc * inv);
    if (c == 0u) {
        lse[lse_index(row) - P.lse_shift] = select(P.neg_inf, mx + log(wsum), wsum > 0.0);
    }
}
