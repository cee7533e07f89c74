/* Conformance with transformers: every fixture under tests/data/models/ (made
 * by tools/make_fixtures.py) holds a small random-weight checkpoint and, in
 * expected.json + logits.bin, the greedy tokens and fp32 logits transformers
 * computed for a few prompts. The CPU forward must reproduce the tokens
 * exactly and every logits row within LF_CONF_TOL relative L2.
 *
 * Three runs per fixture:
 *   single:    one sequence at a time (prefill, then decode with n_seq = 1);
 *   batched:   all prompts prefilled, then decoded together in one
 *              lf_cpu_decode call per step (different lengths and positions);
 *   staggered: sequences join the batch at different steps and are passed in
 *              changing order, as continuous batching does.
 * Each run feeds the engine's own argmax back (true greedy decoding); the
 * runs use an fp32 KV cache, as transformers' reference is float32.
 *
 * Then the bf16 and fp8 caches against the fp32 cache: one sequence at a
 * time, fed the reference tokens (so that every row has its fp32 twin): the
 * logits' relative L2 to the fp32 cache's (printed per fixture, bounded by
 * LF_CONF_BF16_TOL / LF_CONF_FP8_TOL) and the same greedy token wherever the
 * fp32 cache's top-1 leads its top-2 by more than LF_CONF_BF16_TIE /
 * LF_CONF_FP8_TIE (these random-weight models' logits are nearly flat: most
 * margins are under 1, and e4m3's 3 mantissa bits move logits by a few
 * percent), for fp8 also on LF_CONF_FP8_SAME of all rows.
 *
 * Then the bf16-arithmetic prefill GEMM (src/cpu/gemm_bf16.h: activations
 * rounded to bf16) at every level the CPU has above the fp32 panels, fed the
 * reference tokens with an fp32 cache: every row (the prompt's logits and
 * the decode steps over the cache it filled) within LF_CONF_BGEMM_TOL
 * relative L2 of transformers' logits and LF_CONF_BGEMM_TOL of the fp32
 * panels' (printed per fixture), and the same greedy token as transformers
 * wherever its margin exceeds LF_CONF_BGEMM_TIE. Only the fixtures with bf16
 * weights are affected (the others compute the same as with fp32 panels). */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <cjson/cJSON.h>

#include "core/file.h"
#include "cpu/forward.h"
#include "cpu/gemm_bf16.h"
#include "kv/cache.h"
#include "model/model.h"

#include "test_util.h"

#define LF_CONF_TOL 1e-3
#define LF_CONF_BF16_TOL 2e-2
#define LF_CONF_FP8_TOL 2e-1
#define LF_CONF_BF16_TIE 0.05
#define LF_CONF_FP8_TIE 1.0
#define LF_CONF_FP8_SAME 0.85 /* and the same greedy token on this share of all rows */
#define LF_CONF_BGEMM_TOL 3e-2
#define LF_CONF_BGEMM_TIE 0.05

typedef struct conf_prompt {
    char name[64];
    int *prompt;
    int n_prompt;
    int *tokens; /* reference greedy tokens */
    int n_steps;
    const float *logits; /* [n_steps][vocab], into ref_logits */
    double min_margin;
} conf_prompt;

typedef struct conf_fixture {
    char dir[1024];
    char name[256];
    int vocab;
    int n_prompts;
    conf_prompt *p;
    float *ref_logits;
} conf_fixture;

typedef struct conf_stats {
    double max_err;
    int checked_rows;
} conf_stats;


static void fixture_free(conf_fixture *f) {
    for (int i = 0; i < f->n_prompts; i++) {
        free(f->p[i].prompt);
        free(f->p[i].tokens);
    }
    free(f->p);
    free(f->ref_logits);
    memset(f, 0, sizeof *f);
}

static int *json_int_array(const cJSON *a, int *n) {
    if (!cJSON_IsArray(a)) return NULL;
    *n = cJSON_GetArraySize(a);
    int *v = malloc((size_t)(*n > 0 ? *n : 1) * sizeof *v);
    assert_non_null(v);
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, a) {
        assert_true(cJSON_IsNumber(it));
        v[i++] = (int)it->valuedouble;
    }
    return v;
}

/* Read expected.json and logits.bin of one fixture directory. */
static void fixture_read(const char *dir, const char *name, conf_fixture *f) {
    memset(f, 0, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "%s", dir);
    snprintf(f->name, sizeof f->name, "%s", name);
    lf_error err = {{0}};
    char *path = lf_path_join(dir, "expected.json");
    char *text = NULL;
    size_t len = 0;
    if (lf_read_file(path, &text, &len, &err) != 0) fail_msg("%s", err.msg);
    free(path);
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root) fail_msg("%s/expected.json: malformed JSON", dir);
    const cJSON *vs = cJSON_GetObjectItemCaseSensitive(root, "vocab_size");
    const cJSON *lf = cJSON_GetObjectItemCaseSensitive(root, "logits_file");
    const cJSON *ps = cJSON_GetObjectItemCaseSensitive(root, "prompts");
    assert_true(cJSON_IsNumber(vs) && cJSON_IsString(lf) && cJSON_IsArray(ps));
    f->vocab = vs->valueint;
    f->n_prompts = cJSON_GetArraySize(ps);
    assert_true(f->n_prompts > 0);
    f->p = calloc((size_t)f->n_prompts, sizeof *f->p);
    assert_non_null(f->p);

    char *lpath = lf_path_join(dir, lf->valuestring);
    char *blob = NULL;
    size_t blen = 0;
    if (lf_read_file(lpath, &blob, &blen, &err) != 0) fail_msg("%s", err.msg);
    free(lpath);
    assert_int_equal(blen % sizeof(float), 0);
    /* little-endian float32, the byte order of every machine longflow targets */
    f->ref_logits = malloc(blen);
    assert_non_null(f->ref_logits);
    memcpy(f->ref_logits, blob, blen);
    free(blob);
    size_t n_floats = blen / sizeof(float);

    int i = 0;
    const cJSON *pj;
    cJSON_ArrayForEach(pj, ps) {
        conf_prompt *p = &f->p[i++];
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(pj, "name");
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(pj, "logits_offset");
        const cJSON *rows = cJSON_GetObjectItemCaseSensitive(pj, "logits_rows");
        const cJSON *mm = cJSON_GetObjectItemCaseSensitive(pj, "min_margin");
        assert_true(cJSON_IsString(nm) && cJSON_IsNumber(off) && cJSON_IsNumber(rows));
        snprintf(p->name, sizeof p->name, "%s", nm->valuestring);
        p->prompt = json_int_array(cJSON_GetObjectItemCaseSensitive(pj, "prompt"), &p->n_prompt);
        p->tokens = json_int_array(cJSON_GetObjectItemCaseSensitive(pj, "tokens"), &p->n_steps);
        assert_non_null(p->prompt);
        assert_non_null(p->tokens);
        assert_true(p->n_prompt > 0 && p->n_steps > 0);
        assert_int_equal(rows->valueint, p->n_steps);
        size_t o = (size_t)off->valuedouble;
        assert_true(o + (size_t)p->n_steps * f->vocab <= n_floats);
        p->logits = f->ref_logits + o;
        p->min_margin = cJSON_IsNumber(mm) ? mm->valuedouble : NAN;
    }
    cJSON_Delete(root);
}

/* Check one logits row of prompt p at step `step` and return the engine's
 * greedy token. Fails the test with the fixture, prompt, step and error. */
static int check_row(const conf_fixture *f, const conf_prompt *p, int step, const float *logits,
                     const char *run, conf_stats *st) {
    const float *ref = p->logits + (size_t)step * f->vocab;
    double e = rel_l2(logits, ref, f->vocab);
    if (e > st->max_err || isnan(e)) st->max_err = isnan(e) ? INFINITY : e;
    st->checked_rows++;
    int tok = argmax(logits, f->vocab);
    if (!(e <= LF_CONF_TOL))
        fail_msg("%s [%s] prompt '%s' (%d tokens) step %d: logits relative L2 error %.3e > %.0e "
                 "(engine top-1 %d = %.5f, reference top-1 %d = %.5f)",
                 f->name, run, p->name, p->n_prompt, step, e, LF_CONF_TOL, tok, logits[tok],
                 p->tokens[step], ref[p->tokens[step]]);
    if (tok != p->tokens[step])
        fail_msg("%s [%s] prompt '%s' step %d: greedy token %d, transformers %d "
                 "(logits error %.3e, reference margin there %.4f)",
                 f->name, run, p->name, step, tok, p->tokens[step], e,
                 (double)(ref[p->tokens[step]] - ref[tok]));
    return tok;
}

static void cache_init_dtype(lf_kv_cache *c, const lf_model *m, const conf_prompt *p, lf_kv_dtype dt) {
    lf_policy_config pc;
    lf_policy_config_default(&pc);
    pc.kv_dtype = dt;
    pc.kind = LF_POLICY_FULL;
    lf_error err = {{0}};
    if (lf_kv_cache_init(c, lf_model_config(m), &pc, p->n_prompt + p->n_steps, &err) != 0)
        fail_msg("%s", err.msg);
}

static void cache_init_full(lf_kv_cache *c, const lf_model *m, const conf_prompt *p) {
    cache_init_dtype(c, m, p, LF_KV_F32); /* against float32 references */
}

/* Logits of every step of every prompt with a `dt` cache, fed the reference
 * tokens: rows[prompt][step][vocab], in prompt order. */
static float *run_forced(const conf_fixture *f, const lf_model *m, lf_kv_dtype dt, size_t n_rows) {
    lf_error err = {{0}};
    lf_cpu_ctx *ctx = NULL;
    if (lf_cpu_ctx_create(m, 1, &ctx, &err) != 0) fail_msg("%s: %s", f->name, err.msg);
    float *rows = malloc(n_rows * f->vocab * sizeof *rows);
    assert_non_null(rows);
    float *r = rows;
    for (int i = 0; i < f->n_prompts; i++) {
        const conf_prompt *p = &f->p[i];
        lf_kv_cache c;
        cache_init_dtype(&c, m, p, dt);
        if (lf_cpu_prefill(ctx, m, &c, p->prompt, p->n_prompt, r, &err) != 0)
            fail_msg("%s prompt '%s': prefill: %s", f->name, p->name, err.msg);
        for (int s = 1; s < p->n_steps; s++) {
            int pos = p->n_prompt + s - 1, tok = p->tokens[s - 1];
            lf_kv_cache *cp = &c;
            r += f->vocab;
            if (lf_cpu_decode(ctx, m, &cp, &tok, &pos, 1, r, &err) != 0)
                fail_msg("%s prompt '%s' step %d: decode: %s", f->name, p->name, s, err.msg);
        }
        r += f->vocab;
        lf_kv_cache_free(&c);
    }
    lf_cpu_ctx_free(ctx);
    return rows;
}

/* The top-1 minus top-2 logit. */
static double margin(const float *x, int n) {
    int a = argmax(x, n);
    float b = -INFINITY;
    for (int i = 0; i < n; i++)
        if (i != a && x[i] > b) b = x[i];
    return (double)x[a] - b;
}

/* bf16 and fp8 caches against the fp32 cache (see the top of the file). */
static void check_dtypes(const conf_fixture *f, const lf_model *m) {
    size_t n_rows = 0;
    for (int i = 0; i < f->n_prompts; i++) n_rows += (size_t)f->p[i].n_steps;
    float *ref = run_forced(f, m, LF_KV_F32, n_rows);
    const lf_kv_dtype dts[] = {LF_KV_BF16, LF_KV_FP8};
    const double tols[] = {LF_CONF_BF16_TOL, LF_CONF_FP8_TOL}, tie[] = {LF_CONF_BF16_TIE, LF_CONF_FP8_TIE};
    for (int t = 0; t < 2; t++) {
        float *got = run_forced(f, m, dts[t], n_rows);
        double max_e = 0, sum_e = 0;
        int checked = 0, ties = 0, same = 0;
        for (size_t r = 0; r < n_rows; r++) {
            const float *a = got + r * f->vocab, *b = ref + r * f->vocab;
            double e = rel_l2(a, b, f->vocab);
            if (!(e <= tols[t]))
                fail_msg("%s: %s cache, row %zu: logits relative L2 %.3e to the fp32 cache's > %.1e", f->name,
                         lf_kv_dtype_name(dts[t]), r, e, tols[t]);
            max_e = e > max_e ? e : max_e;
            sum_e += e;
            same += argmax(a, f->vocab) == argmax(b, f->vocab);
            if (margin(b, f->vocab) <= tie[t]) {
                ties++;
                continue;
            }
            checked++;
            if (argmax(a, f->vocab) != argmax(b, f->vocab))
                fail_msg("%s: %s cache, row %zu: greedy token %d, fp32 cache %d (margin %.4f)", f->name,
                         lf_kv_dtype_name(dts[t]), r, argmax(a, f->vocab), argmax(b, f->vocab),
                         margin(b, f->vocab));
        }
        printf("[ kv-dtype ] %-22s %-4s vs fp32 cache: logits rel L2 mean %.2e max %.2e; greedy token the same "
               "on %d of %zu rows (required on the %d with margin > %.2f)\n",
               f->name, lf_kv_dtype_name(dts[t]), sum_e / (double)n_rows, max_e, same, n_rows, checked, tie[t]);
        if (dts[t] == LF_KV_FP8 && same < LF_CONF_FP8_SAME * (double)n_rows)
            fail_msg("%s: fp8 cache: the same greedy token as the fp32 cache on only %d of %zu rows", f->name, same,
                     n_rows);
        free(got);
    }
    free(ref);
}

/* The bf16 prefill GEMM's levels against transformers and the fp32 panels
 * (see the top of the file). */
static void check_bgemm_levels(const conf_fixture *f, const lf_model *m) {
    size_t n_rows = 0;
    for (int i = 0; i < f->n_prompts; i++) n_rows += (size_t)f->p[i].n_steps;
    lf_bgemm_level keep = lf_bgemm_level_get();
    lf_bgemm_set_level(LF_BGEMM_FP32);
    float *panels = run_forced(f, m, LF_KV_F32, n_rows);
    for (lf_bgemm_level lv = LF_BGEMM_AVX512BF16; lv <= lf_bgemm_supported(); lv++) {
        lf_bgemm_set_level(lv);
        float *got = run_forced(f, m, LF_KV_F32, n_rows);
        double max_t = 0, max_p = 0;
        int ties = 0;
        size_t r = 0;
        for (int i = 0; i < f->n_prompts; i++)
            for (int s = 0; s < f->p[i].n_steps; s++, r++) {
                const float *a = got + r * f->vocab, *ref = f->p[i].logits + (size_t)s * f->vocab;
                double et = rel_l2(a, ref, f->vocab), ep = rel_l2(a, panels + r * f->vocab, f->vocab);
                if (!(et <= LF_CONF_BGEMM_TOL && ep <= LF_CONF_BGEMM_TOL))
                    fail_msg("%s: %s GEMM, prompt '%s' step %d: logits relative L2 %.3e to transformers', %.3e to "
                             "the fp32 panels' > %.1e", f->name, lf_bgemm_level_name(lv), f->p[i].name, s, et, ep,
                             LF_CONF_BGEMM_TOL);
                max_t = et > max_t ? et : max_t;
                max_p = ep > max_p ? ep : max_p;
                if (margin(ref, f->vocab) <= LF_CONF_BGEMM_TIE) {
                    ties++;
                    continue;
                }
                if (argmax(a, f->vocab) != f->p[i].tokens[s])
                    fail_msg("%s: %s GEMM, prompt '%s' step %d: greedy token %d, transformers %d (margin %.4f)",
                             f->name, lf_bgemm_level_name(lv), f->p[i].name, s, argmax(a, f->vocab),
                             f->p[i].tokens[s], margin(ref, f->vocab));
            }
        printf("[ bf16gemm ] %-22s %-10s logits rel L2 max %.2e to transformers, %.2e to the fp32 panels; greedy "
               "token checked on %zu of %zu rows (margin > %.2f)\n",
               f->name, lf_bgemm_level_name(lv), max_t, max_p, n_rows - (size_t)ties, n_rows, LF_CONF_BGEMM_TIE);
        free(got);
    }
    lf_bgemm_set_level(keep);
    free(panels);
}

/* One sequence at a time. */
static void run_single(const conf_fixture *f, const lf_model *m, conf_stats *st) {
    lf_error err = {{0}};
    lf_cpu_ctx *ctx = NULL;
    if (lf_cpu_ctx_create(m, 1, &ctx, &err) != 0) fail_msg("%s: %s", f->name, err.msg);
    float *logits = malloc((size_t)f->vocab * sizeof *logits);
    assert_non_null(logits);
    for (int i = 0; i < f->n_prompts; i++) {
        const conf_prompt *p = &f->p[i];
        lf_kv_cache c;
        cache_init_full(&c, m, p);
        if (lf_cpu_prefill(ctx, m, &c, p->prompt, p->n_prompt, logits, &err) != 0)
            fail_msg("%s prompt '%s': prefill: %s", f->name, p->name, err.msg);
        int tok = check_row(f, p, 0, logits, "single", st);
        for (int s = 1; s < p->n_steps; s++) {
            int pos = p->n_prompt + s - 1;
            lf_kv_cache *cp = &c;
            if (lf_cpu_decode(ctx, m, &cp, &tok, &pos, 1, logits, &err) != 0)
                fail_msg("%s prompt '%s' step %d: decode: %s", f->name, p->name, s, err.msg);
            tok = check_row(f, p, s, logits, "single", st);
        }
        assert_int_equal(lf_kv_cache_tokens(&c), p->n_prompt + p->n_steps - 1);
        lf_kv_cache_free(&c);
    }
    free(logits);
    lf_cpu_ctx_free(ctx);
}

/* All prompts in flight together. start[i] is the global step at which
 * prompt i is prefilled; at every later step the live sequences are decoded
 * in one lf_cpu_decode call, in forward or reverse order by step parity. */
static void run_batched(const conf_fixture *f, const lf_model *m, const int *start, const char *run,
                        conf_stats *st) {
    lf_error err = {{0}};
    int n = f->n_prompts;
    lf_cpu_ctx *ctx = NULL;
    if (lf_cpu_ctx_create(m, n, &ctx, &err) != 0) fail_msg("%s: %s", f->name, err.msg);
    lf_kv_cache *caches = calloc((size_t)n, sizeof *caches);
    lf_kv_cache **cp = calloc((size_t)n, sizeof *cp);
    int *step = calloc((size_t)n, sizeof *step), *last = calloc((size_t)n, sizeof *last);
    int *btok = calloc((size_t)n, sizeof *btok), *bpos = calloc((size_t)n, sizeof *bpos);
    int *bidx = calloc((size_t)n, sizeof *bidx);
    float *logits = malloc((size_t)n * f->vocab * sizeof *logits);
    assert_true(caches && cp && step && last && btok && bpos && bidx && logits);
    int end = 0;
    for (int i = 0; i < n; i++) {
        cache_init_full(&caches[i], m, &f->p[i]);
        if (start[i] + f->p[i].n_steps > end) end = start[i] + f->p[i].n_steps;
    }
    int max_batch_seen = 0;
    for (int t = 0; t < end; t++) {
        int nb = 0;
        for (int k = 0; k < n; k++) {
            int i = (t % 2) ? n - 1 - k : k;
            const conf_prompt *p = &f->p[i];
            if (t < start[i] || step[i] >= p->n_steps) continue;
            if (t == start[i]) { /* joins now: prefill alone */
                if (lf_cpu_prefill(ctx, m, &caches[i], p->prompt, p->n_prompt, logits, &err) != 0)
                    fail_msg("%s [%s] prompt '%s': prefill: %s", f->name, run, p->name, err.msg);
                last[i] = check_row(f, p, 0, logits, run, st);
                step[i] = 1;
                continue;
            }
            cp[nb] = &caches[i];
            btok[nb] = last[i];
            bpos[nb] = p->n_prompt + step[i] - 1;
            bidx[nb] = i;
            nb++;
        }
        if (nb == 0) continue;
        if (nb > max_batch_seen) max_batch_seen = nb;
        if (lf_cpu_decode(ctx, m, cp, btok, bpos, nb, logits, &err) != 0)
            fail_msg("%s [%s] step %d: decode of %d sequences: %s", f->name, run, t, nb, err.msg);
        for (int b = 0; b < nb; b++) {
            int i = bidx[b];
            last[i] = check_row(f, &f->p[i], step[i], logits + (size_t)b * f->vocab, run, st);
            step[i]++;
        }
    }
    for (int i = 0; i < n; i++) {
        assert_int_equal(step[i], f->p[i].n_steps);
        lf_kv_cache_free(&caches[i]);
    }
    if (n > 1) assert_true(max_batch_seen >= 2); /* the run really batched */
    free(caches);
    free(cp);
    free(step);
    free(last);
    free(btok);
    free(bpos);
    free(bidx);
    free(logits);
    lf_cpu_ctx_free(ctx);
}

static void test_fixture(void **state) {
    const char *name = *state;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/models/%s", data_dir(), name);
    conf_fixture f;
    fixture_read(dir, name, &f);

    lf_error err = {{0}};
    lf_model *m = NULL;
    if (lf_model_load(dir, &m, &err) != 0) fail_msg("%s: load: %s", name, err.msg);
    assert_int_equal(lf_model_config(m)->vocab_size, f.vocab);

    conf_stats st = {0};
    run_single(&f, m, &st);
    int *start = calloc((size_t)f.n_prompts, sizeof *start);
    assert_non_null(start);
    run_batched(&f, m, start, "batched", &st); /* all start together */
    for (int i = 0; i < f.n_prompts; i++) start[i] = 3 * i;
    run_batched(&f, m, start, "staggered", &st);
    free(start);
    check_dtypes(&f, m);
    check_bgemm_levels(&f, m);

    double min_margin = INFINITY;
    for (int i = 0; i < f.n_prompts; i++)
        if (f.p[i].min_margin < min_margin) min_margin = f.p[i].min_margin;
    printf("[ conform  ] %-22s %d prompts x 3 runs, %d rows, max logits rel L2 %.2e, "
           "min reference margin %.4f\n",
           name, f.n_prompts, st.checked_rows, st.max_err, min_margin);
    lf_model_free(m);
    fixture_free(&f);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(void) {
    char models[1024];
    snprintf(models, sizeof models, "%s/models", data_dir());
    DIR *d = opendir(models);
    if (!d) {
        fprintf(stderr, "test_conformance: cannot open %s (run from the source root or set "
                        "LF_TEST_DATA)\n", models);
        return 1;
    }
    char **names = NULL;
    int n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char *p = malloc(strlen(models) + strlen(de->d_name) + 32);
        if (!p) return 1;
        sprintf(p, "%s/%s/expected.json", models, de->d_name);
        bool ok = lf_file_exists(p);
        free(p);
        if (!ok) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **nn = realloc(names, (size_t)cap * sizeof *names);
            if (!nn) return 1;
            names = nn;
        }
        names[n++] = strdup(de->d_name);
    }
    closedir(d);
    if (n == 0) {
        fprintf(stderr, "test_conformance: no fixtures (*/expected.json) under %s\n", models);
        return 1;
    }
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    struct CMUnitTest *tests = calloc((size_t)n, sizeof *tests);
    if (!tests) return 1;
    for (int i = 0; i < n; i++) {
        tests[i].name = names[i];
        tests[i].test_func = test_fixture;
        tests[i].initial_state = names[i];
    }
    int rc = _cmocka_run_group_tests("conformance", tests, (size_t)n, NULL, NULL);
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    free(tests);
    return rc;
}
