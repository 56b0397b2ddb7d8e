#!/usr/bin/env bash
# One short run on a real GPU that produces everything to commit about it: vkrnn-info --json
# (+ --smoke), vkrnn-bench, the PyTorch baseline on the same GPU (bench/torch_baseline.py
# --device cuda, where that machine's python3 has torch with CUDA) and the default test suite,
# written under one folder, within about 9 minutes. The benchmarks run first, on the idle machine.
#
#   scripts/device-check.sh --prepare      here, once: packs build/ into .device-check/ (paths
#                                          made relative to the repository root, binaries
#                                          stripped, xz-compressed) and downloads into .gl/ the Debian packages
#                                          the binaries need where nothing is installed: the
#                                          Vulkan loader, the validation layer, libfmt
#   scripts/device-check.sh [OUT]          there: runs everything, writes into OUT (default
#                                          $OUT, else out/device-check)
#
# On a lent GPU machine (/work/.library/device/README.md):
#   run(command="scripts/device-check.sh", carry=[".device-check", ".gl"], timeout_s=560)
# Without .device-check/ the script uses build/ in place (a build made on this machine), so it
# also runs here on lavapipe. Each .gl/*.deb is unpacked into / (as root) only where what it
# brings is missing (a machine with its own loader keeps it). Results: summary.txt (device,
# counts, times), environment.txt, vkrnn-info.json, smoke.txt, ctest.log, ctest-junit.xml,
# bench.log, <device>.json (vkrnn-bench's JSON, named as bench/make_results.sh names it),
# torch.log and torch-cuda.json: copy both JSONs into bench/results/ and regenerate the README
# with bench/compare.py.
#
# Environment: VKRNN_BUILD_DIR, the build folder (default build); budgets in seconds:
# DEVICE_CHECK_TEST_SECONDS (default 240) for the suite, DEVICE_CHECK_BENCH_SECONDS (default 150)
# for the benchmark, DEVICE_CHECK_TORCH_SECONDS (default 120) for the PyTorch baseline,
# DEVICE_CHECK_ROW_SECONDS (default 2) per benchmark row of either; DEVICE_CHECK_TESTS,
# a ctest -R regex, narrows the suite. The packaging tests (install and find_package, the shared
# library's exports, the MinGW cross build, the clang build) check the build, not the device:
# they are left out.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
pack="$root/.device-check"
marker="@VKRNN_ROOT@"
built="${VKRNN_BUILD_DIR:-build}"

# --- here: pack the build ----------------------------------------------------------------------
if [ "${1:-}" = "--prepare" ]; then
  set -e
  [ -x "$built/tests/test_runtime" ] || { echo "device-check: build first (scripts/build.sh)" >&2; exit 1; }
  rm -rf "$pack"
  mkdir -p "$pack"
  # The executables, the shared library the tools, bench and samples link, and ctest's files,
  # nothing else (objects, caches and fixtures stay here).
  (cd "$built" && find . -name CTestTestfile.cmake -o -name 'test_*' -type f -perm -u+x \
       -o -path './tools/vkrnn-info' -o -path './bench/vkrnn-bench' -o -path './samples/vkrnn-*' -type f \
       -o -path './libvkrnn.so*') |
    while read -r f; do
      mkdir -p "$pack/build/$(dirname "$f")"
      cp -P "$built/$f" "$pack/build/$f"
    done
  find "$pack/build" -type f -perm -u+x -exec strip --strip-unneeded {} + 2>/dev/null || true
  # ctest's files name the source and build trees by absolute path: mark them, the run puts the
  # repository root there.
  find "$pack/build" -name CTestTestfile.cmake -exec sed -i "s|$root/$built|$marker/build|g; s|$root|$marker|g" {} +
  echo "$root" > "$pack/root.txt"
  # Compressed: the test executables each carry the library, and the uncompressed pack would
  # pass the 64 MiB a lent machine takes with the tree.
  tar -C "$pack" -cJf "$pack/build.tar.xz" build && rm -rf "$pack/build"
  echo "device-check: packed $built/ into .device-check/ ($(du -sh "$pack" | cut -f1))"
  # Debian 12's loader, validation layer and libfmt, for a machine without them.
  mkdir -p .gl /tmp/vkrnn-amd64/partial
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/vkrnn-amd64'
  # shellcheck disable=SC2086
  apt-get $o update -qq
  # shellcheck disable=SC2086
  (cd .gl && apt-get $o download libvulkan1 vulkan-validationlayers libfmt9)
  echo "device-check: .gl/ holds $(ls .gl | tr '\n' ' ')"
  echo "device-check: carry .device-check and .gl ($(du -sch "$pack" .gl | tail -1 | cut -f1) with the tree's ~$(du -sh --exclude=build --exclude=build-* --exclude=.git --exclude=.device-check --exclude=.gl . | cut -f1))"
  exit 0
fi

# --- there: run --------------------------------------------------------------------------------
out="${1:-${OUT:-$root/out/device-check}}"
mkdir -p "$out"
start=$(date +%s)
log() { echo "device-check: $*" | tee -a "$out/summary.txt"; }
: > "$out/summary.txt"

# The build: the packed one, relocated into a scratch folder, or build/ in place.
if [ -f "$pack/build.tar.xz" ]; then
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
  build="$scratch/build"
  tar -C "$scratch" -xJf "$pack/build.tar.xz"
  find "$build" -name CTestTestfile.cmake -exec sed -i "s|$marker/build|$build|g; s|$marker|$root|g" {} +
  log "build: .device-check/build (packed), relocated to $build"
  # The samples find their models by the path they were built with: where that tree is absent,
  # a link to this one (as root on a lent machine; the samples fail by name otherwise).
  orig="$(cat "$pack/root.txt" 2>/dev/null || true)"
  if [ -n "$orig" ] && [ "$orig" != "$root" ] && [ ! -e "$orig" ]; then
    mkdir -p "$(dirname "$orig")" 2>/dev/null && ln -s "$root" "$orig" 2>/dev/null &&
      log "linked $orig -> $root (paths built into the samples)"
  fi
else
  build="$root/$built"
  log "build: $built/ in place"
fi
[ -x "$build/tools/vkrnn-info" ] || { log "no vkrnn-info in $build: build or --prepare first"; exit 1; }
# The tools, bench and samples link libvkrnn.so from the build folder (relocated: not where
# their run path says).
export LD_LIBRARY_PATH="$build${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# The loader, libfmt and the validation layer: the system's, else the Debian packages carried
# in .gl/ (unpacked as root, each only where what it brings is missing).
has_lib() { ldconfig -p 2>/dev/null | grep "$1 " > /dev/null; }
has_layer() {
  [ -e /usr/share/vulkan/explicit_layer.d/VkLayer_khronos_validation.json ] ||
    [ -e /etc/vulkan/explicit_layer.d/VkLayer_khronos_validation.json ]
}
for want in "libvulkan1:has_lib libvulkan.so.1" "libfmt9:has_lib libfmt.so.9" \
            "vulkan-validationlayers:has_layer"; do
  package="${want%%:*}"
  check="${want#*:}"
  $check && continue  # unquoted: the function and its argument
  deb=$(ls .gl/"${package}"_*.deb 2> /dev/null | head -1)
  if [ -n "$deb" ] && [ "$(id -u)" = 0 ]; then
    dpkg -x "$deb" / && ldconfig && log "unpacked $(basename "$deb")"
  else
    log "missing: $package, and no .gl/${package}_*.deb to unpack (as root)"
  fi
done
# NVIDIA's driver files where the loader does not find them by itself.
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] &&
   ! "$build/tools/vkrnn-info" 2>/dev/null | grep -i nvidia > /dev/null; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  log "VK_DRIVER_FILES=$VK_DRIVER_FILES"
fi

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "host: $(uname -srm), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  echo "loader: $(ldconfig -p 2>/dev/null | grep -m1 'libvulkan.so.1 ' | sed 's/.*=> //')"
  echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-}"
} > "$out/environment.txt" 2>&1

# --- the device -------------------------------------------------------------------------------
"$build/tools/vkrnn-info" --json > "$out/vkrnn-info.json" 2> "$out/smoke.txt"
"$build/tools/vkrnn-info" --smoke >> "$out/smoke.txt" 2>&1
smoke=$?
device=$(/usr/bin/env python3 -c '
import json, sys
info = json.load(open(sys.argv[1]))
print(info["devices"][info["selected"]]["name"])' "$out/vkrnn-info.json" 2>/dev/null || echo unknown)
log "device: $device (vkrnn-info --smoke: exit $smoke)"

# --- the benchmark ----------------------------------------------------------------------------
# The selected device only, named as bench/make_results.sh names its file.
bench_start=$(date +%s)
index=$(/usr/bin/env python3 -c '
import json, sys
print(json.load(open(sys.argv[1]))["selected"])' "$out/vkrnn-info.json" 2>/dev/null || echo 0)
slug="$(printf '%s' "${device%% (*}" | tr 'A-Z' 'a-z' | tr -cs 'a-z0-9' '-' | sed 's/-$//')"
case "$slug" in llvmpipe*) slug="lavapipe-$slug" ;; esac
timeout --kill-after=10 "${DEVICE_CHECK_BENCH_SECONDS:-150}" \
  "$build/bench/vkrnn-bench" --device "$index" --max-seconds "${DEVICE_CHECK_ROW_SECONDS:-2}" \
  --out "$out/$slug.json" > "$out/bench.log" 2>&1
bench_rc=$?
log "vkrnn-bench: exit $bench_rc, $(( $(date +%s) - bench_start )) s, $slug.json$([ -s "$out/$slug.json" ] || echo ' (not written)')"

# --- the PyTorch baseline on the same GPU ----------------------------------------------------
# The machine's own python3 (a lent GPU machine's has torch with CUDA); CUDA rows only: the CPU
# baseline belongs to the machine that runs the CPU figures.
torch_start=$(date +%s)
py=$(command -v python3 || true)
torch_rc=0
if [ -n "$py" ] && "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  timeout --kill-after=10 "${DEVICE_CHECK_TORCH_SECONDS:-120}" \
    "$py" bench/torch_baseline.py --device cuda --max-seconds "${DEVICE_CHECK_ROW_SECONDS:-2}" \
    --out "$out/torch-cuda.json" > "$out/torch.log" 2>&1
  torch_rc=$?
  log "PyTorch CUDA baseline ($("$py" -c 'import torch; print(torch.__version__)')): exit $torch_rc, $(( $(date +%s) - torch_start )) s$([ -s "$out/torch-cuda.json" ] || echo ' (not written)')"
else
  log "PyTorch CUDA baseline: skipped (no python3 with torch and CUDA here)"
fi

# The PyTorch tests and fixture writers name Debian's /usr/bin/python3: where that one has no
# torch and the machine's python3 has, use the machine's (a lent GPU machine's newer torch).
if [ -n "$py" ] && ! /usr/bin/python3 -c 'import torch' 2>/dev/null && "$py" -c 'import torch' 2>/dev/null; then
  find "$build" -name CTestTestfile.cmake -exec sed -i "s|\"/usr/bin/python3\"|\"$py\"|g" {} +
  log "PyTorch tests: $py ($("$py" -c 'import torch; print(torch.__version__)'))"
fi
# --- the default suite ------------------------------------------------------------------------
# With the validation layer where it is installed (any message fails a test), without where not.
if ! VKRNN_VALIDATION=1 "$build/tools/vkrnn-info" --smoke > /dev/null 2>&1; then
  find "$build" -name CTestTestfile.cmake -exec sed -i 's/VKRNN_VALIDATION=1/VKRNN_VALIDATION=0/g' {} +
  log "validation layer: not installed, the suite runs without it"
else
  log "validation layer: on"
fi
tests_start=$(date +%s)
jobs=$(( $(nproc) > 8 ? 8 : $(nproc) ))
# shellcheck disable=SC2086
timeout --kill-after=10 "${DEVICE_CHECK_TEST_SECONDS:-240}" \
  ctest --test-dir "$build" -L default -j"$jobs" --timeout 240 --output-on-failure \
        --output-junit "$out/ctest-junit.xml" ${DEVICE_CHECK_TESTS:+-R "$DEVICE_CHECK_TESTS"} \
        -E '^(package_consumers|shared_library_exports|mingw_cross_build|clang_build)$' \
  > "$out/ctest.log" 2>&1
tests_rc=$?
summary=$(grep -E '^[0-9]+% tests passed' "$out/ctest.log" || echo "no summary (exit $tests_rc: timeout or crash)")
log "default suite: $summary, exit $tests_rc, $(( $(date +%s) - tests_start )) s"
grep -E '^\s+[0-9]+ - .*\((Failed|Timeout|SEGFAULT|Subprocess|Exception)' "$out/ctest.log" | sed 's/^/  /' |
  tee -a "$out/summary.txt"

log "total: $(( $(date +%s) - start )) s; results in $out"
[ "$smoke" = 0 ] && [ "$tests_rc" = 0 ] && [ "$bench_rc" = 0 ] && [ "$torch_rc" = 0 ]
