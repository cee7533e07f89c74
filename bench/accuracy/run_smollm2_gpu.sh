#!/usr/bin/env bash
# The real-model fidelity sweep at the issue's scale on the GPU, in one call
# (bench/accuracy/fidelity-smollm2-gpu.md says what it measures):
# SmolLM2-135M-Instruct, every GPU policy (longflow, tova, h2o, vatp,
# streaming, knorm; R-KV runs on the CPU only) at budgets 64-1024 against the
# full cache, on the 22 texts of bench/accuracy/texts/ (one 4,096-token
# window each, --ctx 4096) and on the model's own answers (--gen 2048) to the
# questions of bench/accuracy/fidelity/questions.jsonl, plus LongFlow keeping
# the question (--sinks = the prompt, "longflow+prompt"), with
# `tools/fidelity_sweep.py batched`: a deadline (DEADLINE_S, default 380 s)
# kills what still runs, so results are always written, partial if need be.
#
# On the GPU machine, from the repository root, with the staged binaries
# (.devbin, tools/stage_devbin.sh of a -DLF_CUDA=ON build; LF_DEVBIN names
# another folder) and the model at .smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
# (MODEL names another):
#   OUT=/some/dir bench/accuracy/run_smollm2_gpu.sh
# Writes into $OUT: fidelity-smollm2-gpu.jsonl (every run's JSON line),
# fidelity-smollm2-gpu.md (the tables), fidelity-smollm2-gpu.png (the plot),
# run.log. The table and plot can be made again anywhere from the jsonl:
#   tools/fidelity_sweep.py table --runs fidelity-smollm2-gpu.jsonl --md T.md --png P.png
# Knobs: DEADLINE_S, DEVICE (cuda), SWEEP_ARGS (more `batched` flags, e.g.
# "--questions-limit 4" or, for a CPU smoke test, "--batch pool --ctx 32 --limit-chunks 2 --gen 24").
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
T0=$(date +%s)
: "${OUT:?set OUT to the folder for the results}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
. bench/cuda/devbin_env.sh
MODEL=${MODEL:-.smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
NAME=fidelity-smollm2-gpu
echo "== run_smollm2_gpu.sh $(date -u +%FT%TZ): model $MODEL, device ${DEVICE:-cuda}, deadline ${DEADLINE_S:-380} s"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
[ -f "$MODEL" ] || { echo "run_smollm2_gpu: no model at $MODEL"; exit 1; }
"$PROG/longflow" policies --json > /dev/null || { echo "run_smollm2_gpu: $PROG/longflow does not run"; exit 1; }
W=$(mktemp -d /tmp/fidelity-gpu.XXXXXX)
# (SWEEP_ARGS unquoted on purpose: several flags)
# shellcheck disable=SC2086
python3 tools/fidelity_sweep.py batched --bin "$PROG/longflow" --model "$MODEL" --out "$OUT/$NAME.jsonl" \
  --work "$W" --device "${DEVICE:-cuda}" --deadline-s "${DEADLINE_S:-380}" ${SWEEP_ARGS:-}
echo "== table ($(( $(date +%s) - T0 )) s)"
python3 tools/fidelity_sweep.py table --runs "$OUT/$NAME.jsonl" --md "$OUT/$NAME.md" --png "$OUT/$NAME.png" \
  && cat "$OUT/$NAME.md"
rm -rf "$W"
echo "== done in $(( $(date +%s) - T0 )) s"
ls -l "$OUT"
