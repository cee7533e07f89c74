/* Shared policy building blocks (see common.h). */
#include "kv/policies/common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "kv/attention.h"

/* ---- defaults ---------------------------------------------------------------- */

int lf_defaults_unprotected(const lf_policy_config *in, int budget, lf_policy_config *out, lf_error *err) {
    (void)budget;
    if (in->sinks > 0 || in->recent > 0 || in->protect_prompt > 0) {
        lf_policy_kind k = in->kind;
        return lf_fail(err, "--sinks/--recent/--protect-prompt do not apply to --policy %s", lf_policy_name(k));
    }
    out->sinks = out->recent = 0;
    return 0;
}

int lf_defaults_protect_none(const lf_policy_config *in, int budget, lf_policy_config *out, lf_error *err) {
    (void)budget;
    (void)err;
    out->sinks = in->sinks < 0 ? 0 : in->sinks;
    out->recent = in->recent < 0 ? 0 : in->recent;
    return 0;
}

int lf_defaults_recent_half(const lf_policy_config *in, int budget, lf_policy_config *out, lf_error *err) {
    (void)err;
    out->sinks = in->sinks < 0 ? 0 : in->sinks;
    out->recent = in->recent < 0 ? budget / 2 : in->recent;
    return 0;
}

int lf_first_empty(const lf_kv_cache *c, const lf_kv_layer *L) {
    if (L->n_valid >= c->capacity) return -1;
    for (int i = 0; i < c->capacity; i++)
        if (L->pos[i] < 0) return i;
    return -1;
}

/* ---- scored state ------------------------------------------------------------ */

static bool mode_stores(lf_score_mode m) {
    return m == LF_SCORE_ACC || m == LF_SCORE_ACC_VNORM || m == LF_SCORE_STORED;
}

void *lf_scored_layer_new(const lf_kv_cache *c, size_t *bytes) {
    const size_t cap = (size_t)c->capacity;
    lf_scored_layer *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    *bytes += sizeof *s;
    s->score = calloc(cap, sizeof *s->score);
    if (!s->score) goto oom;
    *bytes += cap * sizeof *s->score;
    if (mode_stores(c->desc->score)) {
        if (!(s->acc = calloc(cap, sizeof *s->acc))) goto oom;
        *bytes += cap * sizeof *s->acc;
    }
    if (c->policy.evict_every > 1) {
        if (!(s->queue = malloc((size_t)c->policy.evict_every * sizeof *s->queue))) goto oom;
        *bytes += (size_t)c->policy.evict_every * sizeof *s->queue;
    }
    return s;
oom:
    lf_scored_layer_free(s);
    return NULL;
}

void lf_scored_layer_free(void *pstate) {
    lf_scored_layer *s = pstate;
    if (!s) return;
    free(s->score);
    free(s->acc);
    free(s->queue);
    free(s);
}

void lf_scored_layer_reset(const lf_kv_cache *c, void *pstate) {
    lf_scored_layer *s = pstate;
    memset(s->score, 0, (size_t)c->capacity * sizeof(float));
    if (s->acc) memset(s->acc, 0, (size_t)c->capacity * sizeof(float));
    s->n_queue = s->queue_head = 0;
}

float lf_slot_stat_value(const lf_kv_cache *c, int layer, int slot, lf_slot_stat stat) {
    const int nkv = c->n_kv_heads, hd = c->head_dim;
    switch (stat) {
    case LF_SLOT_STAT_NEG_KEY_L2: {
        float sum = 0;
        for (int g = 0; g < nkv; g++) {
            float buf[LF_ATT_WIDE_HD];
            const float *k = lf_kv_key_row(c, layer, g, slot, buf);
            float n2 = 0;
            for (int d = 0; d < hd; d++) n2 += k[d] * k[d];
            sum += sqrtf(n2);
        }
        return -sum / (float)nkv;
    }
    default:
        return 0;
    }
}

int lf_scored_prefill_state(lf_kv_cache *c, int layer, const float *q, const float *k, int n,
                            const int32_t *kept, int nk, lf_error *err) {
    lf_scored_layer *s = c->layers[layer].pstate;
    const lf_policy_desc *d = c->desc;
    if (d->score == LF_SCORE_STORED) {
        for (int i = 0; i < nk; i++) s->acc[i] = lf_slot_stat_value(c, layer, i, d->slot_stat);
        return 0;
    }
    if (!s->acc) return 0;
    float *win = malloc((size_t)n * sizeof *win);
    if (!win) return lf_fail(err, "KV cache: out of memory");
    if (lf_window_attention(q, k, n, c->n_heads, c->n_kv_heads, c->head_dim, LF_SNAPKV_WINDOW, win, err)) {
        free(win);
        return -1;
    }
    for (int i = 0; i < nk; i++) s->acc[i] = win[kept ? kept[i] : i];
    free(win);
    return 0;
}

void lf_scored_on_store(lf_kv_cache *c, int layer, int slot, const float *q) {
    (void)q;
    lf_scored_layer *s = c->layers[layer].pstate;
    if (c->desc->score == LF_SCORE_STORED)
        s->acc[slot] = lf_slot_stat_value(c, layer, slot, c->desc->slot_stat);
    else if (s->acc)
        s->acc[slot] = 0; /* accumulated attention restarts with the slot */
}

/* sc[i] = sum over KV heads of the kernel's attention (times |v|_1 with vnorm) */
static void sum_attention(const lf_kv_cache *c, int hw, bool vnorm, float *sc) {
    for (int i = 0; i < hw; i++) sc[i] = 0;
    for (int g = 0; g < c->n_kv_heads; g++) {
        const float *a = lf_att_att(c, g), *vn = lf_att_vn(c, g);
        if (vnorm)
            for (int i = 0; i < hw; i++) sc[i] += a[i] * vn[i];
        else
            for (int i = 0; i < hw; i++) sc[i] += a[i];
    }
}

void lf_scored_score(lf_kv_cache *c, int layer) {
    const lf_kv_layer *L = &c->layers[layer];
    lf_scored_layer *s = L->pstate;
    const int cap = c->capacity, nkv = c->n_kv_heads, hw = L->hw;
    const lf_score_mode mode = c->desc->score;
    float *sc = s->score;
    switch (mode) {
    case LF_SCORE_ATT_VNORM: {
        const float norm = 1.0f / ((float)c->n_heads * (float)c->head_dim);
        sum_attention(c, hw, true, sc);
        for (int i = 0; i < hw; i++) sc[i] *= norm;
        break;
    }
    case LF_SCORE_ATT:
    case LF_SCORE_ACC:
    case LF_SCORE_ACC_VNORM: {
        const float norm = 1.0f / (float)c->n_heads;
        sum_attention(c, hw, false, sc);
        for (int i = 0; i < hw; i++) sc[i] *= norm;
        if (mode == LF_SCORE_ATT) break;
        for (int i = 0; i < hw; i++)
            if (L->pos[i] >= 0) s->acc[i] += sc[i];
        for (int i = 0; i < hw; i++) sc[i] = s->acc[i];
        if (mode == LF_SCORE_ACC_VNORM) {
            const float ng = 1.0f / (float)nkv;
            for (int i = 0; i < hw; i++) {
                float vb = 0;
                for (int g = 0; g < nkv; g++) vb += lf_att_vn(c, g)[i];
                sc[i] *= vb * ng;
            }
        }
        break;
    }
    case LF_SCORE_STORED:
        for (int i = 0; i < hw; i++) sc[i] = s->acc[i];
        break;
    default:
        break;
    }
    const float empty = (mode == LF_SCORE_ATT_VNORM || mode == LF_SCORE_ATT) ? 0.0f : -INFINITY;
    for (int i = 0; i < cap; i++)
        if (i >= hw || L->pos[i] < 0) sc[i] = empty;
}

int lf_scored_argmin(lf_kv_cache *c, int layer, int pnow) {
    const lf_kv_layer *L = &c->layers[layer];
    const float *score = ((const lf_scored_layer *)L->pstate)->score;
    int best = -1;
    float bs = INFINITY;
    for (int i = 0; i < c->capacity; i++) {
        if (L->pos[i] >= 0 && !lf_slot_evictable(c, L->pos[i], pnow)) continue;
        if (best < 0 || score[i] < bs) {
            best = i;
            bs = score[i];
        }
    }
    return best;
}

typedef struct slot_key {
    float s;
    int32_t i;
} slot_key;

static int cmp_key(const void *a, const void *b) {
    const slot_key *x = a, *y = b;
    if (x->s < y->s) return -1;
    if (x->s > y->s) return 1;
    return (x->i > y->i) - (x->i < y->i);
}

static int cmp_slot(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* A new queue of victims; returns the first, or -1. The scratch of the
 * kernel is free again at this point and holds the sort keys. */
static int queue_victims(lf_kv_cache *c, const lf_kv_layer *L, lf_scored_layer *s, int pnow) {
    slot_key *keys = (slot_key *)(void *)c->scratch;
    int n = 0;
    for (int i = 0; i < c->capacity; i++) {
        if (L->pos[i] >= 0 && !lf_slot_evictable(c, L->pos[i], pnow)) continue;
        keys[n++] = (slot_key){s->score[i], i};
    }
    if (n == 0) return -1;
    qsort(keys, (size_t)n, sizeof *keys, cmp_key);
    int K = c->policy.evict_every < n ? c->policy.evict_every : n;
    for (int j = 0; j < K; j++) s->queue[j] = keys[j].i;
    qsort(s->queue, (size_t)K, sizeof *s->queue, cmp_slot);
    s->n_queue = K;
    s->queue_head = 1;
    return s->queue[0];
}

int lf_scored_queued(lf_kv_cache *c, int layer, int pnow) {
    const lf_kv_layer *L = &c->layers[layer];
    lf_scored_layer *s = L->pstate;
    if (s->queue_head < s->n_queue) return s->queue[s->queue_head++];
    return queue_victims(c, L, s, pnow);
}
