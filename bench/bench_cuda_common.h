/* What the GPU micro-benchmarks (bench/bench_cuda_*.c) share: a CUDA status
 * check that ends the program, the median, a list flag's parser, filling
 * device memory from a host pattern, and timing a CUDA graph replayed
 * between two events. Include after defining BENCH_NAME (the program's
 * name, for messages), only in a build with CUDA. */
#ifndef LF_BENCH_CUDA_COMMON_H
#define LF_BENCH_CUDA_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cuda_runtime_api.h>

#ifndef BENCH_NAME
#error "define BENCH_NAME before including bench_cuda_common.h"
#endif

/* A CUDA call that must succeed: otherwise the program ends with a message. */
#define CUDA_CHECK(x)                                                                                      \
    do {                                                                                                   \
        cudaError_t e_ = (x);                                                                              \
        if (e_ != cudaSuccess) {                                                                           \
            fprintf(stderr, BENCH_NAME ": %s: %s\n", #x, cudaGetErrorString(e_));                          \
            exit(1);                                                                                       \
        }                                                                                                  \
    } while (0)

static inline int bench_cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median of v[0..n) (sorts v). */
static inline double bench_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* A comma-separated list of at most `max` integers in [lo, hi]: their
 * count, or -1 when the text is not such a list. */
static inline int bench_parse_list(const char *s, int *out, int max, long lo, long hi) {
    int k = 0;
    while (*s && k < max) {
        char *end;
        const long v = strtol(s, &end, 10);
        if (end == s || v < lo || v > hi) return -1;
        out[k++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return k;
}

/* dst_bytes of device memory at dst filled with copies of the host bytes
 * src[0..src_bytes), the last one cut short. */
static inline void bench_tile_to_device(void *dst, size_t dst_bytes, const void *src, size_t src_bytes) {
    for (size_t o = 0; o < dst_bytes; o += src_bytes) {
        const size_t n = dst_bytes - o < src_bytes ? dst_bytes - o : src_bytes;
        CUDA_CHECK(cudaMemcpy((char *)dst + o, src, n, cudaMemcpyHostToDevice));
    }
}

/* The median milliseconds of one replay of `ge` on stream st: one warm-up
 * replay, then `reps` (>= 1) replays each between two CUDA events. */
static inline double bench_graph_ms(cudaGraphExec_t ge, cudaStream_t st, int reps) {
    double *t = malloc(sizeof(double) * (size_t)reps);
    if (!t) {
        fprintf(stderr, BENCH_NAME ": out of host memory\n");
        exit(1);
    }
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    CUDA_CHECK(cudaGraphLaunch(ge, st));
    for (int r = 0; r < reps; r++) {
        float ms = 0;
        CUDA_CHECK(cudaEventRecord(e0, st));
        CUDA_CHECK(cudaGraphLaunch(ge, st));
        CUDA_CHECK(cudaEventRecord(e1, st));
        CUDA_CHECK(cudaEventSynchronize(e1));
        CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        t[r] = ms;
    }
    const double m = bench_median(t, reps);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    free(t);
    return m;
}

#endif
