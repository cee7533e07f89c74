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

/* One case's host and device buffers. */
typedef struct kbufs {
    size_t kv_n;
    int64_t kv_entry; /* K elements of one sequence */
    uint16_t *hq, *hk, *hv;
    int32_t *hpos, hcur[8], hnext[8], hrow[8], hslot[8];
    float *hscore, *hacc;
    void *dq, *dk, *dv, *dout, *dws;
    int32_t *dpos, *dcur, *dnext, *drow, *dslot;
    float *dscore, *dacc;
    size_t ws_bytes;
} kbufs;

static void kbufs_free(kbufs *b) {
    cudaFree(b->dq);
    cudaFree(b->dk);
    cudaFree(b->dv);
    cudaFree(b->dout);
    cudaFree(b->dws);
    cudaFree(b->dpos);
    cudaFree(b->dcur);
    cudaFree(b->dnext);
    cudaFree(b->drow);
    cudaFree(b->dslot);
    cudaFree(b->dscore);
    cudaFree(b->dacc);
    free(b->hq);
    free(b->hk);
    free(b->hv);
    free(b->hpos);
    free(b->hscore);
    free(b->hacc);
}

/* Random keys of widely different norms, values, queries, positions with
 * empty slots, and the slot of each sequence's decode-style store: 0, or
 * -1 out of memory (counted). */
static int host_fill(const kcase *c, kbufs *b) {
    const int B = c->B, H = c->H, Hkv = c->Hkv, D = c->D, cap = c->cap;
    b->kv_n = (size_t)B * Hkv * cap * D;
    b->kv_entry = (int64_t)Hkv * cap * D;
    const size_t kv_n = b->kv_n;
    b->hq = malloc(sizeof(uint16_t) * B * H * D);
    b->hk = malloc(sizeof(uint16_t) * kv_n);
    b->hv = malloc(sizeof(uint16_t) * kv_n);
    b->hpos = malloc(sizeof(int32_t) * B * cap);
    b->hscore = malloc(sizeof(float) * B * cap);
    b->hacc = malloc(sizeof(float) * B * cap);
    if (!b->hq || !b->hk || !b->hv || !b->hpos || !b->hscore || !b->hacc) {
        CHECK(0, "out of host memory");
        return -1;
    }
    for (size_t i = 0; i < kv_n; i += (size_t)D) { /* rows of widely different norms */
        const double sc = 0.2 + 3.0 * urand01();
        for (int d = 0; d < D; d++) b->hk[i + d] = lf_f32_to_bf16((float)((2 * urand01() - 1) * sc));
    }
    for (size_t i = 0; i < kv_n; i++) b->hv[i] = lf_f32_to_bf16((float)(2 * urand01() - 1));
    for (int i = 0; i < B * H * D; i++) b->hq[i] = lf_f32_to_bf16((float)(2 * urand01() - 1));
    for (int s = 0; s < B; s++) {
        int maxp = 0;
        for (int i = 0; i < cap; i++) {
            const bool empty = urand01() < c->empty_frac;
            b->hpos[s * cap + i] = empty ? -1 : 2 * i + 1;
            if (!empty) maxp = 2 * i + 1;
        }
        b->hcur[s] = maxp;
        b->hrow[s] = s;
        b->hslot[s] = (int32_t)(urand01() * cap); /* the decode-style store: one slot per sequence */
    }
    return 0;
}

/* The device buffers with the case's inputs and an initialised workspace:
 * 0, or -1 (counted). */
static int dev_upload(const kcase *c, const lf_cuda_attn_desc *desc, kbufs *b) {
    const int B = c->B, H = c->H, D = c->D, cap = c->cap;
    const size_t kv_n = b->kv_n;
    lf_error err;
    if (lf_cuda_attn_workspace_bytes(desc, &b->ws_bytes, &err)) {
        CHECK(0, "workspace_bytes: %s", err.msg);
        return -1;
    }
    CUDA_OK(cudaMalloc(&b->dq, sizeof(uint16_t) * B * H * D));
    CUDA_OK(cudaMalloc(&b->dk, sizeof(uint16_t) * kv_n));
    CUDA_OK(cudaMalloc(&b->dv, sizeof(uint16_t) * kv_n));
    CUDA_OK(cudaMalloc(&b->dout, sizeof(uint16_t) * B * H * D));
    CUDA_OK(cudaMalloc(&b->dws, b->ws_bytes));
    CUDA_OK(cudaMalloc((void **)&b->dpos, sizeof(int32_t) * B * cap));
    CUDA_OK(cudaMalloc((void **)&b->dcur, sizeof(int32_t) * B));
    CUDA_OK(cudaMalloc((void **)&b->dnext, sizeof(int32_t) * B));
    CUDA_OK(cudaMalloc((void **)&b->drow, sizeof(int32_t) * B));
    CUDA_OK(cudaMalloc((void **)&b->dslot, sizeof(int32_t) * B));
    CUDA_OK(cudaMalloc((void **)&b->dscore, sizeof(float) * B * cap));
    CUDA_OK(cudaMalloc((void **)&b->dacc, sizeof(float) * B * cap));
    CUDA_OK(cudaMemcpy(b->dq, b->hq, sizeof(uint16_t) * B * H * D, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(b->dk, b->hk, sizeof(uint16_t) * kv_n, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(b->dv, b->hv, sizeof(uint16_t) * kv_n, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(b->dpos, b->hpos, sizeof(int32_t) * B * cap, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(b->dcur, b->hcur, sizeof(int32_t) * B, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(b->drow, b->hrow, sizeof(int32_t) * B, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(b->dslot, b->hslot, sizeof(int32_t) * B, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemset(b->dacc, 0, sizeof(float) * B * cap));
    if (lf_cuda_attn_workspace_init(b->dws, b->ws_bytes, NULL, &err)) {
        CHECK(0, "workspace_init: %s", err.msg);
        return -1;
    }
    return 0;
done:
    return -1;
}

/* Prefill-style: the stored value of every slot of each sequence (one call
 * per entry), against the reference: 0, or -1 when the call failed. */
static int check_prefill_stat(const lf_policy_desc *pd, const kcase *c, kbufs *b) {
    const int B = c->B, Hkv = c->Hkv, D = c->D, cap = c->cap;
    lf_error err;
    for (int s = 0; s < B; s++)
        if (lf_cuda_slot_stat(pd->slot_stat, (const uint16_t *)b->dk + s * b->kv_entry, LF_DTYPE_BF16, 0,
                              (int64_t)cap * D, Hkv, D, NULL, NULL, cap, b->dacc + (size_t)s * cap, 0, NULL, &err)) {
            CHECK(0, "slot_stat (prefill): %s", err.msg);
            return -1;
        }
    CUDA_OK(cudaMemcpy(b->hacc, b->dacc, sizeof(float) * B * cap, cudaMemcpyDeviceToHost));
    for (int s = 0; s < B; s++)
        for (int i = 0; i < cap; i++) {
            const double want = ref_score(b->hk, c, s, i), got = b->hacc[s * cap + i];
            CHECK(fabs(got - want) <= 1e-5 * fabs(want) + 1e-6, "stored score seq %d slot %d: %.9g, reference %.9g",
                  s, i, got, want);
        }
    return 0;
done:
    return -1;
}

/* Decode-style: a new key in one slot per sequence, stat by (row -> entry ->
 * slot): 0, or -1 (counted). */
static int store_decode_keys(const lf_policy_desc *pd, const kcase *c, kbufs *b) {
    const int B = c->B, Hkv = c->Hkv, D = c->D, cap = c->cap;
    const int64_t kv_entry = b->kv_entry;
    lf_error err;
    for (int s = 0; s < B; s++)
        for (int h = 0; h < Hkv; h++)
            for (int d = 0; d < D; d++)
                b->hk[s * kv_entry + ((size_t)h * cap + b->hslot[s]) * D + d] = lf_f32_to_bf16((float)(5 * urand01()));
    CUDA_OK(cudaMemcpy(b->dk, b->hk, sizeof(uint16_t) * b->kv_n, cudaMemcpyHostToDevice));
    if (lf_cuda_slot_stat(pd->slot_stat, b->dk, LF_DTYPE_BF16, kv_entry, (int64_t)cap * D, Hkv, D, b->drow, b->dslot,
                          B, b->dacc, cap, NULL, &err)) {
        CHECK(0, "slot_stat (decode): %s", err.msg);
        return -1;
    }
    return 0;
done:
    return -1;
}

/* The fused kernel in the descriptor's mode, its scores, stored values and
 * chosen slot read back: 0, or -1 (counted). */
static int run_kernel(const kcase *c, const lf_cuda_attn_desc *desc, kbufs *b) {
    const int B = c->B, cap = c->cap;
    lf_error err;
    lf_cuda_attn_args a;
    memset(&a, 0, sizeof a);
    a.q = b->dq;
    a.k = b->dk;
    a.v = b->dv;
    a.kv_seq_stride = b->kv_entry;
    a.pos = b->dpos;
    a.slot_seq_stride = cap;
    a.out = b->dout;
    a.score = b->dscore;
    a.acc = b->dacc;
    a.next_slot = b->dnext;
    a.cur_pos = b->dcur;
    a.sinks = c->sinks;
    a.recent = c->recent;
    a.workspace = b->dws;
    a.workspace_bytes = b->ws_bytes;
    if (lf_cuda_attn_decode(desc, &a, &err)) {
        CHECK(0, "attn_decode: %s", err.msg);
        return -1;
    }
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(b->hscore, b->dscore, sizeof(float) * B * cap, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(b->hacc, b->dacc, sizeof(float) * B * cap, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(b->hnext, b->dnext, sizeof(int32_t) * B, cudaMemcpyDeviceToHost));
    return 0;
done:
    return -1;
}

/* The kernel's scores (empty slots -inf), the stored values it left alone,
 * and its chosen slot against the reference, per sequence. */
static void check_kernel(const kcase *c, const kbufs *b) {
    const int B = c->B, cap = c->cap;
    for (int s = 0; s < B; s++) {
        int want = -1, first_empty = -1;
        double bs = INFINITY;
        for (int i = 0; i < cap; i++) {
            const int p = b->hpos[s * cap + i];
            const double r = p < 0 ? -INFINITY : ref_score(b->hk, c, s, i), got = b->hscore[s * cap + i];
            if (p < 0) {
                CHECK(isinf(got) && got < 0, "seq %d empty slot %d scores %g, not -inf", s, i, got);
                if (first_empty < 0) first_empty = i;
                continue;
            }
            CHECK(fabs(got - r) <= 1e-5 * fabs(r) + 1e-6, "seq %d slot %d score %.9g, reference %.9g", s, i, got, r);
            CHECK(b->hacc[s * cap + i] == (float)got, "seq %d slot %d: the stored value changed (%g -> %g)", s, i,
                  got, b->hacc[s * cap + i]);
            const bool prot = p < c->sinks || (c->recent > 0 && p > b->hcur[s] - c->recent);
            if (!prot && r < bs) {
                bs = r;
                want = i;
            }
        }
        if (first_empty >= 0) want = first_empty;
        if (b->hnext[s] != want) {
            const double g = ref_score(b->hk, c, s, b->hnext[s]);
            CHECK(first_empty < 0 && fabs(g - bs) <= 1e-5 * fabs(bs), "seq %d: next slot %d (%.9g), reference %d (%.9g)",
                  s, b->hnext[s], g, want, bs);
        }
    }
}

static void run_case(const lf_policy_desc *pd, const kcase *c) {
    kbufs b;
    memset(&b, 0, sizeof b);
    lf_cuda_attn_desc desc = {c->B, c->H, c->Hkv, c->D, c->cap, LF_DTYPE_BF16, LF_DTYPE_BF16, (int32_t)pd->score,
                              0, 0, 0, 0, 0};
    if (host_fill(c, &b) == 0 && dev_upload(c, &desc, &b) == 0 && check_prefill_stat(pd, c, &b) == 0 &&
        store_decode_keys(pd, c, &b) == 0 && run_kernel(c, &desc, &b) == 0)
        check_kernel(c, &b);
    kbufs_free(&b);
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

CUDA_TEST_MAIN1(test_knorm_gpu)
