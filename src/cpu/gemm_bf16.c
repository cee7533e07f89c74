/* Prefill GEMM on bf16 weights in bf16 arithmetic (vdpbf16ps, AMX tiles).
 * See gemm_bf16.h for the layout and the arithmetic. */
#include "cpu/gemm_bf16.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/pool.h"
#include "cpu/simd.h"
#include "cpu/tile512.h"

#if LF_X86
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define BG_NB 16   /* tokens per packed block */
#define BG_KS 32   /* values per AMX step; packed rows are padded to a multiple */
#define BG_ROWS 64 /* weight rows per task */
#define BG_MR 8    /* rows per vdpbf16ps panel (12, with 24 accumulators, measured slower) */
#define BG_AR 32   /* rows per AMX block (two A tiles) */

static int kpad(int cols) { return (cols + BG_KS - 1) / BG_KS * BG_KS; }

size_t lf_bgemm_scratch_bytes(int n, int cols) {
    if (n < 1) n = 1;
    if (cols < 0) cols = 0;
    return ((size_t)n + BG_NB - 1) / BG_NB * BG_NB * (size_t)kpad(cols) * sizeof(uint16_t);
}

/* ---- what the CPU has, and the level --------------------------------------- */

#if LF_X86
static bool cpu_has_avx512bf16(void) {
    unsigned a, b, c, d;
    return lf_cpu_avx512_supported() && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5)) != 0;
}

/* AMX-TILE and AMX-BF16 (CPUID 7.0 EDX bits 24, 22), the tile state enabled
 * by the OS (XCR0 bits 17, 18), and Linux's permission for this process
 * (XFEATURE_XTILEDATA = 18, ARCH_REQ_XCOMP_PERM = 0x1023). */
static bool cpu_has_amx(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 24)) || !(d & (1u << 22))) return false;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE)) return false;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    if ((lo & (3u << 17)) != (3u << 17)) return false;
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
}
#endif

static atomic_int g_supported = -1, g_level = -1;

lf_bgemm_level lf_bgemm_supported(void) {
    int v = atomic_load(&g_supported);
    if (v < 0) {
        v = LF_BGEMM_FP32;
#if LF_X86
        if (cpu_has_avx512bf16()) v = cpu_has_amx() ? LF_BGEMM_AMX : LF_BGEMM_AVX512BF16;
#endif
        atomic_store(&g_supported, v);
    }
    return (lf_bgemm_level)v;
}

lf_bgemm_level lf_bgemm_level_get(void) {
    int v = atomic_load(&g_level);
    if (v < 0) {
        /* vdpbf16ps is opt-in: no faster than the fp32 panels where measured */
        lf_bgemm_level best = lf_bgemm_supported(), want = best == LF_BGEMM_AMX ? LF_BGEMM_AMX : LF_BGEMM_FP32;
        const char *env = getenv("LF_BF16GEMM");
        if (env && !strcmp(env, "fp32")) want = LF_BGEMM_FP32;
        if (env && !strcmp(env, "avx512bf16")) want = LF_BGEMM_AVX512BF16;
        if (env && !strcmp(env, "amx")) want = LF_BGEMM_AMX;
        v = (int)(want < best ? want : best);
        atomic_store(&g_level, v);
    }
    return lf_cpu_simd_level() == LF_SIMD_SCALAR ? LF_BGEMM_FP32 : (lf_bgemm_level)v;
}

void lf_bgemm_set_level(lf_bgemm_level level) {
    lf_bgemm_level best = lf_bgemm_supported();
    atomic_store(&g_level, (int)(level > best ? best : level));
}

const char *lf_bgemm_level_name(lf_bgemm_level level) {
    return level == LF_BGEMM_AMX ? "amx" : level == LF_BGEMM_AVX512BF16 ? "avx512bf16" : "fp32";
}

#if LF_X86

#define LF_TARGET_BF16 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define LF_TARGET_AMX                                                                                              \
    __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16")))
#define LF_AI __attribute__((always_inline)) inline
/* The vdpbf16ps tile (cpu/tile512.h): a broadcast pair of bf16 weights, multiply-added into fp32. */
#define LF_TILE512_BTYPE __m512bh
#define LF_TILE512_MAC(a, x, w) _mm512_dpbf16_ps(a, x, w)

/* ---- activations: round to bf16, pack per 16 tokens ------------------------ */

typedef struct {
    const float *x;
    int n, cols;
    uint32_t *xp; /* [block][pair][16] words */
    const lf_matmul_job *jobs;
    const int *gstart; /* first row group of each job, [n_jobs + 1] */
    lf_bgemm_level level;
    uint16_t *wbufs; /* amx: BG_ROWS * kpad(cols) values per worker (NULL: vdpbf16ps only) */
} bg_args;

static size_t block_words(int cols) { return (size_t)kpad(cols) / 2 * BG_NB; }

/* Block b: 32 columns at a time, each token's row rounded to bf16 by
 * vcvtne2ps2bf16 (round to nearest even; 16 words of pairs), then the 16 x
 * 16 words transposed into [pair][token]. Missing tokens and the columns
 * past cols (up to the padded width) are zero. */
static LF_TARGET_BF16 void pack_block(void *p, int b, int worker) {
    (void)worker;
    const bg_args *a = p;
    int t0 = b * BG_NB, nb = a->n - t0 < BG_NB ? a->n - t0 : BG_NB, cols = a->cols;
    uint32_t *dst = a->xp + (size_t)b * block_words(cols);
    uint32_t tmp[BG_NB][16];
    for (int k0 = 0; k0 < kpad(cols); k0 += 32) {
        int left = cols - k0 < 0 ? 0 : cols - k0;
        __mmask16 m0 = (__mmask16)(left >= 16 ? 0xffff : (1u << left) - 1);
        __mmask16 m1 = (__mmask16)(left >= 32 ? 0xffff : left <= 16 ? 0 : (1u << (left - 16)) - 1);
        for (int t = 0; t < BG_NB; t++) {
            __m512i v = _mm512_setzero_si512();
            if (t < nb) {
                const float *xr = a->x + (size_t)(t0 + t) * cols + k0;
                __m512 lo = _mm512_maskz_loadu_ps(m0, xr), hi = _mm512_maskz_loadu_ps(m1, xr + 16);
                v = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
            }
            _mm512_storeu_si512((void *)tmp[t], v);
        }
        uint32_t *d = dst + (size_t)k0 / 2 * BG_NB;
        for (int j = 0; j < 16; j++)
            for (int t = 0; t < BG_NB; t++) d[j * BG_NB + t] = tmp[t][j];
    }
}

/* ---- vdpbf16ps: 8 rows x 32 tokens ------------------------------------------ */

static LF_AI uint32_t ld32(const uint16_t *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* R (<= 8) weight rows (stride ldw values) x the 16 tokens of block x0 and,
 * when two, the 16 of x1: per pair, each row's word broadcast, vdpbf16ps into
 * up to 16 accumulators. An odd last column is a word with a zero high half.
 * out[r * 32 + token]. */
static LF_AI LF_TARGET_BF16 void dp_tile(const uint16_t *w, size_t ldw, int K, const uint32_t *x0,
                                         const uint32_t *x1, int R, bool two, float *out) {
    const int ld = 32;
    LF_TILE512_ROWS8(LF_TILE512_ZERO)
    const uint16_t *wr[BG_MR];
    for (int r = 0; r < BG_MR; r++) wr[r] = r < R ? w + (size_t)r * ldw : w;
    int np = K / 2, last = np + (K & 1);
#define LF_TILE512_BCAST(r) (__m512bh) _mm512_set1_epi32((int)(tail ? (uint32_t)wr[r][2 * p] : ld32(wr[r] + 2 * p)))
    for (int p = 0; p < last; p++) {
        __m512bh xa = (__m512bh)_mm512_loadu_si512((const void *)(x0 + (size_t)p * BG_NB));
        __m512bh xb = two ? (__m512bh)_mm512_loadu_si512((const void *)(x1 + (size_t)p * BG_NB)) : xa;
        bool tail = p == np;
        LF_TILE512_ROWS8(LF_TILE512_STEP)
    }
#undef LF_TILE512_BCAST
    LF_TILE512_ROWS8(LF_TILE512_STORE)
}

#define BG_DP_CASE(R)                                                                                              \
    case R:                                                                                                        \
        if (two)                                                                                                   \
            dp_tile(w, ldw, K, x0, x1, R, true, out);                                                              \
        else                                                                                                       \
            dp_tile(w, ldw, K, x0, x1, R, false, out);                                                             \
        break;

static LF_TARGET_BF16 void dp_tile_any(const uint16_t *w, size_t ldw, int K, const uint32_t *x0,
                                       const uint32_t *x1, int R, bool two, float *out) {
    switch (R) {
        BG_DP_CASE(1) BG_DP_CASE(2) BG_DP_CASE(3) BG_DP_CASE(4) BG_DP_CASE(5) BG_DP_CASE(6) BG_DP_CASE(7)
    default:
        if (two)
            dp_tile(w, ldw, K, x0, x1, BG_MR, true, out);
        else
            dp_tile(w, ldw, K, x0, x1, BG_MR, false, out);
        break;
    }
}

/* ---- AMX: 32 rows x 32 tokens ------------------------------------------------ */

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_cfg;

/* Tiles 0-1: A (16 weight rows x 32 values), 2-3: B (16 pairs x 16 tokens),
 * 4-7: C (16 rows x 16 tokens, fp32); all 16 rows of 64 bytes. */
static LF_TARGET_AMX void amx_start(void) {
    amx_cfg c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int i = 0; i < 8; i++) {
        c.colsb[i] = 64;
        c.rows[i] = 16;
    }
    /* not _tile_loadconfig: GCC 12's declares only 8 bytes of the 64 as read,
     * so the stores that fill the rest may be dropped */
    __asm__ volatile("ldtilecfg %0" : : "m"(c));
}

/* 32 weight rows (stride K) into tile order, zero-padded to a multiple of 32
 * columns: step s holds the A tile of rows 0-15, then that of rows 16-31,
 * each 16 rows x 32 values (1 KB, rows of 64 bytes). Loading the tiles from
 * the rows in place measured slower: rows 2-6 KB apart fall in a few L1
 * sets, so every tile load went to L2 (docs/cpu-quant.md). */
static void amx_pack(const uint16_t *w, int K, uint16_t *dst) {
    int steps = kpad(K) / BG_KS;
    for (int s = 0; s < steps; s++) {
        int k0 = s * BG_KS, len = K - k0 < BG_KS ? K - k0 : BG_KS;
        for (int r = 0; r < BG_AR; r++) {
            uint16_t *d = dst + ((size_t)s * BG_AR + r) * BG_KS;
            memcpy(d, w + (size_t)r * K + k0, (size_t)len * sizeof *d);
            if (len < BG_KS) memset(d + len, 0, (size_t)(BG_KS - len) * sizeof *d);
        }
    }
}

/* 32 weight rows packed by amx_pack x the tokens of block x0 (and x1 when
 * two): out[row * 32 + token]. */
static LF_TARGET_AMX void amx_block(const uint16_t *wp, int K, const uint32_t *x0, const uint32_t *x1, bool two,
                                    float *out) {
    int steps = kpad(K) / BG_KS;
    _tile_zero(4);
    _tile_zero(5);
    _tile_zero(6);
    _tile_zero(7);
    for (int s = 0; s < steps; s++) {
        const uint16_t *a = wp + (size_t)s * BG_AR * BG_KS;
        const uint32_t *b0 = x0 + (size_t)s * BG_KS / 2 * BG_NB, *b1 = x1 + (size_t)s * BG_KS / 2 * BG_NB;
        _tile_loadd(0, a, 64);
        _tile_loadd(1, a + 16 * BG_KS, 64);
        _tile_loadd(2, b0, 64);
        _tile_dpbf16ps(4, 0, 2);
        _tile_dpbf16ps(6, 1, 2);
        if (two) {
            _tile_loadd(3, b1, 64);
            _tile_dpbf16ps(5, 0, 3);
            _tile_dpbf16ps(7, 1, 3);
        }
    }
    _tile_stored(4, out, 32 * sizeof(float));
    _tile_stored(6, out + 16 * 32, 32 * sizeof(float));
    if (two) {
        _tile_stored(5, out + 16, 32 * sizeof(float));
        _tile_stored(7, out + 16 * 32 + 16, 32 * sizeof(float));
    }
}

static LF_TARGET_AMX void amx_end(void) { _tile_release(); }

/* ---- tasks ---------------------------------------------------------------- */

/* out (R rows x nb tokens, row stride 32) + bias into y. */
static void store_rows(const lf_matmul_job *job, int t0, int nb, int r0, int R, const float *bias, const float *out) {
    int ldy = job->w->rows;
    for (int t = 0; t < nb; t++)
        for (int r = 0; r < R; r++) job->y[(size_t)(t0 + t) * ldy + r0 + r] = out[r * 32 + t] + bias[r];
}

/* Rows [r0, r0 + R) of job, all tokens, 32 at a time through panels of 8 rows. */
static void dp_rows(const bg_args *a, const lf_matmul_job *job, int r0, int R, const float *bias) {
    int K = a->cols;
    const uint16_t *w = (const uint16_t *)job->w->data;
    float out[BG_MR * 32];
    for (int t0 = 0; t0 < a->n; t0 += 2 * BG_NB) {
        int nb = a->n - t0 < 2 * BG_NB ? a->n - t0 : 2 * BG_NB;
        const uint32_t *x0 = a->xp + (size_t)(t0 / BG_NB) * block_words(K), *x1 = x0 + block_words(K);
        for (int p0 = 0; p0 < R; p0 += BG_MR) {
            int Rp = R - p0 < BG_MR ? R - p0 : BG_MR;
            dp_tile_any(w + (size_t)(r0 + p0) * K, (size_t)K, K, x0, x1, Rp, nb > BG_NB, out);
            store_rows(job, t0, nb, r0 + p0, Rp, bias + p0, out);
        }
    }
}

/* Rows [r0, r0 + R) (R a multiple of 32) of job on the AMX tiles, packed
 * into wbuf (BG_ROWS * kpad(K) values) once for all the tokens. */
static void amx_rows(const bg_args *a, const lf_matmul_job *job, int r0, int R, const float *bias, uint16_t *wbuf) {
    int K = a->cols;
    const uint16_t *w = (const uint16_t *)job->w->data + (size_t)r0 * K;
    size_t gsize = (size_t)BG_AR * kpad(K);
    for (int g = 0; g < R / BG_AR; g++) amx_pack(w + (size_t)g * BG_AR * K, K, wbuf + g * gsize);
    float out[BG_AR * 32];
    amx_start();
    for (int t0 = 0; t0 < a->n; t0 += 2 * BG_NB) {
        int nb = a->n - t0 < 2 * BG_NB ? a->n - t0 : 2 * BG_NB;
        const uint32_t *x0 = a->xp + (size_t)(t0 / BG_NB) * block_words(K), *x1 = x0 + block_words(K);
        for (int g = 0; g < R / BG_AR; g++) {
            amx_block(wbuf + g * gsize, K, x0, x1, nb > BG_NB, out);
            store_rows(job, t0, nb, r0 + g * BG_AR, BG_AR, bias + g * BG_AR, out);
        }
    }
    amx_end();
}

static void bg_task(void *p, int task, int worker) {
    const bg_args *a = p;
    int j = 0;
    while (task >= a->gstart[j + 1]) j++;
    const lf_matmul_job *job = &a->jobs[j];
    int r0 = (task - a->gstart[j]) * BG_ROWS;
    int R = job->w->rows - r0 < BG_ROWS ? job->w->rows - r0 : BG_ROWS;
    float bias[BG_ROWS];
    for (int r = 0; r < R; r++)
        bias[r] = (job->bias && job->bias->data) ? lf_weight_at(job->bias, (size_t)(r0 + r)) : 0.0f;
    int ramx = a->level == LF_BGEMM_AMX && a->wbufs ? R / BG_AR * BG_AR : 0;
    if (ramx) amx_rows(a, job, r0, ramx, bias, a->wbufs + (size_t)worker * BG_ROWS * kpad(a->cols));
    if (R > ramx) dp_rows(a, job, r0 + ramx, R - ramx, bias + ramx);
}

#define BG_MAX_JOBS 8

bool lf_bgemm_multi(const float *x, int n, int cols, const lf_matmul_job *jobs, int n_jobs, void *scratch) {
    lf_bgemm_level level = lf_bgemm_level_get();
    if (level == LF_BGEMM_FP32 || n_jobs > BG_MAX_JOBS || n <= 0) return false;
    int gstart[BG_MAX_JOBS + 1], total = 0;
    double work = 0;
    for (int j = 0; j < n_jobs; j++) {
        gstart[j] = total;
        total += (jobs[j].w->rows + BG_ROWS - 1) / BG_ROWS;
        work += (double)jobs[j].w->rows * cols * n;
    }
    gstart[n_jobs] = total;
    bg_args a = {.x = x, .n = n, .cols = cols, .xp = scratch, .jobs = jobs, .gstart = gstart, .level = level};
    int nt = work < 65536.0 ? 1 : lf_cpu_threads();
    if (level == LF_BGEMM_AMX) /* without it (no memory), vdpbf16ps: the same arithmetic */
        a.wbufs = malloc((size_t)(nt > 0 ? nt : 1) * BG_ROWS * kpad(cols) * sizeof *a.wbufs);
    lf_pool_run((n + BG_NB - 1) / BG_NB, pack_block, &a, nt);
    lf_pool_run(total, bg_task, &a, nt);
    free(a.wbufs);
    return true;
}

#else /* no x86: the fp32 panels only */

bool lf_bgemm_multi(const float *x, int n, int cols, const lf_matmul_job *jobs, int n_jobs, void *scratch) {
    (void)x, (void)n, (void)cols, (void)jobs, (void)n_jobs, (void)scratch;
    return false;
}

#endif
