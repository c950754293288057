// Element storage of q, k, v and out: f32, f16 (F16: SHADER_F16) or f16 pairs packed in u32
// (PACKED: adapters without SHADER_F16; the kernels then write an f32 out that common/pack_f16.wgsl
// converts). With VEC4 an array entry holds 4 elements (head_dim and every offset are
// multiples of 4). Kernels #define USE_q / USE_k / USE_v / USE_out before including this
// file to get those bindings (B_Q, B_K, B_V, B_OUT) and their accessors:
//   ld4_X(at, d): elements at+d .. at+d+3 of X as vec4<f32>, zero where d+t >= head_dim;
//   ld_X(i): element i as f32 (scalar storage only);
//   st4_out(at, d, x) / st_out(i, x): store, skipping d+t >= head_dim.
// Needs `P`.
#flag F16 PACKED VEC4 USE_q USE_k USE_v USE_out
#if F16
alias Store = array<f16>;
alias Store4 = array<vec4<f16>>;
alias OutStore = array<f16>;
alias OutStore4 = array<vec4<f16>>;
#else
#if PACKED
alias Store = array<u32>;
alias Store4 = array<vec2<u32>>;
#else
alias Store = array<f32>;
alias Store4 = array<vec4<f32>>;
#endif
alias OutStore = array<f32>;
alias OutStore4 = array<vec4<f32>>;
#endif

#if VEC4
#if USE_q
@group(0) @binding(B_Q) var<storage, read> q: Store4;
#endif
#if USE_k
@group(0) @binding(B_K) var<storage, read> k: Store4;
#endif
#if USE_v
@group(0) @binding(B_V) var<storage, read> v: Store4;
#endif
#if USE_out
@group(0) @binding(B_OUT) var<storage, read_write> o: OutStore4;
#endif
#else
#if USE_q
@group(0) @binding(B_Q) var<storage, read> q: Store;
#endif
#if USE_k
@group(0) @binding(B_K) var<storage, read> k: Store;
#endif
#if USE_v
@group(0) @binding(B_V) var<storage, read> v: Store;
#endif
#if USE_out
@group(0) @binding(B_OUT) var<storage, read_write> o: OutStore;
#endif
#endif

#for X in q,k,v
#if USE_{X}
#if VEC4
fn ld4_{X}(at: u32, d: u32) -> vec4<f32> {
#if PACKED
    let w = {X}[(at + d) / 4u];
    let x = vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
#else
    let x = vec4<f32>({X}[(at + d) / 4u]);
#endif
    return select(vec4<f32>(0.0), x, d < P.head_dim);
}
#else
fn ld_{X}(i: u32) -> f32 {
#if PACKED
    return unpack2x16float({X}[i >> 1u])[i & 1u];
#else
    return f32({X}[i]);
#endif
}
fn ld4_{X}(at: u32, d: u32) -> vec4<f32> {
    let hd = P.head_dim;
    return vec4<f32>(select(0.0, ld_{X}(at + d), d < hd), select(0.0, ld_{X}(at + d + 1u), d + 1u < hd),
                     select(0.0, ld_{X}(at + d + 2u), d + 2u < hd), select(0.0, ld_{X}(at + d + 3u), d + 3u < hd));
}
#endif
#endif
#endfor

#if USE_out
#if VEC4
fn st4_out(at: u32, d: u32, x: vec4<f32>) {
    if (d < P.head_dim) {
#if F16
        o[(at + d) / 4u] = vec4<f16>(x);
#else
        o[(at + d) / 4u] = x;
#endif
    }
}
#else
fn st_out(i: u32, x: f32) {
#if F16
    o[i] = f16(x);
#else
    o[i] = x;
#endif
}
fn st4_out(at: u32, d: u32, x: vec4<f32>) {
    for (var t = 0u; t < 4u; t++) {
        if (d + t < P.head_dim) {
            st_out(at + d + t, x[t]);
        }
    }
}
#endif
#endif
