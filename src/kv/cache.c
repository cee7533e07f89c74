/* Slot cache: allocation, prefill and the decode attention.
 * (First version: the `full` policy with a plain attention loop; the fused
 * attention + scoring kernel and the other policies replace it.) */
#include "kv/cache.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

int lf_kv_cache_init(lf_kv_cache *c, const lf_config *cfg, const lf_policy_config *p, int budget,
                     lf_error *err) {
    memset(c, 0, sizeof *c);
    if (budget <= 0) return lf_fail(err, "KV cache: budget must be positive (got %d)", budget);
    c->policy = *p;
    c->n_layers = cfg->n_layers;
    c->n_heads = cfg->n_heads;
    c->n_kv_heads = cfg->n_kv_heads;
    c->head_dim = cfg->head_dim;
    c->budget = budget;
    c->capacity = budget;
    size_t n = (size_t)c->n_layers * c->n_kv_heads * c->capacity * c->head_dim;
    c->k = malloc(n * sizeof(float));
    c->v = malloc(n * sizeof(float));
    c->layers = calloc((size_t)c->n_layers, sizeof *c->layers);
    if (!c->k || !c->v || !c->layers) goto oom;
    for (int l = 0; l < c->n_layers; l++) {
        lf_kv_layer *L = &c->layers[l];
        L->pos = malloc((size_t)c->capacity * sizeof *L->pos);
        L->score = calloc((size_t)c->capacity, sizeof *L->score);
        if (!L->pos || !L->score) goto oom;
        for (int i = 0; i < c->capacity; i++) L->pos[i] = -1;
    }
    c->bytes = 2 * n * sizeof(float) + (size_t)c->n_layers * c->capacity * (sizeof(int32_t) + sizeof(float));
    return 0;
oom:
    lf_kv_cache_free(c);
    return lf_fail(err, "KV cache: out of memory for %d slots x %d layers", budget, cfg->n_layers);
}

void lf_kv_cache_free(lf_kv_cache *c) {
    if (c->layers)
        for (int l = 0; l < c->n_layers; l++) {
            free(c->layers[l].pos);
            free(c->layers[l].score);
            free(c->layers[l].acc);
            free(c->layers[l].evict_q);
        }
    free(c->layers);
    free(c->k);
    free(c->v);
    memset(c, 0, sizeof *c);
}

int lf_kv_prefill_layer(lf_kv_cache *c, int layer, const float *q, const float *k, const float *v,
                        int n, lf_error *err) {
    (void)q;
    if (n > c->budget)
        return lf_fail(err, "KV cache: prompt of %d tokens does not fit %d slots", n, c->budget);
    lf_kv_layer *L = &c->layers[layer];
    int hd = c->head_dim;
    for (int h = 0; h < c->n_kv_heads; h++) {
        float *K = lf_kv_k(c, layer, h), *V = lf_kv_v(c, layer, h);
        for (int t = 0; t < n; t++) {
            memcpy(K + (size_t)t * hd, k + ((size_t)t * c->n_kv_heads + h) * hd, hd * sizeof(float));
            memcpy(V + (size_t)t * hd, v + ((size_t)t * c->n_kv_heads + h) * hd, hd * sizeof(float));
        }
    }
    for (int t = 0; t < n; t++) L->pos[t] = t;
    L->n_valid = n;
    L->next_slot = n < c->capacity ? n : 0;
    if (layer == 0) c->n_prompt = n;
    if (n > c->peak_valid) c->peak_valid = n;
    return 0;
}

void lf_kv_decode_layer(lf_kv_cache *const *caches, int n_seq, int layer, const float *q,
                        const float *k, const float *v, const int *pos, float *out) {
    for (int s = 0; s < n_seq; s++) {
        lf_kv_cache *c = caches[s];
        lf_kv_layer *L = &c->layers[layer];
        int hd = c->head_dim, nkv = c->n_kv_heads, nh = c->n_heads, rep = nh / nkv;
        int slot = L->next_slot;
        for (int h = 0; h < nkv; h++) {
            memcpy(lf_kv_k(c, layer, h) + (size_t)slot * hd, k + ((size_t)s * nkv + h) * hd, hd * sizeof(float));
            memcpy(lf_kv_v(c, layer, h) + (size_t)slot * hd, v + ((size_t)s * nkv + h) * hd, hd * sizeof(float));
        }
        if (L->pos[slot] < 0) L->n_valid++;
        L->pos[slot] = pos[s];
        float scale = 1.0f / sqrtf((float)hd);
        float *w = malloc((size_t)c->capacity * sizeof(float));
        for (int h = 0; h < nh; h++) {
            int kvh = h / rep;
            const float *qh = q + ((size_t)s * nh + h) * hd;
            const float *K = lf_kv_k(c, layer, kvh), *V = lf_kv_v(c, layer, kvh);
            float mx = -INFINITY;
            for (int i = 0; i < c->capacity; i++) {
                if (L->pos[i] < 0) continue;
                float d = 0;
                for (int j = 0; j < hd; j++) d += qh[j] * K[(size_t)i * hd + j];
                w[i] = d * scale;
                if (w[i] > mx) mx = w[i];
            }
            float sum = 0;
            for (int i = 0; i < c->capacity; i++)
                if (L->pos[i] >= 0) sum += (w[i] = expf(w[i] - mx));
            float *o = out + ((size_t)s * nh + h) * hd;
            memset(o, 0, hd * sizeof(float));
            for (int i = 0; i < c->capacity; i++) {
                if (L->pos[i] < 0) continue;
                float a = w[i] / sum;
                for (int j = 0; j < hd; j++) o[j] += a * V[(size_t)i * hd + j];
            }
        }
        free(w);
        L->next_slot = slot + 1 < c->capacity ? slot + 1 : slot;
        if (L->n_valid > c->peak_valid) c->peak_valid = L->n_valid;
    }
}

int lf_kv_cache_tokens(const lf_kv_cache *c) {
    int m = 0;
    for (int l = 0; l < c->n_layers; l++)
        if (c->layers[l].n_valid > m) m = c->layers[l].n_valid;
    return m;
}
