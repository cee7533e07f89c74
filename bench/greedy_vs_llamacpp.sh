#!/usr/bin/env bash
# Greedy tokens of longflow and llama.cpp on the same GGUF file and the same
# prompt token ids (longflow's tokenizer), GEN tokens each; per prompt: the
# step where they part (or GEN when they do not), llama.cpp's top-2 logit
# margin there, and its smallest margin up to there. llama.cpp runs
# bench/llamacpp/greedy.c, built here against the llama.cpp of the
# llama-cpp-python sdist (LLAMA_DIR: its vendor/llama.cpp, built with
# cmake -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF && cmake --build build).
#
# usage: bench/greedy_vs_llamacpp.sh LLAMA_DIR FILE.gguf [GEN] [THREADS] [WEIGHTS]
#   WEIGHTS: longflow's --weights (quant, the default, or bf16)
set -euo pipefail
cd "$(dirname "$0")/.."
LD=${1:?llama.cpp dir}; GGUF=${2:?GGUF file}; GEN=${3:-64}; T=${4:-1}; W=${5:-quant}
LF=${LF_BIN:-build/longflow}
tool=$(mktemp -d); trap 'rm -rf "$tool"' EXIT
gcc -O2 bench/llamacpp/greedy.c -I"$LD/include" -I"$LD/ggml/include" -L"$LD/build/bin" -lllama \
    -Wl,-rpath,"$LD/build/bin" -o "$tool/greedy"
prompts=(
  "The capital of France is"
  "def fibonacci(n):"
  "Water boils at a temperature of"
  "Once upon a time, in a small village,"
  "The three primary colors are"
)
for p in "${prompts[@]}"; do
  ids=$("$LF" tokenize --model "$GGUF" --prompt "$p" | tr -d '[] \n')
  ref=$("$tool/greedy" "$GGUF" "$T" "$GEN" "$ids" 2>/dev/null)
  got=$("$LF" generate --model "$GGUF" --weights "$W" --threads "$T" --prompt-ids "$ids" --max-tokens "$GEN" \
        --ignore-eos --json 2>/dev/null)
  python3 - "$p" "$ref" "$got" <<'PY'
import json, sys
ref, got = json.loads(sys.argv[2]), json.loads(sys.argv[3])
a, b, m = ref["tokens"], got["tokens"], ref["margins"]
k = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
out = {"prompt": sys.argv[1], "equal_tokens": k, "of": len(a)}
if k < len(a):
    out.update({"llamacpp_margin_at_parting": m[k], "llamacpp_min_margin_before": min(m[:k]) if k else None,
                "llamacpp_token": a[k], "longflow_token": b[k]})
print(json.dumps(out))
PY
done
