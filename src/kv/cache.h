/* The KV cache of one sequence: a fixed set of slots per layer, shared by all
 * KV heads of that layer, allocated once and never grown.
 *
 *   k, v:  [layer][kv_head][slot][head_dim]  (fp32, RoPE already applied to K)
 *   per layer: pos[slot] (token position held, -1 = empty), next_slot, n_valid
 *
 * The policy (src/kv/policy.h) decides what the prompt leaves in the cache
 * (prefill) and which slot the next token overwrites (decode). The decode
 * attention over the slots is computed here, fused with the policy's score.
 */
#ifndef LF_KV_CACHE_H
#define LF_KV_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "longflow.h"
#include "model/config.h"

typedef struct lf_kv_layer {
    int32_t *pos;      /* [capacity] token position held by each slot, -1 = empty */
    int n_valid;       /* slots holding a token */
    int next_slot;     /* where the next token's K,V go (-1: no room, `full` only) */
    float *score;      /* [capacity] policy score of the last step (policy aux) */
    float *acc;        /* [capacity] accumulated attention (H2O, VATP) or NULL */
    int32_t *evict_q;  /* LongFlow --evict-every: queued victims, or NULL */
    int n_evict_q;
    int steps;         /* decode steps seen by this layer */
    int hw;            /* slots >= hw have never been written (are empty) */
    int evict_q_head;  /* next queued victim to use */
    float *rkv_q;      /* R-KV: the last LF_RKV_WINDOW decode queries [w][n_heads][head_dim] */
    int rkv_nq;        /* queries stored (<= LF_RKV_WINDOW), ring order from rkv_qhead */
    int rkv_qhead;
    int n_compress;    /* R-KV compressions so far */
} lf_kv_layer;

typedef struct lf_kv_cache {
    lf_policy_config policy; /* resolved: defaults applied (see lf_policy_resolve) */
    int n_layers, n_heads, n_kv_heads, head_dim;
    int budget;        /* slots the policy may keep */
    int capacity;      /* slots allocated (budget, plus R-KV's buffer) */
    float *k, *v;      /* [n_layers][n_kv_heads][capacity][head_dim] */
    lf_kv_layer *layers;
    size_t bytes;      /* all memory this cache allocated */
    int n_prompt;      /* prompt tokens seen */
    int peak_valid;    /* most valid slots in any layer so far */
    void *policy_state;/* owned by the policy, or NULL */
    long total_valid;  /* sum over layers of n_valid */
    long peak_total_valid; /* most total_valid so far */
    bool overflow;     /* `full`: a token arrived with no free slot (it was not stored) */
    bool sinks_default;/* policy.sinks is the policy's default, not --sinks: SnapKV may
                          keep fewer of them when the budget has no room */
    float *scratch;    /* per-step workspace of the fused kernel (see attention.h) */
    size_t scratch_floats;
} lf_kv_cache;

/* Allocate the cache. `budget` is the number of slots (the engine passes the
 * policy budget, or prompt + max tokens for `full`); p's sinks/recent/
 * evict_every are checked here (p->budget, when larger than `budget`, is the
 * user's budget the checks are made against). */
int lf_kv_cache_init(lf_kv_cache *c, const lf_config *cfg, const lf_policy_config *p, int budget,
                     lf_error *err);
void lf_kv_cache_free(lf_kv_cache *c);
/* Empty every layer (keeps the allocation), for reuse by another sequence. */
void lf_kv_cache_reset(lf_kv_cache *c);

static inline float *lf_kv_k(const lf_kv_cache *c, int layer, int kvh) {
    return c->k + ((size_t)layer * c->n_kv_heads + kvh) * (size_t)c->capacity * c->head_dim;
}
static inline float *lf_kv_v(const lf_kv_cache *c, int layer, int kvh) {
    return c->v + ((size_t)layer * c->n_kv_heads + kvh) * (size_t)c->capacity * c->head_dim;
}

/* After the prompt's causal attention for `layer` (computed by the forward
 * over all n prompt tokens), hand the cache the prompt's
 *   q [n][n_heads][head_dim], k, v [n][n_kv_heads][head_dim] (RoPE applied),
 * for positions 0..n-1. The cache keeps what the policy selects (all of it
 * when it fits; SnapKV compression otherwise). */
int lf_kv_prefill_layer(lf_kv_cache *c, int layer, const float *q, const float *k, const float *v,
                        int n, lf_error *err);

/* One decode step of `layer` for n_seq sequences: for sequence s, store
 * k[s], v[s] ([n_kv_heads][head_dim]) of the token at position pos[s] in
 * its next slot, attend q[s] ([n_heads][head_dim]) over the valid slots into
 * out[s] ([n_heads][head_dim]), score the slots and choose the next slot.
 * The caches must share n_heads, n_kv_heads and head_dim. */
void lf_kv_decode_layer(lf_kv_cache *const *caches, int n_seq, int layer, const float *q,
                        const float *k, const float *v, const int *pos, float *out);

/* The fused kernel alone (no store, no policy step): attend q over the
 * valid slots of `layer` into out; with `scores`, also leave each slot's
 * attention (summed over the query heads of each KV head) and |v|_1 in the
 * cache's scratch (attention.h). lf_kv_decode_layer calls it; benchmarks
 * call it to time scoring on against scoring off. */
void lf_kv_attend(lf_kv_cache *const *caches, int n_seq, int layer, const float *q, float *out,
                  bool scores);

/* Tokens held now (max over layers). */
int lf_kv_cache_tokens(const lf_kv_cache *c);
/* Bytes of K and V held by valid slots now, over all layers. */
size_t lf_kv_cache_bytes_in_use(const lf_kv_cache *c);
/* The most lf_kv_cache_bytes_in_use has been since init/reset. */
size_t lf_kv_cache_peak_bytes_in_use(const lf_kv_cache *c);
/* Tokens that can still be stored: for `full` the free slots, for an
 * evicting policy INT_MAX. The engine must not decode a `full` cache with
 * no room (the token would not be stored: c->overflow is set). */
int lf_kv_cache_room(const lf_kv_cache *c);

#endif
