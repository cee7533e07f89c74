"""Helpers for the tests that run the `longflow` binary of $LF_BIN on the
files of $LF_TEST_DATA (both set by CTest): a check that the binary is
there, one run of it, and the Qwen3 tokenizer directory unpacked from its
committed .xz."""
import lzma
import os
import shutil
import subprocess

BIN = os.environ.get("LF_BIN", "")
DATA = os.environ.get("LF_TEST_DATA", "tests/data")
QWEN3_TOKENIZER = os.path.join(DATA, "tokenizers", "qwen3")


def require_bin():
    """Raise unless LF_BIN names an executable (call it from setUpClass)."""
    if not BIN or not os.access(BIN, os.X_OK):
        raise RuntimeError(f"LF_BIN={BIN!r} is not an executable longflow binary")


def run(*args, input_bytes=None, timeout=120):
    """`longflow args`: (exit status, stdout, stderr); stdout must be UTF-8."""
    p = subprocess.run([BIN, *args], input=input_bytes, capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8"), p.stderr.decode("utf-8", "replace")


def unpack_qwen3_tokenizer(dst):
    """dst/tokenizer.json from tests/data/tokenizers/qwen3/tokenizer.json.xz
    (its tokenizer_config.json stays in QWEN3_TOKENIZER)."""
    with lzma.open(os.path.join(QWEN3_TOKENIZER, "tokenizer.json.xz"), "rb") as f, \
            open(os.path.join(dst, "tokenizer.json"), "wb") as g:
        shutil.copyfileobj(f, g)
