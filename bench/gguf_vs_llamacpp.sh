#!/usr/bin/env bash
# longflow and llama.cpp side by side on one GGUF file, same threads,
# interleaved (llama.cpp, longflow, llama.cpp, ... so that load changes on a
# shared machine hit both alike). Per round and engine: batch-1 decode
# tokens/s over GEN tokens, prefill tokens/s over a PROMPT-token prompt, and
# the peak resident memory of the process (GNU time's %M).
#
# usage: bench/gguf_vs_llamacpp.sh LLAMA_BENCH FILE.gguf [ROUNDS] [THREADS] [PROMPT] [GEN]
#   LLAMA_BENCH: llama.cpp's llama-bench (built from the llama-cpp-python sdist:
#     pip download --no-binary :all: --no-deps llama-cpp-python; in its
#     vendor/llama.cpp: cmake -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON
#     -DLLAMA_CURL=OFF && cmake --build build --target llama-bench)
# Prints one JSON line per run, then the medians and ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
LB=${1:?llama-bench path}; GGUF=${2:?GGUF file}
ROUNDS=${3:-3}; T=${4:-2}; P=${5:-128}; G=${6:-64}
LF=${LF_BIN:-build/longflow}
out=$(mktemp); trap 'rm -f "$out" "$out.t"' EXIT

for r in $(seq "$ROUNDS"); do
  # llama.cpp: one prompt-processing and one generation test, one repetition each
  # threads that sleep rather than spin while waiting (--poll 0, passive OpenMP):
  # on a shared, oversubscribed VM spinning llama.cpp threads decoded at
  # 1.2-1.5 tokens/s instead of ~17 (measured)
  OMP_WAIT_POLICY=passive /usr/bin/time -f "%M" -o "$out.t" "$LB" -m "$GGUF" -t "$T" -p "$P" -n "$G" -r 1 \
      --poll 0 -o json > "$out" 2>/dev/null
  python3 - "$out" "$out.t" "$r" <<'EOF'
import json, sys
runs = json.load(open(sys.argv[1]))
pp = next(x["avg_ts"] for x in runs if x["n_prompt"] > 0 and x["n_gen"] == 0)
tg = next(x["avg_ts"] for x in runs if x["n_gen"] > 0 and x["n_prompt"] == 0)
rss = int(open(sys.argv[2]).read().split()[-1]) * 1024
print(json.dumps({"engine": "llama.cpp", "round": int(sys.argv[3]), "prefill_tokens_per_s": pp,
                  "decode_tokens_per_s": tg, "peak_rss_bytes": rss}))
EOF
  /usr/bin/time -f "%M" -o "$out.t" "$LF" bench --model "$GGUF" --threads "$T" --prompt-len "$P" --gen-len "$G" \
      --membw-mb 0 > "$out" 2>/dev/null
  python3 - "$out" "$out.t" "$r" <<'EOF'
import json, sys
b = json.load(open(sys.argv[1]))
rss = int(open(sys.argv[2]).read().split()[-1]) * 1024
print(json.dumps({"engine": "longflow", "round": int(sys.argv[3]), "prefill_tokens_per_s": b["prefill_tokens_per_s"],
                  "decode_tokens_per_s": b["decode_tokens_per_s"], "peak_rss_bytes": rss}))
EOF
done | tee /dev/stderr | python3 -c '
import json, statistics, sys
rows = [json.loads(l) for l in sys.stdin]
med = {e: {k: statistics.median(r[k] for r in rows if r["engine"] == e)
           for k in ("prefill_tokens_per_s", "decode_tokens_per_s", "peak_rss_bytes")}
       for e in ("llama.cpp", "longflow")}
print(json.dumps({"median": med, "longflow_over_llamacpp": {
    k: med["longflow"][k] / med["llama.cpp"][k] for k in med["longflow"]}}))
'
