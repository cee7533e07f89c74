/* The register tile of the 512-bit kernels that broadcast one value of a
 * row against two vectors (kernels.c: the fp32 GEMM tile, the attention's
 * score and output tiles; gemm_bf16.c: the vdpbf16ps tile): R rows (at most
 * 4, 6 or 8) x 16 columns of xa and, when two, 16 of xb. Row r has two
 * accumulators, c<r>0 (against xa) and c<r>1 (against xb); per step its
 * value is broadcast once and multiply-added into both; at the end row r is
 * stored at out + r * ld (and + 16).
 *
 * Written as macros over named accumulators, not an array of them or a
 * function taking their addresses: GCC keeps such an array in memory. A
 * kernel names R, two, xa, xb, out and ld, and defines before its loop
 *   LF_TILE512_BTYPE         the type of a broadcast value,
 *   LF_TILE512_BCAST(r)      row r's value of this step, broadcast,
 *   LF_TILE512_MAC(a, x, w)  a + x * w in its arithmetic,
 * then writes LF_TILE512_ROWS6(LF_TILE512_ZERO) (or ROWS4, ROWS8) before
 * the loop, LF_TILE512_ROWS6(LF_TILE512_STEP) in it and
 * LF_TILE512_ROWS6(LF_TILE512_STORE) after it. */
#ifndef LF_CPU_TILE512_H
#define LF_CPU_TILE512_H

/* M(r, a0, a1) for rows 0-3 (0-5, 0-7) and their accumulators. */
#define LF_TILE512_ROWS4(M) M(0, c00, c01) M(1, c10, c11) M(2, c20, c21) M(3, c30, c31)
#define LF_TILE512_ROWS6(M) LF_TILE512_ROWS4(M) M(4, c40, c41) M(5, c50, c51)
#define LF_TILE512_ROWS8(M) LF_TILE512_ROWS6(M) M(6, c60, c61) M(7, c70, c71)

/* Row r's accumulators, zero (declared for every row; the unused ones are dropped). */
#define LF_TILE512_ZERO(r, a0, a1) __m512 a0 = _mm512_setzero_ps(), a1 = a0;

/* One step of row r, when the tile has it. */
#define LF_TILE512_STEP(r, a0, a1)                                                                                 \
    if (R > r) {                                                                                                   \
        LF_TILE512_BTYPE wv = LF_TILE512_BCAST(r);                                                                     \
        a0 = LF_TILE512_MAC(a0, xa, wv);                                                                           \
        if (two) a1 = LF_TILE512_MAC(a1, xb, wv);                                                                  \
    }

/* Row r into out, when the tile has it. */
#define LF_TILE512_STORE(r, a0, a1)                                                                                \
    if (R > r) {                                                                                                   \
        _mm512_storeu_ps(out + r * ld, a0);                                                                        \
        if (two) _mm512_storeu_ps(out + r * ld + 16, a1);                                                          \
    }

#endif
