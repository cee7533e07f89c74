/* GPU test of the matrix products (src/cuda/gemm.cu): Y = X W^T + beta Y
 * through the GEMV kernel (both variants) and cuBLASLt, against a
 * double-precision reference written here from the same bf16 inputs.
 *
 * Shapes (rows, cols) x n from the engine (Qwen3 projections, a 152k-row
 * lm_head, fused qkv), odd small ones (24 x 40: a column tail inside a
 * 32-column chunk; 8 x 8) and a 32776-column one; n = 1..333 across the GEMV
 * limit; Y f32 and bf16; beta 0 (Y pre-filled with NaN: must not be read)
 * and 1 (Y pre-filled with random values). Large outputs are checked on a
 * sample of rows that always includes the first and last 16 (tile edges).
 * Tolerances: relative L2 error <= 1e-5 (f32 Y; more above ~1340 columns,
 * see f32_l2_limit) or 8e-3 (bf16 Y), and per element |y - ref| <=
 * 1e-4 (rms + |ref|) (f32; idem) or 2^-8 |ref| + 1e-4 rms (bf16). Also: a
 * GEMV and a cuBLASLt call captured in a CUDA graph and replayed (twice,
 * with new X in between), an unprepared shape refused during capture, and
 * bad arguments refused with a message.
 *
 * Built by CMake as a cmocka test (label cuda), or without cmocka with
 * -DLF_TEST_STANDALONE (see docs/cuda.md, "Matrix products"). Skips (exit 0)
 * when there is no CUDA device. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cuda_runtime_api.h>

#include "core/fp.h"
#include "cuda/cuda_gemm.h"

#include "cuda_test.h"

static struct lf_cuda_gemm *g_gemm;

/* ---- random numbers ------------------------------------------------------ */
static uint64_t g_rng = 0x2545f4914f6cdd1dull;
static uint64_t rng_u64(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}
/* count bf16 values uniform in [-scale, scale) */
static void fill_bf16(uint16_t *p, size_t count, float scale) {
    size_t i = 0;
    while (i < count) {
        uint64_t r = rng_u64();
        for (int j = 0; j < 4 && i < count; j++, i++, r >>= 16)
            p[i] = lf_f32_to_bf16(((float)(int)(r & 0xffff) - 32768.f) * (scale / 32768.f));
    }
}

static const char *dt_name(lf_dtype t) { return t == LF_DTYPE_BF16 ? "bf16" : "f32"; }

/* ---- one shape ----------------------------------------------------------- */
enum { PATH_AUTO, PATH_GEMV1, PATH_GEMV2, PATH_LT, PATH_COUNT };
static const char *path_name[PATH_COUNT] = {"lf_cuda_gemm", "gemv variant 1", "gemv variant 2", "cuBLASLt"};

static int run_path(int path, const void *W, int rows, int cols, const void *X, int n, void *Y, lf_dtype yt,
                    float beta, lf_error *err) {
    switch (path) {
    case PATH_GEMV1: return lf_cuda_gemv(W, rows, cols, X, n, Y, yt, beta, 1, NULL, err);
    case PATH_GEMV2: return lf_cuda_gemv(W, rows, cols, X, n, Y, yt, beta, 2, NULL, err);
    case PATH_LT: return lf_cuda_gemm_lt(g_gemm, W, rows, cols, X, n, Y, yt, beta, NULL, err);
    default: return lf_cuda_gemm(g_gemm, W, rows, cols, X, n, Y, yt, beta, NULL, err);
    }
}

/* The fp32 limits. Tensor cores add with truncation (round toward zero; see
 * Fasi et al. 2021 and Khattak & Mikaitis 2025 on A100/H100), so the error of
 * an fp32 accumulator is a bias that grows with the number of mma k-steps
 * S = cols / 16, not a random walk: about 0.4 S 2^-24 relative on random
 * data (1e-5 near 6700 columns). The limits are the task's 1e-5 (relative
 * L2) and 1e-4 (per element), raised to 2 S 2^-24 and 20 S 2^-24 where those
 * are larger (above ~1340 columns): still >= 100 times below the error of
 * one dropped or doubled 32-column chunk. The test prints the errors it saw. */
static double f32_l2_limit(int cols) { return fmax(1e-5, 2.0 * ceil(cols / 16.0) * ldexp(1.0, -24)); }
static double f32_elem_limit(int cols) { return fmax(1e-4, 20.0 * ceil(cols / 16.0) * ldexp(1.0, -24)); }

/* Largest relative L2 error seen per path and Y dtype in the current shape. */
static double g_max_rel[4][2];

/* Compare Y (host copy, yt) with ref over the checked rows; prints the
 * first mismatches and the error. Returns 0 if within tolerance. */
static int compare(const char *what, const void *y, lf_dtype yt, const double *ref, const int *chk, int nchk,
                   int rows, int cols, int n, int path) {
    double num = 0, den = 0;
    for (int m = 0; m < n; m++)
        for (int i = 0; i < nchk; i++) {
            const double r = ref[(size_t)m * nchk + i];
            den += r * r;
        }
    const double rms = sqrt(den / ((double)n * nchk));
    int bad = 0;
    for (int m = 0; m < n; m++)
        for (int i = 0; i < nchk; i++) {
            const size_t yi = (size_t)m * rows + chk[i];
            const double v = yt == LF_DTYPE_BF16 ? lf_bf16_to_f32(((const uint16_t *)y)[yi]) : ((const float *)y)[yi];
            const double r = ref[(size_t)m * nchk + i];
            const double d = fabs(v - r);
            const double tol =
                yt == LF_DTYPE_BF16 ? ldexp(fabs(r), -7) + ldexp(rms, -8) /* bf16 out: with beta 1 cuBLASLt may round X.W^T to bf16 before adding Y, an error relative to the operands, not to their (possibly cancelling) sum */ : f32_elem_limit(cols) * (rms + fabs(r));
            num += (v - r) * (v - r);
            if (!(d <= tol)) {
                if (bad < 3)
                    fprintf(stderr, "  %s: Y[%d][%d] = %.9g, reference %.9g, |diff| %.3g > tol %.3g\n", what, m,
                            chk[i], v, r, d, tol);
                bad++;
            }
        }
    const double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    const double lim = yt == LF_DTYPE_BF16 ? 8e-3 : f32_l2_limit(cols);
    if (path >= 0 && path < 4) {
        double *mx = &g_max_rel[path][yt == LF_DTYPE_BF16];
        if (!(rel <= *mx)) *mx = rel;
    }
    if (bad || !(rel <= lim)) {
        fprintf(stderr, "  %s: %d of %d checked elements out of tolerance, relative L2 %.3g (limit %.1g)\n",
                what, bad, n * nchk, rel, lim);
        return -1;
    }
    return 0;
}

/* Y (n x rows) reference on the checked rows: ref[m][i] = X[m] . W[chk[i]] + beta * yold[m][chk[i]] */
static void reference(const uint16_t *hw, int cols, const double *xd, int n, const int *chk, int nchk, int rows,
                      const void *yold, lf_dtype yt, float beta, double *wrow, double *ref) {
    for (int i = 0; i < nchk; i++) {
        const uint16_t *w = hw + (size_t)chk[i] * cols;
        for (int k = 0; k < cols; k++) wrow[k] = lf_bf16_to_f32(w[k]);
        for (int m = 0; m < n; m++) {
            const double *x = xd + (size_t)m * cols;
            double s = 0;
            for (int k = 0; k < cols; k++) s += x[k] * wrow[k];
            if (beta != 0.f) {
                const size_t yi = (size_t)m * rows + chk[i];
                s += (double)beta * (yt == LF_DTYPE_BF16 ? lf_bf16_to_f32(((const uint16_t *)yold)[yi])
                                                         : ((const float *)yold)[yi]);
            }
            ref[(size_t)m * nchk + i] = s;
        }
    }
}

/* combos: bit c set = run combination c (bit 0: f32 Y, beta 0; 1: f32, beta 1;
 * 2: bf16, beta 0; 3: bf16, beta 1) */
static void run_shape(int rows, int cols, const int *ns, int nn, unsigned combos_small_n, unsigned combos_big_n) {
    const int max_n = lf_cuda_gemv_max_n();
    int n_top = 0;
    for (int i = 0; i < nn; i++)
        if (ns[i] > n_top) n_top = ns[i];
    uint16_t *hw = malloc(sizeof(uint16_t) * (size_t)rows * cols);
    uint16_t *hx = malloc(sizeof(uint16_t) * (size_t)n_top * cols);
    double *xd = malloc(sizeof(double) * (size_t)n_top * cols);
    double *wrow = malloc(sizeof(double) * (size_t)cols);
    int *chk = malloc(sizeof(int) * (size_t)rows);
    unsigned char *yold = malloc((size_t)4 * n_top * rows);
    unsigned char *yout = malloc((size_t)4 * n_top * rows);
    double *ref = NULL;
    void *dw = NULL, *dx = NULL, *dy = NULL;
    lf_error err;
    if (!hw || !hx || !xd || !wrow || !chk || !yold || !yout) {
        CHECK(0, "host allocation for %d x %d", rows, cols);
        goto done;
    }
    fill_bf16(hw, (size_t)rows * cols, 1.f);
    memset(g_max_rel, 0, sizeof g_max_rel);
    CUDA_OK(cudaMalloc(&dw, sizeof(uint16_t) * (size_t)rows * cols));
    CUDA_OK(cudaMalloc(&dx, sizeof(uint16_t) * (size_t)n_top * cols));
    CUDA_OK(cudaMalloc(&dy, (size_t)4 * n_top * rows));
    CUDA_OK(cudaMemcpy(dw, hw, sizeof(uint16_t) * (size_t)rows * cols, cudaMemcpyHostToDevice));

    for (int ni = 0; ni < nn; ni++) {
        const int n = ns[ni];
        /* rows to check: all when cheap, else the first and last 16 and every step-th (odd step) */
        const double budget = 2e7;
        int nchk = 0;
        const double cost = (double)rows * cols * n;
        int step = cost <= budget ? 1 : (int)ceil(cost / budget);
        if (step > 1 && step % 2 == 0) step++;
        for (int r = 0; r < rows; r++)
            if (step == 1 || r < 16 || r >= rows - 16 || r % step == 0) chk[nchk++] = r;
        free(ref);
        ref = malloc(sizeof(double) * (size_t)n * nchk);
        if (!ref) {
            CHECK(0, "host allocation");
            goto done;
        }
        fill_bf16(hx, (size_t)n * cols, 1.f);
        for (size_t i = 0; i < (size_t)n * cols; i++) xd[i] = lf_bf16_to_f32(hx[i]);
        CUDA_OK(cudaMemcpy(dx, hx, sizeof(uint16_t) * (size_t)n * cols, cudaMemcpyHostToDevice));
        const unsigned combos = n <= max_n ? combos_small_n : combos_big_n;
        for (int c = 0; c < 4; c++) {
            if (!(combos >> c & 1)) continue;
            const lf_dtype yt = c >= 2 ? LF_DTYPE_BF16 : LF_DTYPE_F32;
            const float beta = (float)(c & 1);
            const size_t es = yt == LF_DTYPE_BF16 ? 2 : 4, ycount = (size_t)n * rows;
            /* beta 0: NaN (must not be read); beta 1: random values of the dot's scale */
            if (beta == 0.f) {
                for (size_t i = 0; i < ycount; i++) {
                    if (yt == LF_DTYPE_BF16) ((uint16_t *)yold)[i] = 0x7fc0;
                    else ((uint32_t *)yold)[i] = 0x7fc00000u;
                }
            } else {
                const float sc = (float)sqrt((double)cols) / 3.f;
                if (yt == LF_DTYPE_BF16) fill_bf16((uint16_t *)yold, ycount, sc);
                else {
                    uint16_t *tmp = malloc(sizeof(uint16_t) * ycount);
                    if (!tmp) {
                        CHECK(0, "host allocation");
                        goto done;
                    }
                    fill_bf16(tmp, ycount, sc);
                    for (size_t i = 0; i < ycount; i++)
                        ((float *)yold)[i] = lf_bf16_to_f32(tmp[i]) * (1.f + 1.f / 1024.f); /* not bf16-exact */
                    free(tmp);
                }
            }
            reference(hw, cols, xd, n, chk, nchk, rows, yold, yt, beta, wrow, ref);
            for (int path = 0; path < PATH_COUNT; path++) {
                if (n > max_n && path != PATH_AUTO) continue; /* cuBLASLt is the automatic path there */
                char what[160];
                snprintf(what, sizeof what, "%s rows %d cols %d n %d y %s beta %g", path_name[path], rows, cols,
                         n, dt_name(yt), (double)beta);
                CUDA_OK(cudaMemcpy(dy, yold, es * ycount, cudaMemcpyHostToDevice));
                if (run_path(path, dw, rows, cols, dx, n, dy, yt, beta, &err) != 0) {
                    CHECK(0, "%s: refused: %s", what, err.msg);
                    continue;
                }
                CUDA_OK(cudaDeviceSynchronize());
                CUDA_OK(cudaMemcpy(yout, dy, es * ycount, cudaMemcpyDeviceToHost));
                CHECK(compare(what, yout, yt, ref, chk, nchk, rows, cols, n, path) == 0,
                      "%s: wrong result (%d rows checked)", what, nchk);
            }
        }
    }
    /* the measured errors, for the record (limits: see f32_l2_limit) */
    printf("rows %6d cols %5d: max relative L2 f32 / bf16:", rows, cols);
    for (int p = 0; p < PATH_COUNT; p++) printf("  %s %.2g / %.2g", path_name[p], g_max_rel[p][0], g_max_rel[p][1]);
    printf("  (f32 limit %.2g)\n", f32_l2_limit(cols));
done:
    cudaFree(dw);
    cudaFree(dx);
    cudaFree(dy);
    free(hw);
    free(hx);
    free(xd);
    free(wrow);
    free(chk);
    free(yold);
    free(yout);
    free(ref);
}

/* ---- tests --------------------------------------------------------------- */
static void test_small_shapes(void **state) {
    (void)state;
    if (!g_have_gpu) SKIP_TEST();
    const int f0 = g_failures;
    const int m = lf_cuda_gemv_max_n();
    const int ns[] = {1, 2, 3, 5, 8, m, m + 1, 64, 333};
    run_shape(8, 8, ns, 9, 0xf, 0xf);
    run_shape(24, 40, ns, 9, 0xf, 0xf);
    run_shape(1024, 2048, ns, 9, 0xf, 0xf);
    END_TEST(f0);
}

static void test_model_shapes(void **state) {
    (void)state;
    if (!g_have_gpu) SKIP_TEST();
    const int f0 = g_failures;
    const int m = lf_cuda_gemv_max_n();
    const int ns[] = {1, 2, 3, 5, 8, m, m + 1, 64, 333};
    run_shape(2048, 2048, ns, 9, 0xf, 0xf);
    run_shape(6144, 2048, ns, 9, 0x9, 0x6);
    run_shape(2048, 6144, ns, 9, 0x6, 0x9);
    run_shape(4096 + 512 + 8, 4096, ns, 9, 0x5, 0xa);
    END_TEST(f0);
}

static void test_large_shapes(void **state) {
    (void)state;
    if (!g_have_gpu) SKIP_TEST();
    const int f0 = g_failures;
    const int m = lf_cuda_gemv_max_n();
    const int ns_head[] = {1, 3, 8, m, m + 1, 64};
    run_shape(151936, 1024, ns_head, 6, 0x6, 0x9); /* an lm_head: 1187 blocks of the R=2 GEMV */
    const int ns_wide[] = {1, 8, m, m + 1};
    run_shape(64, 32768 + 8, ns_wide, 4, 0xf, 0x3); /* long rows, a column tail */
    END_TEST(f0);
}

/* A GEMV and a cuBLASLt product captured in one graph; replayed, then
 * replayed again after X changed (the graph must read the new X). */
static void test_graph(void **state) {
    (void)state;
    if (!g_have_gpu) SKIP_TEST();
    const int f0 = g_failures;
    const int rows = 2048, cols = 2048, n1 = 3, n2 = 64;
    uint16_t *hw = malloc(sizeof(uint16_t) * rows * cols);
    uint16_t *hx = malloc(sizeof(uint16_t) * n2 * cols);
    double *xd = malloc(sizeof(double) * n2 * cols);
    double *wrow = malloc(sizeof(double) * cols);
    int *chk = malloc(sizeof(int) * rows);
    double *ref = malloc(sizeof(double) * n2 * rows);
    float *y1 = malloc(sizeof(float) * n1 * rows);
    uint16_t *y2 = malloc(sizeof(uint16_t) * n2 * rows);
    void *dw = NULL, *dx = NULL, *dy1 = NULL, *dy2 = NULL;
    cudaStream_t st = NULL;
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    lf_error err;
    int capturing = 0;
    if (!hw || !hx || !xd || !wrow || !chk || !ref || !y1 || !y2) {
        CHECK(0, "host allocation");
        goto done;
    }
    for (int r = 0; r < rows; r++) chk[r] = r;
    fill_bf16(hw, (size_t)rows * cols, 1.f);
    CUDA_OK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    CUDA_OK(cudaMalloc(&dw, sizeof(uint16_t) * rows * cols));
    CUDA_OK(cudaMalloc(&dx, sizeof(uint16_t) * n2 * cols));
    CUDA_OK(cudaMalloc(&dy1, sizeof(float) * n1 * rows));
    CUDA_OK(cudaMalloc(&dy2, sizeof(uint16_t) * n2 * rows));
    CUDA_OK(cudaMemcpy(dw, hw, sizeof(uint16_t) * rows * cols, cudaMemcpyHostToDevice));
    CHECK(lf_cuda_gemm_prepare(g_gemm, rows, cols, n1, LF_DTYPE_F32, 0.f, &err) == 0, "prepare: %s", err.msg);
    CHECK(lf_cuda_gemm_prepare(g_gemm, rows, cols, n2, LF_DTYPE_BF16, 0.f, &err) == 0, "prepare: %s", err.msg);

    CUDA_OK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    capturing = 1;
    CHECK(lf_cuda_gemm(g_gemm, dw, rows, cols, dx, n1, dy1, LF_DTYPE_F32, 0.f, st, &err) == 0,
          "GEMV during capture: %s", err.msg);
    CHECK(lf_cuda_gemm(g_gemm, dw, rows, cols, dx, n2, dy2, LF_DTYPE_BF16, 0.f, st, &err) == 0,
          "cuBLASLt during capture: %s", err.msg);
    /* an unprepared shape is refused during capture, with a message */
    err.msg[0] = 0;
    CHECK(lf_cuda_gemm(g_gemm, dw, rows, cols, dx, n2 - 8, dy2, LF_DTYPE_BF16, 0.f, st, &err) == -1 &&
              strstr(err.msg, "prepare"),
          "unprepared shape during capture not refused (message: '%s')", err.msg);
    capturing = 0;
    CUDA_OK(cudaStreamEndCapture(st, &graph));
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));

    for (int round = 0; round < 2; round++) {
        fill_bf16(hx, (size_t)n2 * cols, 1.f);
        for (int i = 0; i < n2 * cols; i++) xd[i] = lf_bf16_to_f32(hx[i]);
        CUDA_OK(cudaMemcpy(dx, hx, sizeof(uint16_t) * n2 * cols, cudaMemcpyHostToDevice));
        CUDA_OK(cudaGraphLaunch(exec, st));
        CUDA_OK(cudaStreamSynchronize(st));
        CUDA_OK(cudaMemcpy(y1, dy1, sizeof(float) * n1 * rows, cudaMemcpyDeviceToHost));
        CUDA_OK(cudaMemcpy(y2, dy2, sizeof(uint16_t) * n2 * rows, cudaMemcpyDeviceToHost));
        char what[96];
        reference(hw, cols, xd, n1, chk, rows, rows, NULL, LF_DTYPE_F32, 0.f, wrow, ref);
        snprintf(what, sizeof what, "graph replay %d, GEMV n %d", round + 1, n1);
        CHECK(compare(what, y1, LF_DTYPE_F32, ref, chk, rows, rows, cols, n1, -1) == 0, "%s: wrong result", what);
        reference(hw, cols, xd, n2, chk, rows, rows, NULL, LF_DTYPE_BF16, 0.f, wrow, ref);
        snprintf(what, sizeof what, "graph replay %d, cuBLASLt n %d", round + 1, n2);
        CHECK(compare(what, y2, LF_DTYPE_BF16, ref, chk, rows, rows, cols, n2, -1) == 0, "%s: wrong result", what);
    }
done:
    if (capturing) {
        cudaGraph_t g2 = NULL;
        cudaStreamEndCapture(st, &g2);
        if (g2) cudaGraphDestroy(g2);
    }
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
    if (st) cudaStreamDestroy(st);
    cudaFree(dw);
    cudaFree(dx);
    cudaFree(dy1);
    cudaFree(dy2);
    free(hw);
    free(hx);
    free(xd);
    free(wrow);
    free(chk);
    free(ref);
    free(y1);
    free(y2);
    END_TEST(f0);
}

/* Bad arguments: -1 and a message naming the problem. The shape and pointer
 * checks come before any CUDA call, so most of this runs without a GPU. */
static void test_bad_input(void **state) {
    (void)state;
    const int f0 = g_failures;
    static _Alignas(16) uint16_t buf[64]; /* never dereferenced: the checks fail first */
    lf_error err;
    const int m = lf_cuda_gemv_max_n();
    CHECK(m >= 4 && m <= 16, "gemv max n %d outside 4..16", m);
#define BAD(call, needle)                                                                                  \
    do {                                                                                                   \
        err.msg[0] = 0;                                                                                    \
        CHECK((call) == -1 && strstr(err.msg, needle), "%s: expected -1 and '%s', got message '%s'", #call, \
              needle, err.msg);                                                                            \
    } while (0)
    BAD(lf_cuda_gemv(buf, 12, 16, buf, 1, buf, LF_DTYPE_F32, 0.f, 0, NULL, &err), "rows");
    BAD(lf_cuda_gemv(buf, 0, 16, buf, 1, buf, LF_DTYPE_F32, 0.f, 0, NULL, &err), "rows");
    BAD(lf_cuda_gemv(buf, 16, 20, buf, 1, buf, LF_DTYPE_F32, 0.f, 0, NULL, &err), "cols");
    BAD(lf_cuda_gemv(buf, 16, 16, buf, 0, buf, LF_DTYPE_F32, 0.f, 0, NULL, &err), "n must");
    BAD(lf_cuda_gemv(buf, 16, 16, buf, m + 1, buf, LF_DTYPE_F32, 0.f, 0, NULL, &err), "n <=");
    BAD(lf_cuda_gemv(buf, 16, 16, buf, 1, buf, LF_DTYPE_F16, 0.f, 0, NULL, &err), "f32 or bf16");
    BAD(lf_cuda_gemv(buf, 16, 16, buf, 1, buf, LF_DTYPE_F32, NAN, 0, NULL, &err), "beta");
    BAD(lf_cuda_gemv(buf, 16, 16, buf, 1, buf, LF_DTYPE_F32, 0.f, 3, NULL, &err), "variant");
    BAD(lf_cuda_gemv(NULL, 16, 16, buf, 1, buf, LF_DTYPE_F32, 0.f, 0, NULL, &err), "W is NULL");
    BAD(lf_cuda_gemv(buf, 16, 16, buf + 1, 1, buf, LF_DTYPE_F32, 0.f, 0, NULL, &err), "aligned");
    BAD(lf_cuda_gemv(buf, 16, 16, buf, 1, buf + 4, LF_DTYPE_BF16, 0.f, 0, NULL, &err), "aligned");
    BAD(lf_cuda_gemm(NULL, buf, 16, 16, buf, 1, buf, LF_DTYPE_F32, 0.f, NULL, &err), "handle");
    BAD(lf_cuda_gemm_prepare(NULL, 16, 16, 1, LF_DTYPE_F32, 0.f, &err), "handle");
    BAD(lf_cuda_gemm_create(NULL, &err), "output");
    /* the message names the shape */
    BAD(lf_cuda_gemv(buf, 1000, 4100, buf, 1, buf, LF_DTYPE_F32, 0.f, 0, NULL, &err), "cols 4100");
    if (g_have_gpu && g_gemm) {
        BAD(lf_cuda_gemm(g_gemm, buf, 16, 12, buf, 40, buf, LF_DTYPE_F32, 0.f, NULL, &err), "cols");
        BAD(lf_cuda_gemm(g_gemm, buf, 16, 16, buf + 4, 40, buf, LF_DTYPE_F32, 0.f, NULL, &err), "aligned");
        BAD(lf_cuda_gemm(g_gemm, buf, 16, 16, buf, 40, NULL, LF_DTYPE_BF16, 0.f, NULL, &err), "Y is NULL");
        BAD(lf_cuda_gemm_prepare(g_gemm, 16, 16, 40, LF_DTYPE_F16, 1.f, &err), "f32 or bf16");
        BAD(lf_cuda_gemm_lt_prepare(g_gemm, 16, 16, -1, LF_DTYPE_F32, 1.f, &err), "n must");
        BAD(lf_cuda_gemm_lt(g_gemm, buf, 16, 16, buf, 2, buf, LF_DTYPE_F32, INFINITY, NULL, &err), "beta");
    }
#undef BAD
    END_TEST(f0);
}

int main(void) {
    int ndev = 0;
    lf_error err;
    g_have_gpu = cudaGetDeviceCount(&ndev) == cudaSuccess && ndev > 0;
    if (!g_have_gpu) printf("no CUDA device: GPU cases skipped\n");
    if (g_have_gpu && lf_cuda_gemm_create(&g_gemm, &err) != 0) {
        fprintf(stderr, "FAIL: lf_cuda_gemm_create: %s\n", err.msg);
        return 1;
    }
#ifdef LF_TEST_STANDALONE
    test_bad_input(NULL);
    test_small_shapes(NULL);
    test_model_shapes(NULL);
    test_large_shapes(NULL);
    test_graph(NULL);
    lf_cuda_gemm_free(g_gemm);
    printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "PASSED", g_failures);
    return g_failures ? 1 : 0;
#else
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_input),    cmocka_unit_test(test_small_shapes),
        cmocka_unit_test(test_model_shapes), cmocka_unit_test(test_large_shapes),
        cmocka_unit_test(test_graph),
    };
    const int rc = cmocka_run_group_tests(tests, NULL, NULL);
    lf_cuda_gemm_free(g_gemm);
    return rc;
#endif
}
