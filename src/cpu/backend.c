/* The CPU backend behind the engine's interface (backend/backend.h): the
 * CPU forward (cpu/forward.h) with one lf_kv_cache, one sampler and one
 * token history (for the repetition penalty) per place; sampling on the
 * host logits. The places are fixed at creation (max_seqs); the caches'
 * K/V buffers go back to a free list of as many (kv/buffers.h) when a
 * sequence ends, and the next sequence's cache takes one from there. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/error.h"
#include "cpu/forward.h"
#include "cpu/kernels.h"
#include "kv/buffers.h"
#include "kv/cache.h"
#include "model/model.h"
#include "sampler/sampler.h"

typedef struct cpu_place {
    lf_kv_cache cache;
    bool has_cache;
    lf_sampler sampler;
    bool has_sampler;
    int *history; /* prompt + generated: [n_prompt + max_new] */
    int n_history;
    const int *prompt; /* the engine's copy, for prefill */
    int n_prompt;
} cpu_place;

typedef struct cpu_backend {
    const lf_model *model;
    lf_cpu_ctx *ctx;
    int places;
    cpu_place *place;     /* [places] */
    float *logits;        /* [places][vocab] */
    lf_kv_cache **caches; /* [places] step scratch */
    lf_kv_buffers buffers; /* the caches' K/V buffers, at most `places` */
} cpu_backend;

static void cpu_info(const void *self, lf_backend_info *info) {
    const cpu_backend *b = self;
    memset(info, 0, sizeof *info);
    info->places = b->places;
}

static void cpu_close(void *self, int place) {
    cpu_place *p = &((cpu_backend *)self)->place[place];
    if (p->has_cache) lf_kv_cache_free(&p->cache);
    if (p->has_sampler) lf_sampler_free(&p->sampler);
    free(p->history);
    memset(p, 0, sizeof *p);
}

static int cpu_open(void *self, int place, const lf_backend_seq *s, lf_backend_mem *mem, lf_error *err) {
    cpu_backend *b = self;
    cpu_place *p = &b->place[place];
    const lf_config *c = &b->model->cfg;
    memset(mem, 0, sizeof *mem);
    p->history = malloc((size_t)(s->n_prompt + s->max_new) * sizeof(int));
    if (!p->history) return lf_fail(err, "engine: out of memory");
    memcpy(p->history, s->prompt, (size_t)s->n_prompt * sizeof(int));
    p->n_history = s->n_prompt;
    p->prompt = s->prompt;
    p->n_prompt = s->n_prompt;
    if (lf_sampler_init(&p->sampler, &s->sampling, c->vocab_size, s->stream, err)) return -1;
    p->has_sampler = true;
    if (lf_kv_cache_init_from(&p->cache, c, &s->policy, s->slots, &b->buffers, err)) return -1;
    p->has_cache = true;
    mem->kv_bytes = lf_kv_bytes_for(b->model, p->cache.capacity, LF_DEVICE_CPU, p->cache.dtype);
    mem->slots = p->cache.capacity;
    mem->aux_bytes = p->cache.bytes > mem->kv_bytes ? p->cache.bytes - mem->kv_bytes : 0;
    return 0;
}

/* Sample the next token of place p from its logits and record it in its history. */
static int sample(cpu_place *p, float *logits) {
    int tok = lf_sampler_sample(&p->sampler, logits, p->history, p->n_history);
    return tok < 0 ? LF_BACKEND_NONFINITE : tok;
}

static int cpu_prefill_logits(void *self, int place, float *logits, lf_error *err) {
    cpu_backend *b = self;
    cpu_place *p = &b->place[place];
    return lf_cpu_prefill(b->ctx, b->model, &p->cache, p->prompt, p->n_prompt, logits, err);
}

static int cpu_prefill(void *self, int place, int *token, lf_error *err) {
    cpu_backend *b = self;
    if (cpu_prefill_logits(self, place, b->logits, err)) return -1;
    *token = sample(&b->place[place], b->logits);
    return 0;
}

static int cpu_room(const void *self, int place, int pos) {
    (void)pos;
    return lf_kv_cache_room(&((const cpu_backend *)self)->place[place].cache) > 0;
}

static int cpu_step_logits(void *self, int n, const int *places, const int *tokens, const int *pos, float *logits,
                           lf_error *err) {
    cpu_backend *b = self;
    for (int i = 0; i < n; i++) b->caches[i] = &b->place[places[i]].cache;
    return lf_cpu_decode(b->ctx, b->model, b->caches, tokens, pos, n, logits, err);
}

static int cpu_step(void *self, int n, const int *places, const int *tokens, const int *pos, int *out,
                    lf_error *err) {
    cpu_backend *b = self;
    const int V = b->model->cfg.vocab_size;
    if (cpu_step_logits(self, n, places, tokens, pos, b->logits, err)) return -1;
    for (int i = 0; i < n; i++) {
        cpu_place *p = &b->place[places[i]];
        p->history[p->n_history++] = tokens[i]; /* the token this step took */
        out[i] = sample(p, b->logits + (size_t)i * V);
    }
    return 0;
}

static void cpu_usage(const void *self, int place, long written, size_t *tokens_peak, size_t *bytes_in_use_peak) {
    (void)written;
    const lf_kv_cache *c = &((const cpu_backend *)self)->place[place].cache;
    if ((size_t)c->peak_valid > *tokens_peak) *tokens_peak = (size_t)c->peak_valid;
    *bytes_in_use_peak = lf_kv_cache_peak_bytes_in_use(c);
}

static long cpu_valid_slots(const void *self, int place) {
    return ((const cpu_backend *)self)->place[place].cache.total_valid;
}

static void cpu_stats(const void *self, lf_engine_stats *s) {
    const cpu_backend *b = self;
    s->max_batch = b->places;
    s->kv_buffers_allocated = b->buffers.allocated;
    s->kv_buffers_reused = b->buffers.reused;
    snprintf(s->device_name, sizeof s->device_name, "cpu");
}

static void cpu_destroy(void *self) {
    cpu_backend *b = self;
    if (!b) return;
    if (b->place)
        for (int i = 0; i < b->places; i++) cpu_close(b, i);
    free(b->place);
    lf_kv_buffers_free(&b->buffers);
    lf_cpu_ctx_free(b->ctx);
    free(b->logits);
    free(b->caches);
    free(b);
}

static const lf_backend_ops cpu_ops = {
    .plan = NULL,
    .info = cpu_info,
    .check = NULL,
    .open = cpu_open,
    .prefill = cpu_prefill,
    .room = cpu_room,
    .step = cpu_step,
    .usage = cpu_usage,
    .valid_slots = cpu_valid_slots,
    .close = cpu_close,
    .stats = cpu_stats,
    .destroy = cpu_destroy,
    .prefill_logits = cpu_prefill_logits,
    .step_logits = cpu_step_logits,
    .one_policy = false,
};

/* The public names of the CPU kernels' thread count (cpu/kernels.c). */
void lf_threads_set(int n) { lf_cpu_set_threads(n); }
int lf_threads_get(void) { return lf_cpu_threads(); }

int lf_backend_cpu_create(const lf_model *m, const lf_engine_config *cfg, lf_backend *out, lf_error *err) {
    out->ops = NULL;
    out->self = NULL;
    lf_cpu_set_threads(cfg->threads);
    const int B = cfg->max_seqs, V = m->cfg.vocab_size;
    cpu_backend *b = calloc(1, sizeof *b);
    if (!b) return lf_fail(err, "engine: out of memory");
    b->model = m;
    b->places = B;
    b->place = calloc((size_t)B, sizeof *b->place);
    b->logits = malloc((size_t)B * V * sizeof(float));
    b->caches = malloc((size_t)B * sizeof *b->caches);
    if (!b->place || !b->logits || !b->caches || lf_kv_buffers_init(&b->buffers, B)) {
        cpu_destroy(b);
        return lf_fail(err, "engine: out of memory for a batch of %d", B);
    }
    if (lf_cpu_ctx_create(m, B, &b->ctx, err)) {
        cpu_destroy(b);
        return -1;
    }
    out->ops = &cpu_ops;
    out->self = b;
    return 0;
}
