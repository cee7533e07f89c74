/* The KV cache of one sequence: a fixed set of slots per layer, shared by all
 * KV heads of that layer, allocated once and never grown. Its data are in
 * kv/slots.h; the policy (kv/policy.h, its descriptor) decides what the
 * prompt leaves in the cache (prefill) and which slot the next token
 * overwrites (decode). The decode attention over the slots (kv/attention.h)
 * is fused with the policy's score.
 */
#ifndef LF_KV_CACHE_H
#define LF_KV_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "longflow.h"
#include "kv/attention.h"
#include "kv/slots.h"
#include "model/config.h"

/* Allocate the cache. `budget` is the number of slots (the engine passes the
 * policy budget, or prompt + max tokens for `full`); p's sinks/recent/
 * evict_every are checked here (p->budget, when larger than `budget`, is the
 * user's budget the checks are made against). */
int lf_kv_cache_init(lf_kv_cache *c, const lf_config *cfg, const lf_policy_config *p, int budget,
                     lf_error *err);
/* The same, with K and V in a buffer from `buffers` (kv/buffers.h; NULL: a
 * buffer of its own), which lf_kv_cache_free gives back there. */
struct lf_kv_buffers;
int lf_kv_cache_init_from(lf_kv_cache *c, const lf_config *cfg, const lf_policy_config *p, int budget,
                          struct lf_kv_buffers *buffers, lf_error *err);
void lf_kv_cache_free(lf_kv_cache *c);
/* Empty every layer (keeps the allocation), for reuse by another sequence. */
void lf_kv_cache_reset(lf_kv_cache *c);

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
