// The keys visible to query row i of batch entry b under key padding (kv_lens), the causal
// mask and the sliding window: the half-open range x..y. Needs `P` and `aux` (B_AUX).
fn visible_range(b: u32, i: u32) -> vec2<u32> {
    var lo = 0;
    var hi = i32(P.seq_k);
    if (P.has_kv_lens != 0u) {
        hi = min(hi, i32(aux[b]));
    }
    if (P.causal != 0u) {
        hi = min(hi, i32(i) + P.causal_off + 1);
    }
    let diag = i32(i) + P.align_off;
    if (P.win_left >= 0) {
        lo = max(lo, diag - P.win_left);
    }
    if (P.win_right >= 0) {
        hi = min(hi, diag + P.win_right + 1);
    }
    hi = max(hi, 0);
    return vec2<u32>(u32(clamp(lo, 0, hi)), u32(hi));
}
