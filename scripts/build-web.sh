#!/usr/bin/env bash
# Builds the browser package web/pkg/ (wgattn.js, wgattn_bg.wasm, wgattn.d.ts) from the wasm/
# crate, on a fresh Debian 12 machine, without rustup:
#
#   1. Debian's rustc-web / cargo-web 1.96 and rust-web-src (the standard library's source) from
#      bookworm-security, and lld-22 (rust-lld, the wasm linker): apt-get when missing (root).
#   2. The standard library for wasm32-unknown-unknown built from that source by cargo
#      (-Zbuild-std, allowed on the stable compiler by RUSTC_BOOTSTRAP=1): Debian ships no
#      prebuilt wasm32 std and the rustup server may be unreachable.
#   3. wasm-bindgen-cli at exactly the version of the wasm-bindgen crate in Cargo.lock, from
#      crates.io, installed once under $WGATTN_TOOLS (default target/web-tools).
#
# Usage: scripts/build-web.sh [--debug]     (release by default)
# Environment: WGATTN_TOOLS (where wasm-bindgen-cli goes, default target/web-tools),
# WGATTN_WEB_TARGET_DIR (cargo's target directory, default target/web: a separate one, since
# Debian's compiler is not the one that builds the native crates).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
profile=release
[ "${1:-}" = "--debug" ] && profile=debug

# 1. Toolchain.
need=()
[ -x /usr/bin/rustc ] && /usr/bin/rustc --print target-list 2>/dev/null | grep -qx wasm32-unknown-unknown \
    && /usr/bin/rustc --version | grep -q '^rustc 1\.9[6-9]' || need+=(rustc-web cargo-web)
[ -d /usr/lib/rustlib/src/rust/library/std ] || need+=(rust-web-src)
[ -x /usr/bin/lld-22 ] || need+=(lld-22)
if [ ${#need[@]} -gt 0 ]; then
    echo "build-web: installing ${need[*]} from bookworm-security" >&2
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq -t bookworm-security "${need[@]}" >/dev/null
fi
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
cargo_web=/usr/bin/cargo

# 3. wasm-bindgen-cli at the Cargo.lock version (checked before the long build).
version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
[ -n "$version" ] || { echo "build-web: no wasm-bindgen in Cargo.lock" >&2; exit 1; }
tools=${WGATTN_TOOLS:-$root/target/web-tools}
bindgen=$tools/wasm-bindgen-$version/bin/wasm-bindgen
if [ ! -x "$bindgen" ]; then
    echo "build-web: installing wasm-bindgen-cli $version into $tools" >&2
    # The host cargo builds the tool (any recent one will do).
    host_cargo=$(command -v cargo || echo $cargo_web)
    env -u RUSTC -u RUSTDOC -u RUSTC_BOOTSTRAP "$host_cargo" install wasm-bindgen-cli \
        --version "=$version" --root "$tools/wasm-bindgen-$version" --quiet
fi
"$bindgen" --version | grep -q " $version\$" || { echo "build-web: $bindgen is not $version" >&2; exit 1; }

# 2. The wasm module (std from source).
target_dir=${WGATTN_WEB_TARGET_DIR:-$root/target/web}
export CARGO_TARGET_DIR=$target_dir
flags=()
[ $profile = release ] && flags+=(--release)
# Warnings in wgattn's own crates fail the build (clippy does not see the wasm32-only code).
log=$(mktemp)
"$cargo_web" build -p wgattn-wasm --lib --target wasm32-unknown-unknown \
    -Zbuild-std=std,panic_abort "${flags[@]}" 2>&1 | tee "$log" >&2
if grep -Eq '^warning: `wgattn(-wasm)?` \(lib\) generated' "$log"; then
    echo "build-web: warnings in wgattn's crates (above)" >&2
    rm -f "$log"
    exit 1
fi
rm -f "$log"
wasm=$target_dir/wasm32-unknown-unknown/$profile/wgattn_wasm.wasm

rm -rf web/pkg
"$bindgen" --target web --out-dir web/pkg --out-name wgattn "$wasm"
echo "build-web: built web/pkg ($(du -h web/pkg/wgattn_bg.wasm | cut -f1) of wasm) with wasm-bindgen $version" >&2
