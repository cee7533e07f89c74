/* SnapKV's selection on the GPU (lf_cuda_snapkv_select, src/cuda/snapkv_select.cu)
 * against the CPU's lf_snapkv_select_from_sums (src/kv/snapkv.c) on the same
 * window sums: random sums, sums on a few levels (many pooled scores tie, so
 * the lower index must win), constant sums (every candidate ties), sparse
 * ones, and a long prompt; keep and sinks from the smallest selection (one
 * position) to almost all. The kept positions must be equal, element for
 * element. Bad arguments are refused as the CPU refuses them. Skips without
 * a GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cuda_runtime_api.h>

#include "cuda/cuda_kernels.h"
#include "kv/policy.h"

#include "cuda_test.h"

static uint64_t g_rng = 0x6a09e667f3bcc909ull;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 32);
}

enum { KIND_RANDOM, KIND_LEVELS, KIND_CONSTANT, KIND_SPARSE, N_KINDS };

static void make_sums(float *raw, int n, int kind) {
    for (int i = 0; i < n; i++) {
        switch (kind) {
        case KIND_RANDOM: raw[i] = (float)(rnd() >> 8) / 16777216.0f; break;
        case KIND_LEVELS: raw[i] = 0.25f * (float)(rnd() % 3); break;
        case KIND_CONSTANT: raw[i] = 1.0f; break;
        default: raw[i] = rnd() % 64 == 0 ? 1.0f : 0.0f; break;
        }
    }
}

/* One (n, keep, sinks, kind): the GPU's kept positions against the CPU's. */
static void run_case(int n, int keep, int sinks, int kind, float *d_raw, int32_t *d_kept) {
    float *raw = malloc(sizeof(float) * (size_t)n);
    int32_t *want = malloc(sizeof(int32_t) * (size_t)keep), *got = malloc(sizeof(int32_t) * (size_t)keep);
    lf_error err;
    if (!raw || !want || !got) {
        CHECK(0, "out of host memory");
        goto done;
    }
    make_sums(raw, n, kind);
    if (lf_snapkv_select_from_sums(raw, n, keep, sinks, want, &err)) {
        CHECK(0, "CPU selector (n %d keep %d sinks %d): %s", n, keep, sinks, err.msg);
        goto done;
    }
    CUDA_OK(cudaMemcpy(d_raw, raw, sizeof(float) * (size_t)n, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemset(d_kept, 0xff, sizeof(int32_t) * (size_t)keep));
    if (lf_cuda_snapkv_select(d_raw, n, keep, sinks, d_kept, NULL, &err)) {
        CHECK(0, "GPU selector (n %d keep %d sinks %d): %s", n, keep, sinks, err.msg);
        goto done;
    }
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(got, d_kept, sizeof(int32_t) * (size_t)keep, cudaMemcpyDeviceToHost));
    for (int i = 0; i < keep; i++)
        if (got[i] != want[i]) {
            CHECK(0, "n %d keep %d sinks %d kind %d: kept[%d] = %d on the GPU, %d on the CPU", n, keep, sinks, kind, i,
                  got[i], want[i]);
            break;
        }
done:
    free(raw);
    free(want);
    free(got);
}

static void test_select_matches_cpu(void **state) {
    (void)state;
    if (!g_have_gpu) SKIP_TEST();
    const int f0 = g_failures;
    const int max_n = 40000, w = LF_SNAPKV_WINDOW;
    float *d_raw = NULL;
    int32_t *d_kept = NULL;
    int cases = 0;
    CUDA_OK(cudaMalloc((void **)&d_raw, sizeof(float) * max_n));
    CUDA_OK(cudaMalloc((void **)&d_kept, sizeof(int32_t) * max_n));
    const int ns[] = {w + 2, w + 3, 40, 64, 100, 257, 1000, 3001, 40000};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++) {
        const int n = ns[a];
        for (int kind = 0; kind < N_KINDS; kind++)
            for (int r = 0; r < 6; r++) {
                /* keep in w+1 .. n-1, sinks in 0 .. keep-w-1; the extremes first */
                int keep = r == 0 ? w + 1 : r == 1 ? n - 1 : w + 1 + (int)(rnd() % (uint32_t)(n - 1 - w));
                int sinks = r == 2 ? keep - w - 1 : r == 3 ? 0 : (int)(rnd() % (uint32_t)(keep - w));
                run_case(n, keep, sinks, kind, d_raw, d_kept);
                cases++;
            }
    }
    /* refused as the CPU refuses: keep >= n, nothing beside the window, no room for the sinks */
    lf_error err;
    CHECK(lf_cuda_snapkv_select(d_raw, 100, 100, 0, d_kept, NULL, &err) == -1, "keep = n accepted");
    CHECK(lf_cuda_snapkv_select(d_raw, 100, w, 0, d_kept, NULL, &err) == -1, "keep = window accepted");
    CHECK(lf_cuda_snapkv_select(d_raw, 100, w + 4, 4, d_kept, NULL, &err) == -1, "no room for the sinks accepted");
    printf("[ snapkv   ] %d cases, %d failure(s)\n", cases, g_failures - f0);
done:
    cudaFree(d_raw);
    cudaFree(d_kept);
    END_TEST(f0);
}

CUDA_TEST_MAIN1(test_select_matches_cpu)
