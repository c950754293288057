#!/usr/bin/env python3
"""Independent NumPy reference for all-MiniLM-L6-v2 sentence embeddings (float64).

Written from the model definition (BERT: Devlin et al. 2019, Hugging Face `BertModel`
config.json; sentence-transformers' mean pooling + L2 normalisation), sharing no code with
wgattn: its own safetensors reader, its own BERT WordPiece tokenizer (from vocab.txt:
clean-up, lower-casing, accent stripping, punctuation and CJK splitting, greedy longest-match
WordPiece), and the encoder in NumPy. Each sentence runs alone (no padding).

    python3 scripts/minilm_reference.py --model-dir DIR/model --out reference.json [SENTENCE ...]

Without sentences it uses tests/data/minilm_sentences.txt. Writes
{"sentences": [...], "ids": [[...]], "embeddings": [[384 floats], ...]}.
"""

import argparse
import json
import math
import os
import struct
import sys
import unicodedata

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        arr = np.frombuffer(data[a:b], dtype=dtypes[t["dtype"]]).reshape(t["shape"])
        out[name] = arr.astype(np.float64) if t["dtype"] != "I64" else arr
    return out


# --- BERT basic + WordPiece tokenizer -------------------------------------------------------

def is_punct(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def is_cjk(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def basic_tokens(text):
    # clean: drop control characters, whitespace -> space
    cleaned = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch) in ("Cc", "Cf") and ch not in "\t\n\r"):
            continue
        cleaned.append(" " if ch.isspace() else ch)
    text = "".join(cleaned)
    text = "".join(f" {c} " if is_cjk(ord(c)) else c for c in text)
    text = text.lower()
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    out = []
    for word in text.split():
        cur = ""
        for ch in word:
            if is_punct(ch):
                if cur:
                    out.append(cur)
                    cur = ""
                out.append(ch)
            else:
                cur += ch
        if cur:
            out.append(cur)
    return out


def wordpiece(word, vocab, max_chars=100):
    if len(word) > max_chars:
        return ["[UNK]"]
    pieces, start = [], 0
    while start < len(word):
        end, piece = len(word), None
        while start < end:
            sub = word[start:end]
            if start > 0:
                sub = "##" + sub
            if sub in vocab:
                piece = sub
                break
            end -= 1
        if piece is None:
            return ["[UNK]"]
        pieces.append(piece)
        start = end
    return pieces


def tokenize(text, vocab, max_len):
    toks = [p for w in basic_tokens(text) for p in wordpiece(w, vocab)]
    toks = ["[CLS]"] + toks[: max_len - 2] + ["[SEP]"]
    return [vocab[t] for t in toks]


# --- the encoder ---------------------------------------------------------------------------

def layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


_erf = np.vectorize(math.erf)


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def linear(x, w, name):
    return x @ w[name + ".weight"].T + w[name + ".bias"]


def encode(ids, w, cfg):
    s = len(ids)
    e, h = cfg["hidden_size"], cfg["num_attention_heads"]
    d = e // h
    eps = cfg["layer_norm_eps"]
    x = (w["embeddings.word_embeddings.weight"][ids]
         + w["embeddings.position_embeddings.weight"][:s]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    for l in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{l}."
        q = linear(x, w, p + "attention.self.query").reshape(s, h, d).transpose(1, 0, 2)
        k = linear(x, w, p + "attention.self.key").reshape(s, h, d).transpose(1, 0, 2)
        v = linear(x, w, p + "attention.self.value").reshape(s, h, d).transpose(1, 0, 2)
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        scores -= scores.max(-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(1, 0, 2).reshape(s, e)
        a = linear(ctx, w, p + "attention.output.dense")
        x = layer_norm(a + x, w[p + "attention.output.LayerNorm.weight"],
                       w[p + "attention.output.LayerNorm.bias"], eps)
        i = gelu(linear(x, w, p + "intermediate.dense"))
        o = linear(i, w, p + "output.dense")
        x = layer_norm(o + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    pooled = x.mean(0)
    return pooled / max(np.linalg.norm(pooled), 1e-12)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("sentences", nargs="*")
    args = ap.parse_args()
    sentences = args.sentences
    if not sentences:
        here = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(here, "..", "tests", "data", "minilm_sentences.txt"), encoding="utf-8") as f:
            sentences = [line.rstrip("\n") for line in f if line.strip()]
    with open(os.path.join(args.model_dir, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["hidden_act"] == "gelu", cfg["hidden_act"]
    with open(os.path.join(args.model_dir, "vocab.txt"), encoding="utf-8") as f:
        vocab = {tok.rstrip("\n"): i for i, tok in enumerate(f)}
    w = read_safetensors(os.path.join(args.model_dir, "model.safetensors"))
    ids = [tokenize(s, vocab, args.max_len) for s in sentences]
    emb = [encode(i, w, cfg).tolist() for i in ids]
    with open(args.out, "w") as f:
        json.dump({"sentences": sentences, "ids": ids, "embeddings": emb}, f)
    print(f"wrote {len(emb)} reference embeddings to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
