/* The CPU forward pass against a straightforward double-precision forward
 * written here (independent code: it recomputes the whole sequence with
 * causal attention at every step, no KV cache), on tiny random models built
 * in memory for the three architectures (Qwen3 with q/k norms and an
 * explicit head_dim, Qwen2 with q/k/v biases, Llama with llama3 rope scaling
 * and an output bias) and the three weight dtypes. Also: batched decode of 3
 * sequences in one call == the same sequences decoded one at a time, and
 * clear errors for bad calls. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cpu/forward.h"
#include "cpu/kernels.h"
#include "cpu/simd.h"
#include "kv/cache.h"

#include "test_util.h"

/* ---- a tiny model --------------------------------------------------------- */


#define MAXW 64
typedef struct {
    lf_model m;
    void *blocks[MAXW * 16];
    int n_blocks;
} tmodel;

static uint16_t enc16(lf_dtype dt, float f) {
    if (dt == LF_DTYPE_BF16) {
        uint32_t u;
        memcpy(&u, &f, 4);
        return (uint16_t)(u >> 16);
    }
    if (fabsf(f) < 1e-4f) return 0;
    int e;
    double m = frexp(fabs((double)f), &e);
    int exp = e - 1 + 15;
    unsigned man = (unsigned)((m * 2.0 - 1.0) * 1024.0);
    return (uint16_t)((f < 0 ? 0x8000u : 0) | ((unsigned)exp << 10) | man);
}

/* random weight: centre + scale * U(-1, 1) */
static lf_weight mkw(tmodel *t, lf_dtype dt, int rows, int cols, double centre, double scale) {
    size_t n = (size_t)rows * cols;
    lf_weight w = {NULL, dt, rows, cols};
    if (dt == LF_DTYPE_F32) {
        float *d = malloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++) d[i] = (float)(centre + scale * (2 * urand() - 1));
        w.data = d;
    } else {
        uint16_t *d = malloc(n * sizeof(uint16_t));
        for (size_t i = 0; i < n; i++) d[i] = enc16(dt, (float)(centre + scale * (2 * urand() - 1)));
        w.data = d;
    }
    t->blocks[t->n_blocks++] = (void *)w.data;
    return w;
}

static double wv(const lf_weight *w, size_t i) { return elem_value(w->data, w->dtype, i); }

typedef enum { A_QWEN3, A_QWEN2, A_LLAMA } arch_t;

static void build_model(tmodel *t, arch_t arch, lf_dtype dt, bool tied) {
    memset(t, 0, sizeof *t);
    lf_config *c = &t->m.cfg;
    c->arch = arch == A_QWEN3 ? LF_ARCH_QWEN3 : arch == A_QWEN2 ? LF_ARCH_QWEN2 : LF_ARCH_LLAMA;
    snprintf(c->arch_name, sizeof c->arch_name, "test");
    c->vocab_size = 97;
    c->hidden_size = arch == A_QWEN3 ? 48 : 64;
    c->intermediate_size = 80;
    c->n_layers = 2;
    c->n_heads = 4;
    c->n_kv_heads = arch == A_LLAMA ? 1 : 2;
    c->head_dim = arch == A_QWEN3 ? 24 : 16; /* Qwen3: head_dim != hidden / heads */
    c->max_position = 4096;
    c->rms_norm_eps = 1e-6;
    c->rope.type = LF_ROPE_DEFAULT;
    c->rope.theta = arch == A_QWEN3 ? 1000000.0 : 10000.0;
    if (arch == A_LLAMA) { /* small original context so all three regimes occur */
        c->rope.type = LF_ROPE_LLAMA3;
        c->rope.theta = 500000.0;
        c->rope.factor = 8;
        c->rope.low_freq_factor = 1;
        c->rope.high_freq_factor = 4;
        c->rope.original_max_position = 64;
    }
    c->tie_word_embeddings = tied;
    c->qk_norm = arch == A_QWEN3;
    c->qkv_bias = arch == A_QWEN2;
    c->o_bias = arch == A_LLAMA;
    int H = c->hidden_size, hd = c->head_dim, qd = c->n_heads * hd, kd = c->n_kv_heads * hd;
    int I = c->intermediate_size;
    t->m.embed = mkw(t, dt, c->vocab_size, H, 0, 1.0);
    t->m.final_norm = mkw(t, dt, 1, H, 1.0, 0.2);
    t->m.lm_head = tied ? t->m.embed : mkw(t, dt, c->vocab_size, H, 0, 0.5);
    t->m.layers = calloc((size_t)c->n_layers, sizeof *t->m.layers);
    for (int l = 0; l < c->n_layers; l++) {
        lf_layer_weights *L = &t->m.layers[l];
        double s = 1.0 / sqrt(H);
        L->attn_norm = mkw(t, dt, 1, H, 1.0, 0.2);
        L->ffn_norm = mkw(t, dt, 1, H, 1.0, 0.2);
        L->wq = mkw(t, dt, qd, H, 0, 2.5 * s); /* large enough for peaked attention */
        L->wk = mkw(t, dt, kd, H, 0, 2.5 * s);
        L->wv = mkw(t, dt, kd, H, 0, 1.7 * s);
        L->wo = mkw(t, dt, H, qd, 0, 1.7 / sqrt(qd));
        if (c->qkv_bias) {
            L->bq = mkw(t, dt, 1, qd, 0, 0.5);
            L->bk = mkw(t, dt, 1, kd, 0, 0.5);
            L->bv = mkw(t, dt, 1, kd, 0, 0.5);
        }
        if (c->o_bias) L->bo = mkw(t, dt, 1, H, 0, 0.3);
        if (c->qk_norm) {
            L->q_norm = mkw(t, dt, 1, hd, 1.0, 0.3);
            L->k_norm = mkw(t, dt, 1, hd, 1.0, 0.3);
        }
        L->w_gate = mkw(t, dt, I, H, 0, 1.7 * s);
        L->w_up = mkw(t, dt, I, H, 0, 1.7 * s);
        L->w_down = mkw(t, dt, H, I, 0, 1.7 / sqrt(I));
    }
}

static void free_model(tmodel *t) {
    for (int i = 0; i < t->n_blocks; i++) free(t->blocks[i]);
    free(t->m.layers);
}

/* ---- the double-precision reference ---------------------------------------- */

static void ref_rmsnorm(double *o, const double *x, const lf_weight *w, int d, double eps) {
    double ss = 0;
    for (int i = 0; i < d; i++) ss += x[i] * x[i];
    double inv = 1.0 / sqrt(ss / d + eps);
    for (int i = 0; i < d; i++) o[i] = x[i] * inv * wv(w, (size_t)i);
}

/* y[r] = sum_c W[r][c] x[c] (+ b[r]) */
static void ref_linear(double *y, const lf_weight *W, const lf_weight *b, const double *x) {
    for (int r = 0; r < W->rows; r++) {
        double s = (b && b->data) ? wv(b, (size_t)r) : 0;
        for (int c = 0; c < W->cols; c++) s += wv(W, (size_t)r * W->cols + c) * x[c];
        y[r] = s;
    }
}

static void ref_inv_freq(const lf_config *c, double *inv) {
    int hd = c->head_dim;
    for (int i = 0; i < hd / 2; i++) {
        double f = pow(c->rope.theta, -2.0 * i / hd);
        if (c->rope.type == LF_ROPE_LLAMA3) {
            double old = c->rope.original_max_position, lo = c->rope.low_freq_factor,
                   hi = c->rope.high_freq_factor, fac = c->rope.factor;
            double wl = 2 * M_PI / f;
            if (wl > old / lo) f = f / fac;
            else if (wl >= old / hi) {
                double s = (old / wl - lo) / (hi - lo);
                f = (1 - s) * f / fac + s * f;
            }
        }
        inv[i] = f;
    }
}

static void ref_rope(double *x, int hd, int pos, const double *inv) {
    int h = hd / 2;
    for (int i = 0; i < h; i++) {
        double c = cos(pos * inv[i]), s = sin(pos * inv[i]);
        double a = x[i], b = x[i + h];
        x[i] = a * c - b * s;
        x[i + h] = b * c + a * s;
    }
}

/* Logits [n][vocab] of every position of tokens[0..n). */
static double *ref_forward(const lf_model *m, const int *tokens, int n) {
    const lf_config *c = &m->cfg;
    int H = c->hidden_size, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads, I = c->intermediate_size;
    int qd = nh * hd, kd = nkv * hd, V = c->vocab_size;
    double *x = calloc((size_t)n * H, sizeof(double)), *h = malloc((size_t)H * sizeof(double));
    double *q = malloc((size_t)n * qd * sizeof(double)), *k = malloc((size_t)n * kd * sizeof(double));
    double *v = malloc((size_t)n * kd * sizeof(double)), *att = malloc((size_t)qd * sizeof(double));
    double *o = malloc((size_t)H * sizeof(double)), *g = malloc((size_t)I * sizeof(double));
    double *u = malloc((size_t)I * sizeof(double)), *p = malloc((size_t)n * sizeof(double));
    double *inv = malloc((size_t)hd / 2 * sizeof(double));
    double *logits = malloc((size_t)n * V * sizeof(double));
    ref_inv_freq(c, inv);
    for (int t = 0; t < n; t++)
        for (int i = 0; i < H; i++) x[(size_t)t * H + i] = wv(&m->embed, (size_t)tokens[t] * H + i);
    for (int l = 0; l < c->n_layers; l++) {
        const lf_layer_weights *L = &m->layers[l];
        for (int t = 0; t < n; t++) {
            ref_rmsnorm(h, x + (size_t)t * H, &L->attn_norm, H, c->rms_norm_eps);
            ref_linear(q + (size_t)t * qd, &L->wq, &L->bq, h);
            ref_linear(k + (size_t)t * kd, &L->wk, &L->bk, h);
            ref_linear(v + (size_t)t * kd, &L->wv, &L->bv, h);
            for (int a = 0; a < nh; a++) {
                double *qa = q + (size_t)t * qd + a * hd;
                if (c->qk_norm) ref_rmsnorm(qa, qa, &L->q_norm, hd, c->rms_norm_eps);
                ref_rope(qa, hd, t, inv);
            }
            for (int a = 0; a < nkv; a++) {
                double *ka = k + (size_t)t * kd + a * hd;
                if (c->qk_norm) ref_rmsnorm(ka, ka, &L->k_norm, hd, c->rms_norm_eps);
                ref_rope(ka, hd, t, inv);
            }
        }
        for (int t = 0; t < n; t++) {
            for (int a = 0; a < nh; a++) {
                int g_ = a / (nh / nkv);
                double mx = -1e300, sum = 0;
                for (int j = 0; j <= t; j++) {
                    double s = 0;
                    for (int d = 0; d < hd; d++) s += q[(size_t)t * qd + a * hd + d] * k[(size_t)j * kd + g_ * hd + d];
                    p[j] = s / sqrt((double)hd);
                    if (p[j] > mx) mx = p[j];
                }
                for (int j = 0; j <= t; j++) sum += (p[j] = exp(p[j] - mx));
                for (int d = 0; d < hd; d++) {
                    double s = 0;
                    for (int j = 0; j <= t; j++) s += p[j] / sum * v[(size_t)j * kd + g_ * hd + d];
                    att[a * hd + d] = s;
                }
            }
            ref_linear(o, &L->wo, &L->bo, att);
            for (int i = 0; i < H; i++) x[(size_t)t * H + i] += o[i];
        }
        for (int t = 0; t < n; t++) {
            ref_rmsnorm(h, x + (size_t)t * H, &L->ffn_norm, H, c->rms_norm_eps);
            ref_linear(g, &L->w_gate, NULL, h);
            ref_linear(u, &L->w_up, NULL, h);
            for (int i = 0; i < I; i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
            ref_linear(o, &L->w_down, NULL, g);
            for (int i = 0; i < H; i++) x[(size_t)t * H + i] += o[i];
        }
    }
    for (int t = 0; t < n; t++) {
        ref_rmsnorm(h, x + (size_t)t * H, &m->final_norm, H, c->rms_norm_eps);
        ref_linear(logits + (size_t)t * V, &m->lm_head, NULL, h);
    }
    free(x), free(h), free(q), free(k), free(v), free(att), free(o), free(g), free(u), free(p), free(inv);
    return logits;
}

/* ||got - want|| / ||want||, want in double. */
static double rel_l2_d(const float *got, const double *want, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        num += (got[i] - want[i]) * (got[i] - want[i]);
        den += want[i] * want[i];
    }
    return sqrt(num / den);
}

/* ---- tests ----------------------------------------------------------------------- */

static int new_cache(const lf_model *m, lf_kv_cache *c, int budget) {
    lf_policy_config p;
    lf_policy_config_default(&p);
    p.kv_dtype = LF_KV_F32; /* against float32 references */
    lf_error err;
    int rc = lf_kv_cache_init(c, &m->cfg, &p, budget, &err);
    if (rc) fprintf(stderr, "%s\n", err.msg);
    return rc;
}

#define TOL 2e-5

/* prefill of n_prompt tokens, then n_dec decode steps of given tokens; every
 * logits vector against the reference */
static void check_sequence(const lf_model *m, const int *seq, int n_prompt, int n_dec) {
    int V = m->cfg.vocab_size, n = n_prompt + n_dec;
    double *ref = ref_forward(m, seq, n);
    lf_cpu_ctx *ctx;
    lf_error err;
    assert_int_equal(lf_cpu_ctx_create(m, 1, &ctx, &err), 0);
    lf_kv_cache cache;
    assert_int_equal(new_cache(m, &cache, n), 0);
    float *logits = malloc((size_t)V * sizeof(float));
    assert_int_equal(lf_cpu_prefill(ctx, m, &cache, seq, n_prompt, logits, &err), 0);
    double e = rel_l2_d(logits, ref + (size_t)(n_prompt - 1) * V, V);
    if (!(e < TOL)) fail_msg("prefill of %d tokens: relative L2 error %.3g", n_prompt, e);
    lf_kv_cache *cp = &cache;
    for (int s = 0; s < n_dec; s++) {
        int pos = n_prompt + s;
        assert_int_equal(lf_cpu_decode(ctx, m, &cp, &seq[pos], &pos, 1, logits, &err), 0);
        e = rel_l2_d(logits, ref + (size_t)pos * V, V);
        if (!(e < TOL)) fail_msg("decode step %d (position %d): relative L2 error %.3g", s, pos, e);
    }
    free(logits);
    free(ref);
    lf_kv_cache_free(&cache);
    lf_cpu_ctx_free(ctx);
}

static void random_tokens(int *t, int n, int vocab) {
    for (int i = 0; i < n; i++) t[i] = irand(vocab);
}

static void run_arch(arch_t arch, lf_dtype dt, bool tied) {
    tmodel t;
    build_model(&t, arch, dt, tied);
    int seq[300];
    random_tokens(seq, 300, t.m.cfg.vocab_size);
    check_sequence(&t.m, seq, 1, 3);   /* one-token prompt */
    check_sequence(&t.m, seq, 4, 2);   /* below the GEMM threshold */
    check_sequence(&t.m, seq, 7, 4);   /* odd lengths: token blocks of 8 lanes */
    check_sequence(&t.m, seq, 41, 5);  /* several token blocks, threaded attention */
    check_sequence(&t.m, seq, 297, 3); /* more than one MLP chunk of 256 tokens */
    free_model(&t);
}

static void test_qwen3_bf16(void **s) { (void)s; run_arch(A_QWEN3, LF_DTYPE_BF16, true); }
static void test_qwen3_f16(void **s) { (void)s; run_arch(A_QWEN3, LF_DTYPE_F16, false); }
static void test_qwen3_f32(void **s) { (void)s; run_arch(A_QWEN3, LF_DTYPE_F32, true); }
static void test_qwen2_bf16(void **s) { (void)s; run_arch(A_QWEN2, LF_DTYPE_BF16, false); }
static void test_llama_bf16(void **s) { (void)s; run_arch(A_LLAMA, LF_DTYPE_BF16, false); }

static void test_scalar_path(void **s) {
    (void)s;
    lf_cpu_set_simd(LF_SIMD_SCALAR);
    run_arch(A_QWEN2, LF_DTYPE_F16, true);
    lf_cpu_set_simd(LF_SIMD_AVX2);
}

/* 3 sequences of different lengths decoded together == one at a time, and
 * both == the reference */
static void test_batched_decode(void **st) {
    (void)st;
    tmodel t;
    build_model(&t, A_QWEN3, LF_DTYPE_BF16, true);
    const lf_model *m = &t.m;
    int V = m->cfg.vocab_size, steps = 4;
    int np[3] = {5, 12, 1};
    int seqs[3][20];
    for (int s = 0; s < 3; s++) random_tokens(seqs[s], 20, V);
    lf_cpu_ctx *ctx;
    lf_error err;
    assert_int_equal(lf_cpu_ctx_create(m, 3, &ctx, &err), 0);
    lf_kv_cache cb[3], c1[3];
    lf_kv_cache *pb[3];
    float *lb = malloc((size_t)3 * V * sizeof(float)), *l1 = malloc((size_t)V * sizeof(float));
    double *ref[3];
    for (int s = 0; s < 3; s++) {
        assert_int_equal(new_cache(m, &cb[s], np[s] + steps), 0);
        assert_int_equal(new_cache(m, &c1[s], np[s] + steps), 0);
        pb[s] = &cb[s];
        assert_int_equal(lf_cpu_prefill(ctx, m, &cb[s], seqs[s], np[s], l1, &err), 0);
        assert_int_equal(lf_cpu_prefill(ctx, m, &c1[s], seqs[s], np[s], l1, &err), 0);
        ref[s] = ref_forward(m, seqs[s], np[s] + steps);
    }
    for (int k = 0; k < steps; k++) {
        int tok[3], pos[3];
        for (int s = 0; s < 3; s++) {
            pos[s] = np[s] + k;
            tok[s] = seqs[s][pos[s]];
        }
        assert_int_equal(lf_cpu_decode(ctx, m, pb, tok, pos, 3, lb, &err), 0);
        for (int s = 0; s < 3; s++) {
            lf_kv_cache *p1 = &c1[s];
            assert_int_equal(lf_cpu_decode(ctx, m, &p1, &tok[s], &pos[s], 1, l1, &err), 0);
            double num = 0, den = 0;
            for (int i = 0; i < V; i++) {
                num += (double)(lb[(size_t)s * V + i] - l1[i]) * (lb[(size_t)s * V + i] - l1[i]);
                den += (double)l1[i] * l1[i];
            }
            if (!(sqrt(num / den) < 1e-6))
                fail_msg("step %d sequence %d: batched vs single relative L2 %.3g", k, s, sqrt(num / den));
            double e = rel_l2_d(lb + (size_t)s * V, ref[s] + (size_t)pos[s] * V, V);
            if (!(e < TOL)) fail_msg("step %d sequence %d: vs reference %.3g", k, s, e);
        }
    }
    for (int s = 0; s < 3; s++) {
        lf_kv_cache_free(&cb[s]);
        lf_kv_cache_free(&c1[s]);
        free(ref[s]);
    }
    free(lb);
    free(l1);
    lf_cpu_ctx_free(ctx);
    free_model(&t);
}

static void test_bad_calls(void **st) {
    (void)st;
    tmodel t;
    build_model(&t, A_QWEN2, LF_DTYPE_BF16, true);
    const lf_model *m = &t.m;
    lf_cpu_ctx *ctx;
    lf_error err;
    assert_int_equal(lf_cpu_ctx_create(m, 0, &ctx, &err), -1);
    assert_non_null(strstr(err.msg, "max_batch"));
    assert_int_equal(lf_cpu_ctx_create(m, 2, &ctx, &err), 0);
    lf_kv_cache c;
    assert_int_equal(new_cache(m, &c, 8), 0);
    float *logits = malloc((size_t)2 * m->cfg.vocab_size * sizeof(float));
    int toks[3] = {1, 97, 2};
    assert_int_equal(lf_cpu_prefill(ctx, m, &c, toks, 3, logits, &err), -1);
    assert_non_null(strstr(err.msg, "token id 97"));
    assert_int_equal(lf_cpu_prefill(ctx, m, &c, toks, 0, logits, &err), -1);
    assert_non_null(strstr(err.msg, "empty"));
    int big[9] = {0};
    assert_int_equal(lf_cpu_prefill(ctx, m, &c, big, 9, logits, &err), -1); /* 9 > 8 slots */
    assert_non_null(strstr(err.msg, "prefill"));
    lf_kv_cache *cs[3] = {&c, &c, &c};
    int pos[3] = {0, 0, 0};
    assert_int_equal(lf_cpu_decode(ctx, m, cs, big, pos, 3, logits, &err), -1);
    assert_non_null(strstr(err.msg, "3 sequences"));
    pos[0] = -1;
    assert_int_equal(lf_cpu_decode(ctx, m, cs, big, pos, 1, logits, &err), -1);
    assert_non_null(strstr(err.msg, "negative position"));
    /* a full cache with no room left */
    assert_int_equal(lf_cpu_prefill(ctx, m, &c, big, 8, logits, &err), 0);
    pos[0] = 8;
    assert_int_equal(lf_cpu_decode(ctx, m, cs, big, pos, 1, logits, &err), -1);
    assert_non_null(strstr(err.msg, "is full"));
    /* a cache made for another shape */
    tmodel t2;
    build_model(&t2, A_QWEN3, LF_DTYPE_BF16, true);
    lf_kv_cache c2;
    assert_int_equal(new_cache(&t2.m, &c2, 8), 0);
    assert_int_equal(lf_cpu_prefill(ctx, m, &c2, big, 3, logits, &err), -1);
    assert_non_null(strstr(err.msg, "does not match"));
    lf_kv_cache_free(&c2);
    free_model(&t2);
    free(logits);
    lf_kv_cache_free(&c);
    lf_cpu_ctx_free(ctx);
    free_model(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qwen3_bf16), cmocka_unit_test(test_qwen3_f16),
        cmocka_unit_test(test_qwen3_f32),  cmocka_unit_test(test_qwen2_bf16),
        cmocka_unit_test(test_llama_bf16), cmocka_unit_test(test_scalar_path),
        cmocka_unit_test(test_batched_decode), cmocka_unit_test(test_bad_calls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
