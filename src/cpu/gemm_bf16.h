/* Prefill GEMM on bf16 weights with bf16 arithmetic: AVX-512-BF16
 * (vdpbf16ps) and AMX (tdpbf16ps tiles), chosen at run time.
 *
 * y[t][r] = sum_k x[t][k] w[r][k] with the weights read as stored (bf16
 * rows, row-major: the pair w[r][2p], w[r][2p+1] is one 32-bit word) and the
 * activations rounded to bf16 (round to nearest even) once per call, packed
 * per block of 16 tokens as [pair p][token][2]: the 32-bit word of token t at
 * pair p holds x[t][2p] (low half) and x[t][2p+1]. Both paths multiply
 * bf16 pairs exactly and accumulate in fp32:
 *  - avx512bf16: a weight word is broadcast to 16 lanes and vdpbf16ps adds
 *    its two products into the 16 tokens of a block (8 rows x 32 tokens in
 *    16 accumulators);
 *  - amx: tdpbf16ps with the weights as the A tiles (16 rows x 32 values)
 *    and the packed activations as the B tiles (16 pairs x 16 tokens), 32
 *    rows x 32 tokens in 4 accumulator tiles; a task's 64 rows are first
 *    copied in tile order into a per-thread buffer (as the fp32 panels widen
 *    theirs), then go through every token.
 * The one approximation beyond fp32 accumulation is the rounding of x to
 * bf16: |x - bf16(x)| <= 2^-9 |x|, so a product is within
 * 2^-9 sum_k |w x| of the exact one (docs/cpu-quant.md, tests/test_gemm_bf16.c).
 * The weights stay as the file has them: no repacked copy is kept. */
#ifndef LF_CPU_GEMM_BF16_H
#define LF_CPU_GEMM_BF16_H

#include <stdbool.h>
#include <stddef.h>

#include "cpu/kernels.h"

typedef enum lf_bgemm_level {
    LF_BGEMM_FP32 = 0,       /* the fp32-panel GEMM of kernels.c (bf16 widened per panel) */
    LF_BGEMM_AVX512BF16 = 1, /* vdpbf16ps */
    LF_BGEMM_AMX = 2,        /* tdpbf16ps */
} lf_bgemm_level;

/* Best level this CPU (and OS) offers. AMX needs CPUID's AMX-TILE and
 * AMX-BF16, the tile state enabled in XCR0 and Linux's permission to use it
 * (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), asked once, here);
 * a refusal leaves avx512bf16. */
lf_bgemm_level lf_bgemm_supported(void);
/* The level bf16-weight prefill uses: amx where supported, else fp32 (on the
 * Xeon this was measured on, vdpbf16ps ran a 512-token prefill at 0.86-0.89x
 * the fp32 panels, docs/cpu-quant.md), or LF_BF16GEMM in
 * the environment (fp32, avx512bf16, amx; clamped to what the CPU has), or
 * what lf_bgemm_set_level chose; fp32 when the CPU kernels are scalar
 * (LF_SIMD=scalar). */
lf_bgemm_level lf_bgemm_level_get(void);
void lf_bgemm_set_level(lf_bgemm_level level);
const char *lf_bgemm_level_name(lf_bgemm_level level);

/* Bytes of scratch lf_bgemm_multi needs for n tokens of cols values. */
size_t lf_bgemm_scratch_bytes(int n, int cols);

/* lf_matmul_multi for bf16 jobs at the current level (above fp32): x is
 * rounded and packed into scratch, then the pool's threads take groups of
 * 64 rows. False (nothing done) at the fp32 level. */
bool lf_bgemm_multi(const float *x, int n, int cols, const lf_matmul_job *jobs, int n_jobs, void *scratch);

#endif
