//! all-MiniLM-L6-v2 end to end on the GPU against the independent NumPy reference
//! (`scripts/minilm_reference.py`): same token ids as the reference's own WordPiece
//! tokenizer, and cosine ≥ 0.9999 to the reference embedding for every sentence in f32
//! (f16 reported, and held to 0.999).
//!
//! Needs the model (`scripts/setup-debian.sh` fetches it into `target/minilm/` with
//! `scripts/fetch-minilm.sh`) and the reference embeddings, committed in
//! `tests/data/minilm/reference.json` (made by `scripts/minilm_reference.py`), or
//! `WGATTN_MINILM_DIR` (the model directory) and `WGATTN_MINILM_REFERENCE` (the reference
//! JSON) name others. Without them the test fails, unless `WGATTN_ALLOW_NO_MINILM=1` lets it
//! skip (it then prints a SKIPPED line).

#[path = "../../examples/minilm/bert.rs"]
mod bert;

use std::path::PathBuf;

use wgattn::DType;

use crate::common;

fn inputs() -> Option<(PathBuf, serde_json::Value)> {
    let default = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("minilm");
    let var = |name| std::env::var_os(name).map(PathBuf::from);
    let dir = var("WGATTN_MINILM_DIR").unwrap_or_else(|| default.join("model"));
    let reference = var("WGATTN_MINILM_REFERENCE").unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/minilm/reference.json")
    });
    if dir.join("model.safetensors").is_file() && reference.is_file() {
        let text = std::fs::read_to_string(&reference)
            .unwrap_or_else(|e| panic!("{}: {e}", reference.display()));
        return Some((dir, serde_json::from_str(&text).expect("reference JSON")));
    }
    let missing = format!(
        "all-MiniLM-L6-v2 or its reference embeddings are missing ({} / {}): run \
         scripts/setup-debian.sh, or scripts/fetch-minilm.sh and scripts/minilm_reference.py \
         (see .ci/run)",
        dir.display(),
        reference.display()
    );
    if std::env::var("WGATTN_ALLOW_NO_MINILM").as_deref() != Ok("1") {
        panic!("{missing}; WGATTN_ALLOW_NO_MINILM=1 skips this test");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED minilm: {missing}");
    None
}

#[test]
fn minilm_embeddings_match_the_numpy_reference() {
    let Some((dir, reference)) = inputs() else {
        return;
    };
    let Some(ctx) = common::ctx() else { return };
    let sentences: Vec<String> = reference["sentences"]
        .as_array()
        .expect("sentences")
        .iter()
        .map(|s| s.as_str().expect("sentence").to_string())
        .collect();
    let want: Vec<Vec<f32>> = reference["embeddings"]
        .as_array()
        .expect("embeddings")
        .iter()
        .map(|e| {
            e.as_array()
                .expect("embedding")
                .iter()
                .map(|x| x.as_f64().expect("float") as f32)
                .collect()
        })
        .collect();
    // The tokenizers crate agrees with the reference's own WordPiece.
    let batch = bert::tokenize(&dir, &sentences, 256, None).expect("tokenize");
    for (b, ids) in reference["ids"].as_array().expect("ids").iter().enumerate() {
        let ids: Vec<u32> = ids
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let n = batch.lens[b] as usize;
        assert_eq!(
            &batch.ids[b * batch.seq..b * batch.seq + n],
            &ids[..],
            "token ids of {:?}",
            sentences[b]
        );
    }
    for (dtype, floor) in [(DType::F32, 0.9999), (DType::F16, 0.999)] {
        let model = bert::Bert::load(ctx, &dir, dtype).expect("load MiniLM");
        // One padded batch: the shorter sentences exercise kv_lens.
        let got = bert::embed(ctx, &model, &dir, &sentences).expect("embed");
        assert_eq!(got.len(), want.len());
        let mut worst = f64::INFINITY;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.len(), 384);
            let c = bert::cosine(g, w);
            eprintln!(
                "minilm {}: cosine {c:.10} (1 − cos = {:.1e}) for {:?}",
                dtype.name(),
                1.0 - c,
                sentences[i]
            );
            assert!(
                c >= floor,
                "{}: cosine {c} < {floor} for {:?}",
                dtype.name(),
                sentences[i]
            );
            worst = worst.min(c);
        }
        eprintln!("minilm {}: lowest cosine {worst:.10}", dtype.name());
    }
}
