#!/usr/bin/env bash
# Configures and builds vkrnn into build/ (Release, Ninja). Extra arguments go to cmake's
# configure step, e.g. scripts/build.sh -DVKRNN_BUILD_BENCH=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DVKRNN_WERROR=ON "$@"
cmake --build build -j"$(nproc)"
