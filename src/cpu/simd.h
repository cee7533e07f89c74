/* SIMD helpers for the CPU kernels.
 *
 * The binary is built for baseline x86-64 (or any other architecture); the
 * AVX2/FMA/F16C kernels are compiled per function with a target attribute
 * and chosen at run time (lf_cpu_simd_level), so the same binary runs on a
 * machine without AVX2 through the portable scalar kernels. */
#ifndef LF_CPU_SIMD_H
#define LF_CPU_SIMD_H

#include <stdbool.h>
#include <stdint.h>

/* LF_NO_X86 builds only the portable code (to check it compiles and passes
 * on an x86 machine as it would on another architecture). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(LF_NO_X86)
#define LF_X86 1
#include <immintrin.h>
#define LF_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
/* AVX-512 F/BW/VL/DQ (the attention's 512-bit tiles) */
#define LF_TARGET_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")))
/* AVX-512 F/BW/VL/DQ + VNNI (the quantized kernels' avx512vnni level) */
#define LF_TARGET_VNNI512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
#else
#define LF_X86 0
#define LF_TARGET_AVX2
#define LF_TARGET_AVX512
#define LF_TARGET_VNNI512
#endif

typedef enum lf_simd_level {
    LF_SIMD_SCALAR = 0, /* portable C */
    LF_SIMD_AVX2 = 1,   /* AVX2 + FMA + F16C */
} lf_simd_level;

/* The level the kernels use: the best the CPU supports, unless lowered with
 * lf_cpu_set_simd (tests use it to check the scalar path) or the environment
 * variable LF_SIMD=scalar. */
lf_simd_level lf_cpu_simd_level(void);
/* Best level this CPU supports. */
lf_simd_level lf_cpu_simd_supported(void);
/* Force a level (clamped to what the CPU supports). */
void lf_cpu_set_simd(lf_simd_level level);
const char *lf_simd_level_name(lf_simd_level level);
/* Whether the CPU has AVX-512 F/BW/VL/DQ (with AVX2), and whether the
 * kernels that have a 512-bit form (prefill attention) use it: where the CPU
 * has it, unless LF_AVX512=0 in the environment, lf_cpu_set_avx512(false) or
 * the scalar level. */
bool lf_cpu_avx512_supported(void);
bool lf_cpu_avx512(void);
void lf_cpu_set_avx512(bool on);

#if LF_X86
/* Horizontal sum of 8 floats. */
LF_TARGET_AVX2 static inline float lf_hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v);
    __m128 hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

/* Horizontal max of 8 floats. */
LF_TARGET_AVX2 static inline float lf_hmax256(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* 8 bf16 -> 8 floats (unaligned load of 16 bytes). */
LF_TARGET_AVX2 static inline __m256 lf_load_bf16x8(const uint16_t *p) {
    __m128i h = _mm_loadu_si128((const __m128i *)(const void *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* 8 f16 -> 8 floats. */
LF_TARGET_AVX2 static inline __m256 lf_load_f16x8(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)p));
}
#endif

#endif
