/* The CUDA backend: the model's weights on the GPU (bf16), a pool of
 * per-sequence slot caches ("entries"), and the forward pass: prefill of one
 * prompt into an entry, and one decode step for a batch of entries, with the
 * KV-cache policy run on the GPU (the fused kernel of cuda_attention.h) and
 * sampling on the GPU. The engine (src/engine/engine.c) owns the request
 * queue and continuous batching; this backend owns device memory.
 *
 * Plain C11 header, no CUDA types. Compiled only with LF_HAVE_CUDA. */
#ifndef LF_CUDA_FORWARD_H
#define LF_CUDA_FORWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "longflow.h"
#include "model/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lf_cuda_options {
    lf_policy_config policy; /* as the user gave it (sinks/recent -1 = defaults) */
    int capacity;            /* slots per entry and layer: the budget, or prompt + max tokens for full */
    int max_prompt;          /* longest prompt prefill must take (sizes the prefill scratch) */
    int max_seqs;            /* entries wanted; 0 = as many as fit in GPU memory */
    lf_sampling sampling;    /* applied to every sequence (the repetition penalty too) */
    double mem_fraction;     /* share of the free GPU memory the plan may use (0 = 0.92) */
    bool no_graphs;          /* true: launch decode kernels one by one (for tests/profiling) */
} lf_cuda_options;

typedef struct lf_cuda_backend lf_cuda_backend;

/* Upload the weights (bf16; f32/f16 checkpoints are converted), plan memory,
 * allocate the pool. Fails with a message naming what does not fit, the
 * policy/option the GPU does not support, or the CUDA error. */
int lf_cuda_backend_create(const lf_model *m, const lf_cuda_options *o, lf_cuda_backend **out, lf_error *err);
void lf_cuda_backend_free(lf_cuda_backend *b);

typedef struct lf_cuda_info {
    char device_name[128];
    int entries;              /* sequences that can run at once */
    int capacity;             /* slots per entry and layer */
    size_t weight_bytes;      /* on the GPU */
    size_t kv_bytes_per_entry;  /* K and V of one entry, all layers */
    size_t aux_bytes_per_entry; /* slot positions, scores, accumulators */
    size_t workspace_bytes;   /* activations, prefill scratch, kernel workspaces */
    size_t gpu_free_bytes;    /* free when the plan was made */
    size_t gpu_total_bytes;
    char plan[256];           /* one line: how `entries` was chosen */
} lf_cuda_info;
void lf_cuda_backend_info(const lf_cuda_backend *b, lf_cuda_info *info);

/* Reset entry `entry`, run the prompt through the model into it (the policy
 * keeps what it keeps: all of it when it fits, SnapKV otherwise), sample the
 * first generated token with the sampling stream `seed`. budget: the slots
 * per layer this sequence may use, 1..capacity (a budgeted policy; the
 * entry's other slots stay unused), or 0 for all of them. logits (host, may
 * be NULL) receives the last prompt token's logits [vocab]. Synchronous.
 * When the last token's logits hold a NaN or +inf (or are all -inf: broken
 * weights or activations), *first_token is LF_SAMPLE_NONFINITE
 * (sampler/sampler.h) and the call still succeeds: the caller fails the
 * request, as the CPU path does. */
int lf_cuda_prefill(lf_cuda_backend *b, int entry, const int *tokens, int n, int budget, uint64_t seed,
                    int *first_token, float *logits, lf_error *err);

/* One decode step: for i < n, the sequence in entry entries[i] takes token
 * tokens[i] at position pos[i]; the sampled next token goes to out[i].
 * logits (host, may be NULL) receives [n][vocab]. Synchronous (returns with
 * the tokens on the host). The decode kernels of a batch size are captured
 * in a CUDA graph on first use. A row whose logits hold a NaN or +inf (or
 * are all -inf) gets out[i] = LF_SAMPLE_NONFINITE, found by the sampling
 * kernel in its argmax pass and read back with the tokens; the other rows
 * are not affected and the call succeeds (its K/V were stored: the caller
 * ends that sequence). */
int lf_cuda_decode(lf_cuda_backend *b, int n, const int *entries, const int *tokens, const int *pos, int *out,
                   float *logits, lf_error *err);

/* For tests: an entry's slot positions of one layer (host [capacity], -1 =
 * empty, LF_CUDA_SLOT_OFF = beyond the entry's budget) and the slot the next
 * token of that layer goes to. */
int lf_cuda_entry_slots(lf_cuda_backend *b, int entry, int layer, int32_t *pos, int32_t *next_slot,
                        lf_error *err);

/* For benchmarks: put an entry in the state it would have after `length`
 * tokens (prompt + generated): min(length, capacity) valid slots per layer
 * holding finite K/V values and positions, the next slot chosen as the
 * policy would. The next decode step of that entry uses position `length`. */
int lf_cuda_bench_fill(lf_cuda_backend *b, int entry, int length, lf_error *err);

/* For benchmarks: one decode step like lf_cuda_decode, not graphed, with
 * CUDA events around each kernel group; the times in ms. */
typedef struct lf_cuda_step_profile {
    double total_ms, gemm_ms, attention_ms, other_ms;
    double bytes_read;        /* weight bytes + K/V bytes of valid slots this step reads */
} lf_cuda_step_profile;
int lf_cuda_profile_step(lf_cuda_backend *b, int n, const int *entries, const int *tokens, const int *pos,
                         lf_cuda_step_profile *p, lf_error *err);

/* Peak device memory this backend allocated (bytes). */
size_t lf_cuda_backend_peak_bytes(const lf_cuda_backend *b);

#ifdef __cplusplus
}
#endif
#endif
