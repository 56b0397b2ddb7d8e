#!/usr/bin/env bash
# Installs what is needed, builds, and runs the whole default test suite on the best Vulkan
# device present (lavapipe where there is no GPU), with the Khronos validation layer on.
# The exhaustive grids run with: ctest --test-dir build -L long
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
# Parity tests must fail, not skip, when PyTorch is missing from a machine that should have it.
export VKRNN_REQUIRE_TORCH=1
ctest --test-dir build -L default --output-on-failure -j2 --timeout 1200
