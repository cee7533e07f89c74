/* The tokenizer a GGUF file carries in its tokenizer.ggml.* metadata (and
 * its tokenizer.chat_template), and the one tokenizer loader for every
 * model path the CLI takes. */
#ifndef LF_MODEL_GGUF_TOKENIZER_H
#define LF_MODEL_GGUF_TOKENIZER_H

#include <stdbool.h>
#include "longflow.h"
#include "model/gguf.h"
#include "tokenizer/tokenizer.h"

/* The metadata as a vocab spec. The spec points into *owned, which
 * lf_gguf_vocab_free releases. Checks: tokenizer.ggml.model and .tokens
 * present, scores/token_type as long as tokens, special ids inside the
 * vocabulary. */
typedef struct lf_gguf_vocab {
    lf_tokenizer_vocab_spec spec;
    char *model, *pre, *chat_template;
    char **tokens, **merges;
    float *scores;
    int32_t *token_types;
} lf_gguf_vocab;

int lf_gguf_vocab_read(const lf_gguf_file *f, lf_gguf_vocab *v, lf_error *err);
void lf_gguf_vocab_free(lf_gguf_vocab *v);

/* lf_model_tokenizer_load (the tokenizer of a GGUF file or a Hugging Face
 * directory) and lf_model_has_tokenizer are public: include/longflow.h. */

#endif
