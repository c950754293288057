// Backward pre-pass, one invocation per query row r = (b·Hq + h)·Sq + i: writes the row's
// statistics (m_hi, m_lo + log l, ref, D') that the other passes recompute P and dS with
// (P = exp(s − m − log l), dS = P·((dP − ref) − D'); D = ref + D' = Σ_j P_j·dP_j; logits
// s and m in two floats, hi + lo, see backward.inc.wgsl).
// RECOMPUTE: one online-softmax sweep over the visible keys finds m (the row's largest
// logit), ref (the dP of that key), l = Σ exp(s − m) and D' = Σ exp(s − m)·(dP − ref) / l,
// with logits and dP computed exactly as the other passes do (q and dO of the row unrolled
// into D4 vec4 registers) — P is then consistent to the
// last bit, and the largest key's dS, P·(−D'), has no cancellation: the gradients stay
// accurate when logits are ~10³ and rows are nearly one-hot.
// Otherwise (FlashAttention-2's scheme): m = the forward's lse, log l = 0, ref = 0 and
// D' = rowsum(dO ∘ O) from the forward's out.
#flag RECOMPUTE VEC4 F16 PACKED BIAS MASK SOFTCAP ALIBI
#if RECOMPUTE
#param D4
#endif
#define USE_dout
#if RECOMPUTE
#define USE_q
#define USE_k
#define USE_v
#endif
#include "backward/backward.inc.wgsl"
@group(0) @binding(B_SCRATCH) var<storage, read_write> stats: array<vec4<f32>>;
#if !RECOMPUTE
@group(0) @binding(B_LSE) var<storage, read> lse: array<f32>;
#if VEC4
@group(0) @binding(B_OUT) var<storage, read> o: Store4;

fn ld4_o(at: u32, d: u32) -> vec4<f32> {
#if PACKED
    let w = o[(at + d) / 4u];
    return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
#else
    return vec4<f32>(o[(at + d) / 4u]);
#endif
}
#else
@group(0) @binding(B_OUT) var<storage, read> o: Store;

fn ld_o(i: u32) -> f32 {
#if PACKED
    return unpack2x16float(o[i >> 1u])[i & 1u];
#else
    return f32(o[i]);
#endif
}
fn ld4_o(at: u32, d: u32) -> vec4<f32> {
    let hd = P.head_dim;
    return vec4<f32>(select(0.0, ld_o(at + d), d < hd), select(0.0, ld_o(at + d + 1u), d + 1u < hd),
                     select(0.0, ld_o(at + d + 2u), d + 2u < hd), select(0.0, ld_o(at + d + 3u), d + 3u < hd));
}
#endif
#endif

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
#if RECOMPUTE
    let g = h / P.group;
    let range = visible_range(b, i);
    var m = MASKED;
    var m_lo = 0.0;
    var l = 0.0;
    var a = 0.0;
    var dref = 0.0;
#for C in 0..D4
    let q_{C} = ld4_q(at, {C}u * 4u);
    let do_{C} = ld4_do(at, {C}u * 4u);
#endfor
    for (var j = range.x; j < range.y; j++) {
        let ka = k_at(b, g, j);
        var sx = dot0();
#for C in 0..D4
        sx = dot_add(sx, q_{C}, ld4_k(ka, {C}u * 4u));
#endfor
        let s2 = modify2(logit(sx), b, h, i, j);
        let s = s2.x;
        if (s <= MASKED_CUT) {
            continue;
        }
        var sp = vec4<f32>(0.0);
#for C in 0..D4
        sp += do_{C} * ld4_v(ka, {C}u * 4u);
#endfor
        let dp = fin(sp);
        if (s > m) {
            // new largest logit: rescale, and move the reference to this key's dP
            let c = exp((m - s) + (m_lo - s2.y));
            a = (a + l * (dref - dp)) * c;
            l *= c;
            m = s;
            m_lo = s2.y;
            dref = dp;
        }
        let e = exp((s - m) + (s2.y - m_lo));
        l += e;
        a += e * (dp - dref);
    }
    if (l > 0.0) {
        stats[r] = vec4<f32>(m, m_lo + log(l), dref, a / l);
    } else {
        stats[r] = vec4<f32>(MASKED, 0.0, 0.0, 0.0);
    }
#else
    var acc = vec4<f32>(0.0);
    for (var c = 0u; c < P.head_dim; c += 4u) {
        acc += ld4_do(at, c) * ld4_o(at, c);
    }
    let l = lse[r];
    stats[r] = vec4<f32>(select(MASKED, l, l > MASKED_CUT), 0.0, 0.0, fin(acc));
#endif
}
