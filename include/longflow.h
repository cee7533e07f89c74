/*
 * longflow: a C inference engine for long-output reasoning models whose KV
 * cache is compressed on the fly by LongFlow (arXiv 2603.11504).
 *
 * This is the one public header. Every function that can fail returns 0 on
 * success and -1 on failure, and fills the lf_error it is given with a
 * one-line message naming the thing and the problem.
 */
#ifndef LONGFLOW_H
#define LONGFLOW_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LF_VERSION "0.1.0"

/* ---- errors -------------------------------------------------------------- */
typedef struct lf_error {
    char msg[1024];
} lf_error;

/* ---- tensors ------------------------------------------------------------- */
typedef enum lf_dtype {
    LF_DTYPE_F32 = 0,
    LF_DTYPE_F16 = 1,
    LF_DTYPE_BF16 = 2,
    /* ggml's 32-value blocks, as GGUF files store them (CPU only) */
    LF_DTYPE_Q8_0 = 3,  /* f16 scale, 32 int8 */
    LF_DTYPE_Q4_0 = 4,  /* f16 scale, 16 bytes of nibbles (offset 8) */
    LF_DTYPE_Q4_1 = 5,  /* f16 scale and min, 16 bytes of nibbles */
    /* ggml's 256-value k-quant super-blocks (CPU only) */
    LF_DTYPE_Q4_K = 6,  /* f16 d and dmin, 6-bit scales and mins, nibbles */
    LF_DTYPE_Q5_K = 7,  /* as Q4_K plus a fifth bit per value */
    LF_DTYPE_Q6_K = 8,  /* 6-bit values, int8 scale per 16, f16 d */
    LF_DTYPE_Q5_0 = 9,  /* f16 scale, 32 fifth bits, nibbles (offset 16) */
    LF_DTYPE_Q5_1 = 10, /* f16 scale and min, 32 fifth bits, nibbles */
} lf_dtype;

const char *lf_dtype_name(lf_dtype t);
/* Bytes of one element; 0 for the block types (see lf_dtype_row_bytes). */
size_t lf_dtype_size(lf_dtype t);
/* Bytes of n consecutive values (for block types n is a multiple of the
 * block: 32 values, 256 for the k-quants). */
size_t lf_dtype_row_bytes(lf_dtype t, size_t n);

/* ---- model --------------------------------------------------------------- */
typedef struct lf_model lf_model;
typedef struct lf_config lf_config;

/* Load a Hugging Face model directory (config.json, safetensors). Weights are
 * memory-mapped and stay in their stored dtype. */
int lf_model_load(const char *dir, lf_model **out, lf_error *err);
/* How a GGUF file's quantized matrices are held. QUANT (lf_model_load's
 * choice): Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K stay in their
 * blocks, in the file mapping, and the CPU computes on them
 * (docs/cpu-quant.md). BF16: every block type is dequantized to bf16 (what the
 * CUDA backend needs, and the reference the quantized path is compared with).
 * Safetensors checkpoints load the same in both. */
typedef enum lf_weights_mode {
    LF_WEIGHTS_QUANT = 0,
    LF_WEIGHTS_BF16 = 1,
} lf_weights_mode;
int lf_model_load_mode(const char *path, lf_weights_mode mode, lf_model **out, lf_error *err);
/* A model of a named shape ("qwen3-0.6b", "qwen3-1.7b", "qwen3-8b",
 * "deepseek-r1-distill-llama-8b", ...) with random weights, for benchmarks. */
int lf_model_random(const char *preset, lf_dtype dtype, uint64_t seed, lf_model **out,
                    lf_error *err);
void lf_model_free(lf_model *m);
const lf_config *lf_model_config(const lf_model *m);

/* Read-only accessors for a model's configuration (config.json, or the GGUF
 * metadata that stands for it). */
const char *lf_config_architecture(const lf_config *c); /* "Qwen3ForCausalLM", ... */
int lf_config_layers(const lf_config *c);
int lf_config_hidden_size(const lf_config *c);
int lf_config_heads(const lf_config *c);       /* query heads */
int lf_config_kv_heads(const lf_config *c);    /* key/value heads (GQA) */
int lf_config_head_dim(const lf_config *c);
int lf_config_vocab_size(const lf_config *c);
int lf_config_context_length(const lf_config *c); /* max_position_embeddings */
/* Is token one of the model's end-of-sequence ids? */
bool lf_config_is_eos(const lf_config *c, int token);

/* Threads the CPU kernels use from now on (0 = all cores), and how many
 * that is. lf_engine_create sets it from lf_engine_config.threads. */
void lf_threads_set(int n);
int lf_threads_get(void);

/* ---- tokenizer ----------------------------------------------------------- */
/* Hugging Face tokenizer.json (BPE: byte-level and SentencePiece-style with
 * byte fallback) with tokenizer_config.json, or a GGUF file's tokenizer
 * metadata; encodes and decodes as the `tokenizers` library does. */
typedef struct lf_tokenizer lf_tokenizer;

/* Load dir/tokenizer.json and dir/tokenizer_config.json (optional). */
int lf_tokenizer_load(const char *dir, lf_tokenizer **out, lf_error *err);
void lf_tokenizer_free(lf_tokenizer *t);

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

/* The tokenizer of the model at path: a GGUF file (or a directory holding
 * one) through its metadata, else a Hugging Face directory's
 * tokenizer.json. */
int lf_model_tokenizer_load(const char *path, lf_tokenizer **out, lf_error *err);
/* Whether path has a tokenizer to load (a GGUF, or a tokenizer.json). */
bool lf_model_has_tokenizer(const char *path);

/* ---- chat templates ------------------------------------------------------ */
/* The model's own Jinja chat_template (rendered as transformers'
 * apply_chat_template renders it) or a built-in template; the prompt is
 * encoded with special tokens recognised only in the template's markup,
 * never in message contents. */
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

/* ---- KV-cache policies --------------------------------------------------- */
/* A policy is named by a string ("full", "longflow", ...; `longflow
 * policies` lists them) and identified by its index in the registry
 * (src/kv/policies/registry.c), 0 .. lf_policy_count()-1. The names below are
 * the built-in ones, kept for source compatibility; a policy added later
 * has no constant here: get its kind with lf_policy_from_name. */
typedef enum lf_policy_kind {
    LF_POLICY_FULL = 0,  /* no eviction */
    LF_POLICY_LONGFLOW,  /* arXiv 2603.11504: evict min alpha*|v|_1 each step */
    LF_POLICY_STREAMING, /* StreamingLLM: sinks + recent window */
    LF_POLICY_TOVA,      /* TOVA: current-step attention, no value term */
    LF_POLICY_H2O,       /* H2O: accumulated attention + recent window */
    LF_POLICY_VATP,      /* value-aware token pruning: H2O score * |v|_1 */
    LF_POLICY_RKV,       /* R-KV: importance - redundancy, buffered */
} lf_policy_kind;

/* How the KV cache stores K and V (docs/kv-cache.md). The CPU stores all
 * three; the CUDA backend stores bf16 or fp8. lf_policy_config_default picks
 * bf16; the conformance tests against float32 references use fp32. */
typedef enum lf_kv_dtype {
    LF_KV_F32 = 0, /* 4 bytes an element */
    LF_KV_BF16,    /* 2 bytes, rounded to nearest even when written */
    LF_KV_FP8,     /* 1 byte, e4m3 with a float scale per (token, KV head) from the row's |max| */
} lf_kv_dtype;

/* Parse "fp32", "bf16" or "fp8". Returns -1 if unknown. */
int lf_kv_dtype_from_name(const char *name, lf_kv_dtype *out);
/* The name of a dtype ("?" when out of range). */
const char *lf_kv_dtype_name(lf_kv_dtype t);

typedef struct lf_policy_config {
    lf_policy_kind kind;
    int budget;      /* slots per sequence and layer; 0 = prompt + max tokens (full) */
    int sinks;       /* first N prompt tokens never evicted (-1 = policy default) */
    int recent;      /* N newest tokens never evicted (-1 = policy default) */
    int evict_every; /* LongFlow: evict K slots at once every K steps (1 = paper) */
    float protect_prompt; /* > 0: the prompt is never evicted and may take this share of the budget
                           * (SnapKV's selection of it when longer); 0 = off (the paper) */
    lf_kv_dtype kv_dtype; /* storage of the cache's K and V (default bf16) */
} lf_policy_config;

/* Parse a policy name ("full", "longflow", ...). Returns -1 if unknown. */
int lf_policy_from_name(const char *name, lf_policy_kind *out);
/* The same for a setting that a user wrote: what names it ("--policy",
 * "kv_policy"); unknown: -1 with err "WHAT: unknown policy 'NAME' (known:
 * ...)". The CLI and the server both check names here. */
int lf_policy_parse(const char *what, const char *name, lf_policy_kind *out, lf_error *err);
/* The rule for a policy and a budget chosen together (the CLI's --policy
 * and --budget, the server's kv_policy and kv_budget): a budgeted policy
 * needs a budget, full takes none. policy_what and budget_what name the two
 * settings in the message. Returns 0, or -1 with err. */
int lf_policy_check_budget(lf_policy_kind kind, bool budget_given, const char *policy_what, const char *budget_what,
                           lf_error *err);
/* The name of a kind ("?" when out of range). */
const char *lf_policy_name(lf_policy_kind k);
/* The number of policies (kinds are 0 .. lf_policy_count()-1). */
int lf_policy_count(void);
/* Every policy's name, ", "-separated, into buf (truncated to fit size). */
void lf_policy_list(char *buf, size_t size);
void lf_policy_config_default(lf_policy_config *p);

/* What `longflow policies` prints about a policy (strings owned by the
 * library). */
typedef struct lf_policy_info {
    const char *name;       /* --policy NAME */
    const char *paper;      /* citation */
    const char *rule;       /* what is evicted, one line */
    const char *aux;        /* auxiliary memory per slot and layer, in words */
    int aux_bytes_per_slot; /* the same in bytes */
    bool budgeted;          /* evicts (false: `full`) */
    bool gpu;               /* runs on --device cuda too */
    const char *score_mode; /* what the fused kernel computes per slot */
} lf_policy_info;
/* Fill info for kind; -1 when kind is out of range. */
int lf_policy_describe(lf_policy_kind kind, lf_policy_info *info);

/* SnapKV prompt compression (every budgeted policy, when a prompt is longer
 * than budget-1): observation window of the last LF_SNAPKV_WINDOW prompt
 * queries, average pooling of width LF_SNAPKV_POOL; the smallest budget that
 * holds a compressed prompt is LF_SNAPKV_MIN_BUDGET (B-1-32 >= 1). */
#define LF_SNAPKV_WINDOW 32
#define LF_SNAPKV_POOL 5
#define LF_SNAPKV_MIN_BUDGET (LF_SNAPKV_WINDOW + 2)

/* ---- sampling ------------------------------------------------------------ */
typedef struct lf_sampling {
    float temperature;        /* 0 = greedy */
    int top_k;                /* 0 = off */
    float top_p;              /* 1 = off */
    float min_p;              /* 0 = off */
    float repetition_penalty; /* 1 = off */
    uint64_t seed;
} lf_sampling;

void lf_sampling_default(lf_sampling *s);

/* ---- engine -------------------------------------------------------------- */
typedef enum lf_device { LF_DEVICE_CPU = 0, LF_DEVICE_CUDA = 1 } lf_device;

/* Where each KV-cache dtype may be used, the one rule every caller applies
 * (CLI, engine, CUDA backend): the GPU stores bf16 or fp8 (fp32 is the CPU's
 * reference format). 0, or -1 with a message naming --kv-dtype. */
int lf_kv_dtype_check_device(lf_kv_dtype t, lf_device device, lf_error *err);

typedef struct lf_engine_config {
    lf_device device;
    int threads;    /* 0 = all cores */
    int max_seqs;   /* sequences in flight at once (>= 1); CUDA: 0 = as many as fit on the GPU */
    int max_tokens; /* generated tokens per sequence */
    bool ignore_eos;
    lf_policy_config policy;
    lf_sampling sampling;
    double gpu_mem_fraction; /* CUDA: share of the free GPU memory the plan may use (0 = backend default) */
} lf_engine_config;

void lf_engine_config_default(lf_engine_config *c);

typedef struct lf_engine lf_engine;

/* One finished or running generation. */
typedef struct lf_generation {
    int id;               /* request id returned by lf_engine_submit */
    const int *prompt;    /* prompt token ids */
    int n_prompt;
    const int *tokens;    /* generated ids so far */
    int n_tokens;
    bool done;
    const char *finish_reason; /* "eos", "length", "stop" (a stop id), "cancelled", "error", or NULL while running */
    const char *note;          /* why it stopped when finish_reason alone does not say: the model's context, or
                                * for "error" this request's own message (as lf_engine_step's err said it); or NULL */
    size_t kv_bytes;           /* bytes of the K and V tensors of this sequence's cache */
    size_t kv_aux_bytes;       /* slot metadata and policy state of that cache */
    size_t kv_bytes_in_use_peak; /* most bytes of K/V in valid slots at any step */
    size_t kv_tokens_peak;     /* most tokens the cache held (max over layers) */
    int kv_slots;              /* slots per layer this sequence may use (0 until admitted) */
} lf_generation;

/* Bytes of K and V tensors for `slots` slots per layer as `device` stores
 * them in `dtype` (fp8: with its per-row scales; CUDA stores bf16 only). */
size_t lf_kv_bytes_for(const lf_model *m, int slots, lf_device device, lf_kv_dtype dtype);

typedef void (*lf_token_callback)(void *user, const lf_generation *g, int token);

int lf_engine_create(lf_model *m, const lf_engine_config *cfg, lf_engine **out, lf_error *err);
void lf_engine_free(lf_engine *e);

/* The context rule, written once (submit applies it; a server calls it to
 * refuse a request before queueing): returns how many tokens may be
 * generated after a prompt of n_prompt tokens, max_position_embeddings -
 * n_prompt (>= 1), or -1 with err naming both numbers when the prompt leaves
 * no room. A generation that reaches the context stops there with
 * finish_reason "length" and a note. */
int lf_context_check(const lf_model *m, int n_prompt, lf_error *err);

/* Queue a prompt with the engine's settings; returns a request id >= 0, or
 * -1 with err filled. A request with settings of its own (budget, sampling,
 * stop ids, ...) goes through lf_engine_submit_params. */
int lf_engine_submit(lf_engine *e, const int *prompt, int n_prompt, lf_error *err);
/* One request's own settings (lf_engine_submit_params). Start from
 * lf_request_params_default, which copies the engine's configuration, then
 * set what this request changes. */
typedef struct lf_request_params {
    const int *prompt;      /* prompt token ids (copied at submit) */
    int n_prompt;
    int max_tokens;         /* generated tokens at most (>= 1; fewer when the model's context ends first) */
    lf_sampling sampling;   /* temperature, top_p, top_k, min_p, repetition penalty, seed */
    bool ignore_eos;        /* keep generating past the model's end-of-sequence tokens */
    lf_policy_kind policy;  /* the KV-cache policy of this request's cache */
    int budget;             /* slots per layer for a budgeted policy (> 0); ignored for full */
    const int *stop_ids;    /* generation stops after any of these ids (copied at submit) */
    int n_stop_ids;
    int64_t stream;         /* the sampler's random stream: -1 = the request id (independent streams for the
                               requests of one run); >= 0 = this one, so that a request with its own seed
                               samples the same tokens on any run (0 = `longflow generate --seed`) */
} lf_request_params;

/* params for a request of n_prompt ids that takes every setting from the
 * engine's configuration (max_tokens, sampling, ignore_eos, policy, budget). */
void lf_request_params_default(const lf_engine *e, const int *prompt, int n_prompt, lf_request_params *p);

/* Check params against the engine and the model as lf_engine_submit_params
 * does (prompt ids in the vocabulary, budget, policy, sampling, what the
 * device can honour) without queueing anything. Returns 0 or -1 with err. */
int lf_engine_check_params(const lf_engine *e, const lf_request_params *p, lf_error *err);
/* Queue a request; returns its id >= 0, or -1 with err filled. */
int lf_engine_submit_params(lf_engine *e, const lf_request_params *p, lf_error *err);

/* One scheduling step: admit queued requests into free places (each one's
 * prefill produces its first token), then advance every running sequence by
 * one token in one batched forward. on_token (may be NULL) is called for
 * every generated token; g->done is set on a request's last one. Returns 0,
 * or -1 when a step failed: err names the requests it affected, which are
 * finished with finish_reason "error" (the others keep running). */
int lf_engine_step(lf_engine *e, lf_token_callback on_token, void *user, lf_error *err);
/* Requests queued and running (0: lf_engine_step has nothing to do). */
int lf_engine_pending(const lf_engine *e, int *queued, int *running);
/* Stop a queued or running request now: its cache (slots, GPU entry) is
 * freed at once and it is finished with finish_reason "cancelled". Only call
 * it between steps (from the thread that steps). A finished request is left
 * as it is. Returns -1 for an unknown or released id. */
int lf_engine_cancel(lf_engine *e, int id, lf_error *err);
/* Forget a finished request: its ids and result are freed, and
 * lf_engine_result(id) returns NULL afterwards (a server calls this for every
 * request it has answered). Returns -1 if the request is still queued or
 * running (cancel it first) or unknown. */
int lf_engine_release(lf_engine *e, int id, lf_error *err);

/* Run until every queued request is done. on_token (may be NULL) is called
 * for every generated token. Sequences are admitted as slots free up. */
int lf_engine_run(lf_engine *e, lf_token_callback on_token, void *user, lf_error *err);
const lf_generation *lf_engine_result(const lf_engine *e, int id);
/* Plan the device now for prompts of up to max_prompt tokens (CUDA: uploads
 * the weights and sizes the pool, which lf_engine_run otherwise does on its
 * first call from the queued prompts; CPU: nothing). Afterwards
 * lf_engine_stats reports max_batch, so a caller can submit exactly as many
 * requests as run at once. */
int lf_engine_reserve(lf_engine *e, int max_prompt, lf_error *err);

typedef struct lf_engine_stats {
    double prefill_ms;
    double decode_ms;
    long prompt_tokens;
    long generated_tokens; /* all generated tokens (the first comes from prefill) */
    long decode_tokens;    /* tokens produced by decode steps (timed by decode_ms) */
    long decode_steps;
    size_t kv_bytes_peak;  /* most KV-cache bytes held at once, all sequences */
    /* CPU: the caches' K/V buffers, allocated fresh and taken again from the
     * free list of finished sequences' buffers (at most max_seqs kept) */
    long kv_buffers_allocated;
    long kv_buffers_reused;
    /* device plan (CUDA: filled once the backend exists, see lf_engine_reserve) */
    int max_batch;         /* sequences that can run at once: GPU entries on CUDA, max_seqs on the CPU */
    int capacity;          /* CUDA: KV slots per sequence and layer of every entry (0 on the CPU) */
    size_t gpu_peak_bytes; /* CUDA: peak device memory the backend allocated (0 on the CPU) */
    size_t gpu_weight_bytes;      /* CUDA: weights on the GPU */
    size_t gpu_kv_bytes_per_seq;  /* CUDA: K+V bytes of one entry, all layers (bf16) */
    size_t gpu_aux_bytes_per_seq; /* CUDA: slot positions and policy state of one entry */
    char device_name[128];        /* "cpu", or the GPU's name */
    char gpu_plan[256];           /* CUDA: one line, how max_batch was chosen */
} lf_engine_stats;
void lf_engine_stats_get(const lf_engine *e, lf_engine_stats *s);

#ifdef __cplusplus
}
#endif
#endif /* LONGFLOW_H */
