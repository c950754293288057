// Flash / split-KV row numbering. A workgroup grid's z index names one (batch, kv head) of the
// chunk; rows r in 0..group*nq of it are the query rows of all `group` query heads that share
// that kv head, head-major: h = kvh*group + r / nq, i = i0 + r % nq. K/V tiles are loaded once
// for all of them. Needs `P: Params`.
struct Row {
    b: u32,
    h: u32,
    i: u32,
}

fn kv_pair(z: u32) -> vec2<u32> {
    let g = P.bh0 / P.group + z; // (batch, kv head) index
    return vec2<u32>(g / P.kv_heads, g % P.kv_heads);
}

fn row_of(z: u32, r: u32) -> Row {
    let bk = kv_pair(z);
    return Row(bk.x, bk.y * P.group + r / P.nq, P.i0 + r % P.nq);
}

// Query row index (0..B*Hq*Sq) of a row: where lse goes.
fn lse_index(row: Row) -> u32 {
    return (row.b * P.q_heads + row.h) * P.seq_q + row.i;
}
