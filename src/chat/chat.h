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

/* The chat API (lf_chat_*) is public: include/longflow.h. */

#endif
