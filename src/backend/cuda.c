/* The CUDA backend behind the engine's interface (backend/backend.h): a
 * place is an entry of the GPU pool (cuda/cuda_forward.h); the KV policy
 * and the sampling run on the GPU. The pool is planned on the first
 * lf_backend_ops.plan, when the queued prompts are known; only then is the
 * plugin loaded (src/backend/cuda_loader.c). Part of the library (and of the
 * plugin, where the lf_cuda_* calls reach src/cuda directly). */
#ifdef LF_HAVE_CUDA
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/error.h"
#include "cuda/cuda_forward.h"

typedef struct cuda_place {
    int budget;      /* lf_cuda_prefill's budget: 0 = all the entry's slots (full) */
    int slots;       /* slots this sequence may use */
    uint64_t stream; /* its sampling stream */
    const int *prompt;
    int n_prompt;
} cuda_place;

typedef struct cuda_backend {
    const lf_model *model;
    lf_engine_config cfg;
    lf_cuda_backend *gpu; /* NULL until planned */
    lf_cuda_info info;
    int max_prompt;       /* longest prompt the pool was planned for */
    cuda_place *place;    /* [info.entries] */
    int *unused_tokens;   /* [info.entries] what step_logits's decode samples (not used) */
    unsigned plans;       /* pools made so far (lf_backend_info.plan_id) */
} cuda_backend;

static void drop(cuda_backend *b) {
    lf_cuda_backend_free(b->gpu);
    b->gpu = NULL;
    free(b->place);
    b->place = NULL;
    free(b->unused_tokens);
    b->unused_tokens = NULL;
    memset(&b->info, 0, sizeof b->info);
    b->max_prompt = 0;
}

/* Create the pool for p, or keep the current one when it holds p. */
static int cuda_plan(void *self, const lf_backend_plan *p, lf_error *err) {
    cuda_backend *b = self;
    if (b->gpu && p->max_prompt <= b->max_prompt && p->capacity <= b->info.capacity) return 0;
    drop(b);
    lf_cuda_options o;
    memset(&o, 0, sizeof o);
    o.policy = b->cfg.policy;
    o.capacity = p->capacity;
    o.max_prompt = p->max_prompt;
    o.max_seqs = b->cfg.max_seqs;
    o.sampling = b->cfg.sampling;
    o.mem_fraction = b->cfg.gpu_mem_fraction;
    o.no_graphs = false;
    if (lf_cuda_backend_create(b->model, &o, &b->gpu, err)) {
        b->gpu = NULL;
        return -1;
    }
    lf_cuda_backend_info(b->gpu, &b->info);
    b->max_prompt = p->max_prompt;
    b->plans++;
    const int n = b->info.entries;
    if (n < 1) {
        lf_fail(err, "--device cuda: the memory plan admits no sequence (%s)", b->info.plan);
        drop(b);
        return -1;
    }
    b->place = calloc((size_t)n, sizeof *b->place);
    b->unused_tokens = malloc((size_t)n * sizeof *b->unused_tokens);
    if (!b->place || !b->unused_tokens) {
        drop(b);
        return lf_fail(err, "engine: out of memory for a batch of %d", n);
    }
    return 0;
}

static void cuda_info(const void *self, lf_backend_info *info) {
    const cuda_backend *b = self;
    memset(info, 0, sizeof *info);
    if (!b->gpu) return;
    info->places = b->info.entries;
    info->capacity = b->info.capacity;
    info->max_prompt = b->max_prompt;
    info->kv_bytes_per_place = b->info.kv_bytes_per_entry;
    info->aux_bytes_per_place = b->info.aux_bytes_per_entry;
    info->plan_id = b->plans;
}

/* What the GPU pool can run: one policy and one sampling configuration for
 * every entry (chosen when the pool is planned), per-request budgets up to
 * the entries' capacity, prompts up to the planned prefill length. */
static int cuda_check(const void *self, const lf_engine_config *cfg, const lf_request_params *p, int max_position,
                      lf_error *err) {
    const cuda_backend *b = self;
    if (p->policy != cfg->policy.kind)
        return lf_fail(err, "kv_policy %s: the GPU pool runs one policy for every sequence (%s, from --policy)",
                       lf_policy_name(p->policy), lf_policy_name(cfg->policy.kind));
    const lf_sampling *x = &p->sampling, *y = &cfg->sampling;
    if (x->temperature != y->temperature || x->top_k != y->top_k || x->top_p != y->top_p || x->min_p != y->min_p ||
        x->repetition_penalty != y->repetition_penalty || x->seed != y->seed)
        return lf_fail(err, "sampling: the GPU pool samples every sequence with the server's settings (temperature, "
                            "top_p, top_k, min_p, repetition_penalty, seed); a request cannot change them on --device "
                            "cuda");
    if (!b->gpu) return 0;
    if (p->n_prompt > b->max_prompt)
        return lf_fail(err, "prompt of %d tokens is longer than the GPU pool was planned for (%d)", p->n_prompt,
                       b->max_prompt);
    const int room = max_position - p->n_prompt;
    long need = (long)p->n_prompt + (p->max_tokens < room ? p->max_tokens : room);
    long slots = p->policy == LF_POLICY_FULL ? need : (p->budget < need ? p->budget : need);
    if (slots > b->info.capacity)
        return lf_fail(err, "%s %ld slots exceeds the GPU pool's %d slots per sequence",
                       p->policy == LF_POLICY_FULL ? "prompt + max_tokens needs" : "kv_budget of", slots,
                       b->info.capacity);
    return 0;
}

static int cuda_open(void *self, int place, const lf_backend_seq *s, lf_backend_mem *mem, lf_error *err) {
    (void)err;
    cuda_backend *b = self;
    cuda_place *p = &b->place[place];
    const bool full = s->policy.kind == LF_POLICY_FULL;
    p->budget = full ? 0 : s->slots;
    p->slots = full ? b->info.capacity : s->slots;
    p->stream = s->stream;
    p->prompt = s->prompt;
    p->n_prompt = s->n_prompt;
    mem->kv_bytes = b->info.kv_bytes_per_entry;
    mem->aux_bytes = b->info.aux_bytes_per_entry;
    mem->slots = p->slots;
    return 0;
}

/* logits (may be NULL): the prompt's last row, downloaded before sampling */
static int prefill_into(cuda_backend *b, int place, int *token, float *logits, lf_error *err) {
    const cuda_place *p = &b->place[place];
    return lf_cuda_prefill(b->gpu, place, p->prompt, p->n_prompt, p->budget, p->stream, token, logits, err);
}

static int cuda_prefill(void *self, int place, int *token, lf_error *err) {
    return prefill_into(self, place, token, NULL, err);
}

/* The GPU samples anyway (its graphs end with the sampling kernel); the
 * logits are copied before it, and its token is dropped. */
static int cuda_prefill_logits(void *self, int place, float *logits, lf_error *err) {
    int unused;
    return prefill_into(self, place, &unused, logits, err);
}

/* `full` has a slot for every position below the capacity; a budgeted
 * policy always makes room. */
static int cuda_room(const void *self, int place, int pos) {
    const cuda_backend *b = self;
    return b->place[place].budget != 0 || pos < b->info.capacity;
}

static int cuda_step(void *self, int n, const int *places, const int *tokens, const int *pos, int *out,
                     lf_error *err) {
    cuda_backend *b = self;
    return lf_cuda_decode(b->gpu, n, places, tokens, pos, out, NULL, err);
}

static int cuda_step_logits(void *self, int n, const int *places, const int *tokens, const int *pos, float *logits,
                            lf_error *err) {
    cuda_backend *b = self;
    return lf_cuda_decode(b->gpu, n, places, tokens, pos, b->unused_tokens, logits, err);
}

/* Derived instead of read from the device: after the prefill and each decode
 * step the entry holds the prompt (what the policy kept of it) plus the
 * generated tokens written so far, never more than its slots. For a prompt
 * longer than the slots this is an upper bound (SnapKV may keep a few slots
 * fewer). */
static void cuda_usage(const void *self, int place, long written, size_t *tokens_peak, size_t *bytes_in_use_peak) {
    const cuda_backend *b = self;
    const long slots = b->place[place].slots;
    long held = written > slots ? slots : written;
    if ((size_t)held > *tokens_peak) *tokens_peak = (size_t)held;
    size_t per_slot = b->info.capacity > 0 ? b->info.kv_bytes_per_entry / (size_t)b->info.capacity : 0;
    *bytes_in_use_peak = *tokens_peak * per_slot;
}

static void cuda_close(void *self, int place) {
    cuda_backend *b = self;
    if (b->place) memset(&b->place[place], 0, sizeof b->place[place]);
}

static void cuda_stats(const void *self, lf_engine_stats *s) {
    const cuda_backend *b = self;
    if (!b->gpu) return;
    const lf_cuda_info *in = &b->info;
    s->max_batch = in->entries;
    s->capacity = in->capacity;
    s->gpu_peak_bytes = lf_cuda_backend_peak_bytes(b->gpu);
    s->gpu_weight_bytes = in->weight_bytes;
    s->gpu_kv_bytes_per_seq = in->kv_bytes_per_entry;
    s->gpu_aux_bytes_per_seq = in->aux_bytes_per_entry;
    snprintf(s->device_name, sizeof s->device_name, "%s", in->device_name);
    snprintf(s->gpu_plan, sizeof s->gpu_plan, "%s", in->plan);
}

static void cuda_destroy(void *self) {
    cuda_backend *b = self;
    if (!b) return;
    drop(b);
    free(b);
}

static const lf_backend_ops cuda_ops = {
    .plan = cuda_plan,
    .info = cuda_info,
    .check = cuda_check,
    .open = cuda_open,
    .prefill = cuda_prefill,
    .room = cuda_room,
    .step = cuda_step,
    .usage = cuda_usage,
    .valid_slots = NULL,
    .close = cuda_close,
    .stats = cuda_stats,
    .destroy = cuda_destroy,
    .prefill_logits = cuda_prefill_logits,
    .step_logits = cuda_step_logits,
    .one_policy = true,
};

int lf_backend_cuda_create(const lf_model *m, const lf_engine_config *cfg, lf_backend *out, lf_error *err) {
    out->ops = NULL;
    out->self = NULL;
    cuda_backend *b = calloc(1, sizeof *b);
    if (!b) return lf_fail(err, "engine: out of memory");
    b->model = m;
    b->cfg = *cfg;
    out->ops = &cuda_ops;
    out->self = b;
    return 0;
}
#else
typedef int lf_backend_cuda_unused; /* (a translation unit needs a declaration) */
#endif
