#!/usr/bin/env bash
# wgattn's backward beside burn's autodiff backward, same machine, same run (BENCHMARKS.md,
# "Backward pass vs burn"). Needs a release build of wgattn (cargo build --release) and of
# the peer harness (scripts/peers/README.md); set BURN_ATTN to its binary and WGATTN to
# wgattn's if they are not where the defaults say.
#   scripts/bench-backward-vs-burn.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-5}"
WGATTN="${WGATTN:-target/release/wgattn}"
BURN_ATTN="${BURN_ATTN:-${CARGO_TARGET_DIR:-$HOME/burn-attn-target}/release/burn-attn}"
for bin in "$WGATTN" "$BURN_ATTN"; do
    [ -x "$bin" ] || { echo "missing $bin (see the comment at the top of $0)" >&2; exit 2; }
done
# label (burn's --only), wgattn shape, causal
shapes=(
    "1x8x512x64 1,8,8,512,512,64 no"
    "1x8x1024x64 1,8,8,1024,1024,64 no"
    "1x8x1024x64 1,8,8,1024,1024,64 yes"
    "4x12x256x64 4,12,12,256,256,64 no"
)
for row in "${shapes[@]}"; do
    read -r label shape causal <<<"$row"
    wg_causal=() burn_causal=()
    if [ "$causal" = yes ]; then wg_causal=(--causal top-left); burn_causal=(--causal); fi
    echo "== $label causal=$causal"
    "$WGATTN" bench --backward --shape "$shape" "${wg_causal[@]}" --runs "$RUNS" --json
    "$BURN_ATTN" bench-backward --impl unfused --only "$label" "${burn_causal[@]}" \
        --min-runs "$RUNS" --json 2>/dev/null | grep -F "\"causal\":$([ "$causal" = yes ] && echo true || echo false)" || true
done
