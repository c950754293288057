#!/usr/bin/env bash
# Tests the browser build: builds web/pkg when missing (scripts/build-web.sh), then runs the
# Deno test (web/test/attention_test.js) on the WebGPU adapter Deno finds (wgpu inside Deno:
# Mesa's lavapipe on a machine without a GPU), after `deno fmt --check` and `deno lint` of web/.
#
# Deno comes from PyPI (the `deno` wheel holds the release binary), unpacked once under
# $WGATTN_TOOLS (default target/web-tools).
#
# Usage: scripts/test-web.sh [--chromium]
#   --chromium   also load the page in headless Chromium (SwiftShader WebGPU) and save a
#                screenshot to target/web/page.png (needs the `chromium` package).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
deno_version=2.9.8
tools=${WGATTN_TOOLS:-$root/target/web-tools}

deno=$tools/deno-$deno_version/deno
if [ ! -x "$deno" ]; then
    echo "test-web: fetching deno $deno_version from PyPI into $tools" >&2
    python3 -m pip --version >/dev/null 2>&1 || {
        sudo=""
        [ "$(id -u)" -ne 0 ] && sudo=sudo
        $sudo apt-get install -y -qq python3-pip >/dev/null
    }
    wheels=$(mktemp -d)
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$wheels" "deno==$deno_version"
    mkdir -p "$(dirname "$deno")"
    python3 - "$wheels"/deno-*.whl "$deno" "deno-$deno_version.data/scripts/deno" <<'EOF'
import shutil, sys, zipfile
wheel, dest, member = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out)
EOF
    chmod +x "$deno"
    rm -rf "$wheels"
fi

[ -f web/pkg/wgattn.js ] || scripts/build-web.sh

# wgpu inside Deno wants a runtime directory (as the CLI does).
if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -d "$XDG_RUNTIME_DIR" ]; then
    export XDG_RUNTIME_DIR=${TMPDIR:-/tmp}/wgattn-xdg-runtime
    mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
fi

cd web
"$deno" fmt --check
"$deno" lint
"$deno" test --allow-read --allow-env
if [ "${1:-}" = "--chromium" ]; then
    "$deno" run --allow-net --allow-read --allow-write --allow-run --allow-env test/chromium.js \
        "$root/target/web/page.png" --runs 1
fi
