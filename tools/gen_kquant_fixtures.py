#!/usr/bin/env python3
"""Reference data for tests/test_kquant.c: random Q4_K, Q5_K and Q6_K
matrices, their values as the `gguf` Python package (llama.cpp's own
reader; PyPI `gguf`) dequantizes them, and random activations. No torch.

Writes tests/data/kquant/:
  <TYPE>.blocks  ROWS x COLS values of the type (random bytes, finite fp16
                 super-scales), row after row
  <TYPE>.f32     gguf.quants.dequantize of them (float32, ROWS x COLS)
  x.f32          TOKENS x COLS activations (float32): a spread of magnitudes
                 per 32-value block, some blocks all zero

Run from the repository root: python3 tools/gen_kquant_fixtures.py
"""
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "kquant")
ROWS, COLS, TOKENS = 6, 512, 5
TYPES = {"Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}  # offsets of the fp16 fields


def random_f16(rng, n, lo=-8, hi=-2):
    """Positive or negative fp16 values of magnitude 2^lo..2^hi."""
    return (np.exp2(rng.uniform(lo, hi, n)) * rng.choice([-1.0, 1.0], n)).astype(np.float16)


def main():
    rng = np.random.default_rng(20261203)
    os.makedirs(OUT, exist_ok=True)
    for name, f16_fields in TYPES.items():
        block_size, type_size = gguf.GGML_QUANT_SIZES[T[name]]
        n_blocks = ROWS * COLS // block_size
        b = rng.integers(0, 256, (n_blocks, type_size), dtype=np.uint8)
        for off in f16_fields:
            b[:, off:off + 2] = random_f16(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
        raw = b.reshape(-1)
        ref = gguf.quants.dequantize(raw, T[name]).astype(np.float32).reshape(-1)
        assert ref.size == ROWS * COLS and np.isfinite(ref).all()
        raw.tofile(os.path.join(OUT, name + ".blocks"))
        ref.tofile(os.path.join(OUT, name + ".f32"))
        print(f"{name}: {n_blocks} super-blocks, |w| max {np.abs(ref).max():.3g}")
    x = rng.uniform(-1, 1, (TOKENS, COLS)) * 10.0 ** (np.arange(COLS) // 32 % 5 - 2)
    x[:, (np.arange(COLS) // 32) % 7 == 3] = 0
    x.astype(np.float32).tofile(os.path.join(OUT, "x.f32"))


if __name__ == "__main__":
    main()
