#!/usr/bin/env bash
# Build the fused CUDA decode kernel and its GPU test without CMake and without
# the Debian libraries (cJSON, PCRE2, utf8proc, cmocka), as on the GPU machine:
#   tests/cuda/build_standalone.sh [OUT_DIR]
# produces OUT_DIR/test_cuda_attention (run it; exit 0 = pass) and
# OUT_DIR/liblf_cuda_attention.so (the kernel for bench/cuda/bench_attention.py).
# LF_CUDA_GENCODE overrides the targets (default: sm_90a and sm_80).
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-$SRC/build-cuda-standalone}
GENCODE=${LF_CUDA_GENCODE:-"-gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_80,code=sm_80"}
NVCC=${NVCC:-nvcc}
CC=${CC:-gcc}
CUDA_INC=$(dirname "$(command -v "$NVCC")")/../include
mkdir -p "$OUT"
INC=(-I"$SRC/include" -I"$SRC/src")
# shellcheck disable=SC2086
"$NVCC" -std=c++17 -O3 $GENCODE -lineinfo -Xptxas -v -Werror=all-warnings -Xcompiler -fPIC "${INC[@]}" \
    -c "$SRC/src/cuda/attention.cu" -o "$OUT/attention.o" 2> "$OUT/ptxas.log" || { cat "$OUT/ptxas.log"; exit 1; }
"$CC" -std=c11 -O2 -fPIC -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE "${INC[@]}" -c "$SRC/src/core/error.c" -o "$OUT/error.o"
"$CC" -std=c11 -O2 -fPIC -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE "${INC[@]}" -c "$SRC/src/kv/dtype.c" -o "$OUT/dtype.o"
"$NVCC" -shared "$OUT/attention.o" "$OUT/error.o" -o "$OUT/liblf_cuda_attention.so"
"$CC" -std=c11 -O2 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla -Werror \
    -DLF_TEST_STANDALONE "${INC[@]}" -isystem "$CUDA_INC" \
    -c "$SRC/tests/cuda/test_cuda_attention.c" -o "$OUT/test_cuda_attention.o"
"$NVCC" "$OUT/test_cuda_attention.o" "$OUT/attention.o" "$OUT/error.o" "$OUT/dtype.o" -lm -o "$OUT/test_cuda_attention"
echo "built $OUT/test_cuda_attention and $OUT/liblf_cuda_attention.so"
