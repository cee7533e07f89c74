/* Encode/decode round trips on the real tokenizers committed for tests
 * (byte-level BPE: GPT-2, Llama 3, DeepSeek-R1, Qwen3, the bundled tiny
 * reasoner; SentencePiece-style: byte fallback with and without Metaspace).
 * Input: one byte (which tokenizer, which flags), then the text. Checked:
 *  - valid UTF-8 encodes; invalid UTF-8 is refused, never crashes;
 *  - decode(encode(x)) == x where the tokenizer guarantees it (the rules
 *    below were checked against the Hugging Face tokenizers library);
 *  - streaming decode, id by id, gives the same text as decoding at once. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

typedef enum {
    RT_NONE,       /* GPT-2: NFKC and an added prefix space */
    RT_EXACT,      /* byte-level, no normalizer */
    RT_NFC,        /* byte-level after NFC: x == decode(encode(x)) when x is NFC */
    RT_SPM,        /* Prepend/Replace + byte fallback: without U+2581 or added tokens */
    RT_METASPACE,  /* as RT_SPM, and Metaspace drops one leading space */
} rt_rule;

typedef struct {
    const char *json, *config;
    rt_rule rule;
    lf_tokenizer *tok;
} tok_case;

static tok_case g_cases[] = {
    {"tests/data/tokenizers/bl_gpt2/tokenizer.json", "tests/data/tokenizers/bl_gpt2/tokenizer_config.json", RT_NONE,
     NULL},
    {"tests/data/tokenizers/bl_llama3/tokenizer.json", "tests/data/tokenizers/bl_llama3/tokenizer_config.json",
     RT_EXACT, NULL},
    {"tests/data/tokenizers/deepseek/tokenizer.json", "tests/data/tokenizers/deepseek/tokenizer_config.json",
     RT_NFC, NULL},
    {"tests/data/tokenizers/qwen3/tokenizer.json.xz", "tests/data/tokenizers/qwen3/tokenizer_config.json", RT_NFC,
     NULL},
    {"models/tiny-reasoner/tokenizer.json", "models/tiny-reasoner/tokenizer_config.json", RT_NFC, NULL},
    {"tests/data/tokenizers/spm_bf/tokenizer.json", "tests/data/tokenizers/spm_bf/tokenizer_config.json", RT_SPM,
     NULL},
    {"tests/data/tokenizers/spm_meta/tokenizer.json", "tests/data/tokenizers/spm_meta/tokenizer_config.json",
     RT_METASPACE, NULL},
};
#define N_CASES ((int)(sizeof g_cases / sizeof g_cases[0]))

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    static const char *const dsts[2] = {"tokenizer.json", "tokenizer_config.json"};
    for (int i = 0; i < N_CASES; i++) {
        char sub[16];
        snprintf(sub, sizeof sub, "tok%d", i);
        const char *srcs[2] = {g_cases[i].json, g_cases[i].config};
        char *dir = lf_fuzz_stage(sub, srcs, dsts, 2);
        lf_error err;
        if (lf_tokenizer_load(dir, &g_cases[i].tok, &err)) {
            fprintf(stderr, "fuzz_tokenize: %s\n", err.msg);
            abort();
        }
        free(dir);
    }
    return 0;
}

static bool has_bytes(const uint8_t *s, size_t n, const char *pat) {
    size_t k = strlen(pat);
    for (size_t i = 0; i + k <= n; i++)
        if (!memcmp(s + i, pat, k)) return true;
    return false;
}

static bool round_trip_guaranteed(const tok_case *c, const uint8_t *s, size_t n) {
    if (memchr(s, 0, n)) return false;
    switch (c->rule) {
    case RT_EXACT: return true;
    case RT_NFC: return lf_fuzz_is_nfc(s, n);
    case RT_METASPACE:
        if (n && s[0] == ' ') return false;
        /* fall through */
    case RT_SPM: {
        if (has_bytes(s, n, "\xe2\x96\x81")) return false;
        lf_token_span *spans = NULL;
        int n_spans = 0;
        lf_error err;
        if (lf_tokenizer_find_added(c->tok, (const char *)s, n, &spans, &n_spans, &err)) return false;
        free(spans);
        return n_spans == 0;
    }
    case RT_NONE: break;
    }
    return false;
}

static void fail_text(const char *what, const tok_case *c, const uint8_t *s, size_t n, const char *got,
                      size_t got_len) {
    fprintf(stderr, "%s (%s)\n  text: ", what, c->json);
    for (size_t i = 0; i < n; i++) fprintf(stderr, "%02x", s[i]);
    fprintf(stderr, "\n  got:  ");
    for (size_t i = 0; i < got_len; i++) fprintf(stderr, "%02x", (uint8_t)got[i]);
    fprintf(stderr, "\n");
    abort();
}

/* Push the ids one by one through a stream; the concatenation must equal
 * the whole decode when that is valid UTF-8. */
static void check_stream(const tok_case *c, const int *ids, int n, const char *whole, size_t whole_len,
                         const uint8_t *s, size_t sn) {
    lf_detok_stream *st = lf_detok_stream_new(c->tok, false);
    if (!st) abort();
    char *acc = malloc(whole_len * 2 + 16);
    size_t len = 0, cap = whole_len * 2 + 16;
    lf_error err;
    for (int i = 0; i <= n; i++) {
        const char *piece = NULL;
        size_t pl = 0;
        if (i < n ? lf_detok_stream_push(st, ids[i], &piece, &pl, &err) : lf_detok_stream_flush(st, &piece, &pl))
            fail_text("stream decode failed on ids that decode at once", c, s, sn, whole, whole_len);
        if (len + pl > cap) acc = realloc(acc, cap = 2 * (len + pl));
        if (pl) memcpy(acc + len, piece, pl);
        len += pl;
    }
    if (len != whole_len || memcmp(acc, whole, len)) fail_text("stream decode differs from decode", c, s, sn, acc, len);
    free(acc);
    lf_detok_stream_free(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const tok_case *c = &g_cases[data[0] % N_CASES];
    unsigned flags = (data[0] / N_CASES) & 3u; /* LF_TOK_ADD_SPECIAL | LF_TOK_PARSE_SPECIAL */
    const uint8_t *s = data + 1;
    size_t n = size - 1;
    int *ids = NULL, n_ids = 0;
    lf_error err;
    int rc = lf_tokenizer_encode(c->tok, (const char *)s, n, flags, &ids, &n_ids, &err);
    bool valid = lf_fuzz_valid_utf8(s, n);
    if (rc != 0) {
        if (valid && !memchr(s, 0, n)) fail_text("valid UTF-8 refused", c, s, n, err.msg, strlen(err.msg));
        return 0;
    }
    if (!valid) fail_text("invalid UTF-8 accepted", c, s, n, "", 0);
    char *out = NULL;
    size_t out_len = 0;
    if (lf_tokenizer_decode(c->tok, ids, n_ids, false, &out, &out_len, &err))
        fail_text("ids from encode do not decode", c, s, n, err.msg, strlen(err.msg));
    if (!(flags & LF_TOK_ADD_SPECIAL) && round_trip_guaranteed(c, s, n) &&
        (out_len != n || (n && memcmp(out, s, n))))
        fail_text("decode(encode(x)) != x", c, s, n, out, out_len);
    if (lf_fuzz_valid_utf8((const uint8_t *)out, out_len)) check_stream(c, ids, n_ids, out, out_len, s, n);
    char *skipped = NULL;
    if (lf_tokenizer_decode(c->tok, ids, n_ids, true, &skipped, NULL, &err) == 0) free(skipped);
    free(out);
    free(ids);
    return 0;
}
