/* KV-cache policies: constants, defaults, validation and the description
 * `longflow policies` prints. The policies themselves run in cache.c (the
 * per-step victim choice), attention.c (the fused attention + score kernel),
 * snapkv.c (prompt compression) and rkv.c (R-KV's buffered compression).
 *
 * Every policy keeps a fixed number of slots per sequence and layer, shared
 * by the KV heads of the layer; each decode step writes the new token into
 * the slot chosen at the previous step. */
#ifndef LF_KV_POLICY_H
#define LF_KV_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include "longflow.h"
#include "kv/cache.h"

/* SnapKV prompt compression (every budgeted policy): observation window of
 * the last 32 prompt queries, average pooling of width 5. */
#define LF_SNAPKV_WINDOW 32
#define LF_SNAPKV_POOL 5
/* The smallest budget that can hold a compressed prompt: B-1-32 >= 1. */
#define LF_SNAPKV_MIN_BUDGET (LF_SNAPKV_WINDOW + 2)

/* R-KV: decode tokens gather in a buffer of 128 slots on top of the budget;
 * when it is full the cache is compressed back to the budget, scoring with
 * the last 8 queries (max pooling of width 5) and lambda = 0.1. */
#define LF_RKV_BUFFER 128
#define LF_RKV_WINDOW 8
#define LF_RKV_POOL 5
#define LF_RKV_LAMBDA 0.1

/* StreamingLLM's default number of attention sinks. */
#define LF_STREAMING_SINKS 4

typedef struct lf_policy_info {
    lf_policy_kind kind;
    const char *name;
    const char *paper;      /* citation */
    const char *rule;       /* what is evicted */
    const char *aux;        /* auxiliary memory per slot and layer */
} lf_policy_info;

/* The description of a policy (never NULL for a valid kind, NULL otherwise). */
const lf_policy_info *lf_policy_info_get(lf_policy_kind k);

/* The policy as the cache runs it: defaults filled in (-1 sinks/recent
 * become the policy's defaults, budget set to `budget`) and every value
 * checked against the budget. Fails with a message naming the flag. */
int lf_policy_resolve(const lf_policy_config *in, int budget, lf_policy_config *out, lf_error *err);

/* Whether the policy evicts (everything except `full`). */
bool lf_policy_is_budgeted(lf_policy_kind k);

/* ---- SnapKV (snapkv.c) ----------------------------------------------------
 * q [n][n_heads][head_dim], k [n][n_kv_heads][head_dim] of a prompt of n
 * tokens, RoPE applied. */

/* Choose the `keep` prompt positions SnapKV keeps (n > keep > LF_SNAPKV_WINDOW):
 * the first `sinks` positions, then the best keep-w-sinks of the others
 * before the window by the pooled window attention (ties: lower position),
 * then the last w = LF_SNAPKV_WINDOW positions; written ascending to kept. */
int lf_snapkv_select(const float *q, const float *k, int n, int n_heads, int n_kv_heads, int head_dim,
                     int keep, int sinks, int32_t *kept, lf_error *err);

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

/* Attention each prompt position receives from the last min(w, n) prompt
 * queries (causal softmax), averaged over query heads and summed over the
 * queries: H2O's and VATP's starting accumulated attention. acc [n]. */
int lf_window_attention(const float *q, const float *k, int n, int n_heads, int n_kv_heads, int head_dim,
                        int w, float *acc, lf_error *err);

/* ---- R-KV (rkv.c) --------------------------------------------------------- */

/* Floats of workspace lf_rkv_select needs. */
size_t lf_rkv_work_floats(int capacity, int n_heads, int n_kv_heads, int head_dim);

/* With every slot of `layer` valid, choose the slots R-KV keeps: the
 * LF_RKV_WINDOW newest tokens, and the best budget - LF_RKV_WINDOW of the
 * others by LF_RKV_LAMBDA * importance - (1 - LF_RKV_LAMBDA) * redundancy,
 * where importance is the softmax of each stored query (layer's rkv_q) over
 * the candidate keys, averaged over the queries, max-pooled (width 5) along
 * position order and averaged over query heads, and redundancy is the
 * softmax over candidates of their mean cosine similarity to the other
 * candidates' keys, averaged over KV heads. Ties keep the lower position.
 * Writes c->budget slot indices to keep (ascending); work has
 * lf_rkv_work_floats floats. Returns the number kept. */
int lf_rkv_select(const lf_kv_cache *c, int layer, int32_t *keep, float *work);

#endif
