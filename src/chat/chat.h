/* Chat prompts: the model's own Jinja chat_template (tokenizer_config.json's
 * chat_template, chat_template.jinja or the GGUF's tokenizer.chat_template,
 * whatever lf_tokenizer_chat_template returns), rendered by the interpreter
 * of chat/jinja.h as transformers' apply_chat_template renders it; and
 * built-in templates (Qwen3, QwQ, ChatML, DeepSeek-R1, Llama-3, Llama-2) for
 * a model without one or chosen by name. Either way the prompt is encoded
 * with special tokens recognised only in the template's markup, never in
 * message contents. */
#ifndef LF_CHAT_CHAT_H
#define LF_CHAT_CHAT_H

#include <stdbool.h>
#include <stdint.h>
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
    LF_CHAT_TEMPLATE,      /* the model's own Jinja chat_template ("model") */
    LF_CHAT_COUNT
} lf_chat_family;

typedef struct lf_chat_options {
    bool add_generation_prompt; /* open the assistant turn (default true) */
    bool enable_thinking;       /* default true; false = --no-think. The model's template gets it as the
                                   variable enable_thinking (both values) */
} lf_chat_options;

/* What else the model's template may be given (lf_chat_render_json); NULL
 * or zeroed fields for the defaults. */
typedef struct lf_chat_template_args {
    const char *kwargs; /* JSON object of extra variables (chat_template_kwargs); they override
                           enable_thinking, bos_token and eos_token */
    const char *tools;  /* JSON array for `tools`; NULL leaves it undefined (as llama.cpp does:
                           transformers' tools=None breaks Phi-4-mini's template) */
    int64_t now;        /* strftime_now's clock, seconds since the epoch (local time); 0 = now */
} lf_chat_template_args;

/* Pick the template: override name if given ("qwen3", "qwq", "chatml",
 * "deepseek-r1", "llama3", "llama2", or "model" for the model's own), else
 * the model's own chat_template when it has one (parsed here, so that a
 * template outside the supported Jinja subset is an error naming the feature
 * and line), else a built-in family recognised from the tokenizer's chat
 * tokens. Clear error when nothing fits or when the tokenizer lacks the
 * family's tokens. */
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

/* A rendered prompt. */
typedef struct lf_chat_prompt {
    char *text;      /* the rendered template, NUL-terminated */
    int *ids;        /* its token ids (special tokens from the markup only) */
    int n_ids;
    bool think_open; /* the prompt ends inside a <think> block that the template's markup opened
                        (DeepSeek-R1, QwQ): generated text starts with reasoning */
} lf_chat_prompt;
void lf_chat_prompt_free(lf_chat_prompt *p);

/* lf_chat_apply, with think_open. */
int lf_chat_render_messages(lf_chat_family f, const lf_tokenizer *t, const lf_chat_message *msgs, int n,
                            const lf_chat_options *opt, lf_chat_prompt *out, lf_error *err);

/* For a server: messages as an OpenAI-style JSON array. The model's template
 * sees every field of every message (tool_calls, reasoning_content, content
 * parts, any role); the built-in families take what lf_chat_messages_parse
 * accepts (and ignore args). `what` names the messages in errors. */
int lf_chat_render_json(lf_chat_family f, const lf_tokenizer *t, const char *messages_json, const char *what,
                        const lf_chat_options *opt, const lf_chat_template_args *args, lf_chat_prompt *out,
                        lf_error *err);

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
/* Does the generation prompt of this built-in family (with these options)
 * end inside an opened <think> block? (For the model's template, which only
 * its rendering can tell, see lf_chat_prompt.think_open; false here.) */
bool lf_chat_opens_think(lf_chat_family f, const lf_chat_options *opt);

#endif
