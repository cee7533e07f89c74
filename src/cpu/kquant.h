/* Dot products of GGUF's k-quant super-blocks (Q4_K, Q5_K, Q6_K: 256 values
 * each) with int8 activation blocks (lf_qblock, 32 values), for
 * src/cpu/qmatmul.c. A super-block is 8 sub-blocks of 32 values (Q6_K: 16
 * of 16) with integer scales under one or two f16 super-scales:
 *   Q4_K, Q5_K: w = d sc_j q - dmin m_j      (q 4 or 5 bits, sc_j, m_j 6 bits)
 *   Q6_K:       w = d sc_i (q - 32)          (q 6 bits, sc_i int8 per 16)
 * Sub-block j of a super-block meets activation block j, so per sub-block
 *   Q4_K, Q5_K: d sc_j dx sum(q qx) - dmin m_j s
 *   Q6_K:       d dx (sc_a sum_lo((q - 32) qx) + sc_b sum_hi((q - 32) qx))
 * with exact int32 sums; the levels differ only in fp32 addition order. */
#ifndef LF_CPU_KQUANT_H
#define LF_CPU_KQUANT_H

#include <stdbool.h>

#include "cpu/qmatmul.h"

/* Whether t is one of the k-quant dtypes. */
bool lf_dtype_is_kquant(lf_dtype t);

/* out[t] for t < T (1 <= T <= 4): the dot product of one weight row (nb / 8
 * super-blocks of type wt; nb activation blocks) with x[t]; at the SIMD
 * levels always computed as 4 tokens (the last repeated). The products of
 * one token are kdecode.h's, which take this one at the scalar level. */
void lf_kdot(lf_dtype wt, const void *wrow, const lf_qblock *const *x, int T, int nb, lf_qdot_level level,
             float *out);

/* A row of nsb super-blocks unpacked for the integer GEMM (cpu/qgemm.h):
 * q[256 nsb] the integer values (Q6_K: q - 32), sw the scale of each group
 * of lf_qgroup(wt) values (d sc), mn per 32 values the coefficient of the
 * activation block's s (Q4_K/Q5_K: -dmin m; Q6_K: not written). */
void lf_kunpack_row(lf_dtype wt, const void *wrow, int nsb, int8_t *q, float *sw, float *mn);

#endif
