/* Matrix products on GGUF's block weights (Q8_0, Q4_0, Q4_1; the k-quants
 * Q4_K, Q5_K, Q6_K in cpu/kquant.c) as they are stored, without a
 * dequantized copy.
 *
 * The activations are quantized per 32-value block to int8 (as llama.cpp's
 * q8_1 activations: scale d = max|x| / 127, q = round(x / d), and
 * s = d * sum(q) for the weights' offset or min term); each block's dot
 * product is an integer sum of int8 x int8 (Q8_0) or nibble x int8 (Q4_0,
 * Q4_1) products, scaled once by the two blocks' scales:
 *   Q8_0: dw * dx * sum(qw qx)
 *   Q4_0: dw * (dx * sum(nw qx) - 8 s)          (w = dw (nw - 8))
 *   Q4_1: dw * dx * sum(nw qx) + mw * s         (w = dw nw + mw)
 * Three implementations, chosen at run time: portable scalar C, AVX2
 * (vpmaddubsw + vpmaddwd, 32 values per block), AVX-512 VNNI (vpdpbusd,
 * two blocks per 512-bit instruction; opt-in, see lf_qdot_level_get). They compute the same integer sums
 * and differ only in the order of the fp32 additions. */
#ifndef LF_CPU_QMATMUL_H
#define LF_CPU_QMATMUL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cpu/kernels.h"

#define LF_QK 32

/* Bytes ahead of the block being read that the decode kernels prefetch:
 * without it the hardware prefetcher left the AVX2 kernel at 2 GB/s from
 * memory on the development VM (a plain read: 10-12 GB/s); 1-4 KB ahead gave
 * 8 GB/s (docs/cpu-quant.md). */
#define LF_QM_PREFETCH 2048

typedef enum lf_qdot_level {
    LF_QDOT_SCALAR = 0,
    LF_QDOT_AVX2 = 1,      /* AVX2: vpmaddubsw */
    LF_QDOT_AVX512VNNI = 2 /* AVX-512 F/BW/VL/DQ + VNNI: vpdpbusd */
} lf_qdot_level;

/* The best level this CPU has. */
lf_qdot_level lf_qdot_supported(void);
/* The level the products use: AVX2 when the CPU has it (the faster one
 * measured, also where AVX-512 VNNI exists: qmatmul.c), else scalar;
 * LF_QDOT in the environment (scalar, avx2, avx512vnni) or
 * lf_qdot_set_level choose another the CPU has, and the CPU kernels'
 * scalar level (LF_SIMD=scalar) makes it scalar. */
lf_qdot_level lf_qdot_level_get(void);
/* Force a level (clamped to what the CPU has). */
void lf_qdot_set_level(lf_qdot_level level);
const char *lf_qdot_level_name(lf_qdot_level level);

/* A level chosen once from the CPU and an environment variable (scalar,
 * avx2, avx512vnni; default dflt, clamped to what the CPU has), scalar when
 * the CPU kernels are; level -1 until first read. */
typedef struct lf_qknob {
    _Atomic int level;
    const char *env;
    lf_qdot_level dflt;
} lf_qknob;
lf_qdot_level lf_qknob_get(lf_qknob *k);
void lf_qknob_set(lf_qknob *k, lf_qdot_level level);

/* Whether t is one of the block dtypes these kernels compute on. */
bool lf_dtype_is_block(lf_dtype t);

/* One quantized activation block. */
typedef struct lf_qblock {
    float d;               /* scale: x ~ d * q */
    float s;               /* d * sum(q) */
    int8_t q[LF_QK];
} lf_qblock;

/* Quantize cols (a multiple of 32) floats into cols / 32 blocks. */
void lf_quantize_row(const float *x, int cols, lf_qblock *out);

/* Dot product of one weight row (dtype wt, nb * 32 values) with nb
 * activation blocks, at the given level. */
float lf_qdot(lf_dtype wt, const void *wrow, const lf_qblock *x, int nb, lf_qdot_level level);

/* The same for 4 tokens at once (x[t] for t < 4): out[t]. */
void lf_qdot4(lf_dtype wt, const void *wrow, const lf_qblock *const *x, int nb, lf_qdot_level level, float *out);

/* Bytes of scratch lf_qmatmul_multi needs for n rows of cols values. */
size_t lf_qmatmul_scratch_bytes(int n, int cols);

/* lf_matmul_multi for jobs whose weights are all block dtypes (mixed types
 * allowed): x [n][cols] is quantized once into scratch (which has
 * lf_qmatmul_scratch_bytes(n, cols) bytes, aligned for floats), then the
 * pool's threads take groups of rows, each row's dot products for all n
 * tokens. */
void lf_qmatmul_multi(const float *x, int n, int cols, const lf_matmul_job *jobs, int n_jobs, void *scratch);

/* Values per weight scale of block dtype t: 16 for Q6_K, else 32. */
int lf_qgroup(lf_dtype t);
/* Whether t's values carry an offset per 32 values (Q4_1, Q5_1, Q4_K,
 * Q5_K: w = d q + m), which multiplies the activation block's s. */
bool lf_dtype_has_min(lf_dtype t);
/* A row of nb 32-value blocks of any block dtype unpacked for the integer
 * GEMM (cpu/qgemm.h): q[32 nb] the signed integer values (offsets of Q4_0,
 * Q5_0, Q6_K subtracted), sw[32 nb / lf_qgroup(wt)] their scales, and where
 * lf_dtype_has_min(wt), mn[nb] the coefficient of each activation block's s;
 * w = sw q (+ mn). */
void lf_qunpack_row(lf_dtype wt, const void *wrow, int nb, int8_t *q, float *sw, float *mn);

/* Row `row` of a block-dtype weight dequantized to fp32 (the embedding
 * lookup). */
void lf_qweight_row_f32(const lf_weight *w, int row, float *out);

#endif
