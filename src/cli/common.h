/* Options shared by the commands that generate (generate, eval, bench):
 * model, prompt, chat template, sampling and KV-cache policy flags. */
#ifndef LF_CLI_COMMON_H
#define LF_CLI_COMMON_H

#include <stdbool.h>
#include "cli/args.h"
#include "longflow.h"
#include "tokenizer/tokenizer.h"

typedef struct lf_gen_options {
    const char *model_dir;
    const char *prompt;
    const char *prompt_file;
    const char *prompt_ids;
    const char *messages_file;
    const char *system;
    const char *chat_template;
    bool chat, no_think, json, split_think, ignore_eos;
    int max_tokens, threads;
    lf_device device;
    lf_sampling sampling;
    lf_policy_config policy;
    bool budget_given;
    int max_seqs;            /* --max-seqs / --batch: -1 = not given, 0 = "max" (as many as fit, cuda only) */
    float gpu_mem_fraction;  /* --gpu-mem-fraction: 0 = not given (the backend default) */
} lf_gen_options;

void lf_gen_options_default(lf_gen_options *o);
void lf_gen_options_free(lf_gen_options *o);
/* Consume flag (and its value) if it is one of the shared options.
 * Returns 1 if consumed, 0 if not ours, -1 on a bad value (printed). */
int lf_gen_options_parse(lf_gen_options *o, lf_args *a, const char *flag);

/* Parse the value of --batch / --max-seqs: a number >= 1, or "max" (stored
 * as 0: as many as fit on the GPU). Prints and returns false on a bad value. */
bool lf_gen_parse_batch(lf_args *a, const char *flag, int *out);

/* Checks of the device flags that do not need the model: "max" batch and
 * --gpu-mem-fraction only with --device cuda. Prints; returns -1 on error. */
int lf_gen_check_device(const lf_gen_options *o, const char *cmd);

/* The model directory: --model, else $LONGFLOW_MODEL, else the bundled one. */
const char *lf_gen_model_dir(const lf_gen_options *o);

/* Load the model (and the tokenizer when the directory has one or the prompt
 * is text) and build the prompt ids. think_open: the chat prompt already
 * opens <think> (DeepSeek-R1, QwQ), so the output starts inside it. Prints
 * errors; returns -1 on failure. */
int lf_gen_prepare_prompt(const lf_gen_options *o, const char *cmd, lf_model **model, lf_tokenizer **tok,
                          int **prompt, int *n_prompt, char **rendered, bool *think_open);

/* Engine configuration from the options; validates policy and device flags.
 * max_seqs is --max-seqs when given, else 1 (callers with a batch of their
 * own set it after). */
int lf_gen_engine_config(const lf_gen_options *o, const char *cmd, const lf_model *m, lf_engine_config *ec);

/* Bytes a full cache holding n_tokens tokens would take. */
size_t lf_gen_kv_bytes_full(const lf_model *m, int n_tokens);

#endif
