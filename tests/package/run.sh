#!/usr/bin/env bash
# vkrnn as other projects consume it (ctest: package_consumers). Installs the build tree into a
# temporary prefix, moves the prefix (the package must be relocatable), and builds outside the
# source tree, then runs on the Vulkan device present (lavapipe in CI):
#   1. a C++ and a C app with find_package(vkrnn): shared library, then VKRNN_USE_STATIC_LIBS
#   2. the C++ app with pkg-config
#   3. the C app with pkg-config, and linked with libvkrnn.a and pkg-config --static's libraries
#   4. a C++17 parent project without GTest that builds vkrnn with add_subdirectory
# Usage: run.sh BUILD_DIR SOURCE_DIR WORK_DIR
set -euo pipefail
build=$(realpath "$1")
src=$(realpath "$2")
work=$3
here=$src/tests/package
rm -rf "$work"
mkdir -p "$work"
work=$(realpath "$work")

step() { echo "== $*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }
# Runs an app on the dates model; it must print the answer, and nothing from the validation layer.
run_app() {
  local out
  out=$("$@" 2>&1) || fail "$* exited with $?: $out"
  echo "$out"
  grep -q -- "-> '2026-11-21'" <<<"$out" || fail "$*: wrong answer"
  ! grep -q "vkrnn validation" <<<"$out" || fail "$*: validation messages"
}
needs_libvkrnn() { readelf -d "$1" | grep -q "NEEDED.*libvkrnn"; }
# Runs a command with its output kept out of the way unless it fails.
quiet() { "$@" >"$work/last.log" 2>&1 || { cat "$work/last.log"; fail "$*"; }; }

step "install, then move the prefix"
quiet cmake --install "$build" --prefix "$work/stage"
mv "$work/stage" "$work/prefix"
prefix=$work/prefix
libdir=$(dirname "$(find "$prefix" -name vkrnn.pc)")/..
libdir=$(realpath "$libdir")
model=$prefix/share/vkrnn/models/dates
[ -f "$model/model.json" ] || fail "the dates model is not installed"
run=$(find "$libdir" -name 'libvkrnn.so.*.*.*' | head -n1)
[ -n "$run" ] || fail "no libvkrnn.so.X.Y.Z installed"
"$prefix/bin/vkrnn-info" >/dev/null || fail "installed vkrnn-info does not run"

export CC=${CC:-cc} CXX=${CXX:-c++}
for kind in shared static; do
  step "1. find_package(vkrnn), $kind"
  static=$([ $kind = static ] && echo ON || echo OFF)
  quiet cmake -S "$here/find_package" -B "$work/find_package_$kind" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" \
        -DVKRNN_USE_STATIC_LIBS=$static
  quiet cmake --build "$work/find_package_$kind"
  for app in app app_c; do
    exe=$work/find_package_$kind/$app
    if [ $kind = shared ]; then needs_libvkrnn "$exe" || fail "$exe does not use libvkrnn.so"
    else ! needs_libvkrnn "$exe" || fail "$exe links libvkrnn.so, not libvkrnn.a"; fi
    run_app "$exe" "$model"
  done
done

export PKG_CONFIG_PATH=$libdir/pkgconfig
pc_libdir=$(pkg-config --variable=libdir vkrnn)
step "2. pkg-config, C++"
# shellcheck disable=SC2046
$CXX -std=c++20 "$here/app.cpp" -o "$work/pc_app" $(pkg-config --cflags --libs vkrnn) -Wl,-rpath,"$pc_libdir"
run_app "$work/pc_app" "$(pkg-config --variable=modeldir vkrnn)/dates"

step "3. pkg-config, C: shared, then libvkrnn.a alone with pkg-config --static's libraries"
# shellcheck disable=SC2046
$CC -std=c99 -Wall -Wextra -Wpedantic -Werror "$here/app.c" -o "$work/pc_app_c" \
    $(pkg-config --cflags --libs vkrnn) -Wl,-rpath,"$pc_libdir"
run_app "$work/pc_app_c" "$model"
static_libs=$(pkg-config --static --libs vkrnn | sed "s|-lvkrnn\b|$pc_libdir/libvkrnn.a|")
# shellcheck disable=SC2086
$CC -std=c99 "$here/app.c" -o "$work/pc_app_c_static" $(pkg-config --cflags vkrnn) $static_libs
! needs_libvkrnn "$work/pc_app_c_static" || fail "the static C app links libvkrnn.so"
run_app "$work/pc_app_c_static" "$model"

step "4. add_subdirectory from a C++17 parent without GTest or CLI11"
quiet cmake -S "$here/subproject" -B "$work/subproject" -G Ninja -DVKRNN_SOURCE_DIR="$src" \
      -DCMAKE_DISABLE_FIND_PACKAGE_GTest=ON -DCMAKE_DISABLE_FIND_PACKAGE_CLI11=ON
quiet cmake --build "$work/subproject" -j"$(nproc)"
run_app "$work/subproject/app" "$src/samples/dates/model"

echo "package consumers: all passed"
