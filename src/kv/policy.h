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

#endif
