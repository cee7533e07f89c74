/* The bf16 prefill GEMM (src/cpu/gemm_bf16.c) at every level the CPU has
 * (fp32 panels, avx512bf16, amx), through lf_matmul_multi, against
 * double-precision references written here:
 *  - ref_exact: the weights decoded from their bf16 bits, x as given;
 *  - ref_rounded: the same with x rounded to bf16 here (nearest, ties to
 *    even, by comparing the two neighbours in double: not fp.h's bit trick).
 * Tolerances (per output, mag = sum |w x|):
 *  - every level against ref_exact: fp32 panels 1e-5 mag; the bf16 levels
 *    2^-8 mag (the rounding of x costs at most 2^-9 mag; the rest is fp32
 *    accumulation);
 *  - the bf16 levels against ref_rounded: 1e-5 mag (they compute exactly
 *    that product, up to fp32 accumulation order).
 * Shapes: tokens 5-100 (16-token blocks and 32-token pairs with tails),
 * columns 1-300 (odd, not multiples of 32: the AMX tail), rows 1-130 (not
 * multiples of 8 or 32: the vdpbf16ps panels and AMX blocks with tails),
 * fused jobs with a bias, 1 and 2 threads.
 * The first test checks the level LF_BF16GEMM in the environment chose
 * (ctest runs this program once per level, tests/CMakeLists.txt). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cpu/forward.h"
#include "cpu/gemm_bf16.h"
#include "cpu/kernels.h"
#include "cpu/simd.h"

#include "test_util.h"

static double bits_to_double(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return (double)f;
}

static uint16_t bf16_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t lo = u & 0xffff0000u, hi = lo + 0x10000u;
    double dl = fabs((double)f - bits_to_double(lo)), dh = fabs((double)f - bits_to_double(hi));
    if (dh < dl || (dh == dl && ((lo >> 16) & 1u))) return (uint16_t)(hi >> 16);
    return (uint16_t)(lo >> 16);
}

static double bf16_value(uint16_t h) { return bits_to_double((uint32_t)h << 16); }

typedef struct {
    lf_weight w;
    uint16_t *bits;
} bweight;

static void make_bweight(bweight *b, int rows, int cols, double scale) {
    b->bits = malloc((size_t)rows * cols * sizeof *b->bits);
    for (size_t i = 0; i < (size_t)rows * cols; i++) b->bits[i] = bf16_of((float)((2 * urand() - 1) * scale));
    memset(&b->w, 0, sizeof b->w);
    b->w.dtype = LF_DTYPE_BF16;
    b->w.rows = rows;
    b->w.cols = cols;
    b->w.data = b->bits;
}

/* want = sum_k w[r][k] x[t][k] (+ bias) in double, x rounded to bf16 when
 * `rounded`; mag = sum |w x|. */
static void reference(const bweight *W, const bweight *B, const float *x, int t, int r, bool rounded, double *want,
                      double *mag) {
    int K = W->w.cols;
    double s = B ? bf16_value(B->bits[r]) : 0.0, m = fabs(s);
    for (int k = 0; k < K; k++) {
        float xv = x[(size_t)t * K + k];
        double xd = rounded ? bf16_value(bf16_of(xv)) : (double)xv;
        double p = bf16_value(W->bits[(size_t)r * K + k]) * xd;
        s += p;
        m += fabs(p);
    }
    *want = s;
    *mag = m;
}

static void check_case(lf_bgemm_level lv, int n, int cols, const int *rows, int n_jobs) {
    bweight W[2], B[2];
    float *y[2];
    lf_matmul_job jobs[2];
    float *x = malloc((size_t)n * cols * sizeof *x);
    for (size_t i = 0; i < (size_t)n * cols; i++) x[i] = (float)(2 * urand() - 1);
    for (int j = 0; j < n_jobs; j++) {
        make_bweight(&W[j], rows[j], cols, 0.5);
        if (j == 1) make_bweight(&B[j], 1, rows[j], 0.5);
        y[j] = malloc((size_t)n * rows[j] * sizeof(float));
        for (size_t i = 0; i < (size_t)n * rows[j]; i++) y[j][i] = NAN;
        jobs[j] = (lf_matmul_job){&W[j].w, j == 1 ? &B[j].w : NULL, y[j]};
    }
    float *scratch = malloc(lf_matmul_scratch_floats(n, cols) * sizeof(float));
    lf_matmul_multi(x, n, cols, jobs, n_jobs, scratch);
    double tol_exact = lv == LF_BGEMM_FP32 ? 1e-5 : 1.0 / 256;
    for (int j = 0; j < n_jobs; j++)
        for (int t = 0; t < n; t++)
            for (int r = 0; r < rows[j]; r++) {
                double got = y[j][(size_t)t * rows[j] + r], want, mag;
                reference(&W[j], j == 1 ? &B[j] : NULL, x, t, r, false, &want, &mag);
                if (!(fabs(got - want) <= tol_exact * mag + 1e-30))
                    fail_msg("%s n=%d cols=%d rows=%d job %d row %d token %d: got %.9g want %.9g (mag %.3g)",
                             lf_bgemm_level_name(lv), n, cols, rows[j], j, r, t, got, want, mag);
                if (lv == LF_BGEMM_FP32) continue;
                reference(&W[j], j == 1 ? &B[j] : NULL, x, t, r, true, &want, &mag);
                if (!(fabs(got - want) <= 1e-5 * mag + 1e-30))
                    fail_msg("%s n=%d cols=%d rows=%d job %d row %d token %d: got %.9g, x rounded to bf16 %.9g",
                             lf_bgemm_level_name(lv), n, cols, rows[j], j, r, t, got, want);
            }
    for (int j = 0; j < n_jobs; j++) {
        free(W[j].bits);
        if (j == 1) free(B[j].bits);
        free(y[j]);
    }
    free(scratch);
    free(x);
}

static bool use_level(lf_bgemm_level lv) {
    if (lv > lf_bgemm_supported()) {
        printf("skipped: the CPU has no %s\n", lf_bgemm_level_name(lv));
        return false;
    }
    lf_bgemm_set_level(lv);
    assert_int_equal(lf_bgemm_level_get(), lv);
    return true;
}

static void run_level(lf_bgemm_level lv) {
    if (lf_cpu_simd_supported() != LF_SIMD_AVX2 || !use_level(lv)) {
        skip();
        return;
    }
    static const int ns[] = {5, 16, 17, 31, 33, 64, 100};
    static const int cols[] = {1, 2, 31, 32, 33, 64, 100, 257};
    static const int rows[][2] = {{1, 7}, {8, 31}, {32, 33}, {64, 65}, {100, 130}};
    for (int th = 1; th <= 2; th++) {
        lf_cpu_set_threads(th);
        for (size_t a = 0; a < sizeof ns / sizeof *ns; a++)
            for (size_t b = 0; b < sizeof cols / sizeof *cols; b++)
                for (size_t c = 0; c < sizeof rows / sizeof *rows; c++)
                    check_case(lv, ns[a], cols[b], rows[c], (int)((a + b + c) % 2) + 1);
    }
    /* Qwen3-0.6B's widths: K = 1024 and 3072 */
    int big[2] = {96, 40};
    check_case(lv, 40, 1024, big, 2);
    check_case(lv, 37, 3072, big, 1);
    lf_cpu_set_threads(0);
    lf_bgemm_set_level(lf_bgemm_supported());
}

static void test_fp32_panels(void **s) { (void)s; run_level(LF_BGEMM_FP32); }
static void test_avx512bf16(void **s) { (void)s; run_level(LF_BGEMM_AVX512BF16); }
static void test_amx(void **s) { (void)s; run_level(LF_BGEMM_AMX); }

/* The level LF_BF16GEMM asks for, clamped to what the CPU has; unset: amx
 * where the CPU has it, else the fp32 panels (avx512bf16 is opt-in). Runs
 * first, before any test sets a level. */
static void test_level_from_env(void **s) {
    (void)s;
    const char *env = getenv("LF_BF16GEMM");
    lf_bgemm_level best = lf_bgemm_supported(), want = best == LF_BGEMM_AMX ? LF_BGEMM_AMX : LF_BGEMM_FP32;
    if (env && !strcmp(env, "fp32")) want = LF_BGEMM_FP32;
    if (env && !strcmp(env, "avx512bf16")) want = LF_BGEMM_AVX512BF16;
    if (env && !strcmp(env, "amx")) want = LF_BGEMM_AMX;
    if (want > best) want = best;
    if (lf_cpu_simd_level() == LF_SIMD_SCALAR) want = LF_BGEMM_FP32;
    printf("LF_BF16GEMM=%s: level %s (CPU offers up to %s)\n", env ? env : "(unset)",
           lf_bgemm_level_name(lf_bgemm_level_get()), lf_bgemm_level_name(best));
    assert_int_equal(lf_bgemm_level_get(), want);
    assert_string_equal(lf_bgemm_level_name(lf_bgemm_level_get()),
                        want == LF_BGEMM_AMX ? "amx" : want == LF_BGEMM_AVX512BF16 ? "avx512bf16" : "fp32");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_level_from_env),
        cmocka_unit_test(test_fp32_panels),
        cmocka_unit_test(test_avx512bf16),
        cmocka_unit_test(test_amx),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
