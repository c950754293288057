//! Sentence embeddings with all-MiniLM-L6-v2 (BERT, 6 layers, 12 heads, hidden 384) on the
//! GPU: the attention through `wgattn::layer::MultiHeadAttention`, layer norms, GELU and the
//! feed-forward by wgattn's WGSL kernels; mean pooling and L2 normalisation as
//! sentence-transformers does.
//!
//! Get the model with `scripts/fetch-minilm.sh DIR` (no Python needed at run time), then:
//!
//! ```text
//! cargo run --release --example minilm -- --model-dir DIR/model [--json] [--dtype f16] "sentence one" "sentence two"
//! cargo run --release --example minilm -- --model-dir DIR/model --attention out.safetensors --layer 2 "The cat sat on the mat."
//! cargo run --release --example minilm -- --model-dir DIR/model --bench
//! ```
//!
//! `--json` prints `{"embeddings": [[384 floats], …]}`, otherwise the cosine similarity
//! matrix. `--attention FILE` writes the attention probabilities of `--layer` for the first
//! sentence with its tokens, for `wgattn heatmap --weights FILE --head H`. `--bench` measures
//! sentences/s at batch 1 and 32 with 128 tokens.

mod bert;

use std::path::PathBuf;
use std::time::Instant;

use wgattn::{Context, DType, Error};

struct Args {
    model_dir: PathBuf,
    json: bool,
    dtype: DType,
    attention: Option<PathBuf>,
    layer: usize,
    bench: bool,
    sentences: Vec<String>,
}

fn usage() -> ! {
    eprintln!(
        "usage: minilm --model-dir DIR [--json] [--dtype f32|f16] [--attention FILE --layer L] \
         [--bench] SENTENCE…"
    );
    std::process::exit(2)
}

fn parse() -> Args {
    let mut a = Args {
        model_dir: PathBuf::new(),
        json: false,
        dtype: DType::F32,
        attention: None,
        layer: 0,
        bench: false,
        sentences: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--model-dir" => a.model_dir = PathBuf::from(value()),
            "--json" => a.json = true,
            "--dtype" => {
                a.dtype = DType::parse(&value()).unwrap_or_else(|e| {
                    eprintln!("{e}");
                    usage()
                })
            }
            "--attention" => a.attention = Some(PathBuf::from(value())),
            "--layer" => a.layer = value().parse().unwrap_or_else(|_| usage()),
            "--bench" => a.bench = true,
            "-h" | "--help" => usage(),
            s if s.starts_with("--") => {
                eprintln!("unknown option {s}");
                usage()
            }
            _ => a.sentences.push(arg),
        }
    }
    if a.model_dir.as_os_str().is_empty() || (a.sentences.is_empty() && !a.bench) {
        usage()
    }
    a
}

fn main() {
    let args = parse();
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(if e.is_input_error() { 2 } else { 3 });
    }
}

fn run(args: &Args) -> Result<(), Error> {
    let ctx = Context::new()?;
    let model = bert::Bert::load(&ctx, &args.model_dir, args.dtype)?;
    if args.bench {
        return bench(&ctx, &model, args);
    }
    if let Some(path) = &args.attention {
        return attention(&ctx, &model, args, path);
    }
    let embeddings = bert::embed(&ctx, &model, &args.model_dir, &args.sentences)?;
    if args.json {
        let rows: Vec<String> = embeddings
            .iter()
            .map(|e| {
                let v: Vec<String> = e.iter().map(|x| format!("{x:e}")).collect();
                format!("[{}]", v.join(", "))
            })
            .collect();
        println!("{{\"embeddings\": [{}]}}", rows.join(", "));
        return Ok(());
    }
    let n = embeddings.len();
    println!("cosine similarity ({}):", args.dtype.name());
    for (i, s) in args.sentences.iter().enumerate() {
        println!("  [{i}] {s}");
    }
    print!("     ");
    for j in 0..n {
        print!("{:>7}", format!("[{j}]"));
    }
    println!();
    for i in 0..n {
        print!("{:>5}", format!("[{i}]"));
        for j in 0..n {
            print!("{:>7.3}", bert::cosine(&embeddings[i], &embeddings[j]));
        }
        println!();
    }
    Ok(())
}

/// Writes the attention probabilities `[H, S, S]` of `--layer` for the first sentence, with
/// its tokens in the metadata (`tokens`, tab-separated).
fn attention(
    ctx: &Context,
    model: &bert::Bert,
    args: &Args,
    path: &std::path::Path,
) -> Result<(), Error> {
    if args.layer >= model.config.layers {
        return Err(Error::InvalidLayer {
            field: "layer".into(),
            problem: format!("{} of {} layers", args.layer, model.config.layers),
        });
    }
    let batch = bert::tokenize(&args.model_dir, &args.sentences[..1], 256, None)?;
    let prepared = model.prepare(ctx, 1, batch.seq, &batch.lens, Some(args.layer))?;
    let out = prepared.run(ctx, &batch)?;
    let weights = out.weights.expect("weights were asked for");
    let (h, s) = (model.config.heads, batch.seq);
    let mut meta = std::collections::HashMap::new();
    meta.insert("tokens".to_string(), batch.tokens[0].join("\t"));
    meta.insert("layer".to_string(), args.layer.to_string());
    meta.insert("sentence".to_string(), args.sentences[0].clone());
    wgattn::io::write_tensors(path, &[("weights", vec![1, h, s, s], &weights)], meta)?;
    eprintln!(
        "wrote {} ({h} heads × {s}×{s}, layer {}): {}",
        path.display(),
        args.layer,
        batch.tokens[0].join(" ")
    );
    Ok(())
}

/// Sentences/s at batch 1 and 32 with 128 tokens (padded), median of timed runs after a
/// warm-up; each run uploads the ids, records all layers, submits and reads the last hidden
/// state back.
fn bench(ctx: &Context, model: &bert::Bert, args: &Args) -> Result<(), Error> {
    let text = "The quick brown fox jumps over the lazy dog while the GPU computes attention.";
    println!(
        "MiniLM-L6 ({}) on {}: sentences/s at 128 tokens",
        args.dtype.name(),
        ctx.adapter_info().name
    );
    for batch_size in [1usize, 32] {
        let sentences = vec![text.repeat(6); batch_size];
        let batch = bert::tokenize(&args.model_dir, &sentences, 128, Some(128))?;
        let prepared = model.prepare(ctx, batch.batch, batch.seq, &batch.lens, None)?;
        prepared.run(ctx, &batch)?;
        let runs = if batch_size == 1 { 10 } else { 3 };
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            prepared.run(ctx, &batch)?;
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "  batch {batch_size:>2}: {:>8.1} sentences/s (median {:.1} ms of {runs} runs, {} tokens each)",
            batch_size as f64 / median,
            median * 1e3,
            batch.seq
        );
    }
    Ok(())
}
