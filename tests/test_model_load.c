/* Model directories: tiny checkpoints written by transformers'
 * save_pretrained (tests/data/config/hf-*, with what the safetensors library
 * read from them in expected.json), model directories written by this test
 * (good ones and one per validation rule), and random-weight models. */
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

#include "model/model.h"

#include "test_util.h"



/* The lf_weight the loader should have bound to a Hugging Face name. */
static const lf_weight *weight_by_name(const lf_model *m, const char *name) {
    if (!strcmp(name, "model.embed_tokens.weight")) return &m->embed;
    if (!strcmp(name, "model.norm.weight")) return &m->final_norm;
    if (!strcmp(name, "lm_head.weight")) return &m->lm_head;
    int layer, n = 0;
    char leaf[128];
    if (sscanf(name, "model.layers.%d.%127s%n", &layer, leaf, &n) != 2) return NULL;
    if (layer < 0 || layer >= m->cfg.n_layers) return NULL;
    const lf_layer_weights *w = &m->layers[layer];
    static const struct {
        const char *leaf;
        size_t off;
    } map[] = {
        {"input_layernorm.weight", offsetof(lf_layer_weights, attn_norm)},
        {"post_attention_layernorm.weight", offsetof(lf_layer_weights, ffn_norm)},
        {"self_attn.q_proj.weight", offsetof(lf_layer_weights, wq)},
        {"self_attn.k_proj.weight", offsetof(lf_layer_weights, wk)},
        {"self_attn.v_proj.weight", offsetof(lf_layer_weights, wv)},
        {"self_attn.o_proj.weight", offsetof(lf_layer_weights, wo)},
        {"self_attn.q_proj.bias", offsetof(lf_layer_weights, bq)},
        {"self_attn.k_proj.bias", offsetof(lf_layer_weights, bk)},
        {"self_attn.v_proj.bias", offsetof(lf_layer_weights, bv)},
        {"self_attn.o_proj.bias", offsetof(lf_layer_weights, bo)},
        {"self_attn.q_norm.weight", offsetof(lf_layer_weights, q_norm)},
        {"self_attn.k_norm.weight", offsetof(lf_layer_weights, k_norm)},
        {"mlp.gate_proj.weight", offsetof(lf_layer_weights, w_gate)},
        {"mlp.up_proj.weight", offsetof(lf_layer_weights, w_up)},
        {"mlp.down_proj.weight", offsetof(lf_layer_weights, w_down)},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(map[i].leaf, leaf)) return (const lf_weight *)((const char *)w + map[i].off);
    return NULL;
}

/* Every lf_weight slot of a model, to check that no slot is bound that the
 * checkpoint does not hold. */
static int all_slots(const lf_model *m, const lf_weight **out, int cap) {
    int n = 0;
    out[n++] = &m->embed;
    out[n++] = &m->final_norm;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const lf_layer_weights *w = &m->layers[l];
        const lf_weight *s[] = {&w->attn_norm, &w->wq, &w->wk, &w->wv, &w->wo, &w->bq, &w->bk, &w->bv,
                                &w->bo, &w->q_norm, &w->k_norm, &w->ffn_norm, &w->w_gate, &w->w_up, &w->w_down};
        for (size_t i = 0; i < sizeof s / sizeof s[0] && n < cap; i++) out[n++] = s[i];
    }
    return n;
}

static void check_hf_dir(const char *dir) {
    char path[1200];
    snprintf(path, sizeof path, "%s/expected.json", dir);
    cJSON *exp = read_json(path);
    assert_non_null(exp);
    const cJSON *tensors = cJSON_GetObjectItemCaseSensitive(exp, "tensors");
    assert_non_null(tensors);

    lf_model *m = NULL;
    lf_error err = {{0}};
    if (lf_model_load(dir, &m, &err) != 0) fail_msg("%s", err.msg);
    const lf_config *c = lf_model_config(m);
    assert_ptr_equal(c, &m->cfg);
    assert_string_equal(m->dir, dir);

    const lf_weight *seen[512];
    int n_seen = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tensors) {
        const lf_weight *w = weight_by_name(m, t->string);
        if (!w) fail_msg("%s: no slot for %s", dir, t->string);
        assert_non_null(w->data);
        seen[n_seen++] = w;
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(t, "shape");
        int nd = cJSON_GetArraySize(shape);
        int rows = nd == 2 ? (int)cJSON_GetArrayItem(shape, 0)->valuedouble : 1;
        int cols = (int)cJSON_GetArrayItem(shape, nd - 1)->valuedouble;
        assert_int_equal(w->rows, rows);
        assert_int_equal(w->cols, cols);
        assert_int_equal(w->dtype, LF_DTYPE_BF16);
        size_t n = (size_t)rows * (size_t)cols;
        double sum = 0;
        for (size_t i = 0; i < n; i++) sum += elem_value(w->data, w->dtype, i);
        double want = cJSON_GetObjectItemCaseSensitive(t, "sum")->valuedouble;
        if (fabs(sum - want) > 1e-9 * (1 + fabs(want))) fail_msg("%s: %s sum %.17g want %.17g", dir, t->string, sum, want);
        assert_true(elem_value(w->data, w->dtype, 0) == cJSON_GetObjectItemCaseSensitive(t, "first")->valuedouble);
        assert_true(elem_value(w->data, w->dtype, n - 1) == cJSON_GetObjectItemCaseSensitive(t, "last")->valuedouble);
    }
    /* nothing bound that the checkpoint lacks (e.g. a bias) */
    const lf_weight *slots[1024];
    int ns = all_slots(m, slots, 1024);
    for (int i = 0; i < ns; i++) {
        bool found = false;
        for (int k = 0; k < n_seen; k++) found |= seen[k] == slots[i];
        if (!found) assert_null(slots[i]->data);
    }
    bool tied = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(exp, "tie_word_embeddings"));
    assert_int_equal(c->tie_word_embeddings, tied);
    if (tied) {
        assert_ptr_equal(m->lm_head.data, m->embed.data);
        assert_int_equal(m->lm_head.rows, c->vocab_size);
    } else {
        assert_ptr_not_equal(m->lm_head.data, m->embed.data);
    }
    assert_int_equal(m->weight_bytes, (size_t)cJSON_GetObjectItemCaseSensitive(exp, "weight_bytes")->valuedouble);
    assert_int_equal(m->decode_bytes_per_token,
                     (size_t)cJSON_GetObjectItemCaseSensitive(exp, "decode_bytes_per_token")->valuedouble);
    lf_model_free(m);
    cJSON_Delete(exp);
}

static void test_hf_checkpoints(void **state) {
    assert_true(for_each_data_dir("config", "hf-", NULL, "checkpoint", check_hf_dir) >= 3);
}

/* ---- model directories written by the test ---------------------------- */

static char tmpdir[256];

static int setup(void **state) {
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/lf_model_XXXXXX", base && *base ? base : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

typedef struct {
    char name[96];
    const char *dtype; /* "BF16", "F16", "F32" */
    int ndim;
    long shape[2];
    int file; /* shard index */
} spec;

typedef struct {
    spec v[128];
    int n;
} spec_list;

static void add(spec_list *l, const char *name, int rows, int cols) {
    spec *s = &l->v[l->n++];
    snprintf(s->name, sizeof s->name, "%s", name);
    s->dtype = "BF16";
    s->ndim = rows ? 2 : 1;
    s->shape[0] = rows ? rows : cols;
    s->shape[1] = cols;
    s->file = 0;
}

static spec *find(spec_list *l, const char *name) {
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->v[i].name, name)) return &l->v[i];
    fail_msg("no spec %s", name);
    return NULL;
}

static void drop(spec_list *l, const char *name) {
    spec *s = find(l, name);
    *s = l->v[--l->n];
}

/* The Hugging Face tensor set of a Qwen2 model, hidden 16, inter 24, 2
 * layers, 4 heads of 8, 2 kv heads, vocab 40, untied. */
static const char *qwen2_cfg = "{\"architectures\":[\"Qwen2ForCausalLM\"],\"vocab_size\":40,\"hidden_size\":16,"
                               "\"intermediate_size\":24,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
                               "\"num_key_value_heads\":2,\"head_dim\":8,\"tie_word_embeddings\":false}";

static void qwen2_specs(spec_list *l) {
    l->n = 0;
    add(l, "model.embed_tokens.weight", 40, 16);
    add(l, "model.norm.weight", 0, 16);
    add(l, "lm_head.weight", 40, 16);
    for (int i = 0; i < 2; i++) {
        char b[96];
#define L(leaf, r, c) (snprintf(b, sizeof b, "model.layers.%d.%s", i, leaf), add(l, b, r, c))
        L("input_layernorm.weight", 0, 16);
        L("post_attention_layernorm.weight", 0, 16);
        L("self_attn.q_proj.weight", 32, 16);
        L("self_attn.k_proj.weight", 16, 16);
        L("self_attn.v_proj.weight", 16, 16);
        L("self_attn.o_proj.weight", 16, 32);
        L("self_attn.q_proj.bias", 0, 32);
        L("self_attn.k_proj.bias", 0, 16);
        L("self_attn.v_proj.bias", 0, 16);
        L("mlp.gate_proj.weight", 24, 16);
        L("mlp.up_proj.weight", 24, 16);
        L("mlp.down_proj.weight", 16, 24);
#undef L
    }
}

static size_t dsize(const char *dt) { return !strcmp(dt, "F32") ? 4 : 2; }

/* Test value of element i of tensor k: small dyadic numbers, exact in every
 * dtype. */
static float value(int k, size_t i) { return (float)((int)((k * 37 + (int)i * 11) % 61) - 30) / 32.0f; }

static void encode(const char *dt, float v, unsigned char *dst) {
    if (!strcmp(dt, "F32")) {
        memcpy(dst, &v, 4);
        return;
    }
    uint32_t u;
    memcpy(&u, &v, 4);
    uint16_t h;
    if (!strcmp(dt, "BF16")) {
        h = (uint16_t)(u >> 16);
    } else { /* F16 of a normal dyadic value with few mantissa bits */
        uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
        int e = (int)((u >> 23) & 0xff);
        if (e == 0) h = sign;
        else h = (uint16_t)(sign | ((e - 127 + 15) << 10) | ((u >> 13) & 0x3ff));
    }
    memcpy(dst, &h, 2);
}

static void mkdir_p(const char *d) {
    mkdir(d, 0755);
}

static void write_text(const char *dir, const char *name, const char *text) {
    char p[700];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Write the tensors of shard `file` into dir/name (safetensors). */
static void write_shard(const char *dir, const char *name, const spec_list *l, int file) {
    cJSON *h = cJSON_CreateObject();
    size_t off = 0;
    for (int k = 0; k < l->n; k++) {
        const spec *s = &l->v[k];
        if (s->file != file) continue;
        size_t n = (size_t)s->shape[0] * (s->ndim == 2 ? (size_t)s->shape[1] : 1);
        cJSON *e = cJSON_AddObjectToObject(h, s->name);
        cJSON_AddStringToObject(e, "dtype", s->dtype);
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < s->ndim; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)s->shape[d]));
        cJSON *o = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)off));
        off += n * dsize(s->dtype);
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)off));
        assert_int_equal(off % 8, 0); /* every size used here keeps the next tensor aligned */
    }
    char *hs = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    size_t hl = strlen(hs), padded = (hl + 7) & ~(size_t)7;
    unsigned char *data = calloc(off ? off : 1, 1);
    size_t pos = 0;
    for (int k = 0; k < l->n; k++) {
        const spec *s = &l->v[k];
        if (s->file != file) continue;
        size_t n = (size_t)s->shape[0] * (s->ndim == 2 ? (size_t)s->shape[1] : 1);
        for (size_t i = 0; i < n; i++) encode(s->dtype, value(k, i), data + pos + i * dsize(s->dtype));
        pos += n * dsize(s->dtype);
    }
    char p[700];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    fwrite(len, 1, 8, f);
    fwrite(hs, 1, hl, f);
    for (size_t i = hl; i < padded; i++) fputc(' ', f);
    fwrite(data, 1, off, f);
    fclose(f);
    free(data);
    free(hs);
}

/* A fresh model directory under tmpdir. */
static const char *model_dir(const char *name, const char *config, const spec_list *l) {
    static char d[400];
    snprintf(d, sizeof d, "%s/%s", tmpdir, name);
    mkdir_p(d);
    if (config) write_text(d, "config.json", config);
    if (l) write_shard(d, "model.safetensors", l, 0);
    return d;
}

static void expect_load_fail(const char *dir, const char *file, const char *phrase) {
    lf_model *m = (lf_model *)1;
    lf_error err = {{0}};
    int rc = lf_model_load(dir, &m, &err);
    if (rc == 0) {
        lf_model_free(m);
        fail_msg("%s: loaded, expected failure with '%s'", dir, phrase);
    }
    assert_null(m);
    if (!strstr(err.msg, file) || !strstr(err.msg, phrase))
        fail_msg("message '%s' lacks '%s' or '%s'", err.msg, file, phrase);
    assert_null(strchr(err.msg, '\n'));
}

static void check_values(const lf_model *m, const spec_list *l) {
    for (int k = 0; k < l->n; k++) {
        const lf_weight *w = weight_by_name(m, l->v[k].name);
        assert_non_null(w);
        assert_non_null(w->data);
        lf_dtype want = !strcmp(l->v[k].dtype, "F32") ? LF_DTYPE_F32 : !strcmp(l->v[k].dtype, "F16") ? LF_DTYPE_F16 : LF_DTYPE_BF16;
        assert_int_equal(w->dtype, want);
        size_t n = (size_t)w->rows * (size_t)w->cols;
        for (size_t i = 0; i < n; i++)
            if (elem_value(w->data, w->dtype, i) != value(k, i)) fail_msg("%s[%zu]", l->v[k].name, i);
    }
}

static void test_good_dir_mixed_dtypes(void **state) {
    spec_list l;
    qwen2_specs(&l);
    /* norms in F32, one projection in F16, an ignorable inv_freq buffer */
    find(&l, "model.norm.weight")->dtype = "F32";
    find(&l, "model.layers.1.input_layernorm.weight")->dtype = "F32";
    find(&l, "model.layers.0.self_attn.k_proj.weight")->dtype = "F16";
    const char *d = model_dir("good", qwen2_cfg, &l);
    lf_model *m = NULL;
    lf_error err = {{0}};
    if (lf_model_load(d, &m, &err) != 0) fail_msg("%s", err.msg);
    check_values(m, &l);
    /* independent byte counts */
    size_t all = 0, dec = 0;
    for (int k = 0; k < l.n; k++) {
        size_t b = (size_t)l.v[k].shape[0] * (l.v[k].ndim == 2 ? (size_t)l.v[k].shape[1] : 1) * dsize(l.v[k].dtype);
        all += b;
        if (strcmp(l.v[k].name, "model.embed_tokens.weight") != 0) dec += b;
    }
    assert_int_equal(m->weight_bytes, all);
    assert_int_equal(m->decode_bytes_per_token, dec);
    assert_null(m->layers[0].bo.data);
    assert_null(m->layers[0].q_norm.data);
    lf_model_free(m);
}

static void test_sharded(void **state) {
    spec_list l;
    qwen2_specs(&l);
    for (int k = 0; k < l.n; k++) l.v[k].file = k % 3;
    find(&l, "model.layers.1.mlp.up_proj.weight")->file = 2;
    const char *d = model_dir("sharded", qwen2_cfg, NULL);
    char dir[400];
    snprintf(dir, sizeof dir, "%s", d);
    const char *names[3] = {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                            "model-00003-of-00003.safetensors"};
    for (int f = 0; f < 3; f++) write_shard(dir, names[f], &l, f);
    cJSON *idx = cJSON_CreateObject();
    cJSON *wm = cJSON_AddObjectToObject(idx, "weight_map");
    for (int k = 0; k < l.n; k++) cJSON_AddStringToObject(wm, l.v[k].name, names[l.v[k].file]);
    char *s = cJSON_Print(idx);
    write_text(dir, "model.safetensors.index.json", s);
    free(s);
    cJSON_Delete(idx);
    lf_model *m = NULL;
    lf_error err = {{0}};
    if (lf_model_load(dir, &m, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(m->n_files, 3);
    check_values(m, &l);
    lf_model_free(m);

    /* the index names a shard that is not there */
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, names[2]);
    assert_int_equal(unlink(p), 0);
    expect_load_fail(dir, "model.safetensors.index.json", names[2]);
    expect_load_fail(dir, dir, "missing");
    /* a shard exists but lacks a tensor the index places there */
    spec_list l2 = l;
    drop(&l2, "model.layers.1.mlp.up_proj.weight");
    write_shard(dir, names[2], &l2, 2);
    expect_load_fail(dir, names[2], "missing tensor 'model.layers.1.mlp.up_proj.weight'");
    /* malformed index */
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\": {");
    expect_load_fail(dir, "model.safetensors.index.json", "malformed JSON");
    write_text(dir, "model.safetensors.index.json", "{\"metadata\": {}}");
    expect_load_fail(dir, "model.safetensors.index.json", "weight_map");
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\": {\"lm_head.weight\": \"../x.safetensors\"}}");
    expect_load_fail(dir, "model.safetensors.index.json", "not a file in the model directory");
}

static void test_missing_tensor(void **state) {
    spec_list l;
    qwen2_specs(&l);
    drop(&l, "model.layers.1.self_attn.v_proj.bias");
    const char *d = model_dir("missing", qwen2_cfg, &l);
    expect_load_fail(d, "model.safetensors", "missing tensor 'model.layers.1.self_attn.v_proj.bias'");
}

static void test_shape_mismatch(void **state) {
    spec_list l;
    qwen2_specs(&l);
    find(&l, "model.layers.0.mlp.down_proj.weight")->shape[1] = 16;
    const char *d = model_dir("shape", qwen2_cfg, &l);
    expect_load_fail(d, "model.safetensors",
                     "tensor 'model.layers.0.mlp.down_proj.weight' has shape [16, 16], config.json implies [16, 24]");
    qwen2_specs(&l);
    spec *s = find(&l, "model.norm.weight");
    s->ndim = 2;
    s->shape[0] = 1;
    s->shape[1] = 16;
    d = model_dir("shape2", qwen2_cfg, &l);
    expect_load_fail(d, "model.safetensors", "'model.norm.weight' has shape [1, 16]");
}

static void test_untied_without_lm_head(void **state) {
    spec_list l;
    qwen2_specs(&l);
    drop(&l, "lm_head.weight");
    const char *d = model_dir("nohead", qwen2_cfg, &l);
    expect_load_fail(d, "model.safetensors", "'lm_head.weight'");
    expect_load_fail(d, "model.safetensors", "tie_word_embeddings");
    /* the same files with tie_word_embeddings true load, lm_head = embed */
    char cfg[1024];
    snprintf(cfg, sizeof cfg, "%s", qwen2_cfg);
    char *t = strstr(cfg, "false");
    memcpy(t, "true ", 5);
    d = model_dir("tied", cfg, &l);
    lf_model *m = NULL;
    lf_error err = {{0}};
    if (lf_model_load(d, &m, &err) != 0) fail_msg("%s", err.msg);
    assert_ptr_equal(m->lm_head.data, m->embed.data);
    check_values(m, &l);
    lf_model_free(m);
    /* tied, and lm_head.weight stored anyway: accepted (transformers ties it) */
    qwen2_specs(&l);
    d = model_dir("tied2", cfg, &l);
    if (lf_model_load(d, &m, &err) != 0) fail_msg("%s", err.msg);
    assert_ptr_equal(m->lm_head.data, m->embed.data);
    lf_model_free(m);
}

static void test_unexpected_tensor(void **state) {
    spec_list l;
    qwen2_specs(&l);
    add(&l, "model.layers.0.self_attn.o_proj.bias", 0, 16); /* Qwen2 has none */
    const char *d = model_dir("extra", qwen2_cfg, &l);
    expect_load_fail(d, "model.safetensors", "unexpected tensor 'model.layers.0.self_attn.o_proj.bias'");
    qwen2_specs(&l);
    add(&l, "model.layers.2.mlp.up_proj.weight", 24, 16); /* a layer beyond num_hidden_layers */
    d = model_dir("extra2", qwen2_cfg, &l);
    expect_load_fail(d, "model.safetensors", "unexpected tensor 'model.layers.2.mlp.up_proj.weight'");
    /* inv_freq buffers of older checkpoints are harmless */
    qwen2_specs(&l);
    add(&l, "model.layers.0.self_attn.rotary_emb.inv_freq", 0, 4);
    find(&l, "model.layers.0.self_attn.rotary_emb.inv_freq")->dtype = "F32";
    d = model_dir("invfreq", qwen2_cfg, &l);
    lf_model *m = NULL;
    lf_error err = {{0}};
    if (lf_model_load(d, &m, &err) != 0) fail_msg("%s", err.msg);
    lf_model_free(m);
}

static void test_bad_config(void **state) {
    spec_list l;
    qwen2_specs(&l);
    const char *d = model_dir("noconfig", NULL, &l);
    expect_load_fail(d, "config.json", "missing config.json");
    d = model_dir("malformed", "{\"architectures\": [\"Qwen2ForCausalLM\"", &l);
    expect_load_fail(d, "config.json", "malformed JSON");
    char cfg[1024];
    snprintf(cfg, sizeof cfg, "%s", qwen2_cfg);
    memcpy(strstr(cfg, "Qwen2"), "Gemma", 5);
    d = model_dir("unknown", cfg, &l);
    expect_load_fail(d, "config.json", "unknown architecture \"GemmaForCausalLM\"");
}

static void test_no_weights(void **state) {
    const char *d = model_dir("noweights", qwen2_cfg, NULL);
    expect_load_fail(d, d, "no model.safetensors");
    /* a corrupt model.safetensors: the error names that file */
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fwrite("\x40\x00\x00\x00\x00\x00\x00\x00{}", 1, 10, f);
    fclose(f);
    expect_load_fail(d, "model.safetensors", "header length");
    expect_load_fail("/nonexistent/dir", "/nonexistent/dir/config.json", "missing config.json");
}

/* ---- random weights ----------------------------------------------------- */

static void stats(const lf_weight *w, double *mean, double *sd) {
    size_t n = (size_t)w->rows * (size_t)w->cols;
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) {
        double v = elem_value(w->data, w->dtype, i);
        s += v;
        s2 += v * v;
    }
    *mean = s / (double)n;
    *sd = sqrt(fmax(0, s2 / (double)n - *mean * *mean));
}

static void test_random(void **state) {
    const lf_dtype dts[3] = {LF_DTYPE_BF16, LF_DTYPE_F16, LF_DTYPE_F32};
    for (int di = 0; di < 3; di++) {
        lf_model *m = NULL, *m2 = NULL, *m3 = NULL;
        lf_error err = {{0}};
        assert_int_equal(lf_model_random("test-tiny", dts[di], 7, &m, &err), 0);
        assert_int_equal(lf_model_random("test-tiny", dts[di], 7, &m2, &err), 0);
        assert_int_equal(lf_model_random("test-tiny", dts[di], 8, &m3, &err), 0);
        lf_config p;
        assert_int_equal(lf_config_preset("test-tiny", &p, &err), 0);
        const lf_config *c = lf_model_config(m);
        assert_int_equal(c->hidden_size, p.hidden_size);
        assert_int_equal(c->n_layers, p.n_layers);
        assert_int_equal(c->head_dim, p.head_dim);
        assert_null(m->dir);
        assert_int_equal(m->n_files, 0);
        assert_non_null(m->owned);
        int H = c->hidden_size, I = c->intermediate_size, hd = c->head_dim;
        size_t es = lf_dtype_size(dts[di]), total = 0, dec = 0;
        struct {
            const lf_weight *w;
            int rows, cols, kind; /* 0 matrix, 1 norm */
        } all[128];
        int n = 0;
#define W(x, r, cc, k) (all[n].w = (x), all[n].rows = (r), all[n].cols = (cc), all[n].kind = (k), n++)
        W(&m->embed, c->vocab_size, H, 0);
        W(&m->final_norm, 1, H, 1);
        if (!c->tie_word_embeddings) W(&m->lm_head, c->vocab_size, H, 0);
        for (int i = 0; i < c->n_layers; i++) {
            const lf_layer_weights *w = &m->layers[i];
            W(&w->attn_norm, 1, H, 1);
            W(&w->ffn_norm, 1, H, 1);
            W(&w->wq, c->n_heads * hd, H, 0);
            W(&w->wk, c->n_kv_heads * hd, H, 0);
            W(&w->wv, c->n_kv_heads * hd, H, 0);
            W(&w->wo, H, c->n_heads * hd, 0);
            W(&w->q_norm, 1, hd, 1);
            W(&w->k_norm, 1, hd, 1);
            W(&w->w_gate, I, H, 0);
            W(&w->w_up, I, H, 0);
            W(&w->w_down, H, I, 0);
            assert_null(w->bq.data);
        }
#undef W
        for (int k = 0; k < n; k++) {
            const lf_weight *w = all[k].w;
            assert_non_null(w->data);
            assert_int_equal(w->dtype, dts[di]);
            assert_int_equal(w->rows, all[k].rows);
            assert_int_equal(w->cols, all[k].cols);
            assert_int_equal((uintptr_t)w->data % 64, 0);
            size_t b = (size_t)w->rows * (size_t)w->cols * es;
            total += b;
            if (w != &m->embed || c->tie_word_embeddings) dec += b;
            double mean, sd;
            stats(w, &mean, &sd);
            if (all[k].kind == 0) {
                double want = 1.0 / sqrt((double)w->cols);
                assert_true(fabs(mean) < 0.1 * want);
                if (fabs(sd / want - 1) > 0.1) fail_msg("weight %d: sd %g want %g", k, sd, want);
            } else {
                assert_true(fabs(mean - 1) < 0.05);
                assert_true(sd > 0.01 && sd < 0.2);
            }
            /* same seed: same bytes; other seed: different */
            const lf_weight *w2 = (const lf_weight *)((const char *)m2 + ((const char *)w - (const char *)m));
            const lf_weight *w3 = (const lf_weight *)((const char *)m3 + ((const char *)w - (const char *)m));
            if ((const char *)w >= (const char *)m->layers && (const char *)w < (const char *)(m->layers + c->n_layers)) {
                w2 = (const lf_weight *)((const char *)m2->layers + ((const char *)w - (const char *)m->layers));
                w3 = (const lf_weight *)((const char *)m3->layers + ((const char *)w - (const char *)m->layers));
            }
            assert_memory_equal(w->data, w2->data, b);
            assert_true(memcmp(w->data, w3->data, b) != 0);
        }
        assert_int_equal(m->weight_bytes, total);
        assert_int_equal(m->decode_bytes_per_token, dec);
        if (c->tie_word_embeddings) assert_ptr_equal(m->lm_head.data, m->embed.data);
        lf_model_free(m);
        lf_model_free(m2);
        lf_model_free(m3);
    }
    lf_model *m = (lf_model *)1;
    lf_error err = {{0}};
    assert_int_equal(lf_model_random("no-such-model", LF_DTYPE_BF16, 1, &m, &err), -1);
    assert_null(m);
    assert_non_null(strstr(err.msg, "no-such-model"));
    lf_model_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hf_checkpoints),
        cmocka_unit_test(test_good_dir_mixed_dtypes),
        cmocka_unit_test(test_sharded),
        cmocka_unit_test(test_missing_tensor),
        cmocka_unit_test(test_shape_mismatch),
        cmocka_unit_test(test_untied_without_lm_head),
        cmocka_unit_test(test_unexpected_tensor),
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_no_weights),
        cmocka_unit_test(test_random),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
