/* The backend interface: what the engine (src/engine/engine.c) asks of a
 * device, so that one continuous-batching loop drives the CPU and the GPU.
 * Internal header.
 *
 * A backend owns "places": the sequences that can run at once, numbered
 * 0 .. places-1, each with its own KV cache. The engine owns the requests,
 * the queue and which request runs in which place. Sampling happens behind
 * the interface, where each device does it: the CPU backend samples host
 * logits with the sampler (src/sampler), the CUDA backend samples on the
 * GPU. Either way prefill and step return token ids; prefill_logits and
 * step_logits return the logits rows instead (teacher-forced evaluation,
 * src/eval/perplexity.c).
 *
 * Implementations: src/cpu/backend.c (lf_backend_cpu_create) and
 * src/backend/cuda.c (lf_backend_cuda_create, over the plugin's entry points
 * of cuda/cuda_forward.h). */
#ifndef LF_BACKEND_BACKEND_H
#define LF_BACKEND_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "longflow.h"

/* What a backend was planned for (lf_backend_ops.info). */
typedef struct lf_backend_info {
    int places;          /* sequences that can run at once (0: not planned yet) */
    int capacity;        /* slots per place and layer; 0 = each sequence sized on its own (CPU) */
    int max_prompt;      /* longest prompt a prefill takes; 0 = any (CPU) */
    size_t kv_bytes_per_place;  /* fixed pools only (capacity > 0): K+V of one place, all layers */
    size_t aux_bytes_per_place; /* fixed pools only: slot positions and policy state of one place */
    unsigned plan_id;    /* changes whenever plan made a new pool (a kept one keeps its id) */
} lf_backend_info;

/* What the engine asks a plan for (lf_backend_ops.plan). */
typedef struct lf_backend_plan {
    int max_prompt;      /* longest prompt to take */
    int capacity;        /* slots per place and layer every queued request fits in */
} lf_backend_plan;

/* One sequence, as it is opened in a place. */
typedef struct lf_backend_seq {
    const int *prompt;
    int n_prompt;
    int max_new;            /* tokens it may generate */
    int slots;              /* slots per layer it may use (the budget, capped at prompt + max_new) */
    lf_policy_config policy;/* its cache policy (budget = slots for a budgeted policy) */
    lf_sampling sampling;
    uint64_t stream;        /* its sampling stream (the request id) */
} lf_backend_seq;

/* What an opened sequence's cache holds (for lf_generation and the stats). */
typedef struct lf_backend_mem {
    size_t kv_bytes;     /* K and V */
    size_t aux_bytes;    /* slot metadata, policy state */
    int slots;           /* slots per layer this sequence may use */
} lf_backend_mem;

/* A token that could not be sampled: the logits are NaN or Inf. */
#define LF_BACKEND_NONFINITE (-1)

typedef struct lf_backend_ops {
    /* Plan (or replan) the places for p; only called with no sequence open.
     * NULL: the places are fixed when the backend is created. */
    int (*plan)(void *self, const lf_backend_plan *p, lf_error *err);
    /* What the current plan holds. */
    void (*info)(const void *self, lf_backend_info *info);
    /* Refuse, with a message, a request this backend cannot run as asked
     * (before it is queued). NULL: every request the engine accepts. */
    int (*check)(const void *self, const lf_engine_config *cfg, const lf_request_params *p, int max_position,
                 lf_error *err);
    /* Give place `place` to sequence s: allocate its cache (and its sampler).
     * mem is filled with what it holds; after a failure the engine still
     * calls close. */
    int (*open)(void *self, int place, const lf_backend_seq *s, lf_backend_mem *mem, lf_error *err);
    /* Run the prompt of the sequence opened in `place` and sample its first
     * token into *token (LF_BACKEND_NONFINITE: the logits are not finite). */
    int (*prefill)(void *self, int place, int *token, lf_error *err);
    /* Is there a slot for the token at position pos of the sequence in place? */
    int (*room)(const void *self, int place, int pos);
    /* One decode step: for i < n, the sequence in places[i] takes tokens[i]
     * (its last sampled token) at position pos[i]; its next token goes to
     * out[i] (LF_BACKEND_NONFINITE for that sequence alone). -1: the step
     * failed for all of them. */
    int (*step)(void *self, int n, const int *places, const int *tokens, const int *pos, int *out,
                lf_error *err);
    /* After a token: raise *tokens_peak to the most tokens the sequence in
     * place has held and set *bytes_in_use_peak to the most K/V bytes of
     * valid slots; written = prompt + generated tokens so far, less the last
     * sampled one (the next step writes it). */
    void (*usage)(const void *self, int place, long written, size_t *tokens_peak, size_t *bytes_in_use_peak);
    /* K/V slots holding a token in the sequence in place, summed over its
     * layers (for bench's bytes-read figures). NULL: not known (the GPU). */
    long (*valid_slots)(const void *self, int place);
    /* Free the sequence's cache and sampler; the place can be opened again. */
    void (*close)(void *self, int place);
    /* The device part of lf_engine_stats (max_batch, device name, plan). */
    void (*stats)(const void *self, lf_engine_stats *s);
    void (*destroy)(void *self);
    /* prefill and step, with the logits instead of a sampled token: the
     * prompt's last row (logits [vocab]) and one row per sequence (logits
     * [n][vocab]), fp32 on the host, as the lm_head computed them (no
     * sampling, no repetition penalty; non-finite values are passed on). The
     * sequences' sampling state does not advance. */
    int (*prefill_logits)(void *self, int place, float *logits, lf_error *err);
    int (*step_logits)(void *self, int n, const int *places, const int *tokens, const int *pos, float *logits,
                       lf_error *err);
    /* true: every place runs the policy (kind, sinks, recent, evict_every)
     * of the config the backend was created with, each with its own budget
     * up to the plan's capacity (the GPU pool); false: each sequence opens
     * with a policy of its own (CPU). */
    bool one_policy;
} lf_backend_ops;

typedef struct lf_backend {
    const lf_backend_ops *ops;
    void *self;
} lf_backend;

/* The backend of cfg->device (src/engine/engine.c): the CPU's, or the
 * CUDA backend (refused with a message by a build without it). */
int lf_backend_create(const lf_model *m, const lf_engine_config *cfg, lf_backend *out, lf_error *err);
/* The CPU forward with max_seqs places (threads: 0 = all cores). */
int lf_backend_cpu_create(const lf_model *m, const lf_engine_config *cfg, lf_backend *out, lf_error *err);
#ifdef LF_HAVE_CUDA
/* The CUDA backend: nothing is loaded until the first plan. */
int lf_backend_cuda_create(const lf_model *m, const lf_engine_config *cfg, lf_backend *out, lf_error *err);
#endif

#endif
