/* The KV cache's element formats (lf_kv_dtype): bf16 and FP8 e4m3 rounding
 * and widening, one row at a time. The fused kernel (attention.c) widens
 * the same bits with vector code to the same floats.
 *
 *   bf16: the top 16 bits of the float, rounded to nearest even; NaN stays
 *         NaN, overflow rounds to +-inf (as a float -> bf16 cast does).
 *   fp8:  e4m3 (OCP "e4m3fn": bias 7, no infinities, max 448, subnormals
 *         down to 2^-9). A row of n elements is stored as codes of x / s
 *         with s = max|x| / 448 (a float beside the row): rounded to
 *         nearest even, saturated at +-448. A row of zeros has s = 0 and
 *         reads back as zeros. A row holding a NaN or an infinity gets
 *         s = NaN and reads back as all NaN (the fp32 cache would make that
 *         token's attention non-finite too). The code 0x7f/0xff (NaN) is
 *         never written. */
#ifndef LF_KV_DTYPE_H
#define LF_KV_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include "longflow.h"

#include "kv/fp8_code.h" /* LF_FP8_MAX, the code and the row-scale rule */

/* Bytes of one stored element. */
size_t lf_kv_dtype_elem(lf_kv_dtype t);
/* Bytes of K and V of one token in one layer (fp8: with the row scales). */
size_t lf_kv_token_bytes(lf_kv_dtype t, int n_kv_heads, int head_dim);

uint16_t lf_bf16_from_f32(float x);
float lf_bf16_to_f32(uint16_t b);
/* e4m3 code of x, which the caller has already scaled (|x| > 448 saturates). */
uint8_t lf_fp8_from_f32(float x);
float lf_fp8_to_f32(uint8_t c);

/* Store row x[0..n) as dtype into dst (n elements of lf_kv_dtype_elem bytes);
 * fp8 writes the row's scale to *scale (untouched otherwise). */
void lf_kv_row_store(lf_kv_dtype t, const float *x, int n, void *dst, float *scale);
/* Widen a stored row into out[0..n). */
void lf_kv_row_load(lf_kv_dtype t, const void *src, float scale, int n, float *out);

#endif
