#!/usr/bin/env bash
# The Mesa 26 leg: runs the integration tests on Mesa 26's lavapipe, whose Vulkan adapter has
# cooperative matrices, in the Debian trixie root of scripts/setup-mesa26.sh (made when
# missing). Builds the test binaries here, then runs them in the root with the repository
# bind-mounted at the same path, so their compiled-in paths (tests/data, target/minilm) hold;
# the mounts live in a private mount namespace and go away with it. Run as root.
#
#   scripts/test-mesa26.sh             the cooperative-matrix tests (tests/coop), then the suite
#   scripts/test-mesa26.sh coop [ARGS] only the cooperative-matrix tests
#   scripts/test-mesa26.sh it [ARGS]   only the suite (tests/it)
#
# ARGS go to the test binary (a name filter, --nocapture, ...). Every test of tests/coop
# needs cooperative matrices and fails (never skips) without them; WGATTN_REQUIRE_GPU=1 is set,
# so no adapter fails too.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
./scripts/setup-mesa26.sh
root=$(cd "${WGATTN_MESA26_ROOT:-target/mesa26/root}" && pwd)

what=${1:-all}
[ $# -gt 0 ] && shift
case "$what" in
all) tests=(coop it) ;;
coop | it) tests=("$what") ;;
*) echo "test-mesa26: unknown leg '$what' (all, coop or it)" >&2 && exit 2 ;;
esac

[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
args=()
for t in "${tests[@]}"; do args+=(--test "$t"); done
cargo test -p wgattn --no-run "${args[@]}"
# the executables cargo built, in the order of the targets asked for
bins=()
for t in "${tests[@]}"; do
    bin=$(cargo test -p wgattn --no-run --test "$t" --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
    [ -n "$bin" ] || { echo "test-mesa26: no executable for test target $t" >&2 && exit 1; }
    bins+=("$bin")
done

run_in_root() {
    unshare --mount --propagation private bash -euo pipefail -c '
        root=$1 repo=$2; shift 2
        mount -t proc proc "$root/proc"
        mount --rbind /dev "$root/dev"
        mkdir -p "$root$repo"
        mount --bind "$repo" "$root$repo"
        exec chroot "$root" env -i PATH=/usr/bin:/bin HOME=/root TMPDIR=/tmp \
            WGATTN_REQUIRE_GPU=1 RUST_BACKTRACE=1 \
            ${RUST_TEST_THREADS:+RUST_TEST_THREADS=$RUST_TEST_THREADS} \
            bash -c "cd \"\$0\" && exec \"\$@\"" "$repo" "$@"
    ' _ "$root" "$repo" "$@"
}

echo "test-mesa26: $(cat "$root/.wgattn-mesa26") in $root"
for i in "${!tests[@]}"; do
    echo "test-mesa26: ${tests[$i]} (${bins[$i]#"$repo"/})"
    run_in_root "${bins[$i]}" "$@"
done
