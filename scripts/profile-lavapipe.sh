#!/usr/bin/env bash
# Where a benchmark row's CPU time goes on lavapipe, down to the instructions of the kernels
# LLVM compiled: samples the running vkrnn-bench with perf, copies the JIT code out of the live
# process with gdb and disassembles it. Lavapipe's JIT code has no symbols, so the report splits
# the hottest code mapping into functions at `ret`s: the shader's body is one big function, and
# each texel view's fetch is a small one of its own that the body calls (docs/kernels.md).
#
#   scripts/profile-lavapipe.sh ROW [OUT]
#     ROW  one vkrnn-bench row (--filter), e.g. 'W3.b1/B=1,S=32,steps=32,E=256,H=256,vocab=8000'
#     OUT  folder for perf.data, the code dump, its disassembly and report.txt (default
#          out/profile)
# Needs perf, gdb and objdump (Debian: linux-perf gdb binutils; not installed by
# install-deps.sh) and ptrace rights over the bench (root, or kernel.yama.ptrace_scope=0).
# Environment: BENCH (default build/bench/vkrnn-bench), WARM seconds before sampling (10: past
# the shader compiles), SECONDS_SAMPLED (5).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
row="${1:?usage: scripts/profile-lavapipe.sh ROW [OUT]}"
out="${2:-$root/out/profile}"
bench="${BENCH:-$root/build/bench/vkrnn-bench}"
for tool in perf gdb objdump; do
  command -v "$tool" > /dev/null || { echo "profile-lavapipe: needs $tool (Debian: linux-perf gdb binutils)" >&2; exit 2; }
done
[ -x "$bench" ] || { echo "profile-lavapipe: no vkrnn-bench at $bench (build first, or set BENCH)" >&2; exit 2; }
# The rows the filter names (a prefix names its fp16 / int8 rows too): the bench runs the
# first for as long as it is sampled.
rows="$("$bench" -f "$row" --list 2>&1)" || { echo "profile-lavapipe: $rows" >&2; exit 2; }
[ -n "$rows" ] || { echo "profile-lavapipe: no vkrnn-bench row matches '$row' (see vkrnn-bench --list)" >&2; exit 2; }
first="$(printf '%s\n' "$rows" | head -n 1)"
[ "$first" = "$rows" ] || echo "profile-lavapipe: '$row' names $(printf '%s\n' "$rows" | wc -l) rows; profiling the first, $first" >&2
mkdir -p "$out"

"$bench" -f "$first" --no-ceilings -r 1000000 -w 2 > "$out/bench.log" 2>&1 &
pid=$!
trap 'kill $pid 2> /dev/null || true' EXIT
sleep "${WARM:-10}"
kill -0 $pid 2> /dev/null || { echo "profile-lavapipe: the bench ended early:" >&2; cat "$out/bench.log" >&2; exit 1; }
perf record -F 4000 -p $pid -o "$out/perf.data" -- sleep "${SECONDS_SAMPLED:-5}" > /dev/null 2>&1
perf report -i "$out/perf.data" --sort sym --stdio 2> /dev/null | grep -E '^ +[0-9]' > "$out/samples.txt"
perf report -i "$out/perf.data" --sort dso --stdio 2> /dev/null | grep -E '^ +[0-9]' > "$out/dso.txt"

# The code mapping that holds the hottest JIT address, copied out of the live process.
hot="$(grep -m1 -o '0x0000[0-9a-f]*' "$out/samples.txt" || true)"
[ -n "$hot" ] || { echo "profile-lavapipe: no samples in JIT code" >&2; exit 1; }
read -r start end < <(/usr/bin/python3 - "$hot" /proc/$pid/maps <<'PY'
import sys
hot = int(sys.argv[1], 16)
for line in open(sys.argv[2]):
    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
    if lo <= hot < hi:
        print(hex(lo), hex(hi))
        break
PY
)
[ -n "${start:-}" ] || { echo "profile-lavapipe: $hot is in no mapping of the bench" >&2; exit 1; }
gdb -p $pid -batch -ex "dump memory $out/jit.bin $start $end" > "$out/gdb.log" 2>&1 || true
[ -s "$out/jit.bin" ] || { echo "profile-lavapipe: gdb could not copy the code out of the bench (ptrace rights?):" >&2; cat "$out/gdb.log" >&2; exit 1; }
kill $pid
objdump -D -b binary -mi386:x86-64 --adjust-vma="$start" "$out/jit.bin" > "$out/jit.asm"

/usr/bin/python3 - "$out" <<'PY'
import re, sys
out = sys.argv[1]
samples = {}
for line in open(f"{out}/samples.txt"):
    m = re.match(r"\s*([\d.]+)%\s+\[.\]\s+(0x[0-9a-f]+)", line)
    if m: samples[int(m.group(2), 16)] = float(m.group(1))
insns = []
for line in open(f"{out}/jit.asm"):
    m = re.match(r"\s*([0-9a-f]+):\s+(?:[0-9a-f]{2} )+\s*(.*)", line)
    if m: insns.append((int(m.group(1), 16), m.group(2).strip()))
funcs, begin, share = [], 0, 0.0
for i, (addr, text) in enumerate(insns):
    share += samples.get(addr, 0.0)
    if text.startswith("ret") or i == len(insns) - 1:
        funcs.append((share, insns[begin][0], addr, i - begin + 1))
        begin, share = i + 1, 0.0
with open(f"{out}/report.txt", "w") as r:
    r.write("Samples by shared object (% of all samples):\n" + open(f"{out}/dso.txt").read())
    r.write("\nThe copied JIT mapping split at rets (% of all samples, address range, instructions):\n")
    for s, a, b, n in sorted(funcs, reverse=True)[:10]:
        r.write(f"{s:7.2f}%  {a:#x}-{b:#x}  {n}\n")
    r.write("\nHottest instructions (% of all samples):\n")
    text = dict(insns)
    for addr, s in sorted(samples.items(), key=lambda x: -x[1])[:25]:
        r.write(f"{s:7.2f}%  {addr:#x}  {text.get(addr, '(outside the copied mapping)')}\n")
print(open(f"{out}/report.txt").read())
PY
echo "profile-lavapipe: wrote $out (report.txt, jit.asm)"
