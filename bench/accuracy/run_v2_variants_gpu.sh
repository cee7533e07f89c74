#!/bin/bash
# The LongFlow variants that keep the question, on the GPU, on a trained
# tiny-reasoner-v2 checkpoint (bench/accuracy/protect-prompt.md, "v2 run 2"):
# every problem of the fib, mul and gcd test sets, greedy, against paper LongFlow
# and the same variants of the peers, in one device call from the repository root:
#   OUT=$OUT bash bench/accuracy/run_v2_variants_gpu.sh
# Needs the staged binaries in .devbin (tools/stage_devbin.sh of a -DLF_CUDA=ON
# build) and the checkpoint's weights in .v2init/model.safetensors (the rest of
# the model folder is models/tiny-reasoner-v2). On the GPU `--sinks P` keeps the
# first P positions: P = 106 holds every prompt of these sets (103-105 tokens
# with the chat template) and the first generated tokens after it.
# Two sweeps: at 20% every variant; at 10% those without --recent (the
# smallest 10% budget, 123 slots, has no room for 106 sinks and 64 recent).
# PLAIN=1 then sweeps every GPU policy at 5/40/60/80% and at 256 and 512 slots.
# Results in $OUT: variants.tar.gz (both sweeps' tables, kinds.md of
# tools/train/analyze_v2.py, runs/). A dry run here: DEVICE=cpu BATCH=4 LIMIT=1.
# Knobs: DEADLINE_S (200, per sweep) and tools/train/v2_sweep.sh's (DEVICE,
# BATCH, LIMIT, MAXTOK, JOBS), which runs each sweep and its analysis.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
: "${OUT:?set OUT}"
cd "$ROOT" || exit 1
W=$(mktemp -d /tmp/v2var.XXXXXX)
trap 'rm -rf "$W"' EXIT
PROG=$W/bin
mkdir -p "$PROG" "$W/model"
tar xzf .devbin/bin.tar.gz -C "$PROG" || { echo "cannot unpack .devbin/bin.tar.gz"; exit 1; }
export LD_LIBRARY_PATH="$ROOT/.devbin/lib:$PROG${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cp models/tiny-reasoner-v2/*.json "$W/model/"
cp .v2init/model.safetensors "$W/model/" || { echo "no .v2init/model.safetensors"; exit 1; }
. tools/train/v2_sweep.sh
DATA=models/tiny-reasoner-v2/data
S=106
sweep() { # OUTDIR BUDGETS... -- VARIANTS...
  v2_sweep "$PROG/longflow" "$W/model" "$DATA" "$1" "${DEADLINE_S:-200}" "${@:2}" 2>&1 | grep -v '^\[eval\]' | tail -40
  v2_analyze "$DATA" "$1" | tail -60
}
echo "== 20% ($(date -u +%T))"
sweep "$W/v20" 20% -- longflow "longflow+prompt=longflow --sinks $S" \
  "longflow+recent64=longflow --recent 64" "longflow+prompt+recent64=longflow --sinks $S --recent 64" \
  "tova+prompt=tova --sinks $S" "streaming+prompt=streaming --sinks $S" "h2o+prompt=h2o --sinks $S"
echo "== 10% ($(date -u +%T))"
sweep "$W/v10" 10% -- "longflow+prompt=longflow --sinks $S" "tova+prompt=tova --sinks $S" "streaming+prompt=streaming --sinks $S"
if [ -n "${PLAIN:-}" ]; then # the plain policies at the budgets run 2's sweep left out
  echo "== every policy at 5% 40% 60% 80% ($(date -u +%T))"
  sweep "$W/pct" 5% 40% 60% 80% --
  echo "== every policy at 256 and 512 slots ($(date -u +%T))"
  sweep "$W/fixed" 256 512 --
fi
echo "== done ($(date -u +%T))"
tar czf "$OUT/variants.tar.gz" -C "$W" v20 v10 $(cd "$W" && ls -d pct fixed 2>/dev/null)
