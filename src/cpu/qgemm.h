/* Matrix-matrix products (prefill, batches of 5 or more tokens) on GGUF's
 * block weights with int8 activations and integer dot products over many
 * tokens at once.
 *
 * The activations are quantized per 32-value block as for the decode
 * kernels (qmatmul.h: d = max|x| / 127, q = round(x / d), s = d sum q) and
 * packed per 16 tokens with the tokens in the vector lanes: for each 4
 * columns, 16 tokens x 4 bytes of q + 128 (unsigned), plus each block's d
 * and s for the 16 tokens. A panel of 4 weight rows is unpacked once to
 * signed int8 values (lf_qunpack_row) and each 4-byte group of a row is
 * broadcast against the 16 tokens' bytes: per group of 16 or 32 values
 * (one weight scale) the exact int32 sum over the group is
 *   sum (qx + 128) qw = sum qx qw + 128 sum qw,
 * the accumulator starting at -128 sum qw, then scaled once,
 *   y += sw dx sum(qx qw) (+ mn s at the end of a 32-value block),
 * so a weight row is read from memory once for all the tokens and each of
 * its 4-byte groups once for 16 or 32 tokens.
 *
 * Levels: avx512vnni (vpdpbusd on 512 bits: 4 rows x 32 tokens), avx2
 * (vpmaddubsw + vpmaddwd: 4 rows x 8 tokens; not for Q8_0, whose values up
 * to 127 times bytes up to 255 saturate vpmaddubsw's int16 pairs: Q8_0 goes
 * through fp32 panels at that level). Below AVX2 the products are the
 * scalar dot products of qmatmul.c. */
#ifndef LF_CPU_QGEMM_H
#define LF_CPU_QGEMM_H

#include <stdbool.h>
#include <stddef.h>

#include "cpu/qmatmul.h"

/* Fewest tokens the integer GEMM is used for (fewer: qmatmul.c's dot
 * products, 4 tokens per pass). */
#define LF_QGEMM_MIN 5

/* The level the GEMM uses: the best the CPU has, unless LF_QGEMM in the
 * environment (scalar, avx2, avx512vnni) or lf_qgemm_set_level chooses a
 * lower one; scalar when the CPU kernels are (LF_SIMD=scalar). */
lf_qdot_level lf_qgemm_level_get(void);
void lf_qgemm_set_level(lf_qdot_level level);

/* Whether the integer GEMM computes on dtype t at level lv. */
bool lf_qgemm_handles(lf_dtype t, lf_qdot_level lv);

/* Bytes of scratch lf_qgemm_multi needs for n tokens of cols values. */
size_t lf_qgemm_scratch_bytes(int n, int cols);

/* lf_matmul_multi for jobs whose weights lf_qgemm_handles at the current
 * level: x [n][cols] is quantized and packed into scratch, then the pool's
 * threads take groups of 16 rows. False (nothing done) when the panels'
 * memory cannot be had. */
bool lf_qgemm_multi(const float *x, int n, int cols, const lf_matmul_job *jobs, int n_jobs, void *scratch);

#endif
