/* Teacher-forced perplexity through the KV cache (perplexity.h). */
#include "eval/perplexity.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "cpu/forward.h"
#include "kv/cache.h"
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

/* One unit of work: a window under one of the policies (its own cache). */
typedef struct ppl_unit {
    const ppl_window *w;
    int run; /* index into the policies and results */
} ppl_unit;

/* State of one group of units decoded together. */
typedef struct ppl_group {
    lf_kv_cache *cache;   /* [batch] */
    lf_kv_cache **cptr;   /* [batch] the active caches of a step */
    int *tok, *pos, *who; /* [batch] the active units' input token, position, unit */
    float *logits;        /* [batch][V] */
    int n_init;           /* caches initialized */
} ppl_group;

static void group_free_caches(ppl_group *g) {
    for (int s = 0; s < g->n_init; s++) lf_kv_cache_free(&g->cache[s]);
    g->n_init = 0;
}

/* Slots a window's cache needs: every input token for full, else the
 * budget (at most the window's inputs, as the engine sizes a request). */
static int cache_slots(const lf_policy_config *pc, const ppl_window *w) {
    int need = w->end - w->begin;
    if (pc->kind == LF_POLICY_FULL) return need;
    return pc->budget < need ? pc->budget : need;
}

/* Score the logits of window w's input at offset t (predicting token
 * begin+t+1) into r when that token is one the window scores. */
static int score_step(const lf_ppl_params *p, const ppl_window *w, int t, const float *logits, int V,
                      const int *tokens, lf_ppl_result *r, lf_error *err) {
    int idx = w->begin + t + 1;
    if (idx < w->score_from) return 0;
    int i = w->out + (idx - w->score_from);
    r->pos[i].index = idx;
    if (p->base && p->base->pos[i].index != idx)
        return lf_fail(err, "the KL base scored token %d at its position %d, this run token %d", p->base->pos[i].index,
                       i, idx);
    if (score_row(logits, V, tokens[idx], p->base, r, i))
        return lf_fail(err, "logits are NaN or Inf at token %d (check the model's weights)", idx);
    return 0;
}

/* Run units u[0..nu) together: prefill each window's first token, then
 * decode step by step while any unit has inputs left. */
static int run_group(const lf_model *m, lf_cpu_ctx *cpu, const int *tokens, const lf_ppl_params *p,
                     const lf_policy_config *pols, const ppl_unit *u, int nu, ppl_group *g, lf_ppl_result *out,
                     long *done, long total, lf_error *err) {
    const int V = m->cfg.vocab_size;
    for (int s = 0; s < nu; s++) {
        const ppl_window *w = u[s].w;
        lf_policy_config pc = pols[u[s].run];
        if (pc.kind == LF_POLICY_FULL) pc.budget = 0;
        if (lf_kv_cache_init(&g->cache[s], &m->cfg, &pc, cache_slots(&pols[u[s].run], w), err)) return -1;
        g->n_init++;
        if (lf_cpu_prefill(cpu, m, &g->cache[s], tokens + w->begin, 1, g->logits, err)) return -1;
        if (score_step(p, w, 0, g->logits, V, tokens, &out[u[s].run], err)) return -1;
        if (w->begin + 1 >= w->score_from) (*done)++;
    }
    for (int t = 1;; t++) {
        int na = 0;
        for (int s = 0; s < nu; s++) {
            if (u[s].w->begin + t + 1 >= u[s].w->end) continue; /* no token left to predict */
            g->cptr[na] = &g->cache[s];
            g->tok[na] = tokens[u[s].w->begin + t];
            g->pos[na] = t;
            g->who[na++] = s;
        }
        if (na == 0) break;
        if (lf_cpu_decode(cpu, m, g->cptr, g->tok, g->pos, na, g->logits, err)) return -1;
        for (int a = 0; a < na; a++) {
            const ppl_unit *us = &u[g->who[a]];
            if (score_step(p, us->w, t, g->logits + (size_t)a * V, V, tokens, &out[us->run], err)) return -1;
            if (us->w->begin + t + 1 >= us->w->score_from) (*done)++;
        }
        if (p->progress) p->progress(p->progress_user, *done, total);
    }
    if (p->progress) p->progress(p->progress_user, *done, total); /* windows of 2 tokens have no decode step */
    group_free_caches(g);
    return 0;
}

static int check_params(const lf_model *m, const int *tokens, int n, const lf_ppl_params *p,
                        const lf_policy_config *pols, int n_pols, lf_error *err) {
    if (n_pols < 1) return lf_fail(err, "no policy to run");
    for (int j = 0; j < n_pols; j++)
        if (pols[j].kind != LF_POLICY_FULL && pols[j].budget < 2)
            return lf_fail(err, "--budget %d is too small: tokens go through the cache one at a time, which needs at "
                                "least 2 slots (the new token and one before it)", pols[j].budget);
    if (p->ctx < 2) return lf_fail(err, "--ctx must be at least 2 (got %d)", p->ctx);
    if (p->ctx > m->cfg.max_position)
        return lf_fail(err, "--ctx %d is larger than the model's context (max_position_embeddings %d)", p->ctx,
                       m->cfg.max_position);
    if (p->stride < 1 || p->stride > p->ctx)
        return lf_fail(err, "--stride must be in 1..--ctx (%d) (got %d)", p->ctx, p->stride);
    if (p->batch < 1) return lf_fail(err, "--batch must be at least 1 (got %d)", p->batch);
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

static int alloc_group(ppl_group *g, int batch, int V, lf_error *err) {
    memset(g, 0, sizeof *g);
    g->cache = calloc((size_t)batch, sizeof *g->cache);
    g->cptr = calloc((size_t)batch, sizeof *g->cptr);
    g->tok = malloc((size_t)batch * sizeof *g->tok);
    g->pos = malloc((size_t)batch * sizeof *g->pos);
    g->who = malloc((size_t)batch * sizeof *g->who);
    g->logits = malloc((size_t)batch * V * sizeof *g->logits);
    if (!g->cache || !g->cptr || !g->tok || !g->pos || !g->who || !g->logits)
        return lf_fail(err, "out of memory for a batch of %d windows", batch);
    return 0;
}

static void free_group(ppl_group *g) {
    group_free_caches(g);
    free(g->cache);
    free(g->cptr);
    free(g->tok);
    free(g->pos);
    free(g->who);
    free(g->logits);
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
    const int nu = nw * n_pols, batch = p->batch < nu ? p->batch : nu;
    ppl_unit *u = plan_units(w, nw, n_pols, err);
    ppl_group g;
    memset(&g, 0, sizeof g);
    lf_cpu_ctx *cpu = NULL;
    long done = 0, total = (long)n_scored * n_pols;
    int rc = u ? 0 : -1;
    for (int j = 0; rc == 0 && j < n_pols; j++) rc = alloc_result(&out[j], n_scored, p->top_k, err);
    if (rc == 0) rc = alloc_group(&g, batch, m->cfg.vocab_size, err);
    if (rc == 0) rc = lf_cpu_ctx_create(m, batch, &cpu, err);
    for (int i = 0; rc == 0 && i < nu; i += batch)
        rc = run_group(m, cpu, tokens, p, pols, u + i, nu - i < batch ? nu - i : batch, &g, out, &done, total, err);
    lf_cpu_ctx_free(cpu);
    free_group(&g);
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
