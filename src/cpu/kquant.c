/* Q4_K, Q5_K and Q6_K super-blocks against int8 activation blocks (see
 * kquant.h for the arithmetic). Layouts are ggml's (src/model/quant.c
 * dequantizes the same bytes):
 *   Q4_K (144 bytes): f16 d, f16 dmin, 12 bytes of 6-bit scales and mins,
 *     128 bytes of nibbles: byte 32i + l holds value 64i + l (low nibble,
 *     sub-block 2i) and 64i + 32 + l (high nibble, sub-block 2i + 1).
 *   Q5_K (176 bytes): as Q4_K with 32 bytes qh after the scales: bit j of
 *     qh[l] is the fifth bit of value 32j + l.
 *   Q6_K (210 bytes): 128 bytes ql, 64 bytes qh, 16 int8 scales, f16 d. In
 *     half h (128 values), value 32k + l takes its low 4 bits from
 *     ql[64h + l + 32(k & 1)] (high nibble when k >= 2), its top 2 from bits
 *     2k, 2k+1 of qh[32h + l], its scale from sc[8h + 2k + l / 16]. */
#include "cpu/kquant.h"

#include <string.h>

#include "core/fp.h"
#include "cpu/simd.h"
#include "model/quant.h"

#define QK_K 256
#define KSUB 8 /* activation blocks per super-block */
#define KT 4   /* tokens per product at the SIMD levels */

bool lf_dtype_is_kquant(lf_dtype t) { return t == LF_DTYPE_Q4_K || t == LF_DTYPE_Q5_K || t == LF_DTYPE_Q6_K; }

static float rd_f16(const uint8_t *p) { return lf_f16_to_f32((uint16_t)(p[0] | (p[1] << 8))); }

/* The 8 scales and mins of a Q4_K/Q5_K super-block. */
static void k_scales(const uint8_t *packed, int *sc, int *m) {
    for (int j = 0; j < KSUB; j++) lf_quant_k_scale_min(j, packed, &sc[j], &m[j]);
}

/* Value l of sub-block j (4 or 5 bits) of a Q4_K/Q5_K super-block. */
static int k45_value(const uint8_t *qs, const uint8_t *qh, int j, int l) {
    int q = (qs[32 * (j / 2) + l] >> (4 * (j & 1))) & 0x0F;
    return qh ? q | (((qh[l] >> j) & 1) << 4) : q;
}

/* ---- scalar reference ------------------------------------------------------- */

static float q45k_scalar(lf_dtype wt, const uint8_t *w, const lf_qblock *x, int nsb) {
    float acc = 0.0f;
    int bytes = (int)lf_dtype_row_bytes(wt, QK_K);
    for (int sb = 0; sb < nsb; sb++, w += bytes, x += KSUB) {
        float d = rd_f16(w), dmin = rd_f16(w + 2);
        int sc[KSUB], m[KSUB];
        k_scales(w + 4, sc, m);
        const uint8_t *qh = wt == LF_DTYPE_Q5_K ? w + 16 : NULL, *qs = w + (qh ? 48 : 16);
        for (int j = 0; j < KSUB; j++) {
            int isum = 0;
            for (int l = 0; l < 32; l++) isum += k45_value(qs, qh, j, l) * x[j].q[l];
            acc += d * (float)sc[j] * x[j].d * (float)isum - dmin * (float)m[j] * x[j].s;
        }
    }
    return acc;
}

/* Value l of group k (0..3) of a Q6_K half, minus 32. */
static int q6_value(const uint8_t *ql, const uint8_t *qh, int k, int l) {
    int lo = ql[l + 32 * (k & 1)] >> (k >= 2 ? 4 : 0);
    return ((lo & 0x0F) | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
}

static float q6k_scalar(const uint8_t *w, const lf_qblock *x, int nsb) {
    float acc = 0.0f;
    for (int sb = 0; sb < nsb; sb++, w += 210) {
        float d = rd_f16(w + 208);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = w + 64 * h, *qh = w + 128 + 32 * h;
            const int8_t *sc = (const int8_t *)(w + 192) + 8 * h;
            for (int k = 0; k < 4; k++, x++) {
                int lo = 0, hi = 0;
                for (int l = 0; l < 16; l++) lo += q6_value(ql, qh, k, l) * x->q[l];
                for (int l = 16; l < 32; l++) hi += q6_value(ql, qh, k, l) * x->q[l];
                acc += d * x->d * (float)(sc[2 * k] * lo + sc[2 * k + 1] * hi);
            }
        }
    }
    return acc;
}

static float kdot_scalar(lf_dtype wt, const uint8_t *w, const lf_qblock *x, int nsb) {
    return wt == LF_DTYPE_Q6_K ? q6k_scalar(w, x, nsb) : q45k_scalar(wt, w, x, nsb);
}

/* ---- unpacked rows for the integer GEMM (cpu/qgemm.c) ------------------------ */

/* Written as plain loops over 16 or 32 bytes, which the compiler vectorizes. */
LF_TARGET_AVX2 void lf_kunpack_row(lf_dtype wt, const void *wrow, int nsb, int8_t *q, float *sw, float *mn) {
    const uint8_t *w = wrow;
    int bytes = (int)lf_dtype_row_bytes(wt, QK_K);
    for (int sb = 0; sb < nsb; sb++, w += bytes, q += QK_K) {
        if (wt == LF_DTYPE_Q6_K) {
            float d = rd_f16(w + 208);
            const int8_t *sc = (const int8_t *)(w + 192);
            for (int h = 0; h < 2; h++) {
                const uint8_t *ql = w + 64 * h, *qh = w + 128 + 32 * h;
                int8_t *o = q + 128 * h;
                for (int l = 0; l < 32; l++) {
                    o[l] = (int8_t)(((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32);
                    o[32 + l] = (int8_t)(((ql[32 + l] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32);
                    o[64 + l] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                    o[96 + l] = (int8_t)(((ql[32 + l] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
                }
            }
            for (int i = 0; i < 16; i++) *sw++ = d * (float)sc[i];
            continue;
        }
        float d = rd_f16(w), dmin = rd_f16(w + 2);
        int sc[KSUB], m[KSUB];
        k_scales(w + 4, sc, m);
        const uint8_t *qh = wt == LF_DTYPE_Q5_K ? w + 16 : NULL, *qs = w + (qh ? 48 : 16);
        for (int j = 0; j < KSUB; j += 2) {
            const uint8_t *p = qs + 16 * j;
            int8_t *o = q + 32 * j;
            for (int l = 0; l < 32; l++) {
                o[l] = (int8_t)(p[l] & 0x0F);
                o[32 + l] = (int8_t)(p[l] >> 4);
            }
            if (qh)
                for (int l = 0; l < 32; l++) {
                    o[l] = (int8_t)(o[l] | (((qh[l] >> j) & 1) << 4));
                    o[32 + l] = (int8_t)(o[32 + l] | (((qh[l] >> (j + 1)) & 1) << 4));
                }
        }
        for (int j = 0; j < KSUB; j++) {
            *sw++ = d * (float)sc[j];
            *mn++ = -dmin * (float)m[j];
        }
    }
}

/* ---- AVX2 ----------------------------------------------------------------- */

#if LF_X86
/* Prefetch the super-block LF_QM_PREFETCH bytes ahead (one per cache line).
 * always_inline: as a plain static inline AVX2 function GCC 12 emitted none
 * of these prefetches (objdump; kdecode.c says what it cost). */
static inline __attribute__((always_inline)) void prefetch_ahead(const uint8_t *w, int bytes) {
    for (int o = 0; o < bytes; o += 64) _mm_prefetch((const char *)(w + LF_QM_PREFETCH + o), _MM_HINT_T0);
}

/* acc[t] += dscale[t] * sum over pairs of (madd(maddubs(q, x[t]), sc16)). */
#define K_ACCUM(acc, q, xb, sc16, dscale)                                                                       \
    (acc) = _mm256_fmadd_ps(_mm256_set1_ps(dscale),                                                             \
                            _mm256_cvtepi32_ps(_mm256_madd_epi16(                                               \
                                _mm256_maddubs_epi16((q), _mm256_loadu_si256((const __m256i *)(const void *)(xb)->q)), \
                                (sc16))),                                                                       \
                            (acc))

/* Q4_K / Q5_K: the 32 values of sub-block j as unsigned bytes. */
static inline LF_TARGET_AVX2 __m256i k45_bytes(const uint8_t *qs, __m256i qhv, bool q5, int j) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(qs + 32 * (j / 2)));
    __m256i q = (j & 1) ? _mm256_and_si256(_mm256_srli_epi16(v, 4), m4) : _mm256_and_si256(v, m4);
    if (!q5) return q;
    __m256i bit = _mm256_set1_epi8((char)(1 << j));
    __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(qhv, bit), bit);
    return _mm256_or_si256(q, _mm256_and_si256(set, _mm256_set1_epi8(16)));
}

static inline __attribute__((always_inline)) LF_TARGET_AVX2 void q45k_avx2(lf_dtype wt, const uint8_t *w,
                                                                           const lf_qblock *const *x, int nsb,
                                                                           float *out) {
    __m256 acc[KT];
    float extra[KT];
    for (int t = 0; t < KT; t++) {
        acc[t] = _mm256_setzero_ps();
        extra[t] = 0.0f;
    }
    bool q5 = wt == LF_DTYPE_Q5_K;
    int bytes = q5 ? 176 : 144;
    for (int sb = 0; sb < nsb; sb++, w += bytes) {
        prefetch_ahead(w, bytes);
        float d = rd_f16(w), dmin = rd_f16(w + 2);
        int sc[KSUB], m[KSUB];
        k_scales(w + 4, sc, m);
        const uint8_t *qs = w + (q5 ? 48 : 16);
        __m256i qhv = q5 ? _mm256_loadu_si256((const __m256i *)(const void *)(w + 16)) : _mm256_setzero_si256();
        for (int j = 0; j < KSUB; j++) {
            __m256i q = k45_bytes(qs, qhv, q5, j), sc16 = _mm256_set1_epi16((short)sc[j]);
            for (int t = 0; t < KT; t++) {
                const lf_qblock *xb = &x[t][sb * KSUB + j];
                K_ACCUM(acc[t], q, xb, sc16, d * xb->d);
                extra[t] -= dmin * (float)m[j] * xb->s;
            }
        }
    }
    for (int t = 0; t < KT; t++) out[t] = lf_hsum256(acc[t]) + extra[t];
}

static inline __attribute__((always_inline)) LF_TARGET_AVX2 void q6k_avx2(const uint8_t *w,
                                                                          const lf_qblock *const *x, int nsb,
                                                                          float *out) {
    __m256 acc[KT];
    for (int t = 0; t < KT; t++) acc[t] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3), k32 = _mm256_set1_epi8(32);
    for (int sb = 0; sb < nsb; sb++, w += 210) {
        prefetch_ahead(w, 210);
        float d = rd_f16(w + 208);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = w + 64 * h;
            const int8_t *sc = (const int8_t *)(w + 192) + 8 * h;
            __m256i l0 = _mm256_loadu_si256((const __m256i *)(const void *)ql);
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(const void *)(ql + 32));
            __m256i qhv = _mm256_loadu_si256((const __m256i *)(const void *)(w + 128 + 32 * h));
            for (int k = 0; k < 4; k++) {
                __m256i lo = k & 1 ? l1 : l0;
                lo = _mm256_and_si256(k >= 2 ? _mm256_srli_epi16(lo, 4) : lo, m4);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qhv, 2 * k), m2);
                __m256i q = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
                /* scale sc[2k] on values 0-15 (int16 lanes 0-7), sc[2k+1] on 16-31 */
                __m256i sc16 = _mm256_set_m128i(_mm_set1_epi16(sc[2 * k + 1]), _mm_set1_epi16(sc[2 * k]));
                for (int t = 0; t < KT; t++) {
                    const lf_qblock *xb = &x[t][sb * KSUB + 4 * h + k];
                    __m256i xv = _mm256_loadu_si256((const __m256i *)(const void *)xb->q);
                    /* (q - 32) qx in pairs: q unsigned 0..63, so maddubs twice */
                    __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(q, xv), _mm256_maddubs_epi16(k32, xv));
                    acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * xb->d), _mm256_cvtepi32_ps(_mm256_madd_epi16(p, sc16)),
                                             acc[t]);
                }
            }
        }
    }
    for (int t = 0; t < KT; t++) out[t] = lf_hsum256(acc[t]);
}

static LF_TARGET_AVX2 void kdot_avx2(lf_dtype wt, const uint8_t *w, const lf_qblock *const *x, int nsb, float *out) {
    if (wt == LF_DTYPE_Q6_K)
        q6k_avx2(w, x, nsb, out);
    else
        q45k_avx2(wt, w, x, nsb, out);
}
#endif

/* AVX-512 VNNI has no k-quant kernel of its own here: that level runs AVX2. */
void lf_kdot(lf_dtype wt, const void *wrow, const lf_qblock *const *x, int T, int nb, lf_qdot_level level,
             float *out) {
    int nsb = nb / KSUB;
#if LF_X86
    if (level >= LF_QDOT_AVX2) {
        const lf_qblock *xs[KT];
        for (int t = 0; t < KT; t++) xs[t] = x[t < T ? t : T - 1];
        float o[KT];
        kdot_avx2(wt, wrow, xs, nsb, o);
        memcpy(out, o, (size_t)T * sizeof(float));
        return;
    }
#else
    (void)level;
#endif
    for (int t = 0; t < T; t++) out[t] = kdot_scalar(wt, wrow, x[t], nsb);
}
