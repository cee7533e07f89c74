/* The fused decode attention + scoring kernel (see attention.h).
 *
 * AVX2/FMA code is compiled per function with a target attribute and chosen
 * at run time; the scalar path computes the same thing in portable C. */
#include "kv/attention.h"
#include "cpu/kernels.h"
#include "kv/dtype.h"
#include "cpu/pool.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LF_ATT_X86 1
#include <immintrin.h>
#define LF_ATT_AVX2 __attribute__((target("avx2,fma")))
#else
#define LF_ATT_X86 0
#endif

/* Software prefetch distance of the K rows, in rows (a multiple of 4; -1
 * turns software prefetch off). */
#ifndef LF_ATT_PF_AHEAD
#define LF_ATT_PF_AHEAD 8
#endif

/* Below this many K/V bytes per call the kernel runs on the calling thread. */
#ifndef LF_ATT_PARALLEL_BYTES
#define LF_ATT_PARALLEL_BYTES (256 * 1024)
#endif

/* ---- workspace layout ----------------------------------------------------- */

static int n_blocks(int cap) { return (cap + LF_ATT_BLOCK - 1) / LF_ATT_BLOCK; }
static int n_chunks(int cap) { return (cap + LF_ATT_CHUNK - 1) / LF_ATT_CHUNK; }

size_t lf_att_scratch_floats(int n_heads, int n_kv_heads, int head_dim, int capacity) {
    size_t cap = (size_t)capacity;
    return 2 * (size_t)n_kv_heads * cap                                /* att, vn */
           + (size_t)n_heads * cap                                    /* p */
           + (size_t)n_heads * n_blocks(capacity)                     /* ref */
           + (size_t)n_heads * n_chunks(capacity) * (head_dim + 2);   /* partials */
}

static float *scr_p(const lf_kv_cache *c, int h) {
    return c->scratch + 2 * (size_t)c->n_kv_heads * c->capacity + (size_t)h * c->capacity;
}
static float *scr_ref(const lf_kv_cache *c, int h) {
    return c->scratch + (2 * (size_t)c->n_kv_heads + c->n_heads) * c->capacity +
           (size_t)h * n_blocks(c->capacity);
}
/* Partial (O[hd], M, L) of chunk ch for query head h. */
static float *scr_part(const lf_kv_cache *c, int h, int ch) {
    return c->scratch + (2 * (size_t)c->n_kv_heads + c->n_heads) * c->capacity +
           (size_t)c->n_heads * n_blocks(c->capacity) +
           ((size_t)h * n_chunks(c->capacity) + ch) * (c->head_dim + 2);
}

/* ---- dispatch --------------------------------------------------------------- */

static int force_scalar = 0;
void lf_att_force_scalar(int on) { force_scalar = on; }

static bool use_avx2(void) {
#if LF_ATT_X86
    static int level = -1;
    if (level < 0) {
        const char *e = getenv("LF_SIMD");
        int ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        level = (e && strcmp(e, "scalar") == 0) ? 0 : ok;
    }
    return level && !force_scalar;
#else
    return false;
#endif
}

/* ---- one task: a chunk of slots of one (sequence, KV head) ----------------- */

typedef struct att_task {
    const uint8_t *K, *V;  /* [cap][rb] stored rows of this layer and KV head */
    const float *ks, *vs;  /* [cap] their fp8 scales, or NULL */
    lf_kv_dtype dt;
    size_t rb;             /* bytes of a stored row */
    const int32_t *pos;    /* [cap] */
    const float *q;        /* [rep][hd] the group's query heads */
    int rep, hd, s0, s1;   /* slots [s0, s1) */
    float scale;
    float *p;              /* p + h*p_stride: exp-weights, or NULL without scores */
    size_t p_stride;
    float *ref;            /* ref + h*ref_stride: block reference maxima */
    size_t ref_stride;
    float *vn;             /* [cap] |v|_1, or NULL */
    float *part;           /* part + h*part_stride: O[hd], M, L */
    size_t part_stride;
} att_task;

/* The K and V rows rows[0..nv) of a block as floats: kr[j], vr[j] point at
 * the stored rows (fp32) or at their widened copies in kb, vb
 * [LF_ATT_BLOCK][hd] (bf16, fp8: `widen` turns one stored row into floats). */
typedef void (*widen_fn)(const uint8_t *src, float scale, int hd, float *out);

static void scalar_widen_bf16(const uint8_t *src, float scale, int hd, float *out) {
    lf_kv_row_load(LF_KV_BF16, src, scale, hd, out);
}
static void scalar_widen_fp8(const uint8_t *src, float scale, int hd, float *out) {
    lf_kv_row_load(LF_KV_FP8, src, scale, hd, out);
}

static void block_rows(const att_task *t, widen_fn widen, const int *rows, int nv, float *kb, float *vb,
                       const float **kr, const float **vr) {
    for (int j = 0; j < nv; j++) {
        const uint8_t *k = t->K + (size_t)rows[j] * t->rb, *v = t->V + (size_t)rows[j] * t->rb;
        if (t->dt == LF_KV_F32) {
            kr[j] = (const float *)(const void *)k;
            vr[j] = (const float *)(const void *)v;
            continue;
        }
        float *ko = kb + (size_t)j * t->hd, *vo = vb + (size_t)j * t->hd;
        widen(k, t->ks ? t->ks[rows[j]] : 1.0f, t->hd, ko);
        widen(v, t->vs ? t->vs[rows[j]] : 1.0f, t->hd, vo);
        kr[j] = ko;
        vr[j] = vo;
    }
}

/* Every query head's partial starts empty: O = 0, M = -inf, L = 0. */
static inline void task_parts_init(const att_task *t) {
    const int rep = t->rep, hd = t->hd;
    for (int h = 0; h < rep; h++) {
        float *O = t->part + h * t->part_stride;
        memset(O, 0, (size_t)hd * sizeof(float));
        O[hd] = -INFINITY;
        O[hd + 1] = 0;
    }
}

/* A block with no occupied slot: zero weights and |v|_1, reference max -inf. */
static inline void block_mark_empty(const att_task *t, int b0, int n) {
    const int rep = t->rep, blk = b0 / LF_ATT_BLOCK;
    for (int h = 0; h < rep; h++) {
        if (t->p) memset(t->p + h * t->p_stride + b0, 0, (size_t)n * sizeof(float));
        t->ref[h * t->ref_stride + blk] = -INFINITY;
    }
    if (t->vn) memset(t->vn + b0, 0, (size_t)n * sizeof(float));
}

/* The occupied slots (pos >= 0) of the block of n slots at b0: idx[j] is
 * the j-th one's offset in the block, rows[j] its slot; returns their count
 * (0: the block is marked empty and needs nothing more). */
static inline int block_valid_rows(const att_task *t, int b0, int n, int *idx, int *rows) {
    int nv = 0;
    for (int i = 0; i < n; i++)
        if (t->pos[b0 + i] >= 0) {
            idx[nv] = i;
            rows[nv++] = b0 + i;
        }
    if (nv == 0) block_mark_empty(t, b0, n);
    return nv;
}

/* Online-softmax update of one block for head h: logits s[0..n) (-inf for
 * empty slots) become exp-weights relative to the new running max, which is
 * returned through *M (O and L are rescaled when it grows). */
static void block_softmax_scalar(float *s, int n, float *O, int hd, float *M, float *L) {
    float mb = -INFINITY;
    for (int i = 0; i < n; i++)
        if (s[i] > mb) mb = s[i];
    float mn = mb > *M ? mb : *M;
    if (mn > *M) {
        float f = (*M == -INFINITY) ? 0.0f : expf(*M - mn);
        for (int d = 0; d < hd; d++) O[d] *= f;
        *L *= f;
        *M = mn;
    }
    float sum = 0;
    for (int i = 0; i < n; i++) {
        s[i] = (s[i] == -INFINITY) ? 0.0f : expf(s[i] - mn);
        sum += s[i];
    }
    *L += sum;
}

static void task_scalar(const att_task *t) {
    const int rep = t->rep, hd = t->hd;
    float sb[LF_ATT_MAX_GROUP * LF_ATT_BLOCK];
    int idx[LF_ATT_BLOCK], rows[LF_ATT_BLOCK];
    float kb[LF_ATT_BLOCK * LF_ATT_WIDE_HD], vb[LF_ATT_BLOCK * LF_ATT_WIDE_HD];
    const float *kr[LF_ATT_BLOCK], *vr[LF_ATT_BLOCK];
    const widen_fn widen = t->dt == LF_KV_FP8 ? scalar_widen_fp8 : scalar_widen_bf16;
    task_parts_init(t);
    for (int b0 = t->s0; b0 < t->s1; b0 += LF_ATT_BLOCK) {
        int n = t->s1 - b0 < LF_ATT_BLOCK ? t->s1 - b0 : LF_ATT_BLOCK;
        int blk = b0 / LF_ATT_BLOCK;
        int nv = block_valid_rows(t, b0, n, idx, rows);
        if (nv == 0) continue;
        block_rows(t, widen, rows, nv, kb, vb, kr, vr);
        for (int h = 0; h < rep; h++)
            for (int i = 0; i < n; i++) sb[h * LF_ATT_BLOCK + i] = -INFINITY;
        for (int j = 0; j < nv; j++) {
            for (int h = 0; h < rep; h++) {
                const float *qh = t->q + (size_t)h * hd;
                float d = 0;
                for (int e = 0; e < hd; e++) d += qh[e] * kr[j][e];
                sb[h * LF_ATT_BLOCK + idx[j]] = d * t->scale;
            }
        }
        for (int h = 0; h < rep; h++) {
            float *O = t->part + h * t->part_stride;
            float *s = sb + h * LF_ATT_BLOCK;
            block_softmax_scalar(s, n, O, hd, &O[hd], &O[hd + 1]);
            t->ref[h * t->ref_stride + blk] = O[hd];
            if (t->p) memcpy(t->p + h * t->p_stride + b0, s, (size_t)n * sizeof(float));
        }
        if (t->vn) {
            memset(t->vn + b0, 0, (size_t)n * sizeof(float));
            for (int j = 0; j < nv; j++) {
                float a = 0;
                for (int e = 0; e < hd; e++) a += fabsf(vr[j][e]);
                t->vn[b0 + idx[j]] = a;
            }
        }
        for (int j = 0; j < nv; j++) {
            for (int h = 0; h < rep; h++) {
                float w = sb[h * LF_ATT_BLOCK + idx[j]];
                float *O = t->part + h * t->part_stride;
                for (int e = 0; e < hd; e++) O[e] += w * vr[j][e];
            }
        }
    }
}

#if LF_ATT_X86
/* e^x for a vector, x <= 88; exactly 0 below -87.33 (and for -inf).
 * Range reduction x = n*ln2 + r, |r| <= ln2/2, degree-7 Taylor polynomial
 * (relative error < 2e-7 before rounding). */
LF_ATT_AVX2 static inline __m256 exp256(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.33654f), hi = _mm256_set1_ps(88.0f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 pl = _mm256_set1_ps(1.0f / 5040.0f);
    pl = _mm256_fmadd_ps(pl, r, _mm256_set1_ps(1.0f / 720.0f));
    pl = _mm256_fmadd_ps(pl, r, _mm256_set1_ps(1.0f / 120.0f));
    pl = _mm256_fmadd_ps(pl, r, _mm256_set1_ps(1.0f / 24.0f));
    pl = _mm256_fmadd_ps(pl, r, _mm256_set1_ps(1.0f / 6.0f));
    pl = _mm256_fmadd_ps(pl, r, _mm256_set1_ps(0.5f));
    pl = _mm256_fmadd_ps(pl, r, _mm256_set1_ps(1.0f));
    pl = _mm256_fmadd_ps(pl, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 y = _mm256_mul_ps(pl, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(under, y);
}

LF_ATT_AVX2 static void exp_block_avx2(const float *x, float *y, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp256(_mm256_loadu_ps(x + i)));
    if (i < n) {
        float tx[8], ty[8];
        for (int j = 0; j < 8; j++) tx[j] = i + j < n ? x[i + j] : -INFINITY;
        _mm256_storeu_ps(ty, exp256(_mm256_loadu_ps(tx)));
        for (int j = 0; i + j < n; j++) y[i + j] = ty[j];
    }
}

LF_ATT_AVX2 static inline float hsum(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

/* Logits of one K row against nh (<= 4) query heads; hd % 8 == 0. */
LF_ATT_AVX2 static inline void dots4(const float *kr, const float *q, int nh, int hd, float *out) {
    __m256 a0[4], a1[4];
    for (int h = 0; h < 4; h++) a0[h] = a1[h] = _mm256_setzero_ps();
    int d = 0;
    for (; d + 16 <= hd; d += 16) {
        __m256 k0 = _mm256_loadu_ps(kr + d), k1 = _mm256_loadu_ps(kr + d + 8);
        for (int h = 0; h < 4; h++) {
            if (h >= nh) break;
            a0[h] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (size_t)h * hd + d), k0, a0[h]);
            a1[h] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (size_t)h * hd + d + 8), k1, a1[h]);
        }
    }
    if (d < hd) {
        __m256 k0 = _mm256_loadu_ps(kr + d);
        for (int h = 0; h < nh; h++) a0[h] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (size_t)h * hd + d), k0, a0[h]);
    }
    for (int h = 0; h < nh; h++) out[h] = hsum(_mm256_add_ps(a0[h], a1[h]));
}

/* 8 horizontal sums at once: lane i of the result is the sum of a[i]. */
LF_ATT_AVX2 static inline __m256 hsum8(const __m256 *a) {
    __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
    __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
    __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* Logits of four K rows against two query heads (q0, q1 = q0 + hd):
 * out[h][r] for h < 2, r < 4, scaled. Each q vector is loaded once for the
 * four rows; eight independent accumulators. hd % 8 == 0. */
LF_ATT_AVX2 static inline void dots_4x2(const float *k0, const float *k1, const float *k2, const float *k3,
                                        const float *q, int hd, float scale, float *out0, float *out1) {
    __m256 a[8];
    for (int i = 0; i < 8; i++) a[i] = _mm256_setzero_ps();
    for (int d = 0; d < hd; d += 8) {
        __m256 x0 = _mm256_loadu_ps(q + d), x1 = _mm256_loadu_ps(q + hd + d);
        __m256 r0 = _mm256_loadu_ps(k0 + d), r1 = _mm256_loadu_ps(k1 + d);
        __m256 r2 = _mm256_loadu_ps(k2 + d), r3 = _mm256_loadu_ps(k3 + d);
        a[0] = _mm256_fmadd_ps(x0, r0, a[0]);
        a[1] = _mm256_fmadd_ps(x0, r1, a[1]);
        a[2] = _mm256_fmadd_ps(x0, r2, a[2]);
        a[3] = _mm256_fmadd_ps(x0, r3, a[3]);
        a[4] = _mm256_fmadd_ps(x1, r0, a[4]);
        a[5] = _mm256_fmadd_ps(x1, r1, a[5]);
        a[6] = _mm256_fmadd_ps(x1, r2, a[6]);
        a[7] = _mm256_fmadd_ps(x1, r3, a[7]);
    }
    __m256 s = _mm256_mul_ps(hsum8(a), _mm256_set1_ps(scale));
    _mm_storeu_ps(out0, _mm256_castps256_ps128(s));
    _mm_storeu_ps(out1, _mm256_extractf128_ps(s, 1));
}

/* The same for one query head and eight rows. */
LF_ATT_AVX2 static inline void dots_8x1(const float *const *k, const float *q, int hd, float scale, float *out) {
    __m256 a[8];
    for (int i = 0; i < 8; i++) a[i] = _mm256_setzero_ps();
    for (int d = 0; d < hd; d += 8) {
        __m256 x0 = _mm256_loadu_ps(q + d);
        for (int r = 0; r < 8; r++) a[r] = _mm256_fmadd_ps(x0, _mm256_loadu_ps(k[r] + d), a[r]);
    }
    _mm256_storeu_ps(out, _mm256_mul_ps(hsum8(a), _mm256_set1_ps(scale)));
}

/* O[h] += sum_j w[h][j] * V[row j] for nh (<= 2) heads, 32 floats of the
 * head dimension at a time (hd % 8 == 0). */
LF_ATT_AVX2 static void vacc2(const float *const *vrow, int nr, const float *w, int wstride, float *O0,
                              float *O1, int nh, int hd) {
    int d = 0;
    for (; d + 32 <= hd; d += 32) {
        __m256 x0 = _mm256_loadu_ps(O0 + d), x1 = _mm256_loadu_ps(O0 + d + 8);
        __m256 x2 = _mm256_loadu_ps(O0 + d + 16), x3 = _mm256_loadu_ps(O0 + d + 24);
        __m256 y0 = _mm256_setzero_ps(), y1 = y0, y2 = y0, y3 = y0;
        if (nh > 1) {
            y0 = _mm256_loadu_ps(O1 + d), y1 = _mm256_loadu_ps(O1 + d + 8);
            y2 = _mm256_loadu_ps(O1 + d + 16), y3 = _mm256_loadu_ps(O1 + d + 24);
        }
        for (int j = 0; j < nr; j++) {
            const float *vr = vrow[j] + d;
            __m256 v0 = _mm256_loadu_ps(vr), v1 = _mm256_loadu_ps(vr + 8);
            __m256 v2 = _mm256_loadu_ps(vr + 16), v3 = _mm256_loadu_ps(vr + 24);
            __m256 p0 = _mm256_broadcast_ss(w + j);
            x0 = _mm256_fmadd_ps(p0, v0, x0);
            x1 = _mm256_fmadd_ps(p0, v1, x1);
            x2 = _mm256_fmadd_ps(p0, v2, x2);
            x3 = _mm256_fmadd_ps(p0, v3, x3);
            if (nh > 1) {
                __m256 p1 = _mm256_broadcast_ss(w + wstride + j);
                y0 = _mm256_fmadd_ps(p1, v0, y0);
                y1 = _mm256_fmadd_ps(p1, v1, y1);
                y2 = _mm256_fmadd_ps(p1, v2, y2);
                y3 = _mm256_fmadd_ps(p1, v3, y3);
            }
        }
        _mm256_storeu_ps(O0 + d, x0);
        _mm256_storeu_ps(O0 + d + 8, x1);
        _mm256_storeu_ps(O0 + d + 16, x2);
        _mm256_storeu_ps(O0 + d + 24, x3);
        if (nh > 1) {
            _mm256_storeu_ps(O1 + d, y0);
            _mm256_storeu_ps(O1 + d + 8, y1);
            _mm256_storeu_ps(O1 + d + 16, y2);
            _mm256_storeu_ps(O1 + d + 24, y3);
        }
    }
    for (; d < hd; d += 8) {
        __m256 x0 = _mm256_loadu_ps(O0 + d), y0 = nh > 1 ? _mm256_loadu_ps(O1 + d) : _mm256_setzero_ps();
        for (int j = 0; j < nr; j++) {
            __m256 v0 = _mm256_loadu_ps(vrow[j] + d);
            x0 = _mm256_fmadd_ps(_mm256_broadcast_ss(w + j), v0, x0);
            if (nh > 1) y0 = _mm256_fmadd_ps(_mm256_broadcast_ss(w + wstride + j), v0, y0);
        }
        _mm256_storeu_ps(O0 + d, x0);
        if (nh > 1) _mm256_storeu_ps(O1 + d, y0);
    }
}

/* Widen one stored row (hd % 8 == 0) to floats, 8 elements at a time: bf16
 * by a shift into the float's top half; fp8 e4m3 by putting its exponent
 * and mantissa bits at a float's, rebiasing by 2^120 and multiplying by the
 * row's scale (the same floats as lf_fp8_to_f32(c) * scale). */
LF_ATT_AVX2 static void avx2_widen_bf16(const uint8_t *src, float scale, int hd, float *out) {
    (void)scale;
    for (int d = 0; d < hd; d += 8) {
        __m256i x = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(src + 2 * (size_t)d)));
        _mm256_storeu_ps(out + d, _mm256_castsi256_ps(_mm256_slli_epi32(x, 16)));
    }
}

LF_ATT_AVX2 static void avx2_widen_fp8(const uint8_t *src, float scale, int hd, float *out) {
    const __m256 rebias = _mm256_set1_ps(0x1p120f), s = _mm256_set1_ps(scale);
    const __m256i mag = _mm256_set1_epi32(0x7f), sgn = _mm256_set1_epi32(0x80);
    for (int d = 0; d < hd; d += 8) {
        __m256i x = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(src + d)));
        __m256i m = _mm256_slli_epi32(_mm256_and_si256(x, mag), 20);
        __m256 a = _mm256_mul_ps(_mm256_castsi256_ps(m), rebias);
        __m256 sign = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(x, sgn), 24));
        _mm256_storeu_ps(out + d, _mm256_mul_ps(_mm256_or_ps(a, sign), s));
    }
}

/* Prefetch rows r0..r0+n-1 (those inside the task) of X (K or V). */
LF_ATT_AVX2 static inline void prefetch_rows(const att_task *t, const uint8_t *X, int r0, int n) {
    if (LF_ATT_PF_AHEAD < 0) return;
    int r1 = r0 + n < t->s1 ? r0 + n : t->s1;
    if (r0 >= r1) return;
    const char *p = (const char *)(X + (size_t)r0 * t->rb);
    size_t bytes = (size_t)(r1 - r0) * t->rb;
    for (size_t o = 0; o < bytes; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
}

/* The scaled logits of the block's nv valid rows into sb[h][j], four rows
 * and two heads (or eight rows and one head) at a time, with the software
 * prefetch spread between the passes: the K rows LF_ATT_PF_AHEAD rows
 * ahead, and this block's V rows for the pass that follows (all into L1,
 * which holds a block of K and V). */
LF_ATT_AVX2 static inline void avx2_block_logits(const att_task *t, const float *const *krow, int b0, int nv,
                                                 float *sb) {
    const int rep = t->rep, hd = t->hd;
    int j0 = 0;
    if (rep == 1) {
        for (; j0 + 8 <= nv; j0 += 8) {
            prefetch_rows(t, t->K, b0 + j0 + LF_ATT_PF_AHEAD, 8);
            prefetch_rows(t, t->V, b0 + j0, 8);
            dots_8x1(krow + j0, t->q, hd, t->scale, sb + j0);
        }
    } else if (rep % 2 == 0) {
        for (; j0 + 4 <= nv; j0 += 4) {
            prefetch_rows(t, t->K, b0 + j0 + LF_ATT_PF_AHEAD, 4);
            prefetch_rows(t, t->V, b0 + j0, 4);
            const float *k0 = krow[j0], *k1 = krow[j0 + 1], *k2 = krow[j0 + 2], *k3 = krow[j0 + 3];
            for (int h = 0; h < rep; h += 2)
                dots_4x2(k0, k1, k2, k3, t->q + (size_t)h * hd, hd, t->scale, sb + h * LF_ATT_BLOCK + j0,
                         sb + (h + 1) * LF_ATT_BLOCK + j0);
        }
    }
    /* rows not covered above (rows of a block with empty slots are
     * counted as if packed: the prefetch is only a hint) */
    if (j0 < LF_ATT_BLOCK) {
        prefetch_rows(t, t->K, b0 + j0 + LF_ATT_PF_AHEAD, LF_ATT_BLOCK - j0);
        prefetch_rows(t, t->V, b0 + j0, LF_ATT_BLOCK - j0);
    }
    for (int j = j0; j < nv; j++) {
        const float *kr = krow[j];
        float dd[4];
        for (int h0 = 0; h0 < rep; h0 += 4) {
            int nh = rep - h0 < 4 ? rep - h0 : 4;
            dots4(kr, t->q + (size_t)h0 * hd, nh, hd, dd);
            for (int h = 0; h < nh; h++) sb[(h0 + h) * LF_ATT_BLOCK + j] = dd[h] * t->scale;
        }
    }
}

/* Per head, the online softmax over the block: rescales the running O, M, L
 * to the new maximum, leaves the exp-weights of the valid rows packed in
 * wb[h][j] (and, with scores, at their slots in p), and the block's
 * reference maximum. */
LF_ATT_AVX2 static inline void avx2_block_softmax(const att_task *t, const float *sb, float *wb, const int *idx,
                                                  int b0, int n, int nv, int blk) {
    const int rep = t->rep, hd = t->hd;
    for (int h = 0; h < rep; h++) {
        float *O = t->part + h * t->part_stride;
        const float *s = sb + h * LF_ATT_BLOCK;
        float *w = wb + h * LF_ATT_BLOCK;
        float mb = s[0];
        for (int j = 1; j < nv; j++) mb = s[j] > mb ? s[j] : mb;
        if (mb > O[hd]) {
            float f = (O[hd] == -INFINITY) ? 0.0f : expf(O[hd] - mb);
            if (f != 1.0f) {
                __m256 fv = _mm256_set1_ps(f);
                for (int d = 0; d < hd; d += 8)
                    _mm256_storeu_ps(O + d, _mm256_mul_ps(fv, _mm256_loadu_ps(O + d)));
            }
            O[hd + 1] *= f;
            O[hd] = mb;
        }
        float m = O[hd];
        float tmp[LF_ATT_BLOCK];
        for (int j = 0; j < nv; j++) tmp[j] = s[j] - m;
        exp_block_avx2(tmp, w, nv);
        float sum = 0;
        for (int j = 0; j < nv; j++) sum += w[j];
        O[hd + 1] += sum;
        t->ref[h * t->ref_stride + blk] = m;
        if (t->p) {
            float *pp = t->p + h * t->p_stride + b0;
            memset(pp, 0, (size_t)n * sizeof(float));
            for (int j = 0; j < nv; j++) pp[idx[j]] = w[j];
        }
    }
}

/* With scores, each valid row's |v|_1, reading the block's V rows in order
 * (which also brings them in for the V pass). */
LF_ATT_AVX2 static inline void avx2_block_vnorms(const att_task *t, const float *const *vrow, const int *rows,
                                                 int b0, int n, int nv) {
    const int hd = t->hd;
    const __m256 mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    if (nv < n) memset(t->vn + b0, 0, (size_t)n * sizeof(float));
    for (int j = 0; j < nv; j++) {
        const float *vr = vrow[j];
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        int d = 0;
        for (; d + 16 <= hd; d += 16) {
            a0 = _mm256_add_ps(a0, _mm256_and_ps(mask, _mm256_loadu_ps(vr + d)));
            a1 = _mm256_add_ps(a1, _mm256_and_ps(mask, _mm256_loadu_ps(vr + d + 8)));
        }
        if (d < hd) a0 = _mm256_add_ps(a0, _mm256_and_ps(mask, _mm256_loadu_ps(vr + d)));
        t->vn[rows[j]] = hsum(_mm256_add_ps(a0, a1));
    }
}

LF_ATT_AVX2 static void task_avx2(const att_task *t) {
    const int rep = t->rep, hd = t->hd;
    float sb[LF_ATT_MAX_GROUP * LF_ATT_BLOCK];
    float wb[LF_ATT_MAX_GROUP * LF_ATT_BLOCK]; /* weights of the valid rows, packed */
    int idx[LF_ATT_BLOCK], rows[LF_ATT_BLOCK];
    float kb[LF_ATT_BLOCK * LF_ATT_WIDE_HD], vb[LF_ATT_BLOCK * LF_ATT_WIDE_HD];
    const float *krow[LF_ATT_BLOCK], *vrow[LF_ATT_BLOCK];
    const widen_fn widen = t->dt == LF_KV_FP8 ? avx2_widen_fp8 : avx2_widen_bf16;
    task_parts_init(t);
    for (int b0 = t->s0; b0 < t->s1; b0 += LF_ATT_BLOCK) {
        int n = t->s1 - b0 < LF_ATT_BLOCK ? t->s1 - b0 : LF_ATT_BLOCK;
        int blk = b0 / LF_ATT_BLOCK;
        int nv = block_valid_rows(t, b0, n, idx, rows);
        if (nv == 0) continue;
        block_rows(t, widen, rows, nv, kb, vb, krow, vrow);
        avx2_block_logits(t, krow, b0, nv, sb);
        avx2_block_softmax(t, sb, wb, idx, b0, n, nv, blk);
        if (t->vn) avx2_block_vnorms(t, vrow, rows, b0, n, nv);
        for (int h = 0; h < rep; h += 2) {
            int nh = rep - h < 2 ? rep - h : 2;
            float *O0 = t->part + h * t->part_stride, *O1 = t->part + (h + 1 < rep ? h + 1 : h) * t->part_stride;
            vacc2(vrow, nv, wb + h * LF_ATT_BLOCK, LF_ATT_BLOCK, O0, O1, nh, hd);
        }
    }
}
#endif

void lf_att_exp_block(const float *x, float *y, int n) {
#if LF_ATT_X86
    if (use_avx2()) {
        exp_block_avx2(x, y, n);
        return;
    }
#endif
    for (int i = 0; i < n; i++) y[i] = x[i] == -INFINITY ? 0.0f : expf(x[i]);
}

/* ---- combine the chunks of one (sequence, KV head) ------------------------- */

static void combine(const lf_kv_cache *c, int layer, int g, float *out, bool scores) {
    const lf_kv_layer *L = &c->layers[layer];
    int hd = c->head_dim, rep = c->n_heads / c->n_kv_heads;
    int nch = (L->hw + LF_ATT_CHUNK - 1) / LF_ATT_CHUNK;
    float Mf[LF_ATT_MAX_GROUP], Lf[LF_ATT_MAX_GROUP];
    for (int hh = 0; hh < rep; hh++) {
        int h = g * rep + hh;
        float M = -INFINITY;
        for (int ch = 0; ch < nch; ch++) {
            float m = scr_part(c, h, ch)[hd];
            if (m > M) M = m;
        }
        float *o = out + (size_t)h * hd;
        memset(o, 0, (size_t)hd * sizeof(float));
        float l = 0;
        if (M != -INFINITY) {
            for (int ch = 0; ch < nch; ch++) {
                const float *P = scr_part(c, h, ch);
                if (P[hd] == -INFINITY) continue;
                float f = expf(P[hd] - M);
                l += f * P[hd + 1];
                for (int d = 0; d < hd; d++) o[d] += f * P[d];
            }
            float inv = 1.0f / l;
            for (int d = 0; d < hd; d++) o[d] *= inv;
        }
        Mf[hh] = M;
        Lf[hh] = l;
    }
    if (!scores) return;
    float *att = lf_att_att(c, g);
    memset(att, 0, (size_t)L->hw * sizeof(float));
    int nb = (L->hw + LF_ATT_BLOCK - 1) / LF_ATT_BLOCK;
    for (int hh = 0; hh < rep; hh++) {
        int h = g * rep + hh;
        if (Mf[hh] == -INFINITY) continue;
        const float *p = scr_p(c, h), *ref = scr_ref(c, h);
        float invl = 1.0f / Lf[hh];
        for (int b = 0; b < nb; b++) {
            if (ref[b] == -INFINITY) continue;
            float f = expf(ref[b] - Mf[hh]) * invl;
            int e = (b + 1) * LF_ATT_BLOCK < L->hw ? (b + 1) * LF_ATT_BLOCK : L->hw;
            for (int i = b * LF_ATT_BLOCK; i < e; i++) att[i] += p[i] * f;
        }
    }
}

/* ---- the layer ------------------------------------------------------------- */

/* One lf_kv_attend call, shared by its tasks (run on the CPU thread pool). */
typedef struct attend_job {
    lf_kv_cache *const *caches;
    int layer, nkv, nh, hd, rep, maxch;
    const float *q;
    float *out;
    bool scores, avx;
    float scale;
} attend_job;

/* Task ti: chunk ti % maxch of KV head (ti / maxch) % nkv of sequence
 * ti / (nkv * maxch). */
static void attend_chunk(void *arg, int ti, int worker) {
    (void)worker;
    const attend_job *j = arg;
    const int s = ti / (j->nkv * j->maxch), g = ti / j->maxch % j->nkv, ch = ti % j->maxch;
    const lf_kv_cache *c = j->caches[s];
    const lf_kv_layer *L = &c->layers[j->layer];
    const int s0 = ch * LF_ATT_CHUNK;
    if (s0 >= L->hw) return;
    const int s1 = s0 + LF_ATT_CHUNK < L->hw ? s0 + LF_ATT_CHUNK : L->hw;
    att_task t = {
        .K = lf_kv_k(c, j->layer, g),
        .V = lf_kv_v(c, j->layer, g),
        .ks = lf_kv_kscale(c, j->layer, g),
        .vs = lf_kv_vscale(c, j->layer, g),
        .dt = c->dtype,
        .rb = c->row_bytes,
        .pos = L->pos,
        .q = j->q + ((size_t)s * j->nh + (size_t)g * j->rep) * j->hd,
        .rep = j->rep,
        .hd = j->hd,
        .s0 = s0,
        .s1 = s1,
        .scale = j->scale,
        .p = j->scores ? scr_p(c, g * j->rep) : NULL,
        .p_stride = (size_t)c->capacity,
        .ref = scr_ref(c, g * j->rep),
        .ref_stride = (size_t)n_blocks(c->capacity),
        .vn = j->scores ? lf_att_vn(c, g) : NULL,
        .part = scr_part(c, g * j->rep, ch),
        .part_stride = (size_t)n_chunks(c->capacity) * (j->hd + 2),
    };
#if LF_ATT_X86
    if (j->avx)
        task_avx2(&t);
    else
#endif
        task_scalar(&t);
}

/* Task sg: merge the chunks of KV head sg % nkv of sequence sg / nkv. */
static void attend_combine(void *arg, int sg, int worker) {
    (void)worker;
    const attend_job *j = arg;
    const int s = sg / j->nkv, g = sg % j->nkv;
    combine(j->caches[s], j->layer, g, j->out + (size_t)s * j->nh * j->hd, j->scores);
}

void lf_kv_attend(lf_kv_cache *const *caches, int n_seq, int layer, const float *q, float *out,
                  bool scores) {
    if (n_seq <= 0) return;
    attend_job j = {.caches = caches, .layer = layer, .q = q, .out = out, .scores = scores};
    j.nkv = caches[0]->n_kv_heads;
    j.nh = caches[0]->n_heads;
    j.hd = caches[0]->head_dim;
    j.rep = j.nh / j.nkv;
    j.maxch = 1;
    for (int s = 0; s < n_seq; s++) {
        int ch = (caches[s]->layers[layer].hw + LF_ATT_CHUNK - 1) / LF_ATT_CHUNK;
        if (ch > j.maxch) j.maxch = ch;
    }
    j.avx = use_avx2() && j.hd % 8 == 0;
    j.scale = 1.0f / sqrtf((float)j.hd);
    /* threads only when there is enough to read to pay for waking them; the
     * same pool as the matrix products, so the two never compete for cores */
    size_t bytes = 0;
    for (int s = 0; s < n_seq; s++)
        bytes += (size_t)caches[s]->layers[layer].hw * j.nkv * 2 * caches[s]->row_bytes;
    const int nth = bytes >= LF_ATT_PARALLEL_BYTES ? lf_cpu_threads() : 1;
    lf_pool_run(n_seq * j.nkv * j.maxch, attend_chunk, &j, nth);
    lf_pool_run(n_seq * j.nkv, attend_combine, &j, nth);
}
