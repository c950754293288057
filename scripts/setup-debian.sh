#!/usr/bin/env bash
# Installs what wgattn needs on a fresh Debian/Ubuntu machine (run as root):
# a Vulkan loader and Mesa's drivers (lavapipe gives a software Vulkan adapter when there is no
# GPU), and a Rust toolchain when none is installed.
set -euo pipefail
if ! dpkg -s mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y mesa-vulkan-drivers libvulkan1
fi
if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y curl ca-certificates build-essential
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi
