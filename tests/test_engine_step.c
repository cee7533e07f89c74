/* The engine's scheduler API (lf_engine_submit_params, lf_engine_step,
 * lf_engine_cancel, lf_engine_release) on the CPU with the bundled model
 * (models/tiny-reasoner). The reference for greedy output is independent of
 * the engine's loop: every next token is the argmax of a fresh prefill of the
 * whole sequence so far (no decode step, no batching, no sampler). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cpu/forward.h"
#include "kv/buffers.h"
#include "kv/cache.h"
#include "longflow.h"
#include "model/model.h"
#include "sampler/sampler.h"

static lf_model *model;

static const char *model_dir(void) {
    const char *s = getenv("LF_SOURCE_DIR");
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/models/tiny-reasoner", s && *s ? s : ".");
    return buf;
}

static int setup(void **state) {
    (void)state;
    lf_error err = {{0}};
    if (lf_model_load(model_dir(), &model, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    lf_model_free(model);
    return 0;
}

/* A prompt of n ids drawn from the vocabulary with a seed. */
static void make_prompt(int *ids, int n, uint32_t seed) {
    const int V = lf_model_config(model)->vocab_size;
    for (int i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        ids[i] = 3 + (int)((seed >> 8) % (uint32_t)(V - 3)); /* past bos/pad/eos */
    }
}

/* Greedy continuation by full recomputation: n_gen tokens after prompt. */
static void reference_greedy(const int *prompt, int n_prompt, int n_gen, int *out) {
    const lf_config *c = lf_model_config(model);
    int *seq = malloc((size_t)(n_prompt + n_gen) * sizeof(int));
    float *logits = malloc((size_t)c->vocab_size * sizeof(float));
    memcpy(seq, prompt, (size_t)n_prompt * sizeof(int));
    lf_cpu_ctx *ctx = NULL;
    lf_error err = {{0}};
    assert_int_equal(lf_cpu_ctx_create(model, 1, &ctx, &err), 0);
    lf_policy_config pc;
    lf_policy_config_default(&pc);
    pc.kv_dtype = LF_KV_F32; /* against float32 references */
    for (int t = 0; t < n_gen; t++) {
        lf_kv_cache cache;
        assert_int_equal(lf_kv_cache_init(&cache, c, &pc, n_prompt + n_gen, &err), 0);
        assert_int_equal(lf_cpu_prefill(ctx, model, &cache, seq, n_prompt + t, logits, &err), 0);
        seq[n_prompt + t] = out[t] = lf_argmax(logits, c->vocab_size);
        lf_kv_cache_free(&cache);
    }
    lf_cpu_ctx_free(ctx);
    free(logits);
    free(seq);
}

static lf_engine *make_engine_dtype(int max_seqs, int max_tokens, lf_kv_dtype dtype) {
    lf_engine_config ec;
    lf_engine_config_default(&ec);
    ec.policy.kv_dtype = dtype;
    ec.max_seqs = max_seqs;
    ec.max_tokens = max_tokens;
    ec.threads = 1;
    lf_engine *e = NULL;
    lf_error err = {{0}};
    assert_int_equal(lf_engine_create(model, &ec, &e, &err), 0);
    return e;
}

static lf_engine *make_engine(int max_seqs, int max_tokens) {
    lf_policy_config pc;
    lf_policy_config_default(&pc);
    return make_engine_dtype(max_seqs, max_tokens, pc.kv_dtype);
}

typedef struct {
    int calls;
    int last_id;
} cb_count;

static void count_tokens(void *user, const lf_generation *g, int token) {
    cb_count *c = user;
    (void)token;
    c->calls++;
    c->last_id = g->id;
}

/* Requests with different max_tokens joining a batch of 2 at different steps:
 * each one's tokens equal its greedy reference, each stops at its own length. */
static void test_step_matches_reference(void **state) {
    (void)state;
    enum { N = 4, P = 12 };
    const int lens[N] = {5, 9, 3, 7};
    int prompts[N][P];
    lf_engine *e = make_engine(2, 16);
    lf_error err = {{0}};
    int ids[N];
    for (int i = 0; i < N; i++) {
        make_prompt(prompts[i], P, 17u + (uint32_t)i);
        lf_request_params p;
        lf_request_params_default(e, prompts[i], P, &p);
        p.max_tokens = lens[i];
        p.ignore_eos = true;
        ids[i] = lf_engine_submit_params(e, &p, &err);
        assert_true(ids[i] >= 0);
    }
    int queued, running;
    assert_int_equal(lf_engine_pending(e, &queued, &running), N);
    assert_int_equal(queued, N);
    cb_count cc = {0, -1};
    int steps = 0;
    while (lf_engine_pending(e, NULL, NULL) > 0) {
        assert_int_equal(lf_engine_step(e, count_tokens, &cc, &err), 0);
        lf_engine_pending(e, &queued, &running);
        assert_true(running <= 2);
        steps++;
    }
    int total = 0;
    for (int i = 0; i < N; i++) {
        const lf_generation *g = lf_engine_result(e, ids[i]);
        assert_non_null(g);
        assert_true(g->done);
        assert_string_equal(g->finish_reason, "length");
        assert_int_equal(g->n_tokens, lens[i]);
        int ref[16];
        reference_greedy(prompts[i], P, lens[i], ref);
        assert_memory_equal(g->tokens, ref, (size_t)lens[i] * sizeof(int));
        total += lens[i];
    }
    assert_int_equal(cc.calls, total);
    assert_true(steps < total); /* batched: fewer steps than tokens */
    lf_engine_free(e);
}

/* Cancel a running and a queued request: slots freed at once, the queued one
 * never runs, the other requests are unaffected. */
static void test_cancel(void **state) {
    (void)state;
    enum { P = 10 };
    int a[P], b[P], c[P];
    make_prompt(a, P, 1);
    make_prompt(b, P, 2);
    make_prompt(c, P, 3);
    lf_engine *e = make_engine(1, 8);
    lf_error err = {{0}};
    lf_request_params p;
    lf_request_params_default(e, a, P, &p);
    p.ignore_eos = true;
    int ia = lf_engine_submit_params(e, &p, &err);
    p.prompt = b;
    int ib = lf_engine_submit_params(e, &p, &err);
    p.prompt = c;
    int ic = lf_engine_submit_params(e, &p, &err);
    assert_int_equal(lf_engine_step(e, NULL, NULL, &err), 0);
    int queued, running;
    lf_engine_pending(e, &queued, &running);
    assert_int_equal(running, 1);
    assert_int_equal(queued, 2);
    assert_int_equal(lf_engine_cancel(e, ia, &err), 0);
    assert_int_equal(lf_engine_cancel(e, ib, &err), 0);
    lf_engine_pending(e, &queued, &running);
    assert_int_equal(running, 0);
    assert_int_equal(queued, 1);
    assert_string_equal(lf_engine_result(e, ia)->finish_reason, "cancelled");
    assert_string_equal(lf_engine_result(e, ib)->finish_reason, "cancelled");
    assert_int_equal(lf_engine_result(e, ib)->n_tokens, 0);
    /* a cancelled request can be released; a queued one cannot */
    assert_int_equal(lf_engine_release(e, ia, &err), 0);
    assert_null(lf_engine_result(e, ia));
    assert_int_equal(lf_engine_release(e, ic, &err), -1);
    assert_non_null(strstr(err.msg, "queued"));
    assert_int_equal(lf_engine_release(e, ib, &err), 0);
    assert_int_equal(lf_engine_run(e, NULL, NULL, &err), 0);
    const lf_generation *g = lf_engine_result(e, ic);
    assert_int_equal(g->n_tokens, 8);
    int ref[8];
    reference_greedy(c, P, 8, ref);
    assert_memory_equal(g->tokens, ref, sizeof ref);
    assert_int_equal(lf_engine_release(e, ic, &err), 0);
    assert_int_equal(lf_engine_release(e, ic, &err), -1);
    assert_int_equal(lf_engine_cancel(e, 12345, &err), -1);
    lf_engine_free(e);
}

/* A stop id ends the request with finish_reason "stop" right after it. */
static void test_stop_ids(void **state) {
    (void)state;
    enum { P = 14 };
    int pr[P];
    make_prompt(pr, P, 99);
    int ref[6];
    reference_greedy(pr, P, 6, ref);
    lf_engine *e = make_engine(1, 6);
    lf_error err = {{0}};
    lf_request_params p;
    lf_request_params_default(e, pr, P, &p);
    p.ignore_eos = true;
    p.stop_ids = &ref[2];
    p.n_stop_ids = 1;
    int id = lf_engine_submit_params(e, &p, &err);
    assert_int_equal(lf_engine_run(e, NULL, NULL, &err), 0);
    const lf_generation *g = lf_engine_result(e, id);
    int first = 0;
    while (ref[first] != ref[2]) first++;
    assert_int_equal(g->n_tokens, first + 1);
    assert_string_equal(g->finish_reason, "stop");
    lf_engine_free(e);
}

/* A request's own policy and budget: its cache never holds more than the
 * budget, while a full-cache request beside it holds everything. */
static void test_per_request_policy(void **state) {
    (void)state;
    enum { P = 40, G = 30 };
    int pr[P];
    make_prompt(pr, P, 5);
    lf_engine *e = make_engine(2, G);
    lf_error err = {{0}};
    lf_request_params p;
    lf_request_params_default(e, pr, P, &p);
    p.ignore_eos = true;
    int full = lf_engine_submit_params(e, &p, &err);
    p.policy = LF_POLICY_LONGFLOW;
    p.budget = 48;
    int lf = lf_engine_submit_params(e, &p, &err);
    assert_true(full >= 0 && lf >= 0);
    assert_int_equal(lf_engine_run(e, NULL, NULL, &err), 0);
    assert_int_equal((int)lf_engine_result(e, full)->kv_tokens_peak, P + G - 1);
    assert_int_equal((int)lf_engine_result(e, lf)->kv_tokens_peak, 48);
    lf_engine_free(e);
}

/* Sampling per request: a seeded sampled request gives the same tokens alone
 * and beside a greedy one; different seeds give a different stream. */
static void test_per_request_sampling(void **state) {
    (void)state;
    enum { P = 8, G = 24 };
    int pr[P];
    make_prompt(pr, P, 7);
    lf_error err = {{0}};
    int alone[G];
    for (int round = 0; round < 2; round++) {
        lf_engine *e = make_engine(2, G);
        lf_request_params p;
        lf_request_params_default(e, pr, P, &p);
        p.ignore_eos = true;
        lf_request_params q = p;
        p.sampling.temperature = 1.5f;
        p.sampling.seed = 1234;
        int id = lf_engine_submit_params(e, &p, &err); /* id 0 in both rounds: the same stream */
        assert_int_equal(id, 0);
        if (round == 1) assert_true(lf_engine_submit_params(e, &q, &err) > 0); /* a greedy neighbour */
        assert_int_equal(lf_engine_run(e, NULL, NULL, &err), 0);
        const lf_generation *g = lf_engine_result(e, id);
        assert_int_equal(g->n_tokens, G);
        if (round == 0) memcpy(alone, g->tokens, sizeof alone);
        else assert_memory_equal(alone, g->tokens, sizeof alone);
        lf_engine_free(e);
    }
    int greedy[G];
    reference_greedy(pr, P, G, greedy);
    assert_memory_not_equal(alone, greedy, sizeof greedy);
}

/* Bad params are refused with a message naming the problem; nothing queued. */
static void test_bad_params(void **state) {
    (void)state;
    int pr[50];
    make_prompt(pr, 50, 11);
    lf_engine *e = make_engine(1, 4);
    lf_error err = {{0}};
    lf_request_params p;
    lf_request_params_default(e, pr, 50, &p);
    p.max_tokens = 0;
    assert_int_equal(lf_engine_submit_params(e, &p, &err), -1);
    assert_non_null(strstr(err.msg, "max_tokens"));
    p.max_tokens = 4;
    p.policy = LF_POLICY_LONGFLOW;
    p.budget = 20;
    assert_int_equal(lf_engine_submit_params(e, &p, &err), -1);
    assert_non_null(strstr(err.msg, "too small for a prompt of 50 tokens"));
    p.budget = 0;
    assert_int_equal(lf_engine_submit_params(e, &p, &err), -1);
    assert_non_null(strstr(err.msg, "positive number of slots"));
    p.policy = LF_POLICY_FULL;
    p.sampling.top_p = 0;
    assert_int_equal(lf_engine_submit_params(e, &p, &err), -1);
    p.sampling.top_p = 1;
    int bad_stop = 100000;
    p.stop_ids = &bad_stop;
    p.n_stop_ids = 1;
    assert_int_equal(lf_engine_submit_params(e, &p, &err), -1);
    assert_non_null(strstr(err.msg, "stop token 100000"));
    p.n_stop_ids = 0;
    pr[3] = -1;
    assert_int_equal(lf_engine_submit_params(e, &p, &err), -1);
    assert_non_null(strstr(err.msg, "index 3"));
    assert_int_equal(lf_engine_pending(e, NULL, NULL), 0);
    lf_engine_free(e);
}

/* Many requests submitted, served and released one after another: the
 * engine keeps no memory of released ones (results gone, ids keep growing). */
static void test_release_many(void **state) {
    (void)state;
    int pr[6];
    make_prompt(pr, 6, 3);
    lf_engine *e = make_engine(3, 2);
    lf_error err = {{0}};
    int last = -1;
    for (int i = 0; i < 200; i++) {
        int id = lf_engine_submit(e, pr, 6, &err);
        assert_int_equal(id, last + 1);
        last = id;
        while (lf_engine_pending(e, NULL, NULL) > 0) assert_int_equal(lf_engine_step(e, NULL, NULL, &err), 0);
        assert_true(lf_engine_result(e, id)->done);
        assert_int_equal(lf_engine_release(e, id, &err), 0);
        assert_null(lf_engine_result(e, id));
    }
    lf_engine_free(e);
}

/* Submit a greedy request (ignore_eos) of the engine's policy or `policy`
 * with `budget`, run the engine until nothing is pending, return its id. */
static int run_one(lf_engine *e, const int *prompt, int n_prompt, int max_tokens, lf_policy_kind policy, int budget) {
    lf_error err = {{0}};
    lf_request_params p;
    lf_request_params_default(e, prompt, n_prompt, &p);
    p.max_tokens = max_tokens;
    p.ignore_eos = true;
    p.policy = policy;
    p.budget = budget;
    int id = lf_engine_submit_params(e, &p, &err);
    assert_true(id >= 0);
    while (lf_engine_pending(e, NULL, NULL) > 0) assert_int_equal(lf_engine_step(e, NULL, NULL, &err), 0);
    return id;
}

/* Many short requests, two at a time: the caches' K/V buffers are allocated
 * for the first ones and taken again from the free list afterwards (never
 * more than max_seqs of them), and every request's tokens still equal its
 * greedy reference, which runs each token in a fresh cache. */
static void test_kv_buffers_reused(void **state) {
    (void)state;
    enum { N = 24, P = 9, G = 4 };
    lf_engine *e = make_engine_dtype(2, G, LF_KV_F32);
    lf_error err = {{0}};
    int prompts[N][P], ids[N];
    for (int i = 0; i < N; i++) {
        make_prompt(prompts[i], P, 100u + (uint32_t)i);
        ids[i] = lf_engine_submit(e, prompts[i], P, &err);
        assert_true(ids[i] >= 0);
        if (i % 3 == 2) /* requests arrive while others run */
            for (int k = 0; k < 2; k++) assert_int_equal(lf_engine_step(e, NULL, NULL, &err), 0);
    }
    while (lf_engine_pending(e, NULL, NULL) > 0) assert_int_equal(lf_engine_step(e, NULL, NULL, &err), 0);
    for (int i = 0; i < N; i++) {
        const lf_generation *g = lf_engine_result(e, ids[i]);
        assert_int_equal(g->n_tokens, G);
        int ref[G];
        reference_greedy(prompts[i], P, G, ref);
        assert_memory_equal(g->tokens, ref, sizeof ref);
        assert_int_equal(lf_engine_release(e, ids[i], &err), 0);
    }
    lf_engine_stats st;
    lf_engine_stats_get(e, &st);
    assert_true(st.kv_buffers_allocated >= 1 && st.kv_buffers_allocated <= 2);
    assert_int_equal(st.kv_buffers_allocated + st.kv_buffers_reused, N);
    lf_engine_free(e);
}

/* A request run in the buffer a longer request left behind (more layers'
 * rows, other positions: its K/V everywhere in the block) gives the tokens
 * it gives alone, for `full`, for evicting policies and for every KV dtype
 * (fp8 keeps its scales in the same buffer). */
static void test_kv_buffer_reuse_keeps_results(void **state) {
    (void)state;
    enum { PL = 60, GL = 110, PS = 20, GS = 12 }; /* the long cache is larger than R-KV's 24 + its 128-slot buffer */
    int longp[PL], shortp[PS];
    make_prompt(longp, PL, 77);
    make_prompt(shortp, PS, 78);
    const struct {
        lf_policy_kind kind;
        int budget;
    } pol[] = {{LF_POLICY_FULL, 0}, {LF_POLICY_LONGFLOW, 24}, {LF_POLICY_RKV, 24}};
    const lf_kv_dtype dtypes[] = {LF_KV_F32, LF_KV_BF16, LF_KV_FP8};
    lf_error err = {{0}};
    for (int d = 0; d < 3; d++)
        for (size_t k = 0; k < sizeof pol / sizeof pol[0]; k++) {
            lf_engine *alone = make_engine_dtype(1, GL, dtypes[d]);
            const lf_generation *a = lf_engine_result(alone, run_one(alone, shortp, PS, GS, pol[k].kind, pol[k].budget));
            lf_engine *after = make_engine_dtype(1, GL, dtypes[d]);
            run_one(after, longp, PL, GL, LF_POLICY_FULL, 0);
            const lf_generation *b = lf_engine_result(after, run_one(after, shortp, PS, GS, pol[k].kind, pol[k].budget));
            assert_int_equal(a->n_tokens, GS);
            assert_int_equal(b->n_tokens, GS);
            assert_memory_equal(a->tokens, b->tokens, GS * sizeof(int));
            lf_engine_stats st;
            lf_engine_stats_get(after, &st);
            assert_int_equal(st.kv_buffers_allocated, 1);
            assert_int_equal(st.kv_buffers_reused, 1);
            if (pol[k].kind == LF_POLICY_FULL && dtypes[d] == LF_KV_F32) {
                int ref[GS];
                reference_greedy(shortp, PS, GS, ref);
                assert_memory_equal(b->tokens, ref, sizeof ref);
            }
            lf_engine_free(alone);
            lf_engine_free(after);
        }
    (void)err;
}

/* The free list alone: best fit, and never more than its bound of buffers. */
static void test_kv_buffers_bound(void **state) {
    (void)state;
    lf_kv_buffers b;
    assert_int_equal(lf_kv_buffers_init(&b, 2), 0);
    lf_kv_buffer x, y, z;
    assert_int_equal(lf_kv_buffers_take(&b, 100, &x), 0);
    assert_int_equal(lf_kv_buffers_take(&b, 300, &y), 0);
    lf_kv_buffers_give(&b, x);
    lf_kv_buffers_give(&b, y);
    assert_int_equal(lf_kv_buffers_take(&b, 50, &z), 0); /* the smallest that fits: x's */
    assert_ptr_equal(z.p, x.p);
    assert_int_equal(z.bytes, 100);
    lf_kv_buffers_give(&b, z);
    assert_int_equal(lf_kv_buffers_take(&b, 1000, &z), 0); /* none fits: x's goes, a new one comes */
    assert_int_equal(b.n_free, 1);
    assert_int_equal(b.free_list[0].bytes, 300);
    lf_kv_buffers_give(&b, z);
    assert_int_equal(b.n_free, 2);
    assert_int_equal(b.allocated, 3);
    assert_int_equal(b.reused, 1);
    lf_kv_buffers_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step_matches_reference), cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_stop_ids),               cmocka_unit_test(test_per_request_policy),
        cmocka_unit_test(test_per_request_sampling),   cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_release_many),           cmocka_unit_test(test_kv_buffers_reused),
        cmocka_unit_test(test_kv_buffer_reuse_keeps_results), cmocka_unit_test(test_kv_buffers_bound),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
