/* The CPU forward pass: prefill of one prompt (matrix-matrix), decode of a
 * batch of sequences (one token each), fp32 compute over weights in their
 * stored dtype. */
#ifndef LF_CPU_FORWARD_H
#define LF_CPU_FORWARD_H

#include "longflow.h"
#include "model/model.h"
#include "kv/cache.h"

typedef struct lf_cpu_ctx lf_cpu_ctx;

/* Scratch for up to max_batch decode sequences; prefill scratch grows as
 * needed (allocated per call length, reused). */
int lf_cpu_ctx_create(const lf_model *m, int max_batch, lf_cpu_ctx **out, lf_error *err);
void lf_cpu_ctx_free(lf_cpu_ctx *ctx);

/* Run the n prompt tokens (positions 0..n-1) through the model, fill the
 * cache, and write the logits of the last token to logits [vocab]. */
int lf_cpu_prefill(lf_cpu_ctx *ctx, const lf_model *m, lf_kv_cache *cache, const int *tokens, int n,
                   float *logits, lf_error *err);

/* One decode step for n_seq sequences: token tokens[s] at position pos[s]
 * goes through the model with caches[s]; logits [n_seq][vocab]. */
int lf_cpu_decode(lf_cpu_ctx *ctx, const lf_model *m, lf_kv_cache *const *caches, const int *tokens,
                  const int *pos, int n_seq, float *logits, lf_error *err);

/* Set the number of threads the CPU kernels use (0 = all cores). */
void lf_cpu_set_threads(int n);

#endif
