/* Teacher-forced perplexity through the KV cache (perplexity.h). */
#include "eval/perplexity.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/error.h"
#include "kv/policy.h"
#include "model/model.h"

void lf_ppl_result_free(lf_ppl_result *r) {
    free(r->pos);
    free(r->top_id);
    free(r->top_logit);
    memset(r, 0, sizeof *r);
}

/* One window: tokens [begin, end), scoring the tokens from score_from on;
 * out is the index of its first scored position in the result. */
typedef struct ppl_window {
    int begin, end, score_from, out;
} ppl_window;

/* The windows, in the order of the transformers perplexity guide: starts every
 * stride tokens until one reaches the end; each scores what the previous one
 * did not, never its own first token nor one before score_from. A window with
 * nothing to score is left out. Returns the count; w (may be NULL) receives
 * them. */
static int plan_windows(int n, int ctx, int stride, int max_windows, int score_from, ppl_window *w,
                        int *n_scored) {
    int count = 0, prev_end = 0, scored = 0;
    for (int begin = 0; begin < n; begin += stride) {
        int end = n - begin < ctx ? n : begin + ctx;
        int from = prev_end > begin + 1 ? prev_end : begin + 1;
        if (from < score_from) from = score_from;
        prev_end = end;
        if (from < end && (max_windows <= 0 || count < max_windows)) {
            if (w) w[count] = (ppl_window){begin, end, from, scored};
            scored += end - from;
            count++;
        }
        if (end == n) break;
    }
    *n_scored = scored;
    return count;
}

void lf_ppl_plan(int n, int ctx, int stride, int max_windows, int score_from, int *n_windows, int *n_scored) {
    *n_windows = plan_windows(n, ctx, stride, max_windows, score_from, NULL, n_scored);
}

/* Keep the k largest of logits (descending; ties: lower id first). */
static void top_k(const float *logits, int V, int k, int32_t *id, float *val) {
    int have = 0;
    for (int i = 0; i < V; i++) {
        float x = logits[i];
        if (have == k && !(x > val[k - 1])) continue;
        int j = have < k ? have++ : k - 1;
        while (j > 0 && x > val[j - 1]) {
            val[j] = val[j - 1];
            id[j] = id[j - 1];
            j--;
        }
        val[j] = x;
        id[j] = i;
    }
}

/* KL(P || Q) over P's top k plus one bucket for the rest of the vocabulary:
 * P from the base's logits and log-sum-exp, Q from this run's logits at the
 * same ids. By the log-sum inequality it is at most the full KL. */
static double kl_topk(const int32_t *id, const float *base_logit, float base_lse, int k, const float *logits,
                      double lse) {
    double kl = 0, p_sum = 0, q_sum = 0;
    for (int i = 0; i < k; i++) {
        double lp = (double)base_logit[i] - base_lse, lq = (double)logits[id[i]] - lse;
        double p = exp(lp);
        kl += p * (lp - lq);
        p_sum += p;
        q_sum += exp(lq);
    }
    double p_rest = 1.0 - p_sum, q_rest = 1.0 - q_sum;
    if (p_rest > 1e-12) kl += p_rest * (log(p_rest) - log(q_rest > 1e-300 ? q_rest : 1e-300));
    return kl > 0 ? kl : 0; /* rounding of a zero divergence */
}

/* Score one row of logits predicting token `target` into r's position i.
 * Returns -1 on non-finite logits. */
static int score_row(const float *logits, int V, int target, const lf_ppl_result *base, lf_ppl_result *r,
                     int i) {
    float mx = logits[0];
    int am = 0;
    for (int v = 1; v < V; v++)
        if (logits[v] > mx) mx = logits[v], am = v;
    if (!isfinite(mx)) return -1;
    double sum = 0;
    for (int v = 0; v < V; v++) sum += exp((double)logits[v] - mx);
    double lse = mx + log(sum);
    if (!isfinite(lse)) return -1;
    lf_ppl_pos *p = &r->pos[i];
    p->argmax = am;
    p->lse = (float)lse;
    p->nll = (float)(lse - logits[target]);
    p->kl = 0;
    if (r->k > 0) top_k(logits, V, r->k, r->top_id + (size_t)i * r->k, r->top_logit + (size_t)i * r->k);
    if (base) {
        const size_t o = (size_t)i * base->k;
        p->kl = (float)kl_topk(base->top_id + o, base->top_logit + o, base->pos[i].lse, base->k, logits, lse);
    }
    return 0;
}

/* One unit of work: a window under one of the policies (its own cache, in
 * a place of the backend). */
typedef struct ppl_unit {
    const ppl_window *w;
    int run; /* index into the policies and results */
} ppl_unit;

/* A backend and the buffers of the units it decodes together. */
typedef struct ppl_group {
    lf_backend be;
    int places;     /* units decoded together: the backend's places (at most the batch) */
    int capacity;   /* slots of every place (the GPU pool); 0: each cache sized on its own (CPU) */
    int n_open;     /* places 0..n_open-1 were opened (close is due even after a failed open) */
    int *act;       /* [places] the active units of a step (unit s runs in place s) */
    int *tok, *pos; /* [places] their input token and position */
    float *logits;  /* [places][V] */
} ppl_group;

/* Slots a window's cache needs: every input token for full, else the
 * budget (at most the window's inputs, as the engine sizes a request). */
static int cache_slots(const lf_policy_config *pc, const ppl_window *w) {
    int need = w->end - w->begin;
    if (pc->kind == LF_POLICY_FULL) return need;
    return pc->budget < need ? pc->budget : need;
}

/* Slots a unit opens with. In a pool of `capacity` slots per place (the GPU)
 * a budgeted run takes its budget, capped at the capacity: when that cap
 * applies the window fits whole, so nothing is evicted either way, and the
 * policy's sinks stay below its slots as on the CPU. */
static int unit_slots(const lf_policy_config *pc, const ppl_window *w, int capacity) {
    if (capacity == 0) return cache_slots(pc, w);
    if (pc->kind == LF_POLICY_FULL) return capacity;
    return pc->budget < capacity ? pc->budget : capacity;
}

/* The index in the result of the token window w's input at offset t
 * predicts (token begin+t+1); -1 when the window does not score it. */
static int scored_slot(const ppl_window *w, int t) {
    int idx = w->begin + t + 1;
    return idx < w->score_from ? -1 : w->out + (idx - w->score_from);
}

/* Score the rows of one step: row a holds the logits of unit u[act[a]]'s
 * input at offset t. Rows are scored in parallel (each writes its own
 * positions); the first failing row (in row order) names the error. */
static int score_rows(const lf_ppl_params *p, const ppl_unit *u, const int *act, int na, int t, const float *logits,
                      int V, const int *tokens, lf_ppl_result *out, lf_error *err) {
    for (int a = 0; a < na; a++) {
        const ppl_unit *us = &u[act[a]];
        int i = scored_slot(us->w, t), idx = us->w->begin + t + 1;
        if (i < 0) continue;
        out[us->run].pos[i].index = idx;
        if (p->base && p->base->pos[i].index != idx)
            return lf_fail(err, "the KL base scored token %d at its position %d, this run token %d",
                           p->base->pos[i].index, i, idx);
    }
    int bad = INT_MAX;
#pragma omp parallel for schedule(dynamic, 1) reduction(min : bad) if (na > 1)
    for (int a = 0; a < na; a++) {
        const ppl_unit *us = &u[act[a]];
        int i = scored_slot(us->w, t);
        if (i >= 0 && score_row(logits + (size_t)a * V, V, tokens[us->w->begin + t + 1], p->base, &out[us->run], i))
            bad = a < bad ? a : bad;
    }
    if (bad != INT_MAX)
        return lf_fail(err, "logits are NaN or Inf at token %d (check the model's weights)",
                       u[act[bad]].w->begin + t + 1);
    return 0;
}

/* Open unit s's sequence in place s: the window's first token as its
 * prompt, the rest as tokens to come. */
static int open_unit(ppl_group *g, int s, const int *tokens, const lf_policy_config *run, const ppl_window *w,
                     lf_error *err) {
    lf_backend_seq seq;
    memset(&seq, 0, sizeof seq);
    seq.prompt = tokens + w->begin;
    seq.n_prompt = 1;
    seq.max_new = w->end - w->begin;
    seq.slots = unit_slots(run, w, g->capacity);
    seq.policy = *run;
    if (run->kind == LF_POLICY_FULL) seq.policy.budget = 0;
    lf_sampling_default(&seq.sampling);
    seq.sampling.temperature = 0; /* nothing is sampled; the CPU's sampler checks its settings */
    lf_backend_mem mem;
    g->n_open = s + 1;
    return g->be.ops->open(g->be.self, s, &seq, &mem, err);
}

static void close_units(ppl_group *g) {
    for (int s = 0; s < g->n_open; s++) g->be.ops->close(g->be.self, s);
    g->n_open = 0;
}

/* Count the positions unit us scores at offset t. */
static void count_scored(const ppl_unit *us, int t, long *done) {
    if (us->w->begin + t + 1 >= us->w->score_from) (*done)++;
}

/* Run units u[0..nu) (nu <= places) together: prefill each window's first
 * token, then decode step by step while any unit has inputs left. */
static int run_group(const int *tokens, const lf_ppl_params *p, const lf_policy_config *pols, const ppl_unit *u,
                     int nu, int V, ppl_group *g, lf_ppl_result *out, long *done, long total, lf_error *err) {
    const lf_backend_ops *ops = g->be.ops;
    int rc = 0;
    for (int s = 0; rc == 0 && s < nu; s++) {
        g->act[0] = s;
        rc = open_unit(g, s, tokens, &pols[u[s].run], u[s].w, err);
        if (rc == 0) rc = ops->prefill_logits(g->be.self, s, g->logits, err);
        if (rc == 0) rc = score_rows(p, u, g->act, 1, 0, g->logits, V, tokens, out, err);
        if (rc == 0) count_scored(&u[s], 0, done);
    }
    for (int t = 1; rc == 0; t++) {
        int na = 0;
        for (int s = 0; s < nu; s++) {
            if (u[s].w->begin + t + 1 >= u[s].w->end) continue; /* no token left to predict */
            g->tok[na] = tokens[u[s].w->begin + t];
            g->pos[na] = t;
            g->act[na++] = s;
        }
        if (na == 0) break;
        rc = ops->step_logits(g->be.self, na, g->act, g->tok, g->pos, g->logits, err);
        if (rc == 0) rc = score_rows(p, u, g->act, na, t, g->logits, V, tokens, out, err);
        for (int a = 0; rc == 0 && a < na; a++) count_scored(&u[g->act[a]], t, done);
        if (rc == 0 && p->progress) p->progress(p->progress_user, *done, total);
    }
    if (rc == 0 && p->progress) p->progress(p->progress_user, *done, total); /* windows of 2 tokens have no decode step */
    close_units(g);
    return rc;
}

int lf_ppl_check_runs(const lf_ppl_params *p, const lf_policy_config *pols, int n_pols, lf_error *err) {
    if (n_pols < 1) return lf_fail(err, "no policy to run");
    for (int j = 0; j < n_pols; j++)
        if (pols[j].kind != LF_POLICY_FULL && pols[j].budget < 2)
            return lf_fail(err, "--budget %d is too small: tokens go through the cache one at a time, which needs at "
                                "least 2 slots (the new token and one before it)", pols[j].budget);
    if (p->device != LF_DEVICE_CPU && p->device != LF_DEVICE_CUDA)
        return lf_fail(err, "unknown device %d (cpu or cuda)", (int)p->device);
    if (p->batch < (p->device == LF_DEVICE_CUDA ? 0 : 1))
        return lf_fail(err, "--batch must be at least 1 (got %d; \"max\" is for --device cuda)", p->batch);
    for (int j = 0; p->device == LF_DEVICE_CUDA && j < n_pols; j++)
        if (lf_policy_check_gpu(&pols[j], err)) return -1;
    return 0;
}

static int check_params(const lf_model *m, const int *tokens, int n, const lf_ppl_params *p,
                        const lf_policy_config *pols, int n_pols, lf_error *err) {
    if (lf_ppl_check_runs(p, pols, n_pols, err)) return -1;
    if (p->ctx < 2) return lf_fail(err, "--ctx must be at least 2 (got %d)", p->ctx);
    if (p->ctx > m->cfg.max_position)
        return lf_fail(err, "--ctx %d is larger than the model's context (max_position_embeddings %d)", p->ctx,
                       m->cfg.max_position);
    if (p->stride < 1 || p->stride > p->ctx)
        return lf_fail(err, "--stride must be in 1..--ctx (%d) (got %d)", p->ctx, p->stride);
    if (p->top_k < 0 || p->top_k > LF_PPL_TOPK_MAX || p->top_k > m->cfg.vocab_size)
        return lf_fail(err, "top-k must be in 0..%d and at most the vocabulary (got %d)", LF_PPL_TOPK_MAX, p->top_k);
    if (n < 2) return lf_fail(err, "the text has %d token%s: at least 2 are needed", n, n == 1 ? "" : "s");
    if (p->score_from < 0 || p->score_from >= n)
        return lf_fail(err, "the prompt (%d tokens) leaves nothing of the %d tokens to score", p->score_from, n);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->cfg.vocab_size)
            return lf_fail(err, "token %d at index %d is outside the vocabulary [0, %d)", tokens[i], i,
                           m->cfg.vocab_size);
    return 0;
}

static int alloc_result(lf_ppl_result *r, int n, int k, lf_error *err) {
    memset(r, 0, sizeof *r);
    r->n = n;
    r->k = k;
    r->pos = calloc((size_t)(n > 0 ? n : 1), sizeof *r->pos);
    if (k > 0) {
        r->top_id = malloc((size_t)n * k * sizeof *r->top_id);
        r->top_logit = malloc((size_t)n * k * sizeof *r->top_logit);
    }
    if (!r->pos || (k > 0 && n > 0 && (!r->top_id || !r->top_logit))) {
        lf_ppl_result_free(r);
        return lf_fail(err, "out of memory for %d scored positions", n);
    }
    return 0;
}

static void free_group(ppl_group *g) {
    if (g->be.ops) {
        close_units(g);
        g->be.ops->destroy(g->be.self);
    }
    free(g->act);
    free(g->tok);
    free(g->pos);
    free(g->logits);
    memset(g, 0, sizeof *g);
}

/* The backend of p->device for runs of policy pc (the policy of every place
 * when the backend runs one), up to max_seqs places. */
static int create_backend(const lf_model *m, const lf_ppl_params *p, const lf_policy_config *pc, int max_seqs,
                          ppl_group *g, lf_error *err) {
    lf_engine_config ec;
    lf_engine_config_default(&ec);
    ec.device = p->device;
    ec.threads = lf_threads_get();
    ec.max_seqs = max_seqs;
    ec.policy = *pc;
    lf_sampling_default(&ec.sampling);
    ec.sampling.temperature = 0; /* the GPU samples (and drops) a token per row: the cheapest way */
    ec.gpu_mem_fraction = p->gpu_mem_fraction;
    if (lf_backend_create(m, &ec, &g->be, err)) return -1;
    if (!g->be.ops->prefill_logits || !g->be.ops->step_logits)
        return lf_fail(err, "the %s backend does not return logits", p->device == LF_DEVICE_CUDA ? "cuda" : "cpu");
    return 0;
}

/* Plan the backend for units of `capacity` slots at most and allocate the
 * buffers of its places. */
static int plan_group(ppl_group *g, int capacity, int V, lf_error *err) {
    if (g->be.ops->plan) {
        const lf_backend_plan plan = {.max_prompt = 1, .capacity = capacity};
        if (g->be.ops->plan(g->be.self, &plan, err)) return -1;
    }
    lf_backend_info info;
    g->be.ops->info(g->be.self, &info);
    g->places = info.places;
    g->capacity = info.capacity;
    if (g->places < 1) return lf_fail(err, "the backend has no place to run a window in");
    g->act = malloc((size_t)g->places * sizeof *g->act);
    g->tok = malloc((size_t)g->places * sizeof *g->tok);
    g->pos = malloc((size_t)g->places * sizeof *g->pos);
    g->logits = malloc((size_t)g->places * V * sizeof *g->logits);
    if (!g->act || !g->tok || !g->pos || !g->logits)
        return lf_fail(err, "out of memory for a batch of %d windows", g->places);
    return 0;
}

/* Same policy but for the budget: runs that share a GPU pool. */
static bool same_pool(const lf_policy_config *a, const lf_policy_config *b) {
    return a->kind == b->kind && a->sinks == b->sinks && a->recent == b->recent && a->evict_every == b->evict_every &&
           a->kv_dtype == b->kv_dtype;
}

/* What one backend runs: the runs of pols not taken yet (taken[j] == 0)
 * that it can hold, the first of them `lead` (all of them on the CPU; on the
 * GPU those of lead's pool). They are marked taken; their units (in run
 * order) go to sel, their largest cache to *capacity. */
static int select_pass(const lf_policy_config *pols, int n_pols, int lead, bool one_policy, bool *taken,
                       const ppl_unit *u, int nu, ppl_unit *sel, int *capacity) {
    bool *mine = taken + n_pols; /* (scratch: runs of this pass) */
    for (int j = 0; j < n_pols; j++) {
        mine[j] = !taken[j] && (!one_policy || same_pool(&pols[j], &pols[lead]));
        taken[j] = taken[j] || mine[j];
    }
    int ns = 0;
    *capacity = 2;
    for (int i = 0; i < nu; i++) {
        if (!mine[u[i].run]) continue;
        sel[ns++] = u[i];
        int c = cache_slots(&pols[u[i].run], u[i].w);
        if (c > *capacity) *capacity = c;
    }
    return ns;
}

/* Host logits rows "as many as fit" (batch 0, cuda) may take: 1 GiB. */
#define PPL_MAX_LOGITS_BYTES (1l << 30)

/* Places to ask a backend for: the batch, at most the units; for batch 0
 * (as many as the GPU pool holds) at most what PPL_MAX_LOGITS_BYTES of
 * logits rows hold. */
static int batch_places(int batch, int nu, int V) {
    if (batch > 0) return batch < nu ? batch : nu;
    long rows = PPL_MAX_LOGITS_BYTES / ((long)V * (long)sizeof(float));
    if (rows < 1) rows = 1;
    return rows < nu ? (int)rows : nu;
}

/* Every unit, pass by pass: one backend per pass (one in all on the CPU,
 * one per GPU pool), its places filled group by group. */
static int run_units(const lf_model *m, const int *tokens, const lf_ppl_params *p, const lf_policy_config *pols,
                     int n_pols, const ppl_unit *u, int nu, lf_ppl_result *out, long total, lf_error *err) {
    bool *taken = calloc((size_t)n_pols * 2, sizeof *taken);
    ppl_unit *sel = malloc((size_t)nu * sizeof *sel);
    int rc = taken && sel ? 0 : lf_fail(err, "out of memory for %d windows", nu);
    const int V = m->cfg.vocab_size, max_seqs = batch_places(p->batch, nu, V);
    long done = 0;
    for (int lead = 0; rc == 0 && lead < n_pols; lead++) {
        if (taken[lead]) continue;
        ppl_group g;
        memset(&g, 0, sizeof g);
        int capacity = 0;
        rc = create_backend(m, p, &pols[lead], max_seqs, &g, err);
        const int ns = rc ? 0 : select_pass(pols, n_pols, lead, g.be.ops->one_policy, taken, u, nu, sel, &capacity);
        if (rc == 0) rc = plan_group(&g, capacity, V, err);
        for (int i = 0; rc == 0 && i < ns; i += g.places)
            rc = run_group(tokens, p, pols, sel + i, ns - i < g.places ? ns - i : g.places, V, &g, out, &done, total,
                           err);
        free_group(&g);
    }
    free(taken);
    free(sel);
    return rc;
}

static void free_results(lf_ppl_result *out, int n) {
    for (int j = 0; j < n; j++) lf_ppl_result_free(&out[j]);
}

/* The (window, policy) units in run order: window by window, every policy
 * of a window next to each other (they share the window's tokens). */
static ppl_unit *plan_units(const ppl_window *w, int nw, int n_pols, lf_error *err) {
    ppl_unit *u = malloc((size_t)nw * n_pols * sizeof *u);
    if (!u) {
        lf_fail(err, "out of memory for %d windows x %d policies", nw, n_pols);
        return NULL;
    }
    for (int i = 0; i < nw; i++)
        for (int j = 0; j < n_pols; j++) u[(size_t)i * n_pols + j] = (ppl_unit){&w[i], j};
    return u;
}

int lf_ppl_run_policies(const lf_model *m, const int *tokens, int n, const lf_ppl_params *p,
                        const lf_policy_config *pols, int n_pols, lf_ppl_result *out, lf_error *err) {
    if (n_pols > 0) memset(out, 0, (size_t)n_pols * sizeof *out);
    if (check_params(m, tokens, n, p, pols, n_pols, err)) return -1;
    int n_scored;
    int nw = plan_windows(n, p->ctx, p->stride, p->max_windows, p->score_from, NULL, &n_scored);
    if (n_scored == 0) return lf_fail(err, "no token to score: the text after the prompt is empty");
    if (p->base && (p->base->k < 1 || p->base->n < n_scored))
        return lf_fail(err, "the KL base holds %d positions with %d logits each; this run scores %d", p->base->n,
                       p->base->k, n_scored);
    if ((long)nw * n_pols > INT_MAX / 2) return lf_fail(err, "%d windows x %d policies: too many", nw, n_pols);
    ppl_window *w = malloc((size_t)nw * sizeof *w);
    if (!w) return lf_fail(err, "out of memory for %d windows", nw);
    plan_windows(n, p->ctx, p->stride, p->max_windows, p->score_from, w, &n_scored);
    ppl_unit *u = plan_units(w, nw, n_pols, err);
    int rc = u ? 0 : -1;
    for (int j = 0; rc == 0 && j < n_pols; j++) rc = alloc_result(&out[j], n_scored, p->top_k, err);
    if (rc == 0) rc = run_units(m, tokens, p, pols, n_pols, u, nw * n_pols, out, (long)n_scored * n_pols, err);
    free(u);
    free(w);
    if (rc) free_results(out, n_pols);
    return rc;
}

int lf_ppl_run(const lf_model *m, const int *tokens, int n, const lf_ppl_params *p, lf_ppl_result *out,
               lf_error *err) {
    return lf_ppl_run_policies(m, tokens, n, p, &p->policy, 1, out, err);
}

/* Running mean and variance (Welford), for the standard error of a mean. */
typedef struct ppl_acc {
    long n;
    double mean, m2;
} ppl_acc;

static void acc_add(ppl_acc *a, double x) {
    a->n++;
    double d = x - a->mean;
    a->mean += d / a->n;
    a->m2 += d * (x - a->mean);
}

static lf_ppl_stat acc_stat(const ppl_acc *a) {
    lf_ppl_stat s = {a->mean, 0};
    if (a->n > 1) s.se = sqrt(a->m2 / (a->n - 1) / a->n);
    return s;
}

void lf_ppl_summarize(const lf_ppl_result *r, const lf_ppl_result *base, lf_ppl_summary *s) {
    ppl_acc nll = {0}, kl = {0}, top1 = {0}, dnll = {0};
    for (int i = 0; i < r->n; i++) {
        const lf_ppl_pos *p = &r->pos[i];
        acc_add(&nll, p->nll);
        if (!base) continue;
        acc_add(&kl, p->kl);
        acc_add(&top1, p->argmax == base->top_id[(size_t)i * base->k] ? 1.0 : 0.0);
        acc_add(&dnll, (double)p->nll - base->pos[i].nll);
    }
    memset(s, 0, sizeof *s);
    s->n = r->n;
    s->nll = acc_stat(&nll);
    s->with_base = base != NULL;
    if (base) {
        s->kl = acc_stat(&kl);
        s->top1 = acc_stat(&top1);
        s->delta_nll = acc_stat(&dnll);
    }
}
