/* The prefill matrix products of one Qwen3-0.6B-shaped layer on bf16
 * weights (q/k/v fused: 4096 x 1024; o: 1024 x 2048; gate/up fused:
 * 6144 x 1024; down: 1024 x 3072; random weights, 30 MB), timed at every
 * level of the bf16 GEMM the CPU has (fp32 panels, avx512bf16, amx), the
 * levels one after the other in each round so that load from other
 * processes hits them alike. Per level: ms per layer (min and median over
 * the rounds) and GFLOP/s at the min; per level above fp32, the per-round
 * speed ratio to the fp32 panels (min - median - max).
 *
 *   bench_bf16_gemm [--tokens 512] [--threads N] [--rounds 10]
 *
 * One JSON object per level on stdout. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fp.h"
#include "core/timer.h"
#include "cpu/forward.h"
#include "cpu/gemm_bf16.h"
#include "cpu/kernels.h"

#define N_MAT 7

typedef struct {
    int rows, cols;
} shape2;

/* q, k, v | o | gate, up | down */
static const shape2 g_shapes[N_MAT] = {{2048, 1024}, {1024, 1024}, {1024, 1024}, {1024, 2048},
                                       {3072, 1024}, {3072, 1024}, {1024, 3072}};

static uint64_t g_rng = 88172645463325252ull;
static float frand1(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

typedef struct {
    lf_weight w[N_MAT];
    float *x, *y[N_MAT], *scratch;
    int n;
} layer;

static int layer_make(layer *L, int n) {
    memset(L, 0, sizeof *L);
    L->n = n;
    size_t maxc = 3072;
    L->x = malloc((size_t)n * maxc * sizeof(float));
    L->scratch = malloc(lf_matmul_scratch_floats(n, (int)maxc) * sizeof(float));
    if (!L->x || !L->scratch) return -1;
    for (size_t i = 0; i < (size_t)n * maxc; i++) L->x[i] = frand1();
    for (int m = 0; m < N_MAT; m++) {
        size_t cnt = (size_t)g_shapes[m].rows * g_shapes[m].cols;
        uint16_t *d = malloc(cnt * sizeof *d);
        L->y[m] = malloc((size_t)n * g_shapes[m].rows * sizeof(float));
        if (!d || !L->y[m]) return -1;
        for (size_t i = 0; i < cnt; i++) d[i] = lf_f32_to_bf16(frand1() * 0.05f);
        L->w[m] = (lf_weight){.data = d, .dtype = LF_DTYPE_BF16, .rows = g_shapes[m].rows, .cols = g_shapes[m].cols};
    }
    return 0;
}

static void layer_free(layer *L) {
    for (int m = 0; m < N_MAT; m++) {
        free((void *)L->w[m].data);
        free(L->y[m]);
    }
    free(L->x);
    free(L->scratch);
}

/* The four products of a layer, fused as the forward pass fuses them. */
static double layer_run(layer *L) {
    double t0 = lf_now_ms();
    lf_matmul_job qkv[3] = {{&L->w[0], NULL, L->y[0]}, {&L->w[1], NULL, L->y[1]}, {&L->w[2], NULL, L->y[2]}};
    lf_matmul_multi(L->x, L->n, 1024, qkv, 3, L->scratch);
    lf_matmul(L->x, L->n, &L->w[3], NULL, L->y[3], L->scratch);
    lf_matmul_job gu[2] = {{&L->w[4], NULL, L->y[4]}, {&L->w[5], NULL, L->y[5]}};
    lf_matmul_multi(L->x, L->n, 1024, gu, 2, L->scratch);
    lf_matmul(L->x, L->n, &L->w[6], NULL, L->y[6], L->scratch);
    return lf_now_ms() - t0;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv) {
    int n = 512, threads = 0, rounds = 10;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--tokens")) n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "bench_bf16_gemm: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (n < 5 || n > 65536 || rounds < 1 || rounds > 1000 || threads < 0) {
        fprintf(stderr, "bench_bf16_gemm: --tokens 5..65536, --rounds 1..1000, --threads >= 0\n");
        return 2;
    }
    lf_cpu_set_threads(threads);
    layer L;
    if (layer_make(&L, n) != 0) {
        fprintf(stderr, "bench_bf16_gemm: out of memory\n");
        layer_free(&L);
        return 1;
    }
    int nl = (int)lf_bgemm_supported() + 1;
    double *ms = calloc((size_t)nl * rounds, sizeof *ms);
    for (int lv = 0; lv < nl; lv++) { /* warm-up: pages touched, buffers sized */
        lf_bgemm_set_level((lf_bgemm_level)lv);
        layer_run(&L);
    }
    for (int r = 0; r < rounds; r++)
        for (int lv = 0; lv < nl; lv++) {
            lf_bgemm_set_level((lf_bgemm_level)lv);
            ms[lv * rounds + r] = layer_run(&L);
        }
    double flop = 0;
    for (int m = 0; m < N_MAT; m++) flop += 2.0 * n * g_shapes[m].rows * g_shapes[m].cols;
    double *rat = malloc((size_t)rounds * sizeof *rat), *tmp = malloc((size_t)rounds * sizeof *tmp);
    for (int lv = 0; lv < nl; lv++) {
        double *v = ms + (size_t)lv * rounds;
        for (int r = 0; r < rounds; r++) rat[r] = ms[r] / v[r]; /* fp32 time / this level's: speed ratio */
        memcpy(tmp, v, (size_t)rounds * sizeof *tmp);
        double med = median(tmp, rounds), mn = tmp[0];
        double rmed = median(rat, rounds);
        printf("{\"level\":\"%s\",\"tokens\":%d,\"threads\":%d,\"rounds\":%d,\"ms_per_layer_min\":%.2f,"
               "\"ms_per_layer_median\":%.2f,\"gflops_at_min\":%.1f,\"speed_vs_fp32_min\":%.3f,"
               "\"speed_vs_fp32_median\":%.3f,\"speed_vs_fp32_max\":%.3f}\n",
               lf_bgemm_level_name((lf_bgemm_level)lv), n, lf_cpu_threads(), rounds, mn, med, flop / mn / 1e6,
               rat[0], rmed, rat[rounds - 1]);
    }
    free(rat);
    free(tmp);
    free(ms);
    layer_free(&L);
    return 0;
}
