/* GGUF: the dequantizers against the gguf Python package, tiny models
 * converted the way llama.cpp's converter does against the same checkpoints
 * read through the safetensors path, and one malformed file per validation
 * rule (built here in memory, byte by byte). Fixtures: tools/gen_gguf_fixtures.py. */
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

#include "cpu/kernels.h"
#include "model/gguf.h"
#include "model/gguf_model.h"
#include "model/gguf_tokenizer.h"
#include "model/model.h"
#include "model/quant.h"

#include "test_util.h"

static uint8_t *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(len > 0 ? (size_t)len : 1);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}

/* ---- dequantizers -------------------------------------------------------- */

static void test_dequant_matches_gguf_package(void **state) {
    (void)state;
    static const char *const names[] = {"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0",
                                        "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        const lf_quant_type *q = NULL;
        for (uint32_t t = 0; t < 64 && !q; t++)
            if (lf_quant_find(t) && !strcmp(lf_quant_find(t)->name, names[k])) q = lf_quant_find(t);
        assert_non_null(q);
        char *bp = fmt("%s/gguf/quant/%s.blocks", data_dir(), names[k]);
        char *rp = fmt("%s/gguf/quant/%s.bf16", data_dir(), names[k]);
        size_t nb = 0, nr = 0;
        uint8_t *blocks = read_bytes(bp, &nb);
        uint16_t *ref = (uint16_t *)read_bytes(rp, &nr);
        assert_non_null(blocks);
        assert_non_null(ref);
        size_t n = nr / 2;
        assert_int_equal(lf_quant_row_bytes(q, n), nb);
        uint16_t *got = malloc(nr);
        lf_quant_to_bf16(q, blocks, n, got);
        size_t bad = 0, first = n;
        for (size_t i = 0; i < n; i++)
            if (got[i] != ref[i]) {
                if (!bad) first = i;
                bad++;
            }
        if (bad)
            fail_msg("%s: %zu of %zu values differ from gguf.quants.dequantize (first at %zu: 0x%04x, expected "
                     "0x%04x)", names[k], bad, n, first, got[first], ref[first]);
        printf("%-5s %zu values bit-exact\n", names[k], n);
        free(got);
        free(blocks);
        free(ref);
        free(bp);
        free(rp);
    }
}

static void test_type_names(void **state) {
    (void)state;
    assert_string_equal(lf_quant_type_name(10), "Q2_K");
    assert_string_equal(lf_quant_type_name(30), "BF16");
    assert_null(lf_quant_type_name(4));
    assert_null(lf_quant_type_name(1000));
    assert_null(lf_quant_find(10));
    assert_int_equal(lf_quant_find(14)->block_bytes, 210);
}

/* ---- models: GGUF against the same checkpoint as safetensors -------------- */

/* Every weight slot of a model, in one fixed order. */
static int all_weights(const lf_model *m, const lf_weight **out) {
    int n = 0;
    out[n++] = &m->embed;
    out[n++] = &m->final_norm;
    out[n++] = &m->lm_head;
    for (int i = 0; i < m->cfg.n_layers; i++) {
        const lf_layer_weights *w = &m->layers[i];
        const lf_weight *l[] = {&w->attn_norm, &w->wq, &w->wk, &w->wv, &w->wo, &w->bq, &w->bk, &w->bv,
                                &w->bo, &w->q_norm, &w->k_norm, &w->ffn_norm, &w->w_gate, &w->w_up, &w->w_down};
        for (size_t k = 0; k < sizeof l / sizeof l[0]; k++) out[n++] = l[k];
    }
    return n;
}

static void compare_configs(const lf_config *g, const lf_config *s) {
    assert_int_equal(g->arch, s->arch);
    assert_string_equal(g->arch_name, s->arch_name);
    assert_int_equal(g->vocab_size, s->vocab_size);
    assert_int_equal(g->hidden_size, s->hidden_size);
    assert_int_equal(g->intermediate_size, s->intermediate_size);
    assert_int_equal(g->n_layers, s->n_layers);
    assert_int_equal(g->n_heads, s->n_heads);
    assert_int_equal(g->n_kv_heads, s->n_kv_heads);
    assert_int_equal(g->head_dim, s->head_dim);
    assert_int_equal(g->max_position, s->max_position);
    assert_true(fabs(g->rms_norm_eps - s->rms_norm_eps) <= 1e-7 * s->rms_norm_eps); /* GGUF holds an f32 */
    assert_int_equal(g->rope.type, s->rope.type);
    assert_true(g->rope.theta == s->rope.theta);
    assert_true(g->rope.factor == s->rope.factor);
    assert_int_equal(g->tie_word_embeddings, s->tie_word_embeddings);
    assert_int_equal(g->qk_norm, s->qk_norm);
    assert_int_equal(g->qkv_bias, s->qkv_bias);
    assert_int_equal(g->o_bias, s->o_bias);
    assert_int_equal(g->bos_token_id, s->bos_token_id);
    assert_int_equal(g->n_eos, 1);
    assert_int_equal(g->eos_token_ids[0], s->eos_token_ids[0]);
}

/* max_rel: 0 = every value equal; else each tensor's rel-L2 error bound.
 * mode: how the GGUF's block matrices are held (kept blocks are read back
 * through lf_weight_row_f32, which dequantizes them). */
static void compare_models_mode(const char *name, const char *gguf_name, double max_rel, lf_weights_mode mode) {
    char *gpath = fmt("%s/gguf/models/%s.gguf", data_dir(), gguf_name);
    char *dir = fmt("%s/models/%s", data_dir(), name);
    lf_model *g = NULL, *s = NULL;
    lf_error err = {{0}};
    if (lf_model_load_mode(gpath, mode, &g, &err)) fail_msg("%s", err.msg);
    if (lf_model_load(dir, &s, &err)) fail_msg("%s", err.msg);
    compare_configs(&g->cfg, &s->cfg);
    const lf_weight *wg[3 + 15 * 64], *ws[3 + 15 * 64];
    assert_true(g->cfg.n_layers <= 64);
    int n = all_weights(g, wg);
    assert_int_equal(all_weights(s, ws), n);
    double worst = 0;
    for (int k = 0; k < n; k++) {
        assert_int_equal(wg[k]->data == NULL, ws[k]->data == NULL);
        if (!ws[k]->data) continue;
        assert_int_equal(wg[k]->rows, ws[k]->rows);
        assert_int_equal(wg[k]->cols, ws[k]->cols);
        size_t cnt = (size_t)ws[k]->rows * (size_t)ws[k]->cols;
        float *a = malloc(cnt * sizeof *a), *b = malloc(cnt * sizeof *b);
        for (int r = 0; r < ws[k]->rows; r++) {
            lf_weight_row_f32(wg[k], r, a + (size_t)r * ws[k]->cols);
            lf_weight_row_f32(ws[k], r, b + (size_t)r * ws[k]->cols);
        }
        bool exact = wg[k]->rows == 1 || max_rel == 0; /* 1-D tensors are F32 copies of the bf16 values */
        if (exact) {
            for (size_t i = 0; i < cnt; i++)
                if (a[i] != b[i]) fail_msg("%s: weight %d element %zu: %g != %g", gguf_name, k, i, a[i], b[i]);
        } else {
            double r = rel_l2(a, b, (int)cnt);
            if (r > worst) worst = r;
            if (r > max_rel) fail_msg("%s: weight %d: rel-L2 %g > %g", gguf_name, k, r, max_rel);
        }
        free(a);
        free(b);
    }
    printf("%s (%s): %d weights match the safetensors checkpoint (worst rel-L2 %.2e)\n", gguf_name,
           mode == LF_WEIGHTS_QUANT ? "blocks kept" : "bf16", n, worst);
    assert_int_equal(g->weight_bytes > 0, 1);
    lf_model_free(g);
    lf_model_free(s);
    free(gpath);
    free(dir);
}

static void compare_models(const char *name, const char *gguf_name, double max_rel) {
    compare_models_mode(name, gguf_name, max_rel, LF_WEIGHTS_BF16);
    compare_models_mode(name, gguf_name, max_rel, LF_WEIGHTS_QUANT);
}

static void test_llama_bf16(void **state) {
    (void)state;
    compare_models("llama_linear", "llama_linear", 0);
}
static void test_qwen2_bf16(void **state) {
    (void)state;
    compare_models("qwen2_bias", "qwen2_bias", 0);
}
static void test_qwen3_bf16(void **state) {
    (void)state;
    compare_models("qwen3_tied_hd", "qwen3_tied_hd", 0);
}
/* Q8_0 keeps ~8 bits per value: a mapping or Q/K order mistake would give
 * errors near 1, the quantization alone stays below 1%. Both dequantized
 * and as kept blocks (whose Q/K rows are reordered as blocks). */
static void test_llama_q8_0(void **state) {
    (void)state;
    compare_models("llama_linear", "llama_linear-q8_0", 1e-2);
}

/* A directory holding one .gguf is that model; two are refused. */
/* Every tensor of a GGUF view is found by name (lf_st_find's binary search
 * needs the view sorted; a file's tensors come in any order). */
static void test_view_lookup(void **state) {
    (void)state;
    static const char *const files[] = {"llama_linear", "llama_linear-q8_0", "llama_linear-q8_0-reversed", "qwen2_bias",
                                         "qwen3_tied_hd"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        for (int keep = 0; keep < 2; keep++) {
            char *path = fmt("%s/gguf/models/%s.gguf", data_dir(), files[i]);
            lf_config cfg;
            lf_st_file view;
            void *owned = NULL;
            lf_error err = {0};
            if (lf_gguf_model_open(path, keep, &cfg, &view, &owned, &err)) fail_msg("%s", err.msg);
            for (int t = 0; t < view.n_tensors; t++)
                if (lf_st_find(&view, view.tensors[t].name) != &view.tensors[t])
                    fail_msg("%s: tensor '%s' not found by name", path, view.tensors[t].name);
            lf_st_close(&view);
            free(owned);
            free(path);
        }
}

static void test_directory_forms(void **state) {
    (void)state;
    char tmpl[] = "/tmp/lf_gguf_dirXXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    char *src = fmt("%s/gguf/models/llama_linear.gguf", data_dir());
    char *abs_src = realpath(src, NULL);
    assert_non_null(abs_src);
    char *l1 = fmt("%s/a.gguf", d), *l2 = fmt("%s/b.gguf", d);
    assert_int_equal(symlink(abs_src, l1), 0);
    lf_model *m = NULL;
    lf_error err = {{0}};
    if (lf_model_load(d, &m, &err)) fail_msg("%s", err.msg);
    assert_int_equal(m->cfg.arch, LF_ARCH_LLAMA);
    lf_model_free(m);
    assert_int_equal(symlink(abs_src, l2), 0);
    assert_int_equal(lf_model_load(d, &m, &err), -1);
    assert_non_null(strstr(err.msg, "holds 2 .gguf files"));
    unlink(l1);
    unlink(l2);
    rmdir(d);
    free(l1);
    free(l2);
    free(abs_src);
    free(src);
}

/* ---- malformed files ----------------------------------------------------- */

typedef struct {
    uint8_t *b;
    size_t n, cap;
} buf;

static void put(buf *w, const void *p, size_t n) {
    if (w->n + n > w->cap) {
        w->cap = (w->n + n) * 2 + 64;
        w->b = realloc(w->b, w->cap);
    }
    memcpy(w->b + w->n, p, n);
    w->n += n;
}
static void put_u32(buf *w, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(w, b, 4);
}
static void put_u64(buf *w, uint64_t v) {
    put_u32(w, (uint32_t)v);
    put_u32(w, (uint32_t)(v >> 32));
}
static void put_str(buf *w, const char *s) {
    put_u64(w, strlen(s));
    put(w, s, strlen(s));
}
static void header(buf *w, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    put(w, "GGUF", 4);
    put_u32(w, version);
    put_u64(w, n_tensors);
    put_u64(w, n_kv);
}
static void kv_u32(buf *w, const char *key, uint32_t v) {
    put_str(w, key);
    put_u32(w, LF_GGUF_UINT32);
    put_u32(w, v);
}
static void kv_str(buf *w, const char *key, const char *v) {
    put_str(w, key);
    put_u32(w, LF_GGUF_STRING);
    put_str(w, v);
}
/* A 1-D tensor info of n elements. */
static void tensor_info(buf *w, const char *name, uint64_t n, uint32_t type, uint64_t offset) {
    put_str(w, name);
    put_u32(w, 1);
    put_u64(w, n);
    put_u32(w, type);
    put_u64(w, offset);
}
/* Zero bytes after a malformed field, so that the counts in the header
 * stay within what the file could hold and the field itself is checked. */
static void filler(buf *w, size_t n) {
    for (size_t i = 0; i < n; i++) put(w, "", 1);
}
static void pad_to(buf *w, size_t align) {
    static const uint8_t z[64];
    while (w->n % align) put(w, z, 1);
}

/* parse must fail with a message holding want (and the file's name). */
static void expect_error(buf *w, const char *want) {
    if (!w->b) put(w, "", 0);
    lf_gguf_file f;
    lf_error err = {{0}};
    int rc = lf_gguf_parse(w->b, w->n, "bad.gguf", &f, &err);
    if (rc == 0) {
        lf_gguf_close(&f);
        fail_msg("accepted a file that should fail with '%s'", want);
    }
    if (!strstr(err.msg, want) || strncmp(err.msg, "bad.gguf: ", 10) != 0)
        fail_msg("error '%s' does not say '%s'", err.msg, want);
    assert_null(strchr(err.msg, '\n'));
    free(w->b);
    memset(w, 0, sizeof *w);
}

static void test_good_minimal(void **state) {
    (void)state;
    buf w = {0};
    header(&w, 2, 1, 2);
    kv_u32(&w, "general.alignment", 64);
    kv_str(&w, "general.architecture", "llama");
    tensor_info(&w, "t", 4, LF_GGML_F32, 0);
    pad_to(&w, 64);
    float v[4] = {1, 2, 3, 4};
    put(&w, v, sizeof v);
    lf_gguf_file f;
    lf_error err = {{0}};
    if (lf_gguf_parse(w.b, w.n, "good.gguf", &f, &err)) fail_msg("%s", err.msg);
    assert_int_equal(f.version, 2);
    assert_int_equal(f.alignment, 64);
    assert_int_equal(f.n_tensors, 1);
    assert_ptr_equal(f.tensors[0].data, w.b + w.n - 16);
    char *s = NULL;
    assert_int_equal(lf_gguf_get_str(&f, "general.architecture", &s, &err), 1);
    assert_string_equal(s, "llama");
    free(s);
    int64_t a;
    assert_int_equal(lf_gguf_get_int(&f, "general.alignment", &a, &err), 1);
    assert_int_equal(a, 64);
    assert_int_equal(lf_gguf_get_int(&f, "general.architecture", &a, &err), -1);
    assert_non_null(strstr(err.msg, "is a string, expected an integer"));
    assert_int_equal(lf_gguf_get_int(&f, "missing", &a, &err), 0);
    lf_gguf_close(&f);
    free(w.b);
}

static void test_bad_header(void **state) {
    (void)state;
    buf w = {0};
    put(&w, "GGML", 4);
    put_u32(&w, 3);
    expect_error(&w, "bad magic");
    header(&w, 1, 0, 0);
    expect_error(&w, "version 1 is not supported");
    header(&w, 7, 0, 0);
    expect_error(&w, "unknown GGUF version 7");
    header(&w, 0x03000000u, 0, 0);
    expect_error(&w, "big-endian");
    header(&w, 3, 0, 1ull << 40);
    expect_error(&w, "metadata count 1099511627776 is past the end");
    header(&w, 3, 1ull << 60, 0);
    expect_error(&w, "tensor count 1152921504606846976 is past the end");
    put(&w, "GGUF", 4);
    put_u32(&w, 3);
    put_u32(&w, 0);
    expect_error(&w, "truncated file: the tensor count");
}

static void test_bad_metadata(void **state) {
    (void)state;
    buf w = {0};
    header(&w, 3, 0, 1);
    put_u64(&w, 1000); /* key length past the end */
    put(&w, "abc", 3);
    filler(&w, 16);
    expect_error(&w, "string length 1000 is past the end");

    header(&w, 3, 0, 1);
    put_str(&w, "k");
    put_u32(&w, LF_GGUF_STRING);
    put_u64(&w, 1ull << 62); /* value length past the end */
    put_u32(&w, 0);
    expect_error(&w, "key 'k': string length 4611686018427387904 is past the end");

    header(&w, 3, 0, 1);
    put_str(&w, "arr");
    put_u32(&w, LF_GGUF_ARRAY);
    put_u32(&w, LF_GGUF_UINT64);
    put_u64(&w, 1ull << 61); /* absurd count */
    put_u64(&w, 0);
    expect_error(&w, "key 'arr': array count 2305843009213693952 is past the end");

    header(&w, 3, 0, 1);
    put_str(&w, "strs");
    put_u32(&w, LF_GGUF_ARRAY);
    put_u32(&w, LF_GGUF_STRING);
    put_u64(&w, 3);
    put_str(&w, "a");
    put_u64(&w, 50); /* the second string runs past the end */
    put(&w, "bcdefgh", 7);
    put_u64(&w, 0);
    expect_error(&w, "key 'strs'");

    header(&w, 3, 0, 1);
    put_str(&w, "nest");
    put_u32(&w, LF_GGUF_ARRAY);
    put_u32(&w, LF_GGUF_ARRAY);
    put_u64(&w, 1);
    put_u64(&w, 0);
    expect_error(&w, "arrays of arrays are not supported");

    header(&w, 3, 0, 1);
    put_str(&w, "odd");
    put_u32(&w, 77);
    put_u64(&w, 0);
    expect_error(&w, "key 'odd': unknown value type 77");

    header(&w, 3, 0, 2);
    kv_u32(&w, "dup", 1);
    kv_u32(&w, "dup", 2);
    expect_error(&w, "duplicate metadata key 'dup'");

    header(&w, 3, 0, 1);
    kv_u32(&w, "general.alignment", 48);
    expect_error(&w, "general.alignment = 48 is not a power of two");

    header(&w, 3, 0, 1);
    put_u64(&w, 3);
    put(&w, "a\0b", 3);
    put_u32(&w, LF_GGUF_UINT8);
    put(&w, "x", 1);
    expect_error(&w, "holds a NUL byte");
}

static void test_bad_tensors(void **state) {
    (void)state;
    buf w = {0};
    /* data past the end */
    header(&w, 3, 1, 0);
    tensor_info(&w, "t", 64, LF_GGML_F32, 0);
    pad_to(&w, 32);
    put(&w, (float[4]){0}, 16);
    expect_error(&w, "tensor 't': data (256 bytes at offset 0) past the end of the file");
    /* misaligned offset */
    header(&w, 3, 1, 0);
    tensor_info(&w, "t", 4, LF_GGML_F32, 8);
    pad_to(&w, 32);
    put(&w, (float[16]){0}, 64);
    expect_error(&w, "tensor 't': offset 8 is not a multiple of the alignment 32");
    /* a type ggml knows but longflow does not dequantize */
    header(&w, 3, 1, 0);
    tensor_info(&w, "t", 256, 10, 0);
    expect_error(&w, "tensor 't' has type Q2_K, which is not supported");
    /* a number that names no type */
    header(&w, 3, 1, 0);
    tensor_info(&w, "t", 4, 200, 0);
    expect_error(&w, "tensor 't' has unknown tensor type 200");
    /* row not a whole number of blocks */
    header(&w, 3, 1, 0);
    tensor_info(&w, "t", 40, LF_GGML_Q8_0, 0);
    expect_error(&w, "row length 40 is not a multiple of Q8_0's block of 32");
    /* duplicate names */
    header(&w, 3, 2, 0);
    tensor_info(&w, "same", 4, LF_GGML_F32, 0);
    tensor_info(&w, "same", 4, LF_GGML_F32, 32);
    pad_to(&w, 32);
    put(&w, (float[16]){0}, 64);
    expect_error(&w, "duplicate tensor name 'same'");
    /* dimensions */
    header(&w, 3, 1, 0);
    put_str(&w, "t");
    put_u32(&w, 5);
    filler(&w, 32);
    expect_error(&w, "tensor 't' has 5 dimensions");
    header(&w, 3, 1, 0);
    put_str(&w, "t");
    put_u32(&w, 3);
    put_u64(&w, 1ull << 40);
    put_u64(&w, 1ull << 40);
    put_u64(&w, 1ull << 40);
    put_u32(&w, 0);
    put_u64(&w, 0);
    expect_error(&w, "dimensions overflow");
    /* huge but representable: the size check catches it */
    header(&w, 3, 1, 0);
    tensor_info(&w, "t", 1ull << 60, LF_GGML_F32, 0);
    expect_error(&w, "past the end of the file");
}

/* Every prefix of a valid file is refused cleanly. */
static void test_every_truncation(void **state) {
    (void)state;
    char *p = fmt("%s/gguf/models/llama_linear-q8_0.gguf", data_dir());
    size_t n = 0;
    uint8_t *b = read_bytes(p, &n);
    assert_non_null(b);
    lf_gguf_file f;
    lf_error err = {{0}};
    assert_int_equal(lf_gguf_parse(b, n, "x.gguf", &f, &err), 0);
    size_t data_end = 0;
    for (int i = 0; i < f.n_tensors; i++) {
        size_t e = (size_t)(f.tensors[i].data - b) + f.tensors[i].nbytes;
        if (e > data_end) data_end = e;
    }
    lf_gguf_close(&f);
    assert_int_equal(data_end, n);
    /* every length through the header and metadata, then a stride through the data */
    for (size_t len = 0; len < n; len += len < 8192 ? 1 : 997) {
        if (lf_gguf_parse(b, len, "x.gguf", &f, &err) == 0) {
            lf_gguf_close(&f);
            fail_msg("a prefix of %zu of %zu bytes was accepted", len, n);
        }
        assert_non_null(strstr(err.msg, "past the end"));
    }
    free(b);
    free(p);
}

/* Model-level rules: unknown architecture, a tensor with no Hugging Face
 * counterpart, a file that does not exist. */
static void test_bad_models(void **state) {
    (void)state;
    buf w = {0};
    header(&w, 3, 0, 1);
    kv_str(&w, "general.architecture", "mamba");
    lf_gguf_file f;
    lf_error err = {{0}};
    assert_int_equal(lf_gguf_parse(w.b, w.n, "m.gguf", &f, &err), 0);
    lf_config cfg;
    assert_int_equal(lf_gguf_config(&f, &cfg, &err), -1);
    assert_string_equal(err.msg, "m.gguf: unknown architecture 'mamba' (supported: llama, qwen2, qwen3)");
    lf_gguf_close(&f);
    free(w.b);
    memset(&w, 0, sizeof w);

    header(&w, 3, 0, 2);
    kv_str(&w, "general.architecture", "llama");
    kv_u32(&w, "llama.embedding_length", 0);
    assert_int_equal(lf_gguf_parse(w.b, w.n, "m.gguf", &f, &err), 0);
    assert_int_equal(lf_gguf_config(&f, &cfg, &err), -1);
    assert_non_null(strstr(err.msg, "m.gguf"));
    lf_gguf_close(&f);
    free(w.b);

    lf_model *m = NULL;
    assert_int_equal(lf_model_load("/nonexistent/x.gguf", &m, &err), -1);
}

/* A GGUF holding only tokenizer metadata: three tokens, optional extras. */
static void vocab_file(buf *w, int n_kv_extra) {
    header(w, 3, 0, 2 + (uint64_t)n_kv_extra);
    kv_str(w, "tokenizer.ggml.model", "llama");
    put_str(w, "tokenizer.ggml.tokens");
    put_u32(w, LF_GGUF_ARRAY);
    put_u32(w, LF_GGUF_STRING);
    put_u64(w, 3);
    put_str(w, "<unk>");
    put_str(w, "a");
    put_str(w, "b");
}

static int read_vocab(buf *w, lf_gguf_vocab *v, lf_error *err) {
    lf_gguf_file f;
    if (lf_gguf_parse(w->b, w->n, "v.gguf", &f, err)) fail_msg("%s", err->msg);
    int rc = lf_gguf_vocab_read(&f, v, err);
    lf_gguf_close(&f);
    free(w->b);
    memset(w, 0, sizeof *w);
    return rc;
}

static void test_vocab_metadata(void **state) {
    (void)state;
    buf w = {0};
    lf_gguf_vocab v;
    lf_error err = {{0}};
    vocab_file(&w, 3);
    put_str(&w, "tokenizer.ggml.scores");
    put_u32(&w, LF_GGUF_ARRAY);
    put_u32(&w, LF_GGUF_FLOAT32);
    put_u64(&w, 3);
    put(&w, (float[3]){0.0f, -1.5f, -2.5f}, 12);
    kv_u32(&w, "tokenizer.ggml.unknown_token_id", 0);
    put_str(&w, "tokenizer.ggml.add_bos_token");
    put_u32(&w, LF_GGUF_BOOL);
    put(&w, "\1", 1);
    if (read_vocab(&w, &v, &err)) fail_msg("%s", err.msg);
    assert_string_equal(v.spec.model, "llama");
    assert_null(v.spec.pre);
    assert_int_equal(v.spec.n_tokens, 3);
    assert_string_equal(v.spec.tokens[2], "b");
    assert_true(v.spec.scores[1] == -1.5f);
    assert_null(v.spec.token_types);
    assert_null(v.spec.merges);
    assert_int_equal(v.spec.unk_id, 0);
    assert_int_equal(v.spec.bos_id, -1);
    assert_int_equal(v.spec.add_bos, 1);
    assert_int_equal(v.spec.add_eos, -1);
    lf_gguf_vocab_free(&v);

    vocab_file(&w, 1);
    put_str(&w, "tokenizer.ggml.scores");
    put_u32(&w, LF_GGUF_ARRAY);
    put_u32(&w, LF_GGUF_FLOAT32);
    put_u64(&w, 2);
    put(&w, (float[2]){0}, 8);
    assert_int_equal(read_vocab(&w, &v, &err), -1);
    assert_string_equal(err.msg, "v.gguf: key 'tokenizer.ggml.scores' has 2 entries for 3 tokens");

    vocab_file(&w, 1);
    kv_u32(&w, "tokenizer.ggml.eos_token_id", 3);
    assert_int_equal(read_vocab(&w, &v, &err), -1);
    assert_string_equal(err.msg, "v.gguf: key 'tokenizer.ggml.eos_token_id' = 3 is outside the vocabulary of 3 tokens");

    header(&w, 3, 0, 0);
    assert_int_equal(read_vocab(&w, &v, &err), -1);
    assert_non_null(strstr(err.msg, "missing key 'tokenizer.ggml.model'"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dequant_matches_gguf_package),
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_llama_bf16),
        cmocka_unit_test(test_qwen2_bf16),
        cmocka_unit_test(test_qwen3_bf16),
        cmocka_unit_test(test_llama_q8_0),
        cmocka_unit_test(test_view_lookup),
        cmocka_unit_test(test_directory_forms),
        cmocka_unit_test(test_good_minimal),
        cmocka_unit_test(test_bad_header),
        cmocka_unit_test(test_bad_metadata),
        cmocka_unit_test(test_bad_tensors),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_bad_models),
        cmocka_unit_test(test_vocab_metadata),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
