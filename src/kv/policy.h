/* KV-cache policies: the descriptor every policy exports, the registry (the
 * one list of policies, src/kv/policies/registry.c), and the rules shared by
 * the CPU cache (cache.c), the GPU backend (src/cuda) and the engine: the
 * resolution of sinks/recent/budget, the SnapKV prompt compression's
 * minimum budget and the prompt-fits check. docs/adding-a-policy.md says how
 * to add one.
 *
 * Every policy keeps a fixed number of slots per sequence and layer, shared
 * by the KV heads of the layer; each decode step writes the new token into
 * the slot chosen at the previous step. */
#ifndef LF_KV_POLICY_H
#define LF_KV_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include "longflow.h"
#include "kv/score_mode.h"
#include "kv/slots.h"

/* SnapKV's window, pool and minimum budget (LF_SNAPKV_*) are public:
 * include/longflow.h. */

/* R-KV: decode tokens gather in a buffer of 128 slots on top of the budget;
 * when it is full the cache is compressed back to the budget, scoring with
 * the last 8 queries (max pooling of width 5) and lambda = 0.1. */
#define LF_RKV_BUFFER 128
#define LF_RKV_WINDOW 8
#define LF_RKV_POOL 5
#define LF_RKV_LAMBDA 0.1

/* StreamingLLM's default number of attention sinks. */
#define LF_STREAMING_SINKS 4

/* How the GPU backend chooses the next slot for a policy. */
typedef enum lf_gpu_slots {
    LF_GPU_NONE = 0,   /* the policy runs on the CPU only */
    LF_GPU_APPEND,     /* next free slot, nothing evicted (full) */
    LF_GPU_OLDEST,     /* the oldest token past the sinks (streaming; host rule) */
    LF_GPU_ARGMIN,     /* the fused kernel's argmin of the score mode */
} lf_gpu_slots;

/* One policy. Hooks that a policy does not need are NULL. `c` is the cache,
 * `layer` the layer index; the layer's own state is c->layers[layer].pstate. */
typedef struct lf_policy_desc {
    const char *name;       /* --policy NAME */
    const char *paper;      /* citation */
    const char *rule;       /* what is evicted (one line, for `longflow policies`) */
    const char *aux;        /* auxiliary memory per slot and layer, in words */
    int aux_bytes_per_slot; /* the same in bytes (slot metadata beside K and V) */
    bool budgeted;          /* evicts (false: `full`, every token is kept) */
    int extra_slots;        /* slots allocated beyond the budget (R-KV's buffer) */
    int min_budget;         /* the budget must exceed this (0: any positive budget) */
    lf_score_mode score;    /* what the fused kernel computes per slot */
    lf_slot_stat slot_stat; /* LF_SCORE_STORED: what is stored for a written slot */
    lf_gpu_slots gpu;       /* how the GPU runs it (LF_GPU_NONE: CPU only) */

    /* Defaults against a budget: fill out->sinks/recent from in (-1 = the
     * policy's default) and reject flags that do not apply. out starts as a
     * copy of in with out->budget set. */
    int (*defaults)(const lf_policy_config *in, int budget, lf_policy_config *out, lf_error *err);

    /* Per-cache state (shared by the layers), or NULL hooks. */
    int (*cache_new)(lf_kv_cache *c, size_t *bytes);
    void (*cache_free)(lf_kv_cache *c);
    /* Per-layer state: allocate (adding its bytes), free, empty. */
    void *(*layer_new)(const lf_kv_cache *c, size_t *bytes);
    void (*layer_free)(void *pstate);
    void (*layer_reset)(const lf_kv_cache *c, void *pstate);

    /* Prefill selection: choose the `keep` (< n) prompt positions kept when
     * the prompt does not fit, ascending into kept. NULL: the prompt must fit. */
    int (*prefill_select)(const lf_kv_cache *c, const float *q, const float *k, int n, int keep,
                          int32_t *kept, lf_error *err);
    /* After the kept prompt tokens (positions kept[i], or i when kept is
     * NULL) are in slots 0..nk-1: set the layer's state from the prompt
     * (q, k [n][heads][head_dim], RoPE applied). */
    int (*prefill_state)(lf_kv_cache *c, int layer, const float *q, const float *k, int n,
                         const int32_t *kept, int nk, lf_error *err);
    /* The token of query q was just written into `slot`. */
    void (*on_store)(lf_kv_cache *c, int layer, int slot, const float *q);
    /* After the fused kernel: fill the layer's per-slot scores from its
     * results (attention.h's lf_att_att / lf_att_vn) per `score`. */
    void (*score_slots)(lf_kv_cache *c, int layer);
    /* The slot the next token goes into (-1: none free, `full` only); pnow
     * is the position of the token just stored. */
    int (*choose)(lf_kv_cache *c, int layer, int pnow);
} lf_policy_desc;

/* ---- the registry (src/kv/policies/registry.c) ---------------------------- */

/* lf_policy_count() (longflow.h): a policy's kind is its index in the registry. */
/* The descriptor of a kind (NULL when out of range). */
const lf_policy_desc *lf_policy_get(lf_policy_kind k);

/* ---- rules shared by every backend (policy.c) ----------------------------- */

/* The policy as the cache runs it: defaults filled in (-1 sinks/recent
 * become the policy's defaults, budget set to `budget`) and every value
 * checked against the budget. Fails with a message naming the flag. */
int lf_policy_resolve(const lf_policy_config *in, int budget, lf_policy_config *out, lf_error *err);

/* lf_policy_resolve for a cache of `slots` slots, checked against the user's
 * budget in->budget when that is larger (an engine may give fewer slots,
 * prompt + max tokens, when that is all a sequence can use; then nothing is
 * ever evicted): sinks, recent and evict_every are clamped to the slots and
 * out->budget = slots. Both backends size their caches with it. */
int lf_policy_resolve_slots(const lf_policy_config *in, int slots, lf_policy_config *out, lf_error *err);

/* What the GPU backend runs: a policy with a GPU slot rule (not R-KV),
 * --evict-every 1, a bf16 or fp8 cache (lf_kv_dtype_check_device), and not a
 * stored key statistic (KNorm) with fp8. Fails with a message naming the flag. */
int lf_policy_check_gpu(const lf_policy_config *p, lf_error *err);

/* Whether the policy evicts (everything except `full`). */
bool lf_policy_is_budgeted(lf_policy_kind k);

/* The prompt-fits check: whether a prompt of n tokens can be prefilled into
 * `budget` slots (`capacity` for `full`) of the resolved policy p: `full`
 * needs n <= capacity; a budgeted policy compresses a prompt longer than
 * budget-1 with SnapKV, which needs budget >= LF_SNAPKV_MIN_BUDGET. */
int lf_policy_check_prompt(const lf_policy_config *p, int budget, int capacity, int n, lf_error *err);

/* Slots a budgeted policy's prompt may keep: budget-1, or with
 * --protect-prompt S floor(S x budget), but at least the
 * LF_SNAPKV_MIN_BUDGET - 1 = 33 that SnapKV's selection needs (and at most
 * budget-1). A longer prompt is compressed to this many by SnapKV. */
int lf_policy_prompt_room(const lf_policy_config *p, int budget);

/* The sinks SnapKV keeps when compressing a prompt into `keep` tokens: the
 * resolved sinks, fewer when they are the policy's default (sinks_default)
 * and the budget has no room for them. */
int lf_snapkv_sinks(const lf_policy_config *p, bool sinks_default, int keep);

/* ---- SnapKV (snapkv.c) ----------------------------------------------------
 * q [n][n_heads][head_dim], k [n][n_kv_heads][head_dim] of a prompt of n
 * tokens, RoPE applied. */

/* Choose the `keep` prompt positions SnapKV keeps (n > keep > LF_SNAPKV_WINDOW):
 * the first `sinks` positions, then the best keep-w-sinks of the others
 * before the window by the pooled window attention (ties: lower position),
 * then the last w = LF_SNAPKV_WINDOW positions; written ascending to kept. */
int lf_snapkv_select(const float *q, const float *k, int n, int n_heads, int n_kv_heads, int head_dim,
                     int keep, int sinks, int32_t *kept, lf_error *err);

/* The prefill selection of every budgeted policy (lf_policy_desc's
 * prefill_select): lf_snapkv_select with the cache's shape and sinks. */
int lf_snapkv_prefill(const lf_kv_cache *c, const float *q, const float *k, int n, int keep, int32_t *kept,
                      lf_error *err);

/* SnapKV's pooled score of each non-window prompt position (n - w values):
 * the softmax of each of the last w queries over the first n-w keys, summed
 * over query heads and queries, averaged over a window of 5 (zero padding
 * counted). */
int lf_snapkv_scores(const float *q, const float *k, int n, int n_heads, int n_kv_heads, int head_dim,
                     float *pooled, lf_error *err);

/* The window sums SnapKV pools (n values; the last w are 0): for each of the
 * last w = LF_SNAPKV_WINDOW queries and each query head, the softmax over the
 * first n - w keys, summed. The GPU computes the same (lf_cuda_window_sums). */
int lf_snapkv_window_sums(const float *q, const float *k, int n, int n_heads, int n_kv_heads, int head_dim,
                          float *raw, lf_error *err);

/* SnapKV's pooling of the window sums: pooled [n - w]. */
void lf_snapkv_pool(const float *raw, int n, float *pooled);

/* lf_snapkv_select from window sums already computed (raw [n]). */
int lf_snapkv_select_from_sums(const float *raw, int n, int keep, int sinks, int32_t *kept, lf_error *err);

/* Whether keeping `keep` of n prompt tokens with `sinks` sinks leaves SnapKV
 * a selection (n > keep, keep - LF_SNAPKV_WINDOW >= sinks + 1): 0, else -1
 * with the reason. Both selectors check it (lf_snapkv_select*, and
 * lf_cuda_snapkv_select on the GPU). */
int lf_snapkv_check_keep(int n, int keep, int sinks, lf_error *err);

/* Attention each prompt position receives from the last min(w, n) prompt
 * queries (causal softmax), averaged over query heads and summed over the
 * queries: H2O's and VATP's starting accumulated attention. acc [n]. */
int lf_window_attention(const float *q, const float *k, int n, int n_heads, int n_kv_heads, int head_dim,
                        int w, float *acc, lf_error *err);

/* ---- R-KV (policies/rkv.c) ------------------------------------------------ */

/* Floats of workspace lf_rkv_select needs. */
size_t lf_rkv_work_floats(int capacity, int n_heads, int n_kv_heads, int head_dim);

/* With every slot of `layer` valid, choose the slots R-KV keeps: the
 * LF_RKV_WINDOW newest tokens, and the best budget - LF_RKV_WINDOW of the
 * others by LF_RKV_LAMBDA * importance - (1 - LF_RKV_LAMBDA) * redundancy,
 * where importance is the softmax of each stored query (the layer's last
 * LF_RKV_WINDOW decode queries) over the candidate keys, averaged over the
 * queries, max-pooled (width 5) along position order and averaged over query
 * heads, and redundancy is the softmax over candidates of their mean cosine
 * similarity to the other candidates' keys, averaged over KV heads. Ties keep
 * the lower position. Writes c->budget slot indices to keep (ascending); work
 * has lf_rkv_work_floats floats. Returns the number kept. */
int lf_rkv_select(const lf_kv_cache *c, int layer, int32_t *keep, float *work);

/* R-KV's compressions of `layer` so far (tests). */
int lf_rkv_compressions(const lf_kv_cache *c, int layer);
/* R-KV's stored queries of `layer` ([LF_RKV_WINDOW][n_heads][head_dim]) and
 * their count (tests set them). */
float *lf_rkv_queries(const lf_kv_cache *c, int layer, int **count);

#endif
