/* KV-cache policies over many decode steps:
 *  - worked LongFlow examples (tests/data/policies/ JSON files, written by the
 *    independent numpy script tools/longflow_reference.py): the slots kept
 *    by the prompt, the sequence of slot choices, every output;
 *  - every policy (longflow with and without --sinks/--recent/--evict-every,
 *    tova, h2o, vatp, streaming, full) on random data for short and long
 *    prompts against a double-precision simulation written here;
 *  - bad inputs, the accounting (tokens, bytes in use, peak, room) and the
 *    policy names. R-KV has its own test (test_rkv.c), SnapKV too. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "kv/attention.h"
#include "kv/cache.h"
#include "kv/policy.h"
#include "kv/policies/common.h"
#include "model/config.h"

#include "test_util.h"




/* ---- worked examples ------------------------------------------------------------ */

/* An array of integers times the file's "scale" (exact in float32). */
static float *json_floats(const cJSON *obj, const char *key, int want) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(obj, key);
    const cJSON *sc = cJSON_GetObjectItemCaseSensitive(obj, "scale");
    assert_non_null(a);
    assert_non_null(sc);
    assert_true(cJSON_IsArray(a));
    int n = cJSON_GetArraySize(a);
    if (want >= 0) assert_int_equal(n, want);
    float *f = malloc((size_t)(n > 0 ? n : 1) * sizeof *f);
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, a) f[i++] = (float)(e->valuedouble * sc->valuedouble);
    return f;
}

static int json_int(const cJSON *obj, const char *key) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(obj, key);
    assert_non_null(e);
    assert_true(cJSON_IsNumber(e));
    return e->valueint;
}

static void replay_example(const char *name, int scalar) {
    char path[1024];
    snprintf(path, sizeof path, "%s/policies/%s.json", data_dir(), name);
    char *text;
    size_t len;
    lf_error err;
    if (lf_read_file(path, &text, &len, &err)) fail_msg("%s", err.msg);
    cJSON *j = cJSON_Parse(text);
    free(text);
    assert_non_null(j);
    const int H = json_int(j, "n_heads"), G = json_int(j, "n_kv_heads"), hd = json_int(j, "head_dim");
    const int B = json_int(j, "budget"), P = json_int(j, "prompt_len"), steps = json_int(j, "steps");
    float *pq = json_floats(j, "prompt_q", P * H * hd), *pk = json_floats(j, "prompt_k", P * G * hd);
    float *pv = json_floats(j, "prompt_v", P * G * hd);
    float *dq = json_floats(j, "decode_q", steps * H * hd), *dk = json_floats(j, "decode_k", steps * G * hd);
    float *dv = json_floats(j, "decode_v", steps * G * hd);
    const cJSON *kept = cJSON_GetObjectItemCaseSensitive(j, "expected_kept_positions");
    const cJSON *slots = cJSON_GetObjectItemCaseSensitive(j, "expected_slots");
    const cJSON *outs = cJSON_GetObjectItemCaseSensitive(j, "expected_outputs");
    assert_int_equal(cJSON_GetArraySize(slots), steps);
    assert_int_equal(cJSON_GetArraySize(outs), steps);

    lf_att_force_scalar(scalar);
    lf_config cfg = shape(1, H, G, hd);
    /* against float32 references */
    lf_policy_config pc = policy_config(LF_POLICY_LONGFLOW, B, LF_KV_F32);
    pc.sinks = json_int(j, "sinks");
    pc.recent = json_int(j, "recent");
    pc.evict_every = json_int(j, "evict_every");
    lf_kv_cache c;
    if (lf_kv_cache_init(&c, &cfg, &pc, B, &err)) fail_msg("%s", err.msg);
    if (lf_kv_prefill_layer(&c, 0, pq, pk, pv, P, &err)) fail_msg("%s", err.msg);
    const lf_kv_layer *L = &c.layers[0];
    const lf_scored_layer *SC = lf_scored(&c, 0);
    int nk = cJSON_GetArraySize(kept);
    assert_int_equal(L->n_valid, nk);
    for (int i = 0; i < nk; i++) assert_int_equal(L->pos[i], cJSON_GetArrayItem(kept, i)->valueint);
    float *out = malloc((size_t)H * hd * sizeof *out);
    lf_kv_cache *cp = &c;
    for (int s = 0; s < steps; s++) {
        int want = cJSON_GetArrayItem(slots, s)->valueint;
        if (L->next_slot != want) fail_msg("%s step %d: next slot %d, expected %d", name, s, L->next_slot, want);
        int p = P + s;
        lf_kv_decode_layer(&cp, 1, 0, dq + (size_t)s * H * hd, dk + (size_t)s * G * hd, dv + (size_t)s * G * hd, &p,
                           out);
        const cJSON *row = cJSON_GetArrayItem(outs, s);
        for (int i = 0; i < H * hd; i++) {
            double e = cJSON_GetArrayItem(row, i)->valuedouble;
            if (fabs(out[i] - e) > 1e-5 + 1e-4 * fabs(e))
                fail_msg("%s step %d output %d: got %.8g, expected %.8g", name, s, i, out[i], e);
        }
        assert_true(L->n_valid <= B);
    }
    assert_int_equal(L->next_slot, json_int(j, "expected_next_slot"));
    const cJSON *ls = cJSON_GetObjectItemCaseSensitive(j, "expected_last_scores");
    double mx = 0;
    for (int i = 0; i < B; i++) mx = fmax(mx, fabs(cJSON_GetArrayItem(ls, i)->valuedouble));
    if (pc.evict_every == 1)
        for (int i = 0; i < B; i++) {
            double e = cJSON_GetArrayItem(ls, i)->valuedouble;
            if (fabs(SC->score[i] - e) > 1e-4 * fabs(e) + 1e-7 * mx)
                fail_msg("%s last score of slot %d: got %.8g, expected %.8g", name, i, SC->score[i], e);
        }
    lf_att_force_scalar(0);
    lf_kv_cache_free(&c);
    free(out);
    free(pq);
    free(pk);
    free(pv);
    free(dq);
    free(dk);
    free(dv);
    cJSON_Delete(j);
}

static void test_worked_examples(void **state) {
    (void)state;
    const char *names[] = {"longflow_short_prompt", "longflow_exact_budget", "longflow_long_prompt",
                           "longflow_extensions"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        for (int sc = 0; sc < 2; sc++) replay_example(names[i], sc);
}

/* ---- a double-precision simulation of every policy ------------------------- */

typedef struct sim {
    int H, G, hd, cap;
    lf_policy_config P; /* resolved */
    double *K, *V;      /* [G][cap][hd] */
    int *pos;
    double *acc;
    int next;
    int queue[64], nq, qh;
    double *score;
    int ties; /* choices decided within the tie tolerance */
    int room;      /* prompt tokens the cache keeps: B-1, or the --protect-prompt share of B */
    int protected; /* --protect-prompt: positions below this are never evicted (the prompt) */
} sim;

static double dotd(const float *a, const double *b, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* SnapKV + the H2O window attention, in double, straight from the text. */
static void sim_prefill(sim *S, const float *q, const float *k, const float *v, int n, const lf_kv_cache *c) {
    const int H = S->H, G = S->G, hd = S->hd, rep = H / G, w = 32;
    int *kept = malloc((size_t)n * sizeof *kept), nk = 0;
    /* the prompt's room, from the text: budget-1, or floor(share x budget) but at least
     * the 33 SnapKV's selection needs, when smaller */
    S->room = c->budget - 1;
    if (S->P.protect_prompt > 0) {
        int share = (int)floor(S->P.protect_prompt * c->budget);
        if (share < w + 1) share = w + 1;
        if (share < S->room) S->room = share;
    }
    S->protected = S->P.protect_prompt > 0 ? n : 0;
    double *kd = malloc((size_t)n * G * hd * sizeof *kd);
    for (size_t i = 0; i < (size_t)n * G * hd; i++) kd[i] = k[i];
    if (S->P.kind == LF_POLICY_FULL || n <= S->room) {
        for (int t = 0; t < n; t++) kept[nk++] = t;
    } else {
        int m = n - w;
        double *raw = calloc((size_t)m, sizeof *raw), *pooled = calloc((size_t)m, sizeof *pooled);
        double *row = malloc((size_t)m * sizeof *row);
        for (int h = 0; h < H; h++)
            for (int t = m; t < n; t++) {
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < m; j++) {
                    row[j] = dotd(q + ((size_t)t * H + h) * hd, kd + ((size_t)j * G + h / rep) * hd, hd) / sqrt(hd);
                    mx = fmax(mx, row[j]);
                }
                for (int j = 0; j < m; j++) sum += (row[j] = exp(row[j] - mx));
                for (int j = 0; j < m; j++) raw[j] += row[j] / sum;
            }
        for (int j = 0; j < m; j++) {
            for (int d = -2; d <= 2; d++)
                if (j + d >= 0 && j + d < m) pooled[j] += raw[j + d];
            pooled[j] /= 5;
        }
        /* the kernel's kept set must be a valid top set: every kept
         * non-sink candidate scores at least every dropped one (within a
         * tolerance for near ties); then the simulation adopts it */
        const lf_kv_layer *L = &c->layers[0];
        char *in = calloc((size_t)n, 1);
        for (int i = 0; i < L->n_valid; i++) in[L->pos[i]] = 1;
        assert_int_equal(L->n_valid, S->room);
        for (int t = m; t < n; t++) assert_true(in[t]);
        for (int t = 0; t < S->P.sinks; t++) assert_true(in[t]);
        double lo = INFINITY, hi = -INFINITY;
        for (int j = S->P.sinks; j < m; j++) {
            if (in[j]) lo = fmin(lo, pooled[j]);
            else hi = fmax(hi, pooled[j]);
        }
        if (lo < hi - 1e-6 * fabs(hi)) fail_msg("SnapKV kept a position scoring %.9g over one scoring %.9g", lo, hi);
        for (int t = 0; t < n; t++)
            if (in[t]) kept[nk++] = t;
        free(in);
        free(raw);
        free(pooled);
        free(row);
    }
    if (S->acc) {
        /* attention from the last min(32, n) queries, causal, mean over heads */
        double *win = calloc((size_t)n, sizeof *win), *row = malloc((size_t)n * sizeof *row);
        int w2 = n < w ? n : w;
        for (int h = 0; h < H; h++)
            for (int t = n - w2; t < n; t++) {
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= t; j++) {
                    row[j] = dotd(q + ((size_t)t * H + h) * hd, kd + ((size_t)j * G + h / rep) * hd, hd) / sqrt(hd);
                    mx = fmax(mx, row[j]);
                }
                for (int j = 0; j <= t; j++) sum += (row[j] = exp(row[j] - mx));
                for (int j = 0; j <= t; j++) win[j] += row[j] / sum / H;
            }
        for (int i = 0; i < nk; i++) S->acc[i] = win[kept[i]];
        free(win);
        free(row);
    }
    for (int i = 0; i < nk; i++) {
        S->pos[i] = kept[i];
        for (int g = 0; g < G; g++)
            for (int d = 0; d < hd; d++) {
                S->K[((size_t)g * S->cap + i) * hd + d] = k[((size_t)kept[i] * G + g) * hd + d];
                S->V[((size_t)g * S->cap + i) * hd + d] = v[((size_t)kept[i] * G + g) * hd + d];
            }
    }
    S->next = nk < S->cap ? nk : -1;
    free(kept);
    free(kd);
}

static bool sim_evictable(const sim *S, int i, int pnow) {
    return S->pos[i] < 0 ||
           (S->pos[i] >= S->P.sinks && S->pos[i] >= S->protected && S->pos[i] <= pnow - S->P.recent);
}

/* The new token in the simulation's next slot, checked against the cache's
 * positions. */
static void sim_store(sim *S, const float *k, const float *v, int pnow, const lf_kv_cache *c) {
    const int G = S->G, hd = S->hd, cap = S->cap;
    const lf_kv_layer *L = &c->layers[0];
    int slot = S->next;
    assert_true(slot >= 0);
    S->pos[slot] = pnow;
    for (int g = 0; g < G; g++)
        for (int d = 0; d < hd; d++) {
            S->K[((size_t)g * cap + slot) * hd + d] = k[g * hd + d];
            S->V[((size_t)g * cap + slot) * hd + d] = v[g * hd + d];
        }
    if (S->acc) S->acc[slot] = 0;
    for (int i = 0; i < cap; i++) assert_int_equal(L->pos[i], S->pos[i]);
}

/* Attention in double: every head's output checked; the policy's score of
 * every slot into S->score (H2O/VATP accumulate). */
static void sim_scores(sim *S, const float *q, int pnow, const float *out) {
    const int H = S->H, G = S->G, hd = S->hd, cap = S->cap, rep = H / G;
    double *att = calloc((size_t)cap, sizeof *att), *lf = calloc((size_t)cap, sizeof *lf);
    double *vbar = calloc((size_t)cap, sizeof *vbar), *row = malloc((size_t)cap * sizeof *row);
    for (int h = 0; h < H; h++) {
        int g = h / rep;
        double mx = -INFINITY, sum = 0;
        for (int i = 0; i < cap; i++)
            if (S->pos[i] >= 0) {
                row[i] = dotd(q + (size_t)h * hd, S->K + ((size_t)g * cap + i) * hd, hd) / sqrt(hd);
                mx = fmax(mx, row[i]);
            }
        for (int i = 0; i < cap; i++)
            if (S->pos[i] >= 0) sum += (row[i] = exp(row[i] - mx));
        for (int d = 0; d < hd; d++) {
            double o = 0;
            for (int i = 0; i < cap; i++)
                if (S->pos[i] >= 0) o += row[i] / sum * S->V[((size_t)g * cap + i) * hd + d];
            if (fabs(out[h * hd + d] - o) > 2e-5 + 1e-4 * fabs(o))
                fail_msg("position %d head %d dim %d: output %.8g, reference %.8g", pnow, h, d, out[h * hd + d], o);
        }
        for (int i = 0; i < cap; i++)
            if (S->pos[i] >= 0) {
                double a = row[i] / sum, vn = 0;
                for (int d = 0; d < hd; d++) vn += fabs(S->V[((size_t)g * cap + i) * hd + d]);
                att[i] += a / H;
                lf[i] += a * vn / ((double)H * hd);
                vbar[i] += vn / H; /* mean over query heads = mean over KV heads */
            }
    }
    for (int i = 0; i < cap; i++) {
        double s;
        bool empty = S->pos[i] < 0;
        switch (S->P.kind) {
        case LF_POLICY_LONGFLOW: s = empty ? 0 : lf[i]; break;
        case LF_POLICY_TOVA: s = empty ? 0 : att[i]; break;
        case LF_POLICY_H2O:
            if (!empty) S->acc[i] += att[i];
            s = empty ? -INFINITY : S->acc[i];
            break;
        case LF_POLICY_VATP:
            if (!empty) S->acc[i] += att[i];
            s = empty ? -INFINITY : S->acc[i] * vbar[i];
            break;
        default: s = 0; break;
        }
        S->score[i] = s;
    }
    free(att);
    free(lf);
    free(vbar);
    free(row);
}

/* The evictable slots into order[], by score, then index: their count. */
static int sim_order(const sim *S, int pnow, int *order) {
    int n = 0;
    for (int i = 0; i < S->cap; i++)
        if (sim_evictable(S, i, pnow)) order[n++] = i;
    /* selection sort is fine for these sizes: score, then index */
    for (int a = 0; a < n; a++)
        for (int b = a + 1; b < n; b++)
            if (S->score[order[b]] < S->score[order[a]] ||
                (S->score[order[b]] == S->score[order[a]] && order[b] < order[a])) {
                int t = order[a];
                order[a] = order[b];
                order[b] = t;
            }
    return n;
}

/* A new batch of evict_every victims: the K lowest scores, in slot order;
 * the kernel's own batch is adopted when it differs only among near ties
 * (checked). Returns the batch's first slot. */
static int sim_refill_queue(sim *S, const int *order, int n, int pnow, double tol, const lf_kv_cache *c) {
    const lf_scored_layer *SC = lf_scored(c, 0);
    int K = S->P.evict_every;
    S->nq = K < n ? K : n;
    for (int a = 0; a < S->nq; a++) S->queue[a] = order[a];
    for (int a = 0; a < S->nq; a++)
        for (int b = a + 1; b < S->nq; b++)
            if (S->queue[b] < S->queue[a]) {
                int t = S->queue[a];
                S->queue[a] = S->queue[b];
                S->queue[b] = t;
            }
    /* the kernel may pick differently among near ties */
    if (memcmp(S->queue, SC->queue, (size_t)S->nq * sizeof(int)) != 0) {
        double bound = S->score[order[S->nq - 1]] + tol;
        for (int a = 0; a < SC->n_queue; a++)
            if (!(sim_evictable(S, SC->queue[a], pnow) && S->score[SC->queue[a]] <= bound))
                fail_msg("queued victim %d scores %.9g, above the %d smallest (%.9g)", SC->queue[a],
                         S->score[SC->queue[a]], S->nq, bound - tol);
        assert_int_equal(SC->n_queue, S->nq);
        for (int a = 0; a < S->nq; a++) S->queue[a] = SC->queue[a];
        S->ties++;
    }
    S->qh = 0;
    return S->queue[S->qh++];
}

/* A scored policy's next slot: the simulation's choice, or the kernel's
 * when it is within the tie tolerance (checked); the kernel's scores are
 * checked too. */
static int sim_scored_choice(sim *S, int pnow, double maxabs, const lf_kv_cache *c) {
    const lf_kv_layer *L = &c->layers[0];
    const lf_scored_layer *SC = lf_scored(c, 0);
    const double tol = 1e-5 * maxabs;
    int order[512];
    int n = sim_order(S, pnow, order);
    int want;
    if (S->P.evict_every == 1) want = order[0];
    else if (S->qh < S->nq) want = S->queue[S->qh++];
    else want = sim_refill_queue(S, order, n, pnow, tol, c);
    int got = L->next_slot;
    if (got != want) {
        if (got < 0 || !sim_evictable(S, got, pnow) || !(S->score[got] <= S->score[want] + tol))
            fail_msg("position %d: next slot %d (score %.9g), reference %d (score %.9g)", pnow, got,
                     got >= 0 ? S->score[got] : NAN, want, S->score[want]);
        S->ties++;
        want = got;
    }
    for (int i = 0; i < S->cap; i++) {
        if (!isfinite(S->score[i])) continue;
        if (fabs(SC->score[i] - S->score[i]) > 1e-4 * fabs(S->score[i]) + 1e-7 * maxabs)
            fail_msg("position %d: score of slot %d %.9g, reference %.9g", pnow, i, SC->score[i], S->score[i]);
    }
    return want;
}

/* One step; the kernel's output and choice are checked, and a choice within
 * the tie tolerance of the simulation's is adopted. */
static void sim_step(sim *S, const float *q, const float *k, const float *v, int pnow, const float *out,
                     const lf_kv_cache *c) {
    const int cap = S->cap;
    const lf_kv_layer *L = &c->layers[0];
    sim_store(S, k, v, pnow, c);
    sim_scores(S, q, pnow, out);
    /* the choice */
    int want = -1;
    double maxabs = 0;
    for (int i = 0; i < cap; i++)
        if (isfinite(S->score[i])) maxabs = fmax(maxabs, fabs(S->score[i]));
    switch (S->P.kind) {
    case LF_POLICY_FULL: {
        int hw = 0;
        for (int i = 0; i < cap; i++)
            if (S->pos[i] >= 0) hw = i + 1;
        want = hw < cap ? hw : -1;
        assert_int_equal(L->next_slot, want);
        break;
    }
    case LF_POLICY_STREAMING:
        for (int i = 0; i < cap && want < 0; i++)
            if (S->pos[i] < 0) want = i;
        if (want < 0)
            for (int i = 0; i < cap; i++)
                if (sim_evictable(S, i, pnow) && (want < 0 || S->pos[i] < S->pos[want])) want = i;
        assert_int_equal(L->next_slot, want);
        break;
    default: want = sim_scored_choice(S, pnow, maxabs, c); break;
    }
    S->next = want;
}

typedef struct multi_case {
    lf_policy_kind kind;
    int H, G, hd, B, prompt, steps;
    int sinks, recent, every;
    float protect; /* --protect-prompt share (0: off) */
} multi_case;

static void run_multi(const multi_case *mc, int scalar) {
    lf_att_force_scalar(scalar);
    const int H = mc->H, G = mc->G, hd = mc->hd, n = mc->prompt, steps = mc->steps;
    lf_config cfg = shape(1, H, G, hd);
    /* against float32 references */
    lf_policy_config pc = policy_config(mc->kind, mc->B, LF_KV_F32);
    pc.sinks = mc->sinks;
    pc.recent = mc->recent;
    pc.evict_every = mc->every;
    pc.protect_prompt = mc->protect;
    int slots = mc->kind == LF_POLICY_FULL ? n + steps : mc->B;
    /* two sequences decoded together, with different data */
    enum { NS = 2 };
    lf_kv_cache c[NS];
    lf_kv_cache *cp[NS];
    sim S[NS];
    lf_error err;
    float *q = malloc((size_t)n * H * hd * sizeof *q), *k = malloc((size_t)n * G * hd * sizeof *k);
    float *v = malloc((size_t)n * G * hd * sizeof *v);
    for (int s = 0; s < NS; s++) {
        if (lf_kv_cache_init(&c[s], &cfg, &pc, slots, &err)) fail_msg("init: %s", err.msg);
        cp[s] = &c[s];
        memset(&S[s], 0, sizeof S[s]);
        S[s].H = H;
        S[s].G = G;
        S[s].hd = hd;
        S[s].cap = c[s].capacity;
        S[s].P = c[s].policy;
        S[s].K = calloc((size_t)G * S[s].cap * hd, sizeof(double));
        S[s].V = calloc((size_t)G * S[s].cap * hd, sizeof(double));
        S[s].pos = malloc((size_t)S[s].cap * sizeof(int));
        for (int i = 0; i < S[s].cap; i++) S[s].pos[i] = -1;
        S[s].acc = (mc->kind == LF_POLICY_H2O || mc->kind == LF_POLICY_VATP) ? calloc((size_t)S[s].cap, sizeof(double))
                                                                             : NULL;
        S[s].score = calloc((size_t)S[s].cap, sizeof(double));
        rand_qkv(q, k, v, (size_t)n * H * hd, (size_t)n * G * hd, 1);
        if (lf_kv_prefill_layer(&c[s], 0, q, k, v, n, &err)) fail_msg("prefill: %s", err.msg);
        sim_prefill(&S[s], q, k, v, n, &c[s]);
        for (int i = 0; i < S[s].cap; i++) assert_int_equal(c[s].layers[0].pos[i], S[s].pos[i]);
        assert_int_equal(c[s].layers[0].next_slot, S[s].next);
    }
    float *dq = malloc((size_t)NS * H * hd * sizeof *dq), *dk = malloc((size_t)NS * G * hd * sizeof *dk);
    float *dv = malloc((size_t)NS * G * hd * sizeof *dv), *out = malloc((size_t)NS * H * hd * sizeof *out);
    for (int t = 0; t < steps; t++) {
        int pos[NS];
        rand_qkv(dq, dk, dv, (size_t)NS * H * hd, (size_t)NS * G * hd, 2);
        for (int s = 0; s < NS; s++) pos[s] = n + t;
        lf_kv_decode_layer(cp, NS, 0, dq, dk, dv, pos, out);
        for (int s = 0; s < NS; s++) {
            sim_step(&S[s], dq + (size_t)s * H * hd, dk + (size_t)s * G * hd, dv + (size_t)s * G * hd, pos[s],
                     out + (size_t)s * H * hd, &c[s]);
            if (mc->kind != LF_POLICY_FULL) assert_true(c[s].layers[0].n_valid <= mc->B);
        }
    }
    for (int s = 0; s < NS; s++) {
        /* near ties should be rare on random data */
        assert_true(S[s].ties <= steps / 10);
        lf_kv_cache_free(&c[s]);
        free(S[s].K);
        free(S[s].V);
        free(S[s].pos);
        free(S[s].acc);
        free(S[s].score);
    }
    free(q);
    free(k);
    free(v);
    free(dq);
    free(dk);
    free(dv);
    free(out);
    lf_att_force_scalar(0);
}

static void test_every_policy_many_steps(void **state) {
    (void)state;
    rng = 21;
    const multi_case cases[] = {
        {LF_POLICY_LONGFLOW, 8, 4, 32, 48, 20, 60, -1, -1, 1, 0},  /* prompt < B-1 */
        {LF_POLICY_LONGFLOW, 8, 4, 32, 48, 100, 60, -1, -1, 1, 0}, /* SnapKV prompt */
        {LF_POLICY_LONGFLOW, 8, 2, 32, 48, 47, 40, -1, -1, 1, 0},  /* prompt = B-1 */
        {LF_POLICY_LONGFLOW, 8, 4, 32, 48, 100, 60, 4, 8, 1, 0},   /* --sinks --recent */
        {LF_POLICY_LONGFLOW, 8, 4, 32, 48, 100, 60, 0, 0, 4, 0},   /* --evict-every */
        {LF_POLICY_LONGFLOW, 8, 4, 32, 48, 30, 60, 2, 3, 5, 0},
        {LF_POLICY_TOVA, 8, 4, 32, 48, 20, 60, -1, -1, 1, 0},
        {LF_POLICY_TOVA, 8, 4, 32, 48, 100, 60, -1, -1, 1, 0},
        {LF_POLICY_H2O, 8, 4, 32, 48, 20, 60, -1, -1, 1, 0},
        {LF_POLICY_H2O, 8, 4, 32, 48, 100, 60, -1, -1, 1, 0},
        {LF_POLICY_H2O, 8, 4, 32, 48, 100, 60, 2, 10, 1, 0},
        {LF_POLICY_VATP, 8, 4, 32, 48, 20, 60, -1, -1, 1, 0},
        {LF_POLICY_VATP, 8, 4, 32, 48, 100, 60, -1, -1, 1, 0},
        {LF_POLICY_STREAMING, 8, 4, 32, 48, 20, 60, -1, -1, 1, 0},
        {LF_POLICY_STREAMING, 8, 4, 32, 48, 100, 60, 6, -1, 1, 0},
        {LF_POLICY_FULL, 8, 4, 32, 0, 20, 40, -1, -1, 1, 0},
        /* --protect-prompt: the whole prompt kept and protected; SnapKV's selection of it into the share */
        {LF_POLICY_LONGFLOW, 8, 4, 32, 48, 20, 60, -1, -1, 1, 0.5f},
        {LF_POLICY_LONGFLOW, 8, 4, 32, 96, 100, 80, -1, -1, 1, 0.5f},
        {LF_POLICY_LONGFLOW, 8, 4, 32, 96, 100, 80, 4, 8, 1, 0.4f},
        {LF_POLICY_LONGFLOW, 8, 4, 32, 64, 100, 80, -1, -1, 1, 0.25f}, /* 16 slots, raised to 33 */
        {LF_POLICY_TOVA, 8, 4, 32, 96, 100, 80, -1, -1, 1, 0.6f},
        {LF_POLICY_H2O, 8, 4, 32, 96, 100, 80, -1, 16, 1, 0.5f},
        {LF_POLICY_VATP, 8, 4, 32, 48, 20, 60, -1, 8, 1, 0.5f},
        {LF_POLICY_STREAMING, 8, 4, 32, 96, 100, 80, -1, -1, 1, 0.5f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int sc = 0; sc < 2; sc++) run_multi(&cases[i], sc);
}

/* ---- bad inputs ----------------------------------------------------------------- */

static int try_init(lf_policy_kind kind, int budget, int sinks, int recent, int every, lf_error *err) {
    lf_config cfg = shape(2, 4, 2, 16);
    /* against float32 references */
    lf_policy_config pc = policy_config(kind, budget, LF_KV_F32);
    pc.sinks = sinks;
    pc.recent = recent;
    pc.evict_every = every;
    lf_kv_cache c;
    int rc = lf_kv_cache_init(&c, &cfg, &pc, budget, err);
    if (rc == 0) lf_kv_cache_free(&c);
    return rc;
}

static void expect_init_error(lf_policy_kind kind, int budget, int sinks, int recent, int every, const char *a,
                              const char *b) {
    lf_error err = {{0}};
    assert_int_equal(try_init(kind, budget, sinks, recent, every, &err), -1);
    if (!strstr(err.msg, a) || (b && !strstr(err.msg, b)))
        fail_msg("error '%s' does not name '%s'%s%s", err.msg, a, b ? " and " : "", b ? b : "");
}

/* --protect-prompt: out of range, no slot left to evict, a share too small
 * for SnapKV's selection of a long prompt, policies it does not apply to,
 * the GPU. */
static void test_protect_prompt_errors(void **state) {
    (void)state;
    lf_config cfg = shape(1, 4, 2, 16);
    const struct {
        lf_policy_kind kind;
        int budget, recent;
        float share;
        const char *a, *b;
    } bad[] = {
        {LF_POLICY_LONGFLOW, 64, -1, 1.0f, "--protect-prompt", "(0, 1)"},
        {LF_POLICY_LONGFLOW, 64, -1, -0.5f, "--protect-prompt", "(0, 1)"},
        {LF_POLICY_H2O, 64, -1, 0.5f, "no slot to evict", "--recent 32"}, /* H2O's default recent budget/2 */
        {LF_POLICY_LONGFLOW, 64, 40, 0.5f, "no slot to evict", "--protect-prompt"},
        {LF_POLICY_RKV, 64, -1, 0.5f, "--protect-prompt", "rkv"},
        {LF_POLICY_FULL, 64, -1, 0.5f, "--protect-prompt", "full"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lf_policy_config pc;
        lf_policy_config_default(&pc);
        pc.kind = bad[i].kind;
        pc.recent = bad[i].recent;
        pc.protect_prompt = bad[i].share;
        lf_kv_cache c;
        lf_error err = {{0}};
        assert_int_equal(lf_kv_cache_init(&c, &cfg, &pc, bad[i].budget, &err), -1);
        if (!strstr(err.msg, bad[i].a) || !strstr(err.msg, bad[i].b))
            fail_msg("case %zu: error '%s' does not name '%s' and '%s'", i, err.msg, bad[i].a, bad[i].b);
    }
    lf_policy_config pc;
    lf_policy_config_default(&pc);
    pc.kind = LF_POLICY_LONGFLOW;
    pc.protect_prompt = 0.25f;
    lf_error err = {{0}};
    assert_int_equal(lf_policy_check_gpu(&pc, &err), -1);
    assert_non_null(strstr(err.msg, "CPU only"));
    /* 0.25 x 64 = 16 slots, raised to the 33 SnapKV's selection needs: a prompt of 20 is kept
     * whole, one of 40 compressed to 33; every prompt position is protected */
    lf_kv_cache c;
    assert_int_equal(lf_kv_cache_init(&c, &cfg, &pc, 64, &err), 0);
    assert_int_equal(lf_policy_prompt_room(&c.policy, 64), 33);
    pc.protect_prompt = 0.75f;
    assert_int_equal(lf_policy_prompt_room(&pc, 64), 48);
    pc.protect_prompt = 0.25f;
    assert_int_equal(lf_policy_prompt_room(&pc, 30), 29); /* (a budget under 34 keeps its budget-1) */
    float *q = calloc(40 * 4 * 16, sizeof *q), *k = calloc(40 * 2 * 16, sizeof *k), *v = calloc(40 * 2 * 16, sizeof *v);
    for (int i = 0; i < 40 * 4 * 16; i++) q[i] = frand(-1, 1);
    for (int i = 0; i < 40 * 2 * 16; i++) k[i] = v[i] = frand(-1, 1);
    assert_int_equal(lf_kv_prefill_layer(&c, 0, q, k, v, 20, &err), 0);
    assert_int_equal(c.layers[0].n_valid, 20);
    assert_int_equal(c.protect_upto, 20);
    assert_int_equal(lf_kv_prefill_layer(&c, 0, q, k, v, 40, &err), 0);
    assert_int_equal(c.layers[0].n_valid, 33);
    assert_int_equal(c.protect_upto, 40);
    lf_kv_cache_reset(&c);
    assert_int_equal(c.protect_upto, 0);
    lf_kv_cache_free(&c);
    free(q);
    free(k);
    free(v);
}

static void test_bad_inputs(void **state) {
    (void)state;
    expect_init_error(LF_POLICY_LONGFLOW, 0, -1, -1, 1, "budget", NULL);
    expect_init_error(LF_POLICY_LONGFLOW, -5, -1, -1, 1, "budget", "-5");
    expect_init_error(LF_POLICY_FULL, 0, -1, -1, 1, "budget", NULL);
    expect_init_error(LF_POLICY_LONGFLOW, 10, 4, 6, 1, "--sinks", "--recent");
    expect_init_error(LF_POLICY_LONGFLOW, 10, -2, -1, 1, "--sinks", NULL);
    expect_init_error(LF_POLICY_H2O, 10, -1, -3, 1, "--recent", NULL);
    expect_init_error(LF_POLICY_LONGFLOW, 10, -1, -1, 0, "--evict-every", NULL);
    expect_init_error(LF_POLICY_LONGFLOW, 10, 2, 2, 7, "--evict-every", NULL);
    expect_init_error(LF_POLICY_TOVA, 64, -1, -1, 4, "--evict-every", "longflow");
    expect_init_error(LF_POLICY_RKV, 64, 4, -1, 1, "--sinks", "rkv");
    expect_init_error(LF_POLICY_STREAMING, 64, -1, 8, 1, "--recent", "streaming");
    expect_init_error(LF_POLICY_RKV, 8, -1, -1, 1, "rkv", NULL);
    expect_init_error(lf_policy_count(), 64, -1, -1, 1, "policy", NULL);
    expect_init_error((lf_policy_kind)-3, 64, -1, -1, 1, "policy", NULL);
    lf_error err;
    assert_int_equal(try_init(LF_POLICY_LONGFLOW, 64, 4, 16, 8, &err), 0);

    /* a prompt longer than B-1 needs B > 33 for every budgeted policy */
    lf_config cfg = shape(1, 4, 2, 16);
    const int n = 60;
    float *q = calloc((size_t)n * 4 * 16, sizeof *q), *k = calloc((size_t)n * 2 * 16, sizeof *k);
    float *v = calloc((size_t)n * 2 * 16, sizeof *v);
    for (int kind = LF_POLICY_LONGFLOW; kind < lf_policy_count(); kind++) {
        for (int B = 20; B <= 40; B++) {
            if (kind == LF_POLICY_RKV && B <= 8) continue;
            /* against float32 references */
            lf_policy_config pc = policy_config((lf_policy_kind)kind, B, LF_KV_F32);
            lf_kv_cache c;
            if (lf_kv_cache_init(&c, &cfg, &pc, B, &err)) fail_msg("%s", err.msg);
            int rc = lf_kv_prefill_layer(&c, 0, q, k, v, n, &err);
            if (B <= 33) {
                assert_int_equal(rc, -1);
                assert_non_null(strstr(err.msg, "--budget"));
                assert_non_null(strstr(err.msg, "at least 34"));
            } else {
                if (rc) fail_msg("budget %d: %s", B, err.msg);
                assert_int_equal(c.layers[0].n_valid, B - 1);
            }
            /* a prompt of B-1 tokens always fits */
            assert_int_equal(lf_kv_prefill_layer(&c, 0, q, k, v, B - 1, &err), 0);
            assert_int_equal(c.layers[0].n_valid, B - 1);
            lf_kv_cache_free(&c);
        }
    }
    /* --sinks that leave SnapKV no room */
    {
        /* against float32 references */
        lf_policy_config pc = policy_config(LF_POLICY_LONGFLOW, 40, LF_KV_F32);
        pc.sinks = 7;
        lf_kv_cache c;
        assert_int_equal(lf_kv_cache_init(&c, &cfg, &pc, 40, &err), 0);
        assert_int_equal(lf_kv_prefill_layer(&c, 0, q, k, v, n, &err), -1);
        assert_non_null(strstr(err.msg, "--sinks"));
        lf_kv_cache_free(&c);
    }
    /* full: the prompt must fit, layer in range, non-empty prompt */
    {
        lf_policy_config pc;
        lf_policy_config_default(&pc);
        pc.kv_dtype = LF_KV_F32; /* against float32 references */
        lf_kv_cache c;
        assert_int_equal(lf_kv_cache_init(&c, &cfg, &pc, 50, &err), 0);
        assert_int_equal(lf_kv_prefill_layer(&c, 0, q, k, v, n, &err), -1);
        assert_non_null(strstr(err.msg, "full"));
        assert_int_equal(lf_kv_prefill_layer(&c, 1, q, k, v, 10, &err), -1);
        assert_non_null(strstr(err.msg, "layer"));
        assert_int_equal(lf_kv_prefill_layer(&c, 0, q, k, v, 0, &err), -1);
        lf_kv_cache_free(&c);
    }
    /* a model shape the kernel cannot take */
    {
        lf_config bad = shape(1, 6, 4, 16);
        lf_policy_config pc;
        lf_policy_config_default(&pc);
        pc.kv_dtype = LF_KV_F32; /* against float32 references */
        lf_kv_cache c;
        assert_int_equal(lf_kv_cache_init(&c, &bad, &pc, 10, &err), -1);
        assert_non_null(strstr(err.msg, "heads"));
    }
    free(q);
    free(k);
    free(v);
}

/* The engine may cap the budget at prompt + max tokens: flags valid for the
 * user's budget must not fail then. */
static void test_capped_budget(void **state) {
    (void)state;
    lf_config cfg = shape(1, 4, 2, 16);
    /* against float32 references */
    lf_policy_config pc = policy_config(LF_POLICY_H2O, 256, LF_KV_F32);
    pc.recent = 100;
    lf_kv_cache c;
    lf_error err;
    assert_int_equal(lf_kv_cache_init(&c, &cfg, &pc, 30, &err), 0);
    assert_int_equal(c.budget, 30);
    assert_true(c.policy.sinks + c.policy.recent < 30);
    lf_kv_cache_free(&c);
    pc.recent = 300; /* wrong for the user's budget too */
    assert_int_equal(lf_kv_cache_init(&c, &cfg, &pc, 30, &err), -1);
}

/* ---- accounting -------------------------------------------------------------------- */

static void test_accounting(void **state) {
    (void)state;
    rng = 31;
    const int H = 4, G = 2, hd = 16, nl = 3, B = 40, n = 10;
    lf_config cfg = shape(nl, H, G, hd);
    const size_t per_tok = (size_t)nl * 2 * G * hd * sizeof(float);
    float *q = malloc((size_t)n * H * hd * sizeof *q), *k = malloc((size_t)n * G * hd * sizeof *k);
    float *v = malloc((size_t)n * G * hd * sizeof *v);
    for (int i = 0; i < n * H * hd; i++) q[i] = frand(-1, 1);
    for (int i = 0; i < n * G * hd; i++) k[i] = v[i] = frand(-1, 1);
    lf_error err;
    for (int kind = 0; kind < lf_policy_count(); kind++) {
        /* against float32 references */
        lf_policy_config pc = policy_config((lf_policy_kind)kind, B, LF_KV_F32);
        lf_kv_cache c;
        assert_int_equal(lf_kv_cache_init(&c, &cfg, &pc, B, &err), 0);
        const int cap = c.capacity;
        assert_int_equal(cap, B + (kind == LF_POLICY_RKV ? LF_RKV_BUFFER : 0));
        assert_true(c.bytes >= 2 * (size_t)nl * G * cap * hd * sizeof(float));
        for (int l = 0; l < nl; l++) assert_int_equal(lf_kv_prefill_layer(&c, l, q, k, v, n, &err), 0);
        assert_int_equal(lf_kv_cache_tokens(&c), n);
        assert_int_equal(lf_kv_cache_bytes_in_use(&c), n * per_tok);
        lf_kv_cache *cp = &c;
        float dq[4 * 16], dk[2 * 16], dv[2 * 16], out[4 * 16];
        int steps = 400, maxheld = 0;
        for (int t = 0; t < steps; t++) {
            if (kind == LF_POLICY_FULL && lf_kv_cache_room(&c) == 0) {
                assert_int_equal(t, B - n);
                break;
            }
            for (int i = 0; i < H * hd; i++) dq[i] = frand(-1, 1);
            for (int i = 0; i < G * hd; i++) dk[i] = dv[i] = frand(-1, 1);
            int p = n + t;
            for (int l = 0; l < nl; l++) lf_kv_decode_layer(&cp, 1, l, dq, dk, dv, &p, out);
            int held = lf_kv_cache_tokens(&c);
            assert_int_equal(held, n + t + 1 < cap ? n + t + 1 : (kind == LF_POLICY_RKV ? held : cap));
            assert_int_equal(lf_kv_cache_bytes_in_use(&c), (size_t)held * per_tok);
            if (held > maxheld) maxheld = held;
            assert_true(held <= cap);
        }
        if (kind == LF_POLICY_RKV) {
            /* R-KV holds every slot for a moment before each compression */
            assert_int_equal(c.peak_valid, cap);
            assert_true(lf_kv_cache_peak_bytes_in_use(&c) > (size_t)maxheld * per_tok);
            assert_true(lf_kv_cache_peak_bytes_in_use(&c) <= (size_t)cap * per_tok);
        } else {
            assert_int_equal(c.peak_valid, maxheld);
            assert_int_equal(lf_kv_cache_peak_bytes_in_use(&c), (size_t)maxheld * per_tok);
        }
        assert_false(c.overflow);
        if (kind == LF_POLICY_RKV) assert_true(lf_rkv_compressions(&c, 0) >= 2);
        if (kind != LF_POLICY_FULL) assert_int_equal(lf_kv_cache_room(&c), INT_MAX);
        if (kind == LF_POLICY_FULL) {
            /* a decode with no room is flagged, never written past the end */
            int p = 999;
            for (int l = 0; l < nl; l++) lf_kv_decode_layer(&cp, 1, l, dq, dk, dv, &p, out);
            assert_true(c.overflow);
            assert_int_equal(lf_kv_cache_tokens(&c), B);
        }
        /* reset empties it */
        lf_kv_cache_reset(&c);
        assert_int_equal(lf_kv_cache_tokens(&c), 0);
        assert_int_equal(lf_kv_cache_bytes_in_use(&c), 0);
        lf_kv_cache_free(&c);
    }
    free(q);
    free(k);
    free(v);
}

static void test_names(void **state) {
    (void)state;
    for (int i = 0; i < lf_policy_count(); i++) {
        lf_policy_kind k;
        const char *name = lf_policy_name((lf_policy_kind)i);
        assert_int_equal(lf_policy_from_name(name, &k), 0);
        assert_int_equal(k, i);
        const lf_policy_desc *info = lf_policy_get((lf_policy_kind)i);
        assert_non_null(info);
        assert_string_equal(info->name, name);
        assert_true(strlen(info->paper) > 0 && strlen(info->rule) > 0 && strlen(info->aux) > 0);
    }
    lf_policy_kind k;
    assert_int_equal(lf_policy_from_name("bogus", &k), -1);
    assert_int_equal(lf_policy_from_name("LongFlow", &k), -1);
    assert_int_equal(lf_policy_from_name(NULL, &k), -1);
    assert_null(lf_policy_get(lf_policy_count()));
    assert_string_equal(lf_policy_name(lf_policy_count()), "?");
    /* the public header's names are the registry's first entries */
    const struct {
        lf_policy_kind k;
        const char *name;
    } builtin[] = {{LF_POLICY_FULL, "full"}, {LF_POLICY_LONGFLOW, "longflow"}, {LF_POLICY_STREAMING, "streaming"},
                   {LF_POLICY_TOVA, "tova"}, {LF_POLICY_H2O, "h2o"},           {LF_POLICY_VATP, "vatp"},
                   {LF_POLICY_RKV, "rkv"}};
    for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++)
        assert_string_equal(lf_policy_name(builtin[i].k), builtin[i].name);
    /* the list the CLI prints: every name, in order, and truncation */
    char list[512], want[512] = "";
    lf_policy_list(list, sizeof list);
    for (int i = 0; i < lf_policy_count(); i++) {
        if (i) strcat(want, ", ");
        strcat(want, lf_policy_name((lf_policy_kind)i));
    }
    assert_string_equal(list, want);
    char small[8];
    lf_policy_list(small, sizeof small);
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_memory_equal(small, want, sizeof small - 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_protect_prompt_errors),
        cmocka_unit_test(test_capped_budget),
        cmocka_unit_test(test_worked_examples),
        cmocka_unit_test(test_every_policy_many_steps),
        cmocka_unit_test(test_accounting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
