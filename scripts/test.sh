#!/usr/bin/env bash
# Installs what is needed, builds, and runs the whole default test suite on the best Vulkan
# device present (lavapipe where there is no GPU), with the Khronos validation layer on.
# On lavapipe the shader-heavy suites then run again at its other two subgroup sizes
# (LP_NATIVE_VECTOR_WIDTH 128: 4 lanes, 256: 8, 512: 16; real GPUs have 16 to 128).
# The exhaustive grids run with: ctest --test-dir build -L long
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
# Parity tests must fail, not skip, when PyTorch is missing from a machine that should have it.
export VKRNN_REQUIRE_TORCH=1
ctest --test-dir build -L default --output-on-failure -j2 --timeout 1200

# The width of the lavapipe the suite just ran on ("llvmpipe (LLVM 15.0.6, 256 bits)"), or
# nothing when the selected device is another driver.
native=$(build/tools/vkrnn-info --json | /usr/bin/python3 -c '
import json, re, sys
info = json.load(sys.stdin)
name = info["devices"][info["selected"]]["name"]
m = re.match(r"llvmpipe \(.*, (\d+) bits\)", name)
print(m.group(1) if m else "")')
if [ -z "$native" ]; then
  echo "test.sh: not lavapipe: no runs at other subgroup sizes"
  exit 0
fi
# tests/CMakeLists.txt gives each width its own shader cache folders (Mesa's cache key leaves
# the width out).
heavy='^test_(runtime|attention|self_attention|rnn|rnn_fp16|rnn_int8|linear|beam_search|models_ops)$'
for width in 128 256 512; do
  [ "$width" = "$native" ] && continue
  echo "test.sh: shader-heavy suites at LP_NATIVE_VECTOR_WIDTH=$width"
  LP_NATIVE_VECTOR_WIDTH=$width ctest --test-dir build -R "$heavy" --output-on-failure -j2 --timeout 1200
done
