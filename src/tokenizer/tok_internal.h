/* Internals of the tokenizer, shared by its .c files (not a public
 * interface). The pipeline follows the Hugging Face `tokenizers` library:
 * added tokens are cut out of the raw text, the rest is normalized, added
 * tokens with normalized=true are cut out of the normalized text, the rest is
 * pre-tokenized and every pre-token goes through the BPE model. */
#ifndef LF_TOKENIZER_TOK_INTERNAL_H
#define LF_TOKENIZER_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer/tokenizer.h"

/* ---- small containers ---------------------------------------------------- */
/* p, an array of `size`-byte items with room for *cap, reallocated to hold
 * `need` items (need > *cap): its capacity doubles from `first` until it
 * does. NULL when out of memory or when the size would not fit a size_t
 * (p and *cap are then unchanged). */
void *lf_grow(void *p, size_t *cap, size_t need, size_t size, size_t first);

typedef struct lf_buf {
    char *p;
    size_t n, cap;
} lf_buf;

int lf_buf_reserve(lf_buf *b, size_t extra);
int lf_buf_append(lf_buf *b, const void *s, size_t n);
void lf_buf_free(lf_buf *b);

typedef struct lf_ivec {
    int *p;
    size_t n, cap;
} lf_ivec;

int lf_ivec_reserve(lf_ivec *v, size_t extra);
int lf_ivec_push(lf_ivec *v, int x);

/* A list of strings stored in one buffer. at_start: the piece begins at the
 * start of the whole input (Metaspace prepend_scheme "first"). */
typedef struct lf_piece {
    size_t off, len;
    bool at_start;
} lf_piece;

typedef struct lf_pieces {
    lf_buf text;
    lf_piece *v;
    size_t n, cap;
} lf_pieces;

void lf_pieces_clear(lf_pieces *p);
void lf_pieces_free(lf_pieces *p);
/* Append a piece copied from s (which must not point into p->text). */
int lf_pieces_add(lf_pieces *p, const char *s, size_t n, bool at_start);
/* Start a piece whose bytes are then appended to p->text; finish it with
 * lf_pieces_end. */
size_t lf_pieces_begin(lf_pieces *p);
int lf_pieces_end(lf_pieces *p, size_t begin, bool at_start);
/* (text.p is NULL while every piece is empty: no arithmetic on it then) */
static inline const char *lf_piece_str(const lf_pieces *p, size_t i) {
    return p->text.p ? p->text.p + p->v[i].off : "";
}

/* ---- UTF-8 and Unicode --------------------------------------------------- */
/* Length of the longest valid UTF-8 prefix of s (n when all of it is valid). */
size_t lf_utf8_valid_prefix(const char *s, size_t n);
/* s[0..n) is exactly one valid UTF-8 character; its code point in *cp. */
bool lf_utf8_one_char(const char *s, size_t n, uint32_t *cp);
/* Decode one code point of valid UTF-8; returns its byte length. */
int lf_utf8_decode(const char *s, size_t n, uint32_t *cp);
/* Encode a code point; returns the byte length (1..4). */
int lf_utf8_encode(uint32_t cp, char out[4]);
/* Start of the code point that ends at s[n-1] (s[0..n) valid UTF-8). */
size_t lf_utf8_prev(const char *s, size_t n);
/* Append s to out, replacing each maximal invalid subpart by U+FFFD (as
 * Rust's String::from_utf8_lossy does). */
int lf_utf8_lossy_append(lf_buf *out, const char *s, size_t n);
/* Unicode White_Space (Rust char::is_whitespace, regex \s). */
bool lf_uni_is_space(uint32_t cp);
/* Rust regex \w: alphabetic, marks, decimal digits, connector punctuation. */
bool lf_uni_is_word(uint32_t cp);

/* Unicode Script of cp as an index into a fixed list (scripts.c); -1 for no
 * script, -2 when the script table could not be built. */
int lf_uni_script(uint32_t cp);
/* The index of a script by its lower-case PCRE2 name ("han"), or -1. */
int lf_uni_script_id(const char *name);

/* ---- hashing ------------------------------------------------------------- */
uint64_t lf_hash_bytes(const void *p, size_t n);

/* ---- patterns (Split, Replace): a regex or a literal string ------------- */
typedef struct lf_pattern {
    pcre2_code *re; /* NULL for a literal */
    bool jit;
    char *lit;
    size_t lit_len;
} lf_pattern;

/* Parse {"Regex": "..."} or {"String": "..."}; `what` names it in errors. */
int lf_pattern_parse(const cJSON *j, const char *what, lf_pattern *p, lf_error *err);
int lf_pattern_from_literal(const char *s, size_t n, lf_pattern *p, lf_error *err);
int lf_pattern_from_regex(const char *re, const char *what, lf_pattern *p, lf_error *err);
void lf_pattern_free(lf_pattern *p);
/* Next non-empty match starting at or after `from` in s[0..n): returns 1
 * with [*ms, *me), 0 when there is none, -1 on a matching error. s must be
 * valid UTF-8 (the JIT matcher trusts it): a subject's first call (from ==
 * 0) checks it and fails with an error when it is not. */
int lf_pattern_next(const lf_pattern *p, pcre2_match_data *md, const char *s, size_t n, size_t from,
                    size_t *ms, size_t *me, lf_error *err);

/* ---- normalizers --------------------------------------------------------- */
typedef enum lf_norm_type {
    LF_NORM_NFC,
    LF_NORM_NFD,
    LF_NORM_NFKC,
    LF_NORM_NFKD,
    LF_NORM_LOWERCASE,
    LF_NORM_PREPEND,
    LF_NORM_REPLACE,
    LF_NORM_STRIP,
    LF_NORM_SEQUENCE,
    LF_NORM_STRIP_ACCENTS,
    LF_NORM_BERT,
    LF_NORM_NMT,       /* drops some controls, maps some spaces to ' ' */
    LF_NORM_BYTELEVEL, /* every byte as its byte-level character */
} lf_norm_type;

typedef struct lf_normalizer {
    lf_norm_type type;
    char *str; /* Prepend: the prefix; Replace: the content */
    size_t str_len;
    lf_pattern pat; /* Replace */
    bool left, right; /* Strip */
    bool clean_text, chinese_chars, strip_accents, lowercase; /* BertNormalizer */
    struct lf_normalizer *kids;
    int n_kids;
} lf_normalizer;

/* ---- pre-tokenizers ------------------------------------------------------ */
typedef enum lf_split_behavior {
    LF_SPLIT_REMOVED,
    LF_SPLIT_ISOLATED,
    LF_SPLIT_MERGED_PREV,
    LF_SPLIT_MERGED_NEXT,
    LF_SPLIT_CONTIGUOUS,
} lf_split_behavior;

typedef enum lf_pretok_type {
    LF_PRETOK_SPLIT,
    LF_PRETOK_BYTELEVEL,
    LF_PRETOK_METASPACE,
    LF_PRETOK_WHITESPACE,       /* Rust regex \w+|[^\w\s]+ */
    LF_PRETOK_WHITESPACE_SPLIT, /* split on whitespace, removing it */
    LF_PRETOK_SEQUENCE,
    LF_PRETOK_DIGITS,           /* numeric characters: each alone or in runs */
    LF_PRETOK_PUNCTUATION,      /* punctuation characters, with a behavior */
    LF_PRETOK_CHAR_DELIMITER,   /* one character as a removed delimiter */
    LF_PRETOK_BERT,             /* whitespace removed, punctuation isolated */
    LF_PRETOK_UNICODE_SCRIPTS,  /* splits where the Unicode script changes */
    LF_PRETOK_FIXED_LENGTH,     /* pieces of `length` characters */
} lf_pretok_type;

typedef enum lf_prepend_scheme { LF_PREPEND_ALWAYS, LF_PREPEND_FIRST, LF_PREPEND_NEVER } lf_prepend_scheme;

typedef struct lf_pretok {
    lf_pretok_type type;
    lf_pattern pat;         /* Split; ByteLevel with use_regex */
    bool has_pat;
    lf_split_behavior behavior;
    bool invert;
    bool add_prefix_space;  /* ByteLevel */
    char repl[8];           /* Metaspace replacement (UTF-8) */
    size_t repl_len;
    lf_prepend_scheme prepend;
    bool split;             /* Metaspace */
    bool individual;        /* Digits: individual_digits */
    uint32_t delimiter;     /* CharDelimiterSplit */
    size_t length;          /* FixedLength */
    struct lf_pretok *kids;
    int n_kids;
} lf_pretok;

/* ---- decoders ------------------------------------------------------------ */
typedef enum lf_dec_type {
    LF_DEC_BYTELEVEL,
    LF_DEC_METASPACE,
    LF_DEC_REPLACE,
    LF_DEC_BYTEFALLBACK,
    LF_DEC_FUSE,
    LF_DEC_STRIP,
    LF_DEC_SEQUENCE,
    LF_DEC_BPE, /* BPEDecoder: the end-of-word suffix becomes a space */
} lf_dec_type;

typedef struct lf_decoder {
    lf_dec_type type;
    lf_pattern pat;         /* Replace */
    char *str;              /* Replace content */
    size_t str_len;
    char repl[8];           /* Metaspace replacement; Strip content */
    size_t repl_len;
    lf_prepend_scheme prepend;
    int start, stop;        /* Strip */
    struct lf_decoder *kids;
    int n_kids;
} lf_decoder;

/* ---- fields of tokenizer.json's components ------------------------------- */
/* o[k] when it is a string, else NULL. */
static inline const char *lf_json_str(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}
/* o[k] when it is a bool, else dflt. */
static inline bool lf_json_bool(const cJSON *o, const char *k, bool dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}
/* Copy s, which must be one character, into out (NUL-terminated); else the
 * error "<what> must be one character". */
int lf_one_char(const char *s, const char *what, char out[8], size_t *out_len, lf_error *err);
/* Metaspace's "prepend_scheme" (always, first, never); without one,
 * "add_prefix_space" (default true) means always or never. */
int lf_prepend_parse(const cJSON *j, const char *what, lf_prepend_scheme *out, lf_error *err);
/* Replace's "pattern" and the "content" that takes its place. */
int lf_replace_parse(const cJSON *j, const char *what, lf_pattern *pat, char **content, size_t *len,
                     lf_error *err);
/* Zeroed room for the items of the array j[key] of a Sequence (at least
 * one), the array in *arr; NULL with an error naming `what`. */
void *lf_seq_alloc(const cJSON *j, const char *key, const char *what, size_t size, const cJSON **arr,
                   lf_error *err);

/* ---- added tokens -------------------------------------------------------- */
typedef struct lf_added {
    int id;
    char *content;
    size_t len;
    char *norm; /* content after the normalizer (normalized tokens) */
    size_t norm_len;
    bool special, lstrip, rstrip, normalized, single_word;
} lf_added;

/* Leftmost-longest matcher over a set of added tokens, bucketed by first
 * byte (each bucket sorted longest first). */
typedef struct lf_matcher {
    int32_t first[257]; /* bucket b = idx[first[b] .. first[b+1]) */
    int *idx;           /* indices into t->added */
    const char **pat;   /* pattern bytes per idx entry */
    size_t *pat_len;
    int n;
} lf_matcher;

/* ---- per-call scratch ---------------------------------------------------- */
typedef struct lf_bpe_merge_entry {
    uint32_t rank, pos;
    int32_t new_id;
} lf_bpe_merge_entry;

typedef struct lf_scratch {
    pcre2_match_data *md;
    lf_buf nb[3];        /* normalizer buffers */
    lf_pieces pc[2];     /* pre-tokenizer ping-pong */
    lf_buf tmp;
    /* BPE word */
    int32_t *sc, *sprev, *snext;
    uint32_t *slen;
    size_t scap;
    lf_bpe_merge_entry *heap;
    size_t hn, hcap;
} lf_scratch;

int lf_scratch_init(lf_scratch *s);
void lf_scratch_free(lf_scratch *s);

/* ---- the tokenizer ------------------------------------------------------- */
typedef struct lf_vocab_slot {
    const char *s; /* NULL = empty */
    uint32_t len, tag;
    int32_t id;
} lf_vocab_slot;

typedef struct lf_merge_slot {
    uint64_t key, val; /* key UINT64_MAX = empty */
} lf_merge_slot;

typedef struct lf_vocab_map {
    lf_vocab_slot *slots;
    size_t cap; /* power of two */
} lf_vocab_map;

/* Pre-token cache entry (results of the model for one pre-token). */
typedef struct lf_cache_entry {
    uint64_t hash;
    uint32_t key_off, key_len;
    uint32_t ids_off, n_ids;
} lf_cache_entry;

struct lf_tokenizer {
    char *dir;
    /* model vocab: entries (string -> id) */
    int n_entries;
    const char **e_str;
    uint32_t *e_len;
    int32_t *e_id;
    lf_vocab_map vmap;
    /* id -> string (model vocab, overridden by added tokens) */
    int n_ids;
    const char **id_str;
    uint32_t *id_len;
    uint8_t *id_flags; /* LF_IDF_* */
    /* merges: key (left << 32 | right) -> val (rank << 32 | new id) */
    lf_merge_slot *merges;
    size_t mcap;
    size_t n_merges;
    /* BPE options */
    bool byte_fallback, fuse_unk, ignore_merges;
    int unk_id;
    char *cont_prefix, *eow_suffix;
    int byte_ids[256];       /* <0xXX> tokens, -1 if missing */
    int32_t *char_ids;       /* single-char token ids for cp < LF_CHAR_IDS (no prefix/suffix) */
    /* added tokens */
    lf_added *added;
    int n_added;
    lf_matcher m_raw, m_norm;
    /* pipeline */
    lf_normalizer *norm;
    lf_pretok *pretok;
    lf_decoder *dec;
    int *pp_prefix, n_pp_prefix, *pp_suffix, n_pp_suffix;
    /* tokenizer_config.json */
    char *chat_template;
    char *bos_str, *eos_str;
    int bos_id, eos_id;
    /* strings (token texts, added contents) */
    char **blocks;
    int n_blocks;
    /* pre-token cache (shared by calls; guarded by the mutex) */
    pthread_mutex_t cache_mu;
    lf_cache_entry *cache;
    size_t cache_cap, cache_n;
    lf_buf cache_keys;
    lf_ivec cache_ids;
};

enum { LF_IDF_ADDED = 1, LF_IDF_SPECIAL = 2 };
#define LF_CHAR_IDS 0x800

/* ---- fast scanning of model.vocab / model.merges ------------------------- */
typedef struct lf_json_span {
    const char *p;
    size_t n;
} lf_json_span;

typedef int (*lf_vocab_cb)(void *ctx, const char *s, size_t n, int id);
typedef int (*lf_merge_cb)(void *ctx, const char *a, size_t la, const char *b, size_t lb, uint32_t rank);
/* Find the raw text of model.vocab and model.merges; -1 when the layout is
 * not the usual one (the caller then uses cJSON for everything). */
int lf_json_find_model_parts(const char *text, size_t len, lf_json_span *vocab, lf_json_span *merges);
/* Decode the vocab object into arena (vocab->n + 1 bytes), calling cb for each
 * entry. Returns 0, -1 when cb failed, -2 on malformed input. */
int lf_json_scan_vocab(const lf_json_span *vocab, char *arena, lf_vocab_cb cb, void *ctx);
/* The merges ("a b" strings or ["a", "b"] pairs); on malformed input returns
 * -2 with *bad set to the merge's index. */
int lf_json_scan_merges(const lf_json_span *merges, lf_merge_cb cb, void *ctx, uint32_t *bad);

/* Building a tokenizer (tokenizer.c), used by the loader of tokenizer.json
 * and by lf_tokenizer_from_vocab (vocab_spec.c). */
lf_tokenizer *lf_tok_alloc(void);
/* A copy of s[0..n) owned by t (NUL-terminated). */
char *lf_tok_strdup(lf_tokenizer *t, const char *s, size_t n);
/* The string -> id map of the entries e_str/e_len/e_id (the earliest entry
 * wins among equal strings). */
int lf_tok_vmap_build(lf_tokenizer *t, lf_error *err);
/* Make ids 0..n-1 addressable in id_str/id_len/id_flags. */
int lf_tok_ids_grow(lf_tokenizer *t, int n, lf_error *err);
/* Merge (a, b) -> new_id with the given rank; -1 when out of memory. */
int lf_tok_merge_put(lf_tokenizer *t, int32_t a, int32_t b, uint32_t rank, int32_t new_id);
/* Byte-token and single-character tables, once the vocabulary is in. */
int lf_tok_model_tables(lf_tokenizer *t, lf_error *err);
/* Add or redefine an added token (spec's id, content, len and flags). */
int lf_tok_add_token(lf_tokenizer *t, const char *path, const lf_added *spec, lf_error *err);
/* After all added tokens: their normalized forms and the matchers. */
int lf_tok_finish_added(lf_tokenizer *t, lf_error *err);
/* Every key and string value of a parsed JSON document is valid UTF-8; else
 * an error naming file and the value's JSON path. */
int lf_json_check_utf8(const cJSON *root, const char *file, lf_error *err);

/* Model vocabulary lookup (not added tokens): id or -1. */
int lf_tok_vocab_find(const lf_tokenizer *t, const char *s, size_t n);

/* Normalizer / pre-tokenizer / decoder: parse from JSON, free, apply. */
int lf_normalizer_parse(const cJSON *j, lf_normalizer *n, lf_error *err);
void lf_normalizer_free(lf_normalizer *n);
/* Normalize s into out (cleared first). */
int lf_normalizer_apply(const lf_normalizer *n, lf_scratch *sc, const char *s, size_t len, lf_buf *out,
                        lf_error *err);

int lf_pretok_parse(const cJSON *j, lf_pretok *p, lf_error *err);
void lf_pretok_free(lf_pretok *p);
/* Pre-tokenize `in` into `out` (cleared first). */
int lf_pretok_apply(const lf_pretok *p, lf_scratch *sc, const lf_pieces *in, lf_pieces *out, lf_error *err);

int lf_decoder_parse(const cJSON *j, lf_decoder *d, lf_error *err);
void lf_decoder_free(lf_decoder *d);
/* Run the decoder chain over token strings `in`; the result pieces are in
 * `out` (to be concatenated). */
int lf_decoder_apply(const lf_decoder *d, const lf_pieces *in, lf_pieces *out, lf_error *err);

/* BPE on one pre-token; appends ids to out. */
int lf_bpe_word(const lf_tokenizer *t, lf_scratch *sc, const char *w, size_t n, lf_ivec *out, lf_error *err);

/* Byte-level alphabet (GPT-2): byte -> code point, code point -> byte. */
uint32_t lf_bytelevel_cp(unsigned char b);
int lf_bytelevel_byte(uint32_t cp); /* -1 when cp is not in the alphabet */

#endif
