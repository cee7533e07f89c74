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

#include "kv/policy.h"

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
    const int cap = c->capacity, H = c->n_heads, G = c->n_kv_heads, hd = c->head_dim, rep = H / G;
    const float scale = 1.0f / sqrtf((float)hd);
    /* workspace (malloc'd, so 8-byte aligned at its start) */
    int64_t *pairs = (int64_t *)(void *)work;                /* [cap] (pos << 32 | slot) */
    rkv_item *items = (rkv_item *)(void *)(work + 2 * (size_t)cap); /* [cap] */
    int32_t *cand = (int32_t *)(void *)(work + 4 * (size_t)cap);    /* [cap] slot of candidate j */
    float *score = work + 5 * (size_t)cap;                   /* [cap] */
    float *imp_h = work + 6 * (size_t)cap;                   /* [H][cap] */
    float *rows = imp_h + (size_t)H * cap;                   /* [H][cap] */
    float *red_g = rows + (size_t)H * cap;                   /* [G][cap] */
    float *ssum = red_g + (size_t)G * cap;                   /* [G][hd] */

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
        const int nq = L->rkv_nq;
#pragma omp parallel for schedule(dynamic, 1) if ((long)nc * (H * nq + G) * hd >= (1L << 20))
        for (int h = 0; h < H + G; h++) {
            if (h < H) {
                /* importance of query head h */
                int g = h / rep;
                const float *K = lf_kv_k(c, layer, g);
                float *a = imp_h + (size_t)h * cap;
                float *row = rows + (size_t)h * cap;
                memset(a, 0, (size_t)nc * sizeof(float));
                if (nq == 0) continue;
                for (int t = 0; t < nq; t++) {
                    const float *qt = L->rkv_q + ((size_t)t * H + h) * hd;
                    float mx = -INFINITY;
                    for (int j = 0; j < nc; j++) {
                        const float *kr = K + (size_t)cand[j] * hd;
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
                int g = h - H;
                const float *K = lf_kv_k(c, layer, g);
                float *S = ssum + (size_t)g * hd;
                float *r = red_g + (size_t)g * cap;
                memset(S, 0, (size_t)hd * sizeof(float));
                for (int j = 0; j < nc; j++) {
                    const float *kr = K + (size_t)cand[j] * hd;
                    float nn = 0;
                    for (int e = 0; e < hd; e++) nn += kr[e] * kr[e];
                    float inv = 1.0f / (sqrtf(nn) + 1e-8f);
                    for (int e = 0; e < hd; e++) S[e] += kr[e] * inv;
                    r[j] = inv; /* kept for the second pass */
                }
                float mx = -INFINITY;
                for (int j = 0; j < nc; j++) {
                    const float *kr = K + (size_t)cand[j] * hd;
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
            for (int h = 0; h < H; h++) I += imp_h[(size_t)h * cap + j];
            for (int g = 0; g < G; g++) R += red_g[(size_t)g * cap + j];
            I /= (float)H;
            R /= (float)G;
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
