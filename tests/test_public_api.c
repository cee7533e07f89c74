/* A client of the public header alone (tests/test_cli_includes.py checks
 * that this file includes nothing from src/): the config accessors against
 * the bundled model's config.json read here with cJSON, the KV sizes from
 * those numbers, the policy descriptions against the policy names, the
 * tokenizer and a chat prompt through lf_tokenizer_* / lf_chat_*. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <cjson/cJSON.h>

#include "longflow.h"

#define MODEL "models/tiny-reasoner"

static cJSON *read_json(const char *path) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    assert_non_null(j);
    return j;
}

static int jint(const cJSON *o, const char *k) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
    assert_true(cJSON_IsNumber(j));
    return j->valueint;
}

static void test_config_accessors(void **state) {
    (void)state;
    lf_model *m = NULL;
    lf_error err = {{0}};
    assert_int_equal(lf_model_load(MODEL, &m, &err), 0);
    cJSON *j = read_json(MODEL "/config.json");
    const lf_config *c = lf_model_config(m);
    assert_string_equal(lf_config_architecture(c),
                        cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "architectures"), 0)->valuestring);
    assert_int_equal(lf_config_layers(c), jint(j, "num_hidden_layers"));
    assert_int_equal(lf_config_hidden_size(c), jint(j, "hidden_size"));
    assert_int_equal(lf_config_heads(c), jint(j, "num_attention_heads"));
    assert_int_equal(lf_config_kv_heads(c), jint(j, "num_key_value_heads"));
    assert_int_equal(lf_config_head_dim(c), jint(j, "head_dim"));
    assert_int_equal(lf_config_vocab_size(c), jint(j, "vocab_size"));
    assert_int_equal(lf_config_context_length(c), jint(j, "max_position_embeddings"));
    assert_true(lf_config_is_eos(c, jint(j, "eos_token_id")));
    assert_false(lf_config_is_eos(c, jint(j, "eos_token_id") + 1));

    /* K and V of every layer, the same bytes on either device: 4 / 2 bytes an element, fp8 one
     * byte and a float scale per (token, layer, KV head) row */
    const size_t per_slot = 2 * (size_t)jint(j, "num_hidden_layers") * jint(j, "num_key_value_heads") *
                            jint(j, "head_dim");
    const size_t rows = 2 * (size_t)jint(j, "num_hidden_layers") * jint(j, "num_key_value_heads");
    assert_int_equal(lf_kv_bytes_for(m, 100, LF_DEVICE_CPU, LF_KV_F32), per_slot * 100 * 4);
    assert_int_equal(lf_kv_bytes_for(m, 100, LF_DEVICE_CUDA, LF_KV_BF16), per_slot * 100 * 2);
    assert_int_equal(lf_kv_bytes_for(m, 100, LF_DEVICE_CUDA, LF_KV_FP8), (per_slot + rows * 4) * 100);
    assert_int_equal(lf_kv_bytes_for(m, 100, LF_DEVICE_CPU, LF_KV_FP8), (per_slot + rows * 4) * 100);
    cJSON_Delete(j);
    lf_model_free(m);
}

static void test_policy_describe(void **state) {
    (void)state;
    assert_true(lf_policy_count() >= 7);
    for (int k = 0; k < lf_policy_count(); k++) {
        lf_policy_info in;
        assert_int_equal(lf_policy_describe((lf_policy_kind)k, &in), 0);
        assert_string_equal(in.name, lf_policy_name((lf_policy_kind)k));
        lf_policy_kind back;
        assert_int_equal(lf_policy_from_name(in.name, &back), 0);
        assert_int_equal((int)back, k);
        assert_true(in.paper && in.rule && in.aux && in.score_mode);
        assert_int_equal(in.budgeted, k != LF_POLICY_FULL);
    }
    lf_policy_info in;
    assert_int_equal(lf_policy_describe((lf_policy_kind)lf_policy_count(), &in), -1);
    assert_int_equal(lf_policy_describe((lf_policy_kind)-1, &in), -1);
    lf_policy_describe(LF_POLICY_RKV, &in);
    assert_false(in.gpu); /* R-KV is CPU only (docs/policies.md) */
    lf_policy_describe(LF_POLICY_LONGFLOW, &in);
    assert_true(in.gpu);
}

static void test_tokenizer_and_chat(void **state) {
    (void)state;
    lf_error err = {{0}};
    assert_true(lf_model_has_tokenizer(MODEL));
    lf_tokenizer *t = NULL;
    assert_int_equal(lf_model_tokenizer_load(MODEL, &t, &err), 0);
    const char *text = "What is 3 + 4?";
    int *ids = NULL, n = 0;
    assert_int_equal(lf_tokenizer_encode(t, text, strlen(text), 0, &ids, &n, &err), 0);
    assert_true(n > 0);
    char *back = NULL;
    assert_int_equal(lf_tokenizer_decode(t, ids, n, false, &back, NULL, &err), 0);
    assert_string_equal(back, text);
    free(back);
    free(ids);

    lf_chat_family fam;
    assert_int_equal(lf_chat_select(t, NULL, &fam, &err), 0);
    lf_chat_message msg = {.role = "user", .content = (char *)text};
    lf_chat_prompt p;
    assert_int_equal(lf_chat_render_messages(fam, t, &msg, 1, NULL, &p, &err), 0);
    assert_non_null(strstr(p.text, text));
    /* the ids are the rendered text's, with the markup's special tokens */
    char *dec = NULL;
    assert_int_equal(lf_tokenizer_decode(t, p.ids, p.n_ids, false, &dec, NULL, &err), 0);
    assert_string_equal(dec, p.text);
    free(dec);
    lf_chat_prompt_free(&p);
    assert_int_equal(lf_chat_select(t, "nosuch", &fam, &err), -1);
    assert_non_null(strstr(err.msg, "nosuch"));
    lf_tokenizer_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_accessors),
        cmocka_unit_test(test_policy_describe),
        cmocka_unit_test(test_tokenizer_and_chat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
