#!/usr/bin/env bash
# Batch-1 decode at short context: llama.cpp and one or more longflow
# binaries, one after the other in each round (interleaved, so that load
# changes on a shared machine hit all alike), same GGUF file, same threads.
# Per round: llama-bench -p 0 -n GEN (decode from an empty cache) and
# longflow bench --prompt-len 8 --gen-len GEN; tokens/s of each, then per
# longflow binary the ratios to llama.cpp over the rounds (min median max)
# and the load average at the start and end.
# MODE=prefill in the environment measures the prefill of GEN tokens instead
# (llama-bench -p GEN -n 0; longflow bench --prompt-len GEN --gen-len 1,
# its prefill tokens/s). DEPTH=N (decode mode) decodes GEN tokens after N
# cached ones (llama-bench -p 0 -n GEN -d N; longflow --prompt-len N).
#
# usage: [MODE=prefill] bench/decode_vs_llamacpp.sh LLAMA_BENCH FILE.gguf ROUNDS THREADS GEN LONGFLOW...
set -euo pipefail
LB=${1:?llama-bench}; GGUF=${2:?gguf}; R=${3:-5}; T=${4:-1}; G=${5:-64}; shift 5
[ $# -ge 1 ] || set -- build/longflow
rows=$(mktemp); trap 'rm -f "$rows"' EXIT
echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
if [ "${MODE:-decode}" = prefill ]; then
  LBA=(-p "$G" -n 0); LFA=(--prompt-len "$G" --gen-len 1); KEY=prefill_tokens_per_s
else
  LBA=(-p 0 -n "$G"); LFA=(--prompt-len 8 --gen-len "$G"); KEY=decode_tokens_per_s
  if [ -n "${DEPTH:-}" ]; then LBA+=(-d "$DEPTH"); LFA=(--prompt-len "$DEPTH" --gen-len "$G"); fi
fi
for r in $(seq "$R"); do
  ts=$(OMP_WAIT_POLICY=passive "$LB" -m "$GGUF" -t "$T" "${LBA[@]}" -r 1 --poll 0 --repack 0 -o json 2>/dev/null |
       python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["avg_ts"])')
  echo "{\"round\":$r,\"engine\":\"llama.cpp\",\"tps\":$ts}"
  for lf in "$@"; do
    ts=$("$lf" bench --model "$GGUF" --threads "$T" "${LFA[@]}" --membw-mb 0 2>/dev/null |
         python3 -c "import json,sys; print(json.load(sys.stdin)[\"$KEY\"])")
    echo "{\"round\":$r,\"engine\":\"$lf\",\"tps\":$ts}"
  done
done | tee "$rows" | python3 -c '
import json, statistics, sys
rows = [json.loads(l) for l in sys.stdin]
base = {r["round"]: r["tps"] for r in rows if r["engine"] == "llama.cpp"}
for eng in dict.fromkeys(r["engine"] for r in rows if r["engine"] != "llama.cpp"):
    rat = sorted(r["tps"] / base[r["round"]] for r in rows if r["engine"] == eng)
    print(json.dumps({"engine": eng, "ratio_min": round(rat[0], 3), "median": round(statistics.median(rat), 3),
                      "max": round(rat[-1], 3), "rounds": len(rat)}))
'
cat "$rows" >&2 # the per-round lines (tee /dev/stderr would write over a shared log file)
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
