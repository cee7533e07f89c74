#!/bin/bash
# Stage what tools/train/device_v2.sh needs on the GPU machine into DEST (a
# git-ignored folder of the checkout that the device call carries, or a
# temporary folder on the GPU machine itself, as run_v2_gpu.sh does):
#   tools/train/stage_v2.sh BUILD_DIR|DEVBIN_DIR DEST [INIT_MODEL_DIR]
# BUILD_DIR: a -DLF_CUDA=ON build with longflow and liblongflow-cuda.so built
# (staged by tools/stage_devbin.sh); or DEVBIN_DIR, binaries staged already
# (a folder with bin.tar.gz, e.g. .devbin), copied as they are.
# INIT_MODEL_DIR (optional, at least model.safetensors) is copied to DEST/init,
# for EXTRA="--init init".
# On the GPU machine: cd DEST && OUT=$OUT bash run.sh (see device_v2.sh's knobs).
set -euo pipefail
BUILD=${1:?usage: stage_v2.sh BUILD_DIR|DEVBIN_DIR DEST [INIT_MODEL_DIR]}
DEST=${2:?usage: stage_v2.sh BUILD_DIR|DEVBIN_DIR DEST [INIT_MODEL_DIR]}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
rm -rf "$DEST"
mkdir -p "$DEST/tools/train" "$DEST/tok"
if [ -f "$BUILD/bin.tar.gz" ]; then
  cp -r "$BUILD" "$DEST/devbin"
else
  "$SRC/tools/stage_devbin.sh" "$BUILD" "$DEST/devbin" > /dev/null
fi
cp "$SRC"/tools/train/{train.py,fastqwen.py,evaluate.py,tasks.py,tasks_v2.py,analyze_v2.py,device_run.sh,v2_sweep.sh} \
   "$DEST/tools/train/"
cp "$SRC/tools/train/device_v2.sh" "$DEST/run.sh"
cp "$SRC/tools/sweep_accuracy.py" "$DEST/tools/"
cp "$SRC"/models/tiny-reasoner/{tokenizer.json,tokenizer_config.json} "$DEST/tok/"
cp -r "$SRC/models/tiny-reasoner-v2/data" "$DEST/data"
if [ -n "${3:-}" ]; then
  [ -f "$3/model.safetensors" ] || { echo "stage_v2: $3/model.safetensors not found" >&2; exit 1; }
  mkdir -p "$DEST/init"
  for f in config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json; do
    [ -f "$3/$f" ] && cp "$3/$f" "$DEST/init/"
  done
fi
du -sh "$DEST"
