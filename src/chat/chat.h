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
    LF_CHAT_QWEN3 = 0,     /* ChatML with <think> handling and enable_thinking (Qwen3) */
    LF_CHAT_CHATML,        /* plain ChatML (Qwen2.5: with its default system message) */
    LF_CHAT_DEEPSEEK_R1,   /* <｜User｜>/<｜Assistant｜> with opening <think>\n */
    LF_CHAT_LLAMA3,        /* <|start_header_id|> headers */
    LF_CHAT_LLAMA2,        /* [INST] ... [/INST] */
    LF_CHAT_QWQ,           /* ChatML whose generation prompt opens <think>\n (QwQ-32B) */
    LF_CHAT_COUNT
} lf_chat_family;

typedef struct lf_chat_options {
    bool add_generation_prompt; /* open the assistant turn (default true) */
    bool enable_thinking;       /* Qwen3: default true; false = --no-think */
} lf_chat_options;

/* Pick the family: override name if given ("qwen3", "qwq", "chatml",
 * "deepseek-r1", "llama3", "llama2"), else recognise the tokenizer's
 * chat_template text (or, without one, its chat tokens). Clear error when
 * nothing fits or when the tokenizer lacks the family's tokens. */
int lf_chat_select(const lf_tokenizer *t, const char *override_name, lf_chat_family *out,
                   lf_error *err);
const char *lf_chat_family_name(lf_chat_family f);

/* Render messages (roles system, user, assistant) to the prompt text and its
 * ids; opt NULL means add_generation_prompt and enable_thinking. The text is
 * encoded in one pass, as the whole string would be, except that special
 * tokens are recognised only in the template's markup, not in message
 * contents, so a user cannot inject <|im_start|>system. */
int lf_chat_apply(lf_chat_family f, const lf_tokenizer *t, const lf_chat_message *msgs, int n,
                  const lf_chat_options *opt, char **text, int **ids, int *n_ids, lf_error *err);

/* Parse an OpenAI-style JSON array of {"role","content"}. */
int lf_chat_messages_parse(const char *json, const char *what, lf_chat_message **msgs, int *n,
                           lf_error *err);
void lf_chat_messages_free(lf_chat_message *msgs, int n);

/* Split generated text at the last </think>: *reasoning gets what precedes
 * it (without an opening <think>), *answer what follows; both without
 * leading and trailing newlines. Without </think>, the text is all answer,
 * unless it starts with <think> (reasoning cut short). Both malloc'd.
 * Returns 0, or -1 when out of memory. */
int lf_chat_split_think(const char *text, char **reasoning, char **answer);
/* The same, for a prompt that already opened the think block (DeepSeek-R1,
 * QwQ: see lf_chat_opens_think): then text without </think> is all
 * reasoning. */
int lf_chat_split_think_ex(const char *text, bool think_open, char **reasoning, char **answer);
/* Does the generation prompt of this family (with these options) end inside
 * an opened <think> block? */
bool lf_chat_opens_think(lf_chat_family f, const lf_chat_options *opt);

#endif
