/* The k-quant matrix products (src/cpu/kquant.c through qmatmul.c and
 * lf_matmul_multi) against the gguf Python package: random Q4_K, Q5_K and
 * Q6_K matrices, their values as gguf.quants.dequantize gives them, and
 * activations, all in tests/data/kquant (tools/gen_kquant_fixtures.py). The
 * reference is each row's dot product with the activations in double.
 *
 * Tolerance (as tests/test_qmatmul.c). The kernels quantize the activations
 * per 32-value block to int8: d = max|x| / 127, q = round(x / d), so
 * |x_i - d q_i| <= d / 2; the weights' integer parts are used exactly, so
 * the error is at most sum over blocks of (d_b / 2) sum_{i in b} |w_i|, plus
 * the fp32 rounding of the scaling and the sums, bounded by
 * 1e-5 sum |w_i x_i|. The levels compute the same integer sums, so they
 * agree with each other within the fp32 term alone. Prefill (5 or more
 * tokens) goes through the integer GEMM (cpu/qgemm.c: the same int8
 * activations, exact int32 sums per group) or, at its scalar level, fp32
 * panels of the dequantized rows; both are held to the same bound. */
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
#include "cpu/kdecode.h"
#include "cpu/kernels.h"
#include "cpu/qgemm.h"
#include "cpu/qmatmul.h"
#include "cpu/simd.h"

#define ROWS 6
#define COLS 512
#define TOKENS 5
#define LEVELS_MAX 3 /* scalar, avx2, avx512vnni */

static const char *const names[] = {"Q4_K", "Q5_K", "Q6_K"};
static const lf_dtype types[] = {LF_DTYPE_Q4_K, LF_DTYPE_Q5_K, LF_DTYPE_Q6_K};

/* The whole file, which must have exactly want bytes. */
static void *read_fixture(const char *name, size_t want) {
    const char *dir = getenv("LF_TEST_DATA");
    char path[512];
    snprintf(path, sizeof path, "%s/kquant/%s", dir ? dir : "tests/data", name);
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    void *buf = malloc(want + 1);
    size_t got = fread(buf, 1, want + 1, f);
    fclose(f);
    if (got != want) fail_msg("%s: %zu bytes, expected %zu", path, got, want);
    return buf;
}

typedef struct {
    lf_dtype t;
    uint8_t *blocks;
    float *w; /* [ROWS][COLS], gguf's dequantization */
} kmat;

static kmat load_kmat(int k) {
    char b[32], f[32];
    snprintf(b, sizeof b, "%s.blocks", names[k]);
    snprintf(f, sizeof f, "%s.f32", names[k]);
    kmat m = {types[k], read_fixture(b, lf_dtype_row_bytes(types[k], (size_t)ROWS * COLS)),
              read_fixture(f, (size_t)ROWS * COLS * sizeof(float))};
    return m;
}

static void free_kmat(kmat *m) {
    free(m->blocks);
    free(m->w);
}

/* Reference dot product, the bound (file comment) and sum |w x|. */
static void ref_dot(const float *w, const float *x, double *ref, double *bound, double *mag) {
    double s = 0, b = 0, a = 0;
    for (int c0 = 0; c0 < COLS; c0 += 32) {
        double amax = 0, wsum = 0;
        for (int j = c0; j < c0 + 32; j++) {
            s += (double)w[j] * x[j];
            a += fabs((double)w[j] * x[j]);
            amax = fmax(amax, fabs(x[j]));
            wsum += fabs(w[j]);
        }
        b += amax / 127.0 / 2.0 * (1 + 1e-6) * wsum;
    }
    *ref = s;
    *mag = a;
    *bound = b + 1e-5 * a + 1e-30;
}

/* lf_qdot at every level, each row and token, against the reference; the
 * levels against scalar; the error is not zero somewhere (the bound is not
 * vacuous: the activations are rounded). */
static void test_kdot_levels(void **state) {
    (void)state;
    float *x = read_fixture("x.f32", (size_t)TOKENS * COLS * sizeof(float));
    lf_qdot_level best = lf_qdot_supported();
    int nb = COLS / LF_QK;
    lf_qblock *xq = malloc((size_t)nb * sizeof *xq);
    for (int k = 0; k < 3; k++) {
        kmat m = load_kmat(k);
        size_t row_bytes = lf_dtype_row_bytes(m.t, COLS);
        double worst = 0, max_err = 0;
        for (int t = 0; t < TOKENS; t++) {
            lf_quantize_row(x + (size_t)t * COLS, COLS, xq);
            for (int r = 0; r < ROWS; r++) {
                double ref, bound, mag;
                ref_dot(m.w + (size_t)r * COLS, x + (size_t)t * COLS, &ref, &bound, &mag);
                const uint8_t *row = m.blocks + r * row_bytes;
                float s0 = lf_qdot(m.t, row, xq, nb, LF_QDOT_SCALAR);
                for (int lv = LF_QDOT_SCALAR; lv <= (int)best; lv++) {
                    float got = lf_qdot(m.t, row, xq, nb, (lf_qdot_level)lv);
                    if (fabs(got - ref) > bound)
                        fail_msg("%s token %d row %d level %s: %.9g, reference %.9g, bound %.3g", names[k], t, r,
                                 lf_qdot_level_name((lf_qdot_level)lv), got, ref, bound);
                    if (fabs(got - s0) > 1e-5 * mag + 1e-30)
                        fail_msg("%s token %d row %d: level %s %.9g vs scalar %.9g", names[k], t, r,
                                 lf_qdot_level_name((lf_qdot_level)lv), got, s0);
                    worst = fmax(worst, fabs(got - ref) / bound);
                    max_err = fmax(max_err, fabs(got - ref));
                }
            }
        }
        printf("%s: worst error / bound %.3f\n", names[k], worst);
        assert_true(max_err > 0);
        free_kmat(&m);
    }
    free(xq);
    free(x);
}

/* One n-token product of all three matrices (fused jobs) at the current
 * threads and level, checked against the reference. */
static void check_matmul(const kmat *m, const float *x, int n, const char *what) {
    lf_weight w[3];
    lf_matmul_job jobs[3];
    float *y[3];
    for (int k = 0; k < 3; k++) {
        w[k] = (lf_weight){m[k].blocks, m[k].t, ROWS, COLS};
        y[k] = malloc((size_t)n * ROWS * sizeof(float));
        jobs[k] = (lf_matmul_job){&w[k], NULL, y[k]};
    }
    float *scratch = malloc(lf_matmul_scratch_floats(n, COLS) * sizeof(float));
    lf_matmul_multi(x, n, COLS, jobs, 3, scratch);
    for (int k = 0; k < 3; k++)
        for (int t = 0; t < n; t++)
            for (int r = 0; r < ROWS; r++) {
                double ref, bound, mag;
                ref_dot(m[k].w + (size_t)r * COLS, x + (size_t)t * COLS, &ref, &bound, &mag);
                double got = y[k][(size_t)t * ROWS + r];
                if (fabs(got - ref) > bound)
                    fail_msg("%s %s n %d token %d row %d: %.9g, reference %.9g, bound %.3g", names[k], what, n, t, r,
                             got, ref, bound);
            }
    for (int k = 0; k < 3; k++) free(y[k]);
    free(scratch);
}

/* lf_matmul_multi: 1..4 tokens (integer products, 4 at a time) and 5 to 40
 * (the integer GEMM: one or two 16-token blocks, partial blocks; fp32
 * panels at its scalar level), 1 and 2 threads, each level of both. The
 * fixture's 5 token rows, each copy scaled and sign-flipped differently. */
static void test_kquant_matmul(void **state) {
    (void)state;
    enum { MAXN = 40 };
    float *x0 = read_fixture("x.f32", (size_t)TOKENS * COLS * sizeof(float));
    float *x = malloc((size_t)MAXN * COLS * sizeof *x);
    for (int t = 0; t < MAXN; t++)
        for (int c = 0; c < COLS; c++)
            x[(size_t)t * COLS + c] = x0[(size_t)(t % TOKENS) * COLS + c] * (1.0f + (float)t / 7.0f) * (t % 2 ? -1.0f : 1.0f);
    kmat m[3];
    for (int k = 0; k < 3; k++) m[k] = load_kmat(k);
    lf_qdot_level best = lf_qdot_supported();
    static const int ns[] = {1, 2, 3, 4, 5, 9, 17, 33, MAXN};
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
        for (int threads = 1; threads <= 2; threads++)
            for (int lv = LF_QDOT_SCALAR; lv <= (int)best; lv++) {
                lf_cpu_set_threads(threads);
                lf_qdot_set_level((lf_qdot_level)lv);
                lf_qgemm_set_level((lf_qdot_level)lv);
                check_matmul(m, x, ns[ni], lf_qdot_level_name((lf_qdot_level)lv));
            }
    lf_qdot_set_level(best);
    lf_qgemm_set_level(best);
    lf_cpu_set_threads(0);
    for (int k = 0; k < 3; k++) free_kmat(&m[k]);
    free(x);
    free(x0);
}

/* The one-token products on long rows, by every way a row reaches the
 * decode kernels: lf_kdot_rows on the whole activation row (lf_kact built
 * once), lf_qdot (the row in parts of LF_KDOT_PART_BLOCKS blocks, each
 * part's lf_kact on the stack) and lf_matmul_multi with one token (the
 * forward pass's path), each at every level against the reference, and the
 * levels against scalar. A long row is `reps` fixture rows of 2 super-blocks
 * laid end to end (blocks are self-contained): segment i of row r is fixture
 * row (r + i) % ROWS. The activation row is the fixture's tokens end to end,
 * copy k scaled by (1 + 2k) and sign-flipped when k is odd. */
typedef struct {
    int reps, rows, cols, nb;
    float *x;      /* [cols] */
    lf_qblock *xq; /* [nb] */
} long_case;

static double long_row_ref(const kmat *m, const long_case *lc, int r, float *wf, double *bound, double *mag) {
    for (int i = 0; i < lc->reps; i++)
        memcpy(wf + (size_t)i * COLS, m->w + (size_t)((r + i) % ROWS) * COLS, COLS * sizeof(float));
    double ref = 0;
    *bound = *mag = 0;
    for (int c0 = 0; c0 < lc->cols; c0 += COLS) {
        double rf, bd, mg;
        ref_dot(wf + c0, lc->x + c0, &rf, &bd, &mg);
        ref += rf;
        *bound += bd;
        *mag += mg;
    }
    return ref;
}

/* out[way][level][row] for the three ways (file comment). */
enum { WAYS = 3, LONG_ROWS_MAX = 20 };
static const char *const ways[WAYS] = {"lf_kdot_rows", "lf_qdot", "lf_matmul_multi"};

static void long_rows_products(const kmat *m, const long_case *lc, const uint8_t *w, size_t row_bytes,
                               const lf_kact *act, float out[WAYS][LEVELS_MAX][LONG_ROWS_MAX]) {
    lf_qdot_level best = lf_qdot_supported();
    lf_weight wt = {w, m->t, lc->rows, lc->cols};
    float *scratch = malloc(lf_matmul_scratch_floats(1, lc->cols) * sizeof(float));
    for (int lv = LF_QDOT_SCALAR; lv <= (int)best; lv++) {
        lf_kdot_rows(m->t, w, row_bytes, lc->rows, lc->nb, act, (lf_qdot_level)lv, out[0][lv]);
        for (int r = 0; r < lc->rows; r++) out[1][lv][r] = lf_qdot(m->t, w + r * row_bytes, lc->xq, lc->nb, (lf_qdot_level)lv);
        lf_qdot_set_level((lf_qdot_level)lv);
        lf_matmul_job job = {&wt, NULL, out[2][lv]};
        lf_matmul_multi(lc->x, 1, lc->cols, &job, 1, scratch);
    }
    lf_qdot_set_level(best);
    free(scratch);
}

static void check_long_rows(int reps, int rows) {
    assert_true(rows <= LONG_ROWS_MAX);
    long_case lc = {reps, rows, reps * COLS, reps * COLS / LF_QK, NULL, NULL};
    float *x0 = read_fixture("x.f32", (size_t)TOKENS * COLS * sizeof(float));
    lc.x = malloc((size_t)lc.cols * sizeof *lc.x);
    for (int c = 0; c < lc.cols; c++) {
        int k = c / (TOKENS * COLS);
        lc.x[c] = x0[c % (TOKENS * COLS)] * (float)(1 + 2 * k) * (k % 2 ? -1.0f : 1.0f);
    }
    lc.xq = malloc((size_t)lc.nb * sizeof *lc.xq);
    lf_quantize_row(lc.x, lc.cols, lc.xq);
    void *mem = malloc(lf_kact_bytes(lc.nb));
    lf_kact act;
    lf_kact_init(&act, lc.xq, lc.nb, mem);
    lf_qdot_level best = lf_qdot_supported();
    float *wf = malloc((size_t)lc.cols * sizeof *wf);
    static float out[WAYS][LEVELS_MAX][LONG_ROWS_MAX];
    for (int k = 0; k < 3; k++) {
        kmat m = load_kmat(k);
        size_t fix_row = lf_dtype_row_bytes(m.t, COLS), row_bytes = (size_t)reps * fix_row;
        uint8_t *w = malloc((size_t)rows * row_bytes);
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < reps; i++)
                memcpy(w + r * row_bytes + i * fix_row, m.blocks + ((r + i) % ROWS) * fix_row, fix_row);
        long_rows_products(&m, &lc, w, row_bytes, &act, out);
        double worst = 0;
        for (int r = 0; r < rows; r++) {
            double bound, mag, ref = long_row_ref(&m, &lc, r, wf, &bound, &mag);
            for (int way = 0; way < WAYS; way++)
                for (int lv = LF_QDOT_SCALAR; lv <= (int)best; lv++) {
                    double got = out[way][lv][r], s0 = out[way][LF_QDOT_SCALAR][r];
                    const char *lvn = lf_qdot_level_name((lf_qdot_level)lv);
                    if (fabs(got - ref) > bound)
                        fail_msg("%s %d columns row %d %s level %s: %.9g, reference %.9g, bound %.3g", names[k],
                                 lc.cols, r, ways[way], lvn, got, ref, bound);
                    if (fabs(got - s0) > 1e-5 * mag + 1e-30)
                        fail_msg("%s %d columns row %d %s: level %s %.9g vs scalar %.9g", names[k], lc.cols, r,
                                 ways[way], lvn, got, s0);
                    worst = fmax(worst, fabs(got - ref) / bound);
                }
        }
        printf("%s rows of %d columns: worst error / bound %.3f\n", names[k], lc.cols, worst);
        assert_true(worst > 0);
        free(w);
        free_kmat(&m);
    }
    free(wf);
    free(mem);
    free(lc.xq);
    free(lc.x);
    free(x0);
}

/* 20 rows of 3,072 columns (12 super-blocks). */
static void test_kdot_rows_long(void **state) {
    (void)state;
    check_long_rows(ROWS, 20);
}

/* Rows wider than 16,384 columns (once served by an older one-token kernel
 * of their own): 4 rows of 18,432 columns (72 super-blocks; lf_qdot takes
 * them in parts of 256, 256 and 64 blocks). */
static void test_kdot_rows_wide(void **state) {
    (void)state;
    assert_true(36 * COLS > 16384 && 36 * COLS / LF_QK > 2 * LF_KDOT_PART_BLOCKS);
    check_long_rows(36, 4);
}

/* The embedding lookup and the prefill panels: rows dequantized to fp32
 * equal gguf's values exactly. */
static void test_kquant_rows_exact(void **state) {
    (void)state;
    float row[COLS];
    for (int k = 0; k < 3; k++) {
        kmat m = load_kmat(k);
        lf_weight w = {m.blocks, m.t, ROWS, COLS};
        for (int r = 0; r < ROWS; r++) {
            lf_weight_row_f32(&w, r, row);
            assert_memory_equal(row, m.w + (size_t)r * COLS, sizeof row);
        }
        free_kmat(&m);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kdot_levels),
        cmocka_unit_test(test_kquant_matmul),
        cmocka_unit_test(test_kdot_rows_long),
        cmocka_unit_test(test_kdot_rows_wide),
        cmocka_unit_test(test_kquant_rows_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
