#!/usr/bin/env bash
# GGUF on the GPU (run on the device machine from the staged binaries, like
# run_engine.sh). The CUDA backend runs head_dim 64 or 128, so the committed
# GGUF fixtures (head_dim 16/32) cannot run there; before the call, here:
#   python3 tools/gen_gguf_fixtures.py --gpu-shapes .gguf-gpu   (carry .gguf-gpu)
# Checks: greedy tokens of `--device cuda` on qwen3_hd64.gguf (BF16) equal
# `--device cuda` on the safetensors directory it was converted from
# (tests/data/models/qwen3_hd64): the same weights, so the same tokens. The
# Q8_0 file is compared with the CPU on the same file (bf16 vs fp32 compute:
# the count of equal leading tokens is reported, not asserted). One line per
# check; exits non-zero when an exact check fails.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
. bench/cuda/devbin_env.sh
D=tests/data
fail=0
tokens() { # MODEL DEVICE PROMPT_IDS N
  local out
  # --weights bf16: the CPU side dequantizes as the GPU does (its default
  # computes on Q8_0/Q4_0/Q4_1 blocks, docs/cpu-quant.md)
  out=$("$PROG/longflow" generate --model "$1" --device "$2" --weights bf16 --prompt-ids "$3" --max-tokens "$4" --ignore-eos \
    --json --threads 2 2>/tmp/lf-gguf-err.txt) || { echo "longflow failed: $(tail -1 /tmp/lf-gguf-err.txt)" >&2; return; }
  python3 -c "import json,sys; print(' '.join(map(str, json.load(sys.stdin)['tokens'])))" <<<"$out"
}
prompts() { python3 -c "import json,sys; [print(','.join(map(str,p['prompt']))) for p in json.load(open(sys.argv[1]))['prompts']]" "$1"; }
G=${LF_GGUF_GPU_DIR:-.gguf-gpu}
for name in qwen3_hd64; do
  while read -r ids; do
    a=$(tokens "$G/$name.gguf" cuda "$ids" 48)
    b=$(tokens "$D/models/$name" cuda "$ids" 48)
    if [ -n "$a" ] && [ "$a" = "$b" ]; then echo "PASS gguf=safetensors on cuda: $name prompt ${ids:0:20}..."
    else echo "FAIL gguf!=safetensors on cuda: $name prompt ${ids:0:20}...: [$a] vs [$b]"; fail=1; fi
  done < <(prompts "$D/models/$name/expected.json")
done
ids=$(prompts "$D/models/qwen3_hd64/expected.json" 2>/dev/null | head -1)
a=$(tokens "$G/qwen3_hd64-q8_0.gguf" cuda "$ids" 48)
b=$(tokens "$G/qwen3_hd64-q8_0.gguf" cpu "$ids" 48)
python3 - "$a" "$b" <<'PY'
import sys
a, b = sys.argv[1].split(), sys.argv[2].split()
k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
print(f"INFO q8_0 cuda vs cpu: {k} of {len(b)} leading tokens equal" + (" (ran)" if a else " (cuda produced nothing)"))
PY
exit $fail
