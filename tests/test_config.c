/* config.json / generation_config.json: every sample under
 * tests/data/config/<case>/ is compared field by field with expected.json,
 * which tests/data/config/make_expected.py wrote from what transformers
 * itself reads (AutoConfig, GenerationConfig, the rope init functions and
 * the module tree). Bad configs must fail with a message naming the file
 * and the key. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include <cjson/cJSON.h>

#include "model/config.h"

#include "test_util.h"



static double jnum(const cJSON *o, const char *k) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(j)) fail_msg("expected.json: no number '%s'", k);
    return j->valuedouble;
}

static bool jbool(const cJSON *o, const char *k) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsBool(j)) fail_msg("expected.json: no bool '%s'", k);
    return cJSON_IsTrue(j);
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsString(j)) fail_msg("expected.json: no string '%s'", k);
    return j->valuestring;
}

static void near(double got, double want, const char *what, const char *dir) {
    if (!(fabs(got - want) <= 1e-9 * fmax(1.0, fabs(want)))) fail_msg("%s: %s = %.17g, want %.17g", dir, what, got, want);
}

#define EQ_INT(got, key)                                                                                    \
    do {                                                                                                    \
        if ((double)(got) != jnum(exp, key)) fail_msg("%s: %s = %d, want %.0f", dir, key, (int)(got), jnum(exp, key)); \
    } while (0)

/* The effective yarn attention factor, as the rope code will use it:
 * attention_factor when set, else 0.1*ln(factor)+1 (1 for factor <= 1). */
static double yarn_mscale(const lf_rope_config *r) {
    if (r->attention_factor > 0) return r->attention_factor;
    return r->factor <= 1 ? 1.0 : 0.1 * log(r->factor) + 1.0;
}

static void check_case(const char *dir) {
    char path[1200];
    snprintf(path, sizeof path, "%s/expected.json", dir);
    cJSON *exp = read_json(path);
    assert_non_null(exp);

    lf_config c;
    lf_error err = {{0}};
    int rc = lf_config_load(dir, &c, &err);
    if (rc != 0) fail_msg("%s: %s", dir, err.msg);

    assert_string_equal(c.arch_name, jstr(exp, "arch"));
    const char *arch = jstr(exp, "arch");
    lf_arch want_arch = !strcmp(arch, "Qwen3ForCausalLM")   ? LF_ARCH_QWEN3
                        : !strcmp(arch, "Qwen2ForCausalLM") ? LF_ARCH_QWEN2
                                                            : LF_ARCH_LLAMA;
    assert_int_equal(c.arch, want_arch);
    EQ_INT(c.vocab_size, "vocab_size");
    EQ_INT(c.hidden_size, "hidden_size");
    EQ_INT(c.intermediate_size, "intermediate_size");
    EQ_INT(c.n_layers, "n_layers");
    EQ_INT(c.n_heads, "n_heads");
    EQ_INT(c.n_kv_heads, "n_kv_heads");
    EQ_INT(c.head_dim, "head_dim");
    EQ_INT(c.max_position, "max_position");
    near(c.rms_norm_eps, jnum(exp, "rms_norm_eps"), "rms_norm_eps", dir);

    const char *rt = jstr(exp, "rope_type");
    lf_rope_type want_rt = !strcmp(rt, "default")  ? LF_ROPE_DEFAULT
                           : !strcmp(rt, "linear") ? LF_ROPE_LINEAR
                           : !strcmp(rt, "llama3") ? LF_ROPE_LLAMA3
                           : !strcmp(rt, "yarn")   ? LF_ROPE_YARN
                                                   : (lf_rope_type)-1;
    assert_int_equal(c.rope.type, want_rt);
    near(c.rope.theta, jnum(exp, "rope_theta"), "rope_theta", dir);
    near(c.rope.factor, jnum(exp, "rope_factor"), "rope_factor", dir);
    if (c.rope.type == LF_ROPE_LLAMA3) {
        near(c.rope.low_freq_factor, jnum(exp, "rope_low_freq_factor"), "low_freq_factor", dir);
        near(c.rope.high_freq_factor, jnum(exp, "rope_high_freq_factor"), "high_freq_factor", dir);
    }
    if (c.rope.type == LF_ROPE_LLAMA3 || c.rope.type == LF_ROPE_YARN)
        EQ_INT(c.rope.original_max_position, "rope_original_max_position");
    if (c.rope.type == LF_ROPE_YARN) {
        near(c.rope.beta_fast, jnum(exp, "rope_beta_fast"), "beta_fast", dir);
        near(c.rope.beta_slow, jnum(exp, "rope_beta_slow"), "beta_slow", dir);
        near(yarn_mscale(&c.rope), jnum(exp, "rope_attention_factor"), "yarn attention factor", dir);
    }

    assert_int_equal(c.tie_word_embeddings, jbool(exp, "tie_word_embeddings"));
    assert_int_equal(c.qk_norm, jbool(exp, "qk_norm"));
    assert_int_equal(c.qkv_bias, jbool(exp, "q_bias"));
    assert_int_equal(c.qkv_bias, jbool(exp, "k_bias"));
    assert_int_equal(c.qkv_bias, jbool(exp, "v_bias"));
    assert_int_equal(c.o_bias, jbool(exp, "o_bias"));
    assert_int_equal(c.mlp_bias, jbool(exp, "mlp_bias"));
    EQ_INT(c.bos_token_id, "bos_token_id");

    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(exp, "eos_token_ids");
    assert_int_equal(c.n_eos, cJSON_GetArraySize(eos));
    for (int i = 0; i < c.n_eos; i++) {
        int id = (int)cJSON_GetArrayItem(eos, i)->valuedouble;
        assert_int_equal(c.eos_token_ids[i], id);
        assert_true(lf_config_is_eos(&c, id));
    }
    assert_false(lf_config_is_eos(&c, -1));
    assert_false(lf_config_is_eos(&c, c.vocab_size + 7));

    const char *dt = jstr(exp, "dtype");
    lf_dtype want_dt = !strcmp(dt, "bfloat16") ? LF_DTYPE_BF16 : !strcmp(dt, "float16") ? LF_DTYPE_F16 : LF_DTYPE_F32;
    assert_int_equal(c.dtype, want_dt);

    const cJSON *gen = cJSON_GetObjectItemCaseSensitive(exp, "generation");
    const cJSON *g;
    g = cJSON_GetObjectItemCaseSensitive(gen, "temperature");
    if (g) assert_true(c.gen_temperature == (float)g->valuedouble);
    else assert_true(isnan(c.gen_temperature));
    g = cJSON_GetObjectItemCaseSensitive(gen, "top_p");
    if (g) assert_true(c.gen_top_p == (float)g->valuedouble);
    else assert_true(isnan(c.gen_top_p));
    g = cJSON_GetObjectItemCaseSensitive(gen, "min_p");
    if (g) assert_true(c.gen_min_p == (float)g->valuedouble);
    else assert_true(isnan(c.gen_min_p));
    g = cJSON_GetObjectItemCaseSensitive(gen, "top_k");
    if (g) assert_int_equal(c.gen_top_k, (int)g->valuedouble);
    else assert_int_equal(c.gen_top_k, -1);
    cJSON_Delete(exp);
}

static void test_samples(void **state) {
    assert_true(for_each_data_dir("config", "", "expected.json", "config sample", check_case) >= 8);
}

/* The presets hold the published shapes: where a sample of the same model's
 * config.json is committed, the two must agree. */
static void preset_matches(const char *preset, const char *sample) {
    lf_config p, c;
    lf_error err = {{0}};
    char dir[600];
    snprintf(dir, sizeof dir, "%s/config/%s", data_dir(), sample);
    assert_int_equal(lf_config_preset(preset, &p, &err), 0);
    if (lf_config_load(dir, &c, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(p.arch, c.arch);
    assert_string_equal(p.arch_name, c.arch_name);
    assert_int_equal(p.vocab_size, c.vocab_size);
    assert_int_equal(p.hidden_size, c.hidden_size);
    assert_int_equal(p.intermediate_size, c.intermediate_size);
    assert_int_equal(p.n_layers, c.n_layers);
    assert_int_equal(p.n_heads, c.n_heads);
    assert_int_equal(p.n_kv_heads, c.n_kv_heads);
    assert_int_equal(p.head_dim, c.head_dim);
    assert_int_equal(p.max_position, c.max_position);
    assert_true(p.rms_norm_eps == c.rms_norm_eps);
    assert_int_equal(p.rope.type, c.rope.type);
    assert_true(p.rope.theta == c.rope.theta);
    assert_true(p.rope.factor == c.rope.factor);
    if (p.rope.type == LF_ROPE_LLAMA3) {
        assert_true(p.rope.low_freq_factor == c.rope.low_freq_factor);
        assert_true(p.rope.high_freq_factor == c.rope.high_freq_factor);
        assert_int_equal(p.rope.original_max_position, c.rope.original_max_position);
    }
    assert_int_equal(p.tie_word_embeddings, c.tie_word_embeddings);
    assert_int_equal(p.qk_norm, c.qk_norm);
    assert_int_equal(p.qkv_bias, c.qkv_bias);
    assert_int_equal(p.o_bias, c.o_bias);
    assert_true(lf_config_is_eos(&p, c.eos_token_ids[0]));
}

static void test_presets(void **state) {
    preset_matches("qwen3-0.6b", "qwen3-0.6b-old");
    preset_matches("deepseek-r1-distill-qwen-7b", "r1-distill-qwen-7b-old");
    preset_matches("deepseek-r1-distill-llama-8b", "r1-distill-llama-8b-old");
    preset_matches("llama-3.2-1b", "llama-3.2-1b-old");
    /* every listed preset is well formed */
    int n = 0;
    for (int i = 0; lf_config_preset_names[i]; i++, n++) {
        lf_config p;
        lf_error err = {{0}};
        assert_int_equal(lf_config_preset(lf_config_preset_names[i], &p, &err), 0);
        assert_true(p.vocab_size > 0 && p.hidden_size > 0 && p.intermediate_size > 0 && p.n_layers > 0);
        assert_true(p.n_heads > 0 && p.n_kv_heads > 0 && p.n_heads % p.n_kv_heads == 0);
        assert_true(p.head_dim > 0 && p.head_dim % 2 == 0);
        assert_true(p.rope.theta > 0 && p.rms_norm_eps > 0 && p.n_eos >= 1);
    }
    const char *required[] = {"qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen2.5-7b",
                              "deepseek-r1-distill-llama-8b", "llama-3.2-1b", "test-tiny"};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        bool found = false;
        for (int k = 0; k < n; k++) found |= strcmp(lf_config_preset_names[k], required[i]) == 0;
        assert_true(found);
    }
    lf_config p;
    lf_error err = {{0}};
    assert_int_equal(lf_config_preset("qwen9-1t", &p, &err), -1);
    assert_non_null(strstr(err.msg, "qwen9-1t"));
    assert_non_null(strstr(err.msg, "qwen3-0.6b")); /* lists the known ones */
}

/* ---- bad configs ---- */

static const char *base_cfg =
    "{\"architectures\":[\"Qwen3ForCausalLM\"],\"vocab_size\":100,\"hidden_size\":64,"
    "\"intermediate_size\":128,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
    "\"num_key_value_heads\":2,\"head_dim\":16%s}";

/* base_cfg with the keys of extra (",\"k\":v,...") set, replacing any
 * already there. */
static void with_overrides(const char *extra, char *json, size_t n) {
    char tmp[2048];
    snprintf(tmp, sizeof tmp, base_cfg, "");
    cJSON *o = cJSON_Parse(tmp);
    snprintf(tmp, sizeof tmp, "{%s}", extra + 1);
    cJSON *x = cJSON_Parse(tmp);
    assert_non_null(o);
    assert_non_null(x);
    while (x->child) {
        cJSON *it = cJSON_DetachItemViaPointer(x, x->child);
        cJSON_DeleteItemFromObjectCaseSensitive(o, it->string);
        cJSON_AddItemToObject(o, it->string, it);
    }
    char *s = cJSON_PrintUnformatted(o);
    snprintf(json, n, "%s", s);
    free(s);
    cJSON_Delete(o);
    cJSON_Delete(x);
}

static void expect_parse_fail(const char *extra, const char *phrase) {
    char json[2048];
    with_overrides(extra, json, sizeof json);
    lf_config c;
    lf_error err = {{0}};
    int rc = lf_config_parse(json, "/x/config.json", &c, &err);
    if (rc == 0) fail_msg("accepted: %s", json);
    if (!strstr(err.msg, "/x/config.json") || !strstr(err.msg, phrase))
        fail_msg("message '%s' lacks the path or '%s'", err.msg, phrase);
    assert_null(strchr(err.msg, '\n'));
}

static void test_base_parses(void **state) {
    char json[2048];
    snprintf(json, sizeof json, base_cfg, "");
    lf_config c;
    lf_error err = {{0}};
    assert_int_equal(lf_config_parse(json, "/x/config.json", &c, &err), 0);
    assert_int_equal(c.bos_token_id, -1);
    assert_int_equal(c.n_eos, 0);
    assert_true(c.rope.theta == 10000.0); /* transformers' default_theta */
}

static void test_bad_values(void **state) {
    expect_parse_fail(",\"hidden_size\":0", "\"hidden_size\"");
    expect_parse_fail(",\"num_hidden_layers\":-3", "\"num_hidden_layers\"");
    expect_parse_fail(",\"num_key_value_heads\":3", "\"num_key_value_heads\"");
    expect_parse_fail(",\"num_key_value_heads\":0", "\"num_key_value_heads\"");
    expect_parse_fail(",\"vocab_size\":\"many\"", "\"vocab_size\"");
    expect_parse_fail(",\"vocab_size\":1.5", "\"vocab_size\"");
    expect_parse_fail(",\"head_dim\":15", "\"head_dim\"");
    expect_parse_fail(",\"rms_norm_eps\":-1", "\"rms_norm_eps\"");
    expect_parse_fail(",\"rope_theta\":0", "rope_theta");
    expect_parse_fail(",\"eos_token_id\":\"</s>\"", "\"eos_token_id\"");
    expect_parse_fail(",\"eos_token_id\":[1,2,3,4,5,6,7,8,9]", "\"eos_token_id\"");
    expect_parse_fail(",\"torch_dtype\":\"int8\"", "\"torch_dtype\"");
    expect_parse_fail(",\"hidden_act\":\"gelu\"", "\"hidden_act\"");
    expect_parse_fail(",\"use_sliding_window\":true", "\"use_sliding_window\"");
    expect_parse_fail(",\"layer_types\":[\"full_attention\",\"sliding_attention\"]", "\"layer_types\"");
    expect_parse_fail(",\"tie_word_embeddings\":\"yes\"", "\"tie_word_embeddings\"");
}

static void test_missing_keys(void **state) {
    const char *keys[] = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads", "architectures"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        /* rebuild the base config without this key */
        char json[1024];
        cJSON *o = cJSON_Parse("{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":100,\"hidden_size\":64,"
                               "\"intermediate_size\":128,\"num_hidden_layers\":2,\"num_attention_heads\":4}");
        cJSON_DeleteItemFromObjectCaseSensitive(o, keys[i]);
        char *s = cJSON_PrintUnformatted(o);
        snprintf(json, sizeof json, "%s", s);
        free(s);
        cJSON_Delete(o);
        lf_config c;
        lf_error err = {{0}};
        assert_int_equal(lf_config_parse(json, "m/config.json", &c, &err), -1);
        char want[128];
        snprintf(want, sizeof want, "missing key \"%s\"", keys[i]);
        if (!strstr(err.msg, want) || !strstr(err.msg, "m/config.json")) fail_msg("'%s' lacks '%s'", err.msg, want);
    }
}

static void test_bad_rope(void **state) {
    expect_parse_fail(",\"rope_scaling\":{\"rope_type\":\"dynamic\",\"factor\":2}", "unsupported rope type \"dynamic\"");
    expect_parse_fail(",\"rope_parameters\":{\"rope_type\":\"longrope\"}", "rope_parameters.rope_type");
    expect_parse_fail(",\"rope_scaling\":{\"type\":\"linear\"}", "missing key \"rope_scaling.factor\"");
    expect_parse_fail(",\"rope_parameters\":{\"rope_type\":\"yarn\",\"factor\":-4}", "rope_parameters.factor");
    expect_parse_fail(",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8,\"high_freq_factor\":4}",
                      "missing key \"rope_scaling.low_freq_factor\"");
    expect_parse_fail(",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":4,"
                      "\"high_freq_factor\":1}", "high_freq_factor");
    expect_parse_fail(",\"rope_scaling\":[1]", "\"rope_scaling\" is not an object");
    expect_parse_fail(",\"partial_rotary_factor\":0.5", "partial_rotary_factor");
    expect_parse_fail(",\"rope_parameters\":{\"rope_type\":\"yarn\",\"factor\":2,\"truncate\":false}", "truncate");
}

static void test_unknown_arch(void **state) {
    lf_config c;
    lf_error err = {{0}};
    assert_int_equal(lf_config_parse("{\"architectures\":[\"MistralForCausalLM\"],\"vocab_size\":1}", "d/config.json",
                                     &c, &err),
                     -1);
    assert_non_null(strstr(err.msg, "d/config.json"));
    assert_non_null(strstr(err.msg, "unknown architecture \"MistralForCausalLM\""));
    assert_int_equal(lf_config_parse("{\"architectures\":[]}", "d/config.json", &c, &err), -1);
    assert_non_null(strstr(err.msg, "\"architectures\""));
}

static void test_mlp_bias(void **state) {
    lf_config c;
    lf_error err = {{0}};
    const char *j = "{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":100,\"hidden_size\":64,"
                    "\"intermediate_size\":128,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"mlp_bias\":true}";
    assert_int_equal(lf_config_parse(j, "l/config.json", &c, &err), -1);
    assert_non_null(strstr(err.msg, "\"mlp_bias\""));
    assert_non_null(strstr(err.msg, "l/config.json"));
}

static void test_malformed_json(void **state) {
    lf_config c;
    lf_error err = {{0}};
    assert_int_equal(lf_config_parse("{\"architectures\": [\"Qwen3ForCausalLM\"], ", "q/config.json", &c, &err), -1);
    assert_non_null(strstr(err.msg, "q/config.json"));
    assert_non_null(strstr(err.msg, "malformed JSON"));
    assert_int_equal(lf_config_parse("[1, 2]", "q/config.json", &c, &err), -1);
    assert_non_null(strstr(err.msg, "not a JSON object"));
}

static char tmpdir[256];

static void write_file(const char *dir, const char *name, const char *text) {
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_load_files(void **state) {
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/lf_cfg_XXXXXX", base && *base ? base : "/tmp");
    assert_non_null(mkdtemp(tmpdir));
    lf_config c;
    lf_error err = {{0}};
    /* missing config.json */
    assert_int_equal(lf_config_load(tmpdir, &c, &err), -1);
    assert_non_null(strstr(err.msg, "config.json"));
    assert_non_null(strstr(err.msg, tmpdir));
    /* good config.json, malformed generation_config.json */
    char json[2048];
    snprintf(json, sizeof json, base_cfg, ",\"eos_token_id\":5");
    write_file(tmpdir, "config.json", json);
    assert_int_equal(lf_config_load(tmpdir, &c, &err), 0);
    assert_int_equal(c.n_eos, 1);
    assert_int_equal(c.eos_token_ids[0], 5);
    write_file(tmpdir, "generation_config.json", "{\"eos_token_id\": [5, ");
    assert_int_equal(lf_config_load(tmpdir, &c, &err), -1);
    assert_non_null(strstr(err.msg, "generation_config.json"));
    /* generation_config.json without eos keeps config.json's */
    write_file(tmpdir, "generation_config.json", "{\"temperature\": 0.7}");
    assert_int_equal(lf_config_load(tmpdir, &c, &err), 0);
    assert_int_equal(c.n_eos, 1);
    assert_int_equal(c.eos_token_ids[0], 5);
    assert_true(c.gen_temperature == 0.7f);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_samples),
        cmocka_unit_test(test_presets),
        cmocka_unit_test(test_base_parses),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_missing_keys),
        cmocka_unit_test(test_bad_rope),
        cmocka_unit_test(test_unknown_arch),
        cmocka_unit_test(test_mlp_bias),
        cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_load_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
