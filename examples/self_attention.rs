//! Self-attention over a short token sequence: random token embeddings, random projections
//! W_q, W_k, W_v, causal attention on the GPU, and for each token the positions it attends to
//! most (from the probability matrix the GPU returns).
//!
//! Run: `cargo run --release --example self_attention`

use wgattn::testdata::Rng;
use wgattn::{AttentionSpec, CausalAlign, Context};

const D_MODEL: usize = 32;
const HEADS: usize = 2;
const HEAD_DIM: usize = D_MODEL / HEADS;

/// x · w for x: [n, D_MODEL] and w: [D_MODEL, D_MODEL], as [n, D_MODEL] (= bshd with B = 1).
fn project(x: &[f32], w: &[f32]) -> Vec<f32> {
    x.chunks(D_MODEL)
        .flat_map(|row| {
            (0..D_MODEL).map(move |j| {
                (0..D_MODEL)
                    .map(|i| row[i] * w[i * D_MODEL + j])
                    .sum::<f32>()
            })
        })
        .collect()
}

fn main() -> Result<(), wgattn::Error> {
    let text = "the cat sat on the mat because the cat was tired";
    let tokens: Vec<&str> = text.split(' ').collect();
    let n = tokens.len();

    // Each distinct word gets a random embedding; equal words share it.
    let embed = |word: &str| {
        let seed = word
            .bytes()
            .fold(7u64, |h, c| h.wrapping_mul(31).wrapping_add(c as u64));
        Rng::new(seed).normals(D_MODEL, 0.0, 1.0)
    };
    let x: Vec<f32> = tokens.iter().flat_map(|t| embed(t)).collect();
    let mut rng = Rng::new(2024);
    let scale = 1.0 / (D_MODEL as f64).sqrt();
    let (wq, wk, wv) = (
        rng.normals(D_MODEL * D_MODEL, 0.0, scale),
        rng.normals(D_MODEL * D_MODEL, 0.0, scale),
        rng.normals(D_MODEL * D_MODEL, 0.0, scale),
    );
    // [n, D_MODEL] is [batch 1, seq n, heads 2, head_dim 16]: the bshd layout, no copy needed.
    let (q, k, v) = (project(&x, &wq), project(&x, &wk), project(&x, &wv));

    let ctx = Context::new()?;
    let spec = AttentionSpec::new(1, HEADS, HEADS, n, n, HEAD_DIM)
        .layout(wgattn::Layout::Bshd)
        .causal(CausalAlign::TopLeft)
        .with_weights(true);
    let result = ctx.attention(&spec, &q, &k, &v)?;
    let weights = result.weights.expect("weights were asked for");

    println!("adapter: {}", ctx.adapter_info().name);
    println!("causal self-attention, {HEADS} heads of {HEAD_DIM} dims, over: \"{text}\"\n");
    for h in 0..HEADS {
        println!("head {h}:");
        for (i, token) in tokens.iter().enumerate() {
            let row = &weights[(h * n + i) * n..(h * n + i + 1) * n];
            let mut order: Vec<usize> = (0..=i).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            let top: Vec<String> = order
                .iter()
                .take(3)
                .map(|&j| format!("{}:{} {:.2}", j, tokens[j], row[j]))
                .collect();
            println!("  {i:2} {token:8} → {}", top.join(", "));
        }
    }
    Ok(())
}
