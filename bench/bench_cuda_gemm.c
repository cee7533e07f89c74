/* The matrix products of the CUDA forward (src/cuda/gemm.cu) on the Qwen3-1.7B
 * and Qwen3-8B projection shapes, against the device's measured bandwidth:
 *
 *   bench_cuda_gemm [--reps 30] [--n 1,2,4,8,16,64,256] [--models 1.7b,8b]
 *
 * For every shape (fused qkv, o, fused gate_up, down, lm_head; Y f32, beta 1
 * for o and down as the engine accumulates the residual there, else 0) and
 * n, each path is timed: for n <= lf_cuda_gemv_max_n() the GEMV (automatic
 * variant, and variants 1 and 2) and cuBLASLt (forced), above it cuBLASLt
 * (what lf_cuda_gemm uses). A measurement = one replay of a CUDA graph of
 * back-to-back calls (as the engine runs a decode step), between two CUDA
 * events, each call on its own copy of W, with enough copies (>= 256 MiB
 * together) that no call finds its W in L2; median over --reps replays
 * (after a warm-up replay) / calls per replay. X and Y stay the
 * same (small, as the engine's activations). GB/s counts W + X + Y bytes
 * (Y twice when beta = 1). The reference bandwidth is a 1 GiB
 * device-to-device cudaMemcpy in the same run ((read + write) / time).
 * Prints a table, then one JSON object per line. */
#include <stdio.h>

#ifdef LF_HAVE_CUDA
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cuda_runtime_api.h>

#include "cuda/cuda_gemm.h"

#define CUDA_CHECK(x)                                                                                      \
    do {                                                                                                   \
        cudaError_t e_ = (x);                                                                              \
        if (e_ != cudaSuccess) {                                                                           \
            fprintf(stderr, "bench_cuda_gemm: %s: %s\n", #x, cudaGetErrorString(e_));                      \
            exit(1);                                                                                       \
        }                                                                                                  \
    } while (0)

typedef struct shape {
    const char *model, *name;
    int rows, cols;
    float beta;
} shape;

typedef struct result {
    char shape[48];
    int rows, cols, n;
    const char *path;
    double us, gbps;
} result;

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Fill device memory with small bf16 values (so the products stay finite). */
static void fill_device_bf16(void *d, size_t count) {
    const size_t chunk = (size_t)1 << 22;
    uint16_t *h = malloc(sizeof(uint16_t) * chunk);
    if (!h) {
        fprintf(stderr, "bench_cuda_gemm: out of host memory\n");
        exit(1);
    }
    uint32_t s = 12345u;
    for (size_t i = 0; i < chunk; i++) {
        s = s * 1664525u + 1013904223u;
        h[i] = (uint16_t)(0x3c00u | ((s >> 16) & 0x7fu) | ((s >> 8) & 0x8000u)); /* +-[2^-7, 2^-6) */
    }
    for (size_t o = 0; o < count; o += chunk) {
        const size_t c = count - o < chunk ? count - o : chunk;
        CUDA_CHECK(cudaMemcpy((uint16_t *)d + o, h, sizeof(uint16_t) * c, cudaMemcpyHostToDevice));
    }
    free(h);
}

static double memcpy_gbps(int reps) {
    const size_t bytes = (size_t)1 << 30;
    void *a = NULL, *b = NULL;
    cudaEvent_t e0, e1;
    double *t = malloc(sizeof(double) * (size_t)reps);
    CUDA_CHECK(cudaMalloc(&a, bytes));
    CUDA_CHECK(cudaMalloc(&b, bytes));
    CUDA_CHECK(cudaMemset(a, 1, bytes));
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    CUDA_CHECK(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
    for (int r = 0; r < reps; r++) {
        float ms = 0;
        CUDA_CHECK(cudaEventRecord(e0, 0));
        CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, 0));
        CUDA_CHECK(cudaEventRecord(e1, 0));
        CUDA_CHECK(cudaEventSynchronize(e1));
        CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        t[r] = ms * 1e-3;
    }
    const double s = median(t, reps);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaFree(a);
    cudaFree(b);
    free(t);
    return 2.0 * (double)bytes / s / 1e9;
}

enum { P_GEMV, P_GEMV1, P_GEMV2, P_LT };
static const char *const path_names[] = {"gemv", "gemv-r1", "gemv-r2", "cublaslt"};

static int call(int path, struct lf_cuda_gemm *g, const void *W, int rows, int cols, const void *X, int n, void *Y,
                float beta, cudaStream_t st, lf_error *err) {
    switch (path) {
    case P_GEMV: return lf_cuda_gemm(g, W, rows, cols, X, n, Y, LF_DTYPE_F32, beta, st, err);
    case P_GEMV1: return lf_cuda_gemv(W, rows, cols, X, n, Y, LF_DTYPE_F32, beta, 1, st, err);
    case P_GEMV2: return lf_cuda_gemv(W, rows, cols, X, n, Y, LF_DTYPE_F32, beta, 2, st, err);
    default: return lf_cuda_gemm_lt(g, W, rows, cols, X, n, Y, LF_DTYPE_F32, beta, st, err);
    }
}

static int parse_list(const char *s, int *out, int max) {
    int k = 0;
    while (*s && k < max) {
        char *end;
        const long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 4096) return -1;
        out[k++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return k;
}

int main(int argc, char **argv) {
    int reps = 30, ns[16] = {1, 2, 4, 8, 16, 64, 256}, nn = 7;
    const char *models = "1.7b,8b";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--n") && i + 1 < argc) nn = parse_list(argv[++i], ns, 16);
        else if (!strcmp(argv[i], "--models") && i + 1 < argc) models = argv[++i];
        else {
            fprintf(stderr, "usage: bench_cuda_gemm [--reps N] [--n 1,2,4,8,16,64,256] [--models 1.7b,8b]\n");
            return 2;
        }
    }
    if (reps < 20 || reps > 10000 || nn < 1) {
        fprintf(stderr, "bench_cuda_gemm: --reps must be 20..10000 and --n a list of 1..4096\n");
        return 2;
    }
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 1) {
        printf("bench_cuda_gemm: no CUDA device\n");
        return 0;
    }
    struct cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    lf_error err;
    struct lf_cuda_gemm *g = NULL;
    if (lf_cuda_gemm_create(&g, &err)) {
        fprintf(stderr, "bench_cuda_gemm: %s\n", err.msg);
        return 1;
    }
    const double bw = memcpy_gbps(10);
    printf("device: %s, %d SMs, L2 %d MiB; device-to-device copy of 1 GiB: %.0f GB/s (read + write)\n", prop.name,
           prop.multiProcessorCount, prop.l2CacheSize >> 20, bw);
    printf("GEMV up to n = %d; reps %d (median); W rotated over >= 256 MiB of copies\n\n", lf_cuda_gemv_max_n(),
           reps);

    shape shapes[16];
    int nshape = 0;
    const int vocab = 151936;
    if (strstr(models, "1.7b")) {
        const int hid = 2048, q = 2048, kv = 1024, inter = 6144;
        shape s[] = {{"qwen3-1.7b", "qkv", q + 2 * kv, hid, 0.f},   {"qwen3-1.7b", "o", hid, q, 1.f},
                     {"qwen3-1.7b", "gate_up", 2 * inter, hid, 0.f}, {"qwen3-1.7b", "down", hid, inter, 1.f},
                     {"qwen3-1.7b", "lm_head", vocab, hid, 0.f}};
        for (int i = 0; i < 5; i++) shapes[nshape++] = s[i];
    }
    if (strstr(models, "8b")) {
        const int hid = 4096, q = 4096, kv = 1024, inter = 12288;
        shape s[] = {{"qwen3-8b", "qkv", q + 2 * kv, hid, 0.f},   {"qwen3-8b", "o", hid, q, 1.f},
                     {"qwen3-8b", "gate_up", 2 * inter, hid, 0.f}, {"qwen3-8b", "down", hid, inter, 1.f},
                     {"qwen3-8b", "lm_head", vocab, hid, 0.f}};
        for (int i = 0; i < 5; i++) shapes[nshape++] = s[i];
    }
    int maxn = 1;
    for (int i = 0; i < nn; i++)
        if (ns[i] > maxn) maxn = ns[i];

    result *res = calloc((size_t)nshape * nn * 4, sizeof(result));
    double *t = malloc(sizeof(double) * (size_t)reps);
    int nres = 0;
    cudaEvent_t e0, e1;
    cudaStream_t st;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    printf("%-20s %7s %6s %5s %-9s %10s %9s %8s %9s\n", "shape", "rows", "cols", "n", "path", "us", "GB/s",
           "of copy", "lt/this");
    for (int si = 0; si < nshape; si++) {
        const shape *sh = &shapes[si];
        const size_t wbytes = (size_t)sh->rows * sh->cols * 2;
        int copies = (int)(((size_t)256 << 20) / wbytes) + 1;
        if (copies > 64) copies = 64;
        void *dw = NULL, *dx = NULL, *dy = NULL;
        CUDA_CHECK(cudaMalloc(&dw, wbytes * (size_t)copies));
        CUDA_CHECK(cudaMalloc(&dx, (size_t)maxn * sh->cols * 2));
        CUDA_CHECK(cudaMalloc(&dy, (size_t)maxn * sh->rows * 4));
        fill_device_bf16(dw, wbytes / 2);
        for (int c = 1; c < copies; c++)
            CUDA_CHECK(cudaMemcpy((char *)dw + wbytes * (size_t)c, dw, wbytes, cudaMemcpyDeviceToDevice));
        fill_device_bf16(dx, (size_t)maxn * sh->cols);
        CUDA_CHECK(cudaMemset(dy, 0, (size_t)maxn * sh->rows * 4));
        CUDA_CHECK(cudaDeviceSynchronize());
        for (int ni = 0; ni < nn; ni++) {
            const int n = ns[ni];
            double lt_us = 0;
            const int p_first = n <= lf_cuda_gemv_max_n() ? P_GEMV : P_LT;
            /* cuBLASLt first so every GEMV line can show the ratio */
            const int order[4] = {P_LT, P_GEMV, P_GEMV1, P_GEMV2};
            for (int oi = 0; oi < 4; oi++) {
                const int p = order[oi];
                if (p < p_first) continue;
                if (p == P_LT && lf_cuda_gemm_lt_prepare(g, sh->rows, sh->cols, n, LF_DTYPE_F32, sh->beta, &err)) {
                    fprintf(stderr, "bench_cuda_gemm: %s\n", err.msg);
                    return 1;
                }
                /* the batch as one CUDA graph (as the engine runs a decode step) */
                cudaGraph_t graph = NULL;
                cudaGraphExec_t exec = NULL;
                CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
                for (int c = 0; c < copies; c++) {
                    if (call(p, g, (const char *)dw + wbytes * (size_t)c, sh->rows, sh->cols, dx, n, dy, sh->beta,
                             st, &err)) {
                        fprintf(stderr, "bench_cuda_gemm: %s\n", err.msg);
                        return 1;
                    }
                }
                CUDA_CHECK(cudaStreamEndCapture(st, &graph));
                CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
                for (int r = -1; r < reps; r++) { /* r = -1: warm-up */
                    float ms = 0;
                    CUDA_CHECK(cudaEventRecord(e0, st));
                    CUDA_CHECK(cudaGraphLaunch(exec, st));
                    CUDA_CHECK(cudaEventRecord(e1, st));
                    CUDA_CHECK(cudaEventSynchronize(e1));
                    CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
                    if (r >= 0) t[r] = ms * 1e3 / copies;
                }
                CUDA_CHECK(cudaGraphExecDestroy(exec));
                CUDA_CHECK(cudaGraphDestroy(graph));
                const double us = median(t, reps);
                const double bytes = (double)wbytes + (double)n * sh->cols * 2 +
                                     (double)n * sh->rows * 4 * (sh->beta != 0.f ? 2 : 1);
                result *o = &res[nres++];
                snprintf(o->shape, sizeof o->shape, "%s %s", sh->model, sh->name);
                o->rows = sh->rows;
                o->cols = sh->cols;
                o->n = n;
                o->path = path_names[p];
                o->us = us;
                o->gbps = bytes / (us * 1e-6) / 1e9;
                if (p == P_LT) lt_us = us;
                char ratio[16] = "";
                if (p != P_LT) snprintf(ratio, sizeof ratio, "%.2fx", lt_us / us);
                printf("%-20s %7d %6d %5d %-9s %10.2f %9.0f %7.1f%% %9s\n", o->shape, o->rows, o->cols, n, o->path,
                       us, o->gbps, 100.0 * o->gbps / bw, ratio);
            }
        }
        cudaFree(dw);
        cudaFree(dx);
        cudaFree(dy);
    }
    printf("\n");
    for (int i = 0; i < nres; i++)
        printf("{\"bench\":\"cuda_gemm\",\"device\":\"%s\",\"shape\":\"%s\",\"rows\":%d,\"cols\":%d,\"n\":%d,"
               "\"path\":\"%s\",\"us\":%.3f,\"gbps\":%.1f,\"memcpy_gbps\":%.1f}\n",
               prop.name, res[i].shape, res[i].rows, res[i].cols, res[i].n, res[i].path, res[i].us, res[i].gbps,
               bw);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaStreamDestroy(st);
    free(res);
    free(t);
    lf_cuda_gemm_free(g);
    return 0;
}

#else /* !LF_HAVE_CUDA */
int main(void) {
    printf("built without CUDA\n");
    return 0;
}
#endif
