#!/usr/bin/env python3
"""Reference values for the KV cache's bf16 and FP8 e4m3 rows (src/kv/dtype.c),
made with ml_dtypes (numpy's bfloat16 and float8_e4m3fn), not with the code
under test. Writes tests/data/kv_dtype_rounding.txt, read by
tests/test_kv_dtype.c. One case a line, floats and codes as hex bit patterns:

  bf16 F32BITS BF16BITS     float -> bf16, round to nearest even
  fp8 F32BITS CODE          an already scaled float -> e4m3 code: nearest
                            even, |x| > 448 saturated to +-448 (the cache's
                            rule; ml_dtypes alone would give NaN there)
  dec CODE F32BITS          e4m3 code -> float (every code but the NaNs)
  row N SCALEBITS F32BITS*N CODE*N
                            a K/V row stored as fp8: scale = max|x| / 448 in
                            float32, codes of x / scale; a row of zeros has
                            scale 0, a row with NaN or +-inf scale NaN and
                            codes 0

  python3 tools/gen_kv_dtype_fixtures.py   (numpy, ml_dtypes)
"""
import os

import ml_dtypes
import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "kv_dtype_rounding.txt")
F32 = np.float32
E4M3 = ml_dtypes.float8_e4m3fn
BF16 = ml_dtypes.bfloat16


def hx(x):
    return "%08x" % int(np.asarray(x, dtype=F32).view(np.uint32))


def bf16_cases(rng):
    xs = list(rng.standard_normal(120).astype(F32))
    xs += list((rng.standard_normal(60) * 10.0 ** rng.integers(-30, 30, 60)).astype(F32))
    # exact ties: the 16 dropped bits are 0x8000, kept part even and odd
    for b in (0x3f808000, 0x3f818000, 0xbf808000, 0xbf818000, 0x40490000 | 0x8000, 0x00018000):
        xs.append(np.uint32(b).view(F32))
    # just above and below a tie, denormals, zeros, extremes, infinities
    for b in (0x3f808001, 0x3f807fff, 0x00000001, 0x007fffff, 0x80000001, 0x00000000, 0x80000000,
              0x7f7fffff, 0xff7fffff, 0x7f7f7fff, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000, 0x7f800001):
        xs.append(np.uint32(b).view(F32))
    out = []
    for x in xs:
        x = F32(x)
        b = np.array([x], dtype=F32).astype(BF16).view(np.uint16)[0]
        out.append("bf16 %s %04x" % (hx(x), b))
    return out


def fp8_code(y):
    """e4m3 code of already scaled float32 values, saturating beyond 448."""
    y = np.asarray(y, dtype=F32)
    with np.errstate(invalid="ignore"):
        c = np.where(np.isnan(y), y, np.clip(y, F32(-448), F32(448))).astype(F32)
    return c.astype(E4M3).view(np.uint8)


def fp8_cases(rng):
    ys = list((rng.standard_normal(100) * 60).astype(F32))
    ys += list((rng.standard_normal(60) * 0.01).astype(F32))  # subnormals of e4m3 (< 2^-6)
    grid = np.arange(256, dtype=np.uint8).view(E4M3).astype(F32)
    grid = np.sort(grid[np.isfinite(grid) & (grid >= 0)])
    ties = (grid[:-1] + grid[1:]) / F32(2)  # exactly halfway between neighbours
    ys += list(ties[::3].astype(F32)) + list(-ties[1::5].astype(F32))
    ys += [F32(v) for v in (0.0, -0.0, 448.0, -448.0, 449.0, 463.9, 464.0, 500.0, -1e30, 2.0 ** -9,
                            2.0 ** -10, 3 * 2.0 ** -11, 2.0 ** -6, 0.0019531, float("inf"), float("-inf"))]
    codes = fp8_code(np.array(ys, dtype=F32))
    return ["fp8 %s %02x" % (hx(y), c) for y, c in zip(ys, codes)]


def dec_cases():
    out = []
    for c in range(256):
        v = np.array([c], dtype=np.uint8).view(E4M3).astype(F32)[0]
        if not np.isnan(v):
            out.append("dec %02x %s" % (c, hx(v)))
    return out


def fp8_row(x):
    x = np.asarray(x, dtype=F32)
    if not np.all(np.isfinite(x)):
        return F32("nan"), np.zeros(len(x), np.uint8)
    amax = np.max(np.abs(x))
    scale = F32(amax) / F32(448)
    if scale == 0:
        return scale, np.zeros(len(x), np.uint8)
    return scale, fp8_code(x / scale)


def row_cases(rng):
    n = 32
    rows = [rng.standard_normal(n) for _ in range(6)]
    rows.append(np.zeros(n))                                      # zeros
    r = rng.standard_normal(n); r[5] = 1e4; rows.append(r)        # one huge element
    r = rng.standard_normal(n); r[7] = -3e38; rows.append(r)      # near float's max
    rows.append(rng.standard_normal(n) * 1e5)                     # all beyond e4m3's range
    rows.append(rng.standard_normal(n) * 1e-3)                    # all tiny
    r = np.zeros(n); r[3] = -2.5; rows.append(r)                  # one nonzero
    r = rng.standard_normal(n); r[0] = np.inf; rows.append(r)     # an infinity
    r = rng.standard_normal(n); r[9] = np.nan; rows.append(r)     # a NaN
    out = []
    for x in rows:
        x = np.asarray(x, dtype=F32)
        s, c = fp8_row(x)
        out.append("row %d %s %s %s" % (n, hx(s), " ".join(hx(v) for v in x), " ".join("%02x" % v for v in c)))
    return out


def main():
    rng = np.random.default_rng(16)
    lines = bf16_cases(rng) + fp8_cases(rng) + dec_cases() + row_cases(rng)
    with open(OUT, "w") as f:
        f.write("# made by tools/gen_kv_dtype_fixtures.py with ml_dtypes %s\n" % ml_dtypes.__version__)
        f.write("\n".join(lines) + "\n")
    print("wrote %d cases to %s" % (len(lines), os.path.normpath(OUT)))


if __name__ == "__main__":
    main()
