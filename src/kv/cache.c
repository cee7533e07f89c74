/* Slot cache: allocation, prefill, the decode step (store, fused attention +
 * score, victim choice). What is policy-specific comes from the policy's
 * descriptor (policy.h, policies/). */
#include "kv/cache.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "kv/attention.h"
#include "kv/buffers.h"
#include "kv/dtype.h"
#include "kv/policy.h"

static void layer_reset(lf_kv_cache *c, lf_kv_layer *L) {
    c->total_valid -= L->n_valid;
    for (int i = 0; i < c->capacity; i++) L->pos[i] = -1;
    if (c->desc->layer_reset) c->desc->layer_reset(c, L->pstate);
    L->n_valid = 0;
    L->next_slot = 0;
    L->hw = 0;
    L->steps = 0;
}

static int check_shape(const lf_config *cfg, lf_error *err) {
    if (cfg->n_layers <= 0 || cfg->n_heads <= 0 || cfg->n_kv_heads <= 0 || cfg->head_dim <= 0 ||
        cfg->n_heads % cfg->n_kv_heads != 0)
        return lf_fail(err, "KV cache: bad model shape (%d layers, %d heads, %d KV heads, head_dim %d)",
                       cfg->n_layers, cfg->n_heads, cfg->n_kv_heads, cfg->head_dim);
    if (cfg->n_heads / cfg->n_kv_heads > LF_ATT_MAX_GROUP)
        return lf_fail(err, "KV cache: %d query heads per KV head is more than the %d supported",
                       cfg->n_heads / cfg->n_kv_heads, LF_ATT_MAX_GROUP);
    return 0;
}

/* Round n up to a multiple of 64 (the parts of the K/V block start on
 * cache lines). */
static size_t line_up(size_t n) { return (n + 63) & ~(size_t)63; }

/* K, V and fp8's row scales: one block, from the free list when the cache
 * has one (c->buffers), else allocated for this cache. */
static int alloc_kv(lf_kv_cache *c, size_t rows) {
    if (rows > SIZE_MAX / 8 / (c->row_bytes + sizeof(float))) return -1; /* the sizes below would overflow */
    const size_t kv = line_up(rows * c->row_bytes), sc = c->dtype == LF_KV_FP8 ? line_up(rows * sizeof(float)) : 0;
    const size_t need = 2 * kv + 2 * sc;
    lf_kv_buffer got = {.p = NULL, .bytes = need};
    if (c->buffers ? lf_kv_buffers_take(c->buffers, need, &got) : !(got.p = calloc(1, need))) return -1;
    c->block = got.p;
    c->block_bytes = got.bytes;
    uint8_t *p = got.p;
    c->k = p;
    c->v = p + kv;
    if (sc) {
        c->ks = (float *)(p + 2 * kv);
        c->vs = (float *)(p + 2 * kv + sc);
    }
    return 0;
}

static void free_kv(lf_kv_cache *c) {
    if (c->buffers)
        lf_kv_buffers_give(c->buffers, (lf_kv_buffer){.p = c->block, .bytes = c->block_bytes});
    else
        free(c->block);
    c->block = NULL;
    c->k = c->v = NULL;
    c->ks = c->vs = NULL;
}

/* K, V (and fp8's row scales), the layers with their slot positions and
 * policy state, the kernel's scratch and the policy's per-cache state;
 * c->bytes counts them. */
static int alloc_slots(lf_kv_cache *c) {
    const lf_policy_desc *d = c->desc;
    const int cap = c->capacity;
    size_t rows = (size_t)c->n_layers * c->n_kv_heads * (size_t)cap;
    size_t bytes = 0;
    if (alloc_kv(c, rows)) return -1;
    c->layers = calloc((size_t)c->n_layers, sizeof *c->layers);
    if (!c->layers) return -1;
    bytes += 2 * rows * c->row_bytes + (size_t)c->n_layers * sizeof *c->layers;
    if (c->dtype == LF_KV_FP8) bytes += 2 * rows * sizeof(float);
    for (int l = 0; l < c->n_layers; l++) {
        lf_kv_layer *L = &c->layers[l];
        if (!(L->pos = malloc((size_t)cap * sizeof *L->pos))) return -1;
        bytes += (size_t)cap * sizeof *L->pos;
        if (d->layer_new && !(L->pstate = d->layer_new(c, &bytes))) return -1;
        for (int i = 0; i < cap; i++) L->pos[i] = -1;
    }
    c->scratch_floats = lf_att_scratch_floats(c->n_heads, c->n_kv_heads, c->head_dim, cap);
    if (!(c->scratch = calloc(c->scratch_floats, sizeof(float)))) return -1;
    bytes += c->scratch_floats * sizeof(float);
    if (d->cache_new && d->cache_new(c, &bytes)) return -1;
    c->bytes = bytes;
    return 0;
}

int lf_kv_cache_init(lf_kv_cache *c, const lf_config *cfg, const lf_policy_config *p, int budget,
                     lf_error *err) {
    return lf_kv_cache_init_from(c, cfg, p, budget, NULL, err);
}

int lf_kv_cache_init_from(lf_kv_cache *c, const lf_config *cfg, const lf_policy_config *p, int budget,
                          lf_kv_buffers *buffers, lf_error *err) {
    memset(c, 0, sizeof *c);
    c->buffers = buffers;
    if (budget <= 0) return lf_fail(err, "KV cache: budget must be positive (got %d)", budget);
    if (check_shape(cfg, err)) return -1;
    if ((unsigned)p->kv_dtype > LF_KV_FP8)
        return lf_fail(err, "KV cache: unknown --kv-dtype %d (fp32, bf16 or fp8)", (int)p->kv_dtype);
    if (p->kv_dtype != LF_KV_F32 && cfg->head_dim > LF_ATT_WIDE_HD)
        return lf_fail(err, "KV cache: --kv-dtype %s supports head_dim up to %d (the model has %d; use --kv-dtype fp32)",
                       lf_kv_dtype_name(p->kv_dtype), LF_ATT_WIDE_HD, cfg->head_dim);
    lf_policy_config res;
    if (lf_policy_resolve_slots(p, budget, &res, err)) return -1;
    const lf_policy_desc *d = lf_policy_get(res.kind);
    if (budget > INT_MAX - d->extra_slots) return lf_fail(err, "KV cache: budget %d is too large", budget);
    c->policy = res;
    c->desc = d;
    c->sinks_default = p->sinks < 0;
    c->n_layers = cfg->n_layers;
    c->n_heads = cfg->n_heads;
    c->n_kv_heads = cfg->n_kv_heads;
    c->head_dim = cfg->head_dim;
    c->dtype = p->kv_dtype;
    c->row_bytes = (size_t)cfg->head_dim * lf_kv_dtype_elem(p->kv_dtype);
    c->budget = budget;
    c->capacity = budget + d->extra_slots;
    if (alloc_slots(c)) {
        lf_kv_cache_free(c);
        return lf_fail(err, "KV cache: out of memory for %d slots x %d layers", budget, cfg->n_layers);
    }
    return 0;
}

void lf_kv_cache_free(lf_kv_cache *c) {
    const lf_policy_desc *d = c->desc;
    if (c->layers)
        for (int l = 0; l < c->n_layers; l++) {
            free(c->layers[l].pos);
            if (d && d->layer_free) d->layer_free(c->layers[l].pstate);
        }
    if (d && d->cache_free) d->cache_free(c);
    free(c->layers);
    free_kv(c);
    free(c->scratch);
    memset(c, 0, sizeof *c);
}

void lf_kv_cache_reset(lf_kv_cache *c) {
    for (int l = 0; l < c->n_layers; l++) layer_reset(c, &c->layers[l]);
    c->total_valid = 0;
    c->peak_total_valid = 0;
    c->peak_valid = 0;
    c->n_prompt = 0;
    c->protect_upto = 0;
    c->overflow = false;
}

static void note_peaks(lf_kv_cache *c, const lf_kv_layer *L) {
    if (L->n_valid > c->peak_valid) c->peak_valid = L->n_valid;
    if (c->total_valid > c->peak_total_valid) c->peak_total_valid = c->total_valid;
}

/* ---- rows -------------------------------------------------------------------- */

/* Store k, v [head_dim] of KV head kvh in `slot` of `layer`, in the cache's dtype. */
static void put_rows(lf_kv_cache *c, int layer, int kvh, int slot, const float *k, const float *v) {
    const size_t off = (size_t)slot * c->row_bytes;
    float *ks = lf_kv_kscale(c, layer, kvh), *vs = lf_kv_vscale(c, layer, kvh);
    lf_kv_row_store(c->dtype, k, c->head_dim, lf_kv_k(c, layer, kvh) + off, ks ? ks + slot : NULL);
    lf_kv_row_store(c->dtype, v, c->head_dim, lf_kv_v(c, layer, kvh) + off, vs ? vs + slot : NULL);
}

const float *lf_kv_key_row(const lf_kv_cache *c, int layer, int kvh, int slot, float *buf) {
    const uint8_t *r = lf_kv_k(c, layer, kvh) + (size_t)slot * c->row_bytes;
    if (c->dtype == LF_KV_F32) return (const float *)(const void *)r;
    const float *ks = lf_kv_kscale(c, layer, kvh);
    lf_kv_row_load(c->dtype, r, ks ? ks[slot] : 1.0f, c->head_dim, buf);
    return buf;
}

/* ---- prefill ----------------------------------------------------------------- */

/* Store prompt tokens kept[i] (i when kept is NULL), i < nk, into slots 0..nk-1. */
static void copy_prompt(lf_kv_cache *c, int layer, const float *k, const float *v, const int32_t *kept, int nk) {
    const int nkv = c->n_kv_heads, hd = c->head_dim;
    lf_kv_layer *L = &c->layers[layer];
    for (int h = 0; h < nkv; h++)
        for (int i = 0; i < nk; i++) {
            size_t t = (size_t)(kept ? kept[i] : i);
            put_rows(c, layer, h, i, k + (t * nkv + h) * hd, v + (t * nkv + h) * hd);
        }
    for (int i = 0; i < nk; i++) L->pos[i] = kept ? kept[i] : i;
}

int lf_kv_prefill_layer(lf_kv_cache *c, int layer, const float *q, const float *k, const float *v,
                        int n, lf_error *err) {
    if (layer < 0 || layer >= c->n_layers)
        return lf_fail(err, "KV cache: layer %d out of range (%d layers)", layer, c->n_layers);
    if (lf_policy_check_prompt(&c->policy, c->budget, c->capacity, n, err)) return -1;
    lf_kv_layer *L = &c->layers[layer];
    const lf_policy_desc *d = c->desc;
    int32_t *kept = NULL;
    int nk = n;
    const int room = d->budgeted ? lf_policy_prompt_room(&c->policy, c->budget) : n;
    if (n > room) {
        nk = room;
        if (!(kept = malloc((size_t)nk * sizeof *kept))) return lf_fail(err, "KV cache: out of memory");
        if (d->prefill_select(c, q, k, n, nk, kept, err)) {
            free(kept);
            return -1;
        }
    }
    layer_reset(c, L);
    copy_prompt(c, layer, k, v, kept, nk);
    int rc = d->prefill_state ? d->prefill_state(c, layer, q, k, n, kept, nk, err) : 0;
    free(kept);
    if (rc) return -1;
    L->n_valid = nk;
    L->hw = nk;
    L->next_slot = nk < c->capacity ? nk : -1;
    c->total_valid += nk;
    c->n_prompt = n;
    c->protect_upto = c->policy.protect_prompt > 0 ? n : 0; /* (SnapKV's selection, when compressed) */
    note_peaks(c, L);
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
    for (int h = 0; h < nkv; h++) put_rows(c, layer, h, slot, k + (size_t)h * hd, v + (size_t)h * hd);
    if (L->pos[slot] < 0) {
        L->n_valid++;
        c->total_valid++;
        note_peaks(c, L);
    }
    L->pos[slot] = p;
    if (slot >= L->hw) L->hw = slot + 1;
    if (c->desc->on_store) c->desc->on_store(c, layer, slot, q);
}

static void policy_step(lf_kv_cache *c, int layer, int pnow) {
    lf_kv_layer *L = &c->layers[layer];
    const lf_policy_desc *d = c->desc;
    L->steps++;
    if (d->score_slots) d->score_slots(c, layer);
    L->next_slot = d->choose(c, layer, pnow);
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
        const lf_score_mode m = c->desc->score;
        if (m != LF_SCORE_NONE && m != LF_SCORE_STORED) scores = true;
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
    return lf_kv_token_bytes(c->dtype, c->n_kv_heads, c->head_dim);
}

size_t lf_kv_cache_bytes_in_use(const lf_kv_cache *c) {
    return (size_t)c->total_valid * bytes_per_token_layer(c);
}

size_t lf_kv_cache_peak_bytes_in_use(const lf_kv_cache *c) {
    return (size_t)c->peak_total_valid * bytes_per_token_layer(c);
}

int lf_kv_cache_room(const lf_kv_cache *c) {
    if (c->desc->budgeted) return INT_MAX;
    int room = INT_MAX;
    for (int l = 0; l < c->n_layers; l++) {
        int r = c->capacity - c->layers[l].n_valid;
        if (r < room) room = r;
    }
    return c->n_layers > 0 ? room : 0;
}
