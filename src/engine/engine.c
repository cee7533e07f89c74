/* The engine: a queue of requests, up to max_seqs of them in flight. Each
 * step advances every running sequence by one token in one batched forward;
 * a finished sequence frees its cache and the next queued request is
 * prefilled in its place (continuous batching).
 *
 * One loop for every device, over the backend interface
 * (backend/backend.h): the CPU backend (src/cpu/backend.c, its places fixed
 * at max_seqs) and, when built with LF_HAVE_CUDA, the CUDA backend
 * (src/backend/cuda.c, a pool of entries on the GPU planned at the first
 * lf_engine_run or lf_engine_reserve, when the queued prompts are known).
 * Both return sampled tokens. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/error.h"
#include "core/timer.h"
#include "kv/dtype.h"
#include "kv/policy.h"
#include "longflow.h"
#include "model/model.h"
#include "sampler/sampler.h"

typedef struct lf_request {
    lf_generation g;
    int *prompt;
    int *tokens;     /* [max_new] */
    int *stop_ids;   /* [n_stop_ids] */
    int n_stop_ids;
    int max_tokens;  /* asked for */
    int max_new;     /* tokens it may generate: max_tokens, or less at the model's context */
    bool ignore_eos;
    lf_sampling sampling;
    uint64_t stream; /* the sampler's random stream */
    lf_policy_kind policy;
    bool running;    /* admitted and not yet retired */
    int budget;      /* slots for a budgeted policy (the engine's, or per request) */
    int place;       /* the backend place this request runs in, -1 = none */
    char error[sizeof(lf_error)]; /* why it finished with "error" (g.note points here) */
} lf_request;

struct lf_engine {
    lf_model *model;
    lf_engine_config cfg;
    lf_backend be;
    lf_backend_info plan; /* what the backend holds now (places 0: not planned) */
    /* every request not yet released: reqs[i] has id id_base + i (NULL once released) */
    lf_request **reqs;
    int id_base, n_reqs, cap_reqs;
    /* FIFO of queued requests: queue[q_head .. q_head + q_len) */
    lf_request **queue;
    int q_head, q_len, q_cap;
    lf_request **active; /* running sequences [places] */
    int n_active;
    lf_engine_stats stats;
    size_t kv_bytes_now;
    int *free_places;    /* [places] stack of unused places */
    int n_free;
    /* step scratch [places] */
    int *step_places, *step_tokens, *step_pos, *step_out;
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

static void free_step_arrays(lf_engine *e) {
    free(e->active);
    free(e->free_places);
    free(e->step_places);
    free(e->step_tokens);
    free(e->step_pos);
    free(e->step_out);
    e->active = NULL;
    e->free_places = e->step_places = e->step_tokens = e->step_pos = e->step_out = NULL;
    e->n_free = 0;
}

/* Take the backend's current plan: the running set, the free places and the
 * step arrays, one per place (none when it is not planned yet). Only with
 * no sequence running. */
static int adopt_plan(lf_engine *e, lf_error *err) {
    free_step_arrays(e);
    e->be.ops->info(e->be.self, &e->plan);
    const int n = e->plan.places;
    if (n == 0) return 0;
    e->active = malloc((size_t)n * sizeof(lf_request *));
    e->free_places = malloc((size_t)n * sizeof(int));
    e->step_places = malloc((size_t)n * sizeof(int));
    e->step_tokens = malloc((size_t)n * sizeof(int));
    e->step_pos = malloc((size_t)n * sizeof(int));
    e->step_out = malloc((size_t)n * sizeof(int));
    if (!e->active || !e->free_places || !e->step_places || !e->step_tokens || !e->step_pos || !e->step_out) {
        free_step_arrays(e);
        e->plan.places = 0;
        return lf_fail(err, "engine: out of memory for a batch of %d", n);
    }
    /* a stack: place 0 is handed out first */
    e->n_free = n;
    for (int i = 0; i < n; i++) e->free_places[i] = n - 1 - i;
    return 0;
}

/* A build without the CUDA backend refuses --device cuda. */
static int check_cuda_built(lf_device device, lf_error *err) {
#ifndef LF_HAVE_CUDA
    if (device == LF_DEVICE_CUDA)
        return lf_fail(err, "--device cuda: this build has no CUDA backend (configure with -DLF_CUDA=ON on a "
                            "machine with nvcc)");
#else
    (void)device;
    (void)err;
#endif
    return 0;
}

int lf_backend_create(const lf_model *m, const lf_engine_config *cfg, lf_backend *out, lf_error *err) {
    if (check_cuda_built(cfg->device, err)) return -1;
#ifdef LF_HAVE_CUDA
    if (cfg->device == LF_DEVICE_CUDA) return lf_backend_cuda_create(m, cfg, out, err); /* places come with the plan */
#endif
    return lf_backend_cpu_create(m, cfg, out, err);
}

int lf_engine_create(lf_model *m, const lf_engine_config *cfg, lf_engine **out, lf_error *err) {
    *out = NULL;
    if (cfg->device != LF_DEVICE_CPU && cfg->device != LF_DEVICE_CUDA)
        return lf_fail(err, "engine: unknown device %d (cpu or cuda)", (int)cfg->device);
    if (check_cuda_built(cfg->device, err)) return -1;
    if (cfg->device == LF_DEVICE_CPU && cfg->max_seqs < 1)
        return lf_fail(err, "engine: max_seqs must be >= 1 on the CPU (got %d; 0 = as many as fit is for --device "
                            "cuda)", cfg->max_seqs);
    if (cfg->max_seqs < 0) return lf_fail(err, "engine: max_seqs must be >= 0 (got %d)", cfg->max_seqs);
    if (cfg->device == LF_DEVICE_CUDA && !(cfg->gpu_mem_fraction >= 0 && cfg->gpu_mem_fraction <= 0.98 + 1e-6))
        return lf_fail(err, "--gpu-mem-fraction must be in (0, 0.98] (got %g; 0 = the backend default)",
                       cfg->gpu_mem_fraction);
    if (cfg->max_tokens < 1) return lf_fail(err, "--max-tokens must be >= 1 (got %d)", cfg->max_tokens);
    if (lf_kv_dtype_check_device(cfg->policy.kv_dtype, cfg->device, err)) return -1;
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
    if (lf_backend_create(m, cfg, &e->be, err) || adopt_plan(e, err)) {
        lf_engine_free(e);
        return -1;
    }
    *out = e;
    return 0;
}

static void request_free(lf_request *r) {
    if (!r) return;
    free(r->prompt);
    free(r->tokens);
    free(r->stop_ids);
    free(r);
}

void lf_engine_free(lf_engine *e) {
    if (!e) return;
    for (int i = 0; i < e->n_reqs; i++) request_free(e->reqs[i]);
    free(e->reqs);
    free(e->queue);
    free_step_arrays(e);
    if (e->be.ops) e->be.ops->destroy(e->be.self);
    free(e);
}

static lf_request *find_request(const lf_engine *e, int id) {
    if (id < e->id_base || id - e->id_base >= e->n_reqs) return NULL;
    return e->reqs[id - e->id_base];
}

/* Slots a sequence's cache needs: the policy's budget, but never more than
 * the tokens it can ever hold (prompt + max_new - 1 written tokens). */
static int cache_slots(const lf_request *r) {
    int need = r->g.n_prompt + r->max_new;
    if (r->policy == LF_POLICY_FULL || r->budget <= 0) return need;
    return r->budget < need ? r->budget : need;
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

/* (the caller prefixes the request) */
static int nonfinite_fail(const lf_request *r, lf_error *err) {
    return lf_fail(err, "logits are NaN or Inf at step %d (check the model's weights)", r->g.n_tokens);
}

/* r finishes with "error": err (prefixed with r's id unless named_all) is
 * also r's own message, g.note, so that requests failing in one step keep
 * theirs. Returns -1. */
static int mark_failed(lf_request *r, lf_error *err, bool named_all) {
    if (!named_all) lf_fail_prefix(err, "request %d", r->g.id);
    memcpy(r->error, err->msg, sizeof r->error);
    r->g.note = r->error;
    r->g.done = true;
    r->g.finish_reason = "error";
    return -1;
}

void lf_request_params_default(const lf_engine *e, const int *prompt, int n_prompt, lf_request_params *p) {
    memset(p, 0, sizeof *p);
    p->prompt = prompt;
    p->n_prompt = n_prompt;
    p->max_tokens = e->cfg.max_tokens;
    p->sampling = e->cfg.sampling;
    p->ignore_eos = e->cfg.ignore_eos;
    p->policy = e->cfg.policy.kind;
    p->budget = e->cfg.policy.budget;
    p->stream = -1;
}

static int check_ids(const lf_engine *e, const int *ids, int n, const char *what, lf_error *err) {
    const int V = e->model->cfg.vocab_size;
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return lf_fail(err, "%s token %d at index %d is outside the vocabulary [0, %d)", what, ids[i], i, V);
    return 0;
}

/* What the device can run as asked (the GPU pool: one policy and one
 * sampling configuration, the planned prompt length and slots). */
static int check_device(const lf_engine *e, const lf_request_params *p, lf_error *err) {
    if (!e->be.ops->check) return 0;
    return e->be.ops->check(e->be.self, &e->cfg, p, e->model->cfg.max_position, err);
}

int lf_engine_check_params(const lf_engine *e, const lf_request_params *p, lf_error *err) {
    if (p->n_prompt < 1 || !p->prompt) return lf_fail(err, "prompt is empty: at least one token is needed");
    if (check_ids(e, p->prompt, p->n_prompt, "prompt", err)) return -1;
    if (p->n_stop_ids < 0 || (p->n_stop_ids > 0 && !p->stop_ids))
        return lf_fail(err, "stop ids: %d ids given without an array", p->n_stop_ids);
    if (check_ids(e, p->stop_ids, p->n_stop_ids, "stop", err)) return -1;
    if (p->max_tokens < 1) return lf_fail(err, "max_tokens must be >= 1 (got %d)", p->max_tokens);
    if (lf_context_check(e->model, p->n_prompt, err) < 0) return -1;
    if ((int)p->policy < 0 || (int)p->policy >= lf_policy_count())
        return lf_fail(err, "policy: unknown policy %d", (int)p->policy);
    if (lf_policy_is_budgeted(p->policy) && p->budget <= 0)
        return lf_fail(err, "--budget must be a positive number of slots for --policy %s (got %d)",
                       lf_policy_name(p->policy), p->budget);
    {
        const lf_policy_config pc = {.kind = p->policy, .budget = p->budget};
        /* (`full` caches are sized to fit the prompt: no capacity limit here) */
        if (lf_policy_check_prompt(&pc, p->budget, INT_MAX, p->n_prompt, err)) return -1;
    }
    lf_sampler probe;
    if (lf_sampler_init(&probe, &p->sampling, e->model->cfg.vocab_size, 0, err)) return -1;
    lf_sampler_free(&probe);
    return check_device(e, p, err);
}

static int grow(void **arr, int *cap, size_t elem, int need, lf_error *err) {
    if (need <= *cap) return 0;
    int nc = *cap ? 2 * *cap : 16;
    while (nc < need) nc *= 2;
    void *n = realloc(*arr, (size_t)nc * elem);
    if (!n) return lf_fail(err, "engine: out of memory");
    *arr = n;
    *cap = nc;
    return 0;
}

static int queue_push(lf_engine *e, lf_request *r, lf_error *err) {
    if (e->q_head > 0 && e->q_head + e->q_len == e->q_cap) { /* slide the live part to the front */
        memmove(e->queue, e->queue + e->q_head, (size_t)e->q_len * sizeof *e->queue);
        e->q_head = 0;
    }
    if (grow((void **)&e->queue, &e->q_cap, sizeof *e->queue, e->q_head + e->q_len + 1, err)) return -1;
    e->queue[e->q_head + e->q_len++] = r;
    return 0;
}

/* The next queued request that is still waiting (cancelled ones are
 * dropped), without taking it. */
static lf_request *queue_peek(lf_engine *e) {
    while (e->q_len > 0 && e->queue[e->q_head]->g.done) {
        e->q_head++;
        e->q_len--;
    }
    if (e->q_len == 0) e->q_head = 0;
    return e->q_len > 0 ? e->queue[e->q_head] : NULL;
}

/* Drop request r from the queue wherever it is (a cancelled one being released). */
static void queue_remove(lf_engine *e, const lf_request *r) {
    int kept = 0;
    for (int i = 0; i < e->q_len; i++)
        if (e->queue[e->q_head + i] != r) e->queue[e->q_head + kept++] = e->queue[e->q_head + i];
    e->q_len = kept;
}

static void queue_pop(lf_engine *e) {
    e->q_head++;
    e->q_len--;
}

static int copy_ids(int **dst, const int *src, int n) {
    if (n == 0) return 0;
    *dst = malloc((size_t)n * sizeof(int));
    if (!*dst) return -1;
    memcpy(*dst, src, (size_t)n * sizeof(int));
    return 0;
}

int lf_engine_submit_params(lf_engine *e, const lf_request_params *p, lf_error *err) {
    if (lf_engine_check_params(e, p, err)) return -1;
    if (grow((void **)&e->reqs, &e->cap_reqs, sizeof *e->reqs, e->n_reqs + 1, err)) return -1;
    lf_request *r = calloc(1, sizeof *r);
    if (!r) return lf_fail(err, "engine: out of memory");
    const int room = lf_context_check(e->model, p->n_prompt, err);
    r->max_tokens = p->max_tokens;
    r->max_new = room < p->max_tokens ? room : p->max_tokens;
    r->tokens = malloc((size_t)r->max_new * sizeof(int));
    if (!r->tokens || copy_ids(&r->prompt, p->prompt, p->n_prompt) ||
        copy_ids(&r->stop_ids, p->stop_ids, p->n_stop_ids)) {
        request_free(r);
        return lf_fail(err, "engine: out of memory");
    }
    r->n_stop_ids = p->n_stop_ids;
    r->ignore_eos = p->ignore_eos;
    r->sampling = p->sampling;
    r->policy = p->policy;
    r->budget = p->policy == LF_POLICY_FULL ? 0 : p->budget;
    r->place = -1;
    r->g.id = e->id_base + e->n_reqs;
    r->stream = p->stream >= 0 ? (uint64_t)p->stream : (uint64_t)r->g.id;
    r->g.prompt = r->prompt;
    r->g.n_prompt = p->n_prompt;
    r->g.tokens = r->tokens;
    if (queue_push(e, r, err)) {
        request_free(r);
        return -1;
    }
    e->reqs[e->n_reqs++] = r;
    return r->g.id;
}

int lf_engine_submit(lf_engine *e, const int *prompt, int n_prompt, lf_error *err) {
    lf_request_params p;
    lf_request_params_default(e, prompt, n_prompt, &p);
    return lf_engine_submit_params(e, &p, err);
}

static bool is_stop_id(const lf_request *r, int tok) {
    for (int i = 0; i < r->n_stop_ids; i++)
        if (r->stop_ids[i] == tok) return true;
    return false;
}

/* Record a sampled token; returns true when the sequence is finished. */
static bool push_token(lf_engine *e, lf_request *r, int tok, lf_token_callback cb, void *user) {
    r->tokens[r->g.n_tokens++] = tok;
    e->stats.generated_tokens++;
    if (!r->ignore_eos && lf_config_is_eos(&e->model->cfg, tok)) {
        r->g.done = true;
        r->g.finish_reason = "eos";
    } else if (is_stop_id(r, tok)) {
        r->g.done = true;
        r->g.finish_reason = "stop";
    } else if (r->g.n_tokens >= r->max_new) {
        r->g.done = true;
        r->g.finish_reason = "length";
        if (r->max_new < r->max_tokens) r->g.note = "stopped at the model's context (max_position_embeddings)";
    }
    if (r->place >= 0)
        e->be.ops->usage(e->be.self, r->place, (long)r->g.n_prompt + r->g.n_tokens - 1, &r->g.kv_tokens_peak,
                         &r->g.kv_bytes_in_use_peak);
    if (cb) cb(user, &r->g, tok);
    return r->g.done;
}

/* The cache policy of one request: the engine's sinks/recent/evict_every
 * when it runs the engine's policy, the policy's defaults otherwise; its own
 * budget (which sets what depends on it, e.g. H2O's and VATP's default
 * recent window, budget / 2). */
static lf_policy_config request_policy(const lf_engine *e, const lf_request *r) {
    lf_policy_config pc = e->cfg.policy;
    if (r->policy != pc.kind) {
        lf_policy_config_default(&pc);
        pc.kind = r->policy;
        pc.kv_dtype = e->cfg.policy.kv_dtype; /* the engine's, for every request */
    }
    pc.budget = r->budget;
    return pc;
}

/* Record the token sampled for r, or fail r alone when the sampler refused
 * (LF_SAMPLE_NONFINITE: NaN or Inf logits, on the CPU or the GPU). */
static int take_token(lf_engine *e, lf_request *r, int tok, lf_token_callback cb, void *user, lf_error *err) {
    if (tok == LF_SAMPLE_NONFINITE) return nonfinite_fail(r, err);
    push_token(e, r, tok, cb, user);
    return 0;
}

/* A decode step's token for running request r: a refusal finishes r with
 * "error" (compact_active frees it) and err names r; the others go on. */
static int step_token(lf_engine *e, lf_request *r, int tok, lf_token_callback cb, void *user, lf_error *err) {
    if (take_token(e, r, tok, cb, user, err) == 0) return 0;
    return mark_failed(r, err, false);
}

/* Open request r in a free place and run its prompt, which gives its first
 * token. */
static int admit(lf_engine *e, lf_request *r, lf_token_callback cb, void *user, lf_error *err) {
    const lf_backend_seq seq = {
        .prompt = r->prompt,
        .n_prompt = r->g.n_prompt,
        .max_new = r->max_new,
        .slots = cache_slots(r),
        .policy = request_policy(e, r),
        .sampling = r->sampling,
        .stream = r->stream,
    };
    lf_backend_mem mem = {.slots = 0};
    r->place = e->free_places[--e->n_free];
    const int rc = e->be.ops->open(e->be.self, r->place, &seq, &mem, err);
    r->g.kv_bytes = mem.kv_bytes;
    r->g.kv_aux_bytes = mem.aux_bytes;
    r->g.kv_slots = mem.slots;
    e->kv_bytes_now += mem.kv_bytes + mem.aux_bytes;
    if (e->kv_bytes_now > e->stats.kv_bytes_peak) e->stats.kv_bytes_peak = e->kv_bytes_now;
    if (rc) return -1;

    double t0 = lf_now_ms();
    int tok = 0;
    if (e->be.ops->prefill(e->be.self, r->place, &tok, err)) return -1;
    e->stats.prefill_ms += lf_now_ms() - t0;
    e->stats.prompt_tokens += r->g.n_prompt;
    return take_token(e, r, tok, cb, user, err);
}

/* Free request r's place (its cache and sampler) for the next request. */
static void free_slots(lf_engine *e, lf_request *r) {
    if (r->place < 0) return;
    e->be.ops->close(e->be.self, r->place);
    e->free_places[e->n_free++] = r->place;
    e->kv_bytes_now -= r->g.kv_bytes + r->g.kv_aux_bytes;
    r->place = -1;
}

/* Take request r out of the running set and free its cache. */
static void finish(lf_engine *e, lf_request *r) {
    free_slots(e, r);
    if (r->running) {
        for (int i = 0; i < e->n_active; i++)
            if (e->active[i] == r) {
                e->active[i] = e->active[--e->n_active];
                break;
            }
        r->running = false;
    }
}


/* Keep the running requests that are not done, in order; free the rest. */
static void compact_active(lf_engine *e) {
    int kept = 0;
    for (int i = 0; i < e->n_active; i++) {
        lf_request *r = e->active[i];
        if (r->g.done) {
            r->running = false;
            free_slots(e, r);
        } else {
            e->active[kept++] = r;
        }
    }
    e->n_active = kept;
}

/* Every running sequence fails: a batched forward failed for all of them. */
static int fail_all_active(lf_engine *e, lf_error *err) {
    for (int i = 0; i < e->n_active; i++) mark_failed(e->active[i], err, true);
    compact_active(e);
    return -1;
}

/* Move the queue's head r into the running set and admit it (its prefill);
 * when that fails, r finishes with "error" and err names it. */
static int start_request(lf_engine *e, lf_request *r, lf_token_callback cb, void *user, lf_error *err) {
    queue_pop(e);
    r->running = true;
    e->active[e->n_active++] = r;
    if (admit(e, r, cb, user, err) == 0) return 0;
    mark_failed(r, err, false);
    finish(e, r);
    return -1;
}

/* Longest prompt among the queued requests (0 when none waits). */
static int queued_max_prompt(const lf_engine *e) {
    int max_prompt = 0;
    for (int i = 0; i < e->q_len; i++) {
        const lf_request *r = e->queue[e->q_head + i];
        if (!r->g.done && r->g.n_prompt > max_prompt) max_prompt = r->g.n_prompt;
    }
    return max_prompt;
}

/* Slots every place of a planned backend (the GPU pool) needs for prompts
 * of up to max_prompt tokens: the most any queued request needs (its budget
 * for a budgeted policy, capped at what its sequence can ever hold; prompt +
 * max_tokens for `full`, so that `full` never runs out of slots); with
 * nothing queued, what a request with the engine's settings and a
 * max_prompt-token prompt needs. A request with a smaller budget uses that
 * many of its place's slots. */
static int plan_capacity(const lf_engine *e, int max_prompt) {
    long need = (long)max_prompt + e->cfg.max_tokens;
    if (need > 1 << 30) need = 1 << 30;
    long cap = 0;
    for (int i = 0; i < e->q_len; i++) {
        const lf_request *r = e->queue[e->q_head + i];
        if (!r->g.done && cache_slots(r) > cap) cap = cache_slots(r);
    }
    if (e->cfg.policy.kind == LF_POLICY_FULL && need > cap) return (int)need;
    if (cap > 0) return (int)cap;
    return e->cfg.policy.budget < need ? e->cfg.policy.budget : (int)need;
}

/* Plan the backend for prompts of up to max_prompt tokens (a backend with
 * fixed places has nothing to plan); the backend keeps its current plan
 * when that holds them. Only called with no sequence running, so a
 * replan loses nothing. */
static int plan_for(lf_engine *e, int max_prompt, lf_error *err) {
    if (!e->be.ops->plan) return 0;
    const lf_backend_plan p = {.max_prompt = max_prompt, .capacity = plan_capacity(e, max_prompt)};
    const int rc = e->be.ops->plan(e->be.self, &p, err);
    lf_backend_info now;
    e->be.ops->info(e->be.self, &now);
    /* a new pool (or none, after a failure) resets the free places; a kept
     * one keeps them as they are */
    if ((rc || now.plan_id != e->plan.plan_id || now.places != e->plan.places) && adopt_plan(e, rc ? NULL : err)) {
        e->plan.plan_id = ~now.plan_id; /* adopt again at the next plan */
        return -1;
    }
    return rc;
}

/* Does the current plan hold request r (its prompt and its slots)? */
static bool plan_fits(const lf_engine *e, const lf_request *r) {
    const lf_backend_info *p = &e->plan;
    return p->places > 0 && (p->max_prompt == 0 || r->g.n_prompt <= p->max_prompt) &&
           (p->capacity == 0 || cache_slots(r) <= p->capacity);
}

/* A free place takes the next queued request (in order: a request the plan
 * cannot hold waits until no sequence runs, then the backend is replanned).
 * Its prefill runs while the other sequences wait for this one prefill. */
static int admit_queued(lf_engine *e, lf_token_callback cb, void *user, lf_error *err) {
    lf_request *r = queue_peek(e);
    if (r && !plan_fits(e, r) && e->n_active == 0 && plan_for(e, queued_max_prompt(e), err)) {
        queue_pop(e);
        return mark_failed(r, err, false);
    }
    int rc = 0;
    while (e->n_free > 0 && (r = queue_peek(e)) && plan_fits(e, r))
        if (start_request(e, r, cb, user, err)) {
            rc = -1;
            break; /* err names this request; the others wait for the next step */
        }
    compact_active(e); /* a request done at its first token leaves at once */
    return rc;
}

int lf_engine_step(lf_engine *e, lf_token_callback cb, void *user, lf_error *err) {
    if (admit_queued(e, cb, user, err)) return -1;
    const int n = e->n_active;
    if (n == 0) return 0;
    for (int i = 0; i < n; i++) {
        lf_request *r = e->active[i];
        e->step_places[i] = r->place;
        e->step_tokens[i] = r->tokens[r->g.n_tokens - 1];
        e->step_pos[i] = r->g.n_prompt + r->g.n_tokens - 1;
        if (!e->be.ops->room(e->be.self, r->place, e->step_pos[i])) { /* never by the sizing: refuse, do not drop tokens */
            lf_fail(err, "request %d: KV cache of %d slots is full", r->g.id, r->g.kv_slots);
            return fail_all_active(e, err);
        }
    }
    double t0 = lf_now_ms();
    if (e->be.ops->step(e->be.self, n, e->step_places, e->step_tokens, e->step_pos, e->step_out, err))
        return fail_all_active(e, err);
    e->stats.decode_tokens += n;
    int rc = 0;
    for (int i = 0; i < n; i++) {
        if (step_token(e, e->active[i], e->step_out[i], cb, user, err)) rc = -1;
    }
    compact_active(e);
    e->stats.decode_ms += lf_now_ms() - t0;
    e->stats.decode_steps++;
    return rc;
}

int lf_engine_pending(const lf_engine *e, int *queued, int *running) {
    int q = 0;
    for (int i = 0; i < e->q_len; i++) q += !e->queue[e->q_head + i]->g.done;
    if (queued) *queued = q;
    if (running) *running = e->n_active;
    return q + e->n_active;
}

int lf_engine_cancel(lf_engine *e, int id, lf_error *err) {
    lf_request *r = find_request(e, id);
    if (!r) return lf_fail(err, "request %d: unknown or already released", id);
    if (r->g.done) return 0;
    r->g.done = true;
    r->g.finish_reason = "cancelled";
    finish(e, r); /* a queued request is dropped from the queue by queue_peek */
    return 0;
}

int lf_engine_release(lf_engine *e, int id, lf_error *err) {
    lf_request *r = find_request(e, id);
    if (!r) return lf_fail(err, "request %d: unknown or already released", id);
    if (!r->g.done) return lf_fail(err, "request %d is still %s: cancel it first", id, r->running ? "running" : "queued");
    /* a finished request may still sit in the queue (cancelled while queued) */
    queue_remove(e, r);
    request_free(r);
    e->reqs[id - e->id_base] = NULL;
    int lead = 0;
    while (lead < e->n_reqs && !e->reqs[lead]) lead++;
    if (lead > 0) {
        memmove(e->reqs, e->reqs + lead, (size_t)(e->n_reqs - lead) * sizeof *e->reqs);
        e->n_reqs -= lead;
        e->id_base += lead;
    }
    return 0;
}

int lf_engine_run(lf_engine *e, lf_token_callback cb, void *user, lf_error *err) {
    /* plan once for every queued prompt, as a batch run always did */
    if (e->n_active == 0 && queued_max_prompt(e) > 0 && plan_for(e, queued_max_prompt(e), err)) return -1;
    while (lf_engine_pending(e, NULL, NULL) > 0)
        if (lf_engine_step(e, cb, user, err)) {
            /* a batch run stops at the first failure: nothing keeps running */
            while (e->n_active > 0) lf_engine_cancel(e, e->active[0]->g.id, NULL);
            return -1;
        }
    return 0;
}

int lf_engine_reserve(lf_engine *e, int max_prompt, lf_error *err) {
    if (max_prompt < 1) return lf_fail(err, "engine: max_prompt must be >= 1 (got %d)", max_prompt);
    if (!e->be.ops->plan) return 0; /* fixed places (CPU): nothing to plan */
    if (e->n_active > 0) return lf_fail(err, "engine: lf_engine_reserve while sequences run");
    int q = queued_max_prompt(e);
    return plan_for(e, q > max_prompt ? q : max_prompt, err);
}

size_t lf_kv_bytes_for(const lf_model *m, int slots, lf_device device, lf_kv_dtype dtype) {
    const lf_config *c = &m->cfg;
    (void)device; /* the same bytes on either device (the CUDA cache stores bf16 or fp8 rows as the CPU's) */
    return (size_t)c->n_layers * (size_t)slots * lf_kv_token_bytes(dtype, c->n_kv_heads, c->head_dim);
}

const lf_generation *lf_engine_result(const lf_engine *e, int id) {
    const lf_request *r = find_request(e, id);
    return r ? &r->g : NULL;
}

void lf_engine_stats_get(const lf_engine *e, lf_engine_stats *s) {
    *s = e->stats;
    e->be.ops->stats(e->be.self, s); /* max_batch, the device's name and plan */
}
