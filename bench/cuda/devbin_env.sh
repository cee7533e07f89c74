# Sourced by the GPU check scripts (from the repository root): the staged
# binaries of tools/stage_devbin.sh ($LF_DEVBIN, default .devbin), unpacked
# into a temporary $PROG when packed (removed on exit), with their libraries
# and the CUDA plugin on LD_LIBRARY_PATH. Exits when they cannot be unpacked.
BIN=${LF_DEVBIN:-$PWD/.devbin}
PROG=$BIN
if [ -f "$BIN/bin.tar.gz" ]; then
  PROG=$(mktemp -d /tmp/lf-devbin.XXXXXX)
  trap 'rm -rf "$PROG"' EXIT
  tar xzf "$BIN/bin.tar.gz" -C "$PROG" || exit 1
fi
export LD_LIBRARY_PATH="$PROG:$BIN/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
