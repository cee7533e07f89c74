/* Decode (one token) k-quant kernels: see kdecode.h. Block layouts as in
 * kquant.c. Per super-block, j = 0..7 its 32-value sub-blocks (activation
 * blocks 8 sb + j):
 *   Q4_K/Q5_K: sum_j d sc_j dx_j P_j - dmin sum_j m_j s_j,  P_j = sum q qx
 *   Q6_K:      d sum_j dx_j (sc_2j G_2j + sc_2j+1 G_2j+1),
 *              G_i = sum over 16 values of q qx - 32 bsum_i
 * The P_j (G_i) are exact int32 sums; each product sc G is below 2^24, so
 * exact in fp32 too. Q6_K's 16 groups of a super-block are kept in the
 * order the AVX2 reduction produces them: blocks 0-3 first halves, blocks
 * 0-3 second halves, then the same for blocks 4-7 (group_index). */
#include "cpu/kdecode.h"

#include <stdlib.h>
#include <string.h>

#include "cpu/kquant.h"
#include "cpu/simd.h"

#define KSUB 8

/* Where the sum of q over half h of block b goes in lf_kact.bsum. */
static int group_index(int b, int h) { return (b / KSUB) * 16 + ((b % KSUB) / 4) * 8 + h * 4 + b % 4; }

size_t lf_kact_bytes(int nb) { return (size_t)(nb > 0 ? nb : 0) * (2 * sizeof(float) + 2 * sizeof(int32_t)); }

void lf_kact_init(lf_kact *a, const lf_qblock *x, int nb, void *mem) {
    a->x = x;
    a->d = mem;
    a->s = a->d + nb;
    a->bsum = (int32_t *)(void *)(a->s + nb);
    for (int b = 0; b < nb; b++) {
        a->d[b] = x[b].d;
        a->s[b] = x[b].s;
        for (int h = 0; h < 2; h++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += x[b].q[16 * h + l];
            a->bsum[group_index(b, h)] = sum;
        }
    }
}

#if LF_X86
static inline LF_TARGET_AVX2 void prefetch_ahead(const uint8_t *w, int bytes) {
    for (int o = 0; o < bytes; o += 64) _mm_prefetch((const char *)(w + LF_QM_PREFETCH + o), _MM_HINT_T0);
}

/* The int32 sum of q qx over a 32-byte block, in 8 lanes (lane i: bytes 4i..4i+3). */
static inline LF_TARGET_AVX2 __m256i dot_lanes(__m256i q, const lf_qblock *x) {
    __m256i xv = _mm256_loadu_si256((const __m256i *)(const void *)x->q);
    return _mm256_madd_epi16(_mm256_maddubs_epi16(q, xv), _mm256_set1_epi16(1));
}

/* Four lane vectors p[0..3] reduced to [p0 lanes 0-3, p1 0-3, p2 0-3, p3 0-3 | the same of lanes 4-7]. */
static inline LF_TARGET_AVX2 __m256i reduce4(const __m256i *p) {
    return _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
}

/* The 8 scales and 8 mins of a Q4_K/Q5_K super-block (12 packed bytes), as bytes. */
static inline void k_scales8(const uint8_t *packed, uint64_t *sc, uint64_t *m) {
    uint32_t a, b, c;
    memcpy(&a, packed, 4);
    memcpy(&b, packed + 4, 4);
    memcpy(&c, packed + 8, 4);
    uint32_t sc_hi = (c & 0x0F0F0F0Fu) | (((a >> 6) & 0x03030303u) << 4);
    uint32_t m_hi = ((c >> 4) & 0x0F0F0F0Fu) | (((b >> 6) & 0x03030303u) << 4);
    *sc = (uint64_t)(a & 0x3F3F3F3Fu) | ((uint64_t)sc_hi << 32);
    *m = (uint64_t)(b & 0x3F3F3F3Fu) | ((uint64_t)m_hi << 32);
}

static inline LF_TARGET_AVX2 __m256 u8x8_to_ps(uint64_t v) {
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)v)));
}

static inline __attribute__((always_inline)) LF_TARGET_AVX2 float q45k_row(const uint8_t *w, const lf_kact *a,
                                                                           int nsb, bool q5) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), one8 = _mm256_set1_epi8(1);
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    int bytes = q5 ? 176 : 144;
    for (int sb = 0; sb < nsb; sb++, w += bytes) {
        prefetch_ahead(w, bytes);
        __m128 dd = _mm_cvtph_ps(_mm_cvtsi32_si128(*(const int *)(const void *)w));
        uint64_t sc, m;
        k_scales8(w + 4, &sc, &m);
        const lf_qblock *x = a->x + KSUB * sb;
        const uint8_t *qs = w + (q5 ? 48 : 16);
        __m256i qh = q5 ? _mm256_loadu_si256((const __m256i *)(const void *)(w + 16)) : _mm256_setzero_si256();
        __m256i p[KSUB];
        for (int i = 0; i < 4; i++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(qs + 32 * i));
            __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            if (q5) {
                /* bit 2i (2i + 1) of qh[l] is the fifth bit of value l of sub-block 2i (2i + 1) */
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * i), one8), 4));
                hi = _mm256_or_si256(hi,
                                     _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * i + 1), one8), 4));
            }
            p[2 * i] = dot_lanes(lo, &x[2 * i]);
            p[2 * i + 1] = dot_lanes(hi, &x[2 * i + 1]);
        }
        /* [P0..P3 | P0..P3 of lanes 4-7] and the same for P4..P7: fold to [P0..P3 | P4..P7] */
        __m256i r0 = reduce4(p), r1 = reduce4(p + 4);
        __m256i sums = _mm256_add_epi32(_mm256_permute2x128_si256(r0, r1, 0x20), _mm256_permute2x128_si256(r0, r1, 0x31));
        __m256 dsc = _mm256_mul_ps(_mm256_broadcastss_ps(dd), u8x8_to_ps(sc));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(dsc, _mm256_loadu_ps(a->d + KSUB * sb)), acc);
        __m256 dm = _mm256_mul_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(dd)), u8x8_to_ps(m));
        accm = _mm256_fmadd_ps(dm, _mm256_loadu_ps(a->s + KSUB * sb), accm);
    }
    return lf_hsum256(_mm256_sub_ps(acc, accm));
}

static LF_TARGET_AVX2 float q6k_row(const uint8_t *w, const lf_kact *a, int nsb) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3);
    /* scales in group order: 0 2 4 6 1 3 5 7 | 8 10 12 14 9 11 13 15 */
    const __m128i order = _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15);
    __m256 acc = _mm256_setzero_ps();
    for (int sb = 0; sb < nsb; sb++, w += 210) {
        prefetch_ahead(w, 210);
        const lf_qblock *x = a->x + KSUB * sb;
        __m256i p[KSUB];
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = w + 64 * h;
            __m256i l0 = _mm256_loadu_si256((const __m256i *)(const void *)ql);
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(const void *)(ql + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(const void *)(w + 128 + 32 * h));
            for (int k = 0; k < 4; k++) {
                __m256i lo = k & 1 ? l1 : l0;
                lo = _mm256_and_si256(k >= 2 ? _mm256_srli_epi16(lo, 4) : lo, m4);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), m2);
                p[4 * h + k] = dot_lanes(_mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)), &x[4 * h + k]);
            }
        }
        const __m256i *bs = (const __m256i *)(const void *)(a->bsum + 16 * sb);
        __m256i g0 = _mm256_sub_epi32(reduce4(p), _mm256_slli_epi32(_mm256_loadu_si256(bs), 5));
        __m256i g1 = _mm256_sub_epi32(reduce4(p + 4), _mm256_slli_epi32(_mm256_loadu_si256(bs + 1), 5));
        __m128i sc = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(w + 192)), order);
        __m256 t0 = _mm256_mul_ps(_mm256_cvtepi32_ps(g0), _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc)));
        __m256 t1 = _mm256_mul_ps(_mm256_cvtepi32_ps(g1), _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8))));
        __m256 dx = _mm256_loadu_ps(a->d + KSUB * sb);
        __m256 u = _mm256_fmadd_ps(t0, _mm256_permute2f128_ps(dx, dx, 0x00),
                                   _mm256_mul_ps(t1, _mm256_permute2f128_ps(dx, dx, 0x11)));
        uint16_t dh;
        memcpy(&dh, w + 208, 2);
        acc = _mm256_fmadd_ps(u, _mm256_set1_ps(_cvtsh_ss(dh)), acc);
    }
    return lf_hsum256(acc);
}

static LF_TARGET_AVX2 void kdot_rows_avx2(lf_dtype wt, const uint8_t *w, size_t row_bytes, int rows, int nsb,
                                          const lf_kact *a, float *out) {
    for (int r = 0; r < rows; r++, w += row_bytes) {
        if (wt == LF_DTYPE_Q6_K)
            out[r] = q6k_row(w, a, nsb);
        else if (wt == LF_DTYPE_Q5_K)
            out[r] = q45k_row(w, a, nsb, true);
        else
            out[r] = q45k_row(w, a, nsb, false);
    }
}
#endif

void lf_kdot_rows(lf_dtype wt, const void *w, size_t row_bytes, int rows, int nb, const lf_kact *a,
                  lf_qdot_level level, float *out) {
#if LF_X86
    if (level >= LF_QDOT_AVX2) {
        kdot_rows_avx2(wt, w, row_bytes, rows, nb / KSUB, a, out);
        return;
    }
#endif
    const uint8_t *row = w;
    for (int r = 0; r < rows; r++, row += row_bytes) lf_kdot(wt, row, &a->x, 1, nb, level, &out[r]);
}
