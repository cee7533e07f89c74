#!/usr/bin/env bash
# Stage prebuilt binaries for the GPU machine (no compiler, no Debian
# libraries there) into .devbin/ (git-ignored), which the device call carries:
#   tools/stage_devbin.sh BUILD_DIR [DEST]      (DEST default: .devbin)
# Copies from BUILD_DIR (a -DLF_CUDA=ON build): the longflow CLI, its CUDA plugin
# liblongflow-cuda.so, the GPU test
# programs (test_cuda_*) and the GPU benchmark programs (bench_cuda_*), and into
# DEST/lib every shared library they load (as ldd resolves it here) except the
# C library family, the kernel's vdso and the CUDA driver/toolkit libraries,
# which the GPU machine has (libcjson, libpcre2-8, libutf8proc, libcmocka,
# libgomp, ... travel). The programs are packed into DEST/bin.tar.gz (see
# below); bench/cuda/run_engine.sh unpacks them and runs them with
# LD_LIBRARY_PATH=.devbin/lib.
set -euo pipefail
BUILD=${1:?usage: tools/stage_devbin.sh BUILD_DIR [DEST]}
SRC=$(cd "$(dirname "$0")/.." && pwd)
DEST=${2:-$SRC/.devbin}
[ -x "$BUILD/longflow" ] || { echo "stage_devbin: $BUILD/longflow not found (build the longflow target first)" >&2; exit 1; }
rm -rf "$DEST"
mkdir -p "$DEST/lib"
bins=("$BUILD/longflow")
# the CUDA backend plugin (dlopen'd by longflow --device cuda from the program's directory)
[ -f "$BUILD/liblongflow-cuda.so" ] && bins+=("$BUILD/liblongflow-cuda.so")
shopt -s nullglob
for f in "$BUILD"/test_cuda_* "$BUILD"/tests/test_cuda_* "$BUILD"/bench_cuda_* "$BUILD"/bench/bench_cuda_*; do
  [ -f "$f" ] && [ -x "$f" ] && bins+=("$f")
done
system_lib() {
  case "$(basename "$1")" in
    libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|libresolv.so*|ld-linux*|linux-vdso*) return 0 ;;
    libcuda.so*|libcudart.so*|libcublas.so*|libcublasLt.so*|libnvrtc*|libnvJitLink*) return 0 ;;
  esac
  return 1
}
for b in "${bins[@]}"; do
  cp -p "$b" "$DEST/"
  # lines "libX.so.N => /path/libX.so.N (0x...)"; a "not found" fails the staging
  if ldd "$b" | grep -q "not found"; then
    echo "stage_devbin: $b: a library is not found here:" >&2
    ldd "$b" | grep "not found" >&2
    exit 1
  fi
  ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | while read -r lib; do
    system_lib "$lib" && continue
    # our own plugin travels once, packed with the programs (run_engine.sh puts
    # the unpacked folder on LD_LIBRARY_PATH for the test programs linked to it)
    case "$(basename "$lib")" in liblongflow*) continue ;; esac
    [ -e "$DEST/lib/$(basename "$lib")" ] || cp -L "$lib" "$DEST/lib/$(basename "$lib")"
  done
done
# Each program embeds the whole CUDA fatbin (~15 MB, incompressible as
# stored, ~4x smaller gzipped): pack the programs into one bin.tar.gz so that
# .devbin stays far below the device call's 64 MiB carry limit;
# bench/cuda/run_engine.sh unpacks it on the GPU machine.
progs=()
for b in "${bins[@]}"; do progs+=("$(basename "$b")"); done
( cd "$DEST" && tar czf bin.tar.gz "${progs[@]}" && rm -f "${progs[@]}" )
echo "staged into $DEST (programs packed in bin.tar.gz: ${progs[*]}):"
( cd "$DEST" && ls -l . lib | sed 's/^/  /' )
du -sh "$DEST" | sed 's/^/  total /'
