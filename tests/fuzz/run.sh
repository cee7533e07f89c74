#!/usr/bin/env bash
# Replay every committed corpus through its libFuzzer harness, then fuzz each
# harness for a bounded time. A crash, leak, timeout or out-of-memory fails
# the script after every harness has had its turn; each failing input is
# printed as hex and base64 with the sanitizer's report.
#
#   tests/fuzz/run.sh                 # build build-fuzz with clang if needed, ~10 min
#   LF_FUZZ_SECONDS=60 tests/fuzz/run.sh
#   LF_FUZZ_ONLY="eval answer" tests/fuzz/run.sh
#
# Environment:
#   LF_FUZZ_SECONDS   total fuzzing time, split evenly over the harnesses (600;
#                     0 = replay the corpora only)
#   LF_FUZZ_BUILD     build directory of the LF_FUZZ=ON build (build-fuzz)
#   LF_FUZZ_ONLY      space-separated harness names (default: every fuzz_*.c)
#   LF_FUZZ_RSS_MB    memory limit of one harness process, and of one
#                     allocation (2048)
#   LF_FUZZ_TIMEOUT   seconds one input may take (20)
#   LF_FUZZ_OUT       where new corpus entries and crash inputs go
#                     (a fresh directory under $TMPDIR)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
total=${LF_FUZZ_SECONDS:-600}
build=${LF_FUZZ_BUILD:-build-fuzz}
rss=${LF_FUZZ_RSS_MB:-2048}
per_input=${LF_FUZZ_TIMEOUT:-20}
out=${LF_FUZZ_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/lf_fuzz_run.XXXXXX")}
mkdir -p "$out"

if [ ! -f "$build/CMakeCache.txt" ]; then
  CC=${CC:-clang} cmake -S . -B "$build" -DLF_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLF_WERROR=ON >/dev/null
fi
cmake --build "$build" -j"${JOBS:-2}" >/dev/null

if [ -n "${LF_FUZZ_ONLY:-}" ]; then
  names=($LF_FUZZ_ONLY)
else
  names=()
  for src in tests/fuzz/fuzz_*.c; do n=$(basename "$src" .c); names+=("${n#fuzz_}"); done
fi
per=$(( ${#names[@]} > 0 ? total / ${#names[@]} : 0 ))

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LF_SOURCE_DIR="$root"
# the harnesses' scratch files (a crashed harness leaves its own behind): in
# memory when /dev/shm exists, since writing them to disk slows some
# harnesses 50-fold
shm=/dev/shm; [ -d "$shm" ] && [ -w "$shm" ] || shm=$out
export LF_FUZZ_SCRATCH=$(mktemp -d "$shm/lf_fuzz_scratch.XXXXXX")
trap 'rm -rf "$LF_FUZZ_SCRATCH"' EXIT
if command -v llvm-symbolizer >/dev/null; then export ASAN_SYMBOLIZER_PATH=$(command -v llvm-symbolizer); fi

# Print a failing input (hex and base64) and the end of the harness's log.
report() {
  local name=$1 log=$2 art
  echo "!! fuzz_$name failed; its log ends:"
  tail -n 60 "$log" | sed 's/^/   /'
  for art in "$out/$name/artifacts"/*; do
    [ -f "$art" ] || continue
    echo "!! input $(basename "$art") ($(stat -c %s "$art") bytes), hex:"
    od -An -tx1 -v "$art" | head -n 64
    echo "!! base64 (reproduce: base64 -d > in && $build/tests/fuzz/fuzz_$name in):"
    base64 -w 76 "$art" | head -n 64
  done
}

failed=()
for name in "${names[@]}"; do
  bin="$build/tests/fuzz/fuzz_$name"
  corpus="tests/fuzz/corpus/$name"
  if [ ! -x "$bin" ]; then echo "!! $bin was not built"; failed+=("$name"); continue; fi
  mkdir -p "$out/$name/new" "$out/$name/artifacts"
  dict=(); [ -f "tests/fuzz/$name.dict" ] && dict=(-dict="tests/fuzz/$name.dict")
  seeds=(); [ -d "$corpus" ] && seeds=("$corpus")
  common=(-rss_limit_mb="$rss" -malloc_limit_mb="$rss" -timeout="$per_input"
          -artifact_prefix="$out/$name/artifacts/" -print_final_stats=1)
  log="$out/$name/replay.log"
  echo "== fuzz_$name: replay ${seeds[*]:-(no corpus)}"
  if ! "$bin" "${common[@]}" -runs=0 "${seeds[@]}" >"$log" 2>&1; then
    report "$name" "$log"; failed+=("$name"); continue
  fi
  if [ "$per" -gt 0 ]; then
    log="$out/$name/fuzz.log"
    echo "== fuzz_$name: fuzz ${per}s"
    if ! "$bin" "${common[@]}" "${dict[@]}" -max_total_time="$per" \
         "$out/$name/new" "${seeds[@]}" >"$log" 2>&1; then
      report "$name" "$log"; failed+=("$name"); continue
    fi
    grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb)" "$log" | tr '\n' ' ' | sed 's/^/   /'; echo
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (inputs and logs in $out)"
  exit 1
fi
echo "fuzz: ${#names[@]} harnesses replayed their corpora and ran ${per}s each without a failure"
[ -z "${LF_FUZZ_OUT:-}" ] && rm -rf "$out"
exit 0
