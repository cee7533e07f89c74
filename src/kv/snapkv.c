/* SnapKV prompt compression, the prefill stage of every budgeted policy
 * (Li et al., "SnapKV: LLM Knows What You are Looking for Before
 * Generation", arXiv 2404.14469), as LongFlow's reference implementation
 * applies it: the last 32 prompt queries (all query heads, KV heads repeated
 * for GQA) attend over the other prompt keys; the softmax weights are summed
 * over heads and queries, smoothed by an average pool of width 5 (padding 2,
 * zero padding counted) and the best positions are kept, in position order,
 * followed by the 32 window tokens.
 *
 * Also the window attention H2O and VATP start their accumulated attention
 * from. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "kv/policy.h"
#include "kv/snapkv_rule.h"

static float dot(const float *a, const float *b, int n) {
    float s = 0;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* For each query head h and each query t in [t0, n): the softmax of
 * q_t . k_j / sqrt(hd) over keys j in [0, keys(t)), times wgt, added to
 * acc[j]. keys(t) = m (fixed) when m > 0, else t + 1 (causal). */
static int window_softmax_sum(const float *q, const float *k, int n, int nh, int nkv, int hd, int t0, int m,
                              float wgt, float *acc, lf_error *err) {
    const int rep = nh / nkv;
    const float scale = 1.0f / sqrtf((float)hd);
    int failed = 0;
    memset(acc, 0, (size_t)n * sizeof(float));
    const long work = (long)(n - t0) * n * nh * hd; /* multiply-adds, roughly */
#pragma omp parallel if (work >= (1L << 20))
    {
        float *row = malloc((size_t)n * sizeof(float));
        float *mine = calloc((size_t)n, sizeof(float));
        if (!row || !mine) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int h = 0; h < nh; h++) {
            if (!row || !mine) continue;
            int g = h / rep;
            for (int t = t0; t < n; t++) {
                int nk = m > 0 ? m : t + 1;
                const float *qt = q + ((size_t)t * nh + h) * hd;
                float mx = -INFINITY;
                for (int j = 0; j < nk; j++) {
                    row[j] = dot(qt, k + ((size_t)j * nkv + g) * hd, hd) * scale;
                    if (row[j] > mx) mx = row[j];
                }
                float sum = 0;
                for (int j = 0; j < nk; j++) sum += (row[j] = expf(row[j] - mx));
                float inv = wgt / sum;
                for (int j = 0; j < nk; j++) mine[j] += row[j] * inv;
            }
        }
        if (row && mine) {
#pragma omp critical(lf_snapkv_reduce)
            for (int j = 0; j < n; j++) acc[j] += mine[j];
        }
        free(row);
        free(mine);
    }
    if (failed) return lf_fail(err, "SnapKV: out of memory for a prompt of %d tokens", n);
    return 0;
}

int lf_snapkv_window_sums(const float *q, const float *k, int n, int n_heads, int n_kv_heads, int head_dim,
                          float *raw, lf_error *err) {
    const int w = LF_SNAPKV_WINDOW, m = n - w;
    if (m <= 0) return lf_fail(err, "SnapKV: a prompt of %d tokens has nothing before its %d-token window", n, w);
    return window_softmax_sum(q, k, n, n_heads, n_kv_heads, head_dim, m, m, 1.0f, raw, err);
}

void lf_snapkv_pool(const float *raw, int n, float *pooled) {
    const int m = n - LF_SNAPKV_WINDOW;
    for (int i = 0; i < m; i++) pooled[i] = lf_snapkv_pooled(raw, m, i);
}

int lf_snapkv_scores(const float *q, const float *k, int n, int n_heads, int n_kv_heads, int head_dim,
                     float *pooled, lf_error *err) {
    float *raw = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!raw) return lf_fail(err, "SnapKV: out of memory for a prompt of %d tokens", n);
    int rc = lf_snapkv_window_sums(q, k, n, n_heads, n_kv_heads, head_dim, raw, err);
    if (!rc) lf_snapkv_pool(raw, n, pooled);
    free(raw);
    return rc;
}

typedef struct scored {
    uint64_t key; /* lf_snapkv_rank_key */
    int32_t i;
} scored;

/* Best first (the larger rank key: the higher score, on ties the lower index). */
static int cmp_scored(const void *a, const void *b) {
    const scored *x = a, *y = b;
    return (x->key < y->key) - (x->key > y->key);
}

int lf_snapkv_check_keep(int n, int keep, int sinks, lf_error *err) {
    const int w = LF_SNAPKV_WINDOW;
    if (keep >= n) return lf_fail(err, "SnapKV: asked to keep %d of %d tokens", keep, n);
    if (keep - w < 1)
        return lf_fail(err, "SnapKV: keeping %d tokens leaves nothing beside the %d-token window", keep, w);
    if (sinks > keep - w - 1)
        return lf_fail(err, "--sinks %d leaves no room for SnapKV's selection in %d kept prompt tokens", sinks,
                       keep);
    return 0;
}

/* The selection of lf_snapkv_select from the window sums (raw: NULL to
 * compute them from q and k). */
static int select_kept(const float *q, const float *k, const float *raw, int n, int n_heads, int n_kv_heads,
                       int head_dim, int keep, int sinks, int32_t *kept, lf_error *err) {
    const int w = LF_SNAPKV_WINDOW, m = n - w;
    if (lf_snapkv_check_keep(n, keep, sinks, err)) return -1;
    float *pooled = malloc((size_t)m * sizeof(float));
    scored *cand = malloc((size_t)m * sizeof(scored));
    if (!pooled || !cand) {
        free(pooled);
        free(cand);
        return lf_fail(err, "SnapKV: out of memory for a prompt of %d tokens", n);
    }
    if (raw) {
        lf_snapkv_pool(raw, n, pooled);
    } else if (lf_snapkv_scores(q, k, n, n_heads, n_kv_heads, head_dim, pooled, err)) {
        free(pooled);
        free(cand);
        return -1;
    }
    int nc = 0;
    for (int i = sinks; i < m; i++) cand[nc++] = (scored){lf_snapkv_rank_key(pooled[i], i), i};
    qsort(cand, (size_t)nc, sizeof *cand, cmp_scored);
    int top = keep - w - sinks;
    /* mark the chosen, then write ascending */
    memset(pooled, 0, (size_t)m * sizeof(float));
    for (int i = 0; i < sinks; i++) pooled[i] = 1;
    for (int i = 0; i < top; i++) pooled[cand[i].i] = 1;
    int o = 0;
    for (int i = 0; i < m; i++)
        if (pooled[i] != 0) kept[o++] = i;
    for (int i = m; i < n; i++) kept[o++] = i;
    free(pooled);
    free(cand);
    return 0;
}

int lf_snapkv_select(const float *q, const float *k, int n, int n_heads, int n_kv_heads, int head_dim,
                     int keep, int sinks, int32_t *kept, lf_error *err) {
    return select_kept(q, k, NULL, n, n_heads, n_kv_heads, head_dim, keep, sinks, kept, err);
}

int lf_snapkv_select_from_sums(const float *raw, int n, int keep, int sinks, int32_t *kept, lf_error *err) {
    return select_kept(NULL, NULL, raw, n, 0, 0, 0, keep, sinks, kept, err);
}

int lf_window_attention(const float *q, const float *k, int n, int n_heads, int n_kv_heads, int head_dim,
                        int w, float *acc, lf_error *err) {
    if (w > n) w = n;
    return window_softmax_sum(q, k, n, n_heads, n_kv_heads, head_dim, n - w, 0, 1.0f / (float)n_heads, acc,
                              err);
}

int lf_snapkv_prefill(const lf_kv_cache *c, const float *q, const float *k, int n, int keep, int32_t *kept,
                      lf_error *err) {
    const int sinks = lf_snapkv_sinks(&c->policy, c->sinks_default, keep);
    return lf_snapkv_select(q, k, n, c->n_heads, c->n_kv_heads, c->head_dim, keep, sinks, kept, err);
}
