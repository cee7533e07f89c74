/* The one-token k-quant kernels (src/cpu/kdecode.c) on random rows, one
 * thread: GB/s of weights from memory (COUNT matrices of ROWS x COLS, so
 * that nothing stays cached) and from L2 (one matrix read again and again),
 * and a plain AVX2 read of the same bytes with the kernels' prefetch for
 * scale. Timed with the thread's CPU time, best of REPS passes, so that
 * other jobs on a shared machine do not count (docs/cpu-quant.md).
 *
 * usage: bench_kdecode [q4_k|q5_k|q6_k] [ROWS] [COLS] [COUNT] [REPS]
 * (LF_QDOT=avx2|avx512vnni|scalar picks the level, as for the engine). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu/kdecode.h"
#include "cpu/simd.h"

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Random blocks with a small f16 super-scale (and min), so sums stay finite. */
static void fill(lf_dtype t, uint8_t *p, size_t bytes) {
    for (size_t i = 0; i < bytes; i++) p[i] = (uint8_t)rand();
    size_t sb = lf_dtype_row_bytes(t, 256);
    const uint8_t h[2] = {0x00, 0x20};
    for (size_t o = 0; o + sb <= bytes; o += sb) {
        if (t == LF_DTYPE_Q6_K) {
            memcpy(p + o + 208, h, 2);
        } else {
            memcpy(p + o, h, 2);
            memcpy(p + o + 2, h, 2);
        }
    }
}

#if LF_X86
static LF_TARGET_AVX2 unsigned plain_read(const uint8_t *p, size_t n) {
    __m256i acc = _mm256_setzero_si256();
    for (size_t i = 0; i + 64 <= n; i += 64) {
        _mm_prefetch((const char *)(p + i + LF_QM_PREFETCH), _MM_HINT_T0);
        acc = _mm256_xor_si256(acc, _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(const void *)(p + i)),
                                                     _mm256_loadu_si256((const __m256i *)(const void *)(p + i + 32))));
    }
    return (unsigned)_mm256_extract_epi32(acc, 0);
}
#endif

/* Best seconds per pass over `count` matrices of mat_bytes from buf. */
static double time_kernel(lf_dtype t, const uint8_t *buf, size_t mat_bytes, int count, int rows, int cols,
                          const lf_kact *a, lf_qdot_level level, int reps, float *y) {
    size_t row_bytes = lf_dtype_row_bytes(t, (size_t)cols);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = cpu_now();
        for (int m = 0; m < count; m++)
            for (int r0 = 0; r0 < rows; r0 += 16) /* the tasks of src/cpu/qmatmul.c */
                lf_kdot_rows(t, buf + (size_t)m * mat_bytes + (size_t)r0 * row_bytes, row_bytes,
                             rows - r0 < 16 ? rows - r0 : 16, cols / LF_QK, a, level, y + r0);
        double dt = cpu_now() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

int main(int argc, char **argv) {
    const char *ty = argc > 1 ? argv[1] : "q4_k";
    lf_dtype t = !strcmp(ty, "q6_k") ? LF_DTYPE_Q6_K : !strcmp(ty, "q5_k") ? LF_DTYPE_Q5_K : LF_DTYPE_Q4_K;
    int rows = argc > 2 ? atoi(argv[2]) : 3072, cols = argc > 3 ? atoi(argv[3]) : 1024;
    int count = argc > 4 ? atoi(argv[4]) : 100, reps = argc > 5 ? atoi(argv[5]) : 5;
    if (rows < 1 || cols < 256 || cols % 256 || count < 1 || reps < 1) {
        fprintf(stderr, "bench_kdecode: need ROWS >= 1, COLS a multiple of 256, COUNT and REPS >= 1\n");
        return 1;
    }
    size_t mat_bytes = lf_dtype_row_bytes(t, (size_t)cols) * (size_t)rows;
    uint8_t *buf = malloc(mat_bytes * (size_t)count);
    float *x = malloc((size_t)cols * sizeof *x), *y = malloc((size_t)rows * sizeof *y);
    lf_qblock *xq = malloc((size_t)(cols / LF_QK) * sizeof *xq);
    void *mem = malloc(lf_kact_bytes(cols / LF_QK));
    if (!buf || !x || !y || !xq || !mem) {
        fprintf(stderr, "bench_kdecode: out of memory for %zu bytes of matrices\n", mat_bytes * (size_t)count);
        return 1;
    }
    fill(t, buf, mat_bytes * (size_t)count);
    for (int c = 0; c < cols; c++) x[c] = (float)rand() / (float)RAND_MAX - 0.5f;
    lf_quantize_row(x, cols, xq);
    lf_kact a;
    lf_kact_init(&a, xq, cols / LF_QK, mem);
    lf_qdot_level level = lf_qdot_level_get();
    double mem_s = time_kernel(t, buf, mat_bytes, count, rows, cols, &a, level, reps, y);
    double l2_s = time_kernel(t, buf, mat_bytes, 1, rows, cols, &a, level, reps * 20, y);
    double nsb = (double)rows * (cols / 256);
    printf("{\"type\":\"%s\",\"level\":\"%s\",\"rows\":%d,\"cols\":%d,\"count\":%d,\"memory_gbps\":%.2f,"
           "\"memory_ns_per_superblock\":%.2f,\"cached_gbps\":%.2f",
           ty, lf_qdot_level_name(level), rows, cols, count, (double)mat_bytes * count / mem_s / 1e9,
           mem_s * 1e9 / (nsb * count), (double)mat_bytes / l2_s / 1e9);
#if LF_X86
    double best = 1e30;
    unsigned sink = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = cpu_now();
        sink ^= plain_read(buf, mat_bytes * (size_t)count);
        double dt = cpu_now() - t0;
        if (dt < best) best = dt;
    }
    printf(",\"plain_read_gbps\":%.2f,\"sink\":%u", (double)mat_bytes * count / best / 1e9, sink & 1);
#endif
    printf(",\"y0\":%g}\n", (double)y[0]);
    free(mem);
    free(xq);
    free(y);
    free(x);
    free(buf);
    return 0;
}
