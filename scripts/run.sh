#!/usr/bin/env bash
# Installs what is needed, builds, and runs vkrnn on the best Vulkan device present (lavapipe
# where there is no GPU): the device listing and a dispatch whose result is checked.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
./build/tools/vkrnn-info --smoke
