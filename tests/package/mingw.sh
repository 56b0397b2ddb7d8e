#!/usr/bin/env bash
# The library cross-compiled for Windows with MinGW-w64 (ctest: mingw_cross_build): the static
# library and vkrnn.dll, with the Windows branches (LoadLibrary of vulkan-1.dll, dllexport) and
# only the headers of Vulkan, fmt and nlohmann_json (the host's, without the rest of
# /usr/include). Compiles and links; nothing runs (no Windows here). Exit 77 (skip) without
# MinGW. Unoptimised (CMAKE_BUILD_TYPE=None): a compile check, kept short.
# Usage: mingw.sh SOURCE_DIR WORK_DIR
set -euo pipefail
src=$(realpath "$1")
work=$2
command -v x86_64-w64-mingw32-g++-posix >/dev/null || { echo "no MinGW-w64 (g++-mingw-w64-x86-64-posix)"; exit 77; }
rm -rf "$work"
mkdir -p "$work/headers"
work=$(realpath "$work")
for d in vulkan vk_video fmt nlohmann; do
  [ -d "/usr/include/$d" ] && ln -s "/usr/include/$d" "$work/headers/$d"
done
cmake -S "$src" -B "$work/build" -G Ninja --toolchain "$src/tests/package/mingw-w64.cmake" \
      -DCMAKE_BUILD_TYPE=None -DVKRNN_WERROR=ON \
      -DVKRNN_BUILD_TESTS=OFF -DVKRNN_BUILD_BENCH=OFF -DVKRNN_BUILD_SAMPLES=OFF -DVKRNN_BUILD_TOOLS=OFF \
      -DVKRNN_vulkan_vulkan_h_DIR="$work/headers" -DVKRNN_fmt_format_h_DIR="$work/headers" \
      -DVKRNN_nlohmann_json_hpp_DIR="$work/headers"
cmake --build "$work/build" -j"$(nproc)" --target vkrnn vkrnn_shared
dll=$work/build/libvkrnn.dll
[ -f "$dll" ] || dll=$(find "$work/build" -maxdepth 1 -name '*vkrnn*.dll' | head -n1)
[ -f "$dll" ] || { echo "FAILED: no vkrnn DLL built"; exit 1; }
# The DLL loads the Vulkan loader at run time: it must not import vulkan-1.dll (nor libfmt).
pe=$(x86_64-w64-mingw32-objdump -p "$dll")
imports=$(sed -n 's/.*DLL Name: //p' <<<"$pe")
echo "$(basename "$dll") imports: $(tr '\n' ' ' <<<"$imports")"
! grep -qiE 'vulkan|fmt' <<<"$imports" || { echo "FAILED: the DLL imports $imports"; exit 1; }
grep -q '\] vkrnn_context_create$' <<<"$pe" \
  || { echo "FAILED: vkrnn_context_create is not exported"; exit 1; }
echo "MinGW-w64 cross build: passed"
