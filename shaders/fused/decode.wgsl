// Decoding attention (split-KV / flash-decoding) for few query rows per kv head. One subgroup
// per workgroup walks the keys one block of KU keys at a time; its lanes split head_dim:
// lane t owns vec4 slots t, t+SG, t+2·SG, … (DL of them), so each K/V row is read by all lanes
// together in contiguous 16-byte pieces, and the dot product of a key is finished with one
// subgroupAdd. Scores, running max and sum are then the same in every lane (base 2, q
// pre-scaled); each lane rescales and accumulates only its own slots of the output.
// grid.y splits the keys across workgroups (SPLIT: partial outputs and lse for
// split_kv_combine.wgsl), grid.z is the (batch, kv head). All R rows of the kv head (group × nq)
// are done together, so K and V are read once for them.
// Constants: SG (subgroup size = workgroup size), R (rows), D16 (head_dim class / 16),
// DL (vec4 slots per lane = ceil(4·D16 / SG)), KU (keys per block).
// Flags: VEC4, SPLIT, MODS and the storage / modifier flags.
#param SG R D16 DL KU
#flag VEC4 SPLIT MODS F16 PACKED BIAS MASK SOFTCAP ALIBI
#include "fused/fused.inc.wgsl"

// Element offset of vec4 slot `t` of this lane.
fn slot_d(lane: u32, t: u32) -> u32 {
    return (lane + SG * t) * 4u;
}

@compute @workgroup_size(SG, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let kvh = kv_pair(wid.z).y;
    let b = kv_pair(wid.z).x;
    var lo = P.seq_k;
    var hi = 0u;
#for r in 0..R
    let row_{r} = row_of(wid.z, {r}u);
    let rng_{r} = visible_range(b, row_{r}.i);
    lo = min(lo, rng_{r}.x);
    hi = max(hi, rng_{r}.y);
#endfor
    let split = split_keys(lo, hi, wid.y);
    let k_lo = split.x;
    let k_hi = split.y;

#for r in 0..R
    let q_at_{r} = b * P.q_sb + row_{r}.h * P.q_sh + row_{r}.i * P.q_ss - P.q_shift;
    var m_{r} = MASKED;
    var l_{r} = 0.0;
#for t in 0..DL
    let q_{r}_{t} = ld4_q(q_at_{r}, slot_d(lane, {t}u)) * (P.scale * LOG2E);
    var o_{r}_{t} = vec4<f32>(0.0);
#endfor
#endfor
    let kv_base = b * P.k_sb + kvh * P.k_sh;

    for (var t0 = k_lo; t0 < k_hi; t0 += KU) {
#for u in 0..KU
        let kv_row{u} = kv_base + min(t0 + {u}u, k_hi - 1u) * P.k_ss;
#for t in 0..DL
        let k{u}_{t} = ld4_k(kv_row{u} - P.k_shift, slot_d(lane, {t}u));
#endfor
#endfor
#for r in 0..R
#for u in 0..KU
        var s_{r}_{u} = subgroupAdd(0.0
#for t in 0..DL
            + dot(q_{r}_{t}, k{u}_{t})
#endfor
            );
#if MODS
        s_{r}_{u} = modify2(s_{r}_{u}, b, row_{r}.h, row_{r}.i, t0 + {u}u);
#endif
        s_{r}_{u} = select(MASKED, s_{r}_{u}, t0 + {u}u < k_hi && t0 + {u}u >= rng_{r}.x && t0 + {u}u < rng_{r}.y);
#endfor
        var mx_{r} = m_{r};
#for u in 0..KU
        mx_{r} = max(mx_{r}, s_{r}_{u});
#endfor
        let corr_{r} = exp2(m_{r} - mx_{r});
#for u in 0..KU
        let p_{r}_{u} = select(0.0, exp2(s_{r}_{u} - mx_{r}), s_{r}_{u} > MASKED_CUT2);
#endfor
        l_{r} = l_{r} * corr_{r}
#for u in 0..KU
            + p_{r}_{u}
#endfor
            ;
        m_{r} = mx_{r};
#endfor
#for t in 0..DL
        {
#for u in 0..KU
            let v{u} = select(vec4<f32>(0.0), ld4_v(kv_row{u} - P.v_shift, slot_d(lane, {t}u)), t0 + {u}u < k_hi);
#endfor
#for r in 0..R
            o_{r}_{t} = o_{r}_{t} * corr_{r}
#for u in 0..KU
                + p_{r}_{u} * v{u}
#endfor
                ;
#endfor
        }
#endfor
    }

#for r in 0..R
    {
        let fin = finish(m_{r}, l_{r});
        let slot = split_slot(wid.y, wid.z, R, {r}u);
#for t in 0..DL
        if (lane + SG * {t}u < D4) {
            store_col(row_{r}, slot, lane + SG * {t}u, o_{r}_{t} * fin.x);
        }
#endfor
        if (lane == 0u) {
            store_lse(row_{r}, slot, fin.y);
        }
    }
#endfor
}
