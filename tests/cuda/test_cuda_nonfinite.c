/* NaN/Inf logits on the GPU path through the engine (issue 11). The
 * sampling kernel flags a row whose logits hold a NaN or a +inf (or are all
 * -inf) in the argmax pass it makes over every row anyway; lf_cuda_prefill
 * and lf_cuda_decode hand the flag back as the token LF_SAMPLE_NONFINITE
 * with the other tokens, and the engine fails exactly that request with the
 * CPU path's message (tests/test_hardening.c) while the rest of the batch
 * goes on. Runs on a GPU machine only (label cuda).
 *
 * The model: models/tiny-reasoner (Qwen3, bf16, tied embeddings) with its
 * embedding table replaced by a copy in which one weight of token X's row is
 * NaN. The lm_head keeps the original table (the model becomes untied), so
 * only a sequence that feeds token X through the model gets NaN activations.
 *
 * The batch: 6 random 16-token prompts and a 7th whose last token is X, all
 * running at once, 24 tokens each (ignore_eos), greedy and sampled
 * (temperature 0.8, top-p 0.9, min-p 0.05). X is chosen from a clean run so
 * that at least one sequence generates X before its last token and at least
 * one never meets X. What each request must do is predicted from the clean
 * model's run of the same batch:
 *   X in its prompt          fails in its prefill: 0 tokens, finish_reason
 *                            "error", "request N: logits are NaN or Inf at
 *                            step 0 (check the model's weights)"
 *   X generated at index t   fails at the decode step that feeds X: its
 *   (before its last token)  first t + 1 tokens are the clean run's, then
 *                            "error" at step t + 1
 *   never meets X            exactly the clean run's tokens and finish reason
 * and every lf_engine_step that fails returns the message of a request that
 * failed in that step, worded as the CPU engine words it. Rows of a batch of
 * <= 16 do not interact on the GPU (the GEMV path; attention and sampling
 * are per sequence, the sampling stream is the request id), which is what
 * lets the other sequences' tokens be compared exactly.
 *
 * test_cpu_same_rule runs the same checks on the CPU engine (also without a
 * GPU): the behaviour the GPU must match, and a check of the checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <cuda_runtime_api.h>

#include "longflow.h"
#include "model/model.h"

#include "../test_util.h"

#define N_RAND 6
#define N_REQ (N_RAND + 1) /* the last one gets X as its last prompt token */
#define PLEN 16
#define MAXTOK 24
#define BF16_NAN 0x7fc0u

static int g_have_gpu;

typedef struct run_out {
    int n[N_REQ];
    int tok[N_REQ][MAXTOK];
    const char *finish[N_REQ]; /* the engine's string literals */
    int failed_steps;          /* lf_engine_step calls that returned -1 */
    int bad_steps;             /* ... whose message was not a failed request's, or -1 without a failure */
} run_out;

typedef enum { FATE_SAME, FATE_PREFILL, FATE_DECODE } fate;
static const char *const fate_name[] = {"never meets X", "X in the prompt", "generates X"};

/* What a request must do with token X poisoned, from its prompt and its
 * tokens on the clean model; *step: the step it fails at. */
static fate predict(const int *prompt, const int *tok, int n, int x, int *step) {
    *step = -1;
    for (int i = 0; i < PLEN; i++)
        if (prompt[i] == x) {
            *step = 0;
            return FATE_PREFILL;
        }
    for (int t = 0; t + 1 < n; t++) /* the last token is never fed back */
        if (tok[t] == x) {
            *step = t + 1;
            return FATE_DECODE;
        }
    return FATE_SAME;
}

static char *nonfinite_msg(int id, int step) {
    return fmt("request %d: logits are NaN or Inf at step %d (check the model's weights)", id, step);
}

/* After a step that returned rc: the requests that finished with "error"
 * in it (was_done[] before the step) must include the one err names. */
static void check_step(lf_engine *e, bool *was_done, int rc, const lf_error *err, run_out *o, const char *what) {
    bool named = false;
    int newly = 0;
    for (int i = 0; i < N_REQ; i++) {
        const lf_generation *g = lf_engine_result(e, i);
        if (was_done[i] || !g->done) continue;
        was_done[i] = true;
        if (strcmp(g->finish_reason, "error") != 0) continue;
        newly++;
        char *want = nonfinite_msg(i, g->n_tokens);
        named |= rc != 0 && strcmp(err->msg, want) == 0;
        free(want);
    }
    if (rc == 0 && newly == 0) return;
    o->failed_steps += rc != 0;
    if (!named) {
        o->bad_steps++;
        printf("[ nonfinite ] %s: a step returned %d with %d requests failed in it, message \"%s\"\n", what, rc, newly,
               rc ? err->msg : "");
    } else {
        printf("[ nonfinite ] %s: step failed with \"%s\"\n", what, err->msg);
    }
}

/* The batch through lf_engine_step (as the server drives it: a failed step
 * does not stop the others) on `device`. */
static void run_batch(lf_model *m, lf_device device, const lf_sampling *sp, int prompts[N_REQ][PLEN], run_out *o,
                      const char *what) {
    lf_engine_config ec;
    lf_engine_config_default(&ec);
    ec.device = device;
    ec.max_seqs = N_REQ;
    ec.max_tokens = MAXTOK;
    ec.ignore_eos = true;
    ec.threads = 2;
    if (device == LF_DEVICE_CUDA) ec.gpu_mem_fraction = 0.3;
    ec.sampling = *sp;
    lf_engine *e = NULL;
    lf_error err = {{0}};
    if (lf_engine_create(m, &ec, &e, &err)) fail_msg("%s: engine: %s", what, err.msg);
    for (int i = 0; i < N_REQ; i++)
        if (lf_engine_submit(e, prompts[i], PLEN, &err) != i) fail_msg("%s: submit %d: %s", what, i, err.msg);
    memset(o, 0, sizeof *o);
    bool was_done[N_REQ] = {false};
    for (int guard = 0; lf_engine_pending(e, NULL, NULL) > 0; guard++) {
        if (guard > 4 * MAXTOK) fail_msg("%s: the batch does not finish", what);
        err.msg[0] = 0;
        int rc = lf_engine_step(e, NULL, NULL, &err);
        check_step(e, was_done, rc, &err, o, what);
    }
    for (int i = 0; i < N_REQ; i++) {
        const lf_generation *g = lf_engine_result(e, i);
        o->n[i] = g->n_tokens;
        memcpy(o->tok[i], g->tokens, (size_t)g->n_tokens * sizeof(int));
        o->finish[i] = g->finish_reason;
    }
    lf_engine_free(e);
}

/* A token X that the clean run's random requests make both fates of: one
 * generates it before its last token, another never meets it. -1 if none. */
static int choose_x(int prompts[N_REQ][PLEN], const run_out *clean) {
    for (int r = 0; r < N_RAND; r++)
        for (int t = 0; t + 1 < clean->n[r]; t++) {
            const int x = clean->tok[r][t];
            int count[3] = {0, 0, 0}, step;
            for (int i = 0; i < N_RAND; i++) count[predict(prompts[i], clean->tok[i], clean->n[i], x, &step)]++;
            if (count[FATE_DECODE] > 0 && count[FATE_SAME] > 0) return x;
        }
    return -1;
}

/* The poisoned run against the prediction from the clean run; returns the
 * number of mismatches and counts the fates seen. */
static int compare_runs(int prompts[N_REQ][PLEN], const run_out *clean, const run_out *bad, int x, int count[3],
                        const char *what) {
    int wrong = 0;
    for (int i = 0; i < N_REQ; i++) {
        int step;
        const fate f = predict(prompts[i], clean->tok[i], clean->n[i], x, &step);
        count[f]++;
        const int keep = f == FATE_SAME ? clean->n[i] : step; /* tokens that must equal the clean run's */
        const char *finish = f == FATE_SAME ? clean->finish[i] : "error";
        int same = 0;
        while (same < keep && same < bad->n[i] && bad->tok[i][same] == clean->tok[i][same]) same++;
        const bool ok = bad->n[i] == keep && same == keep && strcmp(bad->finish[i], finish) == 0;
        printf("[ nonfinite ] %s: request %d (%s): %d tokens, finish \"%s\", %d equal to the clean run's; want %d "
               "tokens, \"%s\"%s\n",
               what, i, fate_name[f], bad->n[i], bad->finish[i], same, keep, finish, ok ? "" : "  <-- MISMATCH");
        wrong += !ok;
    }
    return wrong;
}

static lf_model *load_tiny(void) {
    const char *src = getenv("LF_SOURCE_DIR");
    char *dir = fmt("%s/models/tiny-reasoner", src && *src ? src : ".");
    lf_model *m = NULL;
    lf_error err = {{0}};
    if (lf_model_load(dir, &m, &err)) fail_msg("%s: %s", dir, err.msg);
    free(dir);
    if (m->embed.dtype != LF_DTYPE_BF16) fail_msg("tiny-reasoner's embedding is not bf16");
    return m;
}

/* The embedding table with one NaN weight in token x's row (a copy; the
 * caller restores m->embed.data and frees it). */
static uint16_t *poison_embedding(lf_model *m, int x) {
    const size_t n = (size_t)m->embed.rows * m->embed.cols;
    uint16_t *copy = malloc(n * sizeof *copy);
    assert_non_null(copy);
    memcpy(copy, m->embed.data, n * sizeof *copy);
    copy[(size_t)x * m->embed.cols + 7] = BF16_NAN;
    m->embed.data = copy;
    return copy;
}

static void run_mode(lf_device device, const lf_sampling *sp, const char *what) {
    lf_model *m = load_tiny();
    const int V = m->cfg.vocab_size;
    int prompts[N_REQ][PLEN];
    rng = 0x5eed0000u + (uint64_t)(sp->temperature * 1000);
    for (int i = 0; i < N_REQ; i++)
        for (int j = 0; j < PLEN; j++) prompts[i][j] = 3 + irand(V - 3);
    run_out *clean = calloc(1, sizeof *clean), *bad = calloc(1, sizeof *bad);
    assert_true(clean && bad);
    run_batch(m, device, sp, prompts, clean, what);
    const int x = choose_x(prompts, clean);
    if (x < 0) fail_msg("%s: setup: no token is generated by one request and met by no other", what);
    prompts[N_REQ - 1][PLEN - 1] = x;
    printf("[ nonfinite ] %s: token X = %d gets a NaN weight in its embedding row; request %d's prompt ends with X\n",
           what, x, N_REQ - 1);
    run_batch(m, device, sp, prompts, clean, what); /* the reference: this batch on the clean model */
    if (clean->failed_steps || clean->bad_steps) fail_msg("%s: the clean model failed a step", what);
    const void *orig = m->embed.data;
    uint16_t *copy = poison_embedding(m, x);
    run_batch(m, device, sp, prompts, bad, what);
    m->embed.data = orig;
    free(copy);
    int count[3] = {0, 0, 0};
    const int wrong = compare_runs(prompts, clean, bad, x, count, what);
    printf("[ nonfinite ] %s: %d requests failed in the prefill, %d in a decode step, %d unaffected; %d mismatches, "
           "%d failed steps (%d with a wrong message)\n",
           what, count[FATE_PREFILL], count[FATE_DECODE], count[FATE_SAME], wrong, bad->failed_steps, bad->bad_steps);
    if (count[FATE_PREFILL] < 1 || count[FATE_DECODE] < 1 || count[FATE_SAME] < 1)
        fail_msg("%s: setup: the clean rerun no longer has a request of each fate", what);
    if (wrong) fail_msg("%s: %d of %d requests did not do what the clean run predicts", what, wrong, N_REQ);
    if (bad->bad_steps) fail_msg("%s: %d failed steps without the CPU's message for their request", what, bad->bad_steps);
    if (bad->failed_steps < 2) fail_msg("%s: only %d failed steps", what, bad->failed_steps);
    free(clean);
    free(bad);
    lf_model_free(m);
}

static lf_sampling sampled(void) {
    lf_sampling sp;
    lf_sampling_default(&sp);
    sp.temperature = 0.8f;
    sp.top_p = 0.9f;
    sp.min_p = 0.05f;
    return sp;
}

static void test_gpu_greedy(void **state) {
    (void)state;
    if (!g_have_gpu) skip();
    lf_sampling sp;
    lf_sampling_default(&sp);
    run_mode(LF_DEVICE_CUDA, &sp, "gpu greedy");
}

static void test_gpu_sampled(void **state) {
    (void)state;
    if (!g_have_gpu) skip();
    const lf_sampling sp = sampled();
    run_mode(LF_DEVICE_CUDA, &sp, "gpu sampled");
}

/* The same checks on the CPU engine, the path the GPU must match (it runs
 * without a GPU too, and shows the checks themselves hold). */
static void test_cpu_same_rule(void **state) {
    (void)state;
    lf_sampling sp;
    lf_sampling_default(&sp);
    run_mode(LF_DEVICE_CPU, &sp, "cpu greedy");
    sp = sampled();
    run_mode(LF_DEVICE_CPU, &sp, "cpu sampled");
}

int main(void) {
    int n = 0;
    g_have_gpu = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
    if (!g_have_gpu) printf("no CUDA device: the GPU cases are skipped\n");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpu_same_rule),
        cmocka_unit_test(test_gpu_greedy),
        cmocka_unit_test(test_gpu_sampled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
