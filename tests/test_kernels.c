/* CPU kernels against straightforward double-precision references written
 * here: matrix products over bf16/f16/f32 weights (odd sizes, biases, fused
 * jobs, 1..17 tokens, both the AVX2 and the scalar path, 1 and 2 threads),
 * RMSNorm, SiLU, the causal prompt attention, and RoPE of every type against
 * the transformers formulas (default, linear, llama3, yarn). */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cpu/forward.h"
#include "cpu/kernels.h"
#include "cpu/pool.h"
#include "cpu/simd.h"

/* ---- helpers independent of the code under test ------------------------- */

static uint64_t rng_state = 0x1234567887654321ull;
static double urand(void) { /* uniform in [-1, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / (double)(1ull << 52) - 1.0;
}

/* float -> bf16 by truncation toward zero of the mantissa (any rounding will
 * do: the reference decodes the stored bits itself) */
static uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}
static double from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
/* float -> f16 for |f| in [2^-14, 65504) or 0 (normal numbers; enough here) */
static uint16_t to_f16(float f) {
    if (f == 0) return 0;
    int e;
    double m = frexp(fabs((double)f), &e); /* f = m 2^e, m in [0.5, 1) */
    int exp = e - 1 + 15;                  /* biased exponent of 1.xxx 2^(e-1) */
    if (exp <= 0) return f < 0 ? 0x8000 : 0;
    unsigned man = (unsigned)((m * 2.0 - 1.0) * 1024.0); /* truncate */
    return (uint16_t)((f < 0 ? 0x8000u : 0) | ((unsigned)exp << 10) | man);
}
static double from_f16(uint16_t h) {
    int exp = (h >> 10) & 31, man = h & 1023;
    double v = exp == 0 ? ldexp(man, -24) : ldexp(1024 + man, exp - 25);
    return (h & 0x8000) ? -v : v;
}

static const char *dtype_str(lf_dtype t) {
    return t == LF_DTYPE_BF16 ? "bf16" : t == LF_DTYPE_F16 ? "f16" : "f32";
}

typedef struct {
    lf_weight w;
    double *ref; /* the stored values, decoded here */
} tweight;

static void make_weight(tweight *t, lf_dtype dt, int rows, int cols, double scale) {
    size_t n = (size_t)rows * cols;
    t->ref = malloc(n * sizeof(double));
    t->w.dtype = dt;
    t->w.rows = rows;
    t->w.cols = cols;
    if (dt == LF_DTYPE_F32) {
        float *d = malloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++) t->ref[i] = d[i] = (float)(urand() * scale);
        t->w.data = d;
    } else {
        uint16_t *d = malloc(n * sizeof(uint16_t));
        for (size_t i = 0; i < n; i++) {
            float f = (float)(urand() * scale);
            if (dt == LF_DTYPE_BF16) {
                d[i] = to_bf16(f);
                t->ref[i] = from_bf16(d[i]);
            } else {
                if (fabsf(f) < 1e-3f) f = 1e-3f;
                d[i] = to_f16(f);
                t->ref[i] = from_f16(d[i]);
            }
        }
        t->w.data = d;
    }
}

static void free_weight(tweight *t) {
    free((void *)t->w.data);
    free(t->ref);
}

static void fill(float *x, size_t n, double scale) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(urand() * scale);
}

/* Set the SIMD level; returns false when the CPU cannot run it. */
static bool use_level(lf_simd_level lv) {
    if (lv > lf_cpu_simd_supported()) return false;
    lf_cpu_set_simd(lv);
    return lf_cpu_simd_level() == lv;
}

/* ---- matmul ----------------------------------------------------------------- */

static void check_matmul_case(lf_dtype dt, int n, int cols, int n_jobs, const int *rows, bool bias) {
    tweight W[3], B[3];
    float *y[3];
    lf_matmul_job jobs[3];
    float *x = malloc((size_t)n * cols * sizeof(float));
    fill(x, (size_t)n * cols, 1.0);
    for (int j = 0; j < n_jobs; j++) {
        make_weight(&W[j], dt, rows[j], cols, 0.5);
        if (bias) make_weight(&B[j], dt, 1, rows[j], 0.5);
        y[j] = malloc((size_t)n * rows[j] * sizeof(float));
        for (size_t i = 0; i < (size_t)n * rows[j]; i++) y[j][i] = NAN;
        jobs[j].w = &W[j].w;
        jobs[j].bias = bias ? &B[j].w : NULL;
        jobs[j].y = y[j];
    }
    float *scratch = malloc(lf_matmul_scratch_floats(n, cols) * sizeof(float));
    lf_matmul_multi(x, n, cols, jobs, n_jobs, scratch);
    for (int j = 0; j < n_jobs; j++)
        for (int t = 0; t < n; t++)
            for (int r = 0; r < rows[j]; r++) {
                double s = bias ? B[j].ref[r] : 0, mag = fabs(s);
                for (int c = 0; c < cols; c++) {
                    double p = W[j].ref[(size_t)r * cols + c] * (double)x[(size_t)t * cols + c];
                    s += p;
                    mag += fabs(p);
                }
                double got = y[j][(size_t)t * rows[j] + r];
                if (!(fabs(got - s) <= 1e-5 * mag + 1e-30)) {
                    fail_msg("matmul %s n=%d cols=%d job %d row %d token %d: got %.9g want %.9g",
                             dtype_str(dt), n, cols, j, r, t, got, s);
                }
            }
    for (int j = 0; j < n_jobs; j++) {
        free_weight(&W[j]);
        if (bias) free_weight(&B[j]);
        free(y[j]);
    }
    free(scratch);
    free(x);
}

static void run_matmul_cases(void) {
    static const lf_dtype dts[3] = {LF_DTYPE_BF16, LF_DTYPE_F16, LF_DTYPE_F32};
    static const int ns[] = {1, 2, 3, 4, 5, 7, 9, 17, 24, 25, 40}; /* 16-token blocks: 8/16 wide, 1-3 */
    static const int colss[] = {16, 37, 64, 100, 131};
    for (int d = 0; d < 3; d++)
        for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
            for (size_t b = 0; b < sizeof colss / sizeof colss[0]; b++) {
                int rows1[1] = {13};
                check_matmul_case(dts[d], ns[a], colss[b], 1, rows1, false);
                int rows3[3] = {9, 4, 6}; /* fused q/k/v-like, rows not multiples of 4 */
                check_matmul_case(dts[d], ns[a], colss[b], 3, rows3, true);
            }
    int big[2] = {67, 70}; /* enough work for the threaded path */
    for (int d = 0; d < 3; d++) check_matmul_case(dts[d], 33, 272, 2, big, true);
}

/* AVX2, and AVX2 with the 512-bit GEMM tiles where the CPU has AVX-512. */
static void test_matmul_avx2(void **state) {
    (void)state;
    if (!use_level(LF_SIMD_AVX2)) skip();
    for (int wide = 0; wide <= (int)lf_cpu_avx512_supported(); wide++) {
        lf_cpu_set_avx512(wide);
        lf_cpu_set_threads(1);
        run_matmul_cases();
        lf_cpu_set_threads(2);
        run_matmul_cases();
    }
    lf_cpu_set_avx512(true);
    lf_cpu_set_threads(0);
}

static void test_matmul_scalar(void **state) {
    (void)state;
    assert_true(use_level(LF_SIMD_SCALAR));
    lf_cpu_set_threads(2);
    run_matmul_cases();
    lf_cpu_set_threads(0);
    lf_cpu_set_simd(LF_SIMD_AVX2);
}

/* mixed dtypes in one fused call are grouped, not misread */
static void test_matmul_mixed_dtypes(void **state) {
    (void)state;
    int n = 3, cols = 48, rows = 5;
    tweight a, b;
    make_weight(&a, LF_DTYPE_BF16, rows, cols, 0.5);
    make_weight(&b, LF_DTYPE_F16, rows, cols, 0.5);
    float x[3 * 48], ya[15], yb[15];
    fill(x, (size_t)n * cols, 1.0);
    float *scratch = malloc(lf_matmul_scratch_floats(n, cols) * sizeof(float));
    lf_matmul_job jobs[2] = {{&a.w, NULL, ya}, {&b.w, NULL, yb}};
    lf_matmul_multi(x, n, cols, jobs, 2, scratch);
    for (int t = 0; t < n; t++)
        for (int r = 0; r < rows; r++) {
            double sa = 0, sb = 0;
            for (int c = 0; c < cols; c++) {
                sa += a.ref[r * cols + c] * x[t * cols + c];
                sb += b.ref[r * cols + c] * x[t * cols + c];
            }
            assert_true(fabs(ya[t * rows + r] - sa) < 1e-4);
            assert_true(fabs(yb[t * rows + r] - sb) < 1e-4);
        }
    free(scratch);
    free_weight(&a);
    free_weight(&b);
}

/* ---- elementwise ---------------------------------------------------------- */

static void test_rmsnorm(void **state) {
    (void)state;
    static const lf_dtype dts[3] = {LF_DTYPE_BF16, LF_DTYPE_F16, LF_DTYPE_F32};
    for (int lv = 0; lv <= 1; lv++)
    for (int d = 0; d < 3; d++) {
        if (!use_level((lf_simd_level)lv)) continue;
        int n = 70, dim = 37; /* n >= 64: the threaded loop */
        tweight w;
        make_weight(&w, dts[d], 1, dim, 2.0);
        float *x = malloc((size_t)n * dim * sizeof(float)), *y = malloc((size_t)n * dim * sizeof(float));
        fill(x, (size_t)n * dim, 3.0);
        float eps = 1e-6f;
        lf_rmsnorm(y, x, &w.w, n, dim, eps);
        for (int t = 0; t < n; t++) {
            double ss = 0;
            for (int i = 0; i < dim; i++) ss += (double)x[t * dim + i] * x[t * dim + i];
            double inv = 1.0 / sqrt(ss / dim + eps);
            for (int i = 0; i < dim; i++) {
                double want = x[t * dim + i] * inv * w.ref[i];
                assert_true(fabs(y[t * dim + i] - want) <= 1e-6 * fabs(want) + 1e-7);
            }
        }
        lf_rmsnorm(x, x, &w.w, n, dim, eps); /* in place */
        assert_memory_equal(x, y, (size_t)n * dim * sizeof(float));
        free(x);
        free(y);
        free_weight(&w);
    }
    lf_cpu_set_simd(LF_SIMD_AVX2);
}

static void check_silu(double range) {
    size_t n = 1001; /* not a multiple of 8 */
    float *g = malloc(n * sizeof(float)), *u = malloc(n * sizeof(float)), *g0 = malloc(n * sizeof(float));
    fill(g, n, range);
    fill(u, n, 2.0);
    g[5] = NAN;
    memcpy(g0, g, n * sizeof(float));
    lf_silu_mul(g, u, n);
    assert_true(isnan(g[5]));
    for (size_t i = 0; i < n; i++) {
        if (i == 5) continue;
        double want = (double)g0[i] / (1.0 + exp(-(double)g0[i])) * u[i];
        if (!(fabs(g[i] - want) <= 1e-6 * fabs(want) + 1e-30))
            fail_msg("silu(%.9g) * %.9g: got %.9g want %.9g", g0[i], u[i], g[i], want);
    }
    free(g);
    free(u);
    free(g0);
}

static void test_silu_mul(void **state) {
    (void)state;
    for (int lv = 0; lv <= 1; lv++) {
        if (!use_level((lf_simd_level)lv)) continue;
        check_silu(12.0);
        check_silu(100.0); /* the vector exp clamps its argument: still right */
    }
    lf_cpu_set_simd(LF_SIMD_AVX2);
}

static void test_weight_row(void **state) {
    (void)state;
    static const lf_dtype dts[3] = {LF_DTYPE_BF16, LF_DTYPE_F16, LF_DTYPE_F32};
    for (int d = 0; d < 3; d++) {
        tweight w;
        make_weight(&w, dts[d], 5, 19, 3.0);
        float row[19];
        lf_weight_row_f32(&w.w, 3, row);
        for (int i = 0; i < 19; i++) {
            assert_true(row[i] == (float)w.ref[3 * 19 + i]);
            assert_true(lf_weight_at(&w.w, 3 * 19 + (size_t)i) == (float)w.ref[3 * 19 + i]);
        }
        free_weight(&w);
    }
}

/* ---- prompt attention ------------------------------------------------------- */

static double attn_scale = 2.0;

static void check_attention(int n, int nh, int nkv, int hd) {
    size_t qn = (size_t)n * nh * hd, kn = (size_t)n * nkv * hd;
    float *q = malloc(qn * sizeof(float)), *k = malloc(kn * sizeof(float)),
          *v = malloc(kn * sizeof(float)), *o = malloc(qn * sizeof(float));
    fill(q, qn, attn_scale);
    fill(k, kn, attn_scale);
    fill(v, kn, 1.0);
    float *scratch = malloc(lf_attention_scratch_floats(n, nkv, hd) * sizeof(float));
    lf_attention_causal(q, k, v, n, nh, nkv, hd, o, scratch);
    double *p = malloc((size_t)n * sizeof(double));
    for (int i = 0; i < n; i++)
        for (int h = 0; h < nh; h++) {
            int g = h / (nh / nkv);
            double mx = -1e300, sum = 0;
            for (int j = 0; j <= i; j++) {
                double s = 0;
                for (int d = 0; d < hd; d++)
                    s += (double)q[((size_t)i * nh + h) * hd + d] * k[((size_t)j * nkv + g) * hd + d];
                p[j] = s / sqrt((double)hd);
                if (p[j] > mx) mx = p[j];
            }
            for (int j = 0; j <= i; j++) sum += (p[j] = exp(p[j] - mx));
            for (int d = 0; d < hd; d++) {
                double want = 0;
                for (int j = 0; j <= i; j++) want += p[j] / sum * v[((size_t)j * nkv + g) * hd + d];
                double got = o[((size_t)i * nh + h) * hd + d];
                if (!(fabs(got - want) < 2e-5))
                    fail_msg("attention n=%d i=%d h=%d d=%d: got %.8g want %.8g", n, i, h, d, got, want);
            }
        }
    free(p);
    free(q);
    free(k);
    free(v);
    free(o);
    free(scratch);
}

/* Each level: scalar, AVX2, and AVX2 with the 512-bit tiles where the CPU
 * has AVX-512 (head_dim a multiple of 32: 128, 32, 64 below; odd numbers of
 * 16-key blocks and of 4-query tiles). */
static void test_attention(void **state) {
    (void)state;
    for (int lv = 0; lv <= 2; lv++) {
        if (!use_level((lf_simd_level)(lv > 0))) continue;
        if (lv == 2 && !lf_cpu_avx512_supported()) continue;
        lf_cpu_set_avx512(lv == 2);
        assert_true(lf_cpu_avx512() == (lv == 2));
        check_attention(1, 2, 1, 8);
        check_attention(37, 4, 2, 24);   /* head_dim not a multiple of 16: row path */
        check_attention(50, 4, 1, 128);  /* GQA 4, threaded, blocked path */
        check_attention(19, 3, 3, 20);   /* no GQA, odd head_dim */
        check_attention(16, 2, 1, 32);   /* one full query block */
        check_attention(77, 6, 2, 64);   /* partial last block, 4-query tiles with tails */
        check_attention(3, 2, 2, 16);
        attn_scale = 8.0; /* scores spread over ~100: exp of very negative numbers */
        check_attention(40, 2, 1, 32);
        attn_scale = 2.0;
    }
    lf_cpu_set_avx512(true);
    lf_cpu_set_simd(LF_SIMD_AVX2);
}

/* ---- RoPE: the transformers formulas in double ----------------------------- */

static void ref_inv_freq(const lf_config *cfg, double *inv, double *attn_factor) {
    const lf_rope_config *rc = &cfg->rope;
    int dim = cfg->head_dim, half = dim / 2;
    *attn_factor = 1.0;
    for (int i = 0; i < half; i++) inv[i] = 1.0 / pow(rc->theta, 2.0 * i / dim);
    if (rc->type == LF_ROPE_LINEAR) {
        for (int i = 0; i < half; i++) inv[i] /= rc->factor;
    } else if (rc->type == LF_ROPE_LLAMA3) {
        double old = rc->original_max_position;
        double lw = old / rc->low_freq_factor, hw = old / rc->high_freq_factor;
        for (int i = 0; i < half; i++) {
            double wl = 2 * M_PI / inv[i];
            double scaled = wl > lw ? inv[i] / rc->factor : inv[i];
            double s = (old / wl - rc->low_freq_factor) / (rc->high_freq_factor - rc->low_freq_factor);
            double smooth = (1 - s) * scaled / rc->factor + s * scaled;
            bool medium = !(wl < hw) && !(wl > lw);
            inv[i] = medium ? smooth : scaled;
        }
    } else if (rc->type == LF_ROPE_YARN) {
        double f = rc->factor, base = rc->theta, orig = rc->original_max_position;
        *attn_factor = rc->attention_factor > 0 ? rc->attention_factor : 0.1 * log(f) + 1.0;
        double bf = rc->beta_fast ? rc->beta_fast : 32, bs = rc->beta_slow ? rc->beta_slow : 1;
        double lo = floor(dim * log(orig / (bf * 2 * M_PI)) / (2 * log(base)));
        double hi = ceil(dim * log(orig / (bs * 2 * M_PI)) / (2 * log(base)));
        lo = fmax(lo, 0);
        hi = fmin(hi, dim - 1);
        if (lo == hi) hi += 0.001;
        for (int i = 0; i < half; i++) {
            double ramp = fmin(fmax((i - lo) / (hi - lo), 0), 1);
            double extra = 1 - ramp; /* extrapolation weight */
            inv[i] = inv[i] / f * (1 - extra) + inv[i] * extra;
        }
    }
}

static void check_rope(const lf_config *cfg) {
    lf_rope r;
    lf_error err;
    assert_int_equal(lf_rope_init(&r, cfg, &err), 0);
    int hd = cfg->head_dim, half = hd / 2;
    double *inv = malloc((size_t)half * sizeof(double)), af;
    ref_inv_freq(cfg, inv, &af);
    assert_true(fabs(r.attention_factor - af) < 1e-6);
    for (int i = 0; i < half; i++)
        if (!(fabs(r.inv_freq[i] - inv[i]) <= 1e-6 * inv[i]))
            fail_msg("rope type %d inv_freq[%d]: got %.9g want %.9g", (int)cfg->rope.type, i,
                     r.inv_freq[i], inv[i]);
    static const int positions[] = {0, 1, 2, 17, 100, 1000, 4095, 32767};
    float *c = malloc((size_t)half * sizeof(float)), *s = malloc((size_t)half * sizeof(float));
    float *x = malloc((size_t)3 * hd * sizeof(float)), *x0 = malloc((size_t)3 * hd * sizeof(float));
    for (size_t p = 0; p < sizeof positions / sizeof positions[0]; p++) {
        int pos = positions[p];
        lf_rope_cos_sin(&r, pos, c, s);
        fill(x, (size_t)3 * hd, 1.0);
        memcpy(x0, x, (size_t)3 * hd * sizeof(float));
        lf_rope_apply(x, 3, hd, c, s);
        for (int i = 0; i < half; i++) {
            /* transformers: angle = float32(pos * inv_freq_f32), then cos/sin;
             * inv_freq itself was checked above against the double formula */
            double ang = (double)(float)((double)pos * (double)r.inv_freq[i]);
            double wc = cos(ang) * af, ws = sin(ang) * af;
            double tol = 2e-7 * af;
            if (pos <= 100) { /* small angles: against the pure double formula too */
                double da = pos * inv[i];
                assert_true(fabs(c[i] - cos(da) * af) <= 1e-5 && fabs(s[i] - sin(da) * af) <= 1e-5);
            }
            if (!(fabs(c[i] - wc) <= tol && fabs(s[i] - ws) <= tol))
                fail_msg("rope type %d pos %d i %d: cos %.8g/%.8g sin %.8g/%.8g", (int)cfg->rope.type,
                         pos, i, c[i], wc, s[i], ws);
            for (int h = 0; h < 3; h++) {
                double a = x0[h * hd + i], b = x0[h * hd + i + half];
                double ra = a * wc - b * ws, rb = b * wc + a * ws;
                assert_true(fabs(x[h * hd + i] - ra) <= 1e-6);
                assert_true(fabs(x[h * hd + i + half] - rb) <= 1e-6);
            }
        }
    }
    free(c);
    free(s);
    free(x);
    free(x0);
    free(inv);
    lf_rope_free(&r);
}

static void base_cfg(lf_config *cfg, int hd, double theta) {
    memset(cfg, 0, sizeof *cfg);
    cfg->head_dim = hd;
    cfg->max_position = 131072;
    cfg->rope.type = LF_ROPE_DEFAULT;
    cfg->rope.theta = theta;
}

static void test_rope_default(void **state) {
    (void)state;
    lf_config cfg;
    base_cfg(&cfg, 128, 1000000.0);
    check_rope(&cfg);
    base_cfg(&cfg, 10, 10000.0);
    check_rope(&cfg);
}

static void test_rope_linear(void **state) {
    (void)state;
    lf_config cfg;
    base_cfg(&cfg, 64, 10000.0);
    cfg.rope.type = LF_ROPE_LINEAR;
    cfg.rope.factor = 4.0;
    check_rope(&cfg);
}

static void test_rope_llama3(void **state) {
    (void)state;
    lf_config cfg;
    base_cfg(&cfg, 128, 500000.0);
    cfg.rope.type = LF_ROPE_LLAMA3;
    cfg.rope.factor = 8.0;
    cfg.rope.low_freq_factor = 1.0;
    cfg.rope.high_freq_factor = 4.0;
    cfg.rope.original_max_position = 8192;
    /* the three regimes (unchanged, smoothed, scaled) all occur at this shape */
    int regimes[3] = {0, 0, 0};
    for (int i = 0; i < 64; i++) {
        double wl = 2 * M_PI * pow(500000.0, 2.0 * i / 128);
        regimes[wl < 8192 / 4.0 ? 0 : wl > 8192 ? 2 : 1]++;
    }
    assert_true(regimes[0] > 0 && regimes[1] > 0 && regimes[2] > 0);
    check_rope(&cfg);
}

static void test_rope_yarn(void **state) {
    (void)state;
    lf_config cfg;
    base_cfg(&cfg, 64, 10000.0);
    cfg.rope.type = LF_ROPE_YARN;
    cfg.rope.factor = 4.0;
    cfg.rope.original_max_position = 2048;
    check_rope(&cfg); /* derived attention factor, default betas */
    cfg.rope.attention_factor = 1.25;
    cfg.rope.beta_fast = 16;
    cfg.rope.beta_slow = 2;
    check_rope(&cfg);
}

static void test_rope_bad(void **state) {
    (void)state;
    lf_config cfg;
    lf_rope r;
    lf_error err;
    base_cfg(&cfg, 7, 10000.0);
    assert_int_equal(lf_rope_init(&r, &cfg, &err), -1);
    assert_non_null(strstr(err.msg, "head_dim"));
    base_cfg(&cfg, 8, 10000.0);
    cfg.rope.type = LF_ROPE_LINEAR;
    cfg.rope.factor = 0;
    assert_int_equal(lf_rope_init(&r, &cfg, &err), -1);
    assert_non_null(strstr(err.msg, "factor"));
}

/* ---- thread pool -------------------------------------------------------------- */

typedef struct {
    int *count;  /* per task: times run */
    int nthreads;
    int bad_worker;
    int nested_sum;
    int nested_other_thread; /* nested tasks that ran on another thread */
} pool_probe;

typedef struct {
    int sum;
    int other;
    pthread_t caller;
} nested_probe;

static void nested_task(void *p, int task, int worker) {
    (void)worker;
    nested_probe *a = p;
    __atomic_fetch_add(&a->sum, task + 1, __ATOMIC_RELAXED);
    if (!pthread_equal(pthread_self(), a->caller)) __atomic_fetch_add(&a->other, 1, __ATOMIC_RELAXED);
}

static void probe_task(void *p, int task, int worker) {
    pool_probe *a = p;
    __atomic_fetch_add(&a->count[task], 1, __ATOMIC_RELAXED);
    if (worker < 0 || worker >= a->nthreads) __atomic_store_n(&a->bad_worker, 1, __ATOMIC_RELAXED);
    if (task == 0) { /* a call from inside a task runs inline on this thread */
        nested_probe np = {0, 0, pthread_self()};
        lf_pool_run(4, nested_task, &np, a->nthreads);
        a->nested_sum = np.sum;
        a->nested_other_thread = np.other;
    }
}

/* every task runs exactly once, on a worker id below nthreads, job after job */
static void test_pool(void **state) {
    (void)state;
    static const int sizes[] = {1, 2, 3, 7, 64, 1000};
    for (int nth = 1; nth <= 4; nth++)
        for (int rep = 0; rep < 3000; rep++) {
            int n = sizes[rep % 6];
            pool_probe a = {calloc((size_t)n, sizeof(int)), nth, 0, -1, 0};
            lf_pool_run(n, probe_task, &a, nth);
            for (int t = 0; t < n; t++)
                if (a.count[t] != 1) fail_msg("nthreads %d job %d: task %d ran %d times", nth, rep, t, a.count[t]);
            assert_int_equal(a.bad_worker, 0);
            assert_int_equal(a.nested_sum, 1 + 2 + 3 + 4);
            if (n > 1 && nth > 1) assert_int_equal(a.nested_other_thread, 0);
            free(a.count);
        }
    lf_pool_run(0, probe_task, NULL, 2); /* no tasks: nothing runs */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_avx2),   cmocka_unit_test(test_matmul_scalar),
        cmocka_unit_test(test_matmul_mixed_dtypes), cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_silu_mul),      cmocka_unit_test(test_weight_row),
        cmocka_unit_test(test_attention),     cmocka_unit_test(test_rope_default),
        cmocka_unit_test(test_rope_linear),   cmocka_unit_test(test_rope_llama3),
        cmocka_unit_test(test_rope_yarn),     cmocka_unit_test(test_rope_bad),
        cmocka_unit_test(test_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
