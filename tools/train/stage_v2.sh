#!/bin/bash
# Stage what tools/train/device_v2.sh needs on the GPU machine into DEST (a
# git-ignored folder of the checkout that the device call carries):
#   tools/train/stage_v2.sh BUILD_DIR DEST [INIT_MODEL_DIR]
# BUILD_DIR: a -DLF_CUDA=ON build with longflow and liblongflow-cuda.so built;
# INIT_MODEL_DIR (optional) is copied to DEST/init, for EXTRA="--init init".
# On the GPU machine: cd DEST && OUT=$OUT bash run.sh (see device_v2.sh's knobs).
set -euo pipefail
BUILD=${1:?usage: stage_v2.sh BUILD_DIR DEST [INIT_MODEL_DIR]}
DEST=${2:?usage: stage_v2.sh BUILD_DIR DEST [INIT_MODEL_DIR]}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
rm -rf "$DEST"
mkdir -p "$DEST/tools/train" "$DEST/tok"
"$SRC/tools/stage_devbin.sh" "$BUILD" "$DEST/devbin" > /dev/null
cp "$SRC"/tools/train/{train.py,fastqwen.py,evaluate.py,tasks.py,tasks_v2.py,analyze_v2.py,device_run.sh} \
   "$DEST/tools/train/"
cp "$SRC/tools/train/device_v2.sh" "$DEST/run.sh"
cp "$SRC/tools/sweep_accuracy.py" "$DEST/tools/"
cp "$SRC"/models/tiny-reasoner/{tokenizer.json,tokenizer_config.json} "$DEST/tok/"
cp -r "$SRC/models/tiny-reasoner-v2/data" "$DEST/data"
if [ -n "${3:-}" ]; then
  mkdir -p "$DEST/init"
  cp "$3"/{config.json,generation_config.json,model.safetensors,tokenizer.json,tokenizer_config.json} "$DEST/init/"
fi
du -sh "$DEST"
