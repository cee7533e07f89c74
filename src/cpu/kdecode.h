/* Batch-1 (decode) products of k-quant rows (Q4_K, Q5_K, Q6_K) with one
 * int8 activation row, for src/cpu/qmatmul.c.
 *
 * The arithmetic is kquant.h's (each 32-value sub-block meets one activation
 * block; exact int32 sums, scaled once), reorganised so that a super-block
 * costs two fp32 multiply-adds instead of one per sub-block: the 8 (Q6_K: 16)
 * integer sums of a super-block are reduced into one vector, which is scaled
 * by the vector of the 8 activation scales d_j times the super-block's
 * integer scales, all at once. The activation scales, their s = d sum(q) and
 * (for Q6_K's "- 32") the sums of q per 16 values are therefore kept in
 * arrays beside the blocks (lf_kact), built once per product; Q6_K's offset
 * enters as -32 sc_i sum_i(q) on the integer sums. */
#ifndef LF_CPU_KDECODE_H
#define LF_CPU_KDECODE_H

#include <stddef.h>
#include <stdint.h>

#include "cpu/qmatmul.h"

/* One activation row (nb blocks) as the decode kernels read it. */
typedef struct lf_kact {
    const lf_qblock *x;
    float *d;      /* [nb] x[b].d */
    float *s;      /* [nb] x[b].s */
    int32_t *bsum; /* [2 nb] sums of q per 16 values, in Q6_K's order (kdecode.c); whole super-blocks only */
    int8_t *q;     /* [32 nb] the blocks' values, contiguous (512-bit loads of two blocks) */
} lf_kact;

/* Bytes of memory lf_kact_init needs per block, and for nb blocks. */
#define LF_KACT_BLOCK_BYTES (2 * sizeof(float) + 2 * sizeof(int32_t) + LF_QK)
size_t lf_kact_bytes(int nb);

/* Fill a (its arrays in mem, lf_kact_bytes(nb) bytes aligned for floats)
 * from the nb quantized blocks x, which it keeps pointing to. */
void lf_kact_init(lf_kact *a, const lf_qblock *x, int nb, void *mem);

/* out[r] for r < rows: the dot product of row r (rows of row_bytes bytes
 * from w, nb / 8 super-blocks of type wt each) with the activation row. */
void lf_kdot_rows(lf_dtype wt, const void *w, size_t row_bytes, int rows, int nb, const lf_kact *a,
                  lf_qdot_level level, float *out);

/* The dot product of one row (nb / 8 super-blocks of type wt, any width)
 * with the activation blocks x[0..nb), for a caller that has no lf_kact:
 * the row is taken in parts of LF_KDOT_PART_BLOCKS blocks, each part's
 * lf_kact built on the stack. */
#define LF_KDOT_PART_BLOCKS 256
float lf_kdot_row(lf_dtype wt, const void *wrow, const lf_qblock *x, int nb, lf_qdot_level level);

#endif
