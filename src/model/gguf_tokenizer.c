/* tokenizer.ggml.* metadata -> lf_tokenizer_vocab_spec -> the tokenizer
 * module's constructor. Only reading and checking the metadata lives here;
 * the tokenizer itself is src/tokenizer's. */
#include "model/gguf_tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/file.h"
#include "model/gguf_model.h"

void lf_gguf_vocab_free(lf_gguf_vocab *v) {
    if (!v) return;
    lf_gguf_free_strs(v->tokens, v->spec.n_tokens);
    lf_gguf_free_strs(v->merges, v->spec.n_merges);
    free(v->model);
    free(v->pre);
    free(v->chat_template);
    free(v->scores);
    free(v->token_types);
    memset(v, 0, sizeof *v);
}

/* A 4-byte array (f32 or i32) of exactly n elements, copied out of the
 * mapping (which gives no alignment); absent: *out stays NULL. */
static int read_u32_array(const lf_gguf_file *f, const char *key, uint32_t type, int n, void **out, lf_error *err) {
    uint64_t count;
    const uint8_t *p;
    int r = lf_gguf_get_array(f, key, type, &count, &p, err);
    if (r <= 0) return r;
    if (count != (uint64_t)n)
        return lf_fail(err, "%s: key '%s' has %llu entries for %d tokens", f->path, key, (unsigned long long)count, n);
    *out = malloc((size_t)n * 4 + 1);
    if (!*out) return lf_fail(err, "%s: out of memory", f->path);
    memcpy(*out, p, (size_t)n * 4); /* little-endian, as on every supported host */
    return 1;
}

/* A special token id: -1 when absent; else inside the vocabulary. */
static int read_id(const lf_gguf_file *f, const char *key, int n_tokens, int *out, lf_error *err) {
    int64_t v;
    *out = -1;
    int r = lf_gguf_get_int(f, key, &v, err);
    if (r < 0) return -1;
    if (r == 0) return 0;
    if (v < 0 || v >= n_tokens)
        return lf_fail(err, "%s: key '%s' = %lld is outside the vocabulary of %d tokens", f->path, key, (long long)v,
                       n_tokens);
    *out = (int)v;
    return 0;
}

static int read_flag(const lf_gguf_file *f, const char *key, int *out, lf_error *err) {
    bool b;
    *out = -1;
    int r = lf_gguf_get_bool(f, key, &b, err);
    if (r > 0) *out = b;
    return r < 0 ? -1 : 0;
}

static int read_special(const lf_gguf_file *f, lf_gguf_vocab *v, lf_error *err) {
    lf_tokenizer_vocab_spec *s = &v->spec;
    int n = s->n_tokens;
    if (read_id(f, "tokenizer.ggml.bos_token_id", n, &s->bos_id, err) ||
        read_id(f, "tokenizer.ggml.eos_token_id", n, &s->eos_id, err) ||
        read_id(f, "tokenizer.ggml.unknown_token_id", n, &s->unk_id, err) ||
        read_id(f, "tokenizer.ggml.padding_token_id", n, &s->pad_id, err) ||
        read_flag(f, "tokenizer.ggml.add_bos_token", &s->add_bos, err) ||
        read_flag(f, "tokenizer.ggml.add_eos_token", &s->add_eos, err))
        return -1;
    return 0;
}

int lf_gguf_vocab_read(const lf_gguf_file *f, lf_gguf_vocab *v, lf_error *err) {
    memset(v, 0, sizeof *v);
    lf_tokenizer_vocab_spec *s = &v->spec;
    int r = lf_gguf_get_str(f, "tokenizer.ggml.model", &v->model, err);
    if (r == 0) lf_fail(err, "%s: no tokenizer in the file (missing key 'tokenizer.ggml.model')", f->path);
    if (r <= 0) goto fail;
    r = lf_gguf_get_strs(f, "tokenizer.ggml.tokens", &v->tokens, &s->n_tokens, err);
    if (r == 0) lf_fail(err, "%s: missing key 'tokenizer.ggml.tokens'", f->path);
    if (r <= 0) goto fail;
    if (lf_gguf_get_str(f, "tokenizer.ggml.pre", &v->pre, err) < 0 ||
        lf_gguf_get_strs(f, "tokenizer.ggml.merges", &v->merges, &s->n_merges, err) < 0 ||
        read_u32_array(f, "tokenizer.ggml.scores", LF_GGUF_FLOAT32, s->n_tokens, (void **)&v->scores, err) < 0 ||
        read_u32_array(f, "tokenizer.ggml.token_type", LF_GGUF_INT32, s->n_tokens, (void **)&v->token_types, err) <
            0 ||
        lf_gguf_get_str(f, "tokenizer.chat_template", &v->chat_template, err) < 0 || read_special(f, v, err))
        goto fail;
    s->model = v->model;
    s->pre = v->pre;
    s->tokens = (const char *const *)v->tokens;
    s->merges = (const char *const *)v->merges;
    s->scores = v->scores;
    s->token_types = v->token_types;
    s->chat_template = v->chat_template;
    return 0;
fail:
    lf_gguf_vocab_free(v);
    return -1;
}

static int gguf_tokenizer_load(const char *file, lf_tokenizer **out, lf_error *err) {
    lf_gguf_file f;
    if (lf_gguf_open(file, &f, err) != 0) return -1;
    lf_gguf_vocab v;
    int rc = lf_gguf_vocab_read(&f, &v, err);
    if (rc == 0) {
        rc = lf_tokenizer_from_vocab(&v.spec, out, err);
        if (rc != 0) lf_fail_prefix(err, "%s", file);
        lf_gguf_vocab_free(&v);
    }
    lf_gguf_close(&f);
    return rc;
}

int lf_model_tokenizer_load(const char *path, lf_tokenizer **out, lf_error *err) {
    *out = NULL;
    char *file = NULL;
    int g = lf_gguf_model_path(path, &file, err);
    if (g < 0) return -1;
    if (g == 0) return lf_tokenizer_load(path, out, err);
    int rc = gguf_tokenizer_load(file, out, err);
    free(file);
    return rc;
}

bool lf_model_has_tokenizer(const char *path) {
    char *file = NULL;
    lf_error err;
    if (lf_gguf_model_path(path, &file, &err) != 0) {
        free(file);
        return true; /* a GGUF (or an ambiguous directory, which loading reports) */
    }
    char *tj = lf_path_join(path, "tokenizer.json");
    bool has = tj && lf_file_exists(tj);
    free(tj);
    return has;
}
