/* The engine: a queue of requests, up to max_seqs of them in flight. Each
 * step advances every running sequence by one token in one batched forward;
 * a finished sequence frees its cache and the next queued request is
 * prefilled in its place (continuous batching).
 *
 * Two backends: the CPU forward (src/cpu/forward.h, one lf_kv_cache per
 * request) and, when built with LF_HAVE_CUDA, the CUDA backend
 * (src/cuda/cuda_forward.h), which owns a pool of per-sequence caches
 * ("entries") on the GPU. The CUDA backend is created at the first
 * lf_engine_run (or lf_engine_reserve), when the queued prompts are known. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/timer.h"
#include "cpu/forward.h"
#include "kv/cache.h"
#include "kv/policy.h"
#include "longflow.h"
#include "model/model.h"
#include "sampler/sampler.h"
#ifdef LF_HAVE_CUDA
#include "cuda/cuda_forward.h"
#endif

typedef struct lf_request {
    lf_generation g;
    int *prompt;
    int *tokens;     /* [max_tokens] */
    int *history;    /* prompt + generated, for the repetition penalty */
    lf_kv_cache cache;
    bool has_cache;
    lf_sampler sampler;
    bool has_sampler;
    int budget;      /* slots for a budgeted policy (the engine's, or per request) */
    int max_new;     /* tokens it may generate: max_tokens, or less at the model's context */
    int entry;       /* CUDA: the pool entry this request runs in, -1 = none */
} lf_request;

struct lf_engine {
    lf_model *model;
    lf_engine_config cfg;
    lf_cpu_ctx *cpu;
    lf_request **reqs;
    int n_reqs, cap_reqs;
    int next_queued;
    lf_engine_stats stats;
    size_t kv_bytes_now;
    /* step scratch */
    float *logits; /* [max_seqs][vocab] */
    int *step_tokens, *step_pos;
    lf_kv_cache **step_caches;
    lf_request **step_reqs;
#ifdef LF_HAVE_CUDA
    lf_cuda_backend *gpu;
    lf_cuda_info gpu_info;
    int gpu_max_prompt;  /* longest prompt the backend was planned for */
    int *free_entries;   /* [entries] stack of unused pool entries */
    int n_free;
    int *step_entries, *step_out; /* [entries] */
#endif
};

void lf_engine_config_default(lf_engine_config *c) {
    memset(c, 0, sizeof *c);
    c->device = LF_DEVICE_CPU;
    c->threads = 0;
    c->max_seqs = 1;
    c->max_tokens = 256;
    c->ignore_eos = false;
    lf_policy_config_default(&c->policy);
    lf_sampling_default(&c->sampling);
}

int lf_engine_create(lf_model *m, const lf_engine_config *cfg, lf_engine **out, lf_error *err) {
    *out = NULL;
    if (cfg->device != LF_DEVICE_CPU && cfg->device != LF_DEVICE_CUDA)
        return lf_fail(err, "engine: unknown device %d (cpu or cuda)", (int)cfg->device);
#ifndef LF_HAVE_CUDA
    if (cfg->device == LF_DEVICE_CUDA)
        return lf_fail(err, "--device cuda: this build has no CUDA backend (configure with -DLF_CUDA=ON on a "
                            "machine with nvcc)");
#endif
    if (cfg->device == LF_DEVICE_CPU && cfg->max_seqs < 1)
        return lf_fail(err, "engine: max_seqs must be >= 1 on the CPU (got %d; 0 = as many as fit is for --device "
                            "cuda)", cfg->max_seqs);
    if (cfg->max_seqs < 0) return lf_fail(err, "engine: max_seqs must be >= 0 (got %d)", cfg->max_seqs);
    if (cfg->device == LF_DEVICE_CUDA && !(cfg->gpu_mem_fraction >= 0 && cfg->gpu_mem_fraction <= 0.98 + 1e-6))
        return lf_fail(err, "--gpu-mem-fraction must be in (0, 0.98] (got %g; 0 = the backend default)",
                       cfg->gpu_mem_fraction);
    if (cfg->max_tokens < 1) return lf_fail(err, "--max-tokens must be >= 1 (got %d)", cfg->max_tokens);
    if (cfg->policy.kind != LF_POLICY_FULL && cfg->policy.budget <= 0)
        return lf_fail(err, "--budget must be a positive number of slots for --policy %s (got %d)",
                       lf_policy_name(cfg->policy.kind), cfg->policy.budget);
    /* validate sampling once, up front, so a bad flag fails before any work */
    lf_sampler probe;
    if (lf_sampler_init(&probe, &cfg->sampling, m->cfg.vocab_size, 0, err)) return -1;
    lf_sampler_free(&probe);

    lf_engine *e = calloc(1, sizeof *e);
    if (!e) return lf_fail(err, "engine: out of memory");
    e->model = m;
    e->cfg = *cfg;
    if (cfg->device == LF_DEVICE_CUDA) { /* the backend and the step arrays come with the plan */
        *out = e;
        return 0;
    }
    lf_cpu_set_threads(cfg->threads);
    int B = cfg->max_seqs, V = m->cfg.vocab_size;
    e->logits = malloc((size_t)B * V * sizeof(float));
    e->step_tokens = malloc((size_t)B * sizeof(int));
    e->step_pos = malloc((size_t)B * sizeof(int));
    e->step_caches = malloc((size_t)B * sizeof(lf_kv_cache *));
    e->step_reqs = malloc((size_t)B * sizeof(lf_request *));
    if (!e->logits || !e->step_tokens || !e->step_pos || !e->step_caches || !e->step_reqs) {
        lf_engine_free(e);
        return lf_fail(err, "engine: out of memory for a batch of %d", B);
    }
    if (lf_cpu_ctx_create(m, B, &e->cpu, err)) {
        lf_engine_free(e);
        return -1;
    }
    *out = e;
    return 0;
}

static void request_release(lf_request *r) {
    if (r->has_cache) lf_kv_cache_free(&r->cache);
    if (r->has_sampler) lf_sampler_free(&r->sampler);
    r->has_cache = r->has_sampler = false;
    free(r->history);
    r->history = NULL;
}

void lf_engine_free(lf_engine *e) {
    if (!e) return;
    for (int i = 0; i < e->n_reqs; i++) {
        request_release(e->reqs[i]);
        free(e->reqs[i]->prompt);
        free(e->reqs[i]->tokens);
        free(e->reqs[i]);
    }
    free(e->reqs);
    lf_cpu_ctx_free(e->cpu);
    free(e->logits);
    free(e->step_tokens);
    free(e->step_pos);
    free(e->step_caches);
    free(e->step_reqs);
#ifdef LF_HAVE_CUDA
    lf_cuda_backend_free(e->gpu);
    free(e->free_entries);
    free(e->step_entries);
    free(e->step_out);
#endif
    free(e);
}

int lf_engine_submit(lf_engine *e, const int *prompt, int n_prompt, lf_error *err) {
    return lf_engine_submit_budget(e, prompt, n_prompt, 0, err);
}

int lf_engine_submit_budget(lf_engine *e, const int *prompt, int n_prompt, int budget, lf_error *err) {
    const lf_config *c = &e->model->cfg;
    if (budget < 0) return lf_fail(err, "budget must be positive (got %d)", budget);
    if (budget == 0) budget = e->cfg.policy.budget;
    if (n_prompt < 1) return lf_fail(err, "prompt is empty: at least one token is needed");
    const int room = lf_context_check(e->model, n_prompt, err);
    if (room < 0) return -1;
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= c->vocab_size)
            return lf_fail(err, "prompt token %d at index %d is outside the vocabulary [0, %d)", prompt[i], i,
                           c->vocab_size);
    /* (`full` caches are sized to fit the prompt: no capacity limit here) */
    if (lf_policy_check_prompt(&e->cfg.policy, budget, INT_MAX, n_prompt, err)) return -1;
    if (e->n_reqs == e->cap_reqs) {
        int nc = e->cap_reqs ? 2 * e->cap_reqs : 16;
        lf_request **nr = realloc(e->reqs, (size_t)nc * sizeof *nr);
        if (!nr) return lf_fail(err, "engine: out of memory");
        e->reqs = nr;
        e->cap_reqs = nc;
    }
    lf_request *r = calloc(1, sizeof *r);
    if (!r) return lf_fail(err, "engine: out of memory");
    r->prompt = malloc((size_t)n_prompt * sizeof(int));
    r->tokens = malloc((size_t)e->cfg.max_tokens * sizeof(int));
    if (!r->prompt || !r->tokens) {
        free(r->prompt);
        free(r->tokens);
        free(r);
        return lf_fail(err, "engine: out of memory");
    }
    memcpy(r->prompt, prompt, (size_t)n_prompt * sizeof(int));
    r->budget = budget;
    r->max_new = room < e->cfg.max_tokens ? room : e->cfg.max_tokens;
    r->entry = -1;
    r->g.id = e->n_reqs;
    r->g.prompt = r->prompt;
    r->g.n_prompt = n_prompt;
    r->g.tokens = r->tokens;
    e->reqs[e->n_reqs++] = r;
    return r->g.id;
}

/* The context rule, in one place: a prompt and what is generated after it
 * fit the model's positions 0 .. max_position_embeddings - 1. */
int lf_context_check(const lf_model *m, int n_prompt, lf_error *err) {
    const int ctx = m->cfg.max_position;
    if (n_prompt < ctx) return ctx - n_prompt;
    return lf_fail(err, "the prompt has %d tokens but the model's context (max_position_embeddings) is %d: at most %d "
                        "prompt tokens leave room for one generated token",
                   n_prompt, ctx, ctx - 1);
}

static int nonfinite_fail(const lf_request *r, lf_error *err) {
    return lf_fail(err, "request %d: logits are NaN or Inf at step %d (check the model's weights)", r->g.id,
                   r->g.n_tokens);
}

/* Slots a sequence's cache needs: the policy's budget, but never more than
 * the tokens it can ever hold (prompt + max_new - 1 written tokens). */
static int cache_slots(const lf_engine *e, const lf_request *r) {
    int need = r->g.n_prompt + r->max_new;
    if (e->cfg.policy.kind == LF_POLICY_FULL || r->budget <= 0) return need;
    return r->budget < need ? r->budget : need;
}

/* Record a sampled token; returns true when the sequence is finished. */
static bool push_token(lf_engine *e, lf_request *r, int tok, lf_token_callback cb, void *user) {
    r->tokens[r->g.n_tokens++] = tok;
    if (r->history) r->history[r->g.n_prompt + r->g.n_tokens - 1] = tok;
    e->stats.generated_tokens++;
    if (!e->cfg.ignore_eos && lf_config_is_eos(&e->model->cfg, tok)) {
        r->g.done = true;
        r->g.finish_reason = "eos";
    } else if (r->g.n_tokens >= r->max_new) {
        r->g.done = true;
        r->g.finish_reason = "length";
        if (r->max_new < e->cfg.max_tokens) r->g.note = "stopped at the model's context (max_position_embeddings)";
    }
    if (r->has_cache) {
        if ((size_t)r->cache.peak_valid > r->g.kv_tokens_peak) r->g.kv_tokens_peak = (size_t)r->cache.peak_valid;
        r->g.kv_bytes_in_use_peak = lf_kv_cache_peak_bytes_in_use(&r->cache);
    }
#ifdef LF_HAVE_CUDA
    if (r->entry >= 0) {
        /* The GPU path derives these instead of reading the device: after the
         * prefill and each decode step the entry holds the prompt (what the
         * policy kept of it) plus the generated tokens written so far (the last
         * sampled one is written by the next step), never more than capacity.
         * For a prompt longer than the capacity this is an upper bound
         * (SnapKV may keep a few slots fewer). A budgeted request holds at
         * most its own budget's slots of its entry. */
        const lf_cuda_info *in = &e->gpu_info;
        long held = (long)r->g.n_prompt + r->g.n_tokens - 1;
        const long slots = e->cfg.policy.kind == LF_POLICY_FULL ? in->capacity : cache_slots(e, r);
        if (held > slots) held = slots;
        if ((size_t)held > r->g.kv_tokens_peak) r->g.kv_tokens_peak = (size_t)held;
        size_t per_slot = in->capacity > 0 ? in->kv_bytes_per_entry / (size_t)in->capacity : 0;
        r->g.kv_bytes_in_use_peak = r->g.kv_tokens_peak * per_slot;
    }
#endif
    if (cb) cb(user, &r->g, tok);
    return r->g.done;
}

static int admit(lf_engine *e, lf_request *r, lf_token_callback cb, void *user, lf_error *err) {
    const lf_config *c = &e->model->cfg;
    r->history = malloc((size_t)(r->g.n_prompt + e->cfg.max_tokens) * sizeof(int));
    if (!r->history) return lf_fail(err, "engine: out of memory");
    memcpy(r->history, r->prompt, (size_t)r->g.n_prompt * sizeof(int));
    if (lf_sampler_init(&r->sampler, &e->cfg.sampling, c->vocab_size, (uint64_t)r->g.id, err)) return -1;
    r->has_sampler = true;
    /* the request's budget, not the engine's, sets what depends on it (H2O's and
     * VATP's default recent window, budget / 2): eval --budget P% gives every
     * problem its own, with the engine's budget a placeholder */
    lf_policy_config pc = e->cfg.policy;
    pc.budget = r->budget;
    if (lf_kv_cache_init(&r->cache, c, &pc, cache_slots(e, r), err)) return -1;
    r->has_cache = true;
    r->g.kv_bytes = lf_kv_bytes_for(e->model, r->cache.capacity);
    r->g.kv_aux_bytes = r->cache.bytes > r->g.kv_bytes ? r->cache.bytes - r->g.kv_bytes : 0;
    e->kv_bytes_now += r->cache.bytes;
    if (e->kv_bytes_now > e->stats.kv_bytes_peak) e->stats.kv_bytes_peak = e->kv_bytes_now;

    double t0 = lf_now_ms();
    float *logits = e->logits;
    if (lf_cpu_prefill(e->cpu, e->model, &r->cache, r->prompt, r->g.n_prompt, logits, err)) return -1;
    e->stats.prefill_ms += lf_now_ms() - t0;
    e->stats.prompt_tokens += r->g.n_prompt;
    int tok = lf_sampler_sample(&r->sampler, logits, r->history, r->g.n_prompt);
    if (tok < 0) return nonfinite_fail(r, err);
    push_token(e, r, tok, cb, user);
    return 0;
}

static void retire(lf_engine *e, lf_request *r) {
    if (r->has_cache) e->kv_bytes_now -= r->cache.bytes;
    request_release(r);
}

static int cpu_run(lf_engine *e, lf_token_callback cb, void *user, lf_error *err) {
    const int V = e->model->cfg.vocab_size;
    lf_request **active = e->step_reqs;
    int n_active = 0;
    for (;;) {
        /* admit queued requests into free batch places */
        while (n_active < e->cfg.max_seqs && e->next_queued < e->n_reqs) {
            lf_request *r = e->reqs[e->next_queued++];
            if (admit(e, r, cb, user, err)) {
                retire(e, r);
                for (int i = 0; i < n_active; i++) retire(e, active[i]);
                return lf_fail_prefix(err, "request %d", r->g.id);
            }
            if (r->g.done) retire(e, r);
            else active[n_active++] = r;
        }
        if (n_active == 0) break;

        for (int i = 0; i < n_active; i++) {
            lf_request *r = active[i];
            e->step_tokens[i] = r->tokens[r->g.n_tokens - 1];
            e->step_pos[i] = r->g.n_prompt + r->g.n_tokens - 1;
            e->step_caches[i] = &r->cache;
            if (lf_kv_cache_room(&r->cache) <= 0) { /* never by the sizing above: refuse, do not drop tokens */
                for (int j = 0; j < n_active; j++) retire(e, active[j]);
                return lf_fail(err, "request %d: KV cache of %d slots is full", r->g.id, r->cache.capacity);
            }
        }
        double t0 = lf_now_ms();
        if (lf_cpu_decode(e->cpu, e->model, e->step_caches, e->step_tokens, e->step_pos, n_active, e->logits,
                          err)) {
            for (int i = 0; i < n_active; i++) retire(e, active[i]);
            return -1;
        }
        int kept = 0;
        e->stats.decode_tokens += n_active;
        for (int i = 0; i < n_active; i++) {
            lf_request *r = active[i];
            int tok = lf_sampler_sample(&r->sampler, e->logits + (size_t)i * V, r->history,
                                        r->g.n_prompt + r->g.n_tokens);
            if (tok < 0) { /* the kept ones, this one and the rest are still held */
                nonfinite_fail(r, err);
                for (int j = 0; j < n_active; j++)
                    if (j < kept || j >= i) retire(e, active[j]);
                return -1;
            }
            if (push_token(e, r, tok, cb, user)) retire(e, r);
            else active[kept++] = r;
        }
        n_active = kept;
        e->stats.decode_ms += lf_now_ms() - t0;
        e->stats.decode_steps++;
    }
    return 0;
}

/* ---- the CUDA path ------------------------------------------------------- */
#ifdef LF_HAVE_CUDA

/* Slots every entry needs for prompts of up to max_prompt tokens: for a
 * budgeted policy the largest budget of the queued requests (each capped at
 * what its sequence can ever hold; the engine's budget when none is queued),
 * for `full` prompt + max_tokens (so `full` never runs out of slots). A
 * request with a smaller budget uses that many of its entry's slots
 * (lf_cuda_prefill's budget). */
static int gpu_capacity(const lf_engine *e, int max_prompt) {
    long need = (long)max_prompt + e->cfg.max_tokens;
    if (need > 1 << 30) need = 1 << 30;
    if (e->cfg.policy.kind == LF_POLICY_FULL) return (int)need;
    if (e->next_queued >= e->n_reqs) return e->cfg.policy.budget < need ? e->cfg.policy.budget : (int)need;
    int cap = 1;
    for (int i = e->next_queued; i < e->n_reqs; i++) {
        const int c = cache_slots(e, e->reqs[i]);
        if (c > cap) cap = c;
    }
    return cap;
}

/* Create the backend for prompts of up to max_prompt tokens, or keep the
 * current one when it was planned for at least that. Only called with no
 * sequence running (between runs), so a recreate loses nothing. */
static int gpu_plan(lf_engine *e, int max_prompt, lf_error *err) {
    int cap = gpu_capacity(e, max_prompt);
    if (e->gpu && max_prompt <= e->gpu_max_prompt && cap <= e->gpu_info.capacity) return 0;
    if (e->gpu) {
        lf_cuda_backend_free(e->gpu);
        e->gpu = NULL;
    }
    lf_cuda_options o;
    memset(&o, 0, sizeof o);
    o.policy = e->cfg.policy;
    o.capacity = cap;
    o.max_prompt = max_prompt;
    o.max_seqs = e->cfg.max_seqs;
    o.sampling = e->cfg.sampling;
    o.mem_fraction = e->cfg.gpu_mem_fraction;
    o.no_graphs = false;
    if (lf_cuda_backend_create(e->model, &o, &e->gpu, err)) {
        e->gpu = NULL;
        return -1;
    }
    lf_cuda_backend_info(e->gpu, &e->gpu_info);
    e->gpu_max_prompt = max_prompt;
    int n = e->gpu_info.entries;
    if (n < 1) {
        lf_cuda_backend_free(e->gpu);
        e->gpu = NULL;
        return lf_fail(err, "--device cuda: the memory plan admits no sequence (%s)", e->gpu_info.plan);
    }
    free(e->free_entries);
    free(e->step_entries);
    free(e->step_out);
    free(e->step_tokens);
    free(e->step_pos);
    free(e->step_reqs);
    e->free_entries = malloc((size_t)n * sizeof(int));
    e->step_entries = malloc((size_t)n * sizeof(int));
    e->step_out = malloc((size_t)n * sizeof(int));
    e->step_tokens = malloc((size_t)n * sizeof(int));
    e->step_pos = malloc((size_t)n * sizeof(int));
    e->step_reqs = malloc((size_t)n * sizeof(lf_request *));
    if (!e->free_entries || !e->step_entries || !e->step_out || !e->step_tokens || !e->step_pos ||
        !e->step_reqs) {
        lf_cuda_backend_free(e->gpu);
        e->gpu = NULL;
        return lf_fail(err, "engine: out of memory for a batch of %d", n);
    }
    /* a stack: entry 0 is handed out first */
    e->n_free = n;
    for (int i = 0; i < n; i++) e->free_entries[i] = n - 1 - i;
    return 0;
}

static size_t gpu_bytes_per_entry(const lf_engine *e) {
    return e->gpu_info.kv_bytes_per_entry + e->gpu_info.aux_bytes_per_entry;
}

static void gpu_retire(lf_engine *e, lf_request *r) {
    if (r->entry >= 0) {
        e->free_entries[e->n_free++] = r->entry;
        e->kv_bytes_now -= gpu_bytes_per_entry(e);
        r->entry = -1;
    }
    request_release(r);
}

static int gpu_admit(lf_engine *e, lf_request *r, lf_token_callback cb, void *user, lf_error *err) {
    r->entry = e->free_entries[--e->n_free];
    r->g.kv_bytes = e->gpu_info.kv_bytes_per_entry;
    r->g.kv_aux_bytes = e->gpu_info.aux_bytes_per_entry;
    e->kv_bytes_now += gpu_bytes_per_entry(e);
    if (e->kv_bytes_now > e->stats.kv_bytes_peak) e->stats.kv_bytes_peak = e->kv_bytes_now;
    double t0 = lf_now_ms();
    int tok = 0;
    /* the sampling stream of a request is its id, as on the CPU */
    const int budget = e->cfg.policy.kind == LF_POLICY_FULL ? 0 : cache_slots(e, r);
    if (lf_cuda_prefill(e->gpu, r->entry, r->prompt, r->g.n_prompt, budget, (uint64_t)r->g.id, &tok, NULL, err))
        return -1;
    e->stats.prefill_ms += lf_now_ms() - t0;
    e->stats.prompt_tokens += r->g.n_prompt;
    push_token(e, r, tok, cb, user);
    return 0;
}

static int gpu_run(lf_engine *e, lf_token_callback cb, void *user, lf_error *err) {
    int max_prompt = 0;
    for (int i = e->next_queued; i < e->n_reqs; i++)
        if (e->reqs[i]->g.n_prompt > max_prompt) max_prompt = e->reqs[i]->g.n_prompt;
    if (max_prompt == 0) return 0; /* nothing queued */
    if (gpu_plan(e, max_prompt, err)) return -1;
    lf_request **active = e->step_reqs;
    int n_active = 0;
    const bool full = e->cfg.policy.kind == LF_POLICY_FULL;
    for (;;) {
        /* a freed entry takes the next queued request: its prefill runs while
         * the other sequences wait for this one prefill */
        while (e->n_free > 0 && e->next_queued < e->n_reqs) {
            lf_request *r = e->reqs[e->next_queued++];
            if (gpu_admit(e, r, cb, user, err)) {
                gpu_retire(e, r);
                for (int i = 0; i < n_active; i++) gpu_retire(e, active[i]);
                return lf_fail_prefix(err, "request %d", r->g.id);
            }
            if (r->g.done) gpu_retire(e, r);
            else active[n_active++] = r;
        }
        if (n_active == 0) break;

        for (int i = 0; i < n_active; i++) {
            lf_request *r = active[i];
            e->step_entries[i] = r->entry;
            e->step_tokens[i] = r->tokens[r->g.n_tokens - 1];
            e->step_pos[i] = r->g.n_prompt + r->g.n_tokens - 1;
            /* never by the sizing (capacity = longest prompt + max_tokens): refuse, do not drop tokens */
            if (full && e->step_pos[i] >= e->gpu_info.capacity) {
                int cap = e->gpu_info.capacity;
                for (int j = 0; j < n_active; j++) gpu_retire(e, active[j]);
                return lf_fail(err, "request %d: KV cache of %d slots is full", r->g.id, cap);
            }
        }
        double t0 = lf_now_ms();
        if (lf_cuda_decode(e->gpu, n_active, e->step_entries, e->step_tokens, e->step_pos, e->step_out, NULL,
                           err)) {
            for (int i = 0; i < n_active; i++) gpu_retire(e, active[i]);
            return -1;
        }
        int kept = 0;
        e->stats.decode_tokens += n_active;
        for (int i = 0; i < n_active; i++) {
            lf_request *r = active[i];
            if (push_token(e, r, e->step_out[i], cb, user)) gpu_retire(e, r);
            else active[kept++] = r;
        }
        n_active = kept;
        e->stats.decode_ms += lf_now_ms() - t0;
        e->stats.decode_steps++;
    }
    return 0;
}
#endif /* LF_HAVE_CUDA */

int lf_engine_run(lf_engine *e, lf_token_callback cb, void *user, lf_error *err) {
#ifdef LF_HAVE_CUDA
    if (e->cfg.device == LF_DEVICE_CUDA) return gpu_run(e, cb, user, err);
#endif
    return cpu_run(e, cb, user, err);
}

int lf_engine_reserve(lf_engine *e, int max_prompt, lf_error *err) {
    if (max_prompt < 1) return lf_fail(err, "engine: max_prompt must be >= 1 (got %d)", max_prompt);
#ifdef LF_HAVE_CUDA
    if (e->cfg.device == LF_DEVICE_CUDA) {
        for (int i = e->next_queued; i < e->n_reqs; i++)
            if (e->reqs[i]->g.n_prompt > max_prompt) max_prompt = e->reqs[i]->g.n_prompt;
        return gpu_plan(e, max_prompt, err);
    }
#endif
    return 0;
}

size_t lf_kv_bytes_for(const lf_model *m, int slots) {
    const lf_config *c = &m->cfg;
    return 2 * (size_t)c->n_layers * c->n_kv_heads * c->head_dim * (size_t)slots * sizeof(float);
}

size_t lf_kv_bytes_for_device(const lf_model *m, int slots, lf_device device) {
    if (device == LF_DEVICE_CPU) return lf_kv_bytes_for(m, slots);
    const lf_config *c = &m->cfg;
    return 2 * (size_t)c->n_layers * c->n_kv_heads * c->head_dim * (size_t)slots * 2; /* bf16 */
}

const lf_generation *lf_engine_result(const lf_engine *e, int id) {
    if (id < 0 || id >= e->n_reqs) return NULL;
    return &e->reqs[id]->g;
}

void lf_engine_stats_get(const lf_engine *e, lf_engine_stats *s) {
    *s = e->stats;
    if (e->cfg.device == LF_DEVICE_CPU) {
        s->max_batch = e->cfg.max_seqs;
        snprintf(s->device_name, sizeof s->device_name, "cpu");
        return;
    }
#ifdef LF_HAVE_CUDA
    if (e->gpu) {
        const lf_cuda_info *in = &e->gpu_info;
        s->max_batch = in->entries;
        s->capacity = in->capacity;
        s->gpu_peak_bytes = lf_cuda_backend_peak_bytes(e->gpu);
        s->gpu_weight_bytes = in->weight_bytes;
        s->gpu_kv_bytes_per_seq = in->kv_bytes_per_entry;
        s->gpu_aux_bytes_per_seq = in->aux_bytes_per_entry;
        snprintf(s->device_name, sizeof s->device_name, "%s", in->device_name);
        snprintf(s->gpu_plan, sizeof s->gpu_plan, "%s", in->plan);
    }
#endif
}
