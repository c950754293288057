#!/usr/bin/env bash
# Builds the burn peer (scripts/peers/burn-attn) in release, strips and gzips it so that it
# fits next to the repository in the 64 MiB a device run carries (~14 MB instead of ~84 MB).
#   scripts/gpu/pack-burn.sh [OUT.gz]      (default: target/gpu-carry/burn-attn.gz)
# The build takes ~15 min on 2 cores the first time; CARGO_TARGET_DIR defaults to
# ~/burn-attn-target (outside the repository, as scripts/peers/README.md says).
# BURN_BIN=path packs a binary already built instead (no cargo run).
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/target/gpu-carry/burn-attn.gz}
if [ -z "${BURN_BIN:-}" ]; then
  export CARGO_TARGET_DIR=${BURN_TARGET_DIR:-$HOME/burn-attn-target}
  (cd "$root/scripts/peers/burn-attn" && nice -n 10 cargo build --release --locked)
  BURN_BIN=$CARGO_TARGET_DIR/release/burn-attn
fi
mkdir -p "$(dirname "$out")"
tmp=$(mktemp)
strip -o "$tmp" "$BURN_BIN"
gzip -9 -c "$tmp" >"$out"
rm -f "$tmp"
ls -l "$out"
