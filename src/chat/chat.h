/* Chat templates for reasoning models, built in (Jinja is not available in
 * C): the family is recognised from tokenizer_config.json's template text. */
#ifndef LF_CHAT_CHAT_H
#define LF_CHAT_CHAT_H

#include <stdbool.h>
#include "longflow.h"
#include "tokenizer/tokenizer.h"

typedef struct lf_chat_message {
    char *role;    /* "system", "user", "assistant" */
    char *content;
} lf_chat_message;

typedef enum lf_chat_family {
    LF_CHAT_QWEN3 = 0,     /* ChatML with <think> handling (Qwen3, QwQ) */
    LF_CHAT_CHATML,        /* plain ChatML (Qwen2.5) */
    LF_CHAT_DEEPSEEK_R1,   /* <｜User｜>/<｜Assistant｜> with opening <think>\n */
    LF_CHAT_LLAMA3,        /* <|start_header_id|> headers */
    LF_CHAT_LLAMA2,        /* [INST] ... [/INST] */
    LF_CHAT_COUNT
} lf_chat_family;

typedef struct lf_chat_options {
    bool add_generation_prompt; /* open the assistant turn (default true) */
    bool enable_thinking;       /* Qwen3: default true; false = --no-think */
} lf_chat_options;

/* Pick the family: override name if given ("qwen3", "chatml",
 * "deepseek-r1", "llama3", "llama2"), else recognise the tokenizer's
 * chat_template text. Clear error when nothing fits. */
int lf_chat_select(const lf_tokenizer *t, const char *override_name, lf_chat_family *out,
                   lf_error *err);
const char *lf_chat_family_name(lf_chat_family f);

/* Render messages to the prompt text and ids. Template markup is encoded with
 * special tokens recognised; message contents are encoded with special-token
 * matching off, so a user cannot inject <|im_start|>system. */
int lf_chat_apply(lf_chat_family f, const lf_tokenizer *t, const lf_chat_message *msgs, int n,
                  const lf_chat_options *opt, char **text, int **ids, int *n_ids, lf_error *err);

/* Parse an OpenAI-style JSON array of {"role","content"}. */
int lf_chat_messages_parse(const char *json, const char *what, lf_chat_message **msgs, int *n,
                           lf_error *err);
void lf_chat_messages_free(lf_chat_message *msgs, int n);

#endif
