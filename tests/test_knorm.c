/* KNorm (src/kv/policies/knorm.c) on the CPU cache against a separate
 * double-precision reference written here from the paper's rule (Devoto et
 * al., arXiv 2406.11430): each slot's score is minus the L2 norm of its key,
 * averaged over the layer's KV heads; the next token goes into an empty slot
 * (the lowest) while there is one, else into the unprotected slot with the
 * largest norm (lowest index on ties). Short prompts (kept whole), long ones
 * (SnapKV-compressed: the reference adopts the kept positions, which
 * test_snapkv checks, and scores them itself), --sinks/--recent, several
 * shapes; every step's slot choice, stored scores and attention output. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kv/cache.h"
#include "kv/policies/common.h"
#include "kv/policy.h"
#include "model/config.h"

#include "test_util.h"

typedef struct ref {
    int G, hd, cap;
    int sinks, recent;
    double *K, *V; /* [G][cap][hd] */
    int *pos;   /* [cap], -1 empty */
} ref;

/* -mean_g ||k_g||_2 of slot i, in double */
static double ref_score(const ref *R, int i) {
    double s = 0;
    for (int g = 0; g < R->G; g++) {
        const double *k = R->K + ((size_t)g * R->cap + i) * R->hd;
        double n2 = 0;
        for (int d = 0; d < R->hd; d++) n2 += k[d] * k[d];
        s += sqrt(n2);
    }
    return -s / R->G;
}

static void ref_store(ref *R, int slot, const float *k, const float *v, int p) {
    for (int g = 0; g < R->G; g++)
        for (int d = 0; d < R->hd; d++) {
            R->K[((size_t)g * R->cap + slot) * R->hd + d] = k[(size_t)g * R->hd + d];
            R->V[((size_t)g * R->cap + slot) * R->hd + d] = v[(size_t)g * R->hd + d];
        }
    R->pos[slot] = p;
}

/* The reference's choice, and the gap to the runner-up among the candidates
 * (a choice closer than float rounding may go either way). */
static int ref_choose(const ref *R, int pnow, double *gap) {
    *gap = INFINITY;
    for (int i = 0; i < R->cap; i++)
        if (R->pos[i] < 0) return i;
    int best = -1;
    double bs = INFINITY, second = INFINITY;
    for (int i = 0; i < R->cap; i++) {
        const int p = R->pos[i];
        if (p < R->sinks || p > pnow - R->recent) continue;
        const double s = ref_score(R, i);
        if (s < bs) {
            second = bs;
            bs = s;
            best = i;
        } else if (s < second) {
            second = s;
        }
    }
    *gap = second - bs;
    return best;
}

/* One key row of n values times a random scale, so that norms differ widely. */
static void random_keys(float *k, int n, float scale_lo, float scale_hi) {
    const float sc = frand(scale_lo, scale_hi);
    for (int e = 0; e < n; e++) k[e] = frand(-1, 1) * sc;
}

static void run(int H, int G, int hd, int B, int n_prompt, int sinks, int recent, int steps, uint64_t seed) {
    rng = seed;
    lf_config cfg = shape(1, H, G, hd);
    lf_policy_config pc;
    lf_policy_config_default(&pc);
    pc.kv_dtype = LF_KV_F32; /* against float32 references */
    assert_int_equal(lf_policy_from_name("knorm", &pc.kind), 0);
    pc.budget = B;
    pc.sinks = sinks;
    pc.recent = recent;
    lf_kv_cache c;
    lf_error err;
    if (lf_kv_cache_init(&c, &cfg, &pc, B, &err)) fail_msg("init: %s", err.msg);
    const size_t qn = (size_t)H * hd, kn = (size_t)G * hd;
    float *q = malloc((size_t)n_prompt * qn * sizeof *q), *k = malloc((size_t)n_prompt * kn * sizeof *k);
    float *v = malloc((size_t)n_prompt * kn * sizeof *v);
    for (size_t i = 0; i < (size_t)n_prompt * qn; i++) q[i] = frand(-1, 1);
    for (size_t i = 0; i < (size_t)n_prompt * kn; i += (size_t)hd) random_keys(k + i, hd, 0.2f, 3.0f);
    for (size_t i = 0; i < (size_t)n_prompt * kn; i++) v[i] = frand(-1, 1);
    if (lf_kv_prefill_layer(&c, 0, q, k, v, n_prompt, &err)) fail_msg("prefill: %s", err.msg);

    ref R = {G, hd, c.capacity, c.policy.sinks, c.policy.recent, NULL, NULL, NULL};
    R.K = calloc((size_t)G * R.cap * hd, sizeof *R.K);
    R.V = calloc((size_t)G * R.cap * hd, sizeof *R.V);
    R.pos = malloc((size_t)R.cap * sizeof *R.pos);
    for (int i = 0; i < R.cap; i++) R.pos[i] = -1;
    const lf_kv_layer *L = &c.layers[0];
    const lf_scored_layer *SC = lf_scored(&c, 0);
    assert_non_null(SC);
    /* the prompt: the kept positions (all of them when the prompt fits) */
    const int nk = n_prompt <= B - 1 ? n_prompt : B - 1;
    assert_int_equal(L->n_valid, nk);
    for (int i = 0; i < nk; i++) {
        const int p = L->pos[i];
        assert_true(p >= 0 && p < n_prompt);
        if (n_prompt <= B - 1) assert_int_equal(p, i);
        ref_store(&R, i, k + (size_t)p * kn, v + (size_t)p * kn, p);
    }
    int next = nk; /* the slot after the prompt */
    assert_int_equal(L->next_slot, next);

    float *dq = malloc(qn * sizeof *dq), *dk = malloc(kn * sizeof *dk), *dv = malloc(kn * sizeof *dv);
    float *out = malloc(qn * sizeof *out);
    lf_kv_cache *cp = &c;
    int ties = 0;
    for (int t = 0; t < steps; t++) {
        const int p = n_prompt + t;
        for (size_t i = 0; i < qn; i++) dq[i] = frand(-1, 1);
        for (size_t i = 0; i < kn; i += (size_t)hd) random_keys(dk + i, hd, 0.2f, 3.0f);
        for (size_t i = 0; i < kn; i++) dv[i] = frand(-1, 1);
        lf_kv_decode_layer(&cp, 1, 0, dq, dk, dv, &p, out);
        ref_store(&R, next, dk, dv, p);
        for (int i = 0; i < R.cap; i++) assert_int_equal(L->pos[i], R.pos[i]);
        /* the stored scores */
        for (int i = 0; i < R.cap; i++) {
            const double want = R.pos[i] < 0 ? -INFINITY : ref_score(&R, i);
            const double got = SC->score[i];
            if (isinf(want)) {
                assert_true(isinf(got) && got < 0);
            } else if (fabs(got - want) > 1e-5 * fabs(want) + 1e-6) {
                fail_msg("step %d: score of slot %d: got %.9g, reference %.9g", t, i, got, want);
            }
        }
        /* the attention output: softmax over the valid slots, in double */
        for (int h = 0; h < H; h++) {
            const int g = h / (H / G);
            double mx = -INFINITY, sum = 0, o[64] = {0};
            double *lg = malloc((size_t)R.cap * sizeof *lg);
            for (int i = 0; i < R.cap; i++) {
                lg[i] = -INFINITY;
                if (R.pos[i] < 0) continue;
                double d = 0;
                for (int e = 0; e < hd; e++)
                    d += (double)dq[(size_t)h * hd + e] * R.K[((size_t)g * R.cap + i) * hd + e];
                lg[i] = d / sqrt((double)hd);
                mx = fmax(mx, lg[i]);
            }
            for (int i = 0; i < R.cap; i++) {
                if (R.pos[i] < 0) continue;
                const double w = exp(lg[i] - mx);
                sum += w;
                const double *vv = R.V + ((size_t)g * R.cap + i) * hd;
                for (int e = 0; e < hd; e++) o[e] += w * vv[e];
            }
            for (int e = 0; e < hd; e++) {
                const double want = o[e] / sum, got = out[(size_t)h * hd + e];
                if (fabs(got - want) > 1e-4) fail_msg("step %d head %d dim %d: out %.7g, reference %.7g", t, h, e, got, want);
            }
            free(lg);
        }
        /* the next slot */
        double gap;
        const int want = ref_choose(&R, p, &gap);
        const int got = L->next_slot;
        if (got != want) {
            const double sg = ref_score(&R, got), sw = ref_score(&R, want);
            if (!(R.pos[got] >= R.sinks && R.pos[got] <= p - R.recent) || fabs(sg - sw) > 1e-5 * fabs(sw))
                fail_msg("step %d: next slot %d (score %.9g), reference %d (score %.9g)", t, got, sg, want, sw);
            ties++;
        }
        next = got;
    }
    assert_true(ties <= steps / 50);
    /* the sinks and the recent window were never evicted */
    for (int i = 0; i < R.cap; i++) assert_true(R.pos[i] >= 0);
    int held_sinks = 0;
    for (int i = 0; i < R.cap; i++) held_sinks += R.pos[i] < R.sinks;
    assert_int_equal(held_sinks, R.sinks < nk ? R.sinks : nk);
    free(dq);
    free(dk);
    free(dv);
    free(out);
    free(R.K);
    free(R.V);
    free(R.pos);
    free(q);
    free(k);
    free(v);
    lf_kv_cache_free(&c);
}

static void test_short_prompt(void **state) {
    (void)state;
    run(4, 2, 16, 24, 10, -1, -1, 300, 11);
    run(8, 8, 32, 40, 39, -1, -1, 200, 12);
    run(6, 1, 8, 17, 3, -1, -1, 200, 13);
}

static void test_long_prompt(void **state) {
    (void)state;
    run(4, 2, 16, 40, 100, -1, -1, 200, 21);
    run(8, 4, 64, 48, 300, -1, -1, 150, 22);
}

static void test_protected(void **state) {
    (void)state;
    run(4, 2, 16, 32, 20, 3, 5, 300, 31);
    run(4, 4, 16, 50, 120, 2, 10, 200, 32);
}

/* The registry line: the name, the description and the rules it resolves. */
static void test_descriptor(void **state) {
    (void)state;
    lf_policy_kind k;
    assert_int_equal(lf_policy_from_name("knorm", &k), 0);
    const lf_policy_desc *d = lf_policy_get(k);
    assert_non_null(d);
    assert_string_equal(lf_policy_name(k), "knorm");
    assert_true(d->budgeted);
    assert_int_equal(d->score, LF_SCORE_STORED);
    assert_int_equal(d->slot_stat, LF_SLOT_STAT_NEG_KEY_L2);
    assert_true(d->gpu == LF_GPU_ARGMIN);
    lf_policy_config in, out;
    lf_policy_config_default(&in);
    in.kv_dtype = LF_KV_F32; /* against float32 references */
    in.kind = k;
    lf_error err;
    assert_int_equal(lf_policy_resolve(&in, 100, &out, &err), 0);
    assert_int_equal(out.sinks, 0);
    assert_int_equal(out.recent, 0);
    in.evict_every = 4;
    assert_int_equal(lf_policy_resolve(&in, 100, &out, &err), -1);
    assert_non_null(strstr(err.msg, "--evict-every"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_descriptor),
        cmocka_unit_test(test_short_prompt),
        cmocka_unit_test(test_long_prompt),
        cmocka_unit_test(test_protected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
