#!/bin/bash
# tiny-reasoner-v2, run 2, in one device call from the repository root
# (docs/tiny-reasoner-v2.md, "Run 2"): stages tools/train/device_v2.sh's folder
# in /tmp from the checkout, the staged binaries in .devbin
# (tools/stage_devbin.sh of a -DLF_CUDA=ON build) and, when present, the
# run-1 checkpoint in .v2init/model.safetensors (then training continues from
# it: --init, lr 1e-3, warm-up 100; else it starts from scratch at run 1's
# lr 2e-3), then runs it: training with the short problems mixed in
# (--short-share, default 0.6) until TRAIN_UNTIL s (default 320, set-up
# included), export, the full-cache eval of every test set (fastqwen, GPU)
# and, if the held-out accuracy is at least MIN_ACC (0.9), the GPU sweep of
# every policy at BUDGETS ("20% 10%") until END_S (520 s after the start).
# Results: at most 8 files in $OUT (model.tar, train.log, metrics.json,
# eval.jsonl.gz, sweep.tar.gz, runs.tar.gz, run.log).
#   OUT=/some/dir tools/train/run_v2_gpu.sh
# The other knobs of device_v2.sh (DEVICE, JOBS, BATCH, LIMIT, MAXTOK) pass
# through; EXTRA adds train.py flags after these.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
: "${OUT:?set OUT}"
S=$(mktemp -d /tmp/v2stage.XXXXXX)
trap 'rm -rf "$S"' EXIT
INIT=()
[ -f "$ROOT/.v2init/model.safetensors" ] && INIT=("$ROOT/.v2init")
bash "$ROOT/tools/train/stage_v2.sh" "${LF_DEVBIN:-$ROOT/.devbin}" "$S/stage" "${INIT[@]}" || exit 1
if [ -d "$S/stage/init" ]; then
  FLAGS="--init init --lr 1e-3 --warmup 100"
else
  FLAGS=""
fi
echo "run_v2_gpu: init ${INIT[*]:-none (from scratch)}, short share ${SHORT_SHARE:-0.6}"
TRAIN_UNTIL=${TRAIN_UNTIL:-320} END_S=${END_S:-520} MIN_ACC=${MIN_ACC:-0.9} BUDGETS=${BUDGETS:-20% 10%} \
  EXTRA="$FLAGS --short-share ${SHORT_SHARE:-0.6} ${EXTRA:-}" bash "$S/stage/run.sh"
