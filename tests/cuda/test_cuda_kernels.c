/* GPU test of the small CUDA kernels (src/cuda/kernels.cu) against
 * straightforward double-precision references written here: embedding,
 * RMSNorm, bias, SwiGLU, q/k-norm + RoPE + K/V store in every layout, causal
 * prefill attention (with chunking), K/V row gather, greedy sampling with
 * planted ties, -inf masks and refused NaN/+inf rows, the refusal of broken
 * rows by every sampling mode (the others of the launch unaffected), and
 * the distribution of temperature / top-k / top-p
 * / min-p sampling (chi-square against the exact renormalised distribution;
 * tokens outside the allowed set must never be drawn). Argument errors are
 * checked without a GPU. Skips the GPU cases when there is no CUDA device.
 *
 * Tolerances: fp32 outputs rel-L2 <= 1e-5, bf16/f16 outputs rel-L2 <= 8e-3,
 * prefill attention rel-L2 <= 1e-2; integer outputs exact. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <cuda_runtime_api.h>

#include "core/fp.h"
#include "cuda/cuda_kernels.h"
#include "kv/policy.h"
#include "cuda_test.h"


#define TOL_F32 1e-5
#define TOL_16 8e-3
#define TOL_ATTN 1e-2

/* ---- random numbers -------------------------------------------------------- */
static uint64_t g_rng = 0x243f6a8885a308d3ull;
static uint64_t rng_u64(void) {
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rng_uniform(void) { return (double)(rng_u64() >> 11) / 9007199254740992.0; }
static double rng_normal(void) {
    double u = rng_uniform(), v = rng_uniform();
    if (u < 1e-300) u = 1e-300;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}
static int rng_int(int n) { return (int)(rng_uniform() * n); }

static uint16_t to16(double x, lf_dtype t) {
    return t == LF_DTYPE_BF16 ? lf_f32_to_bf16((float)x) : lf_f32_to_f16((float)x);
}
static double from16(uint16_t h, lf_dtype t) { return t == LF_DTYPE_BF16 ? lf_bf16_to_f32(h) : lf_f16_to_f32(h); }

/* ---- device memory: every allocation of a test is freed by dev_free_all ---- */
static void *g_dev[64];
static int g_ndev;

static void *dev_alloc(size_t bytes) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 16);
    if (e != cudaSuccess) {
        CHECK(0, "cudaMalloc(%zu): %s", bytes, cudaGetErrorString(e));
        return NULL;
    }
    if (g_ndev < 64) g_dev[g_ndev++] = p;
    return p;
}
static void *dev_copy(const void *h, size_t bytes) {
    void *p = dev_alloc(bytes);
    if (p) {
        cudaError_t e = cudaMemcpy(p, h, bytes, cudaMemcpyHostToDevice);
        CHECK(e == cudaSuccess, "cudaMemcpy to device: %s", cudaGetErrorString(e));
    }
    return p;
}
static int to_host(void *h, const void *d, size_t bytes) {
    cudaError_t e = cudaDeviceSynchronize();
    if (e == cudaSuccess) e = cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost);
    CHECK(e == cudaSuccess, "sync / copy to host: %s", cudaGetErrorString(e));
    return e == cudaSuccess ? 0 : -1;
}
static void dev_free_all(void) {
    for (int i = 0; i < g_ndev; i++) cudaFree(g_dev[i]);
    g_ndev = 0;
}

/* rel-L2 of got against ref; on failure print the first element off by more
 * than tol * (|ref| + rms(ref)), and the largest error. */
static int compare(const char *what, const double *ref, const double *got, long n, double tol) {
    double num = 0, den = 0, worst = -1;
    long iw = -1, ifirst = -1;
    for (long i = 0; i < n; i++) {
        const double d = got[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    const double rms = sqrt(den / (n > 0 ? n : 1));
    for (long i = 0; i < n; i++) {
        const double d = fabs(got[i] - ref[i]);
        if (!(d <= tol * (fabs(ref[i]) + rms)) && ifirst < 0) ifirst = i;
        if (!(d <= worst)) {
            worst = d;
            iw = i;
        }
    }
    const double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    if (!(rel <= tol)) {
        fprintf(stderr, "FAIL %s: rel-L2 %.3g > %.3g over %ld values", what, rel, tol, n);
        if (ifirst >= 0)
            fprintf(stderr, "; first bad [%ld]: got %.9g want %.9g", ifirst, got[ifirst], ref[ifirst]);
        if (iw >= 0) fprintf(stderr, "; worst [%ld]: got %.9g want %.9g", iw, got[iw], ref[iw]);
        fputc('\n', stderr);
        g_failures++;
        return 1;
    }
    return 0;
}

/* ======================================================================== */
static void test_embed(void **state) {
    (void)state;
    const int f0 = g_failures;
    if (!g_have_gpu) skip();
    const int hiddens[2] = {4096, 100}; /* vector path, scalar path */
    for (int hc = 0; hc < 2; hc++) {
        const int vocab = 1000, hidden = hiddens[hc], n = 37;
        uint16_t *table = malloc(sizeof(uint16_t) * vocab * hidden);
        int32_t *tok = malloc(sizeof(int32_t) * n);
        float *x = malloc(sizeof(float) * n * hidden);
        double *ref = malloc(sizeof(double) * n * hidden), *got = malloc(sizeof(double) * n * hidden);
        lf_error err;
        for (long i = 0; i < (long)vocab * hidden; i++) table[i] = lf_f32_to_bf16((float)rng_normal());
        for (int r = 0; r < n; r++) tok[r] = rng_int(vocab);
        tok[3] = -1;
        tok[5] = vocab; /* out of range: zero rows */
        tok[6] = vocab - 1;
        for (int r = 0; r < n; r++)
            for (int c = 0; c < hidden; c++)
                ref[(long)r * hidden + c] =
                    tok[r] >= 0 && tok[r] < vocab ? lf_bf16_to_f32(table[(long)tok[r] * hidden + c]) : 0.0;
        void *dt = dev_copy(table, sizeof(uint16_t) * vocab * hidden);
        int32_t *dtok = dev_copy(tok, sizeof(int32_t) * n);
        float *dx = dev_alloc(sizeof(float) * n * hidden);
        cudaMemset(dx, 0xff, sizeof(float) * n * hidden);
        CHECK(lf_cuda_embed(dt, vocab, hidden, dtok, n, dx, NULL, &err) == 0, "embed: %s", err.msg);
        if (to_host(x, dx, sizeof(float) * n * hidden) == 0) {
            for (long i = 0; i < (long)n * hidden; i++) got[i] = x[i];
            char what[64];
            snprintf(what, sizeof what, "embed hidden %d", hidden);
            compare(what, ref, got, (long)n * hidden, TOL_F32);
        }
        dev_free_all();
        free(table);
        free(tok);
        free(x);
        free(ref);
        free(got);
    }
    assert_int_equal(g_failures, f0);
}

static void test_rmsnorm(void **state) {
    (void)state;
    const int f0 = g_failures;
    if (!g_have_gpu) skip();
    const int dims[3] = {4096, 1001, 128};
    for (int dc = 0; dc < 3; dc++) {
        const int n = 13, dim = dims[dc];
        const float eps = 1e-6f;
        float *x = malloc(sizeof(float) * n * dim);
        uint16_t *w = malloc(sizeof(uint16_t) * dim), *y = malloc(sizeof(uint16_t) * n * dim);
        double *ref = malloc(sizeof(double) * n * dim), *got = malloc(sizeof(double) * n * dim);
        lf_error err;
        for (long i = 0; i < (long)n * dim; i++) x[i] = (float)(rng_normal() * (1 + i % 7));
        for (int i = 0; i < dim; i++) w[i] = lf_f32_to_bf16((float)(0.5 + rng_uniform()));
        for (int r = 0; r < n; r++) {
            double ss = 0;
            for (int c = 0; c < dim; c++) ss += (double)x[(long)r * dim + c] * x[(long)r * dim + c];
            const double rs = 1.0 / sqrt(ss / dim + eps);
            for (int c = 0; c < dim; c++)
                ref[(long)r * dim + c] = x[(long)r * dim + c] * rs * lf_bf16_to_f32(w[c]);
        }
        float *dx = dev_copy(x, sizeof(float) * n * dim);
        void *dw = dev_copy(w, sizeof(uint16_t) * dim);
        void *dy = dev_alloc(sizeof(uint16_t) * n * dim);
        CHECK(lf_cuda_rmsnorm(dx, dw, n, dim, eps, dy, NULL, &err) == 0, "rmsnorm: %s", err.msg);
        if (to_host(y, dy, sizeof(uint16_t) * n * dim) == 0) {
            for (long i = 0; i < (long)n * dim; i++) got[i] = lf_bf16_to_f32(y[i]);
            char what[64];
            snprintf(what, sizeof what, "rmsnorm dim %d", dim);
            compare(what, ref, got, (long)n * dim, TOL_16);
        }
        dev_free_all();
        free(x);
        free(w);
        free(y);
        free(ref);
        free(got);
    }
    assert_int_equal(g_failures, f0);
}

static void test_bias_swiglu(void **state) {
    (void)state;
    const int f0 = g_failures;
    if (!g_have_gpu) skip();
    lf_error err;
    { /* bias */
        const int n = 9, cols = 3000;
        float *y = malloc(sizeof(float) * n * cols);
        uint16_t *b = malloc(sizeof(uint16_t) * cols);
        double *ref = malloc(sizeof(double) * n * cols), *got = malloc(sizeof(double) * n * cols);
        for (long i = 0; i < (long)n * cols; i++) y[i] = (float)rng_normal();
        for (int i = 0; i < cols; i++) b[i] = lf_f32_to_bf16((float)rng_normal());
        for (long i = 0; i < (long)n * cols; i++) ref[i] = (double)y[i] + lf_bf16_to_f32(b[i % cols]);
        float *dy = dev_copy(y, sizeof(float) * n * cols);
        void *db = dev_copy(b, sizeof(uint16_t) * cols);
        CHECK(lf_cuda_add_bias(dy, db, n, cols, NULL, &err) == 0, "add_bias: %s", err.msg);
        if (to_host(y, dy, sizeof(float) * n * cols) == 0) {
            for (long i = 0; i < (long)n * cols; i++) got[i] = y[i];
            compare("add_bias", ref, got, (long)n * cols, TOL_F32);
        }
        dev_free_all();
        free(y);
        free(b);
        free(ref);
        free(got);
    }
    { /* swiglu */
        const int n = 9, inter = 2000;
        float *gu = malloc(sizeof(float) * n * 2 * inter);
        uint16_t *o = malloc(sizeof(uint16_t) * n * inter);
        double *ref = malloc(sizeof(double) * n * inter), *got = malloc(sizeof(double) * n * inter);
        for (long i = 0; i < (long)n * 2 * inter; i++) gu[i] = (float)(rng_normal() * 3);
        gu[0] = -90.f; /* exp overflow in silu must give -0, not NaN */
        gu[1] = 90.f;
        for (int r = 0; r < n; r++)
            for (int j = 0; j < inter; j++) {
                const double g = gu[(long)r * 2 * inter + j], u = gu[(long)r * 2 * inter + inter + j];
                ref[(long)r * inter + j] = g / (1.0 + exp(-g)) * u;
            }
        float *dgu = dev_copy(gu, sizeof(float) * n * 2 * inter);
        void *dout = dev_alloc(sizeof(uint16_t) * n * inter);
        CHECK(lf_cuda_swiglu(dgu, n, inter, dout, NULL, &err) == 0, "swiglu: %s", err.msg);
        if (to_host(o, dout, sizeof(uint16_t) * n * inter) == 0) {
            for (long i = 0; i < (long)n * inter; i++) got[i] = lf_bf16_to_f32(o[i]);
            compare("swiglu", ref, got, (long)n * inter, TOL_16);
        }
        dev_free_all();
        free(gu);
        free(o);
        free(ref);
        free(got);
    }
    assert_int_equal(g_failures, f0);
}

/* ======================================================================== */
/* The repetition penalty: every history token's logit divided (positive) or
 * multiplied (negative) once, the new token joining the history first,
 * against the same arithmetic on the host (bit-exact: one fp32 division or
 * multiplication per logit). */
static void test_repetition_penalty(void **state) {
    (void)state;
    if (!g_have_gpu) skip();
    const int f0 = g_failures;
    enum { N = 5, E = 7, V = 1000, LD = 1008, H = 40 };
    const int words = (V + 31) / 32;
    const float pen = 1.3f;
    lf_error err = {{0}};
    float *lg = malloc(sizeof(float) * N * LD), *want = malloc(sizeof(float) * N * LD),
          *got = malloc(sizeof(float) * N * LD);
    uint32_t *base = calloc((size_t)E * words, sizeof(uint32_t)), *after = malloc(sizeof(uint32_t) * E * words),
             *seen_got = malloc(sizeof(uint32_t) * E * words);
    int32_t entries[N] = {3, 0, 6, 2, 5}, tokens[N] = {7, 999, -1, 64, 7};
    for (int i = 0; i < N * LD; i++) lg[i] = (float)(rng_normal() * 4);
    /* each entry's history: H tokens, many repeats among 0..39 */
    for (int e = 0; e < E; e++)
        for (int i = 0; i < H; i++) {
            const int t = (int)(rng_u64() % (i % 3 ? 40 : V));
            base[e * words + t / 32] |= 1u << (t % 32);
        }
    memcpy(after, base, sizeof(uint32_t) * E * words);
    for (int r = 0; r < N; r++)
        if (tokens[r] >= 0) after[entries[r] * words + tokens[r] / 32] |= 1u << (tokens[r] % 32);
    memcpy(want, lg, sizeof(float) * N * LD);
    for (int r = 0; r < N; r++)
        for (int t = 0; t < V; t++)
            if (after[entries[r] * words + t / 32] >> (t % 32) & 1u) {
                float *x = &want[r * LD + t];
                *x = *x > 0 ? *x / pen : *x * pen;
            }
    float *dl = dev_copy(lg, sizeof(float) * N * LD);
    uint32_t *ds = dev_copy(base, sizeof(uint32_t) * E * words);
    int32_t *de = dev_copy(entries, sizeof entries), *dt = dev_copy(tokens, sizeof tokens);
    CHECK(lf_cuda_repetition_penalty(dl, N, V, LD, pen, ds, words, de, dt, NULL, &err) == 0, "penalty: %s", err.msg);
    if (to_host(got, dl, sizeof(float) * N * LD) == 0 && to_host(seen_got, ds, sizeof(uint32_t) * E * words) == 0) {
        long bad = 0;
        for (int i = 0; i < N * LD; i++) bad += memcmp(&got[i], &want[i], 4) != 0;
        CHECK(bad == 0, "repetition penalty: %ld of %d logits differ from the host's", bad, N * LD);
        CHECK(memcmp(seen_got, after, sizeof(uint32_t) * E * words) == 0,
              "the histories after the step are not the old ones plus each row's token");
    }
    /* a history built from a prompt */
    int32_t prompt[6] = {5, 5, 999, 0, 31, 32};
    int32_t *dp = dev_copy(prompt, sizeof prompt);
    CHECK(lf_cuda_history_reset(ds, words, dp, 6, NULL, &err) == 0, "history reset: %s", err.msg);
    if (to_host(seen_got, ds, sizeof(uint32_t) * words) == 0) {
        uint32_t w[32] = {0};
        for (int i = 0; i < 6; i++) w[prompt[i] / 32] |= 1u << (prompt[i] % 32);
        long bad = 0;
        for (int i = 0; i < words; i++) bad += seen_got[i] != (i < 32 ? w[i] : 0u);
        CHECK(bad == 0, "history reset: %ld words wrong", bad);
    }
    CHECK(lf_cuda_repetition_penalty(dl, N, V, LD, 0.f, ds, words, de, dt, NULL, &err) == -1 && strstr(err.msg, "> 0"),
          "penalty 0 accepted: '%s'", err.msg);
    CHECK(lf_cuda_repetition_penalty(dl, N, V, LD, pen, ds, words + 1, de, dt, NULL, &err) == -1 &&
              strstr(err.msg, "bad shape"),
          "a wrong word count accepted: '%s'", err.msg);
    dev_free_all();
    free(lg);
    free(want);
    free(got);
    free(base);
    free(after);
    free(seen_got);
    assert_int_equal(g_failures, f0);
}

/* ======================================================================== */
/* The window softmax sums (SnapKV's and H2O/VATP's prefill) against a double
 * reference written here, and SnapKV's selection from the GPU's sums against
 * the CPU's lf_snapkv_select from q and k. */
static void window_case(int n, int nh, int nkv, int hd, int causal) {
    const int w = causal ? (n < 32 ? n : 32) : 32, t0 = n - w, rep = nh / nkv;
    const float wgt = causal ? 1.f / (float)nh : 1.f;
    char what[96];
    snprintf(what, sizeof what, "window sums n %d heads %d/%d hd %d %s", n, nh, nkv, hd,
             causal ? "causal" : "SnapKV");
    lf_error err = {{0}};
    float *q = malloc(sizeof(float) * n * nh * hd), *k = malloc(sizeof(float) * n * nkv * hd);
    float *got = malloc(sizeof(float) * n);
    double *ref = calloc((size_t)n, sizeof(double)), *gd = malloc(sizeof(double) * n),
           *row = malloc(sizeof(double) * n);
    for (long i = 0; i < (long)n * nh * hd; i++) q[i] = (float)(rng_normal() * 1.5);
    for (long i = 0; i < (long)n * nkv * hd; i++) k[i] = (float)rng_normal();
    for (int h = 0; h < nh; h++)
        for (int t = t0; t < n; t++) {
            const int keys = causal ? t + 1 : t0;
            double mx = -INFINITY, z = 0;
            for (int j = 0; j < keys; j++) {
                double d = 0;
                for (int e = 0; e < hd; e++)
                    d += (double)q[((long)t * nh + h) * hd + e] * k[((long)j * nkv + h / rep) * hd + e];
                row[j] = d / sqrt((double)hd);
                if (row[j] > mx) mx = row[j];
            }
            for (int j = 0; j < keys; j++) z += exp(row[j] - mx);
            for (int j = 0; j < keys; j++) ref[j] += wgt * exp(row[j] - mx) / z;
        }
    const size_t sb = lf_cuda_window_sums_bytes(n, nh, w);
    float *dq = dev_copy(q, sizeof(float) * n * nh * hd), *dk = dev_copy(k, sizeof(float) * n * nkv * hd);
    float *dout = dev_alloc(sizeof(float) * n);
    void *ds = dev_alloc(sb);
    CHECK(lf_cuda_window_sums(dq, dk, n, nh, nkv, hd, w, causal, wgt, dout, ds, sb, NULL, &err) == 0, "%s: %s", what,
          err.msg);
    if (to_host(got, dout, sizeof(float) * n) == 0) {
        for (int j = 0; j < n; j++) gd[j] = got[j];
        compare(what, ref, gd, n, 1e-5);
        if (!causal) {
            for (int j = t0; j < n; j++) CHECK(got[j] == 0.f, "%s: window key %d has sum %g", what, j, got[j]);
            const int keep = 33 + (n - 33) / 2; /* SnapKV keeps more than its 32-token window, fewer than n */
            int32_t *kc = malloc(sizeof(int32_t) * keep), *kg = malloc(sizeof(int32_t) * keep);
            CHECK(lf_snapkv_select(q, k, n, nh, nkv, hd, keep, 0, kc, &err) == 0, "%s: cpu select: %s", what,
                  err.msg);
            CHECK(lf_snapkv_select_from_sums(got, n, keep, 0, kg, &err) == 0, "%s: select: %s", what, err.msg);
            CHECK(memcmp(kc, kg, sizeof(int32_t) * keep) == 0, "%s: SnapKV keeps other positions from the GPU's sums",
                  what);
            free(kc);
            free(kg);
        }
    }
    dev_free_all();
    free(q);
    free(k);
    free(got);
    free(ref);
    free(gd);
    free(row);
}

static void test_window_sums(void **state) {
    (void)state;
    if (!g_have_gpu) skip();
    const int f0 = g_failures;
    window_case(40, 4, 2, 64, 0);
    window_case(40, 4, 2, 64, 1);
    window_case(20, 4, 4, 64, 1); /* a prompt shorter than the window */
    window_case(300, 8, 2, 128, 0);
    window_case(300, 8, 2, 128, 1);
    window_case(1000, 16, 8, 128, 0);
    window_case(1000, 16, 8, 128, 1);
    lf_error err = {{0}};
    float x;
    CHECK(lf_cuda_window_sums(&x, &x, 32, 4, 2, 64, 32, 0, 1.f, &x, &x, 1 << 20, NULL, &err) == -1 &&
              strstr(err.msg, "window of 32"),
          "a SnapKV window as long as the prompt accepted: '%s'", err.msg);
    CHECK(lf_cuda_window_sums(&x, &x, 64, 4, 3, 64, 32, 1, 1.f, &x, &x, 1 << 20, NULL, &err) == -1 &&
              strstr(err.msg, "bad shape"),
          "4 heads over 3 KV heads accepted: '%s'", err.msg);
    CHECK(lf_cuda_window_sums(&x, &x, 64, 4, 2, 64, 32, 1, 1.f, &x, &x, 16, NULL, &err) == -1 &&
              strstr(err.msg, "scratch"),
          "a 16-byte scratch accepted: '%s'", err.msg);
    assert_int_equal(g_failures, f0);
}

/* ======================================================================== */
typedef struct rope_case {
    const char *name;
    int n, nh, nkv, hd;
    lf_dtype dt;
    int bias, qk_norm, head_major, f32_copies, cache_pos;
    int layout; /* 0: slot = row (entry 0); 1: row_slot; 2: row_entry + slot_by_entry (decode) */
    int max_pos;
    float attention_factor;
} rope_case;

/* The host side of one rope_store case: inputs, the double reference, and
 * the scratch to compare with. */
typedef struct rope_host {
    int entries, cap, skip_entry;
    int64_t kvh_stride, entry_stride, slot_stride;
    long cache_elems, pos_elems;
    float *qkv, *inv_freq;
    uint16_t *bias, *qn, *kn, *kc, *vc, *q16;
    int32_t *pos, *row_entry, *slot_by_entry, *row_slot, *cpos, *ref_cpos;
    double *ref_k, *ref_v, *ref_q, *ref_kf, *got, *refbuf, *x;
    char *written; /* per cache element: 1 = K written, 2 = V written */
    float *qf, *kf;
} rope_host;

static void rope_free(rope_host *h) {
    void *all[] = {h->qkv, h->inv_freq, h->bias, h->qn, h->kn, h->kc, h->vc, h->q16, h->pos, h->row_entry,
                   h->slot_by_entry, h->row_slot, h->cpos, h->ref_cpos, h->ref_k, h->ref_v, h->ref_q, h->ref_kf,
                   h->got, h->refbuf, h->x, h->written, h->qf, h->kf};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
}

static void rope_alloc(const rope_case *c, rope_host *h) {
    const int n = c->n, nh = c->nh, nkv = c->nkv, hd = c->hd, tot = nh + 2 * nkv;
    memset(h, 0, sizeof *h);
    h->entries = c->layout == 2 ? n + 3 : 1;
    h->cap = c->layout == 0 ? n + 5 : 2 * n + 7;
    h->kvh_stride = (int64_t)h->cap * hd + 24;
    h->entry_stride = nkv * h->kvh_stride + 40;
    h->slot_stride = h->cap + 3;
    h->cache_elems = (long)h->entries * h->entry_stride;
    h->pos_elems = (long)h->entries * h->slot_stride;
    h->skip_entry = c->layout == 2 ? 1 : -1; /* this entry has no room: slot -1 */
    const long qn_elems = (long)n * nh * hd, big = h->cache_elems > qn_elems ? h->cache_elems : qn_elems;
    h->qkv = malloc(sizeof(float) * n * tot * hd);
    h->bias = malloc(sizeof(uint16_t) * tot * hd);
    h->qn = malloc(sizeof(uint16_t) * hd);
    h->kn = malloc(sizeof(uint16_t) * hd);
    h->inv_freq = malloc(sizeof(float) * (hd / 2));
    h->pos = malloc(sizeof(int32_t) * n);
    h->row_entry = malloc(sizeof(int32_t) * n);
    h->slot_by_entry = malloc(sizeof(int32_t) * h->entries);
    h->row_slot = malloc(sizeof(int32_t) * n);
    h->kc = malloc(sizeof(uint16_t) * h->cache_elems);
    h->vc = malloc(sizeof(uint16_t) * h->cache_elems);
    h->cpos = malloc(sizeof(int32_t) * h->pos_elems);
    h->ref_cpos = malloc(sizeof(int32_t) * h->pos_elems);
    h->ref_k = malloc(sizeof(double) * h->cache_elems);
    h->ref_v = malloc(sizeof(double) * h->cache_elems);
    h->written = calloc((size_t)h->cache_elems, 1);
    h->ref_q = malloc(sizeof(double) * qn_elems);
    h->ref_kf = malloc(sizeof(double) * n * nkv * hd);
    h->q16 = malloc(sizeof(uint16_t) * qn_elems);
    h->qf = malloc(sizeof(float) * qn_elems);
    h->kf = malloc(sizeof(float) * n * nkv * hd);
    h->got = malloc(sizeof(double) * big);
    h->refbuf = malloc(sizeof(double) * big);
    h->x = malloc(sizeof(double) * hd);
}

/* Random activations, bias and norms; distinct slots and entries; a cache
 * filled with a pattern that must survive where nothing is written. */
static void rope_inputs(const rope_case *c, rope_host *h) {
    const int n = c->n, hd = c->hd, half = hd / 2, tot = c->nh + 2 * c->nkv;
    for (long i = 0; i < (long)n * tot * hd; i++) h->qkv[i] = (float)(rng_normal() * 2);
    for (int i = 0; i < tot * hd; i++) h->bias[i] = lf_f32_to_bf16((float)(rng_normal() * 0.5));
    for (int i = 0; i < hd; i++) {
        h->qn[i] = lf_f32_to_bf16((float)(0.5 + rng_uniform()));
        h->kn[i] = lf_f32_to_bf16((float)(0.5 + rng_uniform()));
    }
    const double theta = hd == 128 ? 1000000.0 : 10000.0;
    for (int i = 0; i < half; i++) h->inv_freq[i] = (float)(1.0 / pow(theta, (double)(2 * i) / hd));
    for (int r = 0; r < n; r++) h->pos[r] = r == 0 ? c->max_pos : rng_int(c->max_pos + 1);
    for (int r = 0; r < n; r++) h->row_slot[r] = 2 * r + 1;
    for (int r = 0; r < n; r++) h->row_entry[r] = (r * 7 + 2) % h->entries; /* distinct since gcd(7, n+3) = 1 below */
    for (int e = 0; e < h->entries; e++) h->slot_by_entry[e] = e == h->skip_entry ? -1 : (e * 5 + 3) % h->cap;
    for (long i = 0; i < h->cache_elems; i++) {
        h->kc[i] = (uint16_t)(0x1234 + i % 97);
        h->vc[i] = (uint16_t)(0x2345 + i % 89);
    }
    for (long i = 0; i < h->pos_elems; i++) h->cpos[i] = -7;
    memcpy(h->ref_cpos, h->cpos, sizeof(int32_t) * h->pos_elems);
}

/* One head's row in double: bias, then for q and k the norm and the rotation
 * (fp32 angle, as transformers). kind: 0 q, 1 k, 2 v. */
static void rope_ref_row(const rope_case *c, const rope_host *h, int r, int hh, int kind) {
    const int hd = c->hd, half = hd / 2, tot = c->nh + 2 * c->nkv;
    double *x = h->x;
    for (int d = 0; d < hd; d++)
        x[d] = (double)h->qkv[((long)r * tot + hh) * hd + d] + (c->bias ? lf_bf16_to_f32(h->bias[hh * hd + d]) : 0.0);
    if (kind == 2) return;
    if (c->qk_norm) {
        double ss = 0;
        for (int d = 0; d < hd; d++) ss += x[d] * x[d];
        const double rs = 1.0 / sqrt(ss / hd + 1e-6);
        const uint16_t *w = kind == 0 ? h->qn : h->kn;
        for (int d = 0; d < hd; d++) x[d] = x[d] * rs * lf_bf16_to_f32(w[d]);
    }
    for (int i = 0; i < half; i++) {
        const float ang = (float)h->pos[r] * h->inv_freq[i];
        const double cs = cos((double)ang) * c->attention_factor, sn = sin((double)ang) * c->attention_factor;
        const double a = x[i], b = x[i + half];
        x[i] = a * cs - b * sn;
        x[i + half] = b * cs + a * sn;
    }
}

/* The reference: q rows, k rows (f32 copies) and the cache elements each
 * layout writes (marked in `written`), with their positions. */
static void rope_reference(const rope_case *c, rope_host *h) {
    const int nh = c->nh, nkv = c->nkv, hd = c->hd, tot = nh + 2 * nkv;
    for (int r = 0; r < c->n; r++) {
        int e = 0, s = r;
        if (c->layout == 1) s = h->row_slot[r];
        if (c->layout == 2) {
            e = h->row_entry[r];
            s = h->slot_by_entry[e];
        }
        if (s >= 0 && c->cache_pos) h->ref_cpos[(long)e * h->slot_stride + s] = h->pos[r];
        for (int hh = 0; hh < tot; hh++) {
            const int kind = hh < nh ? 0 : hh < nh + nkv ? 1 : 2;
            rope_ref_row(c, h, r, hh, kind);
            if (kind == 0) {
                for (int d = 0; d < hd; d++) h->ref_q[((long)r * nh + hh) * hd + d] = h->x[d];
                continue;
            }
            const int kh = kind == 1 ? hh - nh : hh - nh - nkv;
            if (kind == 1)
                for (int d = 0; d < hd; d++) h->ref_kf[((long)r * nkv + kh) * hd + d] = h->x[d];
            if (s < 0) continue;
            for (int d = 0; d < hd; d++) {
                const long o = (long)e * h->entry_stride + (long)kh * h->kvh_stride + (long)s * hd + d;
                (kind == 1 ? h->ref_k : h->ref_v)[o] = h->x[d];
                h->written[o] |= (char)(kind == 1 ? 1 : 2);
            }
        }
    }
}

/* Device copies of the inputs and the call. */
typedef struct rope_dev {
    float *qkv, *qf, *kf;
    void *q, *k, *v;
    int32_t *cpos;
} rope_dev;

static int rope_gpu(const rope_case *c, const rope_host *h, rope_dev *d, lf_error *err) {
    const int n = c->n, nh = c->nh, nkv = c->nkv, hd = c->hd, tot = nh + 2 * nkv;
    d->qkv = dev_copy(h->qkv, sizeof(float) * n * tot * hd);
    d->q = dev_alloc(sizeof(uint16_t) * n * nh * hd);
    d->qf = dev_alloc(sizeof(float) * n * nh * hd);
    d->kf = dev_alloc(sizeof(float) * n * nkv * hd);
    d->k = dev_copy(h->kc, sizeof(uint16_t) * h->cache_elems);
    d->v = dev_copy(h->vc, sizeof(uint16_t) * h->cache_elems);
    d->cpos = dev_copy(h->cpos, sizeof(int32_t) * h->pos_elems);
    lf_cuda_rope_store_args a;
    memset(&a, 0, sizeof a);
    a.n = n;
    a.n_heads = nh;
    a.n_kv_heads = nkv;
    a.head_dim = hd;
    a.dt = c->dt;
    a.qkv = d->qkv;
    a.bias = c->bias ? dev_copy(h->bias, sizeof(uint16_t) * tot * hd) : NULL;
    a.q_norm = c->qk_norm ? dev_copy(h->qn, sizeof(uint16_t) * hd) : NULL;
    a.k_norm = c->qk_norm ? dev_copy(h->kn, sizeof(uint16_t) * hd) : NULL;
    a.eps = 1e-6f;
    a.inv_freq = dev_copy(h->inv_freq, sizeof(float) * (hd / 2));
    a.attention_factor = c->attention_factor;
    a.pos = dev_copy(h->pos, sizeof(int32_t) * n);
    a.q_out = d->q;
    a.q_head_major = c->head_major;
    a.q_f32 = c->f32_copies ? d->qf : NULL;
    a.k_f32 = c->f32_copies ? d->kf : NULL;
    a.k_dst = d->k;
    a.v_dst = d->v;
    a.kv_entry_stride = h->entry_stride;
    a.kvh_stride = h->kvh_stride;
    a.row_entry = c->layout == 2 ? dev_copy(h->row_entry, sizeof(int32_t) * n) : NULL;
    a.slot_by_entry = c->layout == 2 ? dev_copy(h->slot_by_entry, sizeof(int32_t) * h->entries) : NULL;
    a.row_slot = c->layout == 1 ? dev_copy(h->row_slot, sizeof(int32_t) * n) : NULL;
    a.cache_pos = c->cache_pos ? d->cpos : NULL;
    a.slot_entry_stride = h->slot_stride;
    return lf_cuda_rope_store(&a, NULL, err);
}

/* q_out (in its layout) and the f32 copies against the reference. */
static int rope_check_q(const rope_case *c, rope_host *h, const rope_dev *d) {
    const int n = c->n, nh = c->nh, nkv = c->nkv, hd = c->hd;
    char what[160];
    if (to_host(h->q16, d->q, sizeof(uint16_t) * n * nh * hd)) return -1;
    for (int r = 0; r < n; r++)
        for (int hh = 0; hh < nh; hh++)
            for (int k = 0; k < hd; k++) {
                const long o = c->head_major ? ((long)hh * n + r) * hd + k : ((long)r * nh + hh) * hd + k;
                h->got[((long)r * nh + hh) * hd + k] = from16(h->q16[o], c->dt);
            }
    snprintf(what, sizeof what, "%s: q_out", c->name);
    compare(what, h->ref_q, h->got, (long)n * nh * hd, TOL_16);
    if (!c->f32_copies) return 0;
    if (to_host(h->qf, d->qf, sizeof(float) * n * nh * hd) || to_host(h->kf, d->kf, sizeof(float) * n * nkv * hd))
        return -1;
    for (long i = 0; i < (long)n * nh * hd; i++) h->got[i] = h->qf[i];
    snprintf(what, sizeof what, "%s: q_f32", c->name);
    compare(what, h->ref_q, h->got, (long)n * nh * hd, TOL_F32);
    for (long i = 0; i < (long)n * nkv * hd; i++) h->got[i] = h->kf[i];
    snprintf(what, sizeof what, "%s: k_f32", c->name);
    compare(what, h->ref_kf, h->got, (long)n * nkv * hd, TOL_F32);
    return 0;
}

/* The cache: written elements compared numerically, all others untouched;
 * then the positions. */
static int rope_check_cache(const rope_case *c, rope_host *h, const rope_dev *d) {
    char what[160];
    for (int kv = 0; kv < 2; kv++) {
        const uint16_t *h0 = kv ? h->vc : h->kc;
        uint16_t *hb = malloc(sizeof(uint16_t) * h->cache_elems);
        if (to_host(hb, kv ? d->v : d->k, sizeof(uint16_t) * h->cache_elems)) {
            free(hb);
            return -1;
        }
        long m = 0, untouched_bad = -1;
        for (long i = 0; i < h->cache_elems; i++) {
            if (h->written[i] & (kv ? 2 : 1)) {
                h->got[m] = from16(hb[i], c->dt);
                h->refbuf[m] = (kv ? h->ref_v : h->ref_k)[i];
                m++;
            } else if (hb[i] != h0[i] && untouched_bad < 0) {
                untouched_bad = i;
            }
        }
        snprintf(what, sizeof what, "%s: cache %s", c->name, kv ? "v" : "k");
        compare(what, h->refbuf, h->got, m, TOL_16);
        CHECK(untouched_bad < 0, "%s: cache %s element %ld written but should not be (0x%04x, was 0x%04x)", c->name,
              kv ? "v" : "k", untouched_bad, untouched_bad >= 0 ? hb[untouched_bad] : 0,
              untouched_bad >= 0 ? h0[untouched_bad] : 0);
        free(hb);
    }
    if (to_host(h->cpos, d->cpos, sizeof(int32_t) * h->pos_elems)) return -1;
    for (long i = 0; i < h->pos_elems; i++)
        if (h->cpos[i] != h->ref_cpos[i]) {
            CHECK(0, "%s: cache_pos[%ld] = %d, want %d", c->name, i, h->cpos[i], h->ref_cpos[i]);
            break;
        }
    return 0;
}

static void run_rope(const rope_case *c) {
    rope_host h;
    rope_dev d;
    lf_error err;
    rope_alloc(c, &h);
    rope_inputs(c, &h);
    rope_reference(c, &h);
    if (rope_gpu(c, &h, &d, &err)) CHECK(0, "%s: rope_store: %s", c->name, err.msg);
    else if (rope_check_q(c, &h, &d) == 0) rope_check_cache(c, &h, &d);
    dev_free_all();
    rope_free(&h);
}

static void test_rope_store(void **state) {
    (void)state;
    const int f0 = g_failures;
    if (!g_have_gpu) skip();
    /* name, n, nh, nkv, hd, dt, bias, qk_norm, head_major, f32, cache_pos, layout, max_pos, attention_factor */
    const rope_case cases[] = {
        {"prefill bias token-major 16/8 hd128", 19, 16, 8, 128, LF_DTYPE_BF16, 1, 0, 0, 1, 1, 0, 30000, 1.f},
        {"prefill qwen3 head-major 32/8 hd128", 23, 32, 8, 128, LF_DTYPE_BF16, 0, 1, 1, 1, 1, 0, 30000, 1.f},
        {"row_slot qwen3 bias 16/8 hd64 f16", 11, 16, 8, 64, LF_DTYPE_F16, 1, 1, 0, 1, 0, 1, 30000, 1.f},
        {"decode slot_by_entry 32/8 hd128", 16, 32, 8, 128, LF_DTYPE_BF16, 0, 1, 0, 0, 1, 2, 30000, 1.f},
        {"decode slot_by_entry bias 16/8 hd64 yarn", 9, 16, 8, 64, LF_DTYPE_BF16, 1, 0, 1, 1, 1, 2, 4000, 1.25f},
        {"decode f16 32/8 hd64", 16, 32, 8, 64, LF_DTYPE_F16, 1, 1, 0, 1, 1, 2, 30000, 1.f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_rope(&cases[i]);
    assert_int_equal(g_failures, f0);
}

/* ======================================================================== */
typedef struct pf_case {
    int n, nh, nkv, hd;
    lf_dtype dt;
    int chunk; /* 0 = the context's default */
    float scale;
} pf_case;

static void run_prefill(const pf_case *c) {
    const int n = c->n, nh = c->nh, nkv = c->nkv, hd = c->hd, G = nh / nkv;
    const lf_dtype dt = c->dt;
    const int cap = n + 13;
    const int64_t kvh_stride = (int64_t)cap * hd;
    uint16_t *q = malloc(sizeof(uint16_t) * nh * n * hd), *k = malloc(sizeof(uint16_t) * nkv * kvh_stride),
             *v = malloc(sizeof(uint16_t) * nkv * kvh_stride), *o = malloc(sizeof(uint16_t) * n * nh * hd);
    double *ref = malloc(sizeof(double) * n * nh * hd), *got = malloc(sizeof(double) * n * nh * hd);
    double *s = malloc(sizeof(double) * n);
    lf_cuda_prefill_attn *pf = NULL;
    lf_error err;
    char what[128];
    snprintf(what, sizeof what, "prefill n %d heads %d/%d hd %d %s chunk %d", n, nh, nkv, hd,
             dt == LF_DTYPE_BF16 ? "bf16" : "f16", c->chunk);
    for (long i = 0; i < (long)nh * n * hd; i++) q[i] = to16(rng_normal() * 1.5, dt);
    for (long i = 0; i < (long)nkv * kvh_stride; i++) {
        const long t = (i % kvh_stride) / hd;
        /* rows past the prompt hold NaN: they must never be read */
        k[i] = t < n ? to16(rng_normal(), dt) : 0x7fff;
        v[i] = t < n ? to16(rng_normal(), dt) : 0x7fff;
    }
    const double scale = c->scale > 0 ? c->scale : 1.0 / sqrt((double)hd);
    for (int h = 0; h < nh; h++) {
        const int j = h / G;
        for (int t = 0; t < n; t++) {
            double m = -INFINITY, sum = 0;
            for (int u = 0; u <= t; u++) {
                double d = 0;
                for (int e = 0; e < hd; e++)
                    d += from16(q[((long)h * n + t) * hd + e], dt) * from16(k[j * kvh_stride + (long)u * hd + e], dt);
                s[u] = d * scale;
                if (s[u] > m) m = s[u];
            }
            for (int u = 0; u <= t; u++) {
                s[u] = exp(s[u] - m);
                sum += s[u];
            }
            double *out = ref + ((long)t * nh + h) * hd;
            for (int e = 0; e < hd; e++) out[e] = 0;
            for (int u = 0; u <= t; u++) {
                const double p = s[u] / sum;
                for (int e = 0; e < hd; e++) out[e] += p * from16(v[j * kvh_stride + (long)u * hd + e], dt);
            }
        }
    }
    if (lf_cuda_prefill_create(n + 5, nh, nkv, hd, dt, &pf, &err)) {
        CHECK(0, "%s: create: %s", what, err.msg);
        goto done;
    }
    CHECK(lf_cuda_prefill_bytes(pf) > 0, "%s: prefill_bytes is 0", what);
    if (c->chunk) CHECK(lf_cuda_prefill_set_chunk(pf, c->chunk, &err) == 0, "%s: set_chunk: %s", what, err.msg);
    void *dq = dev_copy(q, sizeof(uint16_t) * nh * n * hd);
    void *dk = dev_copy(k, sizeof(uint16_t) * nkv * kvh_stride), *dv = dev_copy(v, sizeof(uint16_t) * nkv * kvh_stride);
    void *dout = dev_alloc(sizeof(uint16_t) * n * nh * hd);
    if (cudaMemset(dout, 0xff, sizeof(uint16_t) * n * nh * hd) != cudaSuccess) CHECK(0, "memset");
    if (lf_cuda_prefill_attention(pf, dq, dk, dv, kvh_stride, n, c->scale, dout, NULL, &err)) {
        CHECK(0, "%s: attention: %s", what, err.msg);
        goto done;
    }
    if (to_host(o, dout, sizeof(uint16_t) * n * nh * hd)) goto done;
    for (long i = 0; i < (long)n * nh * hd; i++) got[i] = from16(o[i], dt);
    compare(what, ref, got, (long)n * nh * hd, TOL_ATTN);
    /* too many tokens for the context */
    CHECK(lf_cuda_prefill_attention(pf, dq, dk, dv, kvh_stride, n + 6, 0.f, dout, NULL, &err) == -1 &&
              strstr(err.msg, "cuda prefill"),
          "%s: n > max_n accepted", what);
done:
    lf_cuda_prefill_free(pf);
    dev_free_all();
    free(q);
    free(k);
    free(v);
    free(o);
    free(ref);
    free(got);
    free(s);
}

static void test_prefill(void **state) {
    (void)state;
    const int f0 = g_failures;
    if (!g_have_gpu) skip();
    const pf_case cases[] = {
        {1, 16, 8, 128, LF_DTYPE_BF16, 0, 0.f},   {7, 32, 8, 64, LF_DTYPE_F16, 0, 0.f},
        {7, 8, 8, 128, LF_DTYPE_BF16, 3, 0.f},    {64, 8, 8, 128, LF_DTYPE_BF16, 16, 0.f},
        {64, 32, 8, 128, LF_DTYPE_BF16, 0, 0.2f}, {333, 32, 8, 128, LF_DTYPE_BF16, 100, 0.f},
        {333, 16, 8, 64, LF_DTYPE_F16, 0, 0.f},   {1100, 16, 8, 64, LF_DTYPE_BF16, 0, 0.f},
        {1100, 8, 8, 128, LF_DTYPE_BF16, 257, 0.f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_prefill(&cases[i]);
    assert_int_equal(g_failures, f0);
}

/* ======================================================================== */
static void test_gather_rows(void **state) {
    (void)state;
    const int f0 = g_failures;
    if (!g_have_gpu) skip();
    const int hds[2] = {128, 72};
    for (int hc = 0; hc < 2; hc++) {
        const int nkv = 8, hd = hds[hc], cap = 300, nk = 97;
        const int64_t ss = (int64_t)cap * hd + (hc ? 3 : 8), ds = (int64_t)nk * hd + (hc ? 5 : 16);
        uint16_t *src = malloc(sizeof(uint16_t) * nkv * ss), *dst = malloc(sizeof(uint16_t) * nkv * ds);
        int32_t *idx = malloc(sizeof(int32_t) * nk);
        lf_error err;
        for (long i = 0; i < (long)nkv * ss; i++) src[i] = (uint16_t)rng_u64();
        for (int i = 0; i < nk; i++) idx[i] = rng_int(cap);
        idx[4] = idx[5]; /* repeats are fine */
        idx[9] = -1;     /* negative: zero row */
        void *dsrc = dev_copy(src, sizeof(uint16_t) * nkv * ss);
        uint16_t *ddst = dev_alloc(sizeof(uint16_t) * nkv * ds);
        int32_t *didx = dev_copy(idx, sizeof(int32_t) * nk);
        cudaMemset(ddst, 0x5a, sizeof(uint16_t) * nkv * ds);
        CHECK(lf_cuda_gather_rows(dsrc, ss, ddst, ds, nkv, hd, LF_DTYPE_BF16, didx, nk, NULL, &err) == 0,
              "gather_rows: %s", err.msg);
        if (to_host(dst, ddst, sizeof(uint16_t) * nkv * ds) == 0) {
            int bad = 0;
            for (int h = 0; h < nkv && !bad; h++)
                for (int i = 0; i < nk && !bad; i++)
                    for (int d = 0; d < hd; d++) {
                        const uint16_t want = idx[i] < 0 ? 0 : src[h * ss + (long)idx[i] * hd + d];
                        const uint16_t g = dst[h * ds + (long)i * hd + d];
                        if (g != want) {
                            CHECK(0, "gather_rows hd %d: kvh %d row %d (index %d) d %d: 0x%04x, want 0x%04x", hd, h, i,
                                  idx[i], d, g, want);
                            bad = 1;
                            break;
                        }
                    }
            for (int h = 0; h < nkv; h++)
                for (long i = (long)nk * hd; i < ds; i++)
                    if (dst[h * ds + i] != 0x5a5a) {
                        CHECK(0, "gather_rows hd %d: wrote past row %d of KV head %d", hd, nk, h);
                        h = nkv;
                        break;
                    }
        }
        dev_free_all();
        free(src);
        free(dst);
        free(idx);
    }
    assert_int_equal(g_failures, f0);
}

/* ======================================================================== */
#define VOCAB 151936

static void test_sample_greedy(void **state) {
    (void)state;
    const int f0 = g_failures;
    if (!g_have_gpu) skip();
    const int n = 64, V = VOCAB;
    float *lg = malloc(sizeof(float) * n * V);
    int32_t *want = malloc(sizeof(int32_t) * n), *got = malloc(sizeof(int32_t) * n);
    lf_error err;
    for (int r = 0; r < n; r++) {
        float *x = lg + (long)r * V;
        for (int i = 0; i < V; i++) x[i] = (float)(rng_normal() * 3);
        const int a = rng_int(V), b = rng_int(V);
        const float top = 40.f + (float)r;
        if (r % 4 == 0) { /* planted tie: the lower index wins */
            x[a] = top;
            x[b] = top;
        } else if (r % 4 == 1 && r % 8 == 1) { /* NaNs around, even at index 0: refused */
            x[a] = top;
            x[0] = NAN;
            x[b] = NAN;
            for (int j = 0; j < 50; j++) x[rng_int(V)] = NAN;
            x[a] = top;
        } else if (r % 4 == 1) { /* -inf masks around, even at index 0 and the last: the argmax of the rest */
            x[a] = top;
            x[0] = -INFINITY;
            x[V - 1] = -INFINITY;
            for (int j = 0; j < 50; j++) x[rng_int(V)] = -INFINITY;
            x[a] = top;
        } else if (r % 4 == 2) { /* the maximum at the very end, all negative */
            for (int i = 0; i < V; i++) x[i] = -fabsf(x[i]) - 1.f;
            x[V - 1] = -0.5f;
        } else if (r == 3) { /* every value equal: index 0 */
            for (int i = 0; i < V; i++) x[i] = 1.5f;
        } else if (r == 7) { /* every value NaN: refused */
            for (int i = 0; i < V; i++) x[i] = NAN;
        } else if (r == 11) { /* every value -inf: refused */
            for (int i = 0; i < V; i++) x[i] = -INFINITY;
        } else if (r == 15) { /* one +inf at the very end: refused */
            x[V - 1] = INFINITY;
        } else if (r == 19) { /* a NaN at the very end only: refused */
            x[V - 1] = NAN;
        }
        /* the CPU sampler's rule, written out: NaN or +inf anywhere, or no
         * value above -inf, is refused; else the argmax, lowest index on ties */
        int best = -1;
        bool broken = false;
        for (int i = 0; i < V; i++) {
            broken |= isnan(x[i]) || x[i] == INFINITY;
            if (x[i] > -INFINITY && (best < 0 || x[i] > x[best])) best = i;
        }
        want[r] = broken || best < 0 ? LF_SAMPLE_NONFINITE : best;
    }
    float *dl = dev_copy(lg, sizeof(float) * n * V);
    int32_t *dout = dev_alloc(sizeof(int32_t) * n);
    lf_sampling sp;
    lf_sampling_default(&sp);
    sp.temperature = 0.f;
    sp.top_k = 5; /* ignored when greedy */
    CHECK(lf_cuda_sample(dl, n, V, &sp, NULL, NULL, dout, NULL, 0, NULL, &err) == 0, "sample greedy: %s", err.msg);
    if (to_host(got, dout, sizeof(int32_t) * n) == 0)
        for (int r = 0; r < n; r++) CHECK(got[r] == want[r], "greedy row %d: token %d, want %d", r, got[r], want[r]);
    dev_free_all();
    free(lg);
    free(want);
    free(got);
    assert_int_equal(g_failures, f0);
}

/* Logits for the distribution tests: NP "plausible" tokens at distinct values
 * spread over the vocabulary, the rest low (their total mass is still seen). */
#define NP 48
static int g_ptok[NP];

static void make_dist_logits(float *x, int V, int tie) {
    for (int i = 0; i < V; i++) x[i] = (float)(-6.0 - 3.0 * rng_uniform());
    for (int j = 0; j < NP; j++) {
        int t;
        do {
            t = rng_int(V);
        } while (x[t] > -5.5f);
        g_ptok[j] = t;
        x[t] = 4.0f - 0.2f * (float)j; /* distinct, decreasing with j, all above -5.5 */
    }
    if (tie) x[g_ptok[5]] = x[g_ptok[4]]; /* the 5th and 6th largest are equal */
}

/* Exact distribution in double, as the kernel documents it: softmax(x/T);
 * top-k keeps values >= the k-th largest; top-p the smallest set of largest
 * probabilities with mass >= top_p; min-p drops p < min_p * p_max. */
static void exact_dist(const float *x, int V, float T, int top_k, double top_p, double min_p, double *p) {
    double m = -INFINITY, z = 0;
    for (int i = 0; i < V; i++)
        if (x[i] > m) m = x[i];
    for (int i = 0; i < V; i++) {
        p[i] = exp(((double)x[i] - m) / T);
        z += p[i];
    }
    for (int i = 0; i < V; i++) p[i] /= z;
    /* order of the plausible tokens, then everything else, by value desc */
    double thr = -INFINITY;
    if (top_k > 0 && top_k < V) { /* k-th largest value (the plausible set holds the top NP) */
        float vals[NP];
        for (int j = 0; j < NP; j++) vals[j] = x[g_ptok[j]];
        for (int a = 0; a < NP; a++)
            for (int b = a + 1; b < NP; b++)
                if (vals[b] > vals[a]) {
                    float t = vals[a];
                    vals[a] = vals[b];
                    vals[b] = t;
                }
        thr = vals[top_k - 1];
        double zz = 0;
        for (int i = 0; i < V; i++) {
            if (x[i] < thr) p[i] = 0;
            zz += p[i];
        }
        for (int i = 0; i < V; i++) p[i] /= zz;
    }
    if (top_p < 1) { /* nucleus over the plausible tokens (top_p is chosen below their mass) */
        double acc = 0;
        double cut = INFINITY;
        for (int j = 0; j < NP; j++) { /* plausible tokens are already in decreasing order */
            acc += p[g_ptok[j]];
            if (acc >= top_p) {
                cut = x[g_ptok[j]];
                break;
            }
        }
        double zz = 0;
        for (int i = 0; i < V; i++) {
            if (x[i] < cut) p[i] = 0;
            zz += p[i];
        }
        for (int i = 0; i < V; i++) p[i] /= zz;
    }
    if (min_p > 0) {
        double pm = 0, zz = 0;
        for (int i = 0; i < V; i++)
            if (p[i] > pm) pm = p[i];
        for (int i = 0; i < V; i++) {
            if (p[i] < min_p * pm) p[i] = 0;
            zz += p[i];
        }
        for (int i = 0; i < V; i++) p[i] /= zz;
    }
}

typedef struct dist_case {
    const char *name;
    float T;
    int top_k;
    int top_p_at;    /* 0 = off; else top_p halfway between the masses of the first j-1 and j tokens */
    int min_p_at;    /* 0 = off; else min_p halfway between the ratios of tokens j-1 and j to the max */
    int tie;
} dist_case;

static void run_dist(const dist_case *c) {
    const int V = VOCAB, rows = 512, launches = 32, N = rows * launches;
    float *x = malloc(sizeof(float) * V);
    double *p = malloc(sizeof(double) * V), *p0 = malloc(sizeof(double) * V);
    int32_t *tok = malloc(sizeof(int32_t) * rows);
    uint64_t *seed = malloc(sizeof(uint64_t) * rows);
    int32_t *step = malloc(sizeof(int32_t) * rows);
    long *count = calloc(NP + 1, sizeof(long));
    int *cat = malloc(sizeof(int) * V);
    lf_error err;
    make_dist_logits(x, V, c->tie);
    for (int i = 0; i < V; i++) cat[i] = NP; /* the tail */
    for (int j = 0; j < NP; j++) cat[g_ptok[j]] = j;

    /* choose top_p / min_p with a margin from every boundary */
    double top_p = 1.0, min_p = 0.0;
    exact_dist(x, V, c->T, c->top_k, 1.0, 0.0, p0);
    if (c->top_p_at) {
        double a = 0, b;
        for (int j = 0; j < c->top_p_at - 1; j++) a += p0[g_ptok[j]];
        b = a + p0[g_ptok[c->top_p_at - 1]];
        top_p = 0.5 * (a + b);
    }
    if (c->min_p_at) {
        const double pm = p0[g_ptok[0]];
        min_p = 0.5 * (p0[g_ptok[c->min_p_at - 1]] + p0[g_ptok[c->min_p_at]]) / pm;
    }
    exact_dist(x, V, c->T, c->top_k, top_p, min_p, p);

    lf_sampling sp;
    lf_sampling_default(&sp);
    sp.temperature = c->T;
    sp.top_k = c->top_k;
    sp.top_p = (float)top_p;
    sp.min_p = (float)min_p;
    float *dl = dev_alloc(sizeof(float) * (size_t)rows * V);
    uint64_t *dseed = dev_alloc(sizeof(uint64_t) * rows);
    int32_t *dstep = dev_alloc(sizeof(int32_t) * rows), *dout = dev_alloc(sizeof(int32_t) * rows);
    for (int r = 0; r < rows; r++) seed[r] = 0x5eed0000ull + 17;
    if (!dl || !dseed || !dstep || !dout) goto done;
    if (cudaMemcpy(dseed, seed, sizeof(uint64_t) * rows, cudaMemcpyHostToDevice) != cudaSuccess) {
        CHECK(0, "%s: copy", c->name);
        goto done;
    }
    long outside = 0;
    int outside_tok = -1;
    for (int l = 0; l < launches; l++) {
        /* the logits may be overwritten: refill every row */
        if (cudaMemcpy(dl, x, sizeof(float) * V, cudaMemcpyHostToDevice) != cudaSuccess) break;
        for (int have = 1; have < rows; have *= 2) {
            const int m = have < rows - have ? have : rows - have;
            if (cudaMemcpy(dl + (size_t)have * V, dl, sizeof(float) * (size_t)m * V, cudaMemcpyDeviceToDevice) !=
                cudaSuccess)
                break;
        }
        for (int r = 0; r < rows; r++) step[r] = l * rows + r;
        if (cudaMemcpy(dstep, step, sizeof(int32_t) * rows, cudaMemcpyHostToDevice) != cudaSuccess) break;
        if (lf_cuda_sample(dl, rows, V, &sp, dseed, dstep, dout, NULL, 0, NULL, &err)) {
            CHECK(0, "%s: sample: %s", c->name, err.msg);
            goto done;
        }
        if (to_host(tok, dout, sizeof(int32_t) * rows)) goto done;
        for (int r = 0; r < rows; r++) {
            const int t = tok[r];
            if (t < 0 || t >= V || p[t] == 0) {
                outside++;
                outside_tok = t;
                continue;
            }
            count[cat[t]]++;
        }
    }
    CHECK(outside == 0, "%s: %ld draws outside the allowed set (e.g. token %d)", c->name, outside, outside_tok);
    /* chi-square over the categories with expected count >= 5 (the others pooled) */
    double chi = 0, pooled_e = 0, pooled_o = 0, tv = 0;
    int dof = -1;
    for (int j = 0; j <= NP; j++) {
        double pj = 0;
        if (j < NP) pj = p[g_ptok[j]];
        else
            for (int i = 0; i < V; i++)
                if (cat[i] == NP) pj += p[i];
        const double e = pj * N;
        tv += fabs((double)count[j] / N - pj);
        if (pj == 0) {
            CHECK(count[j] == 0, "%s: category %d has probability 0 but was drawn %ld times", c->name, j, count[j]);
            continue;
        }
        if (e >= 5) {
            chi += (count[j] - e) * (count[j] - e) / e;
            dof++;
        } else {
            pooled_e += e;
            pooled_o += (double)count[j];
        }
    }
    if (pooled_e > 0) {
        chi += (pooled_o - pooled_e) * (pooled_o - pooled_e) / (pooled_e > 1 ? pooled_e : 1);
        dof++;
    }
    /* about five standard deviations above the mean of chi-square(dof) */
    const double limit = dof + 5 * sqrt(2.0 * (dof > 0 ? dof : 1)) + 10;
    CHECK(chi <= limit, "%s: chi-square %.1f > %.1f (dof %d, total variation %.4f over %d draws)", c->name, chi, limit,
          dof, 0.5 * tv, N);
    if (getenv("LF_TEST_VERBOSE"))
        printf("%s: chi-square %.1f (dof %d, limit %.1f), TV %.4f, top_p %.4f min_p %.4f\n", c->name, chi, dof, limit,
               0.5 * tv, top_p, min_p);
done:
    dev_free_all();
    free(x);
    free(p);
    free(p0);
    free(tok);
    free(seed);
    free(step);
    free(count);
    free(cat);
}

static void test_sample_dist(void **state) {
    (void)state;
    const int f0 = g_failures;
    if (!g_have_gpu) skip();
    const dist_case cases[] = {
        {"T=1 plain", 1.0f, 0, 0, 0, 0},
        {"T=0.7 top_k=10", 0.7f, 10, 0, 0, 0},
        {"T=1.3 top_p", 1.3f, 0, 14, 0, 0},
        {"T=1 min_p", 1.0f, 0, 0, 9, 0},
        {"T=0.8 top_k=20 top_p min_p", 0.8f, 20, 12, 8, 0},
        {"T=1 top_k=1", 1.0f, 1, 0, 0, 0},
        {"T=1 top_k=5 tie at the threshold", 1.0f, 5, 0, 0, 1},
        {"T=2 top_p=tiny", 2.0f, 0, 1, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_dist(&cases[i]);
    assert_int_equal(g_failures, f0);
}

/* A row's draw depends on (seed, step) only, not on the batch around it. */
static void test_sample_batch_independent(void **state) {
    (void)state;
    const int f0 = g_failures;
    if (!g_have_gpu) skip();
    const int V = 5000, n = 40;
    float *lg = malloc(sizeof(float) * n * V);
    uint64_t seed[40];
    int32_t step[40], out_batch[40], out_one = -1;
    lf_error err;
    for (long i = 0; i < (long)n * V; i++) lg[i] = (float)(rng_normal() * 2);
    for (int r = 0; r < n; r++) {
        seed[r] = rng_u64();
        step[r] = rng_int(100000);
    }
    lf_sampling sp;
    lf_sampling_default(&sp);
    sp.temperature = 1.f;
    sp.top_p = 0.9f;
    float *dl = dev_copy(lg, sizeof(float) * n * V);
    uint64_t *ds = dev_copy(seed, sizeof seed);
    int32_t *dst = dev_copy(step, sizeof step), *dout = dev_alloc(sizeof(int32_t) * n);
    CHECK(lf_cuda_sample(dl, n, V, &sp, ds, dst, dout, NULL, 0, NULL, &err) == 0, "sample: %s", err.msg);
    if (to_host(out_batch, dout, sizeof out_batch) == 0) {
        for (int r = 0; r < n; r += 13) {
            float *d1 = dev_copy(lg + (long)r * V, sizeof(float) * V);
            uint64_t *s1 = dev_copy(&seed[r], sizeof(uint64_t));
            int32_t *t1 = dev_copy(&step[r], sizeof(int32_t)), *o1 = dev_alloc(sizeof(int32_t));
            CHECK(lf_cuda_sample(d1, 1, V, &sp, s1, t1, o1, NULL, 0, NULL, &err) == 0, "sample: %s", err.msg);
            if (to_host(&out_one, o1, sizeof(int32_t)) == 0)
                CHECK(out_one == out_batch[r], "row %d drew %d alone but %d in a batch of %d", r, out_one, out_batch[r],
                      n);
        }
    }
    dev_free_all();
    free(lg);
    assert_int_equal(g_failures, f0);
}

/* Broken rows in every sampling mode: a row with a NaN or a +inf (anywhere,
 * the first and last index included) or with every logit -inf draws
 * LF_SAMPLE_NONFINITE, as the CPU sampler answers; the usable rows of the
 * same launch draw what they draw in a launch without the broken rows, and
 * never a -inf (masked) token. */
#define NF_ROWS 12
static void test_sample_nonfinite(void **state) {
    (void)state;
    const int f0 = g_failures;
    if (!g_have_gpu) skip();
    const int V = VOCAB;
    /* rows 1, 3, 5, 7, 9, 11 broken; the even rows usable, row 4 with -inf masks */
    const char *kind[NF_ROWS] = {"usable", "NaN at 0", "usable", "+inf at the end", "usable, -inf masks", "all NaN",
                                 "usable", "all -inf", "usable", "NaN at the end", "usable", "+inf and NaN"};
    float *lg = malloc(sizeof(float) * NF_ROWS * V), *good = malloc(sizeof(float) * NF_ROWS * V);
    uint64_t seed[NF_ROWS], gseed[NF_ROWS];
    int32_t step[NF_ROWS], gstep[NF_ROWS], out[NF_ROWS], gout[NF_ROWS], where[NF_ROWS];
    for (int r = 0; r < NF_ROWS; r++) {
        float *x = lg + (long)r * V;
        for (int i = 0; i < V; i++) x[i] = (float)(rng_normal() * 2);
        seed[r] = rng_u64();
        step[r] = rng_int(1000);
        if (r == 1) x[0] = NAN;
        if (r == 3) x[V - 1] = INFINITY;
        if (r == 4)
            for (int j = 0; j < 200; j++) x[rng_int(V)] = -INFINITY;
        if (r == 5 || r == 7)
            for (int i = 0; i < V; i++) x[i] = r == 5 ? NAN : -INFINITY;
        if (r == 9) x[V - 1] = NAN;
        if (r == 11) {
            x[rng_int(V)] = INFINITY;
            x[rng_int(V)] = NAN;
        }
    }
    int ng = 0; /* the usable rows alone, same seeds and steps */
    for (int r = 0; r < NF_ROWS; r += 2) {
        memcpy(good + (long)ng * V, lg + (long)r * V, sizeof(float) * V);
        gseed[ng] = seed[r];
        gstep[ng] = step[r];
        where[r] = ng++;
    }
    lf_sampling modes[6];
    const char *mname[6] = {"greedy", "temperature 0.8", "top-k 2", "top-p 0.9", "min-p 0.1",
                            "T 0.6 + top-k 3 + top-p 0.95 + min-p 0.05"};
    for (int m = 0; m < 6; m++) lf_sampling_default(&modes[m]);
    modes[1].temperature = 0.8f;
    modes[2].temperature = 1.f, modes[2].top_k = 2;
    modes[3].temperature = 1.f, modes[3].top_p = 0.9f;
    modes[4].temperature = 1.f, modes[4].min_p = 0.1f;
    modes[5].temperature = 0.6f, modes[5].top_k = 3, modes[5].top_p = 0.95f, modes[5].min_p = 0.05f;
    lf_error err;
    int refused = 0, kept = 0;
    for (int m = 0; m < 6; m++) {
        /* the kernel may overwrite the logits: fresh copies per launch */
        float *dl = dev_copy(lg, sizeof(float) * NF_ROWS * V), *dg = dev_copy(good, sizeof(float) * ng * V);
        uint64_t *ds = dev_copy(seed, sizeof seed), *dgs = dev_copy(gseed, sizeof gseed);
        int32_t *dst = dev_copy(step, sizeof step), *dgt = dev_copy(gstep, sizeof gstep);
        int32_t *dout = dev_alloc(sizeof out), *dgout = dev_alloc(sizeof gout);
        CHECK(lf_cuda_sample(dl, NF_ROWS, V, &modes[m], ds, dst, dout, NULL, 0, NULL, &err) == 0, "%s: %s", mname[m],
              err.msg);
        CHECK(lf_cuda_sample(dg, ng, V, &modes[m], dgs, dgt, dgout, NULL, 0, NULL, &err) == 0, "%s: %s", mname[m],
              err.msg);
        if (to_host(out, dout, sizeof out) == 0 && to_host(gout, dgout, sizeof gout) == 0) {
            for (int r = 0; r < NF_ROWS; r++) {
                if (r % 2) {
                    CHECK(out[r] == LF_SAMPLE_NONFINITE, "%s: row %d (%s) drew %d instead of LF_SAMPLE_NONFINITE",
                          mname[m], r, kind[r], out[r]);
                    refused += out[r] == LF_SAMPLE_NONFINITE;
                    continue;
                }
                const int g = gout[where[r]];
                CHECK(out[r] == g, "%s: row %d (%s) drew %d beside the broken rows, %d without them", mname[m], r,
                      kind[r], out[r], g);
                CHECK(out[r] >= 0 && out[r] < V && lg[(long)r * V + out[r]] > -INFINITY,
                      "%s: row %d (%s) drew %d, not a usable token", mname[m], r, kind[r], out[r]);
                kept += out[r] == g;
            }
        }
        dev_free_all();
    }
    printf("[ nonfinite ] 6 sampling modes x %d rows of %d logits: %d broken rows refused (want %d), %d usable rows "
           "drew as without them (want %d)\n", NF_ROWS, V, refused, 6 * NF_ROWS / 2, kept, 6 * NF_ROWS / 2);
    free(lg);
    free(good);
    assert_int_equal(g_failures, f0);
}

/* ======================================================================== */
/* Bad arguments fail with -1 and a message naming the kernel (no GPU needed:
 * the checks come before any launch). */
static void test_bad_args(void **state) {
    (void)state;
    const int f0 = g_failures;
    lf_error err;
    static _Alignas(16) int32_t dummy[64]; /* never dereferenced: the checks fail first */
    void *d = dummy;
#define BAD(call, frag)                                                                    \
    do {                                                                                   \
        memset(&err, 0, sizeof err);                                                       \
        const int rc_ = (call);                                                            \
        CHECK(rc_ == -1 && strstr(err.msg, frag), "%s: rc %d, message '%s' (want '%s')", #call, rc_, err.msg, frag); \
    } while (0)
    BAD(lf_cuda_embed(d, 100, 0, d, 3, d, NULL, &err), "cuda embed");
    BAD(lf_cuda_embed(d, 100, 64, d, -1, d, NULL, &err), "cuda embed");
    BAD(lf_cuda_embed(NULL, 100, 64, d, 3, d, NULL, &err), "cuda embed");
    BAD(lf_cuda_rmsnorm(d, d, 3, 0, 1e-6f, d, NULL, &err), "cuda rmsnorm");
    BAD(lf_cuda_rmsnorm(d, d, -2, 64, 1e-6f, d, NULL, &err), "cuda rmsnorm");
    BAD(lf_cuda_add_bias(d, d, 3, 0, NULL, &err), "cuda add_bias");
    BAD(lf_cuda_swiglu(d, 3, -5, d, NULL, &err), "cuda swiglu");
    BAD(lf_cuda_swiglu(NULL, 3, 8, d, NULL, &err), "cuda swiglu");

    lf_cuda_rope_store_args a;
    memset(&a, 0, sizeof a);
    a.n = 4;
    a.n_heads = 16;
    a.n_kv_heads = 8;
    a.head_dim = 128;
    a.dt = LF_DTYPE_BF16;
    a.qkv = (const float *)d;
    a.inv_freq = (const float *)d;
    a.attention_factor = 1.f;
    a.pos = dummy;
    a.q_out = d;
    a.k_dst = d;
    a.v_dst = d;
    a.kvh_stride = 128 * 10;
    a.head_dim = 300;
    BAD(lf_cuda_rope_store(&a, NULL, &err), "head_dim");
    a.head_dim = 127;
    BAD(lf_cuda_rope_store(&a, NULL, &err), "head_dim");
    a.head_dim = 128;
    a.n_kv_heads = 5;
    BAD(lf_cuda_rope_store(&a, NULL, &err), "cuda rope_store");
    a.n_kv_heads = 8;
    a.dt = LF_DTYPE_F32;
    BAD(lf_cuda_rope_store(&a, NULL, &err), "dtype");
    a.dt = LF_DTYPE_BF16;
    a.n = -1;
    BAD(lf_cuda_rope_store(&a, NULL, &err), "cuda rope_store");
    a.n = 4;
    a.k_dst = NULL;
    BAD(lf_cuda_rope_store(&a, NULL, &err), "required");
    a.k_dst = d;
    a.kvh_stride = 64;
    BAD(lf_cuda_rope_store(&a, NULL, &err), "stride");
    BAD(lf_cuda_rope_store(NULL, NULL, &err), "cuda rope_store");

    lf_cuda_prefill_attn *pf = (lf_cuda_prefill_attn *)d;
    BAD(lf_cuda_prefill_create(100, 16, 5, 128, LF_DTYPE_BF16, &pf, &err), "cuda prefill");
    CHECK(pf == NULL, "prefill_create left *out set on failure");
    BAD(lf_cuda_prefill_create(0, 16, 8, 128, LF_DTYPE_BF16, &pf, &err), "max_n");
    BAD(lf_cuda_prefill_create(100, 16, 8, 300, LF_DTYPE_BF16, &pf, &err), "head_dim");
    BAD(lf_cuda_prefill_create(100, 16, 8, 128, LF_DTYPE_F32, &pf, &err), "dtype");
    BAD(lf_cuda_prefill_attention(NULL, d, d, d, 0, 4, 0.f, d, NULL, &err), "cuda prefill");

    BAD(lf_cuda_gather_rows(d, 1000, d, 1000, 8, 64, LF_DTYPE_F32, dummy, 4, NULL, &err), "dtype");
    BAD(lf_cuda_gather_rows(d, 1000, d, 1000, 0, 64, LF_DTYPE_BF16, dummy, 4, NULL, &err), "cuda gather_rows");
    BAD(lf_cuda_gather_rows(d, 1000, d, 100, 8, 64, LF_DTYPE_BF16, dummy, 4, NULL, &err), "stride");
    BAD(lf_cuda_gather_rows(d, 1000, d, 1000, 8, 64, LF_DTYPE_BF16, dummy, 4, NULL, &err), "overlap");

    lf_sampling sp;
    lf_sampling_default(&sp);
    sp.temperature = 1.f;
    BAD(lf_cuda_sample(d, 4, 1000, &sp, NULL, NULL, dummy, NULL, 0, NULL, &err), "row_seed");
    BAD(lf_cuda_repetition_penalty((float *)d, 4, 1000, 1000, 1.1f, NULL, 32, NULL, NULL, NULL, &err), "history");
    BAD(lf_cuda_history_reset((uint32_t *)d, 32, NULL, 4, NULL, &err), "tokens are required");
    sp.top_p = 0.f;
    BAD(lf_cuda_sample(d, 4, 1000, &sp, (const uint64_t *)d, dummy, dummy, NULL, 0, NULL, &err), "top_p");
    sp.top_p = 1.f;
    sp.min_p = 1.f;
    BAD(lf_cuda_sample(d, 4, 1000, &sp, (const uint64_t *)d, dummy, dummy, NULL, 0, NULL, &err), "min_p");
    sp.min_p = 0.f;
    sp.top_k = -1;
    BAD(lf_cuda_sample(d, 4, 1000, &sp, (const uint64_t *)d, dummy, dummy, NULL, 0, NULL, &err), "top_k");
    sp.top_k = 0;
    sp.temperature = -1.f;
    BAD(lf_cuda_sample(d, 4, 1000, &sp, (const uint64_t *)d, dummy, dummy, NULL, 0, NULL, &err), "temperature");
    sp.temperature = 0.f;
    BAD(lf_cuda_sample(d, 4, 0, &sp, NULL, NULL, dummy, NULL, 0, NULL, &err), "cuda sample");
    BAD(lf_cuda_sample(d, 4, 1000, NULL, NULL, NULL, dummy, NULL, 0, NULL, &err), "cuda sample");
    /* n = 0 is a no-op */
    CHECK(lf_cuda_sample(NULL, 0, 1000, &sp, NULL, NULL, NULL, NULL, 0, NULL, &err) == 0, "n = 0 refused: %s", err.msg);
#undef BAD
    assert_int_equal(g_failures, f0);
}

int main(void) {
    int n = 0;
    g_have_gpu = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
    if (!g_have_gpu) printf("no CUDA device: GPU cases skipped\n");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_args),      cmocka_unit_test(test_embed),
        cmocka_unit_test(test_rmsnorm),       cmocka_unit_test(test_bias_swiglu),
        cmocka_unit_test(test_rope_store),    cmocka_unit_test(test_prefill),
        cmocka_unit_test(test_gather_rows),   cmocka_unit_test(test_sample_greedy),
        cmocka_unit_test(test_sample_dist),   cmocka_unit_test(test_sample_batch_independent),
        cmocka_unit_test(test_window_sums),   cmocka_unit_test(test_repetition_penalty),
        cmocka_unit_test(test_sample_nonfinite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
