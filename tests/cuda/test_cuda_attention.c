/* GPU test of the fused decode kernel (src/cuda/attention.cu) against a
 * straightforward double-precision reference written here: attention output,
 * per-slot scores of every mode, the H2O/VATP accumulator, the chosen slot,
 * masking of empty slots (filled with NaN garbage), pools with seq_index,
 * sinks/recent protection, forced splits, and bad descriptors.
 *
 * Built by CMake as a cmocka test (label cuda), or standalone without cmocka
 * by tests/cuda/build_standalone.sh (-DLF_TEST_STANDALONE). Skips (exit 0)
 * when there is no CUDA device. LF_CUDA_TEST_SMALL=1 runs the small cases
 * only (for compute-sanitizer). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cuda_runtime_api.h>

#include "core/fp.h"
#include "cuda/cuda_attention.h"
#include "kv/dtype.h"

#include "cuda_test.h"

static int g_launches = 1; /* each suite runs with one launch, then with two */

/* ---- random numbers ------------------------------------------------------ */
static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint64_t rng_u64(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}
static double rng_uniform(void) { return (double)(rng_u64() >> 11) / 9007199254740992.0; }
static double rng_normal(void) {
    double u = rng_uniform(), v = rng_uniform();
    if (u < 1e-300) u = 1e-300;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static uint16_t to16(float x, lf_dtype t) { return t == LF_DTYPE_BF16 ? lf_f32_to_bf16(x) : lf_f32_to_f16(x); }
static double from16(uint16_t h, lf_dtype t) { return t == LF_DTYPE_BF16 ? lf_bf16_to_f32(h) : lf_f16_to_f32(h); }

/* ---- one case ------------------------------------------------------------ */
typedef struct tcase {
    const char *name;
    int B, H, Hkv, D, cap;
    lf_dtype dtype, out_dtype;
    int mode, n_split, e_smem, l2_hints, launches; /* launches 0: the suite's current mode */
    double empty_frac; /* fraction of empty slots (NaN garbage in their K/V) */
    int pool;          /* use seq_index into a larger, padded pool */
    int sinks, recent; /* protection (recent uses cur_pos) */
    int steps;         /* launches in a row (H2O/VATP accumulate) */
    float scale;       /* 0 = default */
    double q_gain;     /* logit spread */
    int all_empty_seq; /* make sequence 0 entirely empty */
    int kv_fp8;        /* K/V stored as FP8 rows by the CPU's lf_kv_row_store (outlier rows included);
                          the reference reads the dequantized values */
    int vnorm;         /* fp8: pass each V row's |v|_1 (v_norm) instead of letting the kernel sum it */
} tcase;

/* An FP8 test row: normal values, or (1 in 16 each) a row of zeros, one
 * huge element, every value beyond e4m3's range, tiny values. */
static void fp8_test_row(float *x, int D) {
    const int kind = (int)(rng_u64() % 16);
    for (int d = 0; d < D; d++) {
        double v = rng_normal();
        if (kind == 0) v = 0;
        else if (kind == 2) v *= 1000.0; /* |x| far beyond 448 */
        else if (kind == 3) v *= 1e-6;
        x[d] = (float)v;
    }
    if (kind == 1) x[rng_u64() % (unsigned)D] = 3e4f; /* one outlier sets the scale */
}

/* The value of K/V element i as the kernel must read it. */
#define KV(h16, hd, i) (c->kv_fp8 ? (double)(hd)[i] : from16((h16)[i], c->dtype))

static int run_case(const tcase *c) {
    const int fails0 = g_failures;
    const int B = c->B, H = c->H, Hkv = c->Hkv, D = c->D, cap = c->cap, G = H / Hkv;
    const int n_pool = c->pool ? B + 2 : B;
    const long kv_entry = (long)Hkv * cap * D + (c->pool ? (c->kv_fp8 ? D : 8 * 3) : 0); /* padded pool entries */
    const long slot_stride = cap + (c->pool ? 5 : 0);
    const size_t out_es = c->out_dtype == LF_DTYPE_F32 ? 4 : 2;
    const double scale = c->scale > 0 ? c->scale : 1.0 / sqrt((double)D);

    uint16_t *hq = malloc(sizeof(uint16_t) * B * H * D);
    uint16_t *hk = malloc(sizeof(uint16_t) * n_pool * kv_entry);
    uint16_t *hv = malloc(sizeof(uint16_t) * n_pool * kv_entry);
    int32_t *hpos = malloc(sizeof(int32_t) * n_pool * slot_stride);
    int32_t *hidx = malloc(sizeof(int32_t) * B);
    int32_t *hcur = malloc(sizeof(int32_t) * B);
    float *hacc = calloc((size_t)n_pool * slot_stride, sizeof(float));
    double *racc = calloc((size_t)n_pool * slot_stride, sizeof(double));
    unsigned char *hout = malloc(out_es * B * H * D);
    float *hscore = malloc(sizeof(float) * n_pool * slot_stride);
    int32_t *hnext = malloc(sizeof(int32_t) * n_pool); /* next_slot is indexed by pool entry */
    double *ref_out = malloc(sizeof(double) * B * H * D);
    double *ref_score = malloc(sizeof(double) * cap);
    double *alpha = malloc(sizeof(double) * H * cap);
    double *vn = malloc(sizeof(double) * Hkv * cap);
    /* fp8: codes, row scales, and the values they stand for */
    const long n_rows = c->kv_fp8 ? (long)n_pool * kv_entry / D : 0;
    uint8_t *hk8 = malloc(c->kv_fp8 ? (size_t)n_pool * kv_entry : 1), *hv8 = malloc(c->kv_fp8 ? (size_t)n_pool * kv_entry : 1);
    float *hks = malloc(sizeof(float) * (n_rows + 1)), *hvs = malloc(sizeof(float) * (n_rows + 1));
    float *kd = malloc(sizeof(float) * (c->kv_fp8 ? (size_t)n_pool * kv_entry : 1));
    float *hvn = malloc(sizeof(float) * (n_rows + 1)), *dvn = NULL;
    float *vd = malloc(sizeof(float) * (c->kv_fp8 ? (size_t)n_pool * kv_entry : 1));
    void *dq = NULL, *dk = NULL, *dv = NULL, *dout = NULL, *dws = NULL, *dks = NULL, *dvs = NULL;
    int32_t *dpos = NULL, *didx = NULL, *dnext = NULL, *dcur = NULL;
    float *dscore = NULL, *dacc = NULL;
    lf_error err;
    size_t ws_bytes = 0;

    /* pool entries: sequence s uses entry idx[s] (reversed order when pooled) */
    for (int s = 0; s < B; s++) hidx[s] = c->pool ? n_pool - 1 - s : s;
    for (long i = 0; i < (long)n_pool * kv_entry; i++) {
        hk[i] = to16((float)rng_normal(), c->dtype);
        hv[i] = to16((float)rng_normal(), c->dtype);
    }
    for (long r = 0; r < n_rows; r++) { /* fp8: rows written as the CPU cache writes them */
        float x[128];
        fp8_test_row(x, D);
        lf_kv_row_store(LF_KV_FP8, x, D, hk8 + r * D, &hks[r]);
        lf_kv_row_load(LF_KV_FP8, hk8 + r * D, hks[r], D, kd + r * D);
        fp8_test_row(x, D);
        lf_kv_row_store(LF_KV_FP8, x, D, hv8 + r * D, &hvs[r]);
        lf_kv_row_load(LF_KV_FP8, hv8 + r * D, hvs[r], D, vd + r * D);
        double l1 = 0;
        for (int d = 0; d < D; d++) l1 += fabs(vd[r * D + d]);
        hvn[r] = (float)l1;
    }
    for (long i = 0; i < (long)n_pool * slot_stride; i++) hpos[i] = -1;
    for (int s = 0; s < B; s++) {
        const long e = hidx[s];
        int maxp = -1;
        for (int i = 0; i < cap; i++) {
            const bool empty = (c->all_empty_seq && s == 0) || rng_uniform() < c->empty_frac;
            if (empty) {
                hpos[e * slot_stride + i] = -1;
                for (int h = 0; h < Hkv; h++)
                    for (int d = 0; d < D; d++) {
                        const long o = e * kv_entry + ((long)h * cap + i) * D + d;
                        hk[o] = 0x7fff; /* NaN in both f16 and bf16 */
                        hv[o] = (uint16_t)(d & 1 ? 0xffff : 0x7c00); /* NaN / Inf (f16) */
                        if (c->kv_fp8) { /* NaN codes, NaN scales */
                            hk8[o] = hv8[o] = 0x7f;
                            hks[o / D] = hvs[o / D] = NAN;
                        }
                    }
            } else {
                hpos[e * slot_stride + i] = i * 3 + 1;
                if (i * 3 + 1 > maxp) maxp = i * 3 + 1;
            }
        }
        hcur[s] = maxp;
    }
    for (int i = 0; i < B * H * D; i++) hq[i] = to16((float)(rng_normal() * c->q_gain), c->dtype);
    if (c->mode == LF_SCORE_ACC || c->mode == LF_SCORE_ACC_VNORM)
        for (int s = 0; s < B; s++)
            for (int i = 0; i < cap; i++) {
                const long o = (long)hidx[s] * slot_stride + i;
                const float a = hpos[o] >= 0 ? (float)rng_uniform() * 0.5f : 0.f;
                hacc[o] = a;
                racc[o] = a;
            }

    lf_cuda_attn_desc desc = {B, H, Hkv, D, cap, c->dtype, c->out_dtype, c->mode, c->n_split, c->e_smem,
                              c->l2_hints, c->launches ? c->launches : g_launches, c->kv_fp8};
    if (lf_cuda_attn_workspace_bytes(&desc, &ws_bytes, &err)) {
        CHECK(0, "%s: workspace_bytes: %s", c->name, err.msg);
        goto done;
    }
    if (c->kv_fp8) {
        CUDA_OK(cudaMalloc(&dks, sizeof(float) * n_rows));
        CUDA_OK(cudaMalloc(&dvs, sizeof(float) * n_rows));
        CUDA_OK(cudaMemcpy(dks, hks, sizeof(float) * n_rows, cudaMemcpyHostToDevice));
        CUDA_OK(cudaMemcpy(dvs, hvs, sizeof(float) * n_rows, cudaMemcpyHostToDevice));
        if (c->vnorm) { /* (empty slots: NaN scales, so NaN norms, as rope_store would store) */
            for (long r = 0; r < n_rows; r++)
                if (isnan(hvs[r])) hvn[r] = NAN;
            CUDA_OK(cudaMalloc((void **)&dvn, sizeof(float) * n_rows));
            CUDA_OK(cudaMemcpy(dvn, hvn, sizeof(float) * n_rows, cudaMemcpyHostToDevice));
        }
    }
    CUDA_OK(cudaMalloc(&dq, sizeof(uint16_t) * B * H * D));
    CUDA_OK(cudaMalloc(&dk, sizeof(uint16_t) * n_pool * kv_entry));
    CUDA_OK(cudaMalloc(&dv, sizeof(uint16_t) * n_pool * kv_entry));
    CUDA_OK(cudaMalloc((void **)&dpos, sizeof(int32_t) * n_pool * slot_stride));
    CUDA_OK(cudaMalloc((void **)&didx, sizeof(int32_t) * B));
    CUDA_OK(cudaMalloc((void **)&dcur, sizeof(int32_t) * B));
    CUDA_OK(cudaMalloc((void **)&dnext, sizeof(int32_t) * n_pool));
    CUDA_OK(cudaMalloc(&dout, out_es * B * H * D));
    CUDA_OK(cudaMalloc((void **)&dscore, sizeof(float) * n_pool * slot_stride));
    CUDA_OK(cudaMalloc((void **)&dacc, sizeof(float) * n_pool * slot_stride));
    CUDA_OK(cudaMalloc(&dws, ws_bytes));
    CUDA_OK(cudaMemcpy(dq, hq, sizeof(uint16_t) * B * H * D, cudaMemcpyHostToDevice));
    if (c->kv_fp8) {
        CUDA_OK(cudaMemcpy(dk, hk8, (size_t)n_pool * kv_entry, cudaMemcpyHostToDevice));
        CUDA_OK(cudaMemcpy(dv, hv8, (size_t)n_pool * kv_entry, cudaMemcpyHostToDevice));
    } else {
        CUDA_OK(cudaMemcpy(dk, hk, sizeof(uint16_t) * n_pool * kv_entry, cudaMemcpyHostToDevice));
        CUDA_OK(cudaMemcpy(dv, hv, sizeof(uint16_t) * n_pool * kv_entry, cudaMemcpyHostToDevice));
    }
    CUDA_OK(cudaMemcpy(dpos, hpos, sizeof(int32_t) * n_pool * slot_stride, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(didx, hidx, sizeof(int32_t) * B, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dcur, hcur, sizeof(int32_t) * B, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dacc, hacc, sizeof(float) * n_pool * slot_stride, cudaMemcpyHostToDevice));
    if (lf_cuda_attn_workspace_init(dws, ws_bytes, NULL, &err)) {
        CHECK(0, "%s: workspace_init: %s", c->name, err.msg);
        goto done;
    }

    lf_cuda_attn_args a;
    memset(&a, 0, sizeof a);
    a.q = dq; a.k = dk; a.v = dv;
    a.k_scale = dks; a.v_scale = dvs; a.v_norm = dvn;
    a.kv_seq_stride = kv_entry;
    a.pos = dpos;
    a.slot_seq_stride = slot_stride;
    a.seq_index = c->pool ? didx : NULL;
    a.out = dout;
    a.score = c->mode ? dscore : NULL;
    a.acc = dacc;
    a.next_slot = dnext;
    a.cur_pos = c->recent ? dcur : NULL;
    a.sinks = c->sinks;
    a.recent = c->recent;
    a.scale = c->scale;
    a.workspace = dws;
    a.workspace_bytes = ws_bytes;

    for (int step = 0; step < c->steps; step++) {
        /* poison every output */
        CUDA_OK(cudaMemset(dout, 0xff, out_es * B * H * D));
        CUDA_OK(cudaMemset(dscore, 0xff, sizeof(float) * n_pool * slot_stride));
        CUDA_OK(cudaMemset(dnext, 0xaa, sizeof(int32_t) * n_pool));
        if (lf_cuda_attn_decode(&desc, &a, &err)) {
            CHECK(0, "%s: decode: %s", c->name, err.msg);
            goto done;
        }
        CUDA_OK(cudaDeviceSynchronize());
        CUDA_OK(cudaMemcpy(hout, dout, out_es * B * H * D, cudaMemcpyDeviceToHost));
        CUDA_OK(cudaMemcpy(hscore, dscore, sizeof(float) * n_pool * slot_stride, cudaMemcpyDeviceToHost));
        CUDA_OK(cudaMemcpy(hnext, dnext, sizeof(int32_t) * n_pool, cudaMemcpyDeviceToHost));
        CUDA_OK(cudaMemcpy(hacc, dacc, sizeof(float) * n_pool * slot_stride, cudaMemcpyDeviceToHost));

        double num = 0, den = 0, lmax_all = 0;
        int bad_score = 0, bad_victim = 0, bad_acc = 0, unwritten = 0;
        for (int s = 0; s < B; s++) {
            const long e = hidx[s];
            const int32_t *pos = hpos + e * slot_stride;
            /* |v|_1 per KV head and slot */
            for (int h = 0; h < Hkv; h++)
                for (int i = 0; i < cap; i++) {
                    double n = 0;
                    if (pos[i] >= 0)
                        for (int d = 0; d < D; d++)
                            n += fabs(KV(hv, vd, e * kv_entry + ((long)h * cap + i) * D + d));
                    vn[h * cap + i] = n;
                }
            /* the kernel's logits are fp32: an error of a few ulp of the largest |logit| of the
             * sequence moves every probability of its heads by that much (relatively); with
             * K rows far beyond e4m3's range (fp8 cases) |logit| reaches ~1e4 */
            double lmax = 0;
            for (int h = 0; h < H; h++) {
                const int kh = h / G;
                double mx = -INFINITY;
                for (int i = 0; i < cap; i++) {
                    double sdot = -INFINITY;
                    if (pos[i] >= 0) {
                        sdot = 0;
                        for (int d = 0; d < D; d++)
                            sdot += from16(hq[((long)s * H + h) * D + d], c->dtype) *
                                    KV(hk, kd, e * kv_entry + ((long)kh * cap + i) * D + d);
                        sdot *= scale;
                    }
                    alpha[h * cap + i] = sdot;
                    if (sdot > mx) mx = sdot;
                    if (pos[i] >= 0 && fabs(sdot) > lmax) lmax = fabs(sdot);
                }
                double sum = 0;
                for (int i = 0; i < cap; i++) {
                    const double w = pos[i] >= 0 ? exp(alpha[h * cap + i] - mx) : 0;
                    alpha[h * cap + i] = w;
                    sum += w;
                }
                for (int i = 0; i < cap; i++) alpha[h * cap + i] = sum > 0 ? alpha[h * cap + i] / sum : 0;
                for (int d = 0; d < D; d++) {
                    double o = 0;
                    for (int i = 0; i < cap; i++)
                        if (pos[i] >= 0)
                            o += alpha[h * cap + i] *
                                 KV(hv, vd, e * kv_entry + ((long)kh * cap + i) * D + d);
                    ref_out[((long)s * H + h) * D + d] = o;
                }
            }
            for (int i = 0; i < H * D; i++) {
                const long o = (long)s * H * D + i;
                double got;
                if (c->out_dtype == LF_DTYPE_F32) {
                    float f;
                    memcpy(&f, hout + 4 * o, 4);
                    got = f;
                } else {
                    uint16_t u;
                    memcpy(&u, hout + 2 * o, 2);
                    got = from16(u, c->out_dtype);
                }
                if (isnan(got)) unwritten++;
                num += (got - ref_out[o]) * (got - ref_out[o]);
                den += ref_out[o] * ref_out[o];
            }
            if (lmax > lmax_all) lmax_all = lmax;
            const double ltol = lmax * 0x1p-19; /* ~16 ulp of the largest logit */
            if (c->mode == LF_SCORE_NONE) continue;
            /* reference score */
            for (int i = 0; i < cap; i++) {
                double a_mean = 0, lf = 0, nmean = 0;
                for (int h = 0; h < H; h++) {
                    a_mean += alpha[h * cap + i] / H;
                    lf += alpha[h * cap + i] * vn[(h / G) * cap + i] / ((double)H * D);
                }
                for (int h = 0; h < Hkv; h++) nmean += vn[h * cap + i] / ((double)Hkv * D);
                double sc;
                double *ra = racc + e * slot_stride + i;
                switch (c->mode) {
                case LF_SCORE_ATT_VNORM: sc = lf; break;
                case LF_SCORE_ATT: sc = a_mean; break;
                case LF_SCORE_ACC:
                    *ra = pos[i] >= 0 ? *ra + a_mean : 0;
                    sc = *ra;
                    break;
                default:
                    *ra = pos[i] >= 0 ? *ra + a_mean : 0;
                    sc = *ra * nmean;
                    break;
                }
                if (pos[i] < 0) sc = 0;
                ref_score[i] = sc;
                const double got = hscore[e * slot_stride + i];
                if (!(fabs(got - sc) <= (1e-4 + ltol) * fabs(sc) + 1e-30)) {
                    if (bad_score < 3)
                        fprintf(stderr, "  %s: seq %d slot %d score %.9g ref %.9g\n", c->name, s, i, got, sc);
                    bad_score++;
                }
            }
            /* reference victim: lowest score among unprotected, lowest index on ties */
            int best = -1, fb = -1;
            for (int i = 0; i < cap; i++) {
                const int ps = pos[i];
                const bool prot = ps >= 0 && (ps < c->sinks || (c->recent > 0 && ps > hcur[s] - c->recent));
                if (!prot && (best < 0 || ref_score[i] < ref_score[best])) best = i;
                if (fb < 0 || ref_score[i] < ref_score[fb]) fb = i;
            }
            if (best < 0) best = fb;
            const int got = hnext[e];
            bool ok = got == best;
            if (!ok && got >= 0 && got < cap) {
                /* accept a near tie (reference scores within 1e-6 relative) */
                const int ps = pos[got];
                const bool prot = ps >= 0 && (ps < c->sinks || (c->recent > 0 && ps > hcur[s] - c->recent));
                ok = !prot && ref_score[got] <= ref_score[best] * (1 + 1e-6 + ltol);
            }
            if (!ok) {
                fprintf(stderr, "  %s: seq %d next_slot %d, reference %d (scores %.9g vs %.9g)\n", c->name, s,
                        got, best, got >= 0 && got < cap ? ref_score[got] : -1.0, ref_score[best]);
                bad_victim++;
            }
            if (c->mode == LF_SCORE_ACC || c->mode == LF_SCORE_ACC_VNORM) {
                racc[e * slot_stride + got] = 0; /* the chosen slot's accumulator restarts */
                for (int i = 0; i < cap; i++) {
                    const double r = racc[e * slot_stride + i], g = hacc[e * slot_stride + i];
                    if (!(fabs(g - r) <= (1e-5 + ltol) * fabs(r) + 1e-7)) bad_acc++;
                }
                /* keep the next step's starting point identical on both sides */
                for (int i = 0; i < cap; i++) racc[e * slot_stride + i] = hacc[e * slot_stride + i];
            }
        }
        const double rel = den > 0 ? sqrt(num / den) : sqrt(num);
        const double tol = (c->out_dtype == LF_DTYPE_F32 ? 1e-4 : c->out_dtype == LF_DTYPE_F16 ? 1e-3 : 2e-3) +
                           lmax_all * 0x1p-19;
        CHECK(unwritten == 0, "%s: %d output values not written (NaN)", c->name, unwritten);
        CHECK(rel <= tol, "%s step %d: output relative L2 error %.3g > %.1g", c->name, step, rel, tol);
        CHECK(bad_score == 0, "%s step %d: %d slot scores off by more than 1e-4 (+ 2^-19 max|logit|) relative",
              c->name, step, bad_score);
        CHECK(bad_victim == 0, "%s step %d: %d wrong victims", c->name, step, bad_victim);
        CHECK(bad_acc == 0, "%s step %d: %d accumulator values wrong", c->name, step, bad_acc);
        printf("  %-40s %dL%s step %d: out rel err %.2e (max |logit| %.3g), next_slot[0] %d\n", c->name,
               desc.launches, c->kv_fp8 ? " fp8" : "", step, rel, lmax_all,
               hnext[0]);
    }

done:
    cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dout); cudaFree(dws);
    cudaFree(dpos); cudaFree(didx); cudaFree(dnext); cudaFree(dcur); cudaFree(dscore); cudaFree(dacc);
    free(hq); free(hk); free(hv); free(hpos); free(hidx); free(hcur); free(hacc); free(racc);
    free(hout); free(hscore); free(hnext); free(ref_out); free(ref_score); free(alpha); free(vn);
    free(hk8); free(hv8); free(hks); free(hvs); free(kd); free(vd); free(hvn);
    cudaFree(dks); cudaFree(dvs); cudaFree(dvn);
    return g_failures - fails0;
}

static tcase base_case(const char *name) {
    tcase c;
    memset(&c, 0, sizeof c);
    c.name = name;
    c.B = 3; c.H = 8; c.Hkv = 2; c.D = 128; c.cap = 300;
    c.dtype = LF_DTYPE_BF16; c.out_dtype = LF_DTYPE_BF16;
    c.mode = LF_SCORE_ATT_VNORM; c.n_split = 0; c.e_smem = 0;
    c.empty_frac = 0; c.steps = 1; c.q_gain = 1.5;
    return c;
}

static bool small_only(void) {
    const char *s = getenv("LF_CUDA_TEST_SMALL");
    return s && *s && *s != '0';
}

/* ---- tests --------------------------------------------------------------- */
static void test_longflow_splits(void **state) {
    (void)state;
    if (!g_have_gpu) SKIP_TEST();
    const int f0 = g_failures;
    tcase c = base_case("longflow auto");
    run_case(&c);
    c = base_case("longflow auto, 15% empty");
    c.empty_frac = 0.15;
    run_case(&c);
    c = base_case("longflow split 3, 15% empty");
    c.empty_frac = 0.15;
    c.n_split = 3;
    run_case(&c);
    const int splits[] = {1, 2, 3, 5};
    for (int i = 0; i < 4; i++) {
        char name[64];
        c = base_case("");
        c.n_split = splits[i];
        c.e_smem = -1;
        c.l2_hints = i + 1 <= 3 ? i + 1 : 0; /* discard, evict_first only, none, default */
        snprintf(name, sizeof name, "longflow split %d gmem", splits[i]);
        c.name = name;
        run_case(&c);
    }
    c = base_case("longflow split 1 smem");
    c.n_split = 1;
    c.e_smem = 1;
    run_case(&c);
    c = base_case("longflow f16 out f32");
    c.dtype = LF_DTYPE_F16;
    c.out_dtype = LF_DTYPE_F32;
    run_case(&c);
    c = base_case("longflow f16 out f16 split 4");
    c.dtype = c.out_dtype = LF_DTYPE_F16;
    c.n_split = 4;
    run_case(&c);
    c = base_case("longflow bf16 out f32");
    c.out_dtype = LF_DTYPE_F32;
    c.scale = 0.05f;
    run_case(&c);
#ifndef LF_TEST_STANDALONE
    assert_int_equal(g_failures, f0);
#else
    (void)f0;
#endif
}

static void test_group_shapes(void **state) {
    (void)state;
    if (!g_have_gpu) SKIP_TEST();
    const int f0 = g_failures;
    const int hs[][3] = {{2, 2, 128}, {4, 2, 128}, {14, 2, 128}, {16, 2, 128}, {8, 2, 64}, {12, 4, 64}};
    for (int i = 0; i < 6; i++) {
        char name[64];
        tcase c = base_case("");
        c.H = hs[i][0];
        c.Hkv = hs[i][1];
        c.D = hs[i][2];
        c.cap = 130 + 37 * i;
        snprintf(name, sizeof name, "G=%d D=%d cap=%d", c.H / c.Hkv, c.D, c.cap);
        c.name = name;
        run_case(&c);
        c.n_split = 2;
        c.dtype = c.out_dtype = LF_DTYPE_F16;
        c.empty_frac = i % 2 ? 0.1 : 0;
        run_case(&c);
    }
#ifndef LF_TEST_STANDALONE
    assert_int_equal(g_failures, f0);
#else
    (void)f0;
#endif
}

static void test_modes(void **state) {
    (void)state;
    if (!g_have_gpu) SKIP_TEST();
    const int f0 = g_failures;
    tcase c = base_case("tova");
    c.mode = LF_SCORE_ATT;
    run_case(&c);
    c = base_case("h2o 3 steps, 10% empty");
    c.mode = LF_SCORE_ACC;
    c.steps = 3;
    c.empty_frac = 0.1;
    run_case(&c);
    c = base_case("vatp 2 steps split 3");
    c.mode = LF_SCORE_ACC_VNORM;
    c.steps = 2;
    c.n_split = 3;
    run_case(&c);
    c = base_case("none (attention only)");
    c.mode = LF_SCORE_NONE;
    run_case(&c);
    c = base_case("none split 3");
    c.mode = LF_SCORE_NONE;
    c.n_split = 3;
    run_case(&c);
#ifndef LF_TEST_STANDALONE
    assert_int_equal(g_failures, f0);
#else
    (void)f0;
#endif
}

static void test_pool_protect_empty(void **state) {
    (void)state;
    if (!g_have_gpu) SKIP_TEST();
    const int f0 = g_failures;
    tcase c = base_case("pool + seq_index");
    c.pool = 1;
    c.empty_frac = 0.05;
    c.B = 4;
    run_case(&c);
    c = base_case("sinks 20 recent 100");
    c.sinks = 20;
    c.recent = 100;
    c.pool = 1;
    run_case(&c);
    c = base_case("everything protected");
    c.sinks = 1 << 30;
    run_case(&c);
    c = base_case("empty sequence");
    c.all_empty_seq = 1;
    c.n_split = 2;
    run_case(&c);
    c = base_case("vatp D=64 Hkv=8 cap=1500 gmem (2 rounds)");
    c.H = 32; c.Hkv = 8; c.D = 64; c.cap = 1500; c.n_split = 1; c.e_smem = -1;
    c.mode = LF_SCORE_ACC_VNORM; c.empty_frac = 0.05; c.steps = 2;
    run_case(&c);
    c = base_case("no empty slots, peaked");
    c.empty_frac = 0;
    c.q_gain = 4;
    c.cap = 64;
    run_case(&c);
#ifndef LF_TEST_STANDALONE
    assert_int_equal(g_failures, f0);
#else
    (void)f0;
#endif
}

static void test_large(void **state) {
    (void)state;
    if (!g_have_gpu || small_only()) SKIP_TEST();
    const int f0 = g_failures;
    tcase c = base_case("B=2 H=32/8 cap=2048 auto");
    c.B = 2; c.H = 32; c.Hkv = 8; c.cap = 2048; c.empty_frac = 0.02;
    run_case(&c);
    c.name = "B=2 H=32/8 cap=4100 f16";
    c.cap = 4100;
    c.dtype = c.out_dtype = LF_DTYPE_F16;
    run_case(&c);
    c = base_case("G=8 cap=3000 split 1 gmem (2 rounds)");
    c.H = 16; c.Hkv = 2; c.cap = 3000; c.n_split = 1; c.e_smem = -1;
    run_case(&c);
    c = base_case("h2o H=32/8 cap=3000 (2 rounds)");
    c.H = 32; c.Hkv = 8; c.cap = 3000; c.mode = LF_SCORE_ACC; c.steps = 2; c.empty_frac = 0.03;
    run_case(&c);
    c = base_case("B=40 H=32/8 cap=700 smem");
    c.B = 40; c.H = 32; c.Hkv = 8; c.cap = 700; c.e_smem = 1;
    run_case(&c);
#ifndef LF_TEST_STANDALONE
    assert_int_equal(g_failures, f0);
#else
    (void)f0;
#endif
}

/* The FP8 cache: every score mode, both head dims, G = 1..8, splits, smem
 * and gmem partials, pools, empty slots holding NaN codes and NaN scales,
 * and rows of zeros / one huge element / values beyond e4m3's range / tiny
 * values (fp8_test_row), against the double reference on the values the
 * codes and scales stand for. */
static void test_fp8(void **state) {
    (void)state;
    if (!g_have_gpu) SKIP_TEST();
    const int f0 = g_failures;
    const int modes[] = {LF_SCORE_ATT_VNORM, LF_SCORE_ATT, LF_SCORE_ACC, LF_SCORE_ACC_VNORM, LF_SCORE_NONE};
    const char *mname[] = {"longflow", "tova", "h2o", "vatp", "none"};
    const int hs[][3] = {{8, 2, 128}, {8, 8, 128}, {16, 2, 64}, {12, 4, 64}, {32, 8, 128}};
    for (int i = 0; i < 5; i++) {
        char name[96];
        tcase c = base_case("");
        c.kv_fp8 = 1;
        c.mode = modes[i];
        c.H = hs[i][0];
        c.Hkv = hs[i][1];
        c.D = hs[i][2];
        c.cap = 150 + 61 * i;
        c.empty_frac = i % 2 ? 0.1 : 0.02;
        c.steps = (modes[i] == LF_SCORE_ACC || modes[i] == LF_SCORE_ACC_VNORM) ? 2 : 1;
        snprintf(name, sizeof name, "fp8 %s G=%d D=%d cap=%d", mname[i], c.H / c.Hkv, c.D, c.cap);
        c.name = name;
        run_case(&c);
        c.n_split = 3;
        c.pool = 1;
        c.e_smem = -1;
        c.sinks = 4;
        c.recent = 40;
        snprintf(name, sizeof name, "fp8 %s D=%d split 3 pool gmem", mname[i], c.D);
        run_case(&c);
        c.n_split = 1;
        c.e_smem = 1;
        c.out_dtype = LF_DTYPE_F32;
        snprintf(name, sizeof name, "fp8 %s D=%d split 1 smem out f32", mname[i], c.D);
        run_case(&c);
        if (modes[i] == LF_SCORE_ATT_VNORM || modes[i] == LF_SCORE_ACC_VNORM) { /* stored |v|_1 */
            c.vnorm = 1;
            snprintf(name, sizeof name, "fp8 %s D=%d stored |v|_1 split 1", mname[i], c.D);
            run_case(&c);
            c.n_split = 3;
            c.e_smem = -1;
            c.out_dtype = LF_DTYPE_BF16;
            snprintf(name, sizeof name, "fp8 %s D=%d stored |v|_1 split 3", mname[i], c.D);
            run_case(&c);
        }
    }
    {
        tcase c = base_case("fp8 tova, |q| ~ 1e5 (q prescaled for f16)");
        c.kv_fp8 = 1;
        c.mode = LF_SCORE_ATT;
        c.q_gain = 4e4;
        run_case(&c);
    }
    if (!small_only()) {
        tcase c = base_case("fp8 longflow B=24 H=16/8 cap=3000, stored |v|_1");
        c.kv_fp8 = 1;
        c.vnorm = 1;
        c.B = 24; c.H = 16; c.Hkv = 8; c.cap = 3000; c.empty_frac = 0.01;
        run_case(&c);
        c.name = "fp8 all empty sequence, peaked";
        c.B = 3; c.cap = 200; c.all_empty_seq = 1; c.q_gain = 4;
        run_case(&c);
    }
#ifndef LF_TEST_STANDALONE
    assert_int_equal(g_failures, f0);
#else
    (void)f0;
#endif
}

static void test_bad_input(void **state) {
    (void)state;
    lf_error err;
    size_t bytes;
    lf_cuda_attn_desc d = {2, 32, 8, 96, 100, LF_DTYPE_BF16, LF_DTYPE_BF16, LF_SCORE_ATT_VNORM, 0, 0, 0, 0, 0};
    CHECK(lf_cuda_attn_check(&d, &err) == -1 && strstr(err.msg, "head_dim"), "head_dim 96 accepted");
    d.head_dim = 128;
    d.n_heads = 32;
    d.n_kv_heads = 2;
    CHECK(lf_cuda_attn_check(&d, &err) == -1 && strstr(err.msg, "per KV head"), "G=16 accepted");
    d.n_kv_heads = 5;
    CHECK(lf_cuda_attn_check(&d, &err) == -1 && strstr(err.msg, "multiple"), "32/5 heads accepted");
    d.n_kv_heads = 8;
    d.dtype = LF_DTYPE_F32;
    CHECK(lf_cuda_attn_check(&d, &err) == -1 && strstr(err.msg, "dtype"), "f32 cache accepted");
    d.dtype = LF_DTYPE_BF16;
    d.mode = 9;
    CHECK(lf_cuda_attn_check(&d, &err) == -1 && strstr(err.msg, "mode"), "mode 9 accepted");
    d.mode = LF_SCORE_ACC;
    d.n_seq = 0;
    CHECK(lf_cuda_attn_check(&d, &err) == -1 && strstr(err.msg, "n_seq"), "n_seq 0 accepted");
    d.n_seq = 2;
    CHECK(lf_cuda_attn_check(&d, &err) == 0, "good descriptor refused: %s", err.msg);
    if (g_have_gpu) {
        CHECK(lf_cuda_attn_workspace_bytes(&d, &bytes, &err) == 0, "workspace_bytes: %s", err.msg);
        lf_cuda_attn_args a;
        memset(&a, 0, sizeof a);
        static _Alignas(16) int32_t x[4]; /* never dereferenced: the checks fail first */
        a.q = x;
        a.k = x;
        a.v = x;
        a.pos = x;
        a.out = x;
        a.workspace = x;
        a.kv_seq_stride = (int64_t)8 * 100 * 128;
        a.slot_seq_stride = 100;
        a.next_slot = x;
        CHECK(lf_cuda_attn_decode(&d, &a, &err) == -1 && strstr(err.msg, "acc"), "H2O without acc accepted");
        d.mode = LF_SCORE_ATT_VNORM;
        a.workspace_bytes = 16;
        CHECK(lf_cuda_attn_decode(&d, &a, &err) == -1 && strstr(err.msg, "workspace"),
              "small workspace accepted (%s)", err.msg);
    }
#ifndef LF_TEST_STANDALONE
    assert_int_equal(g_failures, 0);
#endif
}

#ifndef LF_TEST_STANDALONE
static void set_two_launches(void **state) {
    (void)state;
    g_launches = 2;
}
#endif

int main(void) {
    int n = 0;
    g_have_gpu = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
    if (!g_have_gpu) printf("no CUDA device: GPU cases skipped\n");
#ifdef LF_TEST_STANDALONE
    test_bad_input(NULL);
    for (g_launches = 1; g_launches <= 2; g_launches++) {
        test_longflow_splits(NULL);
        test_group_shapes(NULL);
        test_modes(NULL);
        test_pool_protect_empty(NULL);
        test_large(NULL);
        test_fp8(NULL);
    }
    printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "PASSED", g_failures);
    return g_failures ? 1 : 0;
#else
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_longflow_splits),
        cmocka_unit_test(test_group_shapes),
        cmocka_unit_test(test_modes),
        cmocka_unit_test(test_pool_protect_empty),
        cmocka_unit_test(test_large),
        cmocka_unit_test(test_fp8),
        cmocka_unit_test(set_two_launches),
        cmocka_unit_test(test_longflow_splits),
        cmocka_unit_test(test_group_shapes),
        cmocka_unit_test(test_modes),
        cmocka_unit_test(test_pool_protect_empty),
        cmocka_unit_test(test_large),
        cmocka_unit_test(test_fp8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
#endif
}
