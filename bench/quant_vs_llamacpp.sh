#!/usr/bin/env bash
# longflow on quantized GGUF blocks (--weights quant), longflow on the same
# file dequantized to bf16 at load (--weights bf16) and llama.cpp, one after
# the other in each round (so that load changes on a shared machine hit all
# three alike), same file, same threads. Per round and engine:
#   short: prefill of PROMPT tokens, then GEN decode steps from that short
#          context (llama-bench: -p PROMPT and -n GEN from an empty cache);
#          peak resident memory of that process (GNU time's %M);
#   long:  DEPTH tokens prefilled, then GEN_LONG decode steps (llama-bench
#          -d DEPTH -n GEN_LONG).
# Prints one JSON line per run, then per measure the longflow / llama.cpp
# ratios over the rounds as min, median, max.
#
# usage: bench/quant_vs_llamacpp.sh LLAMA_BENCH FILE.gguf [ROUNDS] [THREADS] [PROMPT] [GEN] [DEPTH] [GEN_LONG]
#   LLAMA_BENCH: llama.cpp's llama-bench built from the llama-cpp-python sdist
#   (see bench/gguf_vs_llamacpp.sh for the build commands).
set -euo pipefail
cd "$(dirname "$0")/.."
LB=${1:?llama-bench path}; GGUF=${2:?GGUF file}
ROUNDS=${3:-3}; T=${4:-2}; P=${5:-512}; G=${6:-64}; D=${7:-2048}; GL=${8:-32}
LF=${LF_BIN:-build/longflow}
out=$(mktemp); rows=$(mktemp); trap 'rm -f "$out" "$out.t" "$rows"' EXIT

llama() { # $1: round
  # --poll 0 and passive OpenMP: llama.cpp's threads sleep rather than spin
  # while waiting (spinning threads collapsed on this shared, oversubscribed VM).
  # --repack 0: no extra buffer types; with them, its AMX path (chosen on this
  # AMX Xeon, -DGGML_NATIVE=ON) segfaulted in
  # ggml::cpu::amx::tensor_traits::compute_forward on the first prompt
  # (LB_ARGS overrides)
  OMP_WAIT_POLICY=passive /usr/bin/time -f "%M" -o "$out.t" "$LB" -m "$GGUF" -t "$T" -p "$P" -n "$G" -r 1 \
      --poll 0 ${LB_ARGS:---repack 0} -o json > "$out" 2>/dev/null
  local rss; rss=$(tail -1 "$out.t")
  local pp tg tgl
  pp=$(python3 -c 'import json,sys; print(next(x["avg_ts"] for x in json.load(open(sys.argv[1])) if x["n_gen"] == 0))' "$out")
  tg=$(python3 -c 'import json,sys; print(next(x["avg_ts"] for x in json.load(open(sys.argv[1])) if x["n_prompt"] == 0))' "$out")
  OMP_WAIT_POLICY=passive "$LB" -m "$GGUF" -t "$T" -p 0 -n "$GL" -d "$D" -r 1 --poll 0 ${LB_ARGS:---repack 0} -o json > "$out" 2>/dev/null
  tgl=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["avg_ts"])' "$out")
  echo "{\"engine\":\"llama.cpp\",\"round\":$1,\"prefill\":$pp,\"decode_short\":$tg,\"decode_long\":$tgl,\"rss\":$((rss * 1024))}"
}

longflow() { # $1: round, $2: weights
  /usr/bin/time -f "%M" -o "$out.t" "$LF" bench --model "$GGUF" --weights "$2" --threads "$T" --prompt-len "$P" \
      --gen-len "$G" --membw-mb 0 > "$out" 2>/dev/null
  local rss; rss=$(tail -1 "$out.t")
  local pp tg tgl
  pp=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["prefill_tokens_per_s"])' "$out")
  tg=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["decode_tokens_per_s"])' "$out")
  "$LF" bench --model "$GGUF" --weights "$2" --threads "$T" --prompt-len "$D" --gen-len "$GL" --membw-mb 0 \
      > "$out" 2>/dev/null
  tgl=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["decode_tokens_per_s"])' "$out")
  echo "{\"engine\":\"longflow-$2\",\"round\":$1,\"prefill\":$pp,\"decode_short\":$tg,\"decode_long\":$tgl,\"rss\":$((rss * 1024))}"
}

for r in $(seq "$ROUNDS"); do
  llama "$r"
  longflow "$r" quant
  longflow "$r" bf16
done | tee "$rows" | python3 -c '
import json, statistics, sys
rows = [json.loads(l) for l in sys.stdin]
base = {r["round"]: r for r in rows if r["engine"] == "llama.cpp"}
for eng in ("longflow-quant", "longflow-bf16"):
    for k in ("prefill", "decode_short", "decode_long", "rss"):
        rat = sorted(r[k] / base[r["round"]][k] for r in rows if r["engine"] == eng)
        print(json.dumps({"engine": eng, "measure": k, "ratio_to_llamacpp_min": round(rat[0], 3),
                          "median": round(statistics.median(rat), 3), "max": round(rat[-1], 3)}))
for k in ("prefill", "decode_short", "decode_long", "rss"):
    med = {e: statistics.median(r[k] for r in rows if r["engine"] == e) for e in ("llama.cpp", "longflow-quant", "longflow-bf16")}
    print(json.dumps({"measure": k, "median": med}))
'
cat "$rows" >&2 # the per-run lines (tee /dev/stderr would write over a shared log file)
