/* Hugging Face tokenizer.json (BPE: byte-level and SentencePiece-style with
 * byte fallback) and tokenizer_config.json, in C. */
#ifndef LF_TOKENIZER_TOKENIZER_H
#define LF_TOKENIZER_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "longflow.h"

typedef struct lf_tokenizer lf_tokenizer;

/* Load dir/tokenizer.json and dir/tokenizer_config.json (optional). */
int lf_tokenizer_load(const char *dir, lf_tokenizer **out, lf_error *err);
void lf_tokenizer_free(lf_tokenizer *t);

/* A tokenizer described by GGUF metadata (tokenizer.ggml.*). */
typedef struct lf_tokenizer_vocab_spec {
    const char *model;          /* tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece-style BPE, byte fallback) */
    const char *pre;            /* tokenizer.ggml.pre, NULL = "default"; unknown name = error naming it */
    int n_tokens;
    const char *const *tokens;  /* [n_tokens], NUL-terminated UTF-8 */
    const float *scores;        /* [n_tokens] or NULL */
    const int32_t *token_types; /* [n_tokens] llama.cpp types (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte) or NULL */
    int n_merges;
    const char *const *merges;  /* [n_merges] "left right", or NULL */
    int bos_id, eos_id, unk_id, pad_id;   /* -1 = none */
    int add_bos, add_eos;       /* -1 = not given, else 0/1 */
    const char *chat_template;  /* tokenizer.chat_template, or NULL */
} lf_tokenizer_vocab_spec;

/* Build the tokenizer that transformers builds from the same GGUF metadata
 * (the same lf_tokenizer as the tokenizer.json it would save). The spec is
 * copied; it need not outlive the call. */
int lf_tokenizer_from_vocab(const lf_tokenizer_vocab_spec *spec, lf_tokenizer **out, lf_error *err);

enum {
    LF_TOK_ADD_SPECIAL = 1,   /* the post-processor's BOS/EOS (tokenizer.json's TemplateProcessing;
                               * add_bos_token in tokenizer_config.json is not used, as in
                               * transformers 5) */
    LF_TOK_PARSE_SPECIAL = 2, /* match added/special tokens in the text (reference default) */
};

/* Encode UTF-8 text (invalid UTF-8 is an error). *ids is malloc'd.
 * Thread-safe: calls on one tokenizer may run at once. */
int lf_tokenizer_encode(const lf_tokenizer *t, const char *text, size_t len, unsigned flags,
                        int **ids, int *n_ids, lf_error *err);
/* A span of text that stands for one token (e.g. chat-template markup). */
typedef struct lf_token_span {
    size_t start, end;
    int id;
} lf_token_span;

/* The added tokens in text, found as the reference matcher finds them
 * (leftmost-longest; single_word, lstrip and rstrip applied); only tokens
 * matched on the raw text (normalized=false). *spans is malloc'd. */
int lf_tokenizer_find_added(const lf_tokenizer *t, const char *text, size_t len, lf_token_span **spans, int *n,
                            lf_error *err);
/* Encode text in which the given spans (sorted, not overlapping) are the
 * given tokens; the text between them is encoded with special tokens taken
 * as plain text (non-special added tokens still match, as in the reference
 * with encode_special_tokens). No post-processor tokens are added. */
int lf_tokenizer_encode_spans(const lf_tokenizer *t, const char *text, size_t len, const lf_token_span *spans,
                              int n_spans, int **ids, int *n_ids, lf_error *err);

/* Decode ids to a malloc'd NUL-terminated string. */
int lf_tokenizer_decode(const lf_tokenizer *t, const int *ids, int n, bool skip_special, char **out,
                        size_t *len, lf_error *err);

/* Largest token id (model vocabulary or added token) + 1. */
int lf_tokenizer_vocab_size(const lf_tokenizer *t);
int lf_tokenizer_token_to_id(const lf_tokenizer *t, const char *token); /* -1 if none */
const char *lf_tokenizer_id_to_token(const lf_tokenizer *t, int id);   /* NULL if none */
bool lf_tokenizer_is_special(const lf_tokenizer *t, int id);
/* tokenizer_config.json's chat_template text, or NULL. */
const char *lf_tokenizer_chat_template(const lf_tokenizer *t);
/* eos_token / bos_token from tokenizer_config.json as ids, or -1. */
int lf_tokenizer_eos_id(const lf_tokenizer *t);
int lf_tokenizer_bos_id(const lf_tokenizer *t);
/* The same tokens as text, or NULL. */
const char *lf_tokenizer_bos_token(const lf_tokenizer *t);
const char *lf_tokenizer_eos_token(const lf_tokenizer *t);

/* Streaming decode: text comes out only in whole UTF-8 characters, and none
 * is lost when a token ends inside a multi-byte character. */
typedef struct lf_detok_stream lf_detok_stream;
lf_detok_stream *lf_detok_stream_new(const lf_tokenizer *t, bool skip_special);
/* Push one id; text and len receive the newly completed text (valid until the
 * next call). */
int lf_detok_stream_push(lf_detok_stream *s, int id, const char **text, size_t *len, lf_error *err);
/* End of stream: whatever is left (incomplete bytes as U+FFFD). */
int lf_detok_stream_flush(lf_detok_stream *s, const char **text, size_t *len);
void lf_detok_stream_free(lf_detok_stream *s);

#endif
