/* The FP8 e4m3 code of one already-scaled float and the row-scale rule,
 * written once for the CPU cache (src/kv/dtype.c) and the GPU kernels that
 * store FP8 rows (src/cuda/kernels.cu): both compile this header, so the two
 * caches hold the same bytes for the same floats. The format is described in
 * dtype.h. */
#ifndef LF_KV_FP8_CODE_H
#define LF_KV_FP8_CODE_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define LF_FP8_HD __host__ __device__
#else
#define LF_FP8_HD
#endif

#define LF_FP8_MAX 448.0f

/* e4m3 code of x (|x| > 448 saturates, NaN gives the NaN code). */
LF_FP8_HD static inline uint8_t lf_fp8_code(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    const uint8_t sign = (uint8_t)((u >> 24) & 0x80);
    const float a = fabsf(x);
    if (isnan(x)) return (uint8_t)(sign | 0x7f);
    if (a >= LF_FP8_MAX) return (uint8_t)(sign | 0x7e); /* saturate (and +-inf) */
    if (a < 0x1p-6f) /* subnormal: multiples of 2^-9, 0..8 (8 is the least normal) */
        return (uint8_t)(sign | (uint8_t)nearbyintf(a * 512.0f));
    uint32_t m;
    memcpy(&m, &a, sizeof m);
    m += 0x7ffffu + ((m >> 20) & 1u); /* round 23 -> 3 mantissa bits, to nearest even */
    const int e = (int)(m >> 23) - 127; /* -6 .. 8 (448 is the most a rounds to) */
    return (uint8_t)(sign | (uint8_t)((e + 7) << 3) | (uint8_t)((m >> 20) & 7u));
}

/* The value of an e4m3 code (NaN for 0x7f/0xff): its exponent and mantissa
 * bits put at a float's, times 2^120 for the bias (127 rather than 7; exact,
 * also for subnormal codes, which become float subnormals). */
LF_FP8_HD static inline float lf_fp8_value(uint8_t c) {
    if ((c & 0x7f) == 0x7f) return NAN;
    const uint32_t u = (uint32_t)(c & 0x7f) << 20;
    float a;
    memcpy(&a, &u, sizeof a);
    a *= 0x1p120f;
    return (c & 0x80) ? -a : a;
}

/* A row's scale from its largest |x| (all_finite = no NaN or infinity in
 * the row): NaN for a non-finite row, 0 for a row of zeros. */
LF_FP8_HD static inline float lf_fp8_row_scale(float amax, int all_finite) {
    return all_finite ? amax / LF_FP8_MAX : NAN;
}

/* The stored code of element x of a row with scale s (0 when the row is
 * zeros or not finite, whose codes are all 0). */
LF_FP8_HD static inline uint8_t lf_fp8_row_code(float x, float s) {
    return s > 0 ? lf_fp8_code(x / s) : (uint8_t)0;
}

#endif
