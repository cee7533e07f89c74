/* Building blocks the policy files share (src/kv/policies/common.c): the
 * default rules, the per-layer state of a scored policy and its hooks (score
 * from the fused kernel's results per the descriptor's score mode, argmin
 * over the unprotected slots). Internal to src/kv. */
#ifndef LF_KV_POLICIES_COMMON_H
#define LF_KV_POLICIES_COMMON_H

#include "kv/policy.h"

/* defaults: --sinks/--recent do not apply (full, R-KV) */
int lf_defaults_unprotected(const lf_policy_config *in, int budget, lf_policy_config *out, lf_error *err);
/* defaults: --sinks/--recent default to 0 (the paper's algorithm protects nothing) */
int lf_defaults_protect_none(const lf_policy_config *in, int budget, lf_policy_config *out, lf_error *err);
/* defaults: --sinks 0, --recent budget/2 (H2O, VATP) */
int lf_defaults_recent_half(const lf_policy_config *in, int budget, lf_policy_config *out, lf_error *err);

/* Whether a slot holding position p may be evicted at a step whose newest
 * token is at position pnow: not a sink, not recent, not a protected prompt
 * token (--protect-prompt). */
static inline bool lf_slot_evictable(const lf_kv_cache *c, int p, int pnow) {
    return p >= c->policy.sinks && p >= c->protect_upto && p <= pnow - c->policy.recent;
}

/* The first empty slot of a layer, or -1. */
int lf_first_empty(const lf_kv_cache *c, const lf_kv_layer *L);

/* ---- scored policies (score mode other than NONE) ------------------------ */

typedef struct lf_scored_layer {
    float *score;    /* [capacity] the score of the last step (empty slots: see lf_scored_score) */
    float *acc;      /* [capacity] ACC modes: accumulated attention; STORED: the stored value; else NULL */
    int32_t *queue;  /* LongFlow --evict-every K: queued victims [K], or NULL */
    int n_queue, queue_head;
} lf_scored_layer;

/* The scored state of a layer, or NULL when the policy does not score (tests). */
static inline lf_scored_layer *lf_scored(const lf_kv_cache *c, int layer) {
    return c->desc->score != LF_SCORE_NONE ? (lf_scored_layer *)c->layers[layer].pstate : NULL;
}

/* Per-layer state of a scored policy (with a victim queue of evict_every
 * entries when the resolved policy has evict_every > 1). */
void *lf_scored_layer_new(const lf_kv_cache *c, size_t *bytes);
void lf_scored_layer_free(void *pstate);
void lf_scored_layer_reset(const lf_kv_cache *c, void *pstate);
/* ACC modes: the window attention of the prompt; STORED: each kept slot's stat. */
int lf_scored_prefill_state(lf_kv_cache *c, int layer, const float *q, const float *k, int n,
                            const int32_t *kept, int nk, lf_error *err);
/* ACC modes: the slot's accumulation restarts; STORED: the slot's stat. */
void lf_scored_on_store(lf_kv_cache *c, int layer, int slot, const float *q);
/* Fill the layer's scores from the kernel's results per the score mode.
 * Empty slots score 0 (ATT_VNORM, ATT: the reference kernel's masked score)
 * or -inf (ACC, ACC_VNORM, STORED: an empty slot is always used first). */
void lf_scored_score(lf_kv_cache *c, int layer);
/* The evictable slot with the smallest score (lowest index on ties). */
int lf_scored_argmin(lf_kv_cache *c, int layer, int pnow);
/* The K = evict_every evictable slots with the smallest scores (ties: lower
 * index) are queued and refilled in slot order; a new queue when it is used up. */
int lf_scored_queued(lf_kv_cache *c, int layer, int pnow);

/* The hooks of a scored policy (every score mode but NONE) except .choose;
 * a descriptor lists them with its own fields:
 *   const lf_policy_desc lf_policy_x = {.name = ..., .score = ..., LF_SCORED_HOOKS, .choose = ...}; */
#define LF_SCORED_HOOKS                                                                                    \
    .layer_new = lf_scored_layer_new, .layer_free = lf_scored_layer_free,                                  \
    .layer_reset = lf_scored_layer_reset, .prefill_select = lf_snapkv_prefill,                             \
    .prefill_state = lf_scored_prefill_state, .on_store = lf_scored_on_store, .score_slots = lf_scored_score

/* The per-slot stat of a STORED-mode policy for the token in `slot`. */
float lf_slot_stat_value(const lf_kv_cache *c, int layer, int slot, lf_slot_stat stat);

#endif
