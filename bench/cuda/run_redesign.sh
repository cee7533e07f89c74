#!/usr/bin/env bash
# Issue 12's GPU checks in one device call, from prebuilt binaries staged by
# tools/stage_devbin.sh into $DEV/new (this branch) and $DEV/old (main before
# it): the GPU tests of the new build (KNorm's, the fused kernel's, CPU = GPU
# slot choices), then `longflow bench --device cuda` old against new at the
# paper's setting (qwen3-1.7b, prompt 512, gen 16384, budget 3200, --batch
# max, sampled; longflow and full, alternating old/new) and at batch 1.
#   DEV=.dev-redesign bench/cuda/run_redesign.sh      (on the GPU machine)
# Output under $OUT: redesign.log, bench.jsonl (one line per run, tagged
# old/new), summary.txt. No new command starts after LF_BUDGET_S (default 430) s.
set -uo pipefail
DEV=${DEV:-.dev-redesign}
OUTD=${OUT:-/tmp/lf-out}
mkdir -p "$OUTD"
LOG=$OUTD/redesign.log SUM=$OUTD/summary.txt JS=$OUTD/bench.jsonl
: > "$LOG"; : > "$SUM"; : > "$JS"
T0=$(date +%s) BUDGET=${LF_BUDGET_S:-430}
export LF_SOURCE_DIR=$PWD LF_TEST_DATA=$PWD/tests/data
for v in old new; do
  mkdir -p /tmp/lf-$v && tar xzf "$DEV/$v/bin.tar.gz" -C /tmp/lf-$v || { echo "no $DEV/$v" | tee -a "$SUM"; exit 1; }
done
export LF_BIN=/tmp/lf-new/longflow
{ echo "ldd new longflow (CUDA libraries):"; ldd /tmp/lf-new/longflow | grep -i -e cuda -e cublas || echo "  none"; } >> "$SUM"
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv; } >> "$LOG" 2>&1
run() { # NAME TIMEOUT CMD...
  local name=$1 lim=$2; shift 2
  local left=$((BUDGET - $(date +%s) + T0))
  if [ $left -le 15 ]; then echo "SKIP $name" >> "$SUM"; return; fi
  [ $lim -gt $left ] && lim=$left
  echo "== $name: $*" >> "$LOG"
  local t=$(date +%s) rc
  timeout -k 5 $lim "$@" >> "$LOG.part" 2>&1; rc=$?
  cat "$LOG.part" >> "$LOG"
  printf '%-8s %-50s %4ss\n' "$([ $rc = 0 ] && echo ok || echo FAIL=$rc)" "$name" $(( $(date +%s) - t )) >> "$SUM"
}
bench() { # TAG NAME ARGS...
  local v=$1 name=$2; shift 2
  : > "$LOG.part"
  LD_LIBRARY_PATH=/tmp/lf-$v:$DEV/new/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} run "$v $name" 100 /tmp/lf-$v/longflow bench --device cuda --json "$@"
  grep '^{' "$LOG.part" | tail -1 | sed "s/^{/{\"tag\":\"$v $name\",/" >> "$JS"
}
gtest() {
  : > "$LOG.part"
  LD_LIBRARY_PATH=/tmp/lf-new:$DEV/new/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} run "$1" "$2" /tmp/lf-new/$1
}
P=(--random-weights --config qwen3-1.7b --prompt-len 512 --gen-len 16384 --batch max --mode sampled)
gtest test_cuda_knorm 40
gtest test_cuda_snapkv 40
gtest test_cuda_attention 100
bench old longflow "${P[@]}" --policy longflow --budget 3200
bench new longflow "${P[@]}" --policy longflow --budget 3200
bench old full "${P[@]}" --policy full
bench new full "${P[@]}" --policy full
B1=(--random-weights --config qwen3-1.7b --prompt-len 512 --gen-len 1024 --batch 1 --mode sampled --policy full)
bench old batch1 "${B1[@]}"
bench new batch1 "${B1[@]}"
gtest test_cuda_forward 150
bench new longflow2 "${P[@]}" --policy longflow --budget 3200
bench old longflow2 "${P[@]}" --policy longflow --budget 3200
gtest test_cuda_kernels 90
python3 - "$JS" >> "$SUM" 2>&1 <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"{r['tag']:<16} avg_tokens_per_s {r.get('avg_tokens_per_s')}  batch {r.get('batch')}  steady {r.get('steady_tokens_per_s')}")
PY
grep -h "^\[ \(policies\|knorm\|snapkv\|slots\) *\]" "$LOG" | grep -v "near tie" | head -40 >> "$SUM"
cat "$SUM"
