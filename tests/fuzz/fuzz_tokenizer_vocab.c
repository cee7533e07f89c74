/* libFuzzer harness for lf_tokenizer_from_vocab (the tokenizer built from
 * GGUF metadata), then encode / decode / streaming decode with the result.
 *
 * Input: sections separated by NUL bytes:
 *   0  "model\npre\n" then up to 6 bytes: bos, eos, unk, pad (signed: -1 =
 *      none; others taken modulo the token count), add_bos, add_eos
 *      (signed: -1 = not given)
 *   1  the tokens, one per line
 *   2  the merges, one per line (none: merges come from scores, -index)
 *   3  token types, one byte per token (missing ones are 1, normal)
 *   4  a text to encode, whose ids are then decoded
 * Any of them may be missing. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"

#define MAX_TOKENS 4096

typedef struct section {
    const char *p;
    size_t n;
} section;

/* Split s[0..n) at NUL bytes into at most max sections. */
static int sections(const uint8_t *s, size_t n, section *out, int max) {
    int k = 0;
    size_t start = 0;
    for (size_t i = 0; i <= n && k < max; i++) {
        if (i == n || s[i] == 0) {
            out[k++] = (section){(const char *)s + start, i - start};
            start = i + 1;
        }
    }
    return k;
}

/* Lines of a section as NUL-terminated strings in one block. */
static char **lines(section sec, int *count, char **block) {
    *count = 0;
    *block = malloc(sec.n + 1);
    char **v = malloc(sizeof *v * (MAX_TOKENS + 1));
    if (!*block || !v) {
        free(*block);
        free(v);
        *block = NULL;
        return NULL;
    }
    memcpy(*block, sec.p, sec.n);
    (*block)[sec.n] = 0;
    if (!sec.n) return v;
    char *p = *block;
    while (*count < MAX_TOKENS) {
        v[(*count)++] = p;
        char *nl = strchr(p, '\n');
        if (!nl) break;
        *nl = 0;
        p = nl + 1;
    }
    return v;
}

static int pick_id(const char *h, size_t hn, size_t at, int n_tokens) {
    if (at >= hn) return -1;
    int v = (int8_t)h[at];
    return v < 0 ? -1 : v % n_tokens;
}

static void exercise(const lf_tokenizer *t, section text) {
    int *ids = NULL, n = 0;
    lf_error err = {{0}};
    if (lf_tokenizer_encode(t, text.p, text.n, LF_TOK_ADD_SPECIAL | LF_TOK_PARSE_SPECIAL, &ids, &n, &err) == 0) {
        char *out = NULL;
        size_t len = 0;
        if (lf_tokenizer_decode(t, ids, n, false, &out, &len, &err) == 0) free(out);
        lf_detok_stream *s = lf_detok_stream_new(t, true);
        for (int i = 0; s && i < n; i++) {
            const char *piece;
            size_t pl;
            if (lf_detok_stream_push(s, ids[i], &piece, &pl, &err)) break;
        }
        if (s) {
            const char *piece;
            size_t pl;
            lf_detok_stream_flush(s, &piece, &pl);
            lf_detok_stream_free(s);
        }
        free(ids);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    section sec[5] = {{0}};
    int ns = sections(data, size, sec, 5);
    if (ns < 2) return 0;
    int nh;
    char *hblock;
    char **head = lines(sec[0], &nh, &hblock);
    int nt;
    char *tblock;
    char **toks = lines(sec[1], &nt, &tblock);
    int nm = 0;
    char *mblock = NULL;
    char **merges = ns > 2 ? lines(sec[2], &nm, &mblock) : NULL;
    float *scores = malloc(sizeof *scores * (MAX_TOKENS + 1));
    int32_t *types = malloc(sizeof *types * (MAX_TOKENS + 1));
    if (head && toks && scores && types && nh >= 2 && nt > 0) {
        for (int i = 0; i < nt; i++) {
            scores[i] = -(float)i;
            types[i] = ns > 3 && (size_t)i < sec[3].n ? (int8_t)sec[3].p[i] : 1;
        }
        const char *cfg = nh >= 3 ? head[2] : "";
        size_t cn = strlen(cfg);
        lf_tokenizer_vocab_spec spec = {
            .model = head[0], .pre = *head[1] ? head[1] : NULL, .n_tokens = nt,
            .tokens = (const char *const *)toks, .scores = scores, .token_types = types,
            .n_merges = nm, .merges = (const char *const *)merges,
            .bos_id = pick_id(cfg, cn, 0, nt), .eos_id = pick_id(cfg, cn, 1, nt), .unk_id = pick_id(cfg, cn, 2, nt),
            .pad_id = pick_id(cfg, cn, 3, nt), .add_bos = cn > 4 ? (int8_t)cfg[4] % 2 : -1,
            .add_eos = cn > 5 ? (int8_t)cfg[5] % 2 : -1, .chat_template = "{{ messages }}"};
        lf_tokenizer *t = NULL;
        lf_error err = {{0}};
        if (lf_tokenizer_from_vocab(&spec, &t, &err) == 0) {
            exercise(t, ns > 4 ? sec[4] : (section){"hello 123 world", 15});
            lf_tokenizer_free(t);
        }
    }
    free(head);
    free(hblock);
    free(toks);
    free(tblock);
    free(merges);
    free(mblock);
    free(scores);
    free(types);
    return 0;
}
