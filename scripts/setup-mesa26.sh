#!/usr/bin/env bash
# Makes a Debian trixie root with Mesa 26's lavapipe and llvmpipe (mesa-vulkan-drivers and the
# GL/EGL drivers from trixie-backports): a software Vulkan adapter with cooperative matrices
# (VK_KHR_cooperative_matrix, 8x8 f16), which the Mesa 22 of Debian bookworm lacks. The
# binaries built on bookworm run in it unchanged (trixie's glibc is newer). Idempotent: the
# root is cached in target/mesa26/root (WGATTN_MESA26_ROOT overrides it) and made again only
# when it is missing or incomplete. Run as root (debootstrap and chroot need it).
# Used by scripts/test-mesa26.sh; DEBIAN_MIRROR overrides the mirror.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${WGATTN_MESA26_ROOT:-target/mesa26/root}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=(mesa-vulkan-drivers libvulkan1 libegl1 libegl-mesa0 libgl1-mesa-dri)

if [ -f "$root/.wgattn-mesa26" ]; then
    echo "setup-mesa26: $root is ready ($(cat "$root/.wgattn-mesa26"))"
    exit 0
fi
fail() {
    echo "setup-mesa26: $*" >&2
    echo "setup-mesa26: the Mesa 26 leg needs root, debootstrap, chroot and mount (a container" >&2
    echo "  without CAP_SYS_ADMIN/CAP_SYS_CHROOT cannot make it); alternatively run the tests on" >&2
    echo "  a system whose Mesa is 26 or newer: cargo test --test coop" >&2
    exit 2
}
[ "$(id -u)" = 0 ] || fail "must run as root (now uid $(id -u))"
command -v unshare >/dev/null || fail "unshare (util-linux) is missing"
if ! command -v debootstrap >/dev/null; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap
fi

tmp="$root.partial"
rm -rf "$tmp"
mkdir -p "$(dirname "$root")"
echo "setup-mesa26: debootstrap trixie into $tmp (about a minute)"
debootstrap --variant=minbase --include=ca-certificates trixie "$tmp" "$mirror" \
    >"$(dirname "$root")/debootstrap.log" 2>&1 ||
    fail "debootstrap failed (log: $(dirname "$root")/debootstrap.log)"
echo "deb $mirror trixie-backports main" >"$tmp/etc/apt/sources.list.d/backports.list"
cp /etc/resolv.conf "$tmp/etc/resolv.conf" 2>/dev/null || true
# /proc and /dev are mounted in a private mount namespace: they go away with it.
unshare --mount --propagation private bash -euo pipefail -c '
    root=$1; shift
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    chroot "$root" apt-get update -q
    chroot "$root" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends -t trixie-backports "$@"
' _ "$tmp" "${packages[@]}" || fail "apt-get in the trixie root failed"
chroot "$tmp" apt-get clean
version=$(chroot "$tmp" dpkg-query -W -f '${Version}' mesa-vulkan-drivers)
case "$version" in
26.* | 2[7-9].* | [3-9][0-9].*) ;;
*) fail "trixie-backports gave mesa-vulkan-drivers $version, the leg needs 26 or newer" ;;
esac
echo "mesa-vulkan-drivers $version" >"$tmp/.wgattn-mesa26"
rm -rf "$root"
mv "$tmp" "$root"
echo "setup-mesa26: $root is ready (mesa-vulkan-drivers $version)"
