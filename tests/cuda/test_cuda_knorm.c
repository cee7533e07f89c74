/* KNorm (src/kv/policies/knorm.c) on the GPU, through its descriptor: the
 * stored per-slot value (lf_cuda_slot_stat with the descriptor's slot_stat,
 * after a prefill-style fill of every slot and after a decode-style store of
 * one slot per sequence) and the fused decode kernel in the descriptor's
 * score mode (its scores and chosen slot), against a double-precision
 * reference written here from the paper's rule on the same bf16 keys:
 * score_i = -mean_kvh ||k_{kvh,i}||_2, empty slots -inf (used first), the
 * victim is the unprotected slot with the smallest score (lowest index on
 * ties; sinks and the recent window protected). Skips without a GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cuda_runtime_api.h>

#include "core/fp.h"
#include "cuda/cuda_attention.h"
#include "cuda/cuda_kernels.h"
#include "kv/policy.h"

#include "cuda_test.h"

static uint64_t g_rng = 0x2545f4914f6cdd1dull;
static double urand01(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / 9007199254740992.0;
}

typedef struct kcase {
    int B, H, Hkv, D, cap;
    double empty_frac;
    int sinks, recent;
} kcase;

/* -mean_kvh ||k||_2 of slot i of sequence s, in double, from the bf16 keys */
static double ref_score(const uint16_t *hk, const kcase *c, int s, int i) {
    double t = 0;
    for (int h = 0; h < c->Hkv; h++) {
        const uint16_t *k = hk + (size_t)s * c->Hkv * c->cap * c->D + ((size_t)h * c->cap + i) * c->D;
        double n2 = 0;
        for (int d = 0; d < c->D; d++) {
            const double x = lf_bf16_to_f32(k[d]);
            n2 += x * x;
        }
        t += sqrt(n2);
    }
    return -t / c->Hkv;
}

static void run_case(const lf_policy_desc *pd, const kcase *c) {
    const int B = c->B, H = c->H, Hkv = c->Hkv, D = c->D, cap = c->cap;
    const size_t kv_n = (size_t)B * Hkv * cap * D;
    uint16_t *hq = malloc(sizeof(uint16_t) * B * H * D), *hk = malloc(sizeof(uint16_t) * kv_n),
             *hv = malloc(sizeof(uint16_t) * kv_n);
    int32_t *hpos = malloc(sizeof(int32_t) * B * cap), hcur[8], hnext[8], hrow[8], hslot[8];
    float *hscore = malloc(sizeof(float) * B * cap), *hacc = malloc(sizeof(float) * B * cap);
    void *dq = NULL, *dk = NULL, *dv = NULL, *dout = NULL, *dws = NULL;
    int32_t *dpos = NULL, *dcur = NULL, *dnext = NULL, *drow = NULL, *dslot = NULL;
    float *dscore = NULL, *dacc = NULL;
    lf_error err;
    for (size_t i = 0; i < kv_n; i += (size_t)D) { /* rows of widely different norms */
        const double sc = 0.2 + 3.0 * urand01();
        for (int d = 0; d < D; d++) hk[i + d] = lf_f32_to_bf16((float)((2 * urand01() - 1) * sc));
    }
    for (size_t i = 0; i < kv_n; i++) hv[i] = lf_f32_to_bf16((float)(2 * urand01() - 1));
    for (int i = 0; i < B * H * D; i++) hq[i] = lf_f32_to_bf16((float)(2 * urand01() - 1));
    for (int s = 0; s < B; s++) {
        int maxp = 0;
        for (int i = 0; i < cap; i++) {
            const bool empty = urand01() < c->empty_frac;
            hpos[s * cap + i] = empty ? -1 : 2 * i + 1;
            if (!empty) maxp = 2 * i + 1;
        }
        hcur[s] = maxp;
        hrow[s] = s;
        hslot[s] = (int32_t)(urand01() * cap); /* the decode-style store: one slot per sequence */
    }
    lf_cuda_attn_desc desc = {B, H, Hkv, D, cap, LF_DTYPE_BF16, LF_DTYPE_BF16, (int32_t)pd->score, 0, 0, 0, 0, 0};
    size_t ws_bytes = 0;
    if (lf_cuda_attn_workspace_bytes(&desc, &ws_bytes, &err)) {
        CHECK(0, "workspace_bytes: %s", err.msg);
        goto done;
    }
    CUDA_OK(cudaMalloc(&dq, sizeof(uint16_t) * B * H * D));
    CUDA_OK(cudaMalloc(&dk, sizeof(uint16_t) * kv_n));
    CUDA_OK(cudaMalloc(&dv, sizeof(uint16_t) * kv_n));
    CUDA_OK(cudaMalloc(&dout, sizeof(uint16_t) * B * H * D));
    CUDA_OK(cudaMalloc(&dws, ws_bytes));
    CUDA_OK(cudaMalloc((void **)&dpos, sizeof(int32_t) * B * cap));
    CUDA_OK(cudaMalloc((void **)&dcur, sizeof(int32_t) * B));
    CUDA_OK(cudaMalloc((void **)&dnext, sizeof(int32_t) * B));
    CUDA_OK(cudaMalloc((void **)&drow, sizeof(int32_t) * B));
    CUDA_OK(cudaMalloc((void **)&dslot, sizeof(int32_t) * B));
    CUDA_OK(cudaMalloc((void **)&dscore, sizeof(float) * B * cap));
    CUDA_OK(cudaMalloc((void **)&dacc, sizeof(float) * B * cap));
    CUDA_OK(cudaMemcpy(dq, hq, sizeof(uint16_t) * B * H * D, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dk, hk, sizeof(uint16_t) * kv_n, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dv, hv, sizeof(uint16_t) * kv_n, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dpos, hpos, sizeof(int32_t) * B * cap, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dcur, hcur, sizeof(int32_t) * B, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(drow, hrow, sizeof(int32_t) * B, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dslot, hslot, sizeof(int32_t) * B, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemset(dacc, 0, sizeof(float) * B * cap));
    if (lf_cuda_attn_workspace_init(dws, ws_bytes, NULL, &err)) {
        CHECK(0, "workspace_init: %s", err.msg);
        goto done;
    }
    /* prefill-style: every slot of each sequence (one call per entry) */
    const int64_t kv_entry = (int64_t)Hkv * cap * D;
    for (int s = 0; s < B; s++)
        if (lf_cuda_slot_stat(pd->slot_stat, (const uint16_t *)dk + s * kv_entry, LF_DTYPE_BF16, 0,
                              (int64_t)cap * D, Hkv, D, NULL, NULL, cap, dacc + (size_t)s * cap, 0, NULL, &err)) {
            CHECK(0, "slot_stat (prefill): %s", err.msg);
            goto done;
        }
    CUDA_OK(cudaMemcpy(hacc, dacc, sizeof(float) * B * cap, cudaMemcpyDeviceToHost));
    for (int s = 0; s < B; s++)
        for (int i = 0; i < cap; i++) {
            const double want = ref_score(hk, c, s, i), got = hacc[s * cap + i];
            CHECK(fabs(got - want) <= 1e-5 * fabs(want) + 1e-6, "stored score seq %d slot %d: %.9g, reference %.9g",
                  s, i, got, want);
        }
    /* decode-style: a new key in one slot per sequence, stat by (row -> entry -> slot) */
    for (int s = 0; s < B; s++)
        for (int h = 0; h < Hkv; h++)
            for (int d = 0; d < D; d++)
                hk[s * kv_entry + ((size_t)h * cap + hslot[s]) * D + d] = lf_f32_to_bf16((float)(5 * urand01()));
    CUDA_OK(cudaMemcpy(dk, hk, sizeof(uint16_t) * kv_n, cudaMemcpyHostToDevice));
    if (lf_cuda_slot_stat(pd->slot_stat, dk, LF_DTYPE_BF16, kv_entry, (int64_t)cap * D, Hkv, D, drow, dslot, B, dacc,
                          cap, NULL, &err)) {
        CHECK(0, "slot_stat (decode): %s", err.msg);
        goto done;
    }
    /* the fused kernel in the descriptor's mode */
    lf_cuda_attn_args a;
    memset(&a, 0, sizeof a);
    a.q = dq;
    a.k = dk;
    a.v = dv;
    a.kv_seq_stride = kv_entry;
    a.pos = dpos;
    a.slot_seq_stride = cap;
    a.out = dout;
    a.score = dscore;
    a.acc = dacc;
    a.next_slot = dnext;
    a.cur_pos = dcur;
    a.sinks = c->sinks;
    a.recent = c->recent;
    a.workspace = dws;
    a.workspace_bytes = ws_bytes;
    if (lf_cuda_attn_decode(&desc, &a, &err)) {
        CHECK(0, "attn_decode: %s", err.msg);
        goto done;
    }
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(hscore, dscore, sizeof(float) * B * cap, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(hacc, dacc, sizeof(float) * B * cap, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(hnext, dnext, sizeof(int32_t) * B, cudaMemcpyDeviceToHost));
    for (int s = 0; s < B; s++) {
        int want = -1, first_empty = -1;
        double bs = INFINITY;
        for (int i = 0; i < cap; i++) {
            const int p = hpos[s * cap + i];
            const double r = p < 0 ? -INFINITY : ref_score(hk, c, s, i), got = hscore[s * cap + i];
            if (p < 0) {
                CHECK(isinf(got) && got < 0, "seq %d empty slot %d scores %g, not -inf", s, i, got);
                if (first_empty < 0) first_empty = i;
                continue;
            }
            CHECK(fabs(got - r) <= 1e-5 * fabs(r) + 1e-6, "seq %d slot %d score %.9g, reference %.9g", s, i, got, r);
            CHECK(hacc[s * cap + i] == (float)got, "seq %d slot %d: the stored value changed (%g -> %g)", s, i,
                  got, hacc[s * cap + i]);
            const bool prot = p < c->sinks || (c->recent > 0 && p > hcur[s] - c->recent);
            if (!prot && r < bs) {
                bs = r;
                want = i;
            }
        }
        if (first_empty >= 0) want = first_empty;
        if (hnext[s] != want) {
            const double g = ref_score(hk, c, s, hnext[s]);
            CHECK(first_empty < 0 && fabs(g - bs) <= 1e-5 * fabs(bs), "seq %d: next slot %d (%.9g), reference %d (%.9g)",
                  s, hnext[s], g, want, bs);
        }
    }
done:
    cudaFree(dq);
    cudaFree(dk);
    cudaFree(dv);
    cudaFree(dout);
    cudaFree(dws);
    cudaFree(dpos);
    cudaFree(dcur);
    cudaFree(dnext);
    cudaFree(drow);
    cudaFree(dslot);
    cudaFree(dscore);
    cudaFree(dacc);
    free(hq);
    free(hk);
    free(hv);
    free(hpos);
    free(hscore);
    free(hacc);
}

static void test_knorm_gpu(void **state) {
    (void)state;
    if (!g_have_gpu) SKIP_TEST();
    const int f0 = g_failures;
    lf_policy_kind kind;
    CHECK(lf_policy_from_name("knorm", &kind) == 0, "knorm is not in the registry");
    if (g_failures != f0) {
        END_TEST(f0);
        return;
    }
    const lf_policy_desc *pd = lf_policy_get(kind);
    const kcase cases[] = {
        {3, 8, 2, 128, 300, 0.0, 0, 0},   {2, 16, 8, 128, 1000, 0.0, 4, 16}, {4, 8, 8, 64, 257, 0.0, 0, 0},
        {2, 32, 8, 128, 3200, 0.0, 0, 0}, {3, 8, 2, 64, 200, 0.05, 2, 4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(pd, &cases[i]);
    printf("[ knorm    ] %zu cases, %d failure(s)\n", sizeof cases / sizeof cases[0], g_failures - f0);
    END_TEST(f0);
}

int main(void) {
    int n = 0;
    g_have_gpu = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
    if (!g_have_gpu) printf("no CUDA device: skipped\n");
#ifdef LF_TEST_STANDALONE
    test_knorm_gpu(NULL);
    return g_failures ? 1 : 0;
#else
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_knorm_gpu)};
    return cmocka_run_group_tests(tests, NULL, NULL);
#endif
}
