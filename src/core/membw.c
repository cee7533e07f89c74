/* Read-bandwidth probe: see membw.h. Each thread streams through its own
 * contiguous slice (first touched by that thread) with 256-bit loads and four
 * independent accumulators, so the loop is limited by memory, not by
 * arithmetic. Passes alternate between plain loads and loads with a software
 * prefetch 4 KiB ahead (which the decode kernels use too; on some machines a
 * single thread reads faster with it); the best pass of either counts. */
#include "core/membw.h"

#include <omp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/timer.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(LF_NO_X86)
#include <immintrin.h>
#define LF_MEMBW_X86 1
__attribute__((target("avx2"))) static uint64_t sum_avx2(const uint64_t *p, size_t n, bool prefetch) {
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        if (prefetch) /* 4 KiB ahead, like the decode kernels */
            _mm_prefetch((const char *)(p + i) + 4096, _MM_HINT_T0);
        a = _mm256_add_epi64(a, _mm256_load_si256((const __m256i *)(const void *)(p + i)));
        b = _mm256_add_epi64(b, _mm256_load_si256((const __m256i *)(const void *)(p + i + 4)));
        c = _mm256_add_epi64(c, _mm256_load_si256((const __m256i *)(const void *)(p + i + 8)));
        d = _mm256_add_epi64(d, _mm256_load_si256((const __m256i *)(const void *)(p + i + 12)));
    }
    a = _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(c, d));
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)(void *)lanes, a);
    uint64_t s = lanes[0] + lanes[1] + lanes[2] + lanes[3];
    for (; i < n; i++) s += p[i];
    return s;
}
#else
#define LF_MEMBW_X86 0
#endif

static uint64_t sum_scalar(const uint64_t *p, size_t n, bool prefetch) {
    (void)prefetch;
    uint64_t a = 0, b = 0, c = 0, d = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a += p[i];
        b += p[i + 1];
        c += p[i + 2];
        d += p[i + 3];
    }
    for (; i < n; i++) a += p[i];
    return a + b + c + d;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int lf_membw_measure(size_t bytes, int threads, int passes, lf_membw_result *out, lf_error *err) {
    memset(out, 0, sizeof *out);
    bytes &= ~(size_t)4095;
    if (bytes < 4096) return lf_fail(err, "membw: buffer of %zu bytes is too small", bytes);
    if (passes < 1) passes = 1;
    int nt = threads > 0 ? threads : omp_get_max_threads();
    uint64_t *buf = aligned_alloc(4096, bytes);
    double *t = malloc((size_t)passes * sizeof(double));
    if (!buf || !t) {
        free(buf);
        free(t);
        return lf_fail(err, "membw: out of memory for a %zu-byte buffer", bytes);
    }
    size_t n = bytes / sizeof(uint64_t);
    bool avx2 = false;
#if LF_MEMBW_X86
    __builtin_cpu_init();
    avx2 = __builtin_cpu_supports("avx2");
#endif
    /* each thread touches (and later reads) the same slice; 32-byte aligned */
#pragma omp parallel num_threads(nt)
    {
        int id = omp_get_thread_num(), k = omp_get_num_threads();
        size_t a = n * id / k / 4 * 4, b = id == k - 1 ? n : n * (id + 1) / k / 4 * 4;
        for (size_t i = a; i < b; i++) buf[i] = i * 0x9e3779b97f4a7c15ull;
    }
    volatile uint64_t sink = 0;
    double best[2] = {1e300, 1e300};
    for (int p = 0; p < passes; p++) {
        uint64_t total = 0;
        bool pf = p % 2 == 1; /* alternate plain and software-prefetched passes */
        double t0 = lf_now_ms();
#pragma omp parallel num_threads(nt) reduction(+ : total)
        {
            int id = omp_get_thread_num(), k = omp_get_num_threads();
            size_t a = n * id / k / 4 * 4, b = id == k - 1 ? n : n * (id + 1) / k / 4 * 4;
#if LF_MEMBW_X86
            if (avx2)
                total += sum_avx2(buf + a, b - a, pf);
            else
#endif
                total += sum_scalar(buf + a, b - a, pf);
        }
        t[p] = lf_now_ms() - t0;
        if (t[p] < best[pf]) best[pf] = t[p];
        sink += total;
    }
    (void)sink;
    (void)avx2;
    qsort(t, (size_t)passes, sizeof *t, cmp_double);
    out->gbps = (double)bytes / (t[0] * 1e6);
    out->gbps_median = (double)bytes / (t[passes / 2] * 1e6);
    out->gbps_plain = (double)bytes / (best[0] * 1e6);
    out->gbps_prefetch = passes > 1 ? (double)bytes / (best[1] * 1e6) : 0;
    out->bytes = bytes;
    out->threads = nt;
    out->passes = passes;
    free(t);
    free(buf);
    return 0;
}
