// The keys visible to query row i of batch entry b are 0..visible_end(b, i): key padding
// (kv_lens) and the causal mask both cut a prefix. Needs `P: Params` and `kv_lens`.
fn visible_end(b: u32, i: u32) -> u32 {
    var hi = P.seq_k;
    if (P.has_kv_lens != 0u) {
        hi = min(hi, kv_lens[b]);
    }
    if (P.causal != 0u) {
        hi = u32(clamp(i32(i) + P.causal_off + 1, 0, i32(hi)));
    }
    return hi;
}
