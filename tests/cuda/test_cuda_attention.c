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

/* The host side of one case: the inputs, the kernel's outputs read back, and
 * the reference. Pool entry e holds kv_entry K (and V) elements and
 * slot_stride slots. */
typedef struct hbufs {
    int n_pool;
    long kv_entry, slot_stride, n_rows;
    size_t out_es;
    double scale;
    uint16_t *q, *k, *v;
    int32_t *pos, *idx, *cur;
    float *acc;
    double *racc;
    unsigned char *out;
    float *score;
    int32_t *next; /* next_slot is indexed by pool entry */
    double *ref_out, *ref_score, *alpha, *vn;
    /* fp8: codes, row scales, and the values they stand for */
    uint8_t *k8, *v8;
    float *ks, *vs, *kd, *vd;
    float *vnorm; /* fp8: each V row's |v|_1 of the values it stands for (NaN for empty slots) */
} hbufs;

/* The device side of one case. */
typedef struct dbufs {
    void *q, *k, *v, *out, *ws, *ks, *vs;
    int32_t *pos, *idx, *next, *cur;
    float *score, *acc, *vnorm; /* vnorm: with tcase.vnorm only */
    size_t ws_bytes;
} dbufs;

static void host_free(hbufs *h) {
    free(h->q); free(h->k); free(h->v); free(h->pos); free(h->idx); free(h->cur); free(h->acc); free(h->racc);
    free(h->out); free(h->score); free(h->next); free(h->ref_out); free(h->ref_score); free(h->alpha); free(h->vn);
    free(h->k8); free(h->v8); free(h->ks); free(h->vs); free(h->kd); free(h->vd); free(h->vnorm);
}

static void dev_free(dbufs *d) {
    cudaFree(d->q); cudaFree(d->k); cudaFree(d->v); cudaFree(d->out); cudaFree(d->ws);
    cudaFree(d->pos); cudaFree(d->idx); cudaFree(d->next); cudaFree(d->cur); cudaFree(d->score); cudaFree(d->acc);
    cudaFree(d->ks); cudaFree(d->vs); cudaFree(d->vnorm);
}

/* The case's host buffers: 0, or -1 out of memory (counted). */
static int host_alloc(const tcase *c, hbufs *h) {
    const int B = c->B, H = c->H, Hkv = c->Hkv, D = c->D, cap = c->cap;
    memset(h, 0, sizeof *h);
    h->n_pool = c->pool ? B + 2 : B;
    h->kv_entry = (long)Hkv * cap * D + (c->pool ? (c->kv_fp8 ? D : 8 * 3) : 0); /* padded pool entries */
    h->slot_stride = cap + (c->pool ? 5 : 0);
    h->out_es = c->out_dtype == LF_DTYPE_F32 ? 4 : 2;
    h->scale = c->scale > 0 ? c->scale : 1.0 / sqrt((double)D);
    const int n_pool = h->n_pool;
    const long kv_entry = h->kv_entry, slot_stride = h->slot_stride;
    h->q = malloc(sizeof(uint16_t) * B * H * D);
    h->k = malloc(sizeof(uint16_t) * n_pool * kv_entry);
    h->v = malloc(sizeof(uint16_t) * n_pool * kv_entry);
    h->pos = malloc(sizeof(int32_t) * n_pool * slot_stride);
    h->idx = malloc(sizeof(int32_t) * B);
    h->cur = malloc(sizeof(int32_t) * B);
    h->acc = calloc((size_t)n_pool * slot_stride, sizeof(float));
    h->racc = calloc((size_t)n_pool * slot_stride, sizeof(double));
    h->out = malloc(h->out_es * B * H * D);
    h->score = malloc(sizeof(float) * n_pool * slot_stride);
    h->next = malloc(sizeof(int32_t) * n_pool);
    h->ref_out = malloc(sizeof(double) * B * H * D);
    h->ref_score = malloc(sizeof(double) * cap);
    h->alpha = malloc(sizeof(double) * H * cap);
    h->vn = malloc(sizeof(double) * Hkv * cap);
    h->n_rows = c->kv_fp8 ? (long)n_pool * kv_entry / D : 0;
    const size_t n8 = c->kv_fp8 ? (size_t)n_pool * kv_entry : 1;
    h->k8 = malloc(n8);
    h->v8 = malloc(n8);
    h->ks = malloc(sizeof(float) * (h->n_rows + 1));
    h->vs = malloc(sizeof(float) * (h->n_rows + 1));
    h->kd = malloc(sizeof(float) * n8);
    h->vd = malloc(sizeof(float) * n8);
    h->vnorm = malloc(sizeof(float) * (h->n_rows + 1));
    bool ok = h->q && h->k && h->v && h->pos && h->idx && h->cur && h->acc && h->racc && h->out && h->score &&
              h->next && h->ref_out && h->ref_score && h->alpha && h->vn && h->k8 && h->v8 && h->ks && h->vs &&
              h->kd && h->vd && h->vnorm;
    CHECK(ok, "%s: out of host memory", c->name);
    return ok ? 0 : -1;
}

/* Random K and V (bf16/f16), and with kv_fp8 the rows as the CPU cache
 * writes them (codes, scales and the values they stand for). */
static void fill_kv(const tcase *c, hbufs *h) {
    const int D = c->D;
    for (long i = 0; i < (long)h->n_pool * h->kv_entry; i++) {
        h->k[i] = to16((float)rng_normal(), c->dtype);
        h->v[i] = to16((float)rng_normal(), c->dtype);
    }
    for (long r = 0; r < h->n_rows; r++) { /* fp8: rows written as the CPU cache writes them */
        float x[128];
        fp8_test_row(x, D);
        lf_kv_row_store(LF_KV_FP8, x, D, h->k8 + r * D, &h->ks[r]);
        lf_kv_row_load(LF_KV_FP8, h->k8 + r * D, h->ks[r], D, h->kd + r * D);
        fp8_test_row(x, D);
        lf_kv_row_store(LF_KV_FP8, x, D, h->v8 + r * D, &h->vs[r]);
        lf_kv_row_load(LF_KV_FP8, h->v8 + r * D, h->vs[r], D, h->vd + r * D);
        double l1 = 0;
        for (int d = 0; d < D; d++) l1 += fabs(h->vd[r * D + d]);
        h->vnorm[r] = (float)l1;
    }
}

/* Slot i of pool entry e made empty: position -1, NaN/Inf garbage in K and V. */
static void make_empty(const tcase *c, hbufs *h, long e, int i) {
    const int D = c->D, cap = c->cap;
    h->pos[e * h->slot_stride + i] = -1;
    for (int kh = 0; kh < c->Hkv; kh++)
        for (int d = 0; d < D; d++) {
            const long o = e * h->kv_entry + ((long)kh * cap + i) * D + d;
            h->k[o] = 0x7fff; /* NaN in both f16 and bf16 */
            h->v[o] = (uint16_t)(d & 1 ? 0xffff : 0x7c00); /* NaN / Inf (f16) */
            if (c->kv_fp8) { /* NaN codes, NaN scales */
                h->k8[o] = h->v8[o] = 0x7f;
                h->ks[o / D] = h->vs[o / D] = NAN;
            }
        }
}

/* Pool entries (reversed order when pooled), slot positions with empty
 * slots, each sequence's current position, the queries and, in the
 * accumulating modes, starting accumulators. */
static void fill_slots(const tcase *c, hbufs *h) {
    const int B = c->B, cap = c->cap;
    for (int s = 0; s < B; s++) h->idx[s] = c->pool ? h->n_pool - 1 - s : s;
    for (long i = 0; i < (long)h->n_pool * h->slot_stride; i++) h->pos[i] = -1;
    for (int s = 0; s < B; s++) {
        const long e = h->idx[s];
        int maxp = -1;
        for (int i = 0; i < cap; i++) {
            const bool empty = (c->all_empty_seq && s == 0) || rng_uniform() < c->empty_frac;
            if (empty) {
                make_empty(c, h, e, i);
            } else {
                h->pos[e * h->slot_stride + i] = i * 3 + 1;
                if (i * 3 + 1 > maxp) maxp = i * 3 + 1;
            }
        }
        h->cur[s] = maxp;
    }
    for (int i = 0; i < B * c->H * c->D; i++) h->q[i] = to16((float)(rng_normal() * c->q_gain), c->dtype);
    if (c->mode == LF_SCORE_ACC || c->mode == LF_SCORE_ACC_VNORM)
        for (int s = 0; s < B; s++)
            for (int i = 0; i < cap; i++) {
                const long o = (long)h->idx[s] * h->slot_stride + i;
                const float a = h->pos[o] >= 0 ? (float)rng_uniform() * 0.5f : 0.f;
                h->acc[o] = a;
                h->racc[o] = a;
            }
}

/* Device buffers with the case's inputs, and the initialised workspace:
 * 0, or -1 (counted). */
static int dev_upload(const tcase *c, const lf_cuda_attn_desc *desc, const hbufs *h, dbufs *d) {
    const int B = c->B, H = c->H, D = c->D;
    const int n_pool = h->n_pool;
    const long kv_entry = h->kv_entry, slot_stride = h->slot_stride, n_rows = h->n_rows;
    lf_error err;
    if (lf_cuda_attn_workspace_bytes(desc, &d->ws_bytes, &err)) {
        CHECK(0, "%s: workspace_bytes: %s", c->name, err.msg);
        return -1;
    }
    if (c->kv_fp8) {
        CUDA_OK(cudaMalloc(&d->ks, sizeof(float) * n_rows));
        CUDA_OK(cudaMalloc(&d->vs, sizeof(float) * n_rows));
        CUDA_OK(cudaMemcpy(d->ks, h->ks, sizeof(float) * n_rows, cudaMemcpyHostToDevice));
        CUDA_OK(cudaMemcpy(d->vs, h->vs, sizeof(float) * n_rows, cudaMemcpyHostToDevice));
        if (c->vnorm) { /* (empty slots: NaN scales, so NaN norms, as rope_store would store) */
            for (long r = 0; r < n_rows; r++)
                if (isnan(h->vs[r])) h->vnorm[r] = NAN;
            CUDA_OK(cudaMalloc((void **)&d->vnorm, sizeof(float) * n_rows));
            CUDA_OK(cudaMemcpy(d->vnorm, h->vnorm, sizeof(float) * n_rows, cudaMemcpyHostToDevice));
        }
    }
    CUDA_OK(cudaMalloc(&d->q, sizeof(uint16_t) * B * H * D));
    CUDA_OK(cudaMalloc(&d->k, sizeof(uint16_t) * n_pool * kv_entry));
    CUDA_OK(cudaMalloc(&d->v, sizeof(uint16_t) * n_pool * kv_entry));
    CUDA_OK(cudaMalloc((void **)&d->pos, sizeof(int32_t) * n_pool * slot_stride));
    CUDA_OK(cudaMalloc((void **)&d->idx, sizeof(int32_t) * B));
    CUDA_OK(cudaMalloc((void **)&d->cur, sizeof(int32_t) * B));
    CUDA_OK(cudaMalloc((void **)&d->next, sizeof(int32_t) * n_pool));
    CUDA_OK(cudaMalloc(&d->out, h->out_es * B * H * D));
    CUDA_OK(cudaMalloc((void **)&d->score, sizeof(float) * n_pool * slot_stride));
    CUDA_OK(cudaMalloc((void **)&d->acc, sizeof(float) * n_pool * slot_stride));
    CUDA_OK(cudaMalloc(&d->ws, d->ws_bytes));
    CUDA_OK(cudaMemcpy(d->q, h->q, sizeof(uint16_t) * B * H * D, cudaMemcpyHostToDevice));
    if (c->kv_fp8) {
        CUDA_OK(cudaMemcpy(d->k, h->k8, (size_t)n_pool * kv_entry, cudaMemcpyHostToDevice));
        CUDA_OK(cudaMemcpy(d->v, h->v8, (size_t)n_pool * kv_entry, cudaMemcpyHostToDevice));
    } else {
        CUDA_OK(cudaMemcpy(d->k, h->k, sizeof(uint16_t) * n_pool * kv_entry, cudaMemcpyHostToDevice));
        CUDA_OK(cudaMemcpy(d->v, h->v, sizeof(uint16_t) * n_pool * kv_entry, cudaMemcpyHostToDevice));
    }
    CUDA_OK(cudaMemcpy(d->pos, h->pos, sizeof(int32_t) * n_pool * slot_stride, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(d->idx, h->idx, sizeof(int32_t) * B, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(d->cur, h->cur, sizeof(int32_t) * B, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(d->acc, h->acc, sizeof(float) * n_pool * slot_stride, cudaMemcpyHostToDevice));
    if (lf_cuda_attn_workspace_init(d->ws, d->ws_bytes, NULL, &err)) {
        CHECK(0, "%s: workspace_init: %s", c->name, err.msg);
        return -1;
    }
    return 0;
done:
    return -1;
}

static lf_cuda_attn_args make_args(const tcase *c, const hbufs *h, const dbufs *d) {
    lf_cuda_attn_args a;
    memset(&a, 0, sizeof a);
    a.q = d->q; a.k = d->k; a.v = d->v;
    a.k_scale = d->ks; a.v_scale = d->vs; a.v_norm = d->vnorm;
    a.kv_seq_stride = h->kv_entry;
    a.pos = d->pos;
    a.slot_seq_stride = h->slot_stride;
    a.seq_index = c->pool ? d->idx : NULL;
    a.out = d->out;
    a.score = c->mode ? d->score : NULL;
    a.acc = d->acc;
    a.next_slot = d->next;
    a.cur_pos = c->recent ? d->cur : NULL;
    a.sinks = c->sinks;
    a.recent = c->recent;
    a.scale = c->scale;
    a.workspace = d->ws;
    a.workspace_bytes = d->ws_bytes;
    return a;
}

/* One launch with every output poisoned first, its outputs read back:
 * 0, or -1 (counted). */
static int launch(const tcase *c, const lf_cuda_attn_desc *desc, const lf_cuda_attn_args *a, hbufs *h,
                  const dbufs *d) {
    const size_t out_bytes = h->out_es * c->B * c->H * c->D;
    const size_t slots = (size_t)h->n_pool * h->slot_stride;
    lf_error err;
    CUDA_OK(cudaMemset(d->out, 0xff, out_bytes));
    CUDA_OK(cudaMemset(d->score, 0xff, sizeof(float) * slots));
    CUDA_OK(cudaMemset(d->next, 0xaa, sizeof(int32_t) * h->n_pool));
    if (lf_cuda_attn_decode(desc, a, &err)) {
        CHECK(0, "%s: decode: %s", c->name, err.msg);
        return -1;
    }
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(h->out, d->out, out_bytes, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(h->score, d->score, sizeof(float) * slots, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(h->next, d->next, sizeof(int32_t) * h->n_pool, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(h->acc, d->acc, sizeof(float) * slots, cudaMemcpyDeviceToHost));
    return 0;
done:
    return -1;
}

/* The value of K/V element i as the kernel must read it. */
#define KV(h16, hd, i) (c->kv_fp8 ? (double)(hd)[i] : from16((h16)[i], c->dtype))

/* The reference of sequence s: |v|_1 per KV head and slot (vn), the
 * attention weights (alpha) and output (ref_out). Returns the largest
 * |logit| of the sequence. */
static double ref_sequence(const tcase *c, hbufs *h, int s) {
    const int H = c->H, Hkv = c->Hkv, D = c->D, cap = c->cap, G = H / Hkv;
    const long e = h->idx[s], kv_entry = h->kv_entry;
    const int32_t *pos = h->pos + e * h->slot_stride;
    double *alpha = h->alpha, *vn = h->vn;
    for (int kh = 0; kh < Hkv; kh++)
        for (int i = 0; i < cap; i++) {
            double n = 0;
            if (pos[i] >= 0)
                for (int d = 0; d < D; d++) n += fabs(KV(h->v, h->vd, e * kv_entry + ((long)kh * cap + i) * D + d));
            vn[kh * cap + i] = n;
        }
    /* the kernel's logits are fp32: an error of a few ulp of the largest |logit| of the
     * sequence moves every probability of its heads by that much (relatively); with
     * K rows far beyond e4m3's range (fp8 cases) |logit| reaches ~1e4 */
    double lmax = 0;
    for (int hh = 0; hh < H; hh++) {
        const int kh = hh / G;
        double mx = -INFINITY;
        for (int i = 0; i < cap; i++) {
            double sdot = -INFINITY;
            if (pos[i] >= 0) {
                sdot = 0;
                for (int d = 0; d < D; d++)
                    sdot += from16(h->q[((long)s * H + hh) * D + d], c->dtype) *
                            KV(h->k, h->kd, e * kv_entry + ((long)kh * cap + i) * D + d);
                sdot *= h->scale;
            }
            alpha[hh * cap + i] = sdot;
            if (sdot > mx) mx = sdot;
            if (pos[i] >= 0 && fabs(sdot) > lmax) lmax = fabs(sdot);
        }
        double sum = 0;
        for (int i = 0; i < cap; i++) {
            const double w = pos[i] >= 0 ? exp(alpha[hh * cap + i] - mx) : 0;
            alpha[hh * cap + i] = w;
            sum += w;
        }
        for (int i = 0; i < cap; i++) alpha[hh * cap + i] = sum > 0 ? alpha[hh * cap + i] / sum : 0;
        for (int d = 0; d < D; d++) {
            double o = 0;
            for (int i = 0; i < cap; i++)
                if (pos[i] >= 0) o += alpha[hh * cap + i] * KV(h->v, h->vd, e * kv_entry + ((long)kh * cap + i) * D + d);
            h->ref_out[((long)s * H + hh) * D + d] = o;
        }
    }
    return lmax;
}

/* Sequence s's output against the reference: adds to the squared error
 * *num and the squared reference *den; counts values not written. */
static void cmp_output(const tcase *c, const hbufs *h, int s, double *num, double *den, int *unwritten) {
    const int H = c->H, D = c->D;
    for (int i = 0; i < H * D; i++) {
        const long o = (long)s * H * D + i;
        double got;
        if (c->out_dtype == LF_DTYPE_F32) {
            float f;
            memcpy(&f, h->out + 4 * o, 4);
            got = f;
        } else {
            uint16_t u;
            memcpy(&u, h->out + 2 * o, 2);
            got = from16(u, c->out_dtype);
        }
        if (isnan(got)) (*unwritten)++;
        *num += (got - h->ref_out[o]) * (got - h->ref_out[o]);
        *den += h->ref_out[o] * h->ref_out[o];
    }
}

/* The reference score of every slot of sequence s (ref_score; the
 * accumulating modes advance racc) against the kernel's: the count off. */
static int check_scores(const tcase *c, hbufs *h, int s, double ltol) {
    const int H = c->H, Hkv = c->Hkv, D = c->D, cap = c->cap, G = H / Hkv;
    const long e = h->idx[s];
    const int32_t *pos = h->pos + e * h->slot_stride;
    int bad = 0;
    for (int i = 0; i < cap; i++) {
        double a_mean = 0, lf = 0, nmean = 0;
        for (int hh = 0; hh < H; hh++) {
            a_mean += h->alpha[hh * cap + i] / H;
            lf += h->alpha[hh * cap + i] * h->vn[(hh / G) * cap + i] / ((double)H * D);
        }
        for (int kh = 0; kh < Hkv; kh++) nmean += h->vn[kh * cap + i] / ((double)Hkv * D);
        double sc;
        double *ra = h->racc + e * h->slot_stride + i;
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
        h->ref_score[i] = sc;
        const double got = h->score[e * h->slot_stride + i];
        if (!(fabs(got - sc) <= (1e-4 + ltol) * fabs(sc) + 1e-30)) {
            if (bad < 3) fprintf(stderr, "  %s: seq %d slot %d score %.9g ref %.9g\n", c->name, s, i, got, sc);
            bad++;
        }
    }
    return bad;
}

/* Whether a slot at position ps of sequence s is protected (sinks, recent). */
static bool is_protected(const tcase *c, const hbufs *h, int s, int ps) {
    return ps >= 0 && (ps < c->sinks || (c->recent > 0 && ps > h->cur[s] - c->recent));
}

/* The kernel's chosen slot of sequence s against the reference victim
 * (lowest score among unprotected, lowest index on ties): 1 if wrong. */
static int check_victim(const tcase *c, const hbufs *h, int s, double ltol) {
    const int cap = c->cap;
    const long e = h->idx[s];
    const int32_t *pos = h->pos + e * h->slot_stride;
    const double *ref_score = h->ref_score;
    int best = -1, fb = -1;
    for (int i = 0; i < cap; i++) {
        if (!is_protected(c, h, s, pos[i]) && (best < 0 || ref_score[i] < ref_score[best])) best = i;
        if (fb < 0 || ref_score[i] < ref_score[fb]) fb = i;
    }
    if (best < 0) best = fb;
    const int got = h->next[e];
    bool ok = got == best;
    if (!ok && got >= 0 && got < cap) /* accept a near tie (reference scores within 1e-6 relative) */
        ok = !is_protected(c, h, s, pos[got]) && ref_score[got] <= ref_score[best] * (1 + 1e-6 + ltol);
    if (!ok) {
        fprintf(stderr, "  %s: seq %d next_slot %d, reference %d (scores %.9g vs %.9g)\n", c->name, s, got, best,
                got >= 0 && got < cap ? ref_score[got] : -1.0, ref_score[best]);
        return 1;
    }
    return 0;
}

/* The accumulators of sequence s after the step (the chosen slot's restarts)
 * against the reference: the count off. The reference then takes the
 * kernel's values, so that the next step starts alike on both sides. */
static int check_acc(const tcase *c, hbufs *h, int s, double ltol) {
    const long e = h->idx[s], ss = h->slot_stride;
    const int got = h->next[e];
    int bad = 0;
    h->racc[e * ss + got] = 0; /* the chosen slot's accumulator restarts */
    for (int i = 0; i < c->cap; i++) {
        const double r = h->racc[e * ss + i], g = h->acc[e * ss + i];
        if (!(fabs(g - r) <= (1e-5 + ltol) * fabs(r) + 1e-7)) bad++;
    }
    /* keep the next step's starting point identical on both sides */
    for (int i = 0; i < c->cap; i++) h->racc[e * ss + i] = h->acc[e * ss + i];
    return bad;
}

/* Every check of one step's read-back outputs against the reference. */
static void check_step(const tcase *c, const lf_cuda_attn_desc *desc, hbufs *h, int step) {
    double num = 0, den = 0, lmax_all = 0;
    int bad_score = 0, bad_victim = 0, bad_acc = 0, unwritten = 0;
    for (int s = 0; s < c->B; s++) {
        const double lmax = ref_sequence(c, h, s);
        cmp_output(c, h, s, &num, &den, &unwritten);
        if (lmax > lmax_all) lmax_all = lmax;
        const double ltol = lmax * 0x1p-19; /* ~16 ulp of the largest logit */
        if (c->mode == LF_SCORE_NONE) continue;
        bad_score += check_scores(c, h, s, ltol);
        bad_victim += check_victim(c, h, s, ltol);
        if (c->mode == LF_SCORE_ACC || c->mode == LF_SCORE_ACC_VNORM) bad_acc += check_acc(c, h, s, ltol);
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
           desc->launches, c->kv_fp8 ? " fp8" : "", step, rel, lmax_all,
           h->next[0]);
}

static int run_case(const tcase *c) {
    const int fails0 = g_failures;
    hbufs h;
    dbufs d;
    memset(&d, 0, sizeof d);
    if (host_alloc(c, &h) == 0) {
        fill_kv(c, &h);
        fill_slots(c, &h);
        lf_cuda_attn_desc desc = {c->B, c->H, c->Hkv, c->D, c->cap, c->dtype, c->out_dtype, c->mode, c->n_split,
                                  c->e_smem, c->l2_hints, c->launches ? c->launches : g_launches, c->kv_fp8};
        if (dev_upload(c, &desc, &h, &d) == 0) {
            lf_cuda_attn_args a = make_args(c, &h, &d);
            for (int step = 0; step < c->steps; step++) {
                if (launch(c, &desc, &a, &h, &d)) break;
                check_step(c, &desc, &h, step);
            }
        }
    }
    dev_free(&d);
    host_free(&h);
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

/* One suite: its cases run (skipped without a GPU, and the large ones with
 * LF_CUDA_TEST_SMALL), failing at the end when any case failed. */
static void suite(void (*cases)(void), bool large) {
    if (!g_have_gpu || (large && small_only())) SKIP_TEST();
    const int f0 = g_failures;
    cases();
    END_TEST(f0);
}

static void longflow_splits_cases(void) {
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
}

static void group_shapes_cases(void) {
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
}

static void modes_cases(void) {
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
}

static void pool_protect_empty_cases(void) {
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
}

static void large_cases(void) {
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
}

/* The FP8 cache: every score mode, both head dims, G = 1..8, splits, smem
 * and gmem partials, pools, empty slots holding NaN codes and NaN scales,
 * and rows of zeros / one huge element / values beyond e4m3's range / tiny
 * values (fp8_test_row), against the double reference on the values the
 * codes and scales stand for. */
static void fp8_cases(void) {
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
}

/* The cmocka test of suite `name` (test_name, running name_cases). */
#define SUITE_TEST(name, large)                                                             \
    static void test_##name(void **state) {                                                \
        (void)state;                                                                       \
        suite(name##_cases, large);                                                        \
    }
SUITE_TEST(longflow_splits, false)
SUITE_TEST(group_shapes, false)
SUITE_TEST(modes, false)
SUITE_TEST(pool_protect_empty, false)
SUITE_TEST(large, true)
SUITE_TEST(fp8, false)

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
    END_TEST(0);
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
