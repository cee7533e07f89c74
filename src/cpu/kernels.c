/* CPU kernels: fused matrix products over bf16/f16/f32 weights, RMSNorm,
 * SiLU, the causal prompt attention. See kernels.h.
 *
 * Matrix products (the hot path): y[t][r] = sum_c x[t][c] w[r][c], fp32
 * accumulation, weights converted in registers, never copied whole.
 *  - GEMV path (fewer than 5 tokens: decode): memory-bound. x is packed into
 *    tiles of up to 4 tokens x 16 columns; each 16-column chunk of a weight
 *    row is loaded and widened once and multiplied into every token of the
 *    tile (dot-product form, horizontal sum at the end of the row). bf16 is
 *    widened without shuffles (see load_w16), the rows are prefetched ahead.
 *  - GEMM path (5 tokens or more: prefill, large batches): compute-bound. x is
 *    transposed into blocks of 16 tokens ([col][token]); a panel of 6 weight
 *    rows is widened to fp32 once and each of its elements is broadcast and
 *    multiplied into 16 tokens (two vectors) with 12 accumulators in
 *    registers, so a weight element costs one conversion per call.
 * The pool's threads (src/cpu/pool.h) claim row groups (of all jobs of a
 * fused product) one task at a time, so each weight byte is read from memory
 * once per call whatever the number of tokens, and a thread the OS has not
 * scheduled does not hold the others up. */
#include "cpu/kernels.h"

#include <math.h>
#include <omp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/fp.h"
#include "cpu/forward.h"
#include "cpu/gemm_bf16.h"
#include "cpu/pool.h"
#include "cpu/qgemm.h"
#include "cpu/qmatmul.h"
#include "cpu/simd.h"
#include "cpu/tile512.h"

/* The 512-bit tiles of this file are fp32 (cpu/tile512.h). */
#define LF_TILE512_BTYPE __m512
#define LF_TILE512_MAC(a, x, w) _mm512_fmadd_ps(w, x, a)

/* ---- threads and SIMD level ---------------------------------------------- */

static atomic_int g_threads = 0;
static atomic_int g_simd = -1; /* -1: not chosen yet */

/* Also the calling thread's OpenMP default, so that parallel regions
 * elsewhere in the library (the KV-cache attention) use the same count. */
void lf_cpu_set_threads(int n) {
    static int omp_default = 0;
    if (omp_default == 0) omp_default = omp_get_max_threads();
    atomic_store(&g_threads, n > 0 ? n : 0);
    omp_set_num_threads(n > 0 ? n : omp_default);
}

int lf_cpu_threads(void) {
    int n = atomic_load(&g_threads);
    return n > 0 ? n : omp_get_max_threads();
}

#if LF_X86
#include <cpuid.h>

/* F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports does
 * not know "f16c", GCC's does; <cpuid.h> reads the same bit with both. */
static bool cpu_has_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}
#endif

lf_simd_level lf_cpu_simd_supported(void) {
#if LF_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c())
        return LF_SIMD_AVX2;
#endif
    return LF_SIMD_SCALAR;
}

static atomic_int g_avx512 = -1;

bool lf_cpu_avx512_supported(void) {
#if LF_X86
    __builtin_cpu_init();
    return lf_cpu_simd_supported() == LF_SIMD_AVX2 && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq");
#else
    return false;
#endif
}

bool lf_cpu_avx512(void) {
    int v = atomic_load(&g_avx512);
    if (v < 0) {
        const char *env = getenv("LF_AVX512");
        v = lf_cpu_avx512_supported() && !(env && strcmp(env, "0") == 0);
        atomic_store(&g_avx512, v);
    }
    return v && lf_cpu_simd_level() == LF_SIMD_AVX2;
}

void lf_cpu_set_avx512(bool on) { atomic_store(&g_avx512, on && lf_cpu_avx512_supported()); }

lf_simd_level lf_cpu_simd_level(void) {
    int v = atomic_load(&g_simd);
    if (v < 0) {
        v = (int)lf_cpu_simd_supported();
        const char *env = getenv("LF_SIMD");
        if (env && strcmp(env, "scalar") == 0) v = LF_SIMD_SCALAR;
        atomic_store(&g_simd, v);
    }
    return (lf_simd_level)v;
}

void lf_cpu_set_simd(lf_simd_level level) {
    lf_simd_level best = lf_cpu_simd_supported();
    atomic_store(&g_simd, (int)(level > best ? best : level));
}

const char *lf_simd_level_name(lf_simd_level level) {
    return level == LF_SIMD_AVX2 ? "avx2" : "scalar";
}

/* ---- weight access --------------------------------------------------------- */

static inline float wconv(lf_dtype t, const void *data, size_t i) {
    switch (t) {
    case LF_DTYPE_BF16: return lf_bf16_to_f32(((const uint16_t *)data)[i]);
    case LF_DTYPE_F16: return lf_f16_to_f32(((const uint16_t *)data)[i]);
    default: return ((const float *)data)[i];
    }
}

float lf_weight_at(const lf_weight *w, size_t i) { return wconv(w->dtype, w->data, i); }

static void convert_span(lf_dtype t, const void *data, size_t off, size_t n, float *out) {
    switch (t) {
    case LF_DTYPE_BF16: {
        const uint16_t *p = (const uint16_t *)data + off;
        for (size_t i = 0; i < n; i++) out[i] = lf_bf16_to_f32(p[i]);
        break;
    }
    case LF_DTYPE_F16: {
        const uint16_t *p = (const uint16_t *)data + off;
        for (size_t i = 0; i < n; i++) out[i] = lf_f16_to_f32(p[i]);
        break;
    }
    default: memcpy(out, (const float *)data + off, n * sizeof(float)); break;
    }
}

void lf_weight_row_f32(const lf_weight *w, int row, float *out) {
    if (lf_dtype_is_block(w->dtype)) {
        lf_qweight_row_f32(w, row, out);
        return;
    }
    convert_span(w->dtype, w->data, (size_t)row * w->cols, (size_t)w->cols, out);
}

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

/* ---- matrix products: scalar path ----------------------------------------- */

#define LF_SCALAR_SPAN 256

static void mm_rows_scalar(const float *x, int n, int cols, const lf_weight *w, int r0, int r1,
                           float *y) {
    float wb[LF_SCALAR_SPAN];
    int ldy = w->rows;
    for (int r = r0; r < r1; r++) {
        for (int t = 0; t < n; t++) y[(size_t)t * ldy + r] = 0.0f;
        for (int c0 = 0; c0 < cols; c0 += LF_SCALAR_SPAN) {
            int len = cols - c0 < LF_SCALAR_SPAN ? cols - c0 : LF_SCALAR_SPAN;
            convert_span(w->dtype, w->data, (size_t)r * cols + c0, (size_t)len, wb);
            for (int t = 0; t < n; t++) {
                const float *xt = x + (size_t)t * cols + c0;
                float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
                int c = 0;
                for (; c + 4 <= len; c += 4) {
                    s0 += wb[c] * xt[c];
                    s1 += wb[c + 1] * xt[c + 1];
                    s2 += wb[c + 2] * xt[c + 2];
                    s3 += wb[c + 3] * xt[c + 3];
                }
                for (; c < len; c++) s0 += wb[c] * xt[c];
                y[(size_t)t * ldy + r] += (s0 + s1) + (s2 + s3);
            }
        }
    }
}

/* ---- matrix products: AVX2 path ------------------------------------------- */

/* GEMV path (n < LF_GEMM_MIN tokens: decode). */
#define LF_TT 4     /* tokens per tile */
#define LF_CH 16    /* columns per chunk */
#define LF_RG 4     /* rows per group */
#define LF_PF 4096  /* software prefetch distance along a weight row, bytes */
/* GEMM path (n >= LF_GEMM_MIN: prefill, large batches). */
#define LF_GEMM_MIN 5
#define LF_MR 6     /* weight rows per panel */
#define LF_NB 16    /* tokens per block: two vectors of 8 */
#define LF_PANELS 8 /* panels per task */

static size_t gemv_pack_floats(int n, int cols) {
    return ((size_t)n + LF_TT - 1) / LF_TT * LF_TT * (size_t)(cols / LF_CH) * LF_CH;
}
static size_t gemm_pack_floats(int n, int cols) {
    return ((size_t)n + LF_NB - 1) / LF_NB * LF_NB * (size_t)cols;
}

size_t lf_matmul_scratch_floats(int n, int cols) {
    if (n < 1) n = 1;
    if (cols < 0) cols = 0;
    size_t qb = max_size(max_size(lf_qmatmul_scratch_bytes(n, cols), lf_qgemm_scratch_bytes(n, cols)),
                         lf_bgemm_scratch_bytes(n, cols));
    size_t q = (qb + sizeof(float) - 1) / sizeof(float);
    return max_size(max_size(gemv_pack_floats(n, cols), gemm_pack_floats(n, cols)), q) + LF_CH;
}

/* GEMV packing: x [n][cols] -> [tile][chunk][token][16] (token tiles of
 * LF_TT; the last tile has the remaining tokens, with a chunk stride of that
 * count). For bf16 weights each chunk holds its even elements, then its odd
 * ones (see load_w16). Columns past the last full chunk stay in x. */
static void pack_x(const float *x, int n, int cols, bool bf16_order, float *xp) {
    int nch = cols / LF_CH;
    for (int t0 = 0; t0 < n; t0 += LF_TT) {
        int T = n - t0 < LF_TT ? n - t0 : LF_TT;
        float *tile = xp + (size_t)t0 * nch * LF_CH;
        for (int c = 0; c < nch; c++)
            for (int t = 0; t < T; t++) {
                const float *src = x + (size_t)(t0 + t) * cols + (size_t)c * LF_CH;
                float *dst = tile + ((size_t)c * T + t) * LF_CH;
                if (bf16_order)
                    for (int i = 0; i < 8; i++) {
                        dst[i] = src[2 * i];
                        dst[8 + i] = src[2 * i + 1];
                    }
                else
                    memcpy(dst, src, LF_CH * sizeof(float));
            }
    }
}

/* GEMM packing of block b: tokens b*16.. as [cols][w] with w = 8 when the
 * block has at most 8 tokens, else 16; missing tokens are zero. */
static void pack_block(const float *x, int n, int cols, int b, float *xt) {
    int t0 = b * LF_NB, nb = n - t0 < LF_NB ? n - t0 : LF_NB, w = nb <= 8 ? 8 : 16;
    float *dst = xt + (size_t)t0 * cols;
    for (int k = 0; k < cols; k++)
        for (int l = 0; l < w; l++) dst[(size_t)k * w + l] = l < nb ? x[(size_t)(t0 + l) * cols + k] : 0.0f;
}

#if LF_X86

#define LF_AI __attribute__((always_inline)) inline

/* The weight chunk at element offset `off` (16 elements) as two fp32 vectors
 * in the order pack_x used for this dtype. bf16 is widened without
 * shuffles: a 32-bit lane holds two bf16 values, (lane << 16) is the even
 * element and (lane & 0xffff0000) the odd one. */
static LF_AI LF_TARGET_AVX2 void load_w16(lf_dtype dt, const void *w, size_t off, __m256 *wa,
                                          __m256 *wb) {
    if (dt == LF_DTYPE_BF16) {
        __m256i raw = _mm256_loadu_si256((const __m256i *)(const void *)((const uint16_t *)w + off));
        *wa = _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16));
        *wb = _mm256_castsi256_ps(_mm256_and_si256(raw, _mm256_set1_epi32((int)0xffff0000u)));
    } else if (dt == LF_DTYPE_F16) {
        const uint16_t *p = (const uint16_t *)w + off;
        *wa = lf_load_f16x8(p);
        *wb = lf_load_f16x8(p + 8);
    } else {
        const float *p = (const float *)w + off;
        *wa = _mm256_loadu_ps(p);
        *wb = _mm256_loadu_ps(p + 8);
    }
}

/* GEMV tile: R rows x T tokens over nch chunks; out[r*T + t]. With T == 1
 * each row has two accumulators so the FMA chains hide their latency. The
 * weight rows are prefetched LF_PF bytes ahead (several short row streams
 * defeat the hardware prefetcher). */
static LF_AI LF_TARGET_AVX2 void gemv_tile(lf_dtype dt, const void *w, size_t row0, size_t ldw,
                                           const float *xt, int nch, int R, int T, float *out) {
    size_t esz = dt == LF_DTYPE_F32 ? 4 : 2;
    __m256 a[LF_RG][LF_TT], b[LF_RG][LF_TT];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) {
            a[r][t] = _mm256_setzero_ps();
            b[r][t] = _mm256_setzero_ps();
        }
    for (int c = 0; c < nch; c++) {
        const float *xc = xt + (size_t)c * T * LF_CH;
        for (int r = 0; r < R; r++) {
            size_t off = (row0 + (size_t)r) * ldw + (size_t)c * LF_CH;
            _mm_prefetch((const char *)w + off * esz + LF_PF, _MM_HINT_T0);
            __m256 wa, wb;
            load_w16(dt, w, off, &wa, &wb);
            for (int t = 0; t < T; t++) {
                a[r][t] = _mm256_fmadd_ps(wa, _mm256_loadu_ps(xc + t * LF_CH), a[r][t]);
                if (T == 1)
                    b[r][t] = _mm256_fmadd_ps(wb, _mm256_loadu_ps(xc + t * LF_CH + 8), b[r][t]);
                else
                    a[r][t] = _mm256_fmadd_ps(wb, _mm256_loadu_ps(xc + t * LF_CH + 8), a[r][t]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            out[r * T + t] = lf_hsum256(T == 1 ? _mm256_add_ps(a[r][t], b[r][t]) : a[r][t]);
}

#define LF_GEMV_CASE(DT, R, T)                                                                     \
    case (R) * 8 + (T): gemv_tile(DT, w, row0, ldw, xt, nch, R, T, out); break;
#define LF_GEMV_ALL(DT)                                                                            \
    switch (R * 8 + T) {                                                                           \
        LF_GEMV_CASE(DT, 1, 1) LF_GEMV_CASE(DT, 1, 2) LF_GEMV_CASE(DT, 1, 3) LF_GEMV_CASE(DT, 1, 4) \
        LF_GEMV_CASE(DT, 2, 1) LF_GEMV_CASE(DT, 2, 2) LF_GEMV_CASE(DT, 2, 3) LF_GEMV_CASE(DT, 2, 4) \
        LF_GEMV_CASE(DT, 3, 2) LF_GEMV_CASE(DT, 4, 2)                                              \
    default: break;                                                                                \
    }

static LF_TARGET_AVX2 void gemv_bf16(const void *w, size_t row0, size_t ldw, const float *xt,
                                     int nch, int R, int T, float *out) {
    LF_GEMV_ALL(LF_DTYPE_BF16)
}
static LF_TARGET_AVX2 void gemv_f16(const void *w, size_t row0, size_t ldw, const float *xt,
                                    int nch, int R, int T, float *out) {
    LF_GEMV_ALL(LF_DTYPE_F16)
}
static LF_TARGET_AVX2 void gemv_f32(const void *w, size_t row0, size_t ldw, const float *xt,
                                    int nch, int R, int T, float *out) {
    LF_GEMV_ALL(LF_DTYPE_F32)
}

/* Rows [r0, r0+nr) (nr <= LF_RG) of one job, all n (< LF_GEMM_MIN) tokens. */
static LF_TARGET_AVX2 void gemv_group(const float *x, const float *xp, int n, int cols,
                                      const lf_matmul_job *job, int r0, int nr) {
    const lf_weight *w = job->w;
    int nch = cols / LF_CH, tail = cols - nch * LF_CH;
    int ldy = w->rows;
    void (*tile)(const void *, size_t, size_t, const float *, int, int, int, float *) =
        w->dtype == LF_DTYPE_BF16 ? gemv_bf16 : w->dtype == LF_DTYPE_F16 ? gemv_f16 : gemv_f32;
    float out[LF_RG * LF_TT];
    for (int t0 = 0; t0 < n; t0 += LF_TT) {
        int T = n - t0 < LF_TT ? n - t0 : LF_TT;
        const float *xt = xp + (size_t)t0 * nch * LF_CH;
        /* one row (one prefetched stream) for a single token; 4 rows x 2
         * tokens or 2 rows x 3-4 tokens: at most 8 accumulators */
        int rstep = T == 1 ? 1 : T == 2 ? LF_RG : 2;
        for (int rr = 0; rr < nr; rr += rstep) {
            int R = nr - rr < rstep ? nr - rr : rstep;
            tile(w->data, (size_t)(r0 + rr), (size_t)cols, xt, nch, R, T, out);
            for (int r = 0; r < R; r++) {
                int row = r0 + rr + r;
                float bias = (job->bias && job->bias->data) ? lf_weight_at(job->bias, (size_t)row) : 0.0f;
                for (int t = 0; t < T; t++) {
                    float s = out[r * T + t];
                    if (tail) {
                        const float *xr = x + (size_t)(t0 + t) * cols + (size_t)nch * LF_CH;
                        size_t base = (size_t)row * cols + (size_t)nch * LF_CH;
                        for (int c = 0; c < tail; c++) s += wconv(w->dtype, w->data, base + c) * xr[c];
                    }
                    job->y[(size_t)(t0 + t) * ldy + row] = s + bias;
                }
            }
        }
    }
}

/* GEMM tile: R (<= 6) fp32 weight rows (stride ldw) x one block of 8*TV
 * tokens packed [K][8*TV]: tokens in the vector lanes, each weight element
 * broadcast, 12 accumulators. out[r*16 + token]. */
static LF_AI LF_TARGET_AVX2 void gemm_tile(const float *wp, size_t ldw, const float *xb, int K,
                                           int R, int TV, float *out) {
    /* named accumulators: GCC keeps an array of them in memory */
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const float *w0 = wp, *w1 = wp + ldw, *w2 = wp + 2 * ldw, *w3 = wp + 3 * ldw;
    const float *w4 = wp + 4 * ldw, *w5 = wp + 5 * ldw;
    for (int k = 0; k < K; k++) {
        __m256 x0 = _mm256_loadu_ps(xb + (size_t)k * 8 * TV);
        __m256 x1 = TV == 2 ? _mm256_loadu_ps(xb + (size_t)k * 16 + 8) : x0;
        __m256 wv;
#define LF_GEMM_STEP(r, a0, a1)                                                                    \
    if (R > r) {                                                                                   \
        wv = _mm256_broadcast_ss(w##r + k);                                                        \
        a0 = _mm256_fmadd_ps(wv, x0, a0);                                                          \
        if (TV == 2) a1 = _mm256_fmadd_ps(wv, x1, a1);                                             \
    }
        LF_GEMM_STEP(0, c00, c01)
        LF_GEMM_STEP(1, c10, c11)
        LF_GEMM_STEP(2, c20, c21)
        LF_GEMM_STEP(3, c30, c31)
        LF_GEMM_STEP(4, c40, c41)
        LF_GEMM_STEP(5, c50, c51)
#undef LF_GEMM_STEP
    }
#define LF_GEMM_OUT(r, a0, a1)                                                                     \
    if (R > r) {                                                                                   \
        _mm256_storeu_ps(out + r * 16, a0);                                                        \
        if (TV == 2) _mm256_storeu_ps(out + r * 16 + 8, a1);                                       \
    }
    LF_GEMM_OUT(0, c00, c01)
    LF_GEMM_OUT(1, c10, c11)
    LF_GEMM_OUT(2, c20, c21)
    LF_GEMM_OUT(3, c30, c31)
    LF_GEMM_OUT(4, c40, c41)
    LF_GEMM_OUT(5, c50, c51)
#undef LF_GEMM_OUT
}

#define LF_GEMM_CASE(R, TV)                                                                        \
    case (R) * 4 + (TV): gemm_tile(wp, ldw, xb, K, R, TV, out); break;

static LF_TARGET_AVX2 void gemm_tile_any(const float *wp, size_t ldw, const float *xb, int K, int R,
                                         int TV, float *out) {
    switch (R * 4 + TV) {
        LF_GEMM_CASE(1, 1) LF_GEMM_CASE(2, 1) LF_GEMM_CASE(3, 1) LF_GEMM_CASE(4, 1)
        LF_GEMM_CASE(5, 1) LF_GEMM_CASE(6, 1) LF_GEMM_CASE(1, 2) LF_GEMM_CASE(2, 2)
        LF_GEMM_CASE(3, 2) LF_GEMM_CASE(4, 2) LF_GEMM_CASE(5, 2) LF_GEMM_CASE(6, 2)
    default: break;
    }
}

/* The same product on 512-bit vectors (AVX-512 F): R (<= 6) fp32 weight
 * rows x 16 tokens of block x0 and, when two, 16 of block x1 (each packed
 * [K][16]), 12 accumulators. out[r*32 + token]. */
static LF_AI LF_TARGET_AVX512 void gemm_tile512(const float *wp, size_t ldw, const float *x0, const float *x1,
                                               int K, int R, bool two, float *out) {
    const int ld = 32;
    LF_TILE512_ROWS6(LF_TILE512_ZERO)
    const float *w0 = wp, *w1 = wp + ldw, *w2 = wp + 2 * ldw, *w3 = wp + 3 * ldw;
    const float *w4 = wp + 4 * ldw, *w5 = wp + 5 * ldw;
#define LF_TILE512_BCAST(r) _mm512_set1_ps(w##r[k])
    for (int k = 0; k < K; k++) {
        __m512 xa = _mm512_loadu_ps(x0 + (size_t)k * 16), xb = two ? _mm512_loadu_ps(x1 + (size_t)k * 16) : xa;
        LF_TILE512_ROWS6(LF_TILE512_STEP)
    }
#undef LF_TILE512_BCAST
    LF_TILE512_ROWS6(LF_TILE512_STORE)
}

static LF_TARGET_AVX512 void gemm_tile512_any(const float *wp, size_t ldw, const float *x0, const float *x1, int K,
                                              int R, bool two, float *out) {
    switch (R * 2 + two) {
    case 2: gemm_tile512(wp, ldw, x0, x1, K, 1, false, out); break;
    case 3: gemm_tile512(wp, ldw, x0, x1, K, 1, true, out); break;
    case 4: gemm_tile512(wp, ldw, x0, x1, K, 2, false, out); break;
    case 5: gemm_tile512(wp, ldw, x0, x1, K, 2, true, out); break;
    case 6: gemm_tile512(wp, ldw, x0, x1, K, 3, false, out); break;
    case 7: gemm_tile512(wp, ldw, x0, x1, K, 3, true, out); break;
    case 8: gemm_tile512(wp, ldw, x0, x1, K, 4, false, out); break;
    case 9: gemm_tile512(wp, ldw, x0, x1, K, 4, true, out); break;
    case 10: gemm_tile512(wp, ldw, x0, x1, K, 5, false, out); break;
    case 11: gemm_tile512(wp, ldw, x0, x1, K, 5, true, out); break;
    case 12: gemm_tile512(wp, ldw, x0, x1, K, 6, false, out); break;
    default: gemm_tile512(wp, ldw, x0, x1, K, 6, true, out); break;
    }
}

/* Rows [r0, r0+R) (R <= LF_MR * LF_PANELS) of one job for all n tokens
 * (packed in xt): the rows are converted to fp32 once (into wbuf), then each
 * block of 16 or 32 tokens goes through all their panels of 6 rows while it
 * is in L2 (the whole packed x, n * K floats, is not). */
static LF_TARGET_AVX2 void gemm_panel(const float *xt, int n, int K, const lf_matmul_job *job, int r0,
                                      int R, float *wbuf) {
    const lf_weight *w = job->w;
    const float *wp;
    if (w->dtype == LF_DTYPE_F32) {
        wp = (const float *)w->data + (size_t)r0 * K;
    } else if (lf_dtype_is_block(w->dtype)) {
        for (int r = 0; r < R; r++) lf_qweight_row_f32(w, r0 + r, wbuf + (size_t)r * K);
        wp = wbuf;
    } else {
        const uint16_t *src = (const uint16_t *)w->data + (size_t)r0 * K;
        size_t total = (size_t)R * K, i = 0;
        if (w->dtype == LF_DTYPE_BF16)
            for (; i + 8 <= total; i += 8) _mm256_storeu_ps(wbuf + i, lf_load_bf16x8(src + i));
        else
            for (; i + 8 <= total; i += 8) _mm256_storeu_ps(wbuf + i, lf_load_f16x8(src + i));
        for (; i < total; i++) wbuf[i] = wconv(w->dtype, src, i);
        wp = wbuf;
    }
    float bias[LF_MR * LF_PANELS];
    for (int r = 0; r < R; r++)
        bias[r] = (job->bias && job->bias->data) ? lf_weight_at(job->bias, (size_t)(r0 + r)) : 0.0f;
    float out[LF_MR * 32];
    int ldy = w->rows;
    bool wide = lf_cpu_avx512();
    for (int t0 = 0; t0 < n;) {
        int nb = n - t0 < LF_NB ? n - t0 : LF_NB, TV = nb <= 8 ? 1 : 2, ld = 16, step = LF_NB;
        const float *xb = xt + (size_t)t0 * K;
        bool w512 = wide && nb > 8, two = w512 && n - t0 - LF_NB > 8;
        if (w512) { /* blocks of 16 packed 16 wide: one or two per 512-bit tile */
            if (two) nb = n - t0 < 2 * LF_NB ? n - t0 : 2 * LF_NB;
            ld = 32;
            step = two ? 2 * LF_NB : LF_NB;
        }
        for (int p0 = 0; p0 < R; p0 += LF_MR) {
            int Rp = R - p0 < LF_MR ? R - p0 : LF_MR;
            const float *wpp = wp + (size_t)p0 * K;
            if (w512)
                gemm_tile512_any(wpp, (size_t)K, xb, xb + (size_t)LF_NB * K, K, Rp, two, out);
            else
                gemm_tile_any(wpp, (size_t)K, xb, K, Rp, TV, out);
            for (int t = 0; t < nb; t++)
                for (int r = 0; r < Rp; r++)
                    job->y[(size_t)(t0 + t) * ldy + r0 + p0 + r] = out[r * ld + t] + bias[p0 + r];
        }
        t0 += step;
    }
}

#endif /* LF_X86 */

#define LF_MAX_JOBS 8

static void scalar_group(const float *x, int n, int cols, const lf_matmul_job *job, int r0, int nr) {
    mm_rows_scalar(x, n, cols, job->w, r0, r0 + nr, job->y);
    if (job->bias && job->bias->data)
        for (int r = r0; r < r0 + nr; r++) {
            float bv = lf_weight_at(job->bias, (size_t)r);
            for (int t = 0; t < n; t++) job->y[(size_t)t * job->w->rows + r] += bv;
        }
}

typedef enum { MM_SCALAR, MM_GEMV, MM_GEMM } mm_path;

typedef struct {
    const float *x;
    int n, cols;
    const lf_matmul_job *jobs;
    const int *gstart; /* first row group of each job, [n_jobs + 1] */
    int rg;            /* rows per group */
    int gper;          /* groups per task */
    int total;         /* groups */
    mm_path path;
    float *scratch;    /* packed x */
    float *wbufs;      /* GEMM: LF_MR * LF_PANELS * cols floats per worker, or NULL */
} mm_args;

static void mm_pack_task(void *p, int b, int worker) {
    (void)worker;
    const mm_args *a = p;
    pack_block(a->x, a->n, a->cols, b, a->scratch);
}

static void mm_task(void *p, int task, int worker) {
    const mm_args *a = p;
    int g0 = task * a->gper, g1 = g0 + a->gper < a->total ? g0 + a->gper : a->total;
    int j = 0;
    for (int g = g0; g < g1; g++) {
        while (g >= a->gstart[j + 1]) j++;
        const lf_matmul_job *job = &a->jobs[j];
        int r0 = (g - a->gstart[j]) * a->rg;
        int nr = job->w->rows - r0 < a->rg ? job->w->rows - r0 : a->rg;
#if LF_X86
        if (a->path == MM_GEMV) {
            gemv_group(a->x, a->scratch, a->n, a->cols, job, r0, nr);
            continue;
        }
        if (a->path == MM_GEMM && (a->wbufs || job->w->dtype == LF_DTYPE_F32)) {
            float *wb = a->wbufs ? a->wbufs + (size_t)worker * LF_MR * LF_PANELS * a->cols : NULL;
            gemm_panel(a->scratch, a->n, a->cols, job, r0, nr, wb);
            continue;
        }
#endif
        (void)worker;
        scalar_group(a->x, a->n, a->cols, job, r0, nr); /* also: no memory for the panels */
    }
}

/* Jobs of one dtype: pack x once, hand out row groups to the threads. */
static void mm_run(const float *x, int n, int cols, const lf_matmul_job *jobs, int n_jobs,
                   float *scratch, bool simd) {
    mm_args a = {.x = x, .n = n, .cols = cols, .jobs = jobs, .scratch = scratch};
    a.path = !simd ? MM_SCALAR : n < LF_GEMM_MIN ? MM_GEMV : MM_GEMM;
    /* bf16 weights: vdpbf16ps / AMX where the level says so (gemm_bf16.h) */
    if (a.path == MM_GEMM && jobs[0].w->dtype == LF_DTYPE_BF16 && lf_bgemm_multi(x, n, cols, jobs, n_jobs, scratch))
        return;
    a.rg = a.path == MM_GEMM ? LF_MR * LF_PANELS : a.path == MM_GEMV ? LF_RG : 16;
    a.gper = a.path == MM_GEMV ? 8 : 1;
    int gstart[LF_MAX_JOBS + 1];
    double work = 0;
    for (int j = 0; j < n_jobs; j++) {
        gstart[j] = a.total;
        a.total += (jobs[j].w->rows + a.rg - 1) / a.rg;
        work += (double)jobs[j].w->rows * cols * n;
    }
    gstart[n_jobs] = a.total;
    a.gstart = gstart;
    int ntasks = (a.total + a.gper - 1) / a.gper;
    int nt = work < 65536.0 ? 1 : lf_cpu_threads();
    if (a.path == MM_GEMV) pack_x(x, n, cols, jobs[0].w->dtype == LF_DTYPE_BF16, scratch);
    if (a.path == MM_GEMM) {
        lf_pool_run((n + LF_NB - 1) / LF_NB, mm_pack_task, &a, nt);
        if (jobs[0].w->dtype != LF_DTYPE_F32)
            a.wbufs = malloc((size_t)(nt > 0 ? nt : 1) * LF_MR * LF_PANELS * cols * sizeof(float));
    }
    lf_pool_run(ntasks, mm_task, &a, nt);
    free(a.wbufs);
}

/* Where a job's product is computed. */
typedef enum { ROUTE_QDOT, ROUTE_QGEMM, ROUTE_DENSE } mm_route;

/* Block weights (GGUF Q8_0, Q4_0/1, Q5_0/1, Q4_K/Q5_K/Q6_K) take the integer
 * products: qmatmul.c's dot products below LF_QGEMM_MIN tokens and at the
 * scalar level, qgemm.c's GEMM from there where it handles the dtype at its
 * level; otherwise (Q8_0 at the AVX2 level) panels of their rows widened to
 * fp32, as bf16 weights. */
static mm_route route_of(lf_dtype t, int n, bool simd, lf_qdot_level glv) {
    if (!lf_dtype_is_block(t)) return ROUTE_DENSE;
    if (!simd || n < LF_QGEMM_MIN) return ROUTE_QDOT;
    return lf_qgemm_handles(t, glv) ? ROUTE_QGEMM : ROUTE_DENSE;
}

/* The jobs of one route, in groups of at most LF_MAX_JOBS, to fn. */
static void run_route(const float *x, int n, int cols, const lf_matmul_job *jobs, int n_jobs, float *scratch,
                      mm_route route, bool simd, lf_qdot_level glv) {
    lf_matmul_job sel[LF_MAX_JOBS];
    int ns = 0;
    for (int j = 0; j <= n_jobs; j++) {
        bool take = j < n_jobs && route_of(jobs[j].w->dtype, n, simd, glv) == route;
        if (take) sel[ns++] = jobs[j];
        if (ns == 0 || (ns < LF_MAX_JOBS && j < n_jobs)) continue;
        if (route == ROUTE_QGEMM && !lf_qgemm_multi(x, n, cols, sel, ns, scratch))
            lf_qmatmul_multi(x, n, cols, sel, ns, scratch); /* no memory for the panels */
        if (route == ROUTE_QDOT) lf_qmatmul_multi(x, n, cols, sel, ns, scratch);
        ns = 0;
    }
}

void lf_matmul_multi(const float *x, int n, int cols, const lf_matmul_job *jobs, int n_jobs,
                     float *scratch) {
    if (n <= 0 || n_jobs <= 0) return;
    bool simd = lf_cpu_simd_level() == LF_SIMD_AVX2;
    lf_qdot_level glv = lf_qgemm_level_get();
    run_route(x, n, cols, jobs, n_jobs, scratch, ROUTE_QDOT, simd, glv);
    run_route(x, n, cols, jobs, n_jobs, scratch, ROUTE_QGEMM, simd, glv);
    /* the rest grouped by weight dtype (x is packed per dtype) */
    static const lf_dtype order[] = {LF_DTYPE_BF16, LF_DTYPE_F16,  LF_DTYPE_F32,  LF_DTYPE_Q8_0,
                                     LF_DTYPE_Q4_0, LF_DTYPE_Q4_1, LF_DTYPE_Q5_0, LF_DTYPE_Q5_1,
                                     LF_DTYPE_Q4_K, LF_DTYPE_Q5_K, LF_DTYPE_Q6_K};
    for (int d = 0; d < (int)(sizeof order / sizeof order[0]); d++) {
        lf_matmul_job sel[LF_MAX_JOBS];
        int ns = 0;
        for (int j = 0; j < n_jobs; j++) {
            if (jobs[j].w->dtype != order[d] || route_of(order[d], n, simd, glv) != ROUTE_DENSE) continue;
            sel[ns++] = jobs[j];
            if (ns == LF_MAX_JOBS) {
                mm_run(x, n, cols, sel, ns, scratch, simd);
                ns = 0;
            }
        }
        if (ns) mm_run(x, n, cols, sel, ns, scratch, simd);
    }
}

void lf_matmul(const float *x, int n, const lf_weight *w, const lf_weight *bias, float *y,
               float *scratch) {
    lf_matmul_job job = {w, bias, y};
    lf_matmul_multi(x, n, w->cols, &job, 1, scratch);
}

/* ---- elementwise ------------------------------------------------------------ */

typedef struct {
    float *out;
    const float *x;
    const lf_weight *w;
    int n, dim;
    float eps;
} norm_args;

#define LF_NORM_ROWS 16

#if LF_X86
/* One row: the sum of squares in double (4 x 2 lanes), the weight widened
 * 8 at a time. */
static LF_TARGET_AVX2 void norm_row_avx2(float *ot, const float *xt, const lf_weight *w, int dim,
                                         float eps) {
    __m256d s0 = _mm256_setzero_pd(), s1 = s0;
    int i = 0;
    for (; i + 8 <= dim; i += 8) {
        __m256 x = _mm256_loadu_ps(xt + i);
        __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(x)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
        s0 = _mm256_fmadd_pd(lo, lo, s0);
        s1 = _mm256_fmadd_pd(hi, hi, s1);
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(s0, s1));
    double ss = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    for (int j = i; j < dim; j++) ss += (double)xt[j] * xt[j];
    float inv = (float)(1.0 / sqrt(ss / dim + (double)eps));
    __m256 vinv = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= dim; i += 8) {
        __m256 wv = w->dtype == LF_DTYPE_BF16  ? lf_load_bf16x8((const uint16_t *)w->data + i)
                    : w->dtype == LF_DTYPE_F16 ? lf_load_f16x8((const uint16_t *)w->data + i)
                                               : _mm256_loadu_ps((const float *)w->data + i);
        _mm256_storeu_ps(ot + i, _mm256_mul_ps(wv, _mm256_mul_ps(_mm256_loadu_ps(xt + i), vinv)));
    }
    for (; i < dim; i++) ot[i] = lf_weight_at(w, (size_t)i) * (xt[i] * inv);
}
#endif

static void norm_task(void *p, int task, int worker) {
    (void)worker;
    const norm_args *a = p;
    int t1 = (task + 1) * LF_NORM_ROWS < a->n ? (task + 1) * LF_NORM_ROWS : a->n;
#if LF_X86
    if (lf_cpu_simd_level() == LF_SIMD_AVX2) {
        for (int t = task * LF_NORM_ROWS; t < t1; t++)
            norm_row_avx2(a->out + (size_t)t * a->dim, a->x + (size_t)t * a->dim, a->w, a->dim, a->eps);
        return;
    }
#endif
    for (int t = task * LF_NORM_ROWS; t < t1; t++) {
        const float *xt = a->x + (size_t)t * a->dim;
        float *ot = a->out + (size_t)t * a->dim;
        double ss = 0;
        for (int i = 0; i < a->dim; i++) ss += (double)xt[i] * xt[i];
        float inv = (float)(1.0 / sqrt(ss / a->dim + (double)a->eps));
        for (int i = 0; i < a->dim; i++) ot[i] = lf_weight_at(a->w, (size_t)i) * (xt[i] * inv);
    }
}

void lf_rmsnorm(float *out, const float *x, const lf_weight *w, int n, int dim, float eps) {
    norm_args a = {out, x, w, n, dim, eps};
    int ntasks = (n + LF_NORM_ROWS - 1) / LF_NORM_ROWS;
    lf_pool_run(ntasks, norm_task, &a, (long)n * dim >= 65536 ? lf_cpu_threads() : 1);
}

#if LF_X86
/* exp of 8 floats: x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-6
 * polynomial (least-squares fit on Chebyshev nodes, relative error 4e-9
 * before float rounding, about 1e-7 after), times 2^n built in the exponent
 * bits. x is clamped to [-87, 88] (results stay normal); NaN gives NaN. */
static LF_AI LF_TARGET_AVX2 __m256 exp256(__m256 x) {
    __m256 nan_mask = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x); /* ln2 = hi + lo */
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 q = _mm256_set1_ps(0.0013751407896352846f);
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(0.008368916341382092f));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(0.04166953310921448f));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(0.16666518459980284f));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(0.4999998859511284f));
    __m256 p = _mm256_fmadd_ps(_mm256_mul_ps(r, r), q, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_or_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), nan_mask);
}

static LF_TARGET_AVX2 void silu_mul_avx2(float *g, const float *u, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(g + i);
        __m256 d = _mm256_add_ps(_mm256_set1_ps(1.0f), exp256(_mm256_sub_ps(_mm256_setzero_ps(), x)));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(x, d), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}
#endif

void lf_silu_mul(float *g, const float *u, size_t n) {
#if LF_X86
    if (lf_cpu_simd_level() == LF_SIMD_AVX2) {
        silu_mul_avx2(g, u, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void lf_add(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

/* ---- fp32 vector helpers ------------------------------------------------- */

static float dot_scalar(const float *a, const float *b, int n) {
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++) s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

static void axpy_scalar(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

#if LF_X86
static LF_AI LF_TARGET_AVX2 float dot_avx2(const float *a, const float *b, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = lf_hsum256(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static LF_AI LF_TARGET_AVX2 void axpy_avx2(float *y, float a, const float *x, int n) {
    __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

static LF_TARGET_AVX2 float dot_avx2_fn(const float *a, const float *b, int n) {
    return dot_avx2(a, b, n);
}
#endif

float lf_dot_f32(const float *a, const float *b, int n) {
#if LF_X86
    if (lf_cpu_simd_level() == LF_SIMD_AVX2) return dot_avx2_fn(a, b, n);
#endif
    return dot_scalar(a, b, n);
}

/* ---- causal prompt attention --------------------------------------------- */

/* Work items are (query head, block of LF_QBLOCK queries). AVX2 path, for
 * head_dim a multiple of 16: K of each KV head is first transposed into
 * blocks of 16 keys, [block][head_dim][16] (keys padded with zeros); per item the
 * scores of 4 queries x 16 keys are computed with broadcast FMAs into 8
 * accumulators, masked and soft-maxed row by row, then P V for 4 queries x 16
 * dims, again 8 accumulators. Other head_dims (and the scalar path) take one
 * query at a time with dot products. */
#define LF_QBLOCK 16

static size_t attn_keys_padded(int n) { return ((size_t)(n > 0 ? n : 1) + 15) / 16 * 16; }

size_t lf_attention_scratch_floats(int n, int n_kv, int hd) {
    size_t np = attn_keys_padded(n);
    return (size_t)lf_cpu_threads() * LF_QBLOCK * np + (size_t)n_kv * hd * np;
}

/* One query row: scores over keys 0..i, softmax, weighted sum of values. */
#define LF_ATTN_ROW(DOT, AXPY)                                                                     \
    do {                                                                                           \
        float mx = -INFINITY;                                                                      \
        for (int j = 0; j <= i; j++) {                                                             \
            float s = DOT(qi, k + ((size_t)j * n_kv + kvh) * hd, hd) * scale;                      \
            sc[j] = s;                                                                             \
            if (s > mx) mx = s;                                                                    \
        }                                                                                          \
        float sum = 0;                                                                             \
        for (int j = 0; j <= i; j++) sum += (sc[j] = expf(sc[j] - mx));                           \
        float inv = 1.0f / sum;                                                                    \
        memset(oi, 0, (size_t)hd * sizeof(float));                                                 \
        for (int j = 0; j <= i; j++) AXPY(oi, sc[j] * inv, v + ((size_t)j * n_kv + kvh) * hd, hd); \
    } while (0)

static void attn_rows_scalar(const float *q, const float *k, const float *v, int n_heads, int n_kv,
                             int hd, int h, int i0, int i1, float *out, float *sc) {
    int kvh = h / (n_heads / n_kv);
    float scale = (float)(1.0 / sqrt((double)hd));
    for (int i = i0; i < i1; i++) {
        const float *qi = q + ((size_t)i * n_heads + h) * hd;
        float *oi = out + ((size_t)i * n_heads + h) * hd;
        LF_ATTN_ROW(dot_scalar, axpy_scalar);
    }
}

#if LF_X86
static LF_TARGET_AVX2 void attn_rows_avx2(const float *q, const float *k, const float *v,
                                          int n_heads, int n_kv, int hd, int h, int i0, int i1,
                                          float *out, float *sc) {
    int kvh = h / (n_heads / n_kv);
    float scale = (float)(1.0 / sqrt((double)hd));
    for (int i = i0; i < i1; i++) {
        const float *qi = q + ((size_t)i * n_heads + h) * hd;
        float *oi = out + ((size_t)i * n_heads + h) * hd;
        LF_ATTN_ROW(dot_avx2, axpy_avx2);
    }
}

/* out[r][0..16] = sum_i a[r * lda + i] * b[i * ldb + 0..16] (i < n) for R
 * (<= 4) rows: both products of the attention tile on 256-bit vectors. The
 * scores: a = the queries, b = the 16 keys transposed ([hd][16]), n = hd;
 * the outputs: a = the probabilities, b = V rows from dim d0, n = the keys. */
static LF_AI LF_TARGET_AVX2 void attn_tile16(const float *a, size_t lda, const float *b, size_t ldb, int n, int R,
                                             float *out, size_t ldo) {
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00;
    __m256 a30 = a00, a31 = a00;
    for (int i = 0; i < n; i++) {
        __m256 b0 = _mm256_loadu_ps(b + (size_t)i * ldb), b1 = _mm256_loadu_ps(b + (size_t)i * ldb + 8);
        __m256 av;
#define LF_T16_STEP(r, x0, x1)                                                                     \
    if (R > r) {                                                                                   \
        av = _mm256_broadcast_ss(a + r * lda + i);                                                 \
        x0 = _mm256_fmadd_ps(av, b0, x0);                                                          \
        x1 = _mm256_fmadd_ps(av, b1, x1);                                                          \
    }
        LF_T16_STEP(0, a00, a01)
        LF_T16_STEP(1, a10, a11)
        LF_T16_STEP(2, a20, a21)
        LF_T16_STEP(3, a30, a31)
#undef LF_T16_STEP
    }
#define LF_T16_OUT(r, x0, x1)                                                                      \
    if (R > r) {                                                                                   \
        _mm256_storeu_ps(out + r * ldo, x0);                                                       \
        _mm256_storeu_ps(out + r * ldo + 8, x1);                                                   \
    }
    LF_T16_OUT(0, a00, a01)
    LF_T16_OUT(1, a10, a11)
    LF_T16_OUT(2, a20, a21)
    LF_T16_OUT(3, a30, a31)
#undef LF_T16_OUT
}

/* attn_tile16 with R a constant in each instance */
static LF_TARGET_AVX2 void attn_tile16_any(const float *a, size_t lda, const float *b, size_t ldb, int n, int R,
                                           float *out, size_t ldo) {
    switch (R) {
    case 1: attn_tile16(a, lda, b, ldb, n, 1, out, ldo); break;
    case 2: attn_tile16(a, lda, b, ldb, n, 2, out, ldo); break;
    case 3: attn_tile16(a, lda, b, ldb, n, 3, out, ldo); break;
    default: attn_tile16(a, lda, b, ldb, n, 4, out, ldo); break;
    }
}

/* The same tiles on 512-bit vectors (AVX-512 F): scores of R (<= 4)
 * queries x 32 keys (two blocks of 16 in kt; one when !two), and outputs of
 * R queries x 32 dims. */
static LF_AI LF_TARGET_AVX512 void attn_qk_tile512(const float *qr, size_t ldq, const float *kt, int hd, int R,
                                                  bool two, float *out, size_t ld) {
    LF_TILE512_ROWS4(LF_TILE512_ZERO)
    const float *kt1 = kt + (size_t)16 * hd;
#define LF_TILE512_BCAST(r) _mm512_set1_ps(qr[r * ldq + d])
    for (int d = 0; d < hd; d++) {
        __m512 xa = _mm512_loadu_ps(kt + (size_t)d * 16), xb = two ? _mm512_loadu_ps(kt1 + (size_t)d * 16) : xa;
        LF_TILE512_ROWS4(LF_TILE512_STEP)
    }
#undef LF_TILE512_BCAST
    LF_TILE512_ROWS4(LF_TILE512_STORE)
}

static LF_AI LF_TARGET_AVX512 void attn_pv_tile512(const float *p, size_t ldp, const float *v, size_t ldv, int nk,
                                                  int R, float *out, size_t ld) {
    const bool two = true;
    LF_TILE512_ROWS4(LF_TILE512_ZERO)
#define LF_TILE512_BCAST(r) _mm512_set1_ps(p[r * ldp + j])
    for (int j = 0; j < nk; j++) {
        __m512 xa = _mm512_loadu_ps(v + (size_t)j * ldv), xb = _mm512_loadu_ps(v + (size_t)j * ldv + 16);
        LF_TILE512_ROWS4(LF_TILE512_STEP)
    }
#undef LF_TILE512_BCAST
    LF_TILE512_ROWS4(LF_TILE512_STORE)
}

/* All scores of the query rows r0.. (R of them) against keys 0..nk-1. */
static LF_TARGET_AVX512 void attn_qk_rows512(const float *qr, size_t ldq, const float *kt, int hd, int nk, int R,
                                             float *s, size_t lds) {
    for (int j0 = 0; j0 < nk; j0 += 32) {
        const float *k = kt + (size_t)j0 * hd;
        float *o = s + j0;
        bool two = nk - j0 > 16;
        switch (R * 2 + two) {
        case 2: attn_qk_tile512(qr, ldq, k, hd, 1, false, o, lds); break;
        case 3: attn_qk_tile512(qr, ldq, k, hd, 1, true, o, lds); break;
        case 4: attn_qk_tile512(qr, ldq, k, hd, 2, false, o, lds); break;
        case 5: attn_qk_tile512(qr, ldq, k, hd, 2, true, o, lds); break;
        case 6: attn_qk_tile512(qr, ldq, k, hd, 3, false, o, lds); break;
        case 7: attn_qk_tile512(qr, ldq, k, hd, 3, true, o, lds); break;
        case 8: attn_qk_tile512(qr, ldq, k, hd, 4, false, o, lds); break;
        default: attn_qk_tile512(qr, ldq, k, hd, 4, true, o, lds); break;
        }
    }
}

/* The outputs of R query rows, all hd (a multiple of 32) dims. */
static LF_TARGET_AVX512 void attn_pv_rows512(const float *p, size_t ldp, const float *v, size_t ldv, int nk, int hd,
                                             int R, float *o, size_t ldo) {
    for (int d0 = 0; d0 < hd; d0 += 32) switch (R) {
        case 1: attn_pv_tile512(p, ldp, v + d0, ldv, nk, 1, o + d0, ldo); break;
        case 2: attn_pv_tile512(p, ldp, v + d0, ldv, nk, 2, o + d0, ldo); break;
        case 3: attn_pv_tile512(p, ldp, v + d0, ldv, nk, 3, o + d0, ldo); break;
        default: attn_pv_tile512(p, ldp, v + d0, ldv, nk, 4, o + d0, ldo); break;
        }
}

/* Queries i0..i1 of head h; kt = transposed K of its KV head
 * ([np/16][hd][16]);
 * s = LF_QBLOCK x np scores. */
static LF_TARGET_AVX2 void attn_block_avx2(const float *q, const float *kt, const float *v, int n_heads,
                                           int n_kv, int hd, int h, int i0, int i1, size_t np,
                                           float *out, float *s, bool wide) {
    int kvh = h / (n_heads / n_kv);
    float scale = (float)(1.0 / sqrt((double)hd));
    int nq = i1 - i0, nk = i1; /* keys 0..i1-1 */
    size_t ldq = (size_t)n_heads * hd;
    const float *q0 = q + ((size_t)i0 * n_heads + h) * hd;
    for (int r0 = 0; r0 < nq; r0 += 4) {
        int R = nq - r0 < 4 ? nq - r0 : 4;
        if (wide) {
            attn_qk_rows512(q0 + (size_t)r0 * ldq, ldq, kt, hd, nk, R, s + (size_t)r0 * np, np);
            continue;
        }
        for (int j0 = 0; j0 < nk; j0 += 16)
            attn_tile16_any(q0 + (size_t)r0 * ldq, ldq, kt + (size_t)j0 * hd, 16, hd, R,
                        s + (size_t)r0 * np + j0, np);
    }
    float inv[LF_QBLOCK];
    __m256 vscale = _mm256_set1_ps(scale);
    for (int r = 0; r < nq; r++) {
        float *sr = s + (size_t)r * np;
        int cnt = i0 + r + 1; /* causal: keys 0..i0+r */
        int j = 0;
        __m256 vmx = _mm256_set1_ps(-INFINITY);
        for (; j + 8 <= cnt; j += 8) {
            __m256 x = _mm256_mul_ps(_mm256_loadu_ps(sr + j), vscale);
            _mm256_storeu_ps(sr + j, x);
            vmx = _mm256_max_ps(vmx, x);
        }
        float mx = lf_hmax256(vmx);
        for (; j < cnt; j++) {
            sr[j] *= scale;
            if (sr[j] > mx) mx = sr[j];
        }
        __m256 vsum = _mm256_setzero_ps(), vm = _mm256_set1_ps(mx);
        for (j = 0; j + 8 <= cnt; j += 8) {
            __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(sr + j), vm));
            _mm256_storeu_ps(sr + j, e);
            vsum = _mm256_add_ps(vsum, e);
        }
        float sum = lf_hsum256(vsum);
        for (; j < cnt; j++) sum += (sr[j] = expf(sr[j] - mx));
        for (j = cnt; j < nk; j++) sr[j] = 0.0f;
        inv[r] = 1.0f / sum;
    }
    const float *vh = v + (size_t)kvh * hd;
    size_t ldv = (size_t)n_kv * hd;
    for (int r0 = 0; r0 < nq; r0 += 4) {
        int R = nq - r0 < 4 ? nq - r0 : 4;
        float *o0 = out + ((size_t)(i0 + r0) * n_heads + h) * hd;
        if (wide)
            attn_pv_rows512(s + (size_t)r0 * np, np, vh, ldv, nk, hd, R, o0, ldq);
        else
            for (int d0 = 0; d0 < hd; d0 += 16)
                attn_tile16_any(s + (size_t)r0 * np, np, vh + d0, ldv, nk, R, o0 + d0, ldq);
        for (int r = 0; r < R; r++) {
            float *o = o0 + (size_t)r * ldq;
            __m256 iv = _mm256_set1_ps(inv[r0 + r]);
            for (int d = 0; d < hd; d += 8) _mm256_storeu_ps(o + d, _mm256_mul_ps(_mm256_loadu_ps(o + d), iv));
        }
    }
}
#endif

typedef struct {
    const float *q, *k, *v;
    int n, n_heads, n_kv, hd, nqb;
    size_t np;
    bool simd, blocked, wide;
    float *out, *scratch, *kt;
} attn_args;

/* K of one KV head into blocks of 16 keys, each [hd][16] (keys past n: 0) */
static void attn_pack_task(void *p, int g, int worker) {
    (void)worker;
    const attn_args *a = p;
    float *dst = a->kt + (size_t)g * a->hd * a->np;
    for (size_t j = 0; j < a->np; j++) {
        float *blk = dst + j / 16 * 16 * (size_t)a->hd + j % 16;
        const float *src = a->k + (j * a->n_kv + g) * a->hd;
        for (int d = 0; d < a->hd; d++) blk[(size_t)d * 16] = j < (size_t)a->n ? src[d] : 0.0f;
    }
}

static void attn_task(void *p, int it, int worker) {
    const attn_args *a = p;
    /* later query blocks see more keys: they come first */
    int qb = a->nqb - 1 - it / a->n_heads, h = it % a->n_heads;
    int i0 = qb * LF_QBLOCK, i1 = i0 + LF_QBLOCK < a->n ? i0 + LF_QBLOCK : a->n;
    float *sc = a->scratch + (size_t)worker * LF_QBLOCK * a->np;
#if LF_X86
    if (a->blocked) {
        int g = h / (a->n_heads / a->n_kv);
        attn_block_avx2(a->q, a->kt + (size_t)g * a->hd * a->np, a->v, a->n_heads, a->n_kv, a->hd, h,
                        i0, i1, a->np, a->out, sc, a->wide);
        return;
    }
    if (a->simd) {
        attn_rows_avx2(a->q, a->k, a->v, a->n_heads, a->n_kv, a->hd, h, i0, i1, a->out, sc);
        return;
    }
#endif
    attn_rows_scalar(a->q, a->k, a->v, a->n_heads, a->n_kv, a->hd, h, i0, i1, a->out, sc);
}

void lf_attention_causal(const float *q, const float *k, const float *v, int n, int n_heads,
                         int n_kv, int hd, float *out, float *scratch) {
    attn_args a = {.q = q, .k = k, .v = v, .n = n, .n_heads = n_heads, .n_kv = n_kv, .hd = hd,
                   .out = out, .scratch = scratch};
    a.nqb = (n + LF_QBLOCK - 1) / LF_QBLOCK;
    a.simd = lf_cpu_simd_level() == LF_SIMD_AVX2;
    a.blocked = a.simd && hd % 16 == 0;
    a.wide = a.blocked && hd % 32 == 0 && lf_cpu_avx512();
    a.np = attn_keys_padded(n);
    int nt = lf_cpu_threads();
    a.kt = scratch + (size_t)nt * LF_QBLOCK * a.np; /* [n_kv][np/16][hd][16] */
    int run = (long)n * n * hd > 32768 ? nt : 1;
    if (a.blocked) lf_pool_run(n_kv, attn_pack_task, &a, run);
    lf_pool_run(n_heads * a.nqb, attn_task, &a, run);
}
