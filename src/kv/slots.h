/* The data of a slot cache (no functions): what the fused attention kernel
 * (attention.c) and the policies (policies/) read and write, and what the
 * cache's operations (cache.c) manage. It depends on nothing in src/kv, so
 * the kernel and the policies depend on it and not on each other or on
 * cache.c:
 *
 *   cache.c  ->  attention.c, policies/, snapkv.c  ->  slots.h
 *
 *   k, v:  [layer][kv_head][slot][head_dim]  (RoPE already applied to K), elements
 *          of c->dtype (kv/dtype.h: fp32, bf16 or fp8 e4m3)
 *   ks, vs: [layer][kv_head][slot] fp8 only: each row's scale (NULL otherwise)
 *   per layer: pos[slot] (token position held, -1 = empty), next_slot, n_valid,
 *   and the policy's own per-layer state (pstate, allocated by the policy). */
#ifndef LF_KV_SLOTS_H
#define LF_KV_SLOTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "longflow.h"

struct lf_policy_desc;
struct lf_kv_buffers;

typedef struct lf_kv_layer {
    int32_t *pos;      /* [capacity] token position held by each slot, -1 = empty */
    int n_valid;       /* slots holding a token */
    int next_slot;     /* where the next token's K,V go (-1: no room, `full` only) */
    int steps;         /* decode steps seen by this layer */
    int hw;            /* slots >= hw have never been written (are empty) */
    void *pstate;      /* the policy's per-layer state (its desc->layer_new), or NULL */
} lf_kv_layer;

typedef struct lf_kv_cache {
    lf_policy_config policy; /* resolved: defaults applied (see lf_policy_resolve_slots) */
    const struct lf_policy_desc *desc; /* the policy's descriptor (policy.h) */
    int n_layers, n_heads, n_kv_heads, head_dim;
    int budget;        /* slots the policy may keep */
    int capacity;      /* slots allocated (budget, plus the policy's extra_slots) */
    lf_kv_dtype dtype; /* how k and v store their elements (= policy.kv_dtype) */
    size_t row_bytes;  /* bytes of one stored row of head_dim elements */
    uint8_t *k, *v;    /* [n_layers][n_kv_heads][capacity][row_bytes] */
    float *ks, *vs;    /* fp8: [n_layers][n_kv_heads][capacity] row scales; NULL otherwise */
    void *block;       /* the one allocation k, v, ks and vs point into: block_bytes bytes, */
    size_t block_bytes;/* from `buffers` (kv/buffers.h) when that is set, given back there */
    struct lf_kv_buffers *buffers;
    lf_kv_layer *layers;
    size_t bytes;      /* all memory this cache allocated */
    int n_prompt;      /* prompt tokens seen */
    int protect_upto;  /* --protect-prompt: positions below this are never evicted (0: none) */
    int peak_valid;    /* most valid slots in any layer so far */
    void *policy_state;/* per-cache state owned by the policy (its desc->cache_new), or NULL */
    long total_valid;  /* sum over layers of n_valid */
    long peak_total_valid; /* most total_valid so far */
    bool overflow;     /* `full`: a token arrived with no free slot (it was not stored) */
    bool sinks_default;/* policy.sinks is the policy's default, not --sinks: SnapKV may
                          keep fewer of them when the budget has no room */
    float *scratch;    /* per-step workspace of the fused kernel (see attention.h) */
    size_t scratch_floats;
} lf_kv_cache;

/* Index of the first slot of (layer, kvh) among all rows. */
static inline size_t lf_kv_row0(const lf_kv_cache *c, int layer, int kvh) {
    return ((size_t)layer * c->n_kv_heads + kvh) * (size_t)c->capacity;
}
/* The stored rows of (layer, kvh): [capacity][row_bytes]. */
static inline uint8_t *lf_kv_k(const lf_kv_cache *c, int layer, int kvh) {
    return c->k + lf_kv_row0(c, layer, kvh) * c->row_bytes;
}
static inline uint8_t *lf_kv_v(const lf_kv_cache *c, int layer, int kvh) {
    return c->v + lf_kv_row0(c, layer, kvh) * c->row_bytes;
}
/* Their fp8 scales, [capacity] (NULL for fp32 and bf16). */
static inline float *lf_kv_kscale(const lf_kv_cache *c, int layer, int kvh) {
    return c->ks ? c->ks + lf_kv_row0(c, layer, kvh) : NULL;
}
static inline float *lf_kv_vscale(const lf_kv_cache *c, int layer, int kvh) {
    return c->vs ? c->vs + lf_kv_row0(c, layer, kvh) : NULL;
}

/* The K row of `slot` as floats: the stored row itself for fp32, else
 * widened into buf[head_dim] (policies that read keys: K-norm, R-KV). */
const float *lf_kv_key_row(const lf_kv_cache *c, int layer, int kvh, int slot, float *buf);

/* Mark slot i of layer L empty (a policy that drops tokens, R-KV). */
static inline void lf_kv_drop_slot(lf_kv_cache *c, lf_kv_layer *L, int i) {
    if (L->pos[i] < 0) return;
    L->pos[i] = -1;
    L->n_valid--;
    c->total_valid--;
}

#endif
