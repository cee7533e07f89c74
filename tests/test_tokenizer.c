/* Tokenizer conformance: every corpus line must encode to the ids the Python
 * `tokenizers` / `transformers` libraries gave (committed fixtures made by
 * tools/gen_tokenizer_fixtures.py), decode to the reference's text, and
 * stream-decode to the same text in whole UTF-8 characters. Also bad input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/file.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/tokenizer.h"

#include "test_util.h"



static void write_file(const char *path, const char *text, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, n, f), n);
    fclose(f);
}

static void copy_file(const char *from, const char *to) {
    char *text;
    size_t n;
    lf_error err = {{0}};
    assert_int_equal(lf_read_file(from, &text, &n, &err), 0);
    write_file(to, text, n);
    free(text);
}

/* A temporary model directory with tokenizer.json (decompressed when the
 * source ends in .xz) and tokenizer_config.json. */
static char *make_dir(const char *tokenizer_json, const char *config) {
    char tmpl[] = "/tmp/lf_tok_XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    char *dst = fmt("%s/tokenizer.json", d);
    size_t l = strlen(tokenizer_json);
    if (l > 3 && !strcmp(tokenizer_json + l - 3, ".xz")) {
        char *cmd = fmt("xz -dc '%s' > '%s'", tokenizer_json, dst);
        int rc = system(cmd);
        free(cmd);
        if (rc != 0) fail_msg("cannot decompress %s with xz", tokenizer_json);
    } else {
        copy_file(tokenizer_json, dst);
    }
    free(dst);
    if (config) {
        char *c = fmt("%s/tokenizer_config.json", d);
        copy_file(config, c);
        free(c);
    }
    return strdup(d);
}

static void remove_dir(char *d) {
    char *a = fmt("%s/tokenizer.json", d), *b = fmt("%s/tokenizer_config.json", d);
    unlink(a);
    unlink(b);
    rmdir(d);
    free(a);
    free(b);
    free(d);
}

static int *json_ids(const cJSON *arr, int *n) {
    *n = cJSON_GetArraySize(arr);
    int *v = malloc((size_t)(*n ? *n : 1) * sizeof *v);
    int k = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) v[k++] = e->valueint;
    return v;
}

static void print_ids(const char *what, const int *v, int n) {
    fprintf(stderr, "    %s (%d):", what, n);
    for (int i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", v[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

typedef struct stats {
    int lines, failures, roundtrips;
} stats;

static void report(stats *st, int line, const char *what, const char *text) {
    st->failures++;
    if (st->failures <= 12) fprintf(stderr, "  line %d: %s mismatch for text '%.80s'\n", line, what, text);
}

static bool check_ids(stats *st, int line, const char *what, const lf_tokenizer *t, const char *text,
                      unsigned flags, const cJSON *expected) {
    int *ids = NULL, n = 0;
    lf_error err = {{0}};
    if (lf_tokenizer_encode(t, text, strlen(text), flags, &ids, &n, &err)) {
        report(st, line, what, text);
        fprintf(stderr, "    error: %s\n", err.msg);
        return false;
    }
    int ne;
    int *exp = json_ids(expected, &ne);
    bool ok = ne == n && (n == 0 || !memcmp(ids, exp, (size_t)n * sizeof *ids));
    if (!ok) {
        report(st, line, what, text);
        if (st->failures <= 12) {
            print_ids("expected", exp, ne);
            print_ids("got", ids, n);
        }
    }
    free(exp);
    free(ids);
    return ok;
}

static bool utf8_ok(const char *s, size_t n) {
    /* strict UTF-8 check, independent of the library's */
    size_t i = 0;
    const unsigned char *u = (const unsigned char *)s;
    while (i < n) {
        unsigned c = u[i];
        size_t k;
        unsigned cp;
        if (c < 0x80) { i++; continue; }
        else if ((c & 0xE0) == 0xC0) { k = 1; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { k = 2; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { k = 3; cp = c & 0x07; }
        else return false;
        if (i + k >= n) return false;
        for (size_t j = 1; j <= k; j++) {
            if ((u[i + j] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (u[i + j] & 0x3F);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += k + 1;
    }
    return true;
}

static void check_decode(stats *st, int line, const lf_tokenizer *t, const cJSON *rec, const char *text) {
    const cJSON *d = cJSON_GetObjectItem(rec, "decoded");
    const cJSON *ds = cJSON_GetObjectItem(rec, "decoded_skip");
    const char *want = d ? d->valuestring : text;
    const char *want_skip = ds ? ds->valuestring : want;
    int n;
    int *ids = json_ids(cJSON_GetObjectItem(rec, "ids"), &n);
    lf_error err = {{0}};
    char *out = NULL;
    size_t len = 0;
    if (lf_tokenizer_decode(t, ids, n, false, &out, &len, &err) || strlen(want) != len || memcmp(out, want, len)) {
        report(st, line, "decode", text);
        if (st->failures <= 12) fprintf(stderr, "    want '%.80s'\n    got  '%.80s' %s\n", want, out ? out : "", err.msg);
    } else if (!d) {
        st->roundtrips++;
    }
    free(out);
    out = NULL;
    if (lf_tokenizer_decode(t, ids, n, true, &out, &len, &err) || strlen(want_skip) != len ||
        memcmp(out, want_skip, len))
        report(st, line, "decode(skip_special)", text);
    free(out);

    /* streaming: the chunks are whole UTF-8 and add up to the full decode */
    lf_detok_stream *s = lf_detok_stream_new(t, false);
    assert_non_null(s);
    char *acc = malloc(strlen(want) * 2 + 64);
    size_t an = 0, cap = strlen(want) * 2 + 64;
    bool chunks_ok = true;
    for (int i = 0; i < n; i++) {
        const char *piece;
        size_t pl;
        if (lf_detok_stream_push(s, ids[i], &piece, &pl, &err)) {
            chunks_ok = false;
            break;
        }
        if (!utf8_ok(piece, pl)) chunks_ok = false;
        if (an + pl >= cap) {
            cap = (an + pl) * 2;
            acc = realloc(acc, cap);
        }
        memcpy(acc + an, piece, pl);
        an += pl;
    }
    const char *piece;
    size_t pl;
    lf_detok_stream_flush(s, &piece, &pl);
    if (an + pl >= cap) acc = realloc(acc, an + pl + 1);
    memcpy(acc + an, piece, pl);
    an += pl;
    lf_detok_stream_free(s);
    if (!chunks_ok || an != strlen(want) || memcmp(acc, want, an)) {
        report(st, line, "stream decode", text);
        if (st->failures <= 12) fprintf(stderr, "    want '%.80s'\n    got  '%.*s'\n", want, (int)(an < 80 ? an : 80), acc);
    }
    free(acc);
    free(ids);
}

/* One expected line: ids (with and without special-token matching, with the
 * post-processor's tokens) and decode. */
static void check_record(stats *st, const lf_tokenizer *t, const cJSON *rec, const char *s) {
    st->lines++;
    const cJSON *ids = cJSON_GetObjectItem(rec, "ids");
    const cJSON *ns = cJSON_GetObjectItem(rec, "ids_nosplit");
    const cJSON *add = cJSON_GetObjectItem(rec, "ids_add");
    check_ids(st, st->lines, "encode", t, s, LF_TOK_PARSE_SPECIAL, ids);
    check_ids(st, st->lines, "encode(no parse special)", t, s, 0, ns ? ns : ids);
    if (!add || !cJSON_IsNull(add))
        check_ids(st, st->lines, "encode(add special)", t, s, LF_TOK_PARSE_SPECIAL | LF_TOK_ADD_SPECIAL,
                  add ? add : ids);
    check_decode(st, st->lines, t, rec, s);
}

/* Check a tokenizer against expected lines (expected.jsonl's format). */
static void check_expected_lines(const char *name, const lf_tokenizer *t, const char *expected_path) {
    lf_error err = {{0}};
    char *text;
    size_t len;
    assert_int_equal(lf_read_file(expected_path, &text, &len, &err), 0);
    stats st = {0};
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *rec = cJSON_Parse(line);
        assert_non_null(rec);
        check_record(&st, t, rec, cJSON_GetObjectItem(rec, "text")->valuestring);
        cJSON_Delete(rec);
    }
    fprintf(stderr, "[ %s ] %d lines, %d round-trip exactly, %d mismatches\n", name, st.lines, st.roundtrips,
            st.failures);
    free(text);
    assert_true(st.lines > 100);
    assert_int_equal(st.failures, 0);
}

/* Run one fixture: tokenizer directory + expected.jsonl. */
static void run_fixture(const char *name, const char *dir, const char *expected_path) {
    lf_error err = {{0}};
    lf_tokenizer *t = NULL;
    if (lf_tokenizer_load(dir, &t, &err)) fail_msg("%s: load failed: %s", name, err.msg);
    check_expected_lines(name, t, expected_path);
    lf_tokenizer_free(t);
}

static void fixture_dir_test(const char *name) {
    char *dir = fmt("%s/tokenizers/%s", data_dir(), name);
    char *exp = fmt("%s/expected.jsonl", dir);
    run_fixture(name, dir, exp);
    free(dir);
    free(exp);
}

/* The Qwen3 directory (decompressed once for the group). */
static char *qwen3_dir;

static int group_setup(void **state) {
    (void)state;
    char *tj = fmt("%s/tokenizers/qwen3/tokenizer.json.xz", data_dir());
    char *cfg = fmt("%s/tokenizers/qwen3/tokenizer_config.json", data_dir());
    qwen3_dir = make_dir(tj, cfg);
    free(tj);
    free(cfg);
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    if (qwen3_dir) remove_dir(qwen3_dir);
    qwen3_dir = NULL;
    return 0;
}

static void test_qwen3(void **state) {
    (void)state;
    char *exp = fmt("%s/tokenizers/qwen3/expected.jsonl", data_dir());
    run_fixture("qwen3", qwen3_dir, exp);
    free(exp);
}

static void test_llama2_shared(void **state) {
    (void)state;
    const char *shared = getenv("LF_SHARED_DIR");
    char *dir = fmt("%s/tokenizers/llama2", shared && *shared ? shared : "../shared");
    char *tj = fmt("%s/tokenizer.json", dir);
    if (!lf_file_exists(tj)) {
        fprintf(stderr, "[ llama2 ] %s not present: skipped\n", tj);
        free(dir);
        free(tj);
        skip();
    }
    char *exp = fmt("%s/tokenizers/llama2/expected.jsonl", data_dir());
    run_fixture("llama2 (../shared)", dir, exp);
    free(dir);
    free(tj);
    free(exp);
}

/* SmolLM2's tokenizer (Digits then ByteLevel; see smollm2/SOURCE.md). */
static void test_smollm2(void **state) {
    (void)state;
    char *tj = fmt("%s/tokenizers/smollm2/tokenizer.json.xz", data_dir());
    char *cfg = fmt("%s/tokenizers/smollm2/tokenizer_config.json", data_dir());
    char *exp = fmt("%s/tokenizers/smollm2/expected.jsonl", data_dir());
    char *dir = make_dir(tj, cfg);
    run_fixture("smollm2", dir, exp);
    remove_dir(dir);
    free(tj);
    free(cfg);
    free(exp);
}

static void test_spm_bf(void **state) { (void)state; fixture_dir_test("spm_bf"); }
static void test_spm_meta(void **state) { (void)state; fixture_dir_test("spm_meta"); }
static void test_bl_llama3(void **state) { (void)state; fixture_dir_test("bl_llama3"); }
static void test_bl_gpt2(void **state) { (void)state; fixture_dir_test("bl_gpt2"); }
static void test_deepseek(void **state) { (void)state; fixture_dir_test("deepseek"); }

/* Accessors against the fixture's own JSON (read here with cJSON). */
static void test_accessors(void **state) {
    (void)state;
    char *dir = fmt("%s/tokenizers/deepseek", data_dir());
    char *tjp = fmt("%s/tokenizer.json", dir), *cfp = fmt("%s/tokenizer_config.json", dir);
    lf_error err = {{0}};
    lf_tokenizer *t = NULL;
    assert_int_equal(lf_tokenizer_load(dir, &t, &err), 0);
    char *tj, *cf;
    size_t n;
    assert_int_equal(lf_read_file(tjp, &tj, &n, &err), 0);
    assert_int_equal(lf_read_file(cfp, &cf, &n, &err), 0);
    cJSON *j = cJSON_Parse(tj), *c = cJSON_Parse(cf);
    const cJSON *vocab = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "model"), "vocab");
    int max_id = -1, count = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        assert_int_equal(lf_tokenizer_token_to_id(t, e->string), e->valueint);
        assert_string_equal(lf_tokenizer_id_to_token(t, e->valueint), e->string);
        if (e->valueint > max_id) max_id = e->valueint;
        count++;
    }
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(j, "added_tokens")) {
        int id = cJSON_GetObjectItem(e, "id")->valueint;
        const char *content = cJSON_GetObjectItem(e, "content")->valuestring;
        assert_int_equal(lf_tokenizer_token_to_id(t, content), id);
        assert_string_equal(lf_tokenizer_id_to_token(t, id), content);
        assert_int_equal(lf_tokenizer_is_special(t, id), cJSON_IsTrue(cJSON_GetObjectItem(e, "special")));
        if (id > max_id) max_id = id;
    }
    assert_int_equal(lf_tokenizer_vocab_size(t), max_id + 1);
    assert_int_equal(lf_tokenizer_token_to_id(t, "no such token, surely"), -1);
    assert_null(lf_tokenizer_id_to_token(t, max_id + 1));
    assert_null(lf_tokenizer_id_to_token(t, -1));
    const char *bos = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "bos_token"), "content")->valuestring;
    const char *eos = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "eos_token"), "content")->valuestring;
    assert_int_equal(lf_tokenizer_bos_id(t), lf_tokenizer_token_to_id(t, bos));
    assert_int_equal(lf_tokenizer_eos_id(t), lf_tokenizer_token_to_id(t, eos));
    assert_true(lf_tokenizer_bos_id(t) >= 0);
    assert_string_equal(lf_tokenizer_chat_template(t), cJSON_GetObjectItem(c, "chat_template")->valuestring);
    cJSON_Delete(j);
    cJSON_Delete(c);
    free(tj);
    free(cf);
    free(tjp);
    free(cfp);
    free(dir);
    lf_tokenizer_free(t);
}

/* Streaming random ids (including tokens that hold parts of characters):
 * every chunk is whole UTF-8 and the chunks add up to the full decode. */
static void stream_random(const char *name, const lf_tokenizer *t, bool byte_level) {
    uint64_t xs = 88172645463325252ull;
    int vocab = lf_tokenizer_vocab_size(t);
    int checked = 0;
    for (int round = 0; round < 300; round++) {
        int n = 1 + (int)(xs % 60);
        int ids[64];
        for (int i = 0; i < n; i++) {
            xs ^= xs << 13;
            xs ^= xs >> 7;
            xs ^= xs << 17;
            int id = (int)(xs % (uint64_t)vocab);
            const char *tok = lf_tokenizer_id_to_token(t, id);
            /* byte-fallback tokens: only the bytes of whole characters,
             * since the reference judges an invalid run as a whole */
            if (!tok || (!byte_level && !strncmp(tok, "<0x", 3))) {
                i--;
                continue;
            }
            ids[i] = id;
        }
        if (!byte_level && round % 2) {
            /* the three byte tokens of U+4E2D, in the middle */
            int e4 = lf_tokenizer_token_to_id(t, "<0xE4>"), b8 = lf_tokenizer_token_to_id(t, "<0xB8>"),
                ad = lf_tokenizer_token_to_id(t, "<0xAD>");
            if (e4 >= 0 && b8 >= 0 && ad >= 0 && n > 4) {
                ids[n / 2 - 1] = e4;
                ids[n / 2] = b8;
                ids[n / 2 + 1] = ad;
            }
        }
        lf_error err = {{0}};
        char *full = NULL;
        size_t fl = 0;
        assert_int_equal(lf_tokenizer_decode(t, ids, n, false, &full, &fl, &err), 0);
        lf_detok_stream *s = lf_detok_stream_new(t, false);
        char *acc = malloc(fl * 2 + 64);
        size_t an = 0;
        for (int i = 0; i < n; i++) {
            const char *p;
            size_t pl;
            assert_int_equal(lf_detok_stream_push(s, ids[i], &p, &pl, &err), 0);
            if (!utf8_ok(p, pl)) fail_msg("%s: stream chunk is not whole UTF-8", name);
            assert_true(an + pl <= fl * 2 + 64);
            memcpy(acc + an, p, pl);
            an += pl;
        }
        const char *p;
        size_t pl;
        lf_detok_stream_flush(s, &p, &pl);
        memcpy(acc + an, p, pl);
        an += pl;
        if (an != fl || memcmp(acc, full, fl)) fail_msg("%s: round %d: stream decode differs from decode", name, round);
        lf_detok_stream_free(s);
        free(acc);
        free(full);
        checked++;
    }
    assert_int_equal(checked, 300);
}

static void test_stream_random(void **state) {
    (void)state;
    lf_error err = {{0}};
    lf_tokenizer *t = NULL;
    assert_int_equal(lf_tokenizer_load(qwen3_dir, &t, &err), 0);
    stream_random("qwen3", t, true);
    lf_tokenizer_free(t);
    const char *others[] = {"spm_bf", "spm_meta", "bl_llama3"};
    for (int k = 0; k < 3; k++) {
        char *d = fmt("%s/tokenizers/%s", data_dir(), others[k]);
        assert_int_equal(lf_tokenizer_load(d, &t, &err), 0);
        stream_random(others[k], t, k == 2);
        lf_tokenizer_free(t);
        free(d);
    }
}

/* ---- the tokenizer from GGUF metadata ------------------------------------ */
/* The GGUF metadata of a tokenizer.json, laid out as llama.cpp's converter
 * does (the rule tools/gen_tokenizer_gguf_fixtures.py documents and uses to
 * write the GGUF files transformers read for the expected ids); merges when
 * the case has them ("gpt2" always). */
typedef struct gguf_meta {
    lf_tokenizer_vocab_spec spec;
    char **tokens, **merges;
    int32_t *types;
    float *scores;
    cJSON *j;
} gguf_meta;

static bool is_byte_piece(const char *s) {
    return strlen(s) == 6 && !strncmp(s, "<0x", 3) && s[5] == '>' && strchr("0123456789ABCDEF", s[3]) &&
           strchr("0123456789ABCDEF", s[4]);
}

static void meta_from_tokenizer_json(gguf_meta *m, const char *path, const char *model, bool with_merges) {
    char *text = slurp(path);
    assert_non_null(text);
    m->j = cJSON_Parse(text);
    free(text);
    assert_non_null(m->j);
    const cJSON *mod = cJSON_GetObjectItem(m->j, "model"), *added = cJSON_GetObjectItem(m->j, "added_tokens");
    const cJSON *vocab = cJSON_GetObjectItem(mod, "vocab"), *e;
    int n = 0;
    cJSON_ArrayForEach(e, vocab) if (e->valueint + 1 > n) n = e->valueint + 1;
    cJSON_ArrayForEach(e, added) {
        int id = cJSON_GetObjectItem(e, "id")->valueint;
        if (id + 1 > n) n = id + 1;
    }
    m->tokens = calloc((size_t)n, sizeof *m->tokens);
    m->types = calloc((size_t)n, sizeof *m->types);
    m->scores = calloc((size_t)n, sizeof *m->scores);
    cJSON_ArrayForEach(e, vocab) {
        m->tokens[e->valueint] = strdup(e->string);
        m->types[e->valueint] = 1;
    }
    cJSON_ArrayForEach(e, added) {
        int id = cJSON_GetObjectItem(e, "id")->valueint;
        free(m->tokens[id]);
        m->tokens[id] = strdup(cJSON_GetObjectItem(e, "content")->valuestring);
        m->types[id] = cJSON_IsTrue(cJSON_GetObjectItem(e, "special")) ? 3 : 4;
    }
    bool spm = !strcmp(model, "llama");
    const cJSON *unk = cJSON_GetObjectItem(mod, "unk_token");
    for (int i = 0; i < n; i++) {
        if (!m->tokens[i]) {
            m->tokens[i] = fmt("[PAD%d]", i);
            m->types[i] = 5;
        }
        if (spm && m->types[i] == 1 && is_byte_piece(m->tokens[i])) m->types[i] = 6;
        else if (spm && (m->types[i] == 1 || m->types[i] == 3) && cJSON_IsString(unk) &&
                 !strcmp(m->tokens[i], unk->valuestring))
            m->types[i] = 2;
        m->scores[i] = m->types[i] == 1 ? -(float)i : 0.0f;
    }
    int nm = 0;
    if (with_merges) {
        const cJSON *merges = cJSON_GetObjectItem(mod, "merges");
        m->merges = calloc((size_t)cJSON_GetArraySize(merges) + 1, sizeof *m->merges);
        cJSON_ArrayForEach(e, merges) {
            m->merges[nm++] = cJSON_IsString(e) ? strdup(e->valuestring)
                                                : fmt("%s %s", e->child->valuestring, e->child->next->valuestring);
        }
    }
    m->spec = (lf_tokenizer_vocab_spec){.model = model, .n_tokens = n, .tokens = (const char *const *)m->tokens,
                                        .scores = spm ? m->scores : NULL, .token_types = m->types,
                                        .n_merges = nm, .merges = (const char *const *)m->merges,
                                        .bos_id = -1, .eos_id = -1, .unk_id = -1, .pad_id = -1,
                                        .add_bos = -1, .add_eos = -1};
}

static void meta_free(gguf_meta *m) {
    for (int i = 0; i < m->spec.n_tokens; i++) free(m->tokens[i]);
    for (int i = 0; i < m->spec.n_merges; i++) free(m->merges[i]);
    free(m->tokens);
    free(m->merges);
    free(m->types);
    free(m->scores);
    cJSON_Delete(m->j);
}

static int json_int(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsNumber(v) ? v->valueint : -1;
}

/* The path of a case's tokenizer.json (decompressed into *tmpdir when it is
 * .xz; from ../shared when it starts with "shared:"), or NULL when absent. */
static char *case_tokenizer_json(const char *src, char **tmpdir) {
    *tmpdir = NULL;
    if (!strncmp(src, "shared:", 7)) {
        const char *shared = getenv("LF_SHARED_DIR");
        char *p = fmt("%s/%s", shared && *shared ? shared : "../shared", src + 7);
        if (lf_file_exists(p)) return p;
        free(p);
        return NULL;
    }
    char *p = fmt("%s/tokenizers/%s", data_dir(), src);
    size_t l = strlen(p);
    if (l < 3 || strcmp(p + l - 3, ".xz")) return p;
    *tmpdir = make_dir(p, NULL);
    free(p);
    return fmt("%s/tokenizer.json", *tmpdir);
}

/* Every case of tests/data/tokenizers/gguf/cases.json: the tokenizer built by
 * lf_tokenizer_from_vocab from the GGUF metadata must give the reference's
 * ids (and decode) on the corpus. */
static void test_from_vocab(void **state) {
    (void)state;
    char *cases_path = fmt("%s/tokenizers/gguf/cases.json", data_dir());
    char *text = slurp(cases_path);
    assert_non_null(text);
    cJSON *cases = cJSON_Parse(text);
    assert_non_null(cases);
    int ran = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        char *tmpdir;
        char *tj = case_tokenizer_json(cJSON_GetObjectItem(c, "tokenizer_json")->valuestring, &tmpdir);
        if (!tj) {
            fprintf(stderr, "[ gguf %s ] source not present: skipped\n", name);
            continue;
        }
        gguf_meta m = {0};
        meta_from_tokenizer_json(&m, tj, cJSON_GetObjectItem(c, "model")->valuestring,
                                 cJSON_IsTrue(cJSON_GetObjectItem(c, "merges")));
        const cJSON *pre = cJSON_GetObjectItem(c, "pre");
        m.spec.pre = cJSON_IsString(pre) ? pre->valuestring : NULL;
        m.spec.bos_id = json_int(c, "bos_id");
        m.spec.eos_id = json_int(c, "eos_id");
        m.spec.unk_id = json_int(c, "unk_id");
        m.spec.pad_id = json_int(c, "pad_id");
        m.spec.add_bos = json_int(c, "add_bos");
        m.spec.add_eos = json_int(c, "add_eos");
        m.spec.chat_template = "{{ messages }}";
        lf_tokenizer *t = NULL;
        lf_error err = {{0}};
        if (lf_tokenizer_from_vocab(&m.spec, &t, &err)) fail_msg("gguf %s: %s", name, err.msg);
        assert_string_equal(lf_tokenizer_chat_template(t), "{{ messages }}");
        assert_int_equal(lf_tokenizer_bos_id(t), m.spec.bos_id);
        assert_int_equal(lf_tokenizer_eos_id(t), m.spec.eos_id);
        meta_free(&m);
        char *exp = fmt("%s/tokenizers/gguf/%s.jsonl", data_dir(), name);
        char *label = fmt("gguf %s", name);
        check_expected_lines(label, t, exp);
        lf_tokenizer_free(t);
        free(label);
        free(exp);
        free(tj);
        if (tmpdir) remove_dir(tmpdir);
        ran++;
    }
    assert_true(ran >= 6);
    cJSON_Delete(cases);
    free(text);
    free(cases_path);
}

/* Bad metadata: one-line errors naming the key. */
static void expect_vocab_error(const lf_tokenizer_vocab_spec *sp, const char *needle) {
    lf_tokenizer *t = (lf_tokenizer *)1;
    lf_error err = {{0}};
    int rc = lf_tokenizer_from_vocab(sp, &t, &err);
    if (rc != -1 || t != NULL || !strstr(err.msg, needle))
        fail_msg("from_vocab gave rc %d, message '%s' (wanted '%s')", rc, err.msg, needle);
}

static void test_from_vocab_errors(void **state) {
    (void)state;
    const char *tokens[] = {"a", "b", "ab", "<s>"};
    const char *merges[] = {"a b"};
    const int32_t types[] = {1, 1, 1, 3};
    const lf_tokenizer_vocab_spec ok = {.model = "gpt2", .pre = "qwen2", .n_tokens = 4, .tokens = tokens,
                                        .token_types = types, .n_merges = 1, .merges = merges, .bos_id = 3,
                                        .eos_id = -1, .unk_id = -1, .pad_id = -1, .add_bos = 1, .add_eos = -1};
    lf_tokenizer *t = NULL;
    lf_error err = {{0}};
    assert_int_equal(lf_tokenizer_from_vocab(&ok, &t, &err), 0);
    int *ids, n;
    assert_int_equal(lf_tokenizer_encode(t, "abba<s>", 7, LF_TOK_ADD_SPECIAL | LF_TOK_PARSE_SPECIAL, &ids, &n, &err), 0);
    assert_int_equal(n, 5); /* <s> ab b a <s> */
    assert_int_equal(ids[0], 3);
    assert_int_equal(ids[1], 2);
    assert_int_equal(ids[4], 3);
    assert_true(lf_tokenizer_is_special(t, 3));
    assert_null(lf_tokenizer_chat_template(t));
    free(ids);
    lf_tokenizer_free(t);

    lf_tokenizer_vocab_spec sp = ok;
    sp.pre = "frobnicate";
    expect_vocab_error(&sp, "unsupported tokenizer.ggml.pre 'frobnicate'");
    sp = ok;
    sp.model = "bert";
    expect_vocab_error(&sp, "unsupported tokenizer.ggml.model 'bert'");
    sp = ok;
    sp.model = NULL;
    expect_vocab_error(&sp, "tokenizer.ggml.model");
    sp = ok;
    sp.n_tokens = 0;
    expect_vocab_error(&sp, "tokenizer.ggml.tokens");
    sp = ok;
    const char *bad_utf8[] = {"a", "b", "ab", "\xff"};
    sp.tokens = bad_utf8;
    expect_vocab_error(&sp, "tokenizer.ggml.tokens[3] is not valid UTF-8");
    sp = ok;
    const char *bad_merge[] = {"a c"};
    sp.merges = bad_merge;
    expect_vocab_error(&sp, "tokenizer.ggml.merges[0]: token 'c'");
    const char *bad_merge2[] = {"ab"};
    sp.merges = bad_merge2;
    expect_vocab_error(&sp, "tokenizer.ggml.merges[0]");
    sp = ok;
    sp.bos_id = 4;
    expect_vocab_error(&sp, "bos_token_id 4");
    sp = ok;
    sp.bos_id = -1;
    expect_vocab_error(&sp, "add_bos_token");
    sp = ok;
    sp.model = "llama";
    sp.n_merges = 0;
    sp.merges = NULL;
    expect_vocab_error(&sp, "tokenizer.ggml.scores");
    const float nan_scores[] = {0, 0, NAN, 0};
    sp.scores = nan_scores;
    expect_vocab_error(&sp, "tokenizer.ggml.scores[2] is NaN");
}

/* ---- every component, against tokenizers --------------------------------- */
/* tests/data/tokenizers/components (tools/gen_tokenizer_component_fixtures.py):
 * each case is a base tokenizer.json with normalizer / pre_tokenizer /
 * post_processor / decoder swapped in; every (case, text) record holds the
 * reference's ids and decode. */
static char *xz_text(const char *path) {
    char tmpl[] = "/tmp/lf_tokxz_XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    close(fd);
    char *cmd = fmt("xz -dc '%s' > '%s'", path, tmpl);
    if (system(cmd) != 0) fail_msg("cannot decompress %s with xz", path);
    free(cmd);
    char *text = slurp(tmpl);
    unlink(tmpl);
    assert_non_null(text);
    return text;
}

/* The base with the case's parts swapped in, loaded from a temporary dir. */
static lf_tokenizer *component_tokenizer(const cJSON *c, const char *base_text) {
    cJSON *j = cJSON_Parse(base_text);
    assert_non_null(j);
    static const char *const parts[] = {"normalizer", "pre_tokenizer", "post_processor", "decoder"};
    for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
        const cJSON *p = cJSON_GetObjectItem(c, parts[k]);
        if (!p) continue;
        cJSON *dup = cJSON_Duplicate(p, 1);
        if (cJSON_HasObjectItem(j, parts[k])) cJSON_ReplaceItemInObjectCaseSensitive(j, parts[k], dup);
        else cJSON_AddItemToObject(j, parts[k], dup);
    }
    char *json = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    char tmpl[] = "/tmp/lf_tokcomp_XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    char *path = fmt("%s/tokenizer.json", d);
    write_file(path, json, strlen(json));
    free(json);
    lf_tokenizer *t = NULL;
    lf_error err = {{0}};
    int rc = lf_tokenizer_load(d, &t, &err);
    unlink(path);
    rmdir(d);
    free(path);
    if (rc) fail_msg("component case %s: load failed: %s", cJSON_GetObjectItem(c, "name")->valuestring, err.msg);
    return t;
}

static const char *base_text(const char *base, char **cache_names, char **cache_texts, int *n_cache) {
    for (int i = 0; i < *n_cache; i++)
        if (!strcmp(cache_names[i], base)) return cache_texts[i];
    char *path = fmt("%s/tokenizers/%s", data_dir(), base);
    size_t l = strlen(path);
    char *text = l > 3 && !strcmp(path + l - 3, ".xz") ? xz_text(path) : slurp(path);
    assert_non_null(text);
    free(path);
    cache_names[*n_cache] = strdup(base);
    cache_texts[*n_cache] = text;
    return cache_texts[(*n_cache)++];
}

/* The growth rule of every tokenizer array: doubles to the need, refuses
 * (NULL, nothing changed) a size that would not fit a size_t instead of
 * wrapping around. */
static void test_grow(void **state) {
    (void)state;
    size_t cap = 0;
    int *p = lf_grow(NULL, &cap, 100, sizeof *p, 16);
    assert_non_null(p);
    assert_int_equal(cap, 128);
    p[99] = 7;
    int *q = lf_grow(p, &cap, 129, sizeof *p, 16);
    assert_non_null(q);
    assert_int_equal(cap, 256);
    assert_int_equal(q[99], 7);
    assert_null(lf_grow(q, &cap, SIZE_MAX, sizeof *q, 16));
    assert_null(lf_grow(q, &cap, SIZE_MAX / 2 + 2, 1, 16));
    assert_null(lf_grow(q, &cap, SIZE_MAX / sizeof *q + 1, sizeof *q, 16));
    assert_int_equal(cap, 256);
    free(q);
}

static void test_components(void **state) {
    (void)state;
    char *dir = fmt("%s/tokenizers/components", data_dir());
    char *cp = fmt("%s/cases.json", dir), *tp = fmt("%s/texts.json", dir), *ep = fmt("%s/expected.jsonl.xz", dir);
    char *ctext = slurp(cp), *ttext = slurp(tp), *etext = xz_text(ep);
    assert_non_null(ctext);
    assert_non_null(ttext);
    cJSON *cases = cJSON_Parse(ctext), *texts = cJSON_Parse(ttext);
    assert_non_null(cases);
    assert_non_null(texts);
    char *names[8], *bases[8];
    int n_bases = 0, n_cases = 0, bad_cases = 0, records = 0;
    char *save = NULL, *line = strtok_r(etext, "\n", &save);
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        lf_tokenizer *t =
            component_tokenizer(c, base_text(cJSON_GetObjectItem(c, "base")->valuestring, names, bases, &n_bases));
        stats st = {0};
        for (; line; line = strtok_r(NULL, "\n", &save)) {
            cJSON *rec = cJSON_Parse(line);
            assert_non_null(rec);
            if (strcmp(cJSON_GetObjectItem(rec, "case")->valuestring, name)) {
                cJSON_Delete(rec);
                break;
            }
            const cJSON *text = cJSON_GetArrayItem(texts, cJSON_GetObjectItem(rec, "t")->valueint);
            assert_non_null(text);
            check_record(&st, t, rec, text->valuestring);
            cJSON_Delete(rec);
        }
        if (st.failures) {
            fprintf(stderr, "[ component %s ] %d lines, %d mismatches\n", name, st.lines, st.failures);
            bad_cases++;
        }
        if (st.lines < 80) fail_msg("component case %s: only %d records", name, st.lines);
        records += st.lines;
        n_cases++;
        lf_tokenizer_free(t);
    }
    fprintf(stderr, "[ components ] %d cases, %d records, %d cases with mismatches\n", n_cases, records, bad_cases);
    assert_null(line);
    for (int i = 0; i < n_bases; i++) {
        free(names[i]);
        free(bases[i]);
    }
    cJSON_Delete(cases);
    cJSON_Delete(texts);
    free(ctext);
    free(ttext);
    free(etext);
    free(cp);
    free(tp);
    free(ep);
    free(dir);
    assert_true(n_cases >= 60);
    assert_int_equal(bad_cases, 0);
}

/* ---- bad input ----------------------------------------------------------- */
static lf_tokenizer *load_spm(void) {
    char *dir = fmt("%s/tokenizers/spm_bf", data_dir());
    lf_error err = {{0}};
    lf_tokenizer *t = NULL;
    assert_int_equal(lf_tokenizer_load(dir, &t, &err), 0);
    free(dir);
    return t;
}

static void test_invalid_utf8(void **state) {
    (void)state;
    lf_tokenizer *t = load_spm();
    const char *bad[] = {"abc\xff", "\xc3", "a\xe2\x82", "\xed\xa0\x80 surrogate", "\xc0\xaf overlong",
                         "\xf4\x90\x80\x80 too big", "\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int *ids = (int *)1, n = -1;
        lf_error err = {{0}};
        assert_int_equal(lf_tokenizer_encode(t, bad[i], strlen(bad[i]), LF_TOK_PARSE_SPECIAL, &ids, &n, &err), -1);
        assert_null(ids);
        assert_non_null(strstr(err.msg, "UTF-8"));
    }
    /* valid input with an embedded NUL is fine */
    int *ids = NULL, n = 0;
    lf_error err = {{0}};
    assert_int_equal(lf_tokenizer_encode(t, "a\0b", 3, 0, &ids, &n, &err), 0);
    assert_true(n >= 2);
    free(ids);
    /* decode of an id outside the vocabulary */
    int badid[] = {5, lf_tokenizer_vocab_size(t)};
    char *out = NULL;
    assert_int_equal(lf_tokenizer_decode(t, badid, 2, false, &out, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "token id"));
    lf_detok_stream *s = lf_detok_stream_new(t, false);
    const char *p;
    size_t pl;
    assert_int_equal(lf_detok_stream_push(s, -3, &p, &pl, &err), -1);
    lf_detok_stream_free(s);
    lf_tokenizer_free(t);
}

static void expect_load_error(const char *json, const char *needle) {
    char tmpl[] = "/tmp/lf_tokbad_XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    char *p = fmt("%s/tokenizer.json", d);
    write_file(p, json, strlen(json));
    lf_error err = {{0}};
    lf_tokenizer *t = (lf_tokenizer *)1;
    int rc = lf_tokenizer_load(d, &t, &err);
    if (rc != -1 || t != NULL || !strstr(err.msg, needle))
        fail_msg("load of '%.60s' gave rc %d, message '%s' (wanted '%s')", json, rc, err.msg, needle);
    unlink(p);
    rmdir(d);
    free(p);
}

static void test_bad_files(void **state) {
    (void)state;
    static const char model[] = "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, "
                                "\"merges\": [\"a b\"]}";
    char *ok = fmt("{%s}", model);
    /* sanity: the minimal file loads and merges */
    char tmpl[] = "/tmp/lf_tokok_XXXXXX";
    char *d = mkdtemp(tmpl);
    char *p = fmt("%s/tokenizer.json", d);
    write_file(p, ok, strlen(ok));
    lf_error err = {{0}};
    lf_tokenizer *t = NULL;
    assert_int_equal(lf_tokenizer_load(d, &t, &err), 0);
    int *ids, n;
    assert_int_equal(lf_tokenizer_encode(t, "abba", 4, 0, &ids, &n, &err), 0);
    assert_int_equal(n, 3); /* ab b a */
    assert_int_equal(ids[0], 2);
    free(ids);
    lf_tokenizer_free(t);
    unlink(p);
    rmdir(d);
    free(p);
    free(ok);

    expect_load_error("{\"model\": {", "invalid JSON");
    expect_load_error("[1, 2]", "invalid JSON");
    expect_load_error("{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", "unsupported model type 'Unigram'");
    expect_load_error("{\"model\": {\"type\": \"BPE\"}}", "needs a \"vocab\"");
    char *s;
    s = fmt("{%s, \"pre_tokenizer\": {\"type\": \"Frobnicate\"}}", model);
    expect_load_error(s, "unsupported pre_tokenizer type 'Frobnicate'");
    free(s);
    s = fmt("{%s, \"normalizer\": {\"type\": \"Precompiled\"}}", model);
    expect_load_error(s, "unsupported normalizer type 'Precompiled'");
    free(s);
    s = fmt("{%s, \"decoder\": {\"type\": \"CTC\"}}", model);
    expect_load_error(s, "unsupported decoder type 'CTC'");
    free(s);
    s = fmt("{%s, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(unclosed\"}, "
            "\"behavior\": \"Isolated\"}}", model);
    expect_load_error(s, "bad regex");
    free(s);
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a c\"]}}",
                      "not in the vocabulary");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"x\"}, \"merges\": []}}",
                      "valid id");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [[\"a\"]]}}",
                      "merge 0");
    s = fmt("{%s, \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": "
            "[{\"SpecialToken\": {\"id\": \"<s>\"}}, {\"Sequence\": {\"id\": \"A\"}}], \"special_tokens\": {}}}",
            model);
    expect_load_error(s, "special token '<s>' has no ids");
    free(s);

    /* a directory without tokenizer.json */
    char tmpl2[] = "/tmp/lf_tokempty_XXXXXX";
    char *e = mkdtemp(tmpl2);
    t = (lf_tokenizer *)1;
    assert_int_equal(lf_tokenizer_load(e, &t, &err), -1);
    assert_null(t);
    assert_non_null(strstr(err.msg, "tokenizer.json"));
    rmdir(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qwen3),       cmocka_unit_test(test_llama2_shared),
        cmocka_unit_test(test_spm_bf),      cmocka_unit_test(test_spm_meta),
        cmocka_unit_test(test_bl_llama3),   cmocka_unit_test(test_bl_gpt2),
        cmocka_unit_test(test_deepseek),    cmocka_unit_test(test_smollm2),
        cmocka_unit_test(test_accessors),
        cmocka_unit_test(test_stream_random),
        cmocka_unit_test(test_invalid_utf8), cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_from_vocab),  cmocka_unit_test(test_from_vocab_errors),
        cmocka_unit_test(test_components), cmocka_unit_test(test_grow),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
