// Pass 3 of 3: O = P V for one chunk. Register-tiled like pass 1: a workgroup computes a
// TM x TN tile of O (query rows x head dims), each invocation a 4x4 block, over key tiles of
// TK staged in workgroup memory. The key loop covers only the keys some row of the tile sees,
// and V rows outside them (padding) are never read.
#param WG_X WG_Y TK
#flag F16 PACKED
#include "common/params.inc.wgsl"

@group(0) @binding(B_PARAMS) var<uniform> P: Params;
#define USE_v
#define USE_out
#include "common/elem.inc.wgsl"
@group(0) @binding(B_AUX) var<storage, read> aux: array<u32>;
@group(0) @binding(B_SCRATCH) var<storage, read> p: array<f32>;

#include "common/visible.inc.wgsl"

const TM: u32 = WG_Y * 4u;
const TN: u32 = WG_X * 4u;
const WG_SIZE: u32 = WG_X * WG_Y;

// pt[kk * TM/4 + m/4][m % 4] = P[row r0 + m, key j0 + kk]; vt[kk * TN/4 + n/4][n % 4] = V[j0 +
// kk, d0 + n]
var<workgroup> pt: array<vec4<f32>, TK * TM / 4u>;
var<workgroup> vt: array<vec4<f32>, TK * TN / 4u>;

@compute @workgroup_size(WG_X, WG_Y, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let bh_local = wid.z;
    let bh = P.bh0 + bh_local;
    let b = bh / P.q_heads;
    let h = bh % P.q_heads;
    let kvh = h / P.group;
    let r0 = wid.y * TM;
    let dc0 = wid.x * TN;
    let p_base = bh_local * P.nq * P.s_stride;
    let v_base = b * P.k_sb + kvh * P.k_sh - P.v_shift;
    let key_lo = visible_range(b, P.i0 + r0).x;
    let key_end = visible_range(b, P.i0 + min(r0 + TM, P.nq) - 1u).y;

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var j0 = key_lo; j0 < key_end; j0 += TK) {
        for (var t = 0u; t < TM * TK / WG_SIZE; t++) {
            let e = li + t * WG_SIZE;
            let m = e / TK;
            let kk = e % TK;
            let row = r0 + m;
            let j = j0 + kk;
            var x = 0.0;
            if (row < P.nq && j < key_end) {
                x = p[p_base + row * P.s_stride + j];
            }
            pt[kk * (TM / 4u) + m / 4u][m % 4u] = x;
        }
        for (var t = 0u; t < TN * TK / WG_SIZE; t++) {
            let e = li + t * WG_SIZE;
            let kk = e / TN;
            let n = e % TN;
            let j = j0 + kk;
            let d = dc0 + n;
            var x = 0.0;
            if (j < key_end && d < P.head_dim) {
                x = ld_v(v_base + j * P.k_ss + d);
            }
            vt[kk * (TN / 4u) + n / 4u][n % 4u] = x;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let a = pt[kk * (TM / 4u) + lid.y];
            let bv = vt[kk * (TN / 4u) + lid.x];
            acc0 += a.x * bv;
            acc1 += a.y * bv;
            acc2 += a.z * bv;
            acc3 += a.w * bv;
        }
        workgroupBarrier();
    }
    let o_base = b * P.q_sb + h * P.q_sh + P.i0 * P.q_ss - P.o_shift;
    let rr = r0 + lid.y * 4u;
    let d = dc0 + lid.x * 4u;
    let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var r = 0u; r < 4u; r++) {
        if (rr + r < P.nq) {
            st4_out(o_base + (rr + r) * P.q_ss, d, accs[r]);
        }
    }
}
