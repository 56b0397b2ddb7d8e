#!/usr/bin/env bash
# Runs the libFuzzer targets of a VKRNN_FUZZ build (tests/fuzz/README.md).
#   tests/fuzz/run.sh BUILD_DIR --time SECONDS [TARGET...]   each target for SECONDS (CI: 20)
#   tests/fuzz/run.sh BUILD_DIR --runs N [TARGET...]         each target for N executions
#   tests/fuzz/run.sh BUILD_DIR --runs N --time SECONDS [TARGET...]   whichever comes first
# Targets default to all of them. Each run starts from BUILD_DIR/fuzz/corpus/TARGET (kept
# between runs, grown by the fuzzer), the seeds (BUILD_DIR/fuzz/seeds/TARGET, written by the
# fuzz_seeds test or here) and the committed regression inputs; a crash leaves its input in
# BUILD_DIR/fuzz/artifacts/TARGET/ and fails the script. Prints each target's coverage and
# final stats; the whole log is BUILD_DIR/fuzz/TARGET.log.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="$(cd "$here/../.." && pwd)"
usage() { sed -n '2,9p' "$0"; exit 2; }
[ $# -ge 3 ] || usage
build="$(cd "$1" && pwd)"; shift
limit=()
while [ $# -ge 2 ]; do
  case "$1" in
    --time) limit+=(-max_total_time="$2") ;;
    --runs) limit+=(-runs="$2") ;;
    *) break ;;
  esac
  shift 2
done
[ ${#limit[@]} -gt 0 ] || usage
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors model tokenizer)
if [ ! -d "$build/fuzz/seeds" ]; then
  /usr/bin/python3 "$here/make_corpus.py" --source "$src" --fixtures "$build/fixtures/models" \
    --fixtures "$build/fixtures/graphs" --out "$build/fuzz/seeds"
fi
status=0
for t in "${targets[@]}"; do
  exe="$build/tests/fuzz/fuzz_$t"
  [ -x "$exe" ] || { echo "run.sh: no $exe (configure with -DVKRNN_FUZZ=ON)" >&2; exit 2; }
  corpus="$build/fuzz/corpus/$t"; artifacts="$build/fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts" "$build/fuzz/seeds/$t"
  dict=(); [ -f "$here/$t.dict" ] && dict=(-dict="$here/$t.dict")
  echo "== fuzz_$t ${limit[*]}"
  # -timeout: one input slower than 10 s is a hang; -rss_limit_mb: the process may not grow
  # past 2 GiB (the loaders refuse long before); -malloc_limit_mb: no single allocation over
  # 1 GiB (inputs are at most -max_len bytes, so nothing justifies more); -max_len: the seeds
  # are at most 40 KB (the whole shipped models are not mutated: seeds/TARGET-full).
  log="$build/fuzz/$t.log"
  if ! "$exe" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len=65536 \
      -print_final_stats=1 -artifact_prefix="$artifacts/" "${dict[@]}" \
      "$corpus" "$build/fuzz/seeds/$t" "$here/regressions/$t" > "$log" 2>&1; then
    status=1
    tail -n 60 "$log"
  fi
  # The first and last status lines (executions, coverage, corpus) and the final stats.
  grep -E '^#[0-9]+[[:space:]]+INITED' "$log" | head -n 1 || true
  grep -E '^#[0-9]+[[:space:]]+(DONE|NEW|REDUCE|pulse)' "$log" | tail -n 1 || true
  grep -E '^(Done|stat::)' "$log" || true
  if [ -n "$(ls -A "$artifacts")" ]; then
    echo "fuzz_$t: crash inputs in $artifacts: copy each into tests/fuzz/regressions/$t/ with the fix" >&2
    status=1
  fi
done
exit $status
