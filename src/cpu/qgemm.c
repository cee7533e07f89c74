/* The integer GEMM on block weights (see qgemm.h for the arithmetic and the
 * layouts). */
#include "cpu/qgemm.h"

#include <stdlib.h>
#include <string.h>

#include "cpu/pool.h"
#include "cpu/simd.h"

#define QG_R 4       /* weight rows per panel (one tile) */
#define QG_PANELS 4  /* panels per task: 16 rows */
#define QG_TB 16     /* tokens per packed block */
#define QG_MAX_JOBS 8

static lf_qknob g_qgemm = {-1, "LF_QGEMM", LF_QDOT_AVX512VNNI};

lf_qdot_level lf_qgemm_level_get(void) { return lf_qknob_get(&g_qgemm); }

void lf_qgemm_set_level(lf_qdot_level level) { lf_qknob_set(&g_qgemm, level); }

bool lf_qgemm_handles(lf_dtype t, lf_qdot_level lv) {
    if (!LF_X86 || !lf_dtype_is_block(t) || lv == LF_QDOT_SCALAR) return false;
    return lv == LF_QDOT_AVX512VNNI || t != LF_DTYPE_Q8_0;
}

static int n_tblocks(int n) { return (n + QG_TB - 1) / QG_TB; }

size_t lf_qgemm_scratch_bytes(int n, int cols) {
    if (n < 1) n = 1;
    if (cols < 0) cols = 0;
    /* per token: cols bytes of q + 128, and d, s per 32 values */
    return (size_t)n_tblocks(n) * QG_TB * ((size_t)cols + 2 * sizeof(float) * (size_t)(cols / LF_QK));
}

/* ---- packed activations ----------------------------------------------------- */

/* One packed block of 16 tokens: xu [cols / 4][16][4] bytes, dx and sx
 * [cols / 32][16] floats. */
typedef struct {
    const uint8_t *xu;
    const float *dx, *sx;
} qg_x;

typedef struct {
    const float *x;
    int n, cols, nb, ntb;
    float *dx, *sx; /* [ntb][nb][16] */
    uint8_t *xu;    /* [ntb][cols / 4][16][4] */
} qg_pack;

static qg_x pack_block_of(const qg_pack *pk, int tb) {
    size_t fl = (size_t)tb * pk->nb * QG_TB;
    return (qg_x){pk->xu + (size_t)tb * QG_TB * pk->cols, pk->dx + fl, pk->sx + fl};
}

/* Token block tb: each token's 32-value blocks quantized (lf_quantize_row)
 * and spread to the lanes; tokens past n are zeros (d = s = 0). */
static void pack_task(void *p, int tb, int worker) {
    (void)worker;
    const qg_pack *pk = p;
    qg_x dst = pack_block_of(pk, tb);
    uint8_t *xu = (uint8_t *)dst.xu;
    float *dx = (float *)dst.dx, *sx = (float *)dst.sx;
    for (int l = 0; l < QG_TB; l++) {
        int t = tb * QG_TB + l;
        for (int b = 0; b < pk->nb; b++) {
            lf_qblock qb = {0};
            if (t < pk->n) lf_quantize_row(pk->x + (size_t)t * pk->cols + (size_t)b * LF_QK, LF_QK, &qb);
            dx[b * QG_TB + l] = qb.d;
            sx[b * QG_TB + l] = qb.s;
            for (int j = 0; j < LF_QK; j++)
                xu[((size_t)(b * LF_QK + j) / 4) * 64 + (size_t)l * 4 + j % 4] = (uint8_t)(qb.q[j] + 128);
        }
    }
}

/* ---- weight panels ---------------------------------------------------------- */

/* 4 rows unpacked: q [4 rows][cols] int8, sw and comp (-128 times the
 * sum of the group's values) [cols / G][4], mn [cols / 32][4]. */
typedef struct {
    int8_t *q;
    float *sw;
    int32_t *comp;
    float *mn;
} qg_panel;

/* Bytes of one panel for cols values: 4 cols of values, cols of scales and
 * of sums (4 rows x 4 bytes x at most cols / 16 groups), cols / 2 of mn. */
static size_t panel_bytes(int cols) { return (size_t)cols * 7; }
/* Bytes of one row's scales: cols / 16 + cols / 32 floats. */
static size_t row_bytes_tmp(int cols) { return (size_t)cols; }

static qg_panel panel_at(uint8_t *buf, int cols) {
    size_t c = (size_t)cols;
    return (qg_panel){(int8_t *)buf, (float *)(void *)(buf + 4 * c), (int32_t *)(void *)(buf + 5 * c),
                      (float *)(void *)(buf + 6 * c)};
}

/* Rows r0.. of w (rows past the matrix: zeros) into the panel; tmp holds
 * one row's scales (row_bytes_tmp). */
static LF_TARGET_AVX2 void build_panel(const lf_weight *w, int r0, int cols, qg_panel *p, uint8_t *tmp) {
    int G = lf_qgroup(w->dtype), ng = cols / G, nb = cols / LF_QK;
    float *tsw = (float *)(void *)tmp, *tmn = tsw + ng;
    size_t row_bytes = lf_dtype_row_bytes(w->dtype, (size_t)cols);
    for (int r = 0; r < QG_R; r++) {
        int8_t *q = p->q + (size_t)r * cols;
        memset(tmp, 0, sizeof(float) * (size_t)(ng + nb));
        if (r0 + r < w->rows)
            lf_qunpack_row(w->dtype, (const uint8_t *)w->data + (size_t)(r0 + r) * row_bytes, nb, q, tsw, tmn);
        else
            memset(q, 0, (size_t)cols);
        for (int g = 0; g < ng; g++) {
            int sum = 0;
            for (int j = 0; j < G; j++) sum += q[g * G + j];
            p->comp[g * QG_R + r] = -128 * sum;
            p->sw[g * QG_R + r] = tsw[g];
        }
        for (int b = 0; b < nb; b++) p->mn[b * QG_R + r] = tmn[b];
    }
}

/* ---- tiles -------------------------------------------------------------------- */

#if LF_X86
#define LF_AI __attribute__((always_inline)) inline

/* AVX-512 VNNI: 4 rows x 16 tokens (two: 32, x0 and x1), out[r * 32 + t]. */
static LF_AI LF_TARGET_VNNI512 void tile512(const qg_panel *p, qg_x x0, qg_x x1, int cols, int G, bool min,
                                            bool two, float *out) {
    __m512 f00 = _mm512_setzero_ps(), f01 = f00, f10 = f00, f11 = f00, f20 = f00, f21 = f00, f30 = f00, f31 = f00;
    const int32_t *w0 = (const int32_t *)(const void *)p->q, *w1 = w0 + cols / 4, *w2 = w1 + cols / 4,
                  *w3 = w2 + cols / 4;
    int ng = cols / G, kpg = G / 4;
    for (int g = 0; g < ng; g++) {
        const int32_t *c = p->comp + QG_R * g;
        __m512i a00 = _mm512_set1_epi32(c[0]), a01 = a00, a10 = _mm512_set1_epi32(c[1]), a11 = a10;
        __m512i a20 = _mm512_set1_epi32(c[2]), a21 = a20, a30 = _mm512_set1_epi32(c[3]), a31 = a30;
        for (int kk = 0; kk < kpg; kk++) {
            int kg = g * kpg + kk;
            __m512i xa = _mm512_loadu_si512(x0.xu + (size_t)kg * 64);
            __m512i xb = two ? _mm512_loadu_si512(x1.xu + (size_t)kg * 64) : xa;
#define QG_DP(r)                                                                                                   \
    {                                                                                                              \
        __m512i wv = _mm512_set1_epi32(w##r[kg]);                                                                   \
        a##r##0 = _mm512_dpbusd_epi32(a##r##0, xa, wv);                                                            \
        if (two) a##r##1 = _mm512_dpbusd_epi32(a##r##1, xb, wv);                                                   \
    }
            QG_DP(0) QG_DP(1) QG_DP(2) QG_DP(3)
#undef QG_DP
        }
        int b = g * G / LF_QK;
        __m512 da = _mm512_loadu_ps(x0.dx + QG_TB * b), db = two ? _mm512_loadu_ps(x1.dx + QG_TB * b) : da;
        const float *sw = p->sw + QG_R * g;
#define QG_SCALE(r)                                                                                                \
    {                                                                                                              \
        __m512 s = _mm512_set1_ps(sw[r]);                                                                          \
        f##r##0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a##r##0), _mm512_mul_ps(da, s), f##r##0);                     \
        if (two) f##r##1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a##r##1), _mm512_mul_ps(db, s), f##r##1);            \
    }
        QG_SCALE(0) QG_SCALE(1) QG_SCALE(2) QG_SCALE(3)
#undef QG_SCALE
        if (min && ((g + 1) * G) % LF_QK == 0) {
            __m512 sa = _mm512_loadu_ps(x0.sx + QG_TB * b), sb = two ? _mm512_loadu_ps(x1.sx + QG_TB * b) : sa;
            const float *mn = p->mn + QG_R * b;
#define QG_MIN(r)                                                                                                  \
    {                                                                                                              \
        __m512 m = _mm512_set1_ps(mn[r]);                                                                          \
        f##r##0 = _mm512_fmadd_ps(m, sa, f##r##0);                                                                 \
        if (two) f##r##1 = _mm512_fmadd_ps(m, sb, f##r##1);                                                        \
    }
            QG_MIN(0) QG_MIN(1) QG_MIN(2) QG_MIN(3)
#undef QG_MIN
        }
    }
    _mm512_storeu_ps(out, f00);
    _mm512_storeu_ps(out + 32, f10);
    _mm512_storeu_ps(out + 64, f20);
    _mm512_storeu_ps(out + 96, f30);
    if (two) {
        _mm512_storeu_ps(out + 16, f01);
        _mm512_storeu_ps(out + 48, f11);
        _mm512_storeu_ps(out + 80, f21);
        _mm512_storeu_ps(out + 112, f31);
    }
}

/* out[r * 32 + t] for the panel's rows from r0 and tokens t0.. into the
 * job's output, with its bias. */
static LF_AI void scatter(const lf_matmul_job *job, int r0, int t0, int nt, const float *out) {
    const lf_weight *w = job->w;
    for (int r = 0; r < QG_R && r0 + r < w->rows; r++) {
        float bv = job->bias && job->bias->data ? lf_weight_at(job->bias, (size_t)(r0 + r)) : 0.0f;
        for (int t = 0; t < nt; t++) job->y[(size_t)(t0 + t) * w->rows + r0 + r] = out[r * 32 + t] + bv;
    }
}

/* The np panels of rows r0.. against every token, 32 at a time; one
 * instance per (group size, min term). */
static LF_AI LF_TARGET_VNNI512 void panels512(const qg_pack *pk, const qg_panel *pan, int np, const lf_matmul_job *job,
                                              int r0, int G, bool min) {
    float out[QG_R * 32];
    for (int tb = 0; tb < pk->ntb; tb += 2) {
        bool two = tb + 1 < pk->ntb;
        int t0 = tb * QG_TB, nt = pk->n - t0 < 32 ? pk->n - t0 : 32;
        qg_x x0 = pack_block_of(pk, tb), x1 = two ? pack_block_of(pk, tb + 1) : x0;
        for (int i = 0; i < np; i++) {
            if (two)
                tile512(&pan[i], x0, x1, pk->cols, G, min, true, out);
            else
                tile512(&pan[i], x0, x1, pk->cols, G, min, false, out);
            scatter(job, r0 + i * QG_R, t0, nt, out);
        }
    }
}

static LF_TARGET_VNNI512 void panels512_any(const qg_pack *pk, const qg_panel *pan, int np, const lf_matmul_job *job,
                                            int r0, int G, bool min) {
    if (G == 16)
        panels512(pk, pan, np, job, r0, 16, false);
    else if (min)
        panels512(pk, pan, np, job, r0, 32, true);
    else
        panels512(pk, pan, np, job, r0, 32, false);
}

/* AVX2: 4 rows x 8 tokens (half h of a 16-token block), out[r * 32 + t]. */
static LF_AI LF_TARGET_AVX2 void tile256(const qg_panel *p, qg_x x, int h, int cols, int G, bool min, float *out) {
    __m256 f0 = _mm256_setzero_ps(), f1 = f0, f2 = f0, f3 = f0;
    const __m256i ones = _mm256_set1_epi16(1);
    const int32_t *w0 = (const int32_t *)(const void *)p->q, *w1 = w0 + cols / 4, *w2 = w1 + cols / 4,
                  *w3 = w2 + cols / 4;
    int ng = cols / G, kpg = G / 4;
    for (int g = 0; g < ng; g++) {
        const int32_t *c = p->comp + QG_R * g;
        __m256i a0 = _mm256_set1_epi32(c[0]), a1 = _mm256_set1_epi32(c[1]);
        __m256i a2 = _mm256_set1_epi32(c[2]), a3 = _mm256_set1_epi32(c[3]);
        for (int kk = 0; kk < kpg; kk++) {
            int kg = g * kpg + kk;
            __m256i xv = _mm256_loadu_si256((const __m256i *)(const void *)(x.xu + (size_t)kg * 64 + 32 * h));
            /* (x + 128) w in int16 pairs: |w| <= 64 (all types but Q8_0), so no saturation */
#define QG_DP2(r)                                                                                                  \
    a##r = _mm256_add_epi32(a##r, _mm256_madd_epi16(_mm256_maddubs_epi16(xv, _mm256_set1_epi32(w##r[kg])), ones));
            QG_DP2(0) QG_DP2(1) QG_DP2(2) QG_DP2(3)
#undef QG_DP2
        }
        int b = g * G / LF_QK;
        __m256 d = _mm256_loadu_ps(x.dx + QG_TB * b + 8 * h);
        const float *sw = p->sw + QG_R * g;
        f0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a0), _mm256_mul_ps(d, _mm256_set1_ps(sw[0])), f0);
        f1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a1), _mm256_mul_ps(d, _mm256_set1_ps(sw[1])), f1);
        f2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a2), _mm256_mul_ps(d, _mm256_set1_ps(sw[2])), f2);
        f3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a3), _mm256_mul_ps(d, _mm256_set1_ps(sw[3])), f3);
        if (min && ((g + 1) * G) % LF_QK == 0) {
            __m256 s = _mm256_loadu_ps(x.sx + QG_TB * b + 8 * h);
            const float *mn = p->mn + QG_R * b;
            f0 = _mm256_fmadd_ps(_mm256_set1_ps(mn[0]), s, f0);
            f1 = _mm256_fmadd_ps(_mm256_set1_ps(mn[1]), s, f1);
            f2 = _mm256_fmadd_ps(_mm256_set1_ps(mn[2]), s, f2);
            f3 = _mm256_fmadd_ps(_mm256_set1_ps(mn[3]), s, f3);
        }
    }
    _mm256_storeu_ps(out + 8 * h, f0);
    _mm256_storeu_ps(out + 32 + 8 * h, f1);
    _mm256_storeu_ps(out + 64 + 8 * h, f2);
    _mm256_storeu_ps(out + 96 + 8 * h, f3);
}

static LF_AI LF_TARGET_AVX2 void panels256(const qg_pack *pk, const qg_panel *pan, int np, const lf_matmul_job *job,
                                             int r0, int G, bool min) {
    float out[QG_R * 32];
    for (int tb = 0; tb < pk->ntb; tb++) {
        int t0 = tb * QG_TB, nt = pk->n - t0 < QG_TB ? pk->n - t0 : QG_TB;
        qg_x x = pack_block_of(pk, tb);
        for (int i = 0; i < np; i++) {
            tile256(&pan[i], x, 0, pk->cols, G, min, out);
            if (nt > 8) tile256(&pan[i], x, 1, pk->cols, G, min, out);
            scatter(job, r0 + i * QG_R, t0, nt, out);
        }
    }
}

static LF_TARGET_AVX2 void panels256_any(const qg_pack *pk, const qg_panel *pan, int np, const lf_matmul_job *job,
                                         int r0, int G, bool min) {
    if (G == 16)
        panels256(pk, pan, np, job, r0, 16, false);
    else if (min)
        panels256(pk, pan, np, job, r0, 32, true);
    else
        panels256(pk, pan, np, job, r0, 32, false);
}
#endif

/* ---- the product ------------------------------------------------------------ */

typedef struct {
    qg_pack pk;
    const lf_matmul_job *jobs;
    int gstart[QG_MAX_JOBS + 1]; /* first 16-row group of each job */
    lf_qdot_level level;
    uint8_t *bufs; /* per worker: QG_PANELS panels and a row */
    size_t buf_bytes;
} qg_args;

static void qg_task(void *p, int g, int worker) {
    const qg_args *a = p;
    int j = 0;
    while (g >= a->gstart[j + 1]) j++;
    const lf_matmul_job *job = &a->jobs[j];
    const lf_weight *w = job->w;
    int cols = a->pk.cols, r0 = (g - a->gstart[j]) * QG_R * QG_PANELS, G = lf_qgroup(w->dtype);
    bool min = lf_dtype_has_min(w->dtype);
    uint8_t *buf = a->bufs + (size_t)worker * a->buf_bytes;
    qg_panel pan[QG_PANELS];
    int np = 0;
    for (; np < QG_PANELS && r0 + np * QG_R < w->rows; np++) {
        pan[np] = panel_at(buf + (size_t)np * panel_bytes(cols), cols);
        build_panel(w, r0 + np * QG_R, cols, &pan[np], buf + (size_t)QG_PANELS * panel_bytes(cols));
    }
#if LF_X86
    if (a->level == LF_QDOT_AVX512VNNI)
        panels512_any(&a->pk, pan, np, job, r0, G, min);
    else
        panels256_any(&a->pk, pan, np, job, r0, G, min);
#else
    (void)G, (void)min;
#endif
}

bool lf_qgemm_multi(const float *x, int n, int cols, const lf_matmul_job *jobs, int n_jobs, void *scratch) {
    if (n <= 0 || n_jobs <= 0) return true;
    qg_args a = {.jobs = jobs, .level = lf_qgemm_level_get()};
    qg_pack *pk = &a.pk;
    *pk = (qg_pack){.x = x, .n = n, .cols = cols, .nb = cols / LF_QK, .ntb = n_tblocks(n)};
    pk->dx = scratch;
    pk->sx = pk->dx + (size_t)pk->ntb * pk->nb * QG_TB;
    pk->xu = (uint8_t *)(pk->sx + (size_t)pk->ntb * pk->nb * QG_TB);
    int nt = lf_cpu_threads();
    lf_pool_run(pk->ntb, pack_task, pk, nt);
    a.buf_bytes = (size_t)QG_PANELS * panel_bytes(cols) + row_bytes_tmp(cols) + 64;
    a.bufs = malloc((size_t)nt * a.buf_bytes);
    if (!a.bufs) return false;
    for (int j0 = 0; j0 < n_jobs; j0 += QG_MAX_JOBS) {
        int nj = n_jobs - j0 < QG_MAX_JOBS ? n_jobs - j0 : QG_MAX_JOBS, total = 0;
        a.jobs = jobs + j0;
        for (int j = 0; j < nj; j++) {
            a.gstart[j] = total;
            total += (jobs[j0 + j].w->rows + QG_R * QG_PANELS - 1) / (QG_R * QG_PANELS);
        }
        a.gstart[nj] = total;
        lf_pool_run(total, qg_task, &a, nt);
    }
    free(a.bufs);
    return true;
}
