#!/bin/bash
# tiny-reasoner-v2 on the GPU machine in one call (docs/tiny-reasoner-v2.md):
# train + export + full-cache eval of the held-out and long test sets
# (fastqwen, bf16), then, when the held-out accuracy (fib, mul, gcd pooled) is
# at least MIN_ACC (default 0: always), the accuracy sweep of every GPU policy
# at BUDGETS with the C engine (longflow eval --device cuda) on the new
# checkpoint, as far as the time allows, then the failure kinds of every run
# (analyze_v2.py).
# Run from a folder that holds tools/train/, tools/sweep_accuracy.py, tok/
# (tokenizer files), data/ (test sets) and devbin/ (tools/stage_devbin.sh):
# tools/train/stage_v2.sh BUILD_DIR DEST stages all of it.
# At most 8 files come back in $OUT: model.tar, train.log, metrics.json,
# eval.jsonl.gz, sweep.tar.gz, runs.tar.gz (if under 15 MB), run.log.
# Knobs (env): TRAIN_UNTIL (s after train.py starts, default 280), END_S (the
# sweep's last start, s after this script starts, default 465), JOBS (8),
# DEVICE (cuda), BATCH (200: each of the parallel evals holds its own KV pool), LIMIT (problems per set, 0 = all), MAXTOK (3000), EXTRA (more
# train.py flags, e.g. --tiny for a CPU smoke test; --init init to continue a
# checkpoint), MIN_ACC (0..1), BUDGETS (default "20% 10% 40% 5% 60% 80%").
set -uo pipefail
T0=$(date +%s)
cd "$(dirname "$0")" || exit 1
. tools/train/v2_sweep.sh
OUTD=${OUT:?set OUT}
W=$(mktemp -d /tmp/v2work.XXXXXX)
exec > >(tee -a "$OUTD/run.log") 2>&1
export PYTHONUNBUFFERED=1
since() { echo $(( $(date +%s) - T0 )); }
PROG=$W/bin; mkdir -p "$PROG"
tar xzf devbin/bin.tar.gz -C "$PROG" || echo "cannot unpack devbin/bin.tar.gz"
export LD_LIBRARY_PATH="$PWD/devbin/lib:$PROG${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$PROG/longflow" policies --json > "$W/policies.json" || echo "staged longflow does not run"

echo "== train ($(since) s)"
OUT=$W/t TRAIN_SECONDS=100000 TOK_DIR=tok EVAL_DIR=data EVAL_SECONDS=${EVAL_SECONDS:-45} \
  timeout $(( ${TRAIN_UNTIL:-280} + 120 )) bash tools/train/device_run.sh --tasks v2 --engine fast \
  --max-shard-size 15MB --eval-max-new-tokens 3700 --batch-tokens 32768 --lr 2e-3 --warmup 200 --reuse \
  --log-every 250 --ckpt-seconds 120 --train-until "${TRAIN_UNTIL:-280}" --bucket-max 2944 --bucket-step 128 \
  --max-position 4096 --no-line-cache ${EXTRA:-}
cp "$W/t/train.log" "$W/t/metrics.json" "$OUTD/" 2>/dev/null
gzip -c "$W/t/eval.jsonl" > "$OUTD/eval.jsonl.gz" 2>/dev/null
tar cf "$OUTD/model.tar" -C "$W/t" model

echo "== sweep ($(since) s)"
left=$(( ${END_S:-465} - $(since) ))
acc_ok=$(python3 - "$W/t/metrics.json" "${MIN_ACC:-0}" <<'PY'
import json, sys
try:
    ev = json.load(open(sys.argv[1])).get("eval", {})
except (OSError, ValueError):
    ev = {}
held = [ev[f] for f in ("fib", "mul", "gcd") if f in ev]
n, ok = sum(s["n"] for s in held), sum(s["correct"] for s in held)
acc = ok / n if n else 0.0
print("held-out accuracy (fastqwen, full cache): %d/%d = %.3f, sweep threshold %s" % (ok, n, acc, sys.argv[2]),
      file=sys.stderr)
print(1 if n and acc >= float(sys.argv[2]) else 0)
PY
)
[ "$acc_ok" = 1 ] || { echo "no sweep: held-out accuracy below MIN_ACC=${MIN_ACC:-0} (or no eval)"; left=0; }
if [ -f "$W/t/model/model.safetensors" ] && [ "$left" -gt 20 ]; then
  mkdir -p "$W/sweep/runs"
  # the full cache on the long sets, alongside the sweep
  pids=()
  for f in fib mul gcd; do
    timeout $(( left + 10 )) "$PROG/longflow" eval --model "$W/t/model" --data "data/$f-long.jsonl" --policy full \
      --device "${DEVICE:-cuda}" --batch "${BATCH:-200}" --max-tokens 3900 --instruction "" --json "${V2_LIMIT[@]}" \
      --output "$W/sweep/runs/$f-long.full.jsonl" > "$W/$f-long.json" 2> /dev/null &
    pids+=($!)
  done
  # (BUDGETS unquoted on purpose: several budgets)
  # shellcheck disable=SC2086
  v2_sweep "$PROG/longflow" "$W/t/model" data "$W/sweep" "$left" ${BUDGETS:-20% 10% 40% 5% 60% 80%} 2>&1 \
    | grep -v '^+ ' | tail -40
  wait "${pids[@]}"  # (a bare wait would also wait for the tee above)
  cat "$W"/*-long.json > "$W/sweep/long_full.jsonl" 2>/dev/null
  cp "$W/policies.json" "$W/sweep/"
  echo "== analyze ($(since) s)"
  v2_analyze data "$W/sweep" | head -130
  tar czf "$OUTD/sweep.tar.gz" -C "$W/sweep" --exclude=runs .
  tar czf "$W/runs.tar.gz" -C "$W/sweep" runs
  sz=$(stat -c %s "$W/runs.tar.gz"); echo "runs.tar.gz: $sz bytes"
  [ "$sz" -lt 15000000 ] && cp "$W/runs.tar.gz" "$OUTD/"
fi
echo "== done ($(since) s)"
ls -l "$OUTD"
rm -rf "$W"
