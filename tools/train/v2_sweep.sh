# shellcheck shell=bash
# The tiny-reasoner-v2 accuracy sweep with the C engine and the failure kinds
# of its runs, as tools/train/device_v2.sh and
# bench/accuracy/run_v2_variants_gpu.sh run them. Sourced (bash) from a
# folder that holds tools/sweep_accuracy.py and tools/train/analyze_v2.py
# (the repository root, or the folder tools/train/stage_v2.sh stages):
#   v2_sweep BIN MODEL DATA_DIR OUT_DIR DEADLINE_S BUDGET... [-- POLICY...]
#     longflow eval (BIN) of MODEL on DATA_DIR/{fib,mul,gcd}.jsonl, greedy,
#     at each budget for every policy (or each POLICY: "name" or
#     "label=name flags...") into OUT_DIR (sweep_accuracy.py: runs/, the
#     tables), starting none after DEADLINE_S seconds.
#   v2_analyze DATA_DIR OUT_DIR
#     the failure kinds of OUT_DIR/runs (analyze_v2.py) into
#     OUT_DIR/kinds.jsonl and OUT_DIR/kinds.md.
# Knobs (env): DEVICE (cuda), BATCH (200 problems in flight per eval), LIMIT
# (problems per set; unset or 0: all), MAXTOK (3000), JOBS (8 evals at once).
# V2_LIMIT holds the --limit flag (or nothing) for other longflow evals.

V2_LIMIT=()
if [ "${LIMIT:-0}" != 0 ]; then V2_LIMIT=(--limit "$LIMIT"); fi

v2_sweep() {
  local bin=$1 model=$2 data=$3 out=$4 deadline=$5 budgets=()
  shift 5
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do budgets+=("$1"); shift; done
  if [ $# -gt 0 ]; then shift; fi
  python3 tools/sweep_accuracy.py --bin "$bin" --device "${DEVICE:-cuda}" --batch "${BATCH:-200}" --model "$model" \
    --data "$data/fib.jsonl" "$data/mul.jsonl" "$data/gcd.jsonl" "${V2_LIMIT[@]}" --max-tokens "${MAXTOK:-3000}" \
    --budgets "${budgets[@]}" --jobs "${JOBS:-8}" --deadline-s "$deadline" --grace-s 5 --out "$out" \
    ${1:+--policies "$@"}
}

v2_analyze() {
  python3 tools/train/analyze_v2.py --data "$1" --runs "$2/runs" --out "$2/kinds.jsonl" --md "$2/kinds.md"
}
