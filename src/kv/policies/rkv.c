/* R-KV (Cai et al., "R-KV: Redundancy-aware KV Cache Compression for
 * Reasoning Models", arXiv 2505.24133), on the slot cache: decode tokens
 * gather in LF_RKV_BUFFER extra slots; when every slot is full the layer is
 * compressed back to the budget by importance (attention of the last
 * LF_RKV_WINDOW queries, max-pooled) minus redundancy (cosine similarity of
 * the keys). The slots of a layer are shared by its KV heads, so the
 * per-head scores are averaged over heads before the selection. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "kv/attention.h"
#include "kv/policies/common.h"

/* Per layer: the last LF_RKV_WINDOW decode queries. */
typedef struct rkv_layer {
    float *q;        /* [LF_RKV_WINDOW][n_heads][head_dim] */
    int nq;          /* queries stored (<= LF_RKV_WINDOW), ring order from qhead */
    int qhead;
    int n_compress;  /* compressions so far */
} rkv_layer;

/* Per cache: the selection's workspace. */
typedef struct rkv_state {
    float *work;
    int32_t *keep;
} rkv_state;

size_t lf_rkv_work_floats(int capacity, int n_heads, int n_kv_heads, int head_dim) {
    return (2 * (size_t)n_heads + n_kv_heads + 6) * (size_t)capacity + (size_t)n_kv_heads * head_dim;
}

typedef struct rkv_item {
    float s;
    int32_t j;
} rkv_item;

/* qsort has no context argument: sort (pos, slot) pairs packed in int64. */
static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int cmp_item(const void *a, const void *b) {
    const rkv_item *x = a, *y = b;
    if (x->s > y->s) return -1;
    if (x->s < y->s) return 1;
    return (x->j > y->j) - (x->j < y->j);
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

int lf_rkv_select(const lf_kv_cache *c, int layer, int32_t *keep, float *work) {
    const lf_kv_layer *L = &c->layers[layer];
    const int cap = c->capacity, nh = c->n_heads, nkv = c->n_kv_heads, hd = c->head_dim, rep = nh / nkv;
    const float scale = 1.0f / sqrtf((float)hd);
    /* workspace (malloc'd, so 8-byte aligned at its start) */
    int64_t *pairs = (int64_t *)(void *)work;                /* [cap] (pos << 32 | slot) */
    rkv_item *items = (rkv_item *)(void *)(work + 2 * (size_t)cap); /* [cap] */
    int32_t *cand = (int32_t *)(void *)(work + 4 * (size_t)cap);    /* [cap] slot of candidate j */
    float *score = work + 5 * (size_t)cap;                   /* [cap] */
    float *imp_h = work + 6 * (size_t)cap;                   /* [nh][cap] */
    float *rows = imp_h + (size_t)nh * cap;                  /* [nh][cap] */
    float *red_g = rows + (size_t)nh * cap;                  /* [nkv][cap] */
    float *ssum = red_g + (size_t)nkv * cap;                 /* [nkv][hd] */

    int n = 0;
    for (int i = 0; i < cap; i++)
        if (L->pos[i] >= 0) pairs[n++] = ((int64_t)L->pos[i] << 32) | (uint32_t)i;
    qsort(pairs, (size_t)n, sizeof *pairs, cmp_i64);
    int W = n < LF_RKV_WINDOW ? n : LF_RKV_WINDOW;
    int nc = n - W;
    for (int j = 0; j < nc; j++) cand[j] = (int32_t)(pairs[j] & 0xffffffff);
    int kc = c->budget - W;
    if (kc > nc) kc = nc;
    if (kc < 0) kc = 0;

    if (nc > 0) {
        const rkv_layer *RL = L->pstate;
        const int nq = RL->nq;
#pragma omp parallel for schedule(dynamic, 1) if ((long)nc * (nh * nq + nkv) * hd >= (1L << 20))
        for (int h = 0; h < nh + nkv; h++) {
            if (h < nh) {
                /* importance of query head h */
                int g = h / rep;
                float kb[LF_ATT_WIDE_HD];
                float *a = imp_h + (size_t)h * cap;
                float *row = rows + (size_t)h * cap;
                memset(a, 0, (size_t)nc * sizeof(float));
                if (nq == 0) continue;
                for (int t = 0; t < nq; t++) {
                    const float *qt = RL->q + ((size_t)t * nh + h) * hd;
                    float mx = -INFINITY;
                    for (int j = 0; j < nc; j++) {
                        const float *kr = lf_kv_key_row(c, layer, g, cand[j], kb);
                        float d = 0;
                        for (int e = 0; e < hd; e++) d += qt[e] * kr[e];
                        row[j] = d * scale;
                        if (row[j] > mx) mx = row[j];
                    }
                    float sum = 0;
                    for (int j = 0; j < nc; j++) sum += (row[j] = expf(row[j] - mx));
                    float inv = 1.0f / (sum * (float)nq);
                    for (int j = 0; j < nc; j++) a[j] += row[j] * inv;
                }
                /* max pool of width LF_RKV_POOL along position order */
                const int r = LF_RKV_POOL / 2;
                for (int j = 0; j < nc; j++) {
                    float mx = -INFINITY;
                    for (int d = -r; d <= r; d++)
                        if (j + d >= 0 && j + d < nc && a[j + d] > mx) mx = a[j + d];
                    row[j] = mx;
                }
                memcpy(a, row, (size_t)nc * sizeof(float));
            } else {
                /* redundancy for KV head g */
                int g = h - nh;
                float kb[LF_ATT_WIDE_HD];
                float *S = ssum + (size_t)g * hd;
                float *r = red_g + (size_t)g * cap;
                memset(S, 0, (size_t)hd * sizeof(float));
                for (int j = 0; j < nc; j++) {
                    const float *kr = lf_kv_key_row(c, layer, g, cand[j], kb);
                    float nn = 0;
                    for (int e = 0; e < hd; e++) nn += kr[e] * kr[e];
                    float inv = 1.0f / (sqrtf(nn) + 1e-8f);
                    for (int e = 0; e < hd; e++) S[e] += kr[e] * inv;
                    r[j] = inv; /* kept for the second pass */
                }
                float mx = -INFINITY;
                for (int j = 0; j < nc; j++) {
                    const float *kr = lf_kv_key_row(c, layer, g, cand[j], kb);
                    float inv = r[j], d = 0, self = 0;
                    for (int e = 0; e < hd; e++) {
                        float x = kr[e] * inv;
                        d += x * S[e];
                        self += x * x;
                    }
                    r[j] = (d - self) / (float)nc;
                    if (r[j] > mx) mx = r[j];
                }
                float sum = 0;
                for (int j = 0; j < nc; j++) sum += (r[j] = expf(r[j] - mx));
                for (int j = 0; j < nc; j++) r[j] /= sum;
            }
        }
        for (int j = 0; j < nc; j++) {
            float I = 0, R = 0;
            for (int h = 0; h < nh; h++) I += imp_h[(size_t)h * cap + j];
            for (int g = 0; g < nkv; g++) R += red_g[(size_t)g * cap + j];
            I /= (float)nh;
            R /= (float)nkv;
            score[j] = (float)LF_RKV_LAMBDA * I - (float)(1.0 - LF_RKV_LAMBDA) * R;
            items[j] = (rkv_item){score[j], j};
        }
        qsort(items, (size_t)nc, sizeof *items, cmp_item);
    }
    int o = 0;
    for (int i = 0; i < kc; i++) keep[o++] = cand[items[i].j];
    for (int j = nc; j < n; j++) keep[o++] = (int32_t)(pairs[j] & 0xffffffff);
    qsort(keep, (size_t)o, sizeof *keep, cmp_i32);
    return o;
}

/* ---- the policy ------------------------------------------------------------- */

static int cache_new(lf_kv_cache *c, size_t *bytes) {
    rkv_state *st = calloc(1, sizeof *st);
    c->policy_state = st;
    if (!st) return -1;
    const size_t wf = lf_rkv_work_floats(c->capacity, c->n_heads, c->n_kv_heads, c->head_dim);
    st->work = malloc(wf * sizeof(float));
    st->keep = malloc((size_t)c->capacity * sizeof(int32_t));
    if (!st->work || !st->keep) return -1;
    *bytes += sizeof *st + wf * sizeof(float) + (size_t)c->capacity * sizeof(int32_t);
    return 0;
}

static void cache_free(lf_kv_cache *c) {
    rkv_state *st = c->policy_state;
    if (!st) return;
    free(st->work);
    free(st->keep);
    free(st);
    c->policy_state = NULL;
}

static void layer_free(void *pstate) {
    rkv_layer *R = pstate;
    if (R) free(R->q);
    free(R);
}

static void *layer_new(const lf_kv_cache *c, size_t *bytes) {
    rkv_layer *R = calloc(1, sizeof *R);
    const size_t nq = (size_t)LF_RKV_WINDOW * c->n_heads * c->head_dim;
    if (!R || !(R->q = calloc(nq, sizeof(float)))) {
        layer_free(R);
        return NULL;
    }
    *bytes += sizeof *R + nq * sizeof(float);
    return R;
}

static void layer_reset(const lf_kv_cache *c, void *pstate) {
    (void)c;
    rkv_layer *R = pstate;
    R->nq = R->qhead = R->n_compress = 0;
}

static void on_store(lf_kv_cache *c, int layer, int slot, const float *q) {
    (void)slot;
    rkv_layer *R = c->layers[layer].pstate;
    int at;
    if (R->nq < LF_RKV_WINDOW) {
        at = R->nq++;
    } else {
        at = R->qhead;
        R->qhead = (R->qhead + 1) % LF_RKV_WINDOW;
    }
    const size_t n = (size_t)c->n_heads * c->head_dim;
    memcpy(R->q + (size_t)at * n, q, n * sizeof(float));
}

static void compress(lf_kv_cache *c, int layer) {
    lf_kv_layer *L = &c->layers[layer];
    rkv_state *st = c->policy_state;
    int nk = lf_rkv_select(c, layer, st->keep, st->work);
    int j = 0;
    for (int i = 0; i < c->capacity; i++) {
        if (j < nk && st->keep[j] == i) {
            j++;
            continue;
        }
        lf_kv_drop_slot(c, L, i);
    }
    ((rkv_layer *)L->pstate)->n_compress++;
}

static int choose(lf_kv_cache *c, int layer, int pnow) {
    (void)pnow;
    lf_kv_layer *L = &c->layers[layer];
    if (L->n_valid >= c->capacity) compress(c, layer);
    return lf_first_empty(c, L);
}

int lf_rkv_compressions(const lf_kv_cache *c, int layer) {
    return ((const rkv_layer *)c->layers[layer].pstate)->n_compress;
}

float *lf_rkv_queries(const lf_kv_cache *c, int layer, int **count) {
    rkv_layer *R = c->layers[layer].pstate;
    *count = &R->nq;
    return R->q;
}

const lf_policy_desc lf_policy_rkv = {
    .name = "rkv",
    .paper = "R-KV, Cai et al., arXiv 2505.24133",
    .rule = "buffer 128 new tokens, then keep the best budget by 0.1*importance(last 8 queries, max-pool 5) - "
            "0.9*redundancy(key cosine similarity)",
    .aux = "4 B (position) + 128 buffer slots of K/V per layer + 8 queries per layer",
    .aux_bytes_per_slot = 4,
    .budgeted = true,
    .extra_slots = LF_RKV_BUFFER,
    .min_budget = LF_RKV_WINDOW,
    .score = LF_SCORE_NONE,
    .gpu = LF_GPU_NONE,
    .defaults = lf_defaults_unprotected,
    .cache_new = cache_new,
    .cache_free = cache_free,
    .layer_new = layer_new,
    .layer_free = layer_free,
    .layer_reset = layer_reset,
    .prefill_select = lf_snapkv_prefill,
    .on_store = on_store,
    .choose = choose,
};
