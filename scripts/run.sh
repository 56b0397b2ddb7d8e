#!/usr/bin/env bash
# Installs what is needed, builds, and runs the flagship sample on the best Vulkan device present
# (lavapipe where there is no GPU): free-form dates normalised by an attention RNN, with the
# attention alignment written as a PNG heatmap.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
./build/samples/vkrnn-dates "Saturday 21 November 2026" "21/11/26" "Nov 21st, 2026" "2026.11.21" \
  --heatmap build/dates-heatmap.png
echo "(all devices: build/tools/vkrnn-info; more samples: build/samples/vkrnn-sentiment, build/samples/vkrnn-embed)"
