/* Matrix products on Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 blocks with int8
 * activations (the k-quants: kquant.c). See qmatmul.h for the arithmetic;
 * the block layouts are ggml's:
 *   Q8_0 (34 bytes): f16 d, int8 q[32]                  w = d q
 *   Q4_0 (18 bytes): f16 d, 16 bytes, low nibble of byte j is value j,
 *                    high nibble value j + 16           w = d (n - 8)
 *   Q4_1 (20 bytes): f16 d, f16 m, nibbles as Q4_0      w = d n + m
 *   Q5_0 (22 bytes): f16 d, u32 qh, nibbles; bit j of qh is the fifth bit
 *                    of value j                         w = d (n - 16)
 *   Q5_1 (24 bytes): f16 d, f16 m, u32 qh, nibbles      w = d n + m */
#include "cpu/qmatmul.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/fp.h"
#include "cpu/kdecode.h"
#include "cpu/kquant.h"
#include "cpu/pool.h"
#include "cpu/simd.h"
#include "model/quant.h"

/* ---- types and levels ----------------------------------------------------- */

bool lf_dtype_is_block(lf_dtype t) {
    return t == LF_DTYPE_Q8_0 || t == LF_DTYPE_Q4_0 || t == LF_DTYPE_Q4_1 || t == LF_DTYPE_Q5_0 || t == LF_DTYPE_Q5_1 ||
           lf_dtype_is_kquant(t);
}

static int block_bytes(lf_dtype t) { return (int)lf_dtype_row_bytes(t, LF_QK); }

/* Where a 4- or 5-bit block's parts are: the f16 min (or -1), the u32 of
 * fifth bits (or -1), the nibbles; and the offset subtracted from the
 * unsigned value when there is no min (Q4_0: 8, Q5_0: 16). */
typedef struct {
    int m_at, qh_at, qs_at, offset;
} nib_layout;

static nib_layout layout_of(lf_dtype t) {
    switch (t) {
    case LF_DTYPE_Q4_0: return (nib_layout){-1, -1, 2, 8};
    case LF_DTYPE_Q4_1: return (nib_layout){2, -1, 4, 0};
    case LF_DTYPE_Q5_0: return (nib_layout){-1, 2, 6, 16};
    default: return (nib_layout){2, 4, 8, 0}; /* Q5_1 */
    }
}

lf_qdot_level lf_qdot_supported(void) {
    if (lf_cpu_simd_supported() < LF_SIMD_AVX2) return LF_QDOT_SCALAR;
#if LF_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vnni"))
        return LF_QDOT_AVX512VNNI;
    return LF_QDOT_AVX2;
#else
    return LF_QDOT_SCALAR;
#endif
}

lf_qdot_level lf_qknob_get(lf_qknob *k) {
    int v = atomic_load(&k->level);
    if (v < 0) {
        lf_qdot_level best = lf_qdot_supported(), want = k->dflt;
        const char *env = getenv(k->env);
        if (env && !strcmp(env, "scalar")) want = LF_QDOT_SCALAR;
        if (env && !strcmp(env, "avx2")) want = LF_QDOT_AVX2;
        if (env && !strcmp(env, "avx512vnni")) want = LF_QDOT_AVX512VNNI;
        v = (int)(want < best ? want : best);
        atomic_store(&k->level, v);
    }
    return lf_cpu_simd_level() == LF_SIMD_SCALAR ? LF_QDOT_SCALAR : (lf_qdot_level)v;
}

void lf_qknob_set(lf_qknob *k, lf_qdot_level level) {
    lf_qdot_level best = lf_qdot_supported();
    atomic_store(&k->level, (int)(level > best ? best : level));
}

/* The decode default is AVX2 even where AVX-512 VNNI exists: on the Xeon
 * this was measured on (2 cores of a VM), the 512-bit vpdpbusd kernel ran at
 * 0.6x the AVX2 one for one token (docs/cpu-quant.md); a 256-bit vpdpbusd
 * variant was no faster than AVX2 either. LF_QDOT=avx512vnni selects it. */
static lf_qknob g_qdot = {-1, "LF_QDOT", LF_QDOT_AVX2};

lf_qdot_level lf_qdot_level_get(void) { return lf_qknob_get(&g_qdot); }

void lf_qdot_set_level(lf_qdot_level level) { lf_qknob_set(&g_qdot, level); }

const char *lf_qdot_level_name(lf_qdot_level level) {
    return level == LF_QDOT_AVX512VNNI ? "avx512vnni" : level == LF_QDOT_AVX2 ? "avx2" : "scalar";
}

/* ---- activations ---------------------------------------------------------- */

static void quantize_row_scalar(const float *x, int cols, lf_qblock *out) {
    for (int b = 0; b < cols / LF_QK; b++) {
        const float *xb = x + (size_t)b * LF_QK;
        float amax = 0.0f;
        for (int j = 0; j < LF_QK; j++) amax = fmaxf(amax, fabsf(xb[j]));
        float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < LF_QK; j++) {
            int q = (int)nearbyintf(xb[j] * id);
            q = q > 127 ? 127 : q < -127 ? -127 : q;
            out[b].q[j] = (int8_t)q;
            sum += q;
        }
        out[b].d = d;
        out[b].s = d * (float)sum;
    }
}

#if LF_X86
/* The same arithmetic on 8 lanes: |x * id| <= 127 up to one rounding, and
 * vcvtps2dq rounds to nearest even as nearbyintf does. */
static LF_TARGET_AVX2 void quantize_row_avx2(const float *x, int cols, lf_qblock *out) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int b = 0; b < cols / LF_QK; b++) {
        const float *xb = x + (size_t)b * LF_QK;
        __m256 v[4], m = _mm256_setzero_ps();
        for (int i = 0; i < 4; i++) {
            v[i] = _mm256_loadu_ps(xb + 8 * i);
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[i]));
        }
        float amax = lf_hmax256(m), d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
        __m256i q[4];
        for (int i = 0; i < 4; i++) q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], _mm256_set1_ps(id)));
        /* int32 -> int8 in order: the packs work within 128-bit lanes, the
         * permute puts the four 32-bit groups back in order */
        __m256i w01 = _mm256_packs_epi32(q[0], q[1]), w23 = _mm256_packs_epi32(q[2], q[3]);
        __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(w01, w23), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(void *)out[b].q, bytes);
        __m256i s32 = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
        out[b].d = d;
        out[b].s = d * (float)_mm_cvtsi128_si32(s4);
    }
}
#endif

void lf_quantize_row(const float *x, int cols, lf_qblock *out) {
#if LF_X86
    if (lf_cpu_simd_level() == LF_SIMD_AVX2) {
        quantize_row_avx2(x, cols, out);
        return;
    }
#endif
    quantize_row_scalar(x, cols, out);
}

/* ---- scalar reference ------------------------------------------------------- */

static float rd_f16(const uint8_t *p) { return lf_f16_to_f32((uint16_t)(p[0] | (p[1] << 8))); }

/* sum over the block of n(j) * q[j], n(j) the unsigned 4-bit value j plus
 * its fifth bit (bit j of qh) when there is one */
/* Value j (< 16) and j + 16 of a 4- or 5-bit block, unsigned. */
static void nibble_pair(const uint8_t *qs, uint32_t qh, int j, int *lo, int *hi) {
    *lo = (qs[j] & 0x0F) | (int)(((qh >> j) & 1) << 4);
    *hi = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
}

static int nibble_dot(const uint8_t *qs, uint32_t qh, const int8_t *q) {
    int s = 0;
    for (int j = 0; j < LF_QK / 2; j++) {
        int lo, hi;
        nibble_pair(qs, qh, j, &lo, &hi);
        s += lo * q[j] + hi * q[j + LF_QK / 2];
    }
    return s;
}

static float qdot_scalar(lf_dtype wt, const uint8_t *w, const lf_qblock *x, int nb) {
    float acc = 0.0f;
    int bb = block_bytes(wt);
    for (int b = 0; b < nb; b++, w += bb) {
        float d = rd_f16(w);
        if (wt == LF_DTYPE_Q8_0) {
            int s = 0;
            for (int j = 0; j < LF_QK; j++) s += (int8_t)w[2 + j] * x[b].q[j];
            acc += d * x[b].d * (float)s;
            continue;
        }
        nib_layout L = layout_of(wt);
        uint32_t qh = 0;
        if (L.qh_at >= 0) memcpy(&qh, w + L.qh_at, 4);
        float dot = (float)nibble_dot(w + L.qs_at, qh, x[b].q);
        if (L.m_at < 0)
            acc += d * (x[b].d * dot - (float)L.offset * x[b].s);
        else
            acc += d * x[b].d * dot + rd_f16(w + L.m_at) * x[b].s;
    }
    return acc;
}

/* ---- unpacked rows for the integer GEMM (cpu/qgemm.c) ------------------------ */

int lf_qgroup(lf_dtype t) { return t == LF_DTYPE_Q6_K ? 16 : LF_QK; }

bool lf_dtype_has_min(lf_dtype t) {
    return t == LF_DTYPE_Q4_1 || t == LF_DTYPE_Q5_1 || t == LF_DTYPE_Q4_K || t == LF_DTYPE_Q5_K;
}

LF_TARGET_AVX2 void lf_qunpack_row(lf_dtype wt, const void *wrow, int nb, int8_t *q, float *sw, float *mn) {
    if (lf_dtype_is_kquant(wt)) {
        lf_kunpack_row(wt, wrow, nb / 8, q, sw, mn);
        return;
    }
    const uint8_t *w = wrow;
    int bb = block_bytes(wt);
    for (int b = 0; b < nb; b++, w += bb, q += LF_QK) {
        sw[b] = rd_f16(w);
        if (wt == LF_DTYPE_Q8_0) {
            memcpy(q, w + 2, LF_QK);
            continue;
        }
        nib_layout L = layout_of(wt);
        uint32_t qh = 0;
        if (L.qh_at >= 0) memcpy(&qh, w + L.qh_at, 4);
        const uint8_t *qs = w + L.qs_at;
        for (int j = 0; j < LF_QK / 2; j++) {
            int lo, hi;
            nibble_pair(qs, qh, j, &lo, &hi);
            q[j] = (int8_t)(lo - L.offset);
            q[j + LF_QK / 2] = (int8_t)(hi - L.offset);
        }
        if (L.m_at >= 0) mn[b] = rd_f16(w + L.m_at);
    }
}

/* ---- AVX2 and AVX-512 VNNI ---------------------------------------------------- */

#if LF_X86
/* A weight block ready for u8 x s8 products: the unsigned bytes (Q4:
 * nibbles in value order; Q8_0: |q|), for Q8_0 the signs to put on x
 * (vpsignb), the scale d and the coefficient of the activation block's s
 * (Q4_0: -8 d; Q4_1: m; Q8_0: 0). */
typedef struct {
    __m256i wu, sgn;
    float d, m;
} wblock;

/* The 32 bits at p spread to bytes: byte j is 16 when bit j is set, else 0. */
static inline LF_TARGET_AVX2 __m256i fifth_bits(const uint8_t *p) {
    uint32_t qh;
    memcpy(&qh, p, 4);
    /* byte j takes the qh byte j / 8, then tests bit j % 8 of it */
    const __m256i spread = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), spread);
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit), _mm256_set1_epi8(16));
}

static inline LF_TARGET_AVX2 wblock load_wblock(lf_dtype wt, const uint8_t *w) {
    wblock b;
    uint16_t h;
    memcpy(&h, w, 2);
    b.d = _cvtsh_ss(h);
    if (wt == LF_DTYPE_Q8_0) {
        b.sgn = _mm256_loadu_si256((const __m256i *)(const void *)(w + 2));
        b.wu = _mm256_sign_epi8(b.sgn, b.sgn);
        b.m = 0.0f;
        return b;
    }
    nib_layout L = layout_of(wt);
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(w + L.qs_at)), m4 = _mm_set1_epi8(0x0F);
    b.wu = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m4), _mm_and_si128(v, m4));
    if (L.qh_at >= 0) b.wu = _mm256_or_si256(b.wu, fifth_bits(w + L.qh_at));
    b.sgn = b.wu;
    if (L.m_at < 0) {
        b.m = -(float)L.offset * b.d;
    } else {
        memcpy(&h, w + L.m_at, 2);
        b.m = _cvtsh_ss(h);
    }
    return b;
}

/* The activation block's signed bytes to multiply into b.wu. */
static inline LF_TARGET_AVX2 __m256i x_signed(lf_dtype wt, const wblock *b, const lf_qblock *x) {
    __m256i xq = _mm256_loadu_si256((const __m256i *)(const void *)x->q);
    return wt == LF_DTYPE_Q8_0 ? _mm256_sign_epi8(xq, b->sgn) : xq;
}

/* Up to LF_QT tokens against one weight row: out[t] for t < LF_QT (the
 * callers pad with repeated tokens). */
#define LF_QT 4

static LF_TARGET_AVX2 void qdot_avx2(lf_dtype wt, const uint8_t *w, const lf_qblock *const *x, int nb,
                                     float *out) {
    __m256 acc[LF_QT];
    float extra[LF_QT];
    const __m256i ones = _mm256_set1_epi16(1);
    for (int t = 0; t < LF_QT; t++) {
        acc[t] = _mm256_setzero_ps();
        extra[t] = 0.0f;
    }
    int bb = block_bytes(wt);
    for (int b = 0; b < nb; b++, w += bb) {
        _mm_prefetch((const char *)(w + LF_QM_PREFETCH), _MM_HINT_T0);
        wblock wb = load_wblock(wt, w);
        for (int t = 0; t < LF_QT; t++) {
            __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wb.wu, x_signed(wt, &wb, &x[t][b])), ones);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(wb.d * x[t][b].d), _mm256_cvtepi32_ps(p), acc[t]);
            extra[t] += wb.m * x[t][b].s;
        }
    }
    for (int t = 0; t < LF_QT; t++) out[t] = lf_hsum256(acc[t]) + extra[t];
}

/* One token (decode): the same arithmetic with one accumulator. */
static LF_TARGET_AVX2 float qdot1_avx2(lf_dtype wt, const uint8_t *w, const lf_qblock *x, int nb) {
    __m256 acc = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1);
    float extra = 0.0f;
    int bb = block_bytes(wt);
    for (int b = 0; b < nb; b++, w += bb) {
        _mm_prefetch((const char *)(w + LF_QM_PREFETCH), _MM_HINT_T0);
        wblock wb = load_wblock(wt, w);
        __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wb.wu, x_signed(wt, &wb, &x[b])), ones);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(wb.d * x[b].d), _mm256_cvtepi32_ps(p), acc);
        extra += wb.m * x[b].s;
    }
    return lf_hsum256(acc) + extra;
}

/* Two blocks per vpdpbusd: lanes 0-7 block b, 8-15 block b + 1. */
static inline LF_TARGET_VNNI512 __m512 pair_scales(float s0, float s1) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(s0)), _mm256_set1_ps(s1), 1);
}

static inline LF_TARGET_VNNI512 __m512i pair_bytes(__m256i a, __m256i b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
}

static LF_TARGET_VNNI512 void qdot_vnni512(lf_dtype wt, const uint8_t *w, const lf_qblock *const *x, int nb,
                                           float *out) {
    __m512 acc[LF_QT];
    float extra[LF_QT];
    for (int t = 0; t < LF_QT; t++) {
        acc[t] = _mm512_setzero_ps();
        extra[t] = 0.0f;
    }
    int bb = block_bytes(wt), b = 0;
    for (; b + 2 <= nb; b += 2, w += 2 * bb) {
        wblock w0 = load_wblock(wt, w), w1 = load_wblock(wt, w + bb);
        __m512i wv = pair_bytes(w0.wu, w1.wu);
        for (int t = 0; t < LF_QT; t++) {
            const lf_qblock *xb = &x[t][b];
            __m512i xv = pair_bytes(x_signed(wt, &w0, xb), x_signed(wt, &w1, xb + 1));
            __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, xv);
            acc[t] = _mm512_fmadd_ps(pair_scales(w0.d * xb[0].d, w1.d * xb[1].d), _mm512_cvtepi32_ps(p), acc[t]);
            extra[t] += w0.m * xb[0].s + w1.m * xb[1].s;
        }
    }
    for (int t = 0; t < LF_QT; t++) {
        out[t] = _mm512_reduce_add_ps(acc[t]) + extra[t];
        if (b < nb) out[t] += qdot1_avx2(wt, w, x[t] + b, nb - b);
    }
}

static LF_TARGET_VNNI512 float qdot1_vnni512(lf_dtype wt, const uint8_t *w, const lf_qblock *x, int nb) {
    __m512 acc = _mm512_setzero_ps();
    float extra = 0.0f;
    int bb = block_bytes(wt), b = 0;
    for (; b + 2 <= nb; b += 2, w += 2 * bb) {
        wblock w0 = load_wblock(wt, w), w1 = load_wblock(wt, w + bb);
        __m512i xv = pair_bytes(x_signed(wt, &w0, &x[b]), x_signed(wt, &w1, &x[b + 1]));
        __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), pair_bytes(w0.wu, w1.wu), xv);
        acc = _mm512_fmadd_ps(pair_scales(w0.d * x[b].d, w1.d * x[b + 1].d), _mm512_cvtepi32_ps(p), acc);
        extra += w0.m * x[b].s + w1.m * x[b + 1].s;
    }
    float sum = _mm512_reduce_add_ps(acc) + extra;
    return b < nb ? sum + qdot1_avx2(wt, w, x + b, nb - b) : sum;
}
#endif

float lf_qdot(lf_dtype wt, const void *wrow, const lf_qblock *x, int nb, lf_qdot_level level) {
    if (lf_dtype_is_kquant(wt)) return lf_kdot_row(wt, wrow, x, nb, level);
#if LF_X86
    if (level == LF_QDOT_AVX512VNNI) return qdot1_vnni512(wt, wrow, x, nb);
    if (level == LF_QDOT_AVX2) return qdot1_avx2(wt, wrow, x, nb);
#else
    (void)level;
#endif
    return qdot_scalar(wt, wrow, x, nb);
}

void lf_qdot4(lf_dtype wt, const void *wrow, const lf_qblock *const *x, int nb, lf_qdot_level level, float *out) {
    if (lf_dtype_is_kquant(wt)) {
        lf_kdot(wt, wrow, x, 4, nb, level, out);
        return;
    }
#if LF_X86
    if (level == LF_QDOT_AVX512VNNI) {
        qdot_vnni512(wt, wrow, x, nb, out);
        return;
    }
    if (level == LF_QDOT_AVX2) {
        qdot_avx2(wt, wrow, x, nb, out);
        return;
    }
#endif
    for (int t = 0; t < 4; t++) out[t] = qdot_scalar(wt, wrow, x[t], nb);
}

/* ---- the product ------------------------------------------------------------ */

#define QM_ROWS 16  /* rows per task */
#define QM_MAX_JOBS 8

size_t lf_qmatmul_scratch_bytes(int n, int cols) {
    if (n < 1) n = 1;
    if (cols < 0) cols = 0;
    /* the blocks, then (one token) the row as the k-quant decode kernels
     * read it; counted for every n, so that more tokens never need less */
    return (size_t)n * (size_t)(cols / LF_QK) * sizeof(lf_qblock) + lf_kact_bytes(cols / LF_QK);
}

typedef struct {
    const float *x;
    lf_qblock *xq;   /* [n][nb] */
    int n, cols, nb;
    const lf_matmul_job *jobs;
    int gstart[QM_MAX_JOBS + 1]; /* first row group of each job */
    lf_qdot_level level;
    lf_kact kact; /* one token: the row as the k-quant decode kernels read it */
} qm_args;

static void qm_quant_task(void *p, int t, int worker) {
    (void)worker;
    const qm_args *a = p;
    lf_quantize_row(a->x + (size_t)t * a->cols, a->cols, a->xq + (size_t)t * a->nb);
}

/* Rows [r0, r1) of one job for every token. One token: a dot product per
 * row. Several: 4 tokens at a time per row, so that each weight block is
 * unpacked once for 4 tokens (their activation blocks stay in L1 while the
 * group's rows, in L1/L2 after the first 4 tokens, pass by). */
static void qm_task(void *p, int g, int worker) {
    (void)worker;
    const qm_args *a = p;
    int j = 0;
    while (g >= a->gstart[j + 1]) j++;
    const lf_matmul_job *job = &a->jobs[j];
    const lf_weight *w = job->w;
    int r0 = (g - a->gstart[j]) * QM_ROWS, r1 = r0 + QM_ROWS < w->rows ? r0 + QM_ROWS : w->rows;
    size_t row_bytes = lf_dtype_row_bytes(w->dtype, (size_t)a->cols);
    const uint8_t *base = w->data;
    bool bias = job->bias && job->bias->data;
    if (a->n == 1 && lf_dtype_is_kquant(w->dtype)) {
        lf_kdot_rows(w->dtype, base + (size_t)r0 * row_bytes, row_bytes, r1 - r0, a->nb, &a->kact, a->level, job->y + r0);
        if (bias)
            for (int r = r0; r < r1; r++) job->y[r] += lf_weight_at(job->bias, (size_t)r);
        return;
    }
    if (a->n == 1) {
        for (int r = r0; r < r1; r++) {
            float v = lf_qdot(w->dtype, base + (size_t)r * row_bytes, a->xq, a->nb, a->level);
            job->y[r] = bias ? v + lf_weight_at(job->bias, (size_t)r) : v;
        }
        return;
    }
    for (int t0 = 0; t0 < a->n; t0 += 4) {
        int T = a->n - t0 < 4 ? a->n - t0 : 4;
        const lf_qblock *xs[4];
        for (int t = 0; t < 4; t++) xs[t] = a->xq + (size_t)(t0 + (t < T ? t : T - 1)) * a->nb;
        for (int r = r0; r < r1; r++) {
            float v[4];
            lf_qdot4(w->dtype, base + (size_t)r * row_bytes, xs, a->nb, a->level, v);
            float bv = bias ? lf_weight_at(job->bias, (size_t)r) : 0.0f;
            for (int t = 0; t < T; t++) job->y[(size_t)(t0 + t) * w->rows + r] = v[t] + bv;
        }
    }
}

static void qm_run(qm_args *a, int n_jobs) {
    int total = 0;
    for (int j = 0; j < n_jobs; j++) {
        a->gstart[j] = total;
        total += (a->jobs[j].w->rows + QM_ROWS - 1) / QM_ROWS;
    }
    a->gstart[n_jobs] = total;
    lf_pool_run(total, qm_task, a, lf_cpu_threads());
}

void lf_qmatmul_multi(const float *x, int n, int cols, const lf_matmul_job *jobs, int n_jobs, void *scratch) {
    if (n <= 0 || n_jobs <= 0) return;
    qm_args a = {.x = x, .xq = scratch, .n = n, .cols = cols, .nb = cols / LF_QK, .level = lf_qdot_level_get()};
    lf_pool_run(n, qm_quant_task, &a, n >= 8 ? lf_cpu_threads() : 1);
    bool kquant = false;
    for (int j = 0; j < n_jobs; j++) kquant = kquant || lf_dtype_is_kquant(jobs[j].w->dtype);
    if (n == 1 && kquant) lf_kact_init(&a.kact, a.xq, a.nb, a.xq + a.nb);
    for (int j0 = 0; j0 < n_jobs; j0 += QM_MAX_JOBS) {
        a.jobs = jobs + j0;
        qm_run(&a, n_jobs - j0 < QM_MAX_JOBS ? n_jobs - j0 : QM_MAX_JOBS);
    }
}

static const lf_quant_type *ggml_type_of(lf_dtype t) {
    switch (t) {
    case LF_DTYPE_Q8_0: return lf_quant_find(LF_GGML_Q8_0);
    case LF_DTYPE_Q4_0: return lf_quant_find(LF_GGML_Q4_0);
    case LF_DTYPE_Q5_0: return lf_quant_find(LF_GGML_Q5_0);
    case LF_DTYPE_Q5_1: return lf_quant_find(LF_GGML_Q5_1);
    case LF_DTYPE_Q4_K: return lf_quant_find(LF_GGML_Q4_K);
    case LF_DTYPE_Q5_K: return lf_quant_find(LF_GGML_Q5_K);
    case LF_DTYPE_Q6_K: return lf_quant_find(LF_GGML_Q6_K);
    default: return lf_quant_find(LF_GGML_Q4_1);
    }
}

void lf_qweight_row_f32(const lf_weight *w, int row, float *out) {
    size_t row_bytes = lf_dtype_row_bytes(w->dtype, (size_t)w->cols);
    lf_quant_to_f32(ggml_type_of(w->dtype), (const uint8_t *)w->data + (size_t)row * row_bytes, (size_t)w->cols, out);
}
