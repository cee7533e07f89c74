/* The quantized matrix products (src/cpu/qmatmul.c) against a
 * dequantize-then-double reference written here from ggml's block layouts:
 * random Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 blocks (f16 scales built bit by
 * bit), each
 * row's exact dot product with the fp32 activations in double.
 *
 * Tolerance. The kernels quantize the activations per 32-value block to
 * int8: d = max|x| / 127, q = round(x / d), so |x_i - d q_i| <= d / 2 (one
 * rounding of x * 127/max|x| adds a relative 2^-24). The weights are used
 * exactly (integer products, exact in int32), so the dot product's error is
 * at most sum over blocks of (d_b / 2) * sum_{i in b} |w_i|, plus the fp32
 * rounding of the per-block scaling and the running sum, which we bound by
 * 1e-5 * sum |w_i| |x_i| (well above nb * 2^-24 for the sizes here). Each
 * result must lie within that bound of the double reference; the bound is
 * computed per row from the data. The levels (scalar, AVX2, AVX-512 VNNI)
 * compute the same integer sums, so they agree with each other within the
 * fp32 term alone. The integer GEMM (cpu/qgemm.c, 5 tokens or more) rounds
 * the activations the same way and sums exactly per group, so the same
 * bound holds for it (and for the fp32 panels it falls back to). */
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
#include "cpu/kernels.h"
#include "cpu/qgemm.h"
#include "cpu/qmatmul.h"
#include "cpu/simd.h"

/* ---- reference, independent of the code under test --------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double urand(void) { /* uniform in [-1, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / (double)(1ull << 52) - 1.0;
}
static int irand(int n) { return (int)((urand() + 1.0) * 0.5 * n) % n; }

/* A normal f16 with exponent e (-14..15) and a random mantissa, positive
 * or with the sign asked; its value computed from the bits. */
static uint16_t make_f16(int e, bool negative, double *value) {
    int mant = irand(1024);
    *value = (negative ? -1.0 : 1.0) * ldexp(1.0 + mant / 1024.0, e);
    return (uint16_t)((negative ? 0x8000 : 0) | ((e + 15) << 10) | mant);
}

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v & 0xFF);
    p[1] = (uint8_t)(v >> 8);
}

static int block_size(lf_dtype t) {
    switch (t) {
    case LF_DTYPE_Q8_0: return 34;
    case LF_DTYPE_Q4_0: return 18;
    case LF_DTYPE_Q4_1: return 20;
    case LF_DTYPE_Q5_0: return 22;
    default: return 24; /* Q5_1 */
    }
}

/* One random block into b, its 32 values (double) into w. */
static void make_block(lf_dtype t, uint8_t *b, double *w, bool extreme) {
    double d, m = 0;
    put16(b, make_f16(-10 + irand(6), false, &d));
    if (t == LF_DTYPE_Q8_0) {
        for (int j = 0; j < 32; j++) {
            int q = extreme ? (j % 2 ? -128 : 127) : irand(256) - 128;
            b[2 + j] = (uint8_t)(int8_t)q;
            w[j] = d * q;
        }
        return;
    }
    bool has_min = t == LF_DTYPE_Q4_1 || t == LF_DTYPE_Q5_1, five = t == LF_DTYPE_Q5_0 || t == LF_DTYPE_Q5_1;
    if (has_min) put16(b + 2, make_f16(-8 + irand(4), true, &m));
    /* Q5: 32 fifth bits (bit j: value j) before the nibbles */
    uint32_t qh = 0;
    for (int j = 0; five && j < 32; j++) qh |= (uint32_t)(extreme ? j < 16 : irand(2)) << j;
    uint8_t *qh_at = b + (has_min ? 4 : 2), *qs = qh_at + (five ? 4 : 0);
    for (int k = 0; five && k < 4; k++) qh_at[k] = (uint8_t)(qh >> (8 * k));
    int offset = has_min ? 0 : five ? 16 : 8;
    for (int j = 0; j < 16; j++) {
        int lo = extreme ? 15 : irand(16), hi = extreme ? 0 : irand(16);
        qs[j] = (uint8_t)(lo | (hi << 4));
        if (five) {
            lo |= (int)((qh >> j) & 1) << 4;
            hi |= (int)((qh >> (j + 16)) & 1) << 4;
        }
        w[j] = has_min ? d * lo + m : d * (lo - offset);
        w[j + 16] = has_min ? d * hi + m : d * (hi - offset);
    }
}

typedef struct {
    lf_dtype t;
    int rows, cols;
    uint8_t *data;
    double *w; /* [rows][cols] dequantized */
} qmat;

static qmat make_qmat(lf_dtype t, int rows, int cols, bool extreme) {
    qmat q = {t, rows, cols, malloc((size_t)rows * cols / 32 * block_size(t)),
              malloc((size_t)rows * cols * sizeof(double))};
    for (size_t b = 0; b < (size_t)rows * cols / 32; b++)
        make_block(t, q.data + b * block_size(t), q.w + b * 32, extreme && b % 3 == 0);
    return q;
}

static void free_qmat(qmat *q) {
    free(q->data);
    free(q->w);
}

/* Activations with a spread of magnitudes per block, some all-zero blocks. */
static float *make_x(int n, int cols) {
    float *x = malloc((size_t)n * cols * sizeof *x);
    for (int i = 0; i < n * cols; i++) {
        int block = i / 32;
        x[i] = block % 7 == 3 ? 0.0f : (float)(urand() * pow(10.0, (block % 5) - 2));
    }
    return x;
}

/* The reference dot product and the error bound (see the file comment). */
static void ref_dot(const double *w, const float *x, int cols, double *ref, double *bound) {
    double s = 0, b = 0, mag = 0;
    for (int c0 = 0; c0 < cols; c0 += 32) {
        double amax = 0, wsum = 0;
        for (int j = c0; j < c0 + 32; j++) {
            s += w[j] * x[j];
            mag += fabs(w[j] * x[j]);
            amax = fmax(amax, fabs(x[j]));
            wsum += fabs(w[j]);
        }
        b += amax / 127.0 / 2.0 * (1 + 1e-6) * wsum;
    }
    *ref = s;
    *bound = b + 1e-5 * mag + 1e-30;
}

static const lf_dtype types[] = {LF_DTYPE_Q8_0, LF_DTYPE_Q4_0, LF_DTYPE_Q4_1, LF_DTYPE_Q5_0, LF_DTYPE_Q5_1};
#define N_TYPES ((int)(sizeof types / sizeof types[0]))

/* ---- tests --------------------------------------------------------------- */

/* lf_qdot at every level the CPU has, against the reference; the levels
 * against the scalar one. Block counts odd and even (VNNI takes two). */
static void test_qdot_levels(void **state) {
    (void)state;
    static const int cols_list[] = {32, 64, 96, 544, 1536};
    lf_qdot_level best = lf_qdot_supported();
    printf("best level on this CPU: %s\n", lf_qdot_level_name(best));
    for (int ti = 0; ti < N_TYPES; ti++)
        for (size_t ci = 0; ci < sizeof cols_list / sizeof cols_list[0]; ci++) {
            int cols = cols_list[ci], nb = cols / 32;
            for (int ex = 0; ex < 2; ex++) {
                qmat q = make_qmat(types[ti], 4, cols, ex);
                float *x = make_x(1, cols);
                lf_qblock *xq = malloc((size_t)nb * sizeof *xq);
                lf_quantize_row(x, cols, xq);
                double worst = 0;
                for (int r = 0; r < q.rows; r++) {
                    double ref, bound;
                    ref_dot(q.w + (size_t)r * cols, x, cols, &ref, &bound);
                    const uint8_t *row = q.data + (size_t)r * nb * block_size(q.t);
                    float s0 = lf_qdot(q.t, row, xq, nb, LF_QDOT_SCALAR);
                    for (int lv = LF_QDOT_SCALAR; lv <= (int)best; lv++) {
                        float got = lf_qdot(q.t, row, xq, nb, (lf_qdot_level)lv);
                        if (fabs(got - ref) > bound)
                            fail_msg("%s cols %d row %d level %s: %.9g, reference %.9g, bound %.3g",
                                     lf_dtype_name(q.t), cols, r, lf_qdot_level_name((lf_qdot_level)lv), got, ref,
                                     bound);
                        double mag = 0;
                        for (int c = 0; c < cols; c++) mag += fabs(q.w[(size_t)r * cols + c] * x[c]);
                        if (fabs(got - s0) > 1e-5 * mag + 1e-30)
                            fail_msg("%s cols %d: level %s %.9g vs scalar %.9g", lf_dtype_name(q.t), cols,
                                     lf_qdot_level_name((lf_qdot_level)lv), got, s0);
                        worst = fmax(worst, fabs(got - ref) / bound);
                    }
                }
                printf("%-5s cols %4d%s: worst error / bound %.3f\n", lf_dtype_name(q.t), cols,
                       ex ? " (extreme blocks)" : "", worst);
                free(xq);
                free(x);
                free_qmat(&q);
            }
        }
}

/* The bound is not vacuous: with activations that are not exact in int8,
 * the error is a visible fraction of it, and far below the dot product. */
static void test_qdot_error_is_activation_rounding(void **state) {
    (void)state;
    int cols = 1024, nb = cols / 32;
    qmat q = make_qmat(LF_DTYPE_Q4_1, 1, cols, false);
    float *x = malloc((size_t)cols * sizeof *x);
    for (int i = 0; i < cols; i++) x[i] = (float)urand();
    lf_qblock *xq = malloc((size_t)nb * sizeof *xq);
    lf_quantize_row(x, cols, xq);
    double ref, bound;
    ref_dot(q.w, x, cols, &ref, &bound);
    float got = lf_qdot(q.t, q.data, xq, nb, lf_qdot_supported());
    printf("Q4_1 1024: error %.3g, bound %.3g, |dot| %.3g\n", fabs(got - ref), bound, fabs(ref));
    assert_true(fabs(got - ref) <= bound);
    assert_true(fabs(got - ref) > 0);
    free(xq);
    free(x);
    free_qmat(&q);
}

/* lf_matmul_multi with block weights: fused jobs of mixed types, a bias,
 * 1..40 tokens (5 and up: the integer GEMM, one or two 16-token blocks and
 * partial ones; Q8_0 at its AVX2 level and all at its scalar level: fp32
 * panels), 1 and 2 threads, each level; and the embedding row. */
static void test_matmul_multi_blocks(void **state) {
    (void)state;
    int cols = 160, rows[N_TYPES] = {37, 16, 5, 9, 21};
    qmat q[N_TYPES];
    float *bias = malloc(37 * sizeof *bias);
    for (int r = 0; r < 37; r++) bias[r] = (float)urand();
    lf_weight wb = {bias, LF_DTYPE_F32, 1, 37};
    lf_weight w[N_TYPES];
    for (int j = 0; j < N_TYPES; j++) {
        q[j] = make_qmat(types[j], rows[j], cols, j == 0);
        w[j] = (lf_weight){q[j].data, types[j], rows[j], cols};
    }
    lf_qdot_level best = lf_qdot_supported();
    static const int ns[] = {1, 2, 5, 9, 17, 40};
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
        for (int threads = 1; threads <= 2; threads++)
            for (int lv = LF_QDOT_SCALAR; lv <= (int)best; lv++) {
                int n = ns[ni];
                lf_cpu_set_threads(threads);
                lf_qdot_set_level((lf_qdot_level)lv);
                lf_qgemm_set_level((lf_qdot_level)lv);
                float *x = make_x(n, cols);
                float *y[N_TYPES];
                lf_matmul_job jobs[N_TYPES];
                for (int j = 0; j < N_TYPES; j++) {
                    y[j] = malloc((size_t)n * rows[j] * sizeof(float));
                    jobs[j] = (lf_matmul_job){&w[j], j == 0 ? &wb : NULL, y[j]};
                }
                float *scratch = malloc(lf_matmul_scratch_floats(n, cols) * sizeof(float));
                lf_matmul_multi(x, n, cols, jobs, N_TYPES, scratch);
                for (int j = 0; j < N_TYPES; j++)
                    for (int t = 0; t < n; t++)
                        for (int r = 0; r < rows[j]; r++) {
                            double ref, bound;
                            ref_dot(q[j].w + (size_t)r * cols, x + (size_t)t * cols, cols, &ref, &bound);
                            if (j == 0) ref += bias[r];
                            double got = y[j][(size_t)t * rows[j] + r];
                            if (fabs(got - ref) > bound + (j == 0 ? 1e-6 * fabs(bias[r]) : 0))
                                fail_msg("%s n %d threads %d level %s token %d row %d: %.9g, reference %.9g",
                                         lf_dtype_name(types[j]), n, threads, lf_qdot_level_name((lf_qdot_level)lv),
                                         t, r, got, ref);
                        }
                for (int j = 0; j < N_TYPES; j++) free(y[j]);
                free(scratch);
                free(x);
            }
    lf_qdot_set_level(best);
    lf_qgemm_set_level(best);
    lf_cpu_set_threads(0);
    /* the embedding lookup: exact fp32 of the block values */
    float row[160];
    for (int j = 0; j < N_TYPES; j++) {
        lf_weight_row_f32(&w[j], 2, row);
        for (int c = 0; c < cols; c++) assert_float_equal(row[c], q[j].w[2 * cols + c], 1e-6 * fabs(q[j].w[2 * cols + c]));
    }
    for (int j = 0; j < N_TYPES; j++) free_qmat(&q[j]);
    free(bias);
}

/* LF_SIMD=scalar (lf_cpu_set_simd) takes the quantized products to scalar
 * too; the GEMM defaults to the best level the CPU has and takes Q8_0 only
 * with VNNI (vpmaddubsw would saturate on its values). */
static void test_scalar_simd_lowers_qdot(void **state) {
    (void)state;
    lf_qdot_level best = lf_qdot_supported();
    assert_int_equal(lf_qgemm_level_get(), best);
    lf_cpu_set_simd(LF_SIMD_SCALAR);
    assert_int_equal(lf_qdot_level_get(), LF_QDOT_SCALAR);
    assert_int_equal(lf_qgemm_level_get(), LF_QDOT_SCALAR);
    lf_cpu_set_simd(LF_SIMD_AVX2);
    lf_qdot_set_level(best);
    assert_int_equal(lf_qdot_level_get(), best);
    assert_true(!lf_qgemm_handles(LF_DTYPE_Q4_K, LF_QDOT_SCALAR));
    assert_true(!lf_qgemm_handles(LF_DTYPE_BF16, best));
    if (best >= LF_QDOT_AVX2) {
        assert_true(lf_qgemm_handles(LF_DTYPE_Q6_K, LF_QDOT_AVX2));
        assert_true(!lf_qgemm_handles(LF_DTYPE_Q8_0, LF_QDOT_AVX2));
    }
    if (best == LF_QDOT_AVX512VNNI) assert_true(lf_qgemm_handles(LF_DTYPE_Q8_0, best));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qdot_levels),
        cmocka_unit_test(test_qdot_error_is_activation_rounding),
        cmocka_unit_test(test_matmul_multi_blocks),
        cmocka_unit_test(test_scalar_simd_lowers_qdot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
