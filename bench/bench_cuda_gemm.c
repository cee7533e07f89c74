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
#define BENCH_NAME "bench_cuda_gemm"
#include "bench_cuda_common.h"

#include "cuda/cuda_gemm.h"
#include "cuda/cuda_membw.h"

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
    bench_tile_to_device(d, sizeof(uint16_t) * count, h, sizeof(uint16_t) * chunk);
    free(h);
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

/* The command line. */
typedef struct opts {
    int reps, ns[16], nn;
    const char *models;
} opts;

static int parse_args(int argc, char **argv, opts *o) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) o->reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--n") && i + 1 < argc) o->nn = bench_parse_list(argv[++i], o->ns, 16, 1, 4096);
        else if (!strcmp(argv[i], "--models") && i + 1 < argc) o->models = argv[++i];
        else {
            fprintf(stderr, "usage: bench_cuda_gemm [--reps N] [--n 1,2,4,8,16,64,256] [--models 1.7b,8b]\n");
            return 2;
        }
    }
    if (o->reps < 20 || o->reps > 10000 || o->nn < 1) {
        fprintf(stderr, "bench_cuda_gemm: --reps must be 20..10000 and --n a list of 1..4096\n");
        return 2;
    }
    return 0;
}

/* The projection shapes of the models named in `models`: their count. */
static int model_shapes(const char *models, shape *shapes) {
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
    return nshape;
}

/* One shape's device buffers: `copies` copies of W (rotated over, so that no
 * call finds its W in L2), X and Y for up to maxn columns. */
typedef struct operands {
    void *w, *x, *y;
    size_t wbytes;
    int copies;
} operands;

static void operands_init(const shape *sh, int maxn, operands *d) {
    d->wbytes = (size_t)sh->rows * sh->cols * 2;
    d->copies = (int)(((size_t)256 << 20) / d->wbytes) + 1;
    if (d->copies > 64) d->copies = 64;
    CUDA_CHECK(cudaMalloc(&d->w, d->wbytes * (size_t)d->copies));
    CUDA_CHECK(cudaMalloc(&d->x, (size_t)maxn * sh->cols * 2));
    CUDA_CHECK(cudaMalloc(&d->y, (size_t)maxn * sh->rows * 4));
    fill_device_bf16(d->w, d->wbytes / 2);
    for (int c = 1; c < d->copies; c++)
        CUDA_CHECK(cudaMemcpy((char *)d->w + d->wbytes * (size_t)c, d->w, d->wbytes, cudaMemcpyDeviceToDevice));
    fill_device_bf16(d->x, (size_t)maxn * sh->cols);
    CUDA_CHECK(cudaMemset(d->y, 0, (size_t)maxn * sh->rows * 4));
    CUDA_CHECK(cudaDeviceSynchronize());
}

/* Microseconds per call of path p at n columns: the median replay of a CUDA
 * graph of one call per copy of W (as the engine runs a decode step), or a
 * negative value when a call fails (printed). */
static double time_path(struct lf_cuda_gemm *g, int p, const shape *sh, const operands *d, int n, int reps,
                        cudaStream_t st) {
    lf_error err;
    if (p == P_LT && lf_cuda_gemm_lt_prepare(g, sh->rows, sh->cols, n, LF_DTYPE_F32, sh->beta, &err)) {
        fprintf(stderr, "bench_cuda_gemm: %s\n", err.msg);
        return -1;
    }
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    for (int c = 0; c < d->copies; c++) {
        if (call(p, g, (const char *)d->w + d->wbytes * (size_t)c, sh->rows, sh->cols, d->x, n, d->y, sh->beta, st,
                 &err)) {
            fprintf(stderr, "bench_cuda_gemm: %s\n", err.msg);
            return -1;
        }
    }
    CUDA_CHECK(cudaStreamEndCapture(st, &graph));
    CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    const double us = bench_graph_ms(exec, st, reps) * 1e3 / d->copies;
    CUDA_CHECK(cudaGraphExecDestroy(exec));
    CUDA_CHECK(cudaGraphDestroy(graph));
    return us;
}

/* Every path of one shape at every n, each a row of the table and a result
 * in res[*nres]: 0, or -1 when a call failed. */
static int bench_shape(struct lf_cuda_gemm *g, const shape *sh, const opts *o, int maxn, double bw, cudaStream_t st,
                       result *res, int *nres) {
    operands d;
    operands_init(sh, maxn, &d);
    int rc = 0;
    for (int ni = 0; ni < o->nn && rc == 0; ni++) {
        const int n = o->ns[ni];
        double lt_us = 0;
        const int p_first = n <= lf_cuda_gemv_max_n() ? P_GEMV : P_LT;
        /* cuBLASLt first so every GEMV line can show the ratio */
        const int order[4] = {P_LT, P_GEMV, P_GEMV1, P_GEMV2};
        for (int oi = 0; oi < 4; oi++) {
            const int p = order[oi];
            if (p < p_first) continue;
            const double us = time_path(g, p, sh, &d, n, o->reps, st);
            if (us < 0) {
                rc = -1;
                break;
            }
            const double bytes = (double)d.wbytes + (double)n * sh->cols * 2 +
                                 (double)n * sh->rows * 4 * (sh->beta != 0.f ? 2 : 1);
            result *r = &res[(*nres)++];
            snprintf(r->shape, sizeof r->shape, "%s %s", sh->model, sh->name);
            r->rows = sh->rows;
            r->cols = sh->cols;
            r->n = n;
            r->path = path_names[p];
            r->us = us;
            r->gbps = bytes / (us * 1e-6) / 1e9;
            if (p == P_LT) lt_us = us;
            char ratio[16] = "";
            if (p != P_LT) snprintf(ratio, sizeof ratio, "%.2fx", lt_us / us);
            printf("%-20s %7d %6d %5d %-9s %10.2f %9.0f %7.1f%% %9s\n", r->shape, r->rows, r->cols, n, r->path, us,
                   r->gbps, 100.0 * r->gbps / bw, ratio);
        }
    }
    cudaFree(d.w);
    cudaFree(d.x);
    cudaFree(d.y);
    return rc;
}

int main(int argc, char **argv) {
    opts o = {.reps = 30, .ns = {1, 2, 4, 8, 16, 64, 256}, .nn = 7, .models = "1.7b,8b"};
    if (parse_args(argc, argv, &o)) return 2;
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 1) {
        printf("bench_cuda_gemm: no CUDA device\n");
        return 0;
    }
    struct cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    lf_error err;
    struct lf_cuda_gemm *g = NULL;
    lf_cuda_membw_result mb;
    if (lf_cuda_gemm_create(&g, &err) || lf_cuda_membw_measure((size_t)1 << 30, 10, &mb, &err)) {
        fprintf(stderr, "bench_cuda_gemm: %s\n", err.msg);
        lf_cuda_gemm_free(g);
        return 1;
    }
    const double bw = mb.gbps_rw;
    printf("device: %s, %d SMs, L2 %d MiB; device-to-device copy of 1 GiB: %.0f GB/s (read + write)\n", prop.name,
           prop.multiProcessorCount, prop.l2CacheSize >> 20, bw);
    printf("GEMV up to n = %d; reps %d (median); W rotated over >= 256 MiB of copies\n\n", lf_cuda_gemv_max_n(),
           o.reps);

    shape shapes[16];
    const int nshape = model_shapes(o.models, shapes);
    int maxn = 1;
    for (int i = 0; i < o.nn; i++)
        if (o.ns[i] > maxn) maxn = o.ns[i];

    result *res = calloc((size_t)nshape * o.nn * 4, sizeof(result));
    int nres = 0, rc = 0;
    cudaStream_t st;
    CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    printf("%-20s %7s %6s %5s %-9s %10s %9s %8s %9s\n", "shape", "rows", "cols", "n", "path", "us", "GB/s",
           "of copy", "lt/this");
    for (int si = 0; si < nshape && rc == 0; si++)
        if (bench_shape(g, &shapes[si], &o, maxn, bw, st, res, &nres)) rc = 1;
    if (rc == 0) {
        printf("\n");
        for (int i = 0; i < nres; i++)
            printf("{\"bench\":\"cuda_gemm\",\"device\":\"%s\",\"shape\":\"%s\",\"rows\":%d,\"cols\":%d,\"n\":%d,"
                   "\"path\":\"%s\",\"us\":%.3f,\"gbps\":%.1f,\"memcpy_gbps\":%.1f}\n",
                   prop.name, res[i].shape, res[i].rows, res[i].cols, res[i].n, res[i].path, res[i].us, res[i].gbps,
                   bw);
    }
    cudaStreamDestroy(st);
    free(res);
    lf_cuda_gemm_free(g);
    return rc;
}

#else /* !LF_HAVE_CUDA */
int main(void) {
    printf("built without CUDA\n");
    return 0;
}
#endif
