//! A BERT encoder (all-MiniLM-L6-v2) on wgattn's layers: embeddings (three table gathers and
//! a layer norm), then per layer the [`MultiHeadAttention`] layer with its residual, a layer
//! norm, the feed-forward (projection with GELU in its epilogue, projection with the
//! residual in its epilogue) and a layer norm, all recorded into one command encoder. Mean
//! pooling over the attention mask and L2 normalisation (sentence-transformers' pooling) run
//! on the host.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use wgattn::layer::{
    Embedding, LayerNorm, Linear, LinearOptions, MhaBuffers, MhaConfig, MultiHeadAttention,
    NamingScheme, TensorFile, load_mha,
};
use wgattn::{Context, DType, Error};

/// The fields of `config.json` the encoder needs.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    pub hidden: usize,
    pub heads: usize,
    pub layers: usize,
    pub intermediate: usize,
    pub eps: f32,
    pub max_positions: usize,
    pub vocab: usize,
    pub type_vocab: usize,
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::BadFile {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl BertConfig {
    /// Reads `config.json` of a Hugging Face BERT model.
    pub fn read(path: &Path) -> Result<BertConfig, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(path, e.to_string()))?;
        let int = |k: &str| {
            v[k].as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| bad(path, format!("no integer `{k}`")))
        };
        if v["hidden_act"].as_str() != Some("gelu") {
            return Err(bad(path, "hidden_act must be `gelu` (the erf form)"));
        }
        Ok(BertConfig {
            hidden: int("hidden_size")?,
            heads: int("num_attention_heads")?,
            layers: int("num_hidden_layers")?,
            intermediate: int("intermediate_size")?,
            eps: v["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32,
            max_positions: int("max_position_embeddings")?,
            vocab: int("vocab_size")?,
            type_vocab: int("type_vocab_size")?,
        })
    }
}

struct Layer {
    attention: MultiHeadAttention,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// The encoder with its weights on the GPU.
pub struct Bert {
    pub config: BertConfig,
    pub dtype: DType,
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
}

/// One tokenised batch: ids and token types `[B, S]` (right-padded) and each sequence's
/// length.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub batch: usize,
    pub seq: usize,
    pub ids: Vec<u32>,
    pub types: Vec<u32>,
    pub lens: Vec<u32>,
    pub tokens: Vec<Vec<String>>,
}

/// Tokenises `sentences` with the model's `tokenizer.json` (truncated at `max_len`), padded
/// to the longest or to `pad_to`.
pub fn tokenize(
    dir: &Path,
    sentences: &[String],
    max_len: usize,
    pad_to: Option<usize>,
) -> Result<Batch, Error> {
    let path = dir.join("tokenizer.json");
    let mut tok = tokenizers::Tokenizer::from_file(&path).map_err(|e| bad(&path, e.to_string()))?;
    tok.with_padding(None);
    tok.with_truncation(Some(tokenizers::TruncationParams {
        max_length: max_len,
        ..Default::default()
    }))
    .map_err(|e| bad(&path, e.to_string()))?;
    let enc = tok
        .encode_batch(sentences.to_vec(), true)
        .map_err(|e| bad(&path, e.to_string()))?;
    let longest = enc.iter().map(|e| e.get_ids().len()).max().unwrap_or(1);
    let seq = pad_to.unwrap_or(longest).max(longest).max(1);
    let batch = sentences.len();
    let mut b = Batch {
        batch,
        seq,
        ids: vec![0; batch * seq],
        types: vec![0; batch * seq],
        lens: Vec::with_capacity(batch),
        tokens: Vec::with_capacity(batch),
    };
    for (i, e) in enc.iter().enumerate() {
        let n = e.get_ids().len();
        b.ids[i * seq..i * seq + n].copy_from_slice(e.get_ids());
        b.types[i * seq..i * seq + n].copy_from_slice(e.get_type_ids());
        b.lens.push(n as u32);
        b.tokens.push(e.get_tokens().to_vec());
    }
    Ok(b)
}

/// The directory holding `config.json`, `tokenizer.json` and `model.safetensors`.
pub fn model_files(dir: &Path) -> Result<(PathBuf, PathBuf), Error> {
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        if !dir.join(f).is_file() {
            return Err(bad(
                &dir.join(f),
                "missing: fetch the model with scripts/fetch-minilm.sh",
            ));
        }
    }
    Ok((dir.join("config.json"), dir.join("model.safetensors")))
}

impl Bert {
    /// Loads the model in `dir` with activations and weights stored as `dtype`.
    pub fn load(ctx: &Context, dir: &Path, dtype: DType) -> Result<Bert, Error> {
        let (config_path, weights_path) = model_files(dir)?;
        let config = BertConfig::read(&config_path)?;
        let file = TensorFile::open(&weights_path)?;
        let e = config.hidden;
        let table = |name: &str, rows: usize| -> Result<Embedding, Error> {
            let t = file.shaped(name, &[rows, e])?;
            Embedding::new(ctx, name, &t, rows)
        };
        let norm = |prefix: &str| -> Result<LayerNorm, Error> {
            let g = file.shaped(&format!("{prefix}.weight"), &[e])?;
            let b = file.shaped(&format!("{prefix}.bias"), &[e])?;
            LayerNorm::new(ctx, prefix, &g, &b, config.eps)
        };
        let mha_config = MhaConfig::new(e, config.heads).residual(true).dtype(dtype);
        let mut layers = Vec::with_capacity(config.layers);
        for l in 0..config.layers {
            let p = format!("encoder.layer.{l}.");
            let weights = load_mha(&file, NamingScheme::Bert, &p, &mha_config)?;
            let inter = format!("{p}intermediate.dense");
            let out = format!("{p}output.dense");
            layers.push(Layer {
                attention: MultiHeadAttention::new(ctx, &mha_config, &weights)?,
                attention_norm: norm(&format!("{p}attention.output.LayerNorm"))?,
                intermediate: Linear::new(
                    ctx,
                    &inter,
                    &file.linear(&inter, config.intermediate, e, false)?,
                    dtype,
                )?,
                output: Linear::new(
                    ctx,
                    &out,
                    &file.linear(&out, e, config.intermediate, false)?,
                    dtype,
                )?,
                output_norm: norm(&format!("{p}output.LayerNorm"))?,
            });
        }
        Ok(Bert {
            word: table("embeddings.word_embeddings.weight", config.vocab)?,
            position: table(
                "embeddings.position_embeddings.weight",
                config.max_positions,
            )?,
            token_type: table("embeddings.token_type_embeddings.weight", config.type_vocab)?,
            embedding_norm: norm("embeddings.LayerNorm")?,
            layers,
            config,
            dtype,
        })
    }

    /// Prepares every pass for `batch` sequences of `seq` tokens with lengths `lens`, keeping
    /// the attention probabilities of layer `weights_of` if asked.
    pub fn prepare(
        &self,
        ctx: &Context,
        batch: usize,
        seq: usize,
        lens: &[u32],
        weights_of: Option<usize>,
    ) -> Result<Prepared, Error> {
        let (e, dtype) = (self.config.hidden, self.dtype);
        let m = batch * seq;
        if seq > self.config.max_positions {
            return Err(Error::InvalidLayer {
                field: "tokens".into(),
                problem: format!(
                    "{seq} tokens exceed the model's {} positions",
                    self.config.max_positions
                ),
            });
        }
        let buffer = |label: &str, elems: usize| {
            ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: ((elems * dtype.size()) as u64).next_multiple_of(4),
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let words = |label: &str, n: usize| {
            ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: (n.max(1) * 4) as u64,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let mut layers = Vec::with_capacity(self.layers.len());
        for (l, layer) in self.layers.iter().enumerate() {
            let mut spec = layer
                .attention
                .attention_spec(batch, seq, seq)
                .kv_lens(lens.to_vec());
            if weights_of == Some(l) {
                spec = spec.with_weights(true);
            }
            layers.push(PreparedLayer {
                attention: layer.attention.plan(ctx, &spec)?,
                attention_norm: layer.attention_norm.prepare(ctx, m, dtype)?,
                intermediate: layer.intermediate.prepare(
                    ctx,
                    m,
                    LinearOptions {
                        gelu: true,
                        ..LinearOptions::default()
                    },
                )?,
                output: layer.output.prepare(
                    ctx,
                    m,
                    LinearOptions {
                        residual: true,
                        ..LinearOptions::default()
                    },
                )?,
                output_norm: layer.output_norm.prepare(ctx, m, dtype)?,
            });
        }
        let weights = weights_of.map(|_| {
            ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("attention weights"),
                size: (batch * self.config.heads * seq * seq * 4) as u64,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        });
        Ok(Prepared {
            batch,
            seq,
            lens: lens.to_vec(),
            word: self.word.by_ids(ctx, m, false, dtype)?,
            position: self.position.by_positions(ctx, batch, seq, true, dtype)?,
            token_type: self.token_type.by_ids(ctx, m, true, dtype)?,
            embedding_norm: self.embedding_norm.prepare(ctx, m, dtype)?,
            layers,
            ids: words("ids", m),
            types: words("token types", m),
            starts: words("start positions", batch),
            h: buffer("hidden", m * e),
            a: buffer("attention out", m * e),
            b: buffer("normed", m * e),
            c: buffer("ffn out", m * e),
            i: buffer("intermediate", m * self.config.intermediate),
            weights,
            hidden: e,
            heads: self.config.heads,
            dtype,
        })
    }
}

struct PreparedLayer {
    attention: wgattn::layer::MhaPlan,
    attention_norm: wgattn::layer::NormPass,
    intermediate: wgattn::layer::LinearPass,
    output: wgattn::layer::LinearPass,
    output_norm: wgattn::layer::NormPass,
}

/// The encoder prepared for one batch shape: every pass and buffer.
pub struct Prepared {
    pub batch: usize,
    pub seq: usize,
    pub lens: Vec<u32>,
    word: wgattn::layer::GatherPass,
    position: wgattn::layer::GatherPass,
    token_type: wgattn::layer::GatherPass,
    embedding_norm: wgattn::layer::NormPass,
    layers: Vec<PreparedLayer>,
    ids: wgpu::Buffer,
    types: wgpu::Buffer,
    starts: wgpu::Buffer,
    h: wgpu::Buffer,
    a: wgpu::Buffer,
    b: wgpu::Buffer,
    c: wgpu::Buffer,
    i: wgpu::Buffer,
    weights: Option<wgpu::Buffer>,
    hidden: usize,
    heads: usize,
    dtype: DType,
}

/// The encoder's outputs for a batch.
pub struct Encoded {
    /// Last hidden state `[B, S, E]`.
    pub hidden: Vec<f32>,
    /// The attention probabilities `[B, H, S, S]` of the layer asked for.
    pub weights: Option<Vec<f32>>,
}

fn read(ctx: &Context, buffer: &wgpu::Buffer, elems: usize, dtype: DType) -> Vec<f32> {
    let bytes = ((elems * dtype.size()) as u64).next_multiple_of(4);
    let staging = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("read-back"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
    ctx.queue().submit([enc.finish()]);
    let slice = staging.slice(..);
    slice.map_async(wgpu::MapMode::Read, |r| r.expect("map"));
    ctx.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("poll");
    let data = slice.get_mapped_range().expect("mapped").to_vec();
    match dtype {
        DType::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(&data)[..elems].to_vec(),
        DType::F16 => data
            .chunks_exact(2)
            .take(elems)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    }
}

impl Prepared {
    /// Runs the encoder on `batch` (of this shape) and reads the last hidden state back.
    pub fn run(&self, ctx: &Context, batch: &Batch) -> Result<Encoded, Error> {
        assert_eq!((batch.batch, batch.seq), (self.batch, self.seq));
        let q = ctx.queue();
        q.write_buffer(&self.ids, 0, bytemuck::cast_slice(&batch.ids));
        q.write_buffer(&self.types, 0, bytemuck::cast_slice(&batch.types));
        q.write_buffer(
            &self.starts,
            0,
            bytemuck::cast_slice(&vec![0u32; self.batch]),
        );
        let device = ctx.device();
        let mut enc = device.create_command_encoder(&Default::default());
        // Embeddings: word + position + token type, then the layer norm.
        self.word
            .encode(device, &mut enc, &self.ids, None, &self.a)?;
        self.position
            .encode(device, &mut enc, &self.starts, Some(&self.a), &self.b)?;
        self.token_type
            .encode(device, &mut enc, &self.types, Some(&self.b), &self.c)?;
        self.embedding_norm
            .encode(device, &mut enc, &self.c, &self.h)?;
        for l in &self.layers {
            // a = h + attention(h); b = LN(a); i = GELU(b·W1ᵀ + b1); c = b + i·W2ᵀ + b2; h = LN(c)
            let mut bufs = MhaBuffers::new(&self.h, &self.a);
            bufs.weights = l
                .attention
                .spec()
                .return_weights
                .then_some(())
                .and(self.weights.as_ref());
            l.attention.encode(device, &mut enc, &bufs)?;
            l.attention_norm
                .encode(device, &mut enc, &self.a, &self.b)?;
            l.intermediate
                .encode(device, &mut enc, &self.b, &self.i, None)?;
            l.output
                .encode(device, &mut enc, &self.i, &self.c, Some(&self.b))?;
            l.output_norm.encode(device, &mut enc, &self.c, &self.h)?;
        }
        q.submit([enc.finish()]);
        let hidden = read(
            ctx,
            &self.h,
            self.batch * self.seq * self.hidden,
            self.dtype,
        );
        let weights = self.weights.as_ref().map(|w| {
            read(
                ctx,
                w,
                self.batch * self.heads * self.seq * self.seq,
                DType::F32,
            )
        });
        Ok(Encoded { hidden, weights })
    }
}

/// Mean pooling over each sequence's tokens, then L2 normalisation (sentence-transformers).
pub fn pool(hidden: &[f32], batch: &Batch, width: usize) -> Vec<Vec<f32>> {
    (0..batch.batch)
        .map(|b| {
            let n = batch.lens[b] as usize;
            let mut v = vec![0f64; width];
            for s in 0..n {
                let row = &hidden[(b * batch.seq + s) * width..][..width];
                for (a, &x) in v.iter_mut().zip(row) {
                    *a += x as f64;
                }
            }
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
            v.iter().map(|x| (x / norm) as f32).collect()
        })
        .collect()
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-300)
}

/// Tokenises, runs and pools `sentences`: one normalised embedding per sentence.
pub fn embed(
    ctx: &Context,
    model: &Bert,
    dir: &Path,
    sentences: &[String],
) -> Result<Vec<Vec<f32>>, Error> {
    let batch = tokenize(dir, sentences, 256, None)?;
    let prepared = model.prepare(ctx, batch.batch, batch.seq, &batch.lens, None)?;
    let out = prepared.run(ctx, &batch)?;
    Ok(pool(&out.hidden, &batch, model.config.hidden))
}
