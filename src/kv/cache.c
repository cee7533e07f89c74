/* Slot cache: allocation, prefill (with SnapKV compression), the decode step
 * (store, fused attention + score, victim choice) of every policy. */
#include "kv/cache.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "kv/attention.h"
#include "kv/policy.h"

/* R-KV's workspace, owned by the cache (policy_state). */
typedef struct rkv_state {
    float *work;
    int32_t *keep;
} rkv_state;

static bool uses_scores(lf_policy_kind k) {
    return k == LF_POLICY_LONGFLOW || k == LF_POLICY_TOVA || k == LF_POLICY_H2O || k == LF_POLICY_VATP;
}

static bool uses_acc(lf_policy_kind k) { return k == LF_POLICY_H2O || k == LF_POLICY_VATP; }

static void layer_reset(lf_kv_cache *c, lf_kv_layer *L) {
    c->total_valid -= L->n_valid;
    for (int i = 0; i < c->capacity; i++) L->pos[i] = -1;
    memset(L->score, 0, (size_t)c->capacity * sizeof(float));
    if (L->acc) memset(L->acc, 0, (size_t)c->capacity * sizeof(float));
    L->n_valid = 0;
    L->next_slot = 0;
    L->hw = 0;
    L->steps = 0;
    L->n_evict_q = 0;
    L->evict_q_head = 0;
    L->rkv_nq = 0;
    L->rkv_qhead = 0;
    L->n_compress = 0;
}

int lf_kv_cache_init(lf_kv_cache *c, const lf_config *cfg, const lf_policy_config *p, int budget,
                     lf_error *err) {
    memset(c, 0, sizeof *c);
    if (budget <= 0) return lf_fail(err, "KV cache: budget must be positive (got %d)", budget);
    if (cfg->n_layers <= 0 || cfg->n_heads <= 0 || cfg->n_kv_heads <= 0 || cfg->head_dim <= 0 ||
        cfg->n_heads % cfg->n_kv_heads != 0)
        return lf_fail(err, "KV cache: bad model shape (%d layers, %d heads, %d KV heads, head_dim %d)",
                       cfg->n_layers, cfg->n_heads, cfg->n_kv_heads, cfg->head_dim);
    if (cfg->n_heads / cfg->n_kv_heads > LF_ATT_MAX_GROUP)
        return lf_fail(err, "KV cache: %d query heads per KV head is more than the %d supported",
                       cfg->n_heads / cfg->n_kv_heads, LF_ATT_MAX_GROUP);
    /* Check the flags against the user's budget; the engine may give fewer
     * slots (prompt + max tokens) when that is all the sequence can use, and
     * then nothing is ever evicted. */
    int vb = p->budget > budget ? p->budget : budget;
    lf_policy_config res;
    if (lf_policy_resolve(p, vb, &res, err)) return -1;
    res.budget = budget;
    if (res.kind != LF_POLICY_FULL) {
        if (res.sinks >= budget) res.sinks = budget - 1;
        if (res.sinks + res.recent >= budget) res.recent = budget - 1 - res.sinks;
        if (res.evict_every > budget - res.sinks - res.recent) res.evict_every = budget - res.sinks - res.recent;
    }
    if (res.kind == LF_POLICY_RKV && budget <= LF_RKV_WINDOW)
        return lf_fail(err, "KV cache: --policy rkv needs more than %d slots (got %d)", LF_RKV_WINDOW, budget);
    c->policy = res;
    c->sinks_default = p->sinks < 0;
    c->n_layers = cfg->n_layers;
    c->n_heads = cfg->n_heads;
    c->n_kv_heads = cfg->n_kv_heads;
    c->head_dim = cfg->head_dim;
    c->budget = budget;
    if (res.kind == LF_POLICY_RKV && budget > INT_MAX - LF_RKV_BUFFER)
        return lf_fail(err, "KV cache: budget %d is too large", budget);
    c->capacity = budget + (res.kind == LF_POLICY_RKV ? LF_RKV_BUFFER : 0);
    const int cap = c->capacity;
    size_t n = (size_t)c->n_layers * c->n_kv_heads * (size_t)cap * c->head_dim;
    size_t bytes = 0;
    c->k = calloc(n, sizeof(float));
    c->v = calloc(n, sizeof(float));
    c->layers = calloc((size_t)c->n_layers, sizeof *c->layers);
    if (!c->k || !c->v || !c->layers) goto oom;
    bytes += 2 * n * sizeof(float) + (size_t)c->n_layers * sizeof *c->layers;
    for (int l = 0; l < c->n_layers; l++) {
        lf_kv_layer *L = &c->layers[l];
        L->pos = malloc((size_t)cap * sizeof *L->pos);
        L->score = calloc((size_t)cap, sizeof *L->score);
        if (!L->pos || !L->score) goto oom;
        bytes += (size_t)cap * (sizeof *L->pos + sizeof *L->score);
        if (uses_acc(res.kind)) {
            if (!(L->acc = calloc((size_t)cap, sizeof *L->acc))) goto oom;
            bytes += (size_t)cap * sizeof *L->acc;
        }
        if (res.kind == LF_POLICY_LONGFLOW && res.evict_every > 1) {
            if (!(L->evict_q = malloc((size_t)res.evict_every * sizeof *L->evict_q))) goto oom;
            bytes += (size_t)res.evict_every * sizeof *L->evict_q;
        }
        if (res.kind == LF_POLICY_RKV) {
            size_t nq = (size_t)LF_RKV_WINDOW * c->n_heads * c->head_dim;
            if (!(L->rkv_q = calloc(nq, sizeof(float)))) goto oom;
            bytes += nq * sizeof(float);
        }
        for (int i = 0; i < cap; i++) L->pos[i] = -1;
    }
    c->scratch_floats = lf_att_scratch_floats(c->n_heads, c->n_kv_heads, c->head_dim, cap);
    if (!(c->scratch = calloc(c->scratch_floats, sizeof(float)))) goto oom;
    bytes += c->scratch_floats * sizeof(float);
    if (res.kind == LF_POLICY_RKV) {
        rkv_state *st = calloc(1, sizeof *st);
        c->policy_state = st;
        if (!st) goto oom;
        size_t wf = lf_rkv_work_floats(cap, c->n_heads, c->n_kv_heads, c->head_dim);
        st->work = malloc(wf * sizeof(float));
        st->keep = malloc((size_t)cap * sizeof(int32_t));
        if (!st->work || !st->keep) goto oom;
        bytes += wf * sizeof(float) + (size_t)cap * sizeof(int32_t);
    }
    c->bytes = bytes;
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
            free(c->layers[l].rkv_q);
        }
    if (c->policy_state) {
        rkv_state *st = c->policy_state;
        free(st->work);
        free(st->keep);
        free(st);
    }
    free(c->layers);
    free(c->k);
    free(c->v);
    free(c->scratch);
    memset(c, 0, sizeof *c);
}

void lf_kv_cache_reset(lf_kv_cache *c) {
    for (int l = 0; l < c->n_layers; l++) layer_reset(c, &c->layers[l]);
    c->total_valid = 0;
    c->peak_total_valid = 0;
    c->peak_valid = 0;
    c->n_prompt = 0;
    c->overflow = false;
}

static void note_peaks(lf_kv_cache *c, const lf_kv_layer *L) {
    if (L->n_valid > c->peak_valid) c->peak_valid = L->n_valid;
    if (c->total_valid > c->peak_total_valid) c->peak_total_valid = c->total_valid;
}

/* ---- prefill ----------------------------------------------------------------- */

int lf_kv_prefill_layer(lf_kv_cache *c, int layer, const float *q, const float *k, const float *v,
                        int n, lf_error *err) {
    if (layer < 0 || layer >= c->n_layers)
        return lf_fail(err, "KV cache: layer %d out of range (%d layers)", layer, c->n_layers);
    if (n <= 0) return lf_fail(err, "KV cache: empty prompt");
    lf_kv_layer *L = &c->layers[layer];
    const lf_policy_kind kind = c->policy.kind;
    const int B = c->budget, nkv = c->n_kv_heads, hd = c->head_dim;
    int32_t *kept = NULL;
    float *win = NULL;
    int nk = n;
    if (kind == LF_POLICY_FULL) {
        if (n > c->capacity)
            return lf_fail(err, "KV cache: a prompt of %d tokens does not fit the %d slots of --policy full",
                           n, c->capacity);
    } else if (n > B - 1) {
        if (B < LF_SNAPKV_MIN_BUDGET)
            return lf_fail(err,
                           "--budget %d is too small for a prompt of %d tokens: --policy %s compresses a prompt "
                           "longer than budget-1 with SnapKV, which keeps the last %d prompt tokens, so the "
                           "budget must be more than %d",
                           B, n, lf_policy_name(kind), LF_SNAPKV_WINDOW, LF_SNAPKV_MIN_BUDGET - 1);
        nk = B - 1;
        int sinks = c->policy.sinks;
        if (c->sinks_default && sinks > nk - LF_SNAPKV_WINDOW - 1) sinks = nk - LF_SNAPKV_WINDOW - 1;
        if (!(kept = malloc((size_t)nk * sizeof *kept))) return lf_fail(err, "KV cache: out of memory");
        if (lf_snapkv_select(q, k, n, c->n_heads, nkv, hd, nk, sinks, kept, err)) {
            free(kept);
            return -1;
        }
    }
    if (uses_acc(kind)) {
        if (!(win = malloc((size_t)n * sizeof *win))) {
            free(kept);
            return lf_fail(err, "KV cache: out of memory");
        }
        if (lf_window_attention(q, k, n, c->n_heads, nkv, hd, LF_SNAPKV_WINDOW, win, err)) {
            free(kept);
            free(win);
            return -1;
        }
    }
    layer_reset(c, L);
    for (int h = 0; h < nkv; h++) {
        float *K = lf_kv_k(c, layer, h), *V = lf_kv_v(c, layer, h);
        for (int i = 0; i < nk; i++) {
            int t = kept ? kept[i] : i;
            memcpy(K + (size_t)i * hd, k + ((size_t)t * nkv + h) * hd, (size_t)hd * sizeof(float));
            memcpy(V + (size_t)i * hd, v + ((size_t)t * nkv + h) * hd, (size_t)hd * sizeof(float));
        }
    }
    for (int i = 0; i < nk; i++) {
        int t = kept ? kept[i] : i;
        L->pos[i] = t;
        if (win) L->acc[i] = win[t];
    }
    L->n_valid = nk;
    L->hw = nk;
    L->next_slot = nk < c->capacity ? nk : -1;
    c->total_valid += nk;
    c->n_prompt = n;
    note_peaks(c, L);
    free(kept);
    free(win);
    return 0;
}

/* ---- decode ------------------------------------------------------------------ */

static void store(lf_kv_cache *c, int layer, const float *k, const float *v, const float *q, int p) {
    lf_kv_layer *L = &c->layers[layer];
    int slot = L->next_slot;
    if (slot < 0) {
        c->overflow = true;
        return;
    }
    const int nkv = c->n_kv_heads, hd = c->head_dim;
    for (int h = 0; h < nkv; h++) {
        memcpy(lf_kv_k(c, layer, h) + (size_t)slot * hd, k + (size_t)h * hd, (size_t)hd * sizeof(float));
        memcpy(lf_kv_v(c, layer, h) + (size_t)slot * hd, v + (size_t)h * hd, (size_t)hd * sizeof(float));
    }
    if (L->pos[slot] < 0) {
        L->n_valid++;
        c->total_valid++;
        note_peaks(c, L);
    }
    L->pos[slot] = p;
    if (slot >= L->hw) L->hw = slot + 1;
    if (L->acc) L->acc[slot] = 0; /* accumulated attention restarts with the slot */
    if (L->rkv_q) {
        int at;
        if (L->rkv_nq < LF_RKV_WINDOW) {
            at = L->rkv_nq++;
        } else {
            at = L->rkv_qhead;
            L->rkv_qhead = (L->rkv_qhead + 1) % LF_RKV_WINDOW;
        }
        memcpy(L->rkv_q + (size_t)at * c->n_heads * hd, q, (size_t)c->n_heads * hd * sizeof(float));
    }
}

static int first_empty(const lf_kv_cache *c, const lf_kv_layer *L) {
    if (L->n_valid >= c->capacity) return -1;
    for (int i = 0; i < c->capacity; i++)
        if (L->pos[i] < 0) return i;
    return -1;
}

/* Whether a slot holding position p may be evicted at a step whose newest
 * token is at position pnow. */
static inline bool evictable(const lf_policy_config *P, int p, int pnow) {
    return p >= P->sinks && p <= pnow - P->recent;
}

/* Fill L->score for the score-based policies from the kernel's per-slot
 * results; empty slots get 0 (LongFlow, TOVA: the reference kernel's masked
 * score) or -inf (H2O, VATP: an empty slot is always used first). */
static void compute_scores(lf_kv_cache *c, lf_kv_layer *L) {
    const int cap = c->capacity, G = c->n_kv_heads, hw = L->hw;
    const lf_policy_kind kind = c->policy.kind;
    float *sc = L->score;
    const float empty = (kind == LF_POLICY_H2O || kind == LF_POLICY_VATP) ? -INFINITY : 0.0f;
    switch (kind) {
    case LF_POLICY_LONGFLOW: {
        const float norm = 1.0f / ((float)c->n_heads * (float)c->head_dim);
        for (int i = 0; i < hw; i++) sc[i] = 0;
        for (int g = 0; g < G; g++) {
            const float *a = lf_att_att(c, g), *vn = lf_att_vn(c, g);
            for (int i = 0; i < hw; i++) sc[i] += a[i] * vn[i];
        }
        for (int i = 0; i < hw; i++) sc[i] *= norm;
        break;
    }
    case LF_POLICY_TOVA:
    case LF_POLICY_H2O:
    case LF_POLICY_VATP: {
        const float norm = 1.0f / (float)c->n_heads;
        for (int i = 0; i < hw; i++) sc[i] = 0;
        for (int g = 0; g < G; g++) {
            const float *a = lf_att_att(c, g);
            for (int i = 0; i < hw; i++) sc[i] += a[i];
        }
        for (int i = 0; i < hw; i++) sc[i] *= norm;
        if (kind == LF_POLICY_TOVA) break;
        for (int i = 0; i < hw; i++)
            if (L->pos[i] >= 0) L->acc[i] += sc[i];
        for (int i = 0; i < hw; i++) sc[i] = L->acc[i];
        if (kind == LF_POLICY_VATP) {
            const float ng = 1.0f / (float)G;
            for (int i = 0; i < hw; i++) {
                float vb = 0;
                for (int g = 0; g < G; g++) vb += lf_att_vn(c, g)[i];
                sc[i] *= vb * ng;
            }
        }
        break;
    }
    default:
        break;
    }
    for (int i = 0; i < cap; i++)
        if (i >= hw || L->pos[i] < 0) sc[i] = empty;
}

/* The evictable slot with the smallest score (lowest index on ties). */
static int argmin_score(const lf_kv_cache *c, const lf_kv_layer *L, int pnow) {
    int best = -1;
    float bs = INFINITY;
    for (int i = 0; i < c->capacity; i++) {
        if (L->pos[i] >= 0 && !evictable(&c->policy, L->pos[i], pnow)) continue;
        if (best < 0 || L->score[i] < bs) {
            best = i;
            bs = L->score[i];
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

/* LongFlow --evict-every K: queue the K evictable slots with the smallest
 * scores (ties: lower index), to be refilled in slot order. Returns the
 * first, or -1. The scratch of the kernel is free again at this point and
 * holds the sort keys. */
static int queue_victims(lf_kv_cache *c, lf_kv_layer *L, int pnow) {
    slot_key *keys = (slot_key *)(void *)c->scratch;
    int n = 0;
    for (int i = 0; i < c->capacity; i++) {
        if (L->pos[i] >= 0 && !evictable(&c->policy, L->pos[i], pnow)) continue;
        keys[n++] = (slot_key){L->score[i], i};
    }
    if (n == 0) return -1;
    qsort(keys, (size_t)n, sizeof *keys, cmp_key);
    int K = c->policy.evict_every < n ? c->policy.evict_every : n;
    for (int j = 0; j < K; j++) L->evict_q[j] = keys[j].i;
    qsort(L->evict_q, (size_t)K, sizeof *L->evict_q, cmp_slot);
    L->n_evict_q = K;
    L->evict_q_head = 1;
    return L->evict_q[0];
}

static void rkv_compress(lf_kv_cache *c, int layer) {
    lf_kv_layer *L = &c->layers[layer];
    rkv_state *st = c->policy_state;
    int nk = lf_rkv_select(c, layer, st->keep, st->work);
    int j = 0;
    for (int i = 0; i < c->capacity; i++) {
        if (j < nk && st->keep[j] == i) {
            j++;
            continue;
        }
        if (L->pos[i] >= 0) {
            L->pos[i] = -1;
            L->n_valid--;
            c->total_valid--;
        }
    }
    L->n_compress++;
}

static void policy_step(lf_kv_cache *c, int layer, int pnow) {
    lf_kv_layer *L = &c->layers[layer];
    const lf_policy_config *P = &c->policy;
    L->steps++;
    if (uses_scores(P->kind)) compute_scores(c, L);
    switch (P->kind) {
    case LF_POLICY_FULL:
        L->next_slot = L->hw < c->capacity ? L->hw : -1;
        break;
    case LF_POLICY_STREAMING: {
        int e = first_empty(c, L);
        if (e < 0) {
            int best = -1;
            for (int i = 0; i < c->capacity; i++)
                if (evictable(P, L->pos[i], pnow) && (best < 0 || L->pos[i] < L->pos[best])) best = i;
            e = best;
        }
        L->next_slot = e;
        break;
    }
    case LF_POLICY_RKV:
        if (L->n_valid >= c->capacity) rkv_compress(c, layer);
        L->next_slot = first_empty(c, L);
        break;
    case LF_POLICY_LONGFLOW:
        if (P->evict_every > 1) {
            if (L->evict_q_head < L->n_evict_q)
                L->next_slot = L->evict_q[L->evict_q_head++];
            else
                L->next_slot = queue_victims(c, L, pnow);
            break;
        }
        L->next_slot = argmin_score(c, L, pnow);
        break;
    default: /* tova, h2o, vatp */
        L->next_slot = argmin_score(c, L, pnow);
        break;
    }
    note_peaks(c, L);
}

void lf_kv_decode_layer(lf_kv_cache *const *caches, int n_seq, int layer, const float *q,
                        const float *k, const float *v, const int *pos, float *out) {
    if (n_seq <= 0) return;
    const int nh = caches[0]->n_heads, nkv = caches[0]->n_kv_heads, hd = caches[0]->head_dim;
    bool scores = false;
    for (int s = 0; s < n_seq; s++) {
        lf_kv_cache *c = caches[s];
        store(c, layer, k + (size_t)s * nkv * hd, v + (size_t)s * nkv * hd, q + (size_t)s * nh * hd, pos[s]);
        if (uses_scores(c->policy.kind)) scores = true;
    }
    lf_kv_attend(caches, n_seq, layer, q, out, scores);
    /* the policy step reads a few bytes per slot: threads only for many
     * sequences with long caches (R-KV's compressions parallelise inside) */
    long slots = 0;
    for (int s = 0; s < n_seq; s++) slots += caches[s]->layers[layer].hw;
#pragma omp parallel for schedule(dynamic, 1) if (n_seq > 1 && slots >= 16384)
    for (int s = 0; s < n_seq; s++) policy_step(caches[s], layer, pos[s]);
}

/* ---- accounting -------------------------------------------------------------- */

int lf_kv_cache_tokens(const lf_kv_cache *c) {
    int m = 0;
    for (int l = 0; l < c->n_layers; l++)
        if (c->layers[l].n_valid > m) m = c->layers[l].n_valid;
    return m;
}

static size_t bytes_per_token_layer(const lf_kv_cache *c) {
    return 2 * (size_t)c->n_kv_heads * c->head_dim * sizeof(float);
}

size_t lf_kv_cache_bytes_in_use(const lf_kv_cache *c) {
    return (size_t)c->total_valid * bytes_per_token_layer(c);
}

size_t lf_kv_cache_peak_bytes_in_use(const lf_kv_cache *c) {
    return (size_t)c->peak_total_valid * bytes_per_token_layer(c);
}

int lf_kv_cache_room(const lf_kv_cache *c) {
    if (c->policy.kind != LF_POLICY_FULL) return INT_MAX;
    int room = INT_MAX;
    for (int l = 0; l < c->n_layers; l++) {
        int r = c->capacity - c->layers[l].n_valid;
        if (r < room) room = r;
    }
    return c->n_layers > 0 ? room : 0;
}
