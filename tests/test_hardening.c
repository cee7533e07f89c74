/* Regression tests for what fuzzing broke (issue 11, "Found by fuzzing"):
 * each bad input (committed under tests/data/hardening/, written by its
 * make_inputs.py, or built here when it is large) must end in a one-line
 * error naming the thing and the problem, or in the right output, within
 * bounded time and memory. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <cjson/cJSON.h>

#include "longflow.h"
#include "model/config.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "sampler/sampler.h"
#include "test_util.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/tokenizer.h"

/* CPU seconds of the calling thread: the time limits below bound the work
 * done, which the other jobs on a shared machine do not change (they do
 * change the wall clock: 2 cores shared by several builds and tests). */
static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Peak resident memory of this process so far, in MB. */
static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

static bool sanitized(void) { return getenv("LF_SANITIZED") != NULL; }

static char *hpath(const char *rel) { return fmt("%s/hardening/%s", data_dir(), rel); }

static void assert_has(const char *msg, const char *want) {
    if (!strstr(msg, want)) fail_msg("message '%s' lacks '%s'", msg, want);
    if (strchr(msg, '\n')) fail_msg("message '%s' is not one line", msg);
}

/* Loading dir must fail with a message holding every string of want[]. */
static void tokenizer_load_fails(const char *dir, const char *const *want) {
    char *d = hpath(dir);
    lf_tokenizer *t = NULL;
    lf_error err = {{0}};
    assert_int_equal(lf_tokenizer_load(d, &t, &err), -1);
    assert_null(t);
    for (int i = 0; want[i]; i++) assert_has(err.msg, want[i]);
    free(d);
}

/* 1. A normalizer content or added token holding a lone 0xFF: refused at
 * load, naming the field (it used to reach PCRE2's JIT and crash). */
static void test_tokenizer_invalid_utf8(void **state) {
    (void)state;
    tokenizer_load_fails("tok_prepend_ff",
                         (const char *[]){"tokenizer.json", "normalizer.prepend", "not valid UTF-8", "0xFF", NULL});
    tokenizer_load_fails("tok_replace_ff", (const char *[]){"normalizer.normalizers[1].content", "not valid UTF-8",
                                                             NULL});
    tokenizer_load_fails("tok_added_ff", (const char *[]){"added_tokens[0].content", "not valid UTF-8", NULL});
}

/* ... and the regex matcher itself refuses an invalid subject rather than
 * hand it to the JIT code (whatever path would produce one). */
static void test_regex_refuses_invalid_subject(void **state) {
    (void)state;
    lf_pattern p;
    lf_error err = {{0}};
    assert_int_equal(lf_pattern_from_regex("\\s+", "test", &p, &err), 0);
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    size_t ms = 0, me = 0;
    const char bad[] = "x\xff y";
    assert_int_equal(lf_pattern_next(&p, md, bad, sizeof bad - 1, 0, &ms, &me, &err), -1);
    assert_has(err.msg, "not valid UTF-8 (byte 0xFF at offset 1)");
    const char good[] = "x\xc3\xa9 y";
    assert_int_equal(lf_pattern_next(&p, md, good, sizeof good - 1, 0, &ms, &me, &err), 1);
    assert_int_equal(ms, 3);
    assert_int_equal(me, 4);
    pcre2_match_data_free(md);
    lf_pattern_free(&p);
}

/* 5. Added-token ids escalating to 614,400,000 in a 1.6 kB file: refused
 * (the id tables are dense), quickly and without the gigabytes. */
static void test_tokenizer_escalating_ids(void **state) {
    (void)state;
    double t0 = cpu_s();
    tokenizer_load_fails("tok_escalating_ids",
                         (const char *[]){"added token '<t5>'", "has id 150000", "2 x tokens + 65536", NULL});
    double dt = cpu_s() - t0;
    if (dt > 2.0) fail_msg("the load took %.2f CPU s", dt);
    if (!sanitized() && peak_rss_mb() > 512) fail_msg("peak memory %.0f MB", peak_rss_mb());
}

/* 4. A vocabulary without unk: words with no token encode to nothing, as the
 * `tokenizers` library does (expected.json), and no NULL pointer is copied
 * to (clang's UBSan in the CI build checks that). */
static void test_tokenizer_no_unk(void **state) {
    (void)state;
    char *d = hpath("tok_no_unk");
    char *ep = hpath("tok_no_unk/expected.json");
    lf_tokenizer *t = NULL;
    lf_error err = {{0}};
    if (lf_tokenizer_load(d, &t, &err)) fail_msg("%s", err.msg);
    cJSON *rows = read_json(ep);
    assert_true(cJSON_IsArray(rows) && cJSON_GetArraySize(rows) >= 5);
    const cJSON *row;
    for (int pass = 0; pass < 2; pass++) /* the second pass reads the pre-token cache */
        cJSON_ArrayForEach(row, rows) {
            const char *s = cJSON_GetObjectItem(row, "text")->valuestring;
            const cJSON *want = cJSON_GetObjectItem(row, "ids");
            int *ids = NULL, n = -1;
            if (lf_tokenizer_encode(t, s, strlen(s), LF_TOK_PARSE_SPECIAL, &ids, &n, &err)) fail_msg("%s", err.msg);
            if (n != cJSON_GetArraySize(want)) fail_msg("'%s': %d ids, expected %d", s, n, cJSON_GetArraySize(want));
            for (int i = 0; i < n; i++) assert_int_equal(ids[i], cJSON_GetArrayItem(want, i)->valueint);
            free(ids);
        }
    cJSON_Delete(rows);
    lf_tokenizer_free(t);
    free(d);
    free(ep);
}

/* 4. Empty inputs on the committed spm_meta tokenizer (Metaspace, byte
 * fallback): empty piece lists went through NULL + 0 in lf_piece_str, the
 * decoder and the tokenizer. */
static void test_tokenizer_empty_pieces(void **state) {
    (void)state;
    char *d = fmt("%s/tokenizers/spm_meta", data_dir());
    lf_tokenizer *t = NULL;
    lf_error err = {{0}};
    if (lf_tokenizer_load(d, &t, &err)) fail_msg("%s", err.msg);
    int *ids = NULL, n = -1;
    assert_int_equal(lf_tokenizer_encode(t, "", 0, LF_TOK_PARSE_SPECIAL, &ids, &n, &err), 0);
    assert_int_equal(n, 0);
    free(ids);
    char *out = NULL;
    size_t len = 1;
    assert_int_equal(lf_tokenizer_decode(t, NULL, 0, false, &out, &len, &err), 0);
    assert_int_equal(len, 0);
    assert_string_equal(out, "");
    free(out);
    lf_tokenizer_free(t);
    free(d);
}

/* ---- config.json ------------------------------------------------------- */
static void config_fails(const char *dir, const char *const *want) {
    char *d = hpath(dir);
    lf_config c;
    lf_error err = {{0}};
    assert_int_equal(lf_config_load(d, &c, &err), -1);
    for (int i = 0; want[i]; i++) assert_has(err.msg, want[i]);
    free(d);
}

/* 3. n_heads * head_dim overflowed an int; every dimension is now bounded
 * and the products are checked in 64 bits, the message naming the field and
 * value. */
static void test_config_dimensions(void **state) {
    (void)state;
    config_fails("cfg_heads_overflow",
                 (const char *[]){"config.json", "\"num_attention_heads\" = 65536", "[1, 1024]", NULL});
    config_fails("cfg_matrix_too_large",
                 (const char *[]){"num_attention_heads x head_dim (1048576) x hidden_size (4096)", NULL});
    config_fails("cfg_huge_vocab", (const char *[]){"\"vocab_size\" = 1000000000000", "[1, 16777216]", NULL});
    /* 6. 3,000,000 layers */
    config_fails("cfg_many_layers", (const char *[]){"\"num_hidden_layers\" = 3000000", "[1, 1024]", NULL});
    /* the same rules on a filled config, for loaders of other formats */
    lf_config c;
    lf_error err = {{0}};
    assert_int_equal(lf_config_preset("qwen3-8b", &c, &err), 0);
    assert_int_equal(lf_config_check_shape(&c, "qwen3-8b", &err), 0);
    c.n_kv_heads = 5000;
    assert_int_equal(lf_config_check_shape(&c, "x.gguf", &err), -1);
    assert_has(err.msg, "x.gguf: key \"num_key_value_heads\" = 5000 is out of range [1, 1024]");
    c.n_kv_heads = 8;
    c.vocab_size = 1 << 20;
    c.hidden_size = 1 << 12;
    assert_int_equal(lf_config_check_shape(&c, "x.gguf", &err), -1);
    assert_has(err.msg, "vocab_size (1048576) x hidden_size (4096) = 4294967296 elements");
}

/* 6. A config within bounds that declares more layers than the weights hold
 * fails before anything is sized by it. */
static void test_layers_vs_weights(void **state) {
    (void)state;
    char *d = hpath("layers_vs_weights");
    lf_model *m = NULL;
    lf_error err = {{0}};
    assert_int_equal(lf_model_load(d, &m, &err), -1);
    assert_null(m);
    assert_has(err.msg, "num_hidden_layers = 1000 but the weights hold layers 0..0 only");
    free(d);
}

/* ---- safetensors --------------------------------------------------------- */
/* A header of n zero-size tensors (t0, t1, ...), the last one named again
 * when dup; returns the path. */
static char *write_many(const char *dir, int n, bool dup) {
    char *path = fmt("%s/many_%d_%d.safetensors", dir, n, (int)dup);
    lf_buf h = {0};
    char ent[96];
    assert_int_equal(lf_buf_append(&h, "{", 1), 0);
    for (int i = 0; i < n; i++) {
        int k = snprintf(ent, sizeof ent, "%s\"t%d\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}",
                         i ? "," : "", dup && i == n - 1 ? n / 2 : i);
        assert_int_equal(lf_buf_append(&h, ent, (size_t)k), 0);
    }
    assert_int_equal(lf_buf_append(&h, "}", 1), 0);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)h.n >> (8 * i));
    assert_int_equal(fwrite(len, 1, 8, f), 8);
    assert_int_equal(fwrite(h.p, 1, h.n, f), h.n);
    fclose(f);
    lf_buf_free(&h);
    return path;
}

/* Opens the n-tensor file in dir (every 997th tensor found by name) and
 * the one with a duplicate name (refused, naming it); returns the CPU
 * seconds both took. */
static double open_many(const char *dir, int n) {
    char *ok = write_many(dir, n, false), *dup = write_many(dir, n, true);
    lf_st_file f;
    lf_error err = {{0}};
    double t0 = cpu_s();
    if (lf_st_open(ok, &f, &err)) fail_msg("%s", err.msg);
    assert_int_equal(f.n_tensors, n);
    char name[32];
    for (int i = 0; i < n; i += 997) {
        snprintf(name, sizeof name, "t%d", i);
        const lf_tensor *t = lf_st_find(&f, name);
        assert_non_null(t);
        assert_string_equal(t->name, name);
    }
    snprintf(name, sizeof name, "t%d", n);
    assert_null(lf_st_find(&f, name));
    lf_st_close(&f);
    assert_int_equal(lf_st_open(dup, &f, &err), -1);
    snprintf(name, sizeof name, "'t%d' appears twice", n / 2);
    assert_has(err.msg, name);
    double dt = cpu_s() - t0;
    unlink(ok);
    unlink(dup);
    free(ok);
    free(dup);
    return dt;
}

/* 7. 100,000 tensors: the duplicate check was quadratic (94 s). Bounded in
 * CPU time, and against 10,000 tensors opened in the same test: 10 times
 * the tensors may cost at most 30 times the time (linear or n log n: about
 * 10-12; the quadratic check: 100). */
static void test_safetensors_many_tensors(void **state) {
    (void)state;
    const char *base = getenv("TMPDIR");
    char *dir = fmt("%s/lf_hard_XXXXXX", base && *base ? base : "/tmp");
    assert_non_null(mkdtemp(dir));
    const int n = 100000;
    double small = open_many(dir, n / 10), dt = open_many(dir, n);
    printf("two opens: %d tensors %.4f CPU s, %d tensors %.4f CPU s (%.1fx)\n", n / 10, small, n, dt, dt / small);
    if (dt > (sanitized() ? 20.0 : 5.0)) fail_msg("two opens of %d tensors took %.1f CPU s", n, dt);
    if (dt > 30.0 * small) fail_msg("two opens of %d tensors took %.1fx those of %d", n, dt / small, n / 10);
    rmdir(dir);
    free(dir);
}

/* ---- sampler ------------------------------------------------------------- */
#define SV 5

/* 2. NaN/+inf logits (or all -inf) on every sampler path: a deterministic
 * refusal, never a read before the buffer (min-p read buf[-1]) or a silent
 * token 0. */
static void test_sampler_nonfinite(void **state) {
    (void)state;
    const float nan = NAN, inf = INFINITY;
    const float bad[][SV] = {
        {nan, nan, nan, nan, nan}, {1, nan, 2, 0, -1}, {1, 2, inf, 0, -1},
        {-inf, -inf, -inf, -inf, -inf}, {inf, inf, inf, inf, inf}, {nan, -inf, -inf, -inf, -inf},
    };
    lf_sampling modes[8];
    for (int i = 0; i < 8; i++) lf_sampling_default(&modes[i]);
    modes[1].temperature = 0.8f;                          /* temperature */
    modes[2].temperature = 1.0f, modes[2].top_k = 2;      /* top-k */
    modes[3].temperature = 1.0f, modes[3].top_p = 0.9f;   /* top-p */
    modes[4].temperature = 1.0f, modes[4].min_p = 0.1f;   /* min-p: the heap overflow */
    modes[5].repetition_penalty = 1.3f;                   /* greedy + penalty */
    modes[6].temperature = 0.6f, modes[6].top_k = 3, modes[6].top_p = 0.95f, modes[6].min_p = 0.05f,
    modes[6].repetition_penalty = 1.1f;                   /* all at once */
    modes[7].temperature = 1e-3f, modes[7].repetition_penalty = 0.5f;
    const int hist[3] = {0, 1, 2};
    for (int m = 0; m < 8; m++) {
        lf_sampler s;
        lf_error err;
        assert_int_equal(lf_sampler_init(&s, &modes[m], SV, 7, &err), 0);
        for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
            float x[SV];
            memcpy(x, bad[b], sizeof x);
            int tok = lf_sampler_sample(&s, x, hist, 3);
            if (tok != LF_SAMPLE_NONFINITE) fail_msg("mode %d, logits %zu: token %d instead of a refusal", m, b, tok);
        }
        /* -inf masks tokens: the others are still sampled, never a masked one */
        for (int k = 0; k < 200; k++) {
            float x[SV] = {-inf, 0.5f, -inf, 0.25f, -inf};
            int tok = lf_sampler_sample(&s, x, hist, 3);
            if (tok != 1 && tok != 3) fail_msg("mode %d: token %d is masked (-inf)", m, tok);
        }
        lf_sampler_free(&s);
    }
    /* a penalty below 1 that pushes a huge logit to +inf is refused too */
    lf_sampling p;
    lf_sampling_default(&p);
    p.repetition_penalty = 0.5f;
    lf_sampler s;
    lf_error err;
    assert_int_equal(lf_sampler_init(&s, &p, SV, 0, &err), 0);
    float x[SV] = {3e38f, 0, 0, 0, 0};
    assert_int_equal(lf_sampler_sample(&s, x, hist, 1), LF_SAMPLE_NONFINITE);
    lf_sampler_free(&s);
}

/* ---- the engine ---------------------------------------------------------- */
static lf_model *tiny_model(void) {
    lf_model *m = NULL;
    lf_error err;
    if (lf_model_random("test-tiny", LF_DTYPE_F32, 5, &m, &err)) fail_msg("%s", err.msg);
    return m;
}

static lf_engine *tiny_engine(lf_model *m, int max_tokens) {
    lf_engine_config ec;
    lf_engine_config_default(&ec);
    ec.max_tokens = max_tokens;
    ec.ignore_eos = true;
    ec.threads = 1;
    lf_engine *e = NULL;
    lf_error err;
    if (lf_engine_create(m, &ec, &e, &err)) fail_msg("%s", err.msg);
    return e;
}

/* Put a NaN in the embedding row of the token the model generates first after
 * prompt[4] (which only a decode step reads: test-tiny's lm_head is untied);
 * skips the test when that token is also in the prompt. */
static void poison_first_token(lf_model *m, const int *prompt) {
    assert_false(m->cfg.tie_word_embeddings);
    lf_error err = {{0}};
    lf_engine *e = tiny_engine(m, 3);
    int id = lf_engine_submit(e, prompt, 4, &err);
    if (lf_engine_run(e, NULL, NULL, &err)) fail_msg("%s", err.msg);
    const int first = lf_engine_result(e, id)->tokens[0];
    lf_engine_free(e);
    for (int i = 0; i < 4; i++)
        if (prompt[i] == first) skip(); /* the row would also feed the prefill */
    ((float *)m->embed.data)[(size_t)first * m->embed.cols] = NAN;
}

/* 2. A NaN weight: the engine stops with an error naming the step, in the
 * prefill's sampling (a NaN in the final norm) and in a decode step's (a NaN
 * in the embedding row of the first generated token, which only the decode
 * reads: test-tiny's lm_head is untied). */
static void test_engine_nan_in_decode(void **state) {
    (void)state;
    lf_model *m = tiny_model();
    const int prompt[4] = {1, 5, 9, 13};
    lf_error err = {{0}};
    poison_first_token(m, prompt);
    lf_engine *e = tiny_engine(m, 3);
    assert_true(lf_engine_submit(e, prompt, 4, &err) >= 0);
    assert_int_equal(lf_engine_run(e, NULL, NULL, &err), -1);
    assert_has(err.msg, "request 0: logits are NaN or Inf at step 1 (check the model's weights)");
    lf_engine_free(e);
    lf_model_free(m);
}

/* Two requests that fail in the same decode step each keep their own
 * message (lf_generation.note): the server reports each job's own error
 * from it. */
static void test_engine_two_fail_in_one_step(void **state) {
    (void)state;
    lf_model *m = tiny_model();
    const int prompt[4] = {1, 5, 9, 13};
    lf_error err = {{0}};
    poison_first_token(m, prompt);
    lf_engine *e = NULL;
    lf_engine_config ec;
    lf_engine_config_default(&ec);
    ec.max_tokens = 3;
    ec.ignore_eos = true;
    ec.threads = 1;
    ec.max_seqs = 2;
    if (lf_engine_create(m, &ec, &e, &err)) fail_msg("%s", err.msg);
    int a = lf_engine_submit(e, prompt, 4, &err), b = lf_engine_submit(e, prompt, 4, &err);
    assert_true(a >= 0 && b >= 0);
    /* one step: both prefills (finite), then one decode that reads the NaN row for both */
    assert_int_equal(lf_engine_step(e, NULL, NULL, &err), -1);
    char want[64];
    for (int k = 0; k < 2; k++) {
        const lf_generation *g = lf_engine_result(e, k ? b : a);
        assert_true(g->done);
        assert_string_equal(g->finish_reason, "error");
        assert_non_null(g->note);
        snprintf(want, sizeof want, "request %d: logits are NaN or Inf at step 1", k ? b : a);
        assert_has(g->note, want);
    }
    lf_engine_free(e);
    lf_model_free(m);
}

static void test_engine_nan_weights(void **state) {
    (void)state;
    lf_model *m = tiny_model();
    float *norm = (float *)m->final_norm.data; /* random weights live in a writable block */
    norm[3] = NAN;
    lf_engine *e = tiny_engine(m, 8);
    const int prompt[4] = {1, 5, 9, 13};
    lf_error err = {{0}};
    assert_true(lf_engine_submit(e, prompt, 4, &err) >= 0);
    assert_int_equal(lf_engine_run(e, NULL, NULL, &err), -1);
    assert_has(err.msg, "request 0: logits are NaN or Inf at step 0 (check the model's weights)");
    assert_null(strstr(err.msg + 1, "request 0"));
    lf_engine_free(e);
    lf_model_free(m);
}

/* 8. The context: a prompt that leaves no room is refused naming both
 * numbers; a generation that reaches the context stops there with
 * finish_reason "length" and a note. */
static void test_engine_context(void **state) {
    (void)state;
    lf_model *m = tiny_model();
    m->cfg.max_position = 16;
    lf_error err = {{0}};
    assert_int_equal(lf_context_check(m, 15, &err), 1);
    assert_int_equal(lf_context_check(m, 10, &err), 6);
    assert_int_equal(lf_context_check(m, 16, &err), -1);
    assert_has(err.msg, "the prompt has 16 tokens but the model's context (max_position_embeddings) is 16");
    int prompt[40];
    for (int i = 0; i < 40; i++) prompt[i] = 1 + i;
    lf_engine *e = tiny_engine(m, 100);
    assert_int_equal(lf_engine_submit(e, prompt, 40, &err), -1);
    assert_has(err.msg, "the prompt has 40 tokens");
    assert_has(err.msg, "is 16");
    int id = lf_engine_submit(e, prompt, 10, &err);
    assert_true(id >= 0);
    if (lf_engine_run(e, NULL, NULL, &err)) fail_msg("%s", err.msg);
    const lf_generation *g = lf_engine_result(e, id);
    assert_int_equal(g->n_tokens, 6);
    assert_string_equal(g->finish_reason, "length");
    assert_non_null(g->note);
    assert_has(g->note, "context");
    lf_engine_free(e);
    /* below the context, max_tokens decides and there is no note */
    e = tiny_engine(m, 3);
    id = lf_engine_submit(e, prompt, 10, &err);
    if (lf_engine_run(e, NULL, NULL, &err)) fail_msg("%s", err.msg);
    g = lf_engine_result(e, id);
    assert_int_equal(g->n_tokens, 3);
    assert_string_equal(g->finish_reason, "length");
    assert_null(g->note);
    lf_engine_free(e);
    lf_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokenizer_invalid_utf8),  cmocka_unit_test(test_regex_refuses_invalid_subject),
        cmocka_unit_test(test_tokenizer_escalating_ids), cmocka_unit_test(test_tokenizer_no_unk),
        cmocka_unit_test(test_tokenizer_empty_pieces),  cmocka_unit_test(test_config_dimensions),
        cmocka_unit_test(test_layers_vs_weights),       cmocka_unit_test(test_safetensors_many_tensors),
        cmocka_unit_test(test_sampler_nonfinite),       cmocka_unit_test(test_engine_nan_weights),
        cmocka_unit_test(test_engine_nan_in_decode),      cmocka_unit_test(test_engine_two_fail_in_one_step),
        cmocka_unit_test(test_engine_context),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
