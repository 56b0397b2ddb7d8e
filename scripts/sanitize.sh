#!/usr/bin/env bash
# The sanitizer and fuzzing check (issue 17; SECURITY.md says what it guards): builds vkrnn with
# Debian's clang under AddressSanitizer + UndefinedBehaviorSanitizer into build-sanitize/, runs
# the default test suite there (any report fails its test), then each libFuzzer target briefly
# (tests/fuzz/README.md has the long runs). Expects scripts/install-deps.sh to have run.
#   scripts/sanitize.sh [FUZZ_SECONDS [CMAKE_ARGS...]]
# FUZZ_SECONDS per fuzz target, default 20; 0 skips fuzzing. CMAKE_ARGS go to the configure step.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzz_seconds="${1:-20}"
[ $# -gt 0 ] && shift
# No benchmark and no cross build here: neither parses untrusted input, and both are covered
# by the normal build. The tests share the normal build's Mesa shader cache (scripts/build.sh's
# build/; tests/CMakeLists.txt says why).
cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
      -DVKRNN_SANITIZE=address,undefined -DVKRNN_FUZZ=ON -DVKRNN_BUILD_BENCH=OFF \
      -DVKRNN_TEST_SHADER_CACHE="$PWD/build/mesa-shader-cache" "$@"
cmake --build build-sanitize -j"$(nproc)"
export VKRNN_REQUIRE_TORCH=1
# The test time limits are scaled for the sanitizers' slowdown (cmake/sanitize.cmake).
ctest --test-dir build-sanitize -L default --output-on-failure -j"$(nproc)"
if [ "$fuzz_seconds" -gt 0 ]; then
  tests/fuzz/run.sh build-sanitize --time "$fuzz_seconds"
fi
