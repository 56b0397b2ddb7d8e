#!/usr/bin/env bash
# The sanitizer and fuzzing check (issue 17; SECURITY.md says what it guards): builds vkrnn with
# Debian's clang under AddressSanitizer + UndefinedBehaviorSanitizer into build-sanitize/, runs
# the default test suite there (any report fails its test), then each libFuzzer target briefly
# (tests/fuzz/README.md has the long runs). Expects scripts/install-deps.sh to have run.
#   scripts/sanitize.sh [FUZZ_SECONDS]    seconds per fuzz target, default 20; 0 skips fuzzing
set -euo pipefail
cd "$(dirname "$0")/.."
fuzz_seconds="${1:-20}"
# No benchmark and no cross build here: neither parses untrusted input, and both are covered
# by the normal build.
cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
      -DVKRNN_SANITIZE=address,undefined -DVKRNN_FUZZ=ON -DVKRNN_BUILD_BENCH=OFF "$@"
cmake --build build-sanitize -j"$(nproc)"
export VKRNN_REQUIRE_TORCH=1
# The test time limits are scaled for the sanitizers' slowdown (cmake/sanitize.cmake).
ctest --test-dir build-sanitize -L default --output-on-failure -j"$(nproc)"
if [ "$fuzz_seconds" -gt 0 ]; then
  tests/fuzz/run.sh build-sanitize --time "$fuzz_seconds"
fi
