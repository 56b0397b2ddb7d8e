#!/usr/bin/env bash
# The library, the samples and the tools built with Debian's clang (ctest: clang_build), so the
# project keeps compiling with the clang the sanitizer and fuzz builds need (scripts/sanitize.sh;
# clang 14 refuses, for one, a lambda that captures a structured binding). Unoptimised
# (CMAKE_BUILD_TYPE=None), no -Werror (clang warns about other things than GCC): a compile and
# link check, kept short. Exit 77 (skip) without clang.
# Usage: clang.sh SOURCE_DIR WORK_DIR
set -euo pipefail
src=$(realpath "$1")
work=$2
command -v clang++ >/dev/null || { echo "no clang++ (Debian's clang)"; exit 77; }
rm -rf "$work"
cmake -S "$src" -B "$work" -G Ninja -DCMAKE_BUILD_TYPE=None \
      -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
      -DVKRNN_BUILD_TESTS=OFF -DVKRNN_BUILD_BENCH=OFF -DVKRNN_INSTALL=OFF
cmake --build "$work" -j"$(nproc)"
echo "clang build ($(clang++ --version | head -n1)): passed"
