/* The fused decode attention + scoring kernel (attention.c) and the
 * workspace it leaves its per-slot results in.
 *
 * One task per (sequence, KV head, chunk of LF_ATT_CHUNK slots) reads each K
 * and V row of the chunk once and, for all the query heads of that KV head
 * (the GQA group) at once, computes the logits, an online softmax over
 * blocks of LF_ATT_BLOCK slots, the output accumulator and, when scoring,
 * each slot's exp-weight relative to its block's running max and |v|_1.
 * A second small pass per (sequence, KV head) combines the chunks with the
 * final max and sum (two-level softmax reduction) into the output and, when
 * scoring, into each slot's attention summed over the group's heads:
 *   att[g][i] = sum_{h in group g} alpha_{h,i}     vn[g][i] = |v_{g,i}|_1
 * from which the policy (policies/common.c) forms its score. The chunking is
 * fixed (not tied to the thread count), so results do not depend on it. */
#ifndef LF_KV_ATTENTION_H
#define LF_KV_ATTENTION_H

#include <stdbool.h>
#include <stddef.h>
#include "kv/slots.h"

#define LF_ATT_BLOCK 16  /* slots per softmax block */
#define LF_ATT_CHUNK 256 /* slots per task */
#define LF_ATT_MAX_GROUP 32 /* most query heads per KV head */
#define LF_ATT_WIDE_HD 256  /* most head_dim of a bf16 or fp8 cache (the kernel widens a block
                               of rows on its stack) */

/* Workspace floats a cache needs. */
size_t lf_att_scratch_floats(int n_heads, int n_kv_heads, int head_dim, int capacity);

/* Per-slot results of the last lf_kv_attend with scores, for KV head g:
 * [capacity] floats each (slots >= the layer's hw are not written). */
static inline float *lf_att_att(const lf_kv_cache *c, int g) {
    return c->scratch + (size_t)g * c->capacity;
}
static inline float *lf_att_vn(const lf_kv_cache *c, int g) {
    return c->scratch + ((size_t)c->n_kv_heads + g) * c->capacity;
}

/* e^x for x <= 0 in float, the same in both kernel paths' callers
 * (scalar expf). Exposed for tests of the vector version. */
void lf_att_exp_block(const float *x, float *y, int n);

/* The fused kernel alone (no store, no policy step): attend q over the
 * valid slots of `layer` into out; with `scores`, also leave each slot's
 * attention (summed over the query heads of each KV head) and |v|_1 in the
 * cache's scratch (below). lf_kv_decode_layer (cache.h) calls it; benchmarks
 * call it to time scoring on against scoring off. */
void lf_kv_attend(lf_kv_cache *const *caches, int n_seq, int layer, const float *q, float *out,
                  bool scores);

/* Use the portable scalar kernel even where AVX2 is available (tests). */
void lf_att_force_scalar(int on);

#endif
