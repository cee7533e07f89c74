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

size_t lf_kact_bytes(int nb) { return (size_t)(nb > 0 ? nb : 0) * LF_KACT_BLOCK_BYTES; }

void lf_kact_init(lf_kact *a, const lf_qblock *x, int nb, void *mem) {
    a->x = x;
    a->d = mem;
    a->s = a->d + nb;
    a->bsum = (int32_t *)(void *)(a->s + nb);
    a->q = (int8_t *)(a->bsum + 2 * nb);
    int full = nb - nb % KSUB; /* bsum: whole super-blocks only (k-quant rows have no others) */
    for (int b = 0; b < nb; b++) {
        memcpy(a->q + LF_QK * b, x[b].q, LF_QK);
        a->d[b] = x[b].d;
        a->s[b] = x[b].s;
        for (int h = 0; h < 2 && b < full; h++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += x[b].q[16 * h + l];
            a->bsum[group_index(b, h)] = sum;
        }
    }
}

#if LF_X86
/* The super-block LF_QM_PREFETCH bytes ahead, one prefetch per cache line.
 * always_inline: as a plain static inline function called from the kernels
 * below, GCC 12 emitted no prefetch instruction at all for the Q4_K path
 * (objdump), which left it reading memory at 6.4 GB/s instead of 9-10. */
static inline __attribute__((always_inline)) void prefetch_ahead(const uint8_t *w, int bytes) {
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

#define LF_AI static inline __attribute__((always_inline))

/* One Q4_K/Q5_K super-block (number sb of its row, at w): the scaled sums
 * into acc, the min terms into accm (subtracted at the end). */
LF_AI LF_TARGET_AVX2 void q45k_sb(const uint8_t *w, const lf_kact *a, int sb, bool q5, __m256 *acc, __m256 *accm) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), one8 = _mm256_set1_epi8(1);
    prefetch_ahead(w, q5 ? 176 : 144);
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
            hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * i + 1), one8), 4));
        }
        p[2 * i] = dot_lanes(lo, &x[2 * i]);
        p[2 * i + 1] = dot_lanes(hi, &x[2 * i + 1]);
    }
    /* [P0..P3 | P0..P3 of lanes 4-7] and the same for P4..P7: fold to [P0..P3 | P4..P7] */
    __m256i r0 = reduce4(p), r1 = reduce4(p + 4);
    __m256i sums = _mm256_add_epi32(_mm256_permute2x128_si256(r0, r1, 0x20), _mm256_permute2x128_si256(r0, r1, 0x31));
    __m256 dsc = _mm256_mul_ps(_mm256_broadcastss_ps(dd), u8x8_to_ps(sc));
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(dsc, _mm256_loadu_ps(a->d + KSUB * sb)), *acc);
    __m256 dm = _mm256_mul_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(dd)), u8x8_to_ps(m));
    *accm = _mm256_fmadd_ps(dm, _mm256_loadu_ps(a->s + KSUB * sb), *accm);
}

/* One Q6_K super-block into acc. */
LF_AI LF_TARGET_AVX2 void q6k_sb(const uint8_t *w, const lf_kact *a, int sb, __m256 *acc) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3);
    /* scales in group order: 0 2 4 6 1 3 5 7 | 8 10 12 14 9 11 13 15 */
    const __m128i order = _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15);
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
    *acc = _mm256_fmadd_ps(u, _mm256_set1_ps(_cvtsh_ss(dh)), *acc);
}

/* ---- AVX-512 VNNI: two sub-blocks per vpdpbusd ---------------------------- */

/* p[i] (i < 4): lanes 0-7 partial sums of sub-block 2i, 8-15 of 2i + 1;
 * returns the 8 sub-block sums in order. */
static inline LF_TARGET_VNNI512 __m256i reduce8_512(const __m512i *p) {
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    /* lanes 4k..4k+3: sub-block k (of 0-3, then of 4-7) */
    __m512i q01 = _mm512_add_epi32(_mm512_permutex2var_epi32(p[0], ev, p[1]), _mm512_permutex2var_epi32(p[0], od, p[1]));
    __m512i q23 = _mm512_add_epi32(_mm512_permutex2var_epi32(p[2], ev, p[3]), _mm512_permutex2var_epi32(p[2], od, p[3]));
    /* lanes 2k, 2k + 1: sub-block k */
    __m512i r = _mm512_add_epi32(_mm512_permutex2var_epi32(q01, ev, q23), _mm512_permutex2var_epi32(q01, od, q23));
    return _mm512_cvtepi64_epi32(_mm512_add_epi32(r, _mm512_srli_epi64(r, 32)));
}

/* The 32 bytes at p in both halves of a 512-bit vector. */
static inline LF_TARGET_VNNI512 __m512i both_halves(const uint8_t *p) {
    return _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(const void *)p));
}

/* A 512-bit vector of int16 lanes: a in the low half, b in the high half. */
static inline LF_TARGET_VNNI512 __m512i halves16(short a, short b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16(a)), _mm256_set1_epi16(b), 1);
}

/* q45k_sb with two sub-blocks per vpdpbusd. */
LF_AI LF_TARGET_VNNI512 void q45k_sb512(const uint8_t *w, const lf_kact *a, int sb, bool q5, __m256 *acc,
                                        __m256 *accm) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), one8 = _mm512_set1_epi8(1), nib = halves16(0, 4);
    prefetch_ahead(w, q5 ? 176 : 144);
    __m128 dd = _mm_cvtph_ps(_mm_cvtsi32_si128(*(const int *)(const void *)w));
    uint64_t sc, m;
    k_scales8(w + 4, &sc, &m);
    const int8_t *xq = a->q + KSUB * LF_QK * sb;
    const uint8_t *qs = w + (q5 ? 48 : 16);
    __m512i qh = q5 ? both_halves(w + 16) : _mm512_setzero_si512();
    __m512i p[4];
    for (int i = 0; i < 4; i++) {
        /* sub-block 2i: low nibbles, 2i + 1: high nibbles of the same 32 bytes */
        __m512i q = _mm512_and_si512(_mm512_srlv_epi16(both_halves(qs + 32 * i), nib), m4);
        if (q5) {
            __m512i bit = _mm512_and_si512(_mm512_srlv_epi16(qh, halves16((short)(2 * i), (short)(2 * i + 1))), one8);
            q = _mm512_or_si512(q, _mm512_slli_epi16(bit, 4));
        }
        p[i] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, _mm512_loadu_si512(xq + 64 * i));
    }
    __m256 dsc = _mm256_mul_ps(_mm256_broadcastss_ps(dd), u8x8_to_ps(sc));
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(reduce8_512(p)), _mm256_mul_ps(dsc, _mm256_loadu_ps(a->d + KSUB * sb)),
                           *acc);
    __m256 dm = _mm256_mul_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(dd)), u8x8_to_ps(m));
    *accm = _mm256_fmadd_ps(dm, _mm256_loadu_ps(a->s + KSUB * sb), *accm);
}

/* NAME(wt, w, row_bytes, rows, nsb, a, out) for one instruction set
 * (TARGET; Q45 its Q4_K/Q5_K super-block, Q6_K has the AVX2 one only), row
 * by row; NAME_typed is compiled once per type (wt a constant). */
#define DEFINE_KDOT_ROWS(NAME, TARGET, Q45)                                                                         \
    LF_AI TARGET void NAME##_typed(lf_dtype wt, const uint8_t *w, size_t row_bytes, int rows, int nsb,            \
                                   const lf_kact *a, float *out) {                                                 \
        int bytes = wt == LF_DTYPE_Q6_K ? 210 : wt == LF_DTYPE_Q5_K ? 176 : 144;                                   \
        for (int r = 0; r < rows; r++, w += row_bytes) {                                                           \
            __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();                                          \
            for (int sb = 0; sb < nsb; sb++)                                                                       \
                if (wt == LF_DTYPE_Q6_K)                                                                           \
                    q6k_sb(w + sb * bytes, a, sb, &acc);                                                           \
                else                                                                                               \
                    Q45(w + sb * bytes, a, sb, wt == LF_DTYPE_Q5_K, &acc, &accm);                                  \
            out[r] = lf_hsum256(_mm256_sub_ps(acc, accm));                                                         \
        }                                                                                                          \
    }                                                                                                              \
    static TARGET void NAME(lf_dtype wt, const uint8_t *w, size_t row_bytes, int rows, int nsb, const lf_kact *a, \
                            float *out) {                                                                          \
        if (wt == LF_DTYPE_Q6_K)                                                                                   \
            NAME##_typed(LF_DTYPE_Q6_K, w, row_bytes, rows, nsb, a, out);                                          \
        else if (wt == LF_DTYPE_Q5_K)                                                                              \
            NAME##_typed(LF_DTYPE_Q5_K, w, row_bytes, rows, nsb, a, out);                                          \
        else                                                                                                       \
            NAME##_typed(LF_DTYPE_Q4_K, w, row_bytes, rows, nsb, a, out);                                          \
    }

DEFINE_KDOT_ROWS(kdot_rows_avx2, LF_TARGET_AVX2, q45k_sb)
DEFINE_KDOT_ROWS(kdot_rows_vnni512, LF_TARGET_VNNI512, q45k_sb512)
#endif

void lf_kdot_rows(lf_dtype wt, const void *w, size_t row_bytes, int rows, int nb, const lf_kact *a,
                  lf_qdot_level level, float *out) {
#if LF_X86
    if (level == LF_QDOT_AVX512VNNI) {
        kdot_rows_vnni512(wt, w, row_bytes, rows, nb / KSUB, a, out);
        return;
    }
    if (level == LF_QDOT_AVX2) {
        kdot_rows_avx2(wt, w, row_bytes, rows, nb / KSUB, a, out);
        return;
    }
#endif
    const uint8_t *row = w;
    for (int r = 0; r < rows; r++, row += row_bytes) lf_kdot(wt, row, &a->x, 1, nb, level, &out[r]);
}

_Static_assert(LF_KDOT_PART_BLOCKS % KSUB == 0, "lf_kdot_row's parts are whole super-blocks");

float lf_kdot_row(lf_dtype wt, const void *wrow, const lf_qblock *x, int nb, lf_qdot_level level) {
    float mem[LF_KDOT_PART_BLOCKS * LF_KACT_BLOCK_BYTES / sizeof(float)], sum = 0.0f;
    size_t part_bytes = lf_dtype_row_bytes(wt, (size_t)LF_KDOT_PART_BLOCKS * LF_QK);
    const uint8_t *w = wrow;
    for (int b0 = 0; b0 < nb; b0 += LF_KDOT_PART_BLOCKS, w += part_bytes) {
        int n = nb - b0 < LF_KDOT_PART_BLOCKS ? nb - b0 : LF_KDOT_PART_BLOCKS;
        lf_kact a;
        lf_kact_init(&a, x + b0, n, mem);
        float part;
        lf_kdot_rows(wt, w, 0, 1, n, &a, level, &part);
        sum += part;
    }
    return sum;
}
