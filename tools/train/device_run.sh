#!/bin/bash
# Train, export and evaluate the tiny model on one GPU (an H200 here), from
# the repository root, in one process. Writes at most 8 files to $OUT:
#   model/{config.json,generation_config.json,model.safetensors,
#          tokenizer.json,tokenizer_config.json}   (also at each checkpoint)
#   train.log  metrics.json  eval.jsonl
# The tokenizer and the test sets are the committed ones in models/tiny-reasoner
# (TOK_DIR and EVAL_DIR name others: the v2 model, docs/tiny-reasoner-v2.md).
# Usage: OUT=/some/dir TRAIN_SECONDS=125 EVAL_SECONDS=20 tools/train/device_run.sh [extra train.py flags]
# (continue the shipped model: add --init models/tiny-reasoner; the faster
#  trainer with CUDA graphs: add --engine fast, see docs/tiny-model.md)
set -uo pipefail
OUT=${OUT:-/tmp/tiny-reasoner-out}
TRAIN_SECONDS=${TRAIN_SECONDS:-120}
EVAL_SECONDS=${EVAL_SECONDS:-30}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm --format=csv,noheader || true
python3 tools/train/train.py --tokenizer "${TOK_DIR:-models/tiny-reasoner}" --out "$OUT/model" \
    --log "$OUT/train.log" --metrics "$OUT/metrics.json" \
    --train-seconds "$TRAIN_SECONDS" --smoke-first \
    --eval-dir "${EVAL_DIR:-models/tiny-reasoner/data}" --eval-out "$OUT/eval.jsonl" --eval-seconds "$EVAL_SECONDS" "$@"
