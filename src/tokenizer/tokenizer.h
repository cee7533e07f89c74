/* Hugging Face tokenizer.json (BPE: byte-level and SentencePiece-style with
 * byte fallback) and tokenizer_config.json, in C. */
#ifndef LF_TOKENIZER_TOKENIZER_H
#define LF_TOKENIZER_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "longflow.h"


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


#endif
