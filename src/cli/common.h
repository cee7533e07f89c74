/* Options shared by the commands that generate (generate, eval, bench):
 * model, prompt, chat template, sampling and KV-cache policy flags. */
#ifndef LF_CLI_COMMON_H
#define LF_CLI_COMMON_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include "cli/args.h"
#include "longflow.h"

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
    lf_weights_mode weights; /* --weights quant|bf16 (GGUF block matrices) */
    bool weights_given;
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

/* --policy and --budget together (lf_policy_check_budget). Prints; returns
 * -1 on error. */
int lf_gen_check_budget(const lf_gen_options *o, const char *cmd);

/* How a GGUF file's block matrices are held: --weights, else quant on the
 * CPU and bf16 on cuda (which has no quantized kernels). */
lf_weights_mode lf_gen_weights(const lf_gen_options *o);

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

/* --threads: 0 (all cores) up to the machine's cores; more is clamped to
 * the cores with a warning. */
bool lf_gen_parse_threads(lf_args *a, const char *flag, int *out);

/* Check the --model path and load the model (errors printed). */
int lf_gen_load_model(const lf_gen_options *o, const char *cmd, lf_model **model);

/* --max-tokens when not given: the model directory's longflow.json
 * "max_tokens", else generation_config.json "max_new_tokens", else its
 * "max_length" less the prompt, else LF_DEFAULT_MAX_TOKENS (at most what the
 * context leaves after the prompt). */
#define LF_DEFAULT_MAX_TOKENS 8192

/* the help text of --kv-dtype after its values, in every command that has it */
#define LF_KV_DTYPE_HELP "how the cache stores K and V (default bf16; fp32: CPU only)\n"

/* What a model directory's own files say about running it. */
typedef struct lf_model_defaults {
    char *eval_instruction;        /* longflow.json "eval_instruction"; NULL when absent */
    int max_tokens;                /* 0 when absent */
    const char *max_tokens_source; /* the file and key it came from */
    int max_length;                /* generation_config.json "max_length" (prompt + output); 0 when absent */
} lf_model_defaults;

int lf_gen_model_defaults(const char *dir, lf_model_defaults *d, lf_error *err);
void lf_gen_model_defaults_free(lf_model_defaults *d);

/* Set o->max_tokens from the model's defaults when --max-tokens was not
 * given; n_prompt is the (longest) prompt. Prints; returns -1 on error. */
int lf_gen_resolve_max_tokens(lf_gen_options *o, const char *cmd, const lf_model *m, int n_prompt);

/* KV memory of one request, allocated and in use at the peak, for its
 * policy and for what --policy full would take on the same request. */
typedef struct lf_kv_report {
    size_t bytes;            /* K/V the request's cache allocated */
    size_t in_use_peak;      /* most K/V bytes its valid slots held */
    size_t full_bytes;       /* what full allocates: prompt + max_tokens slots */
    size_t full_in_use_peak; /* what full holds at its peak: prompt + generated tokens */
} lf_kv_report;

/* (with ec's device, KV dtype and max_tokens) */
void lf_gen_kv_report_fill(lf_kv_report *r, const lf_model *m, const lf_engine_config *ec, const lf_generation *g);
/* kv_bytes, kv_bytes_in_use_peak, kv_bytes_full, kv_bytes_full_in_use_peak */
void lf_gen_kv_report_json(const lf_kv_report *r, cJSON *obj);
/* "KV cache P: X MB allocated, Y MB in use at peak; full would allocate ..." (no newline) */
void lf_gen_kv_report_print(const lf_kv_report *r, const char *policy, FILE *f);

#endif
