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
} lf_dtype;

const char *lf_dtype_name(lf_dtype t);
/* Bytes of one element; 0 for the block types (see lf_dtype_row_bytes). */
size_t lf_dtype_size(lf_dtype t);
/* Bytes of n consecutive values (for block types n is a multiple of 32). */
size_t lf_dtype_row_bytes(lf_dtype t, size_t n);

/* ---- model --------------------------------------------------------------- */
typedef struct lf_model lf_model;
typedef struct lf_config lf_config;

/* Load a Hugging Face model directory (config.json, safetensors). Weights are
 * memory-mapped and stay in their stored dtype. */
int lf_model_load(const char *dir, lf_model **out, lf_error *err);
/* A model of a named shape ("qwen3-0.6b", "qwen3-1.7b", "qwen3-8b",
 * "deepseek-r1-distill-llama-8b", ...) with random weights, for benchmarks. */
int lf_model_random(const char *preset, lf_dtype dtype, uint64_t seed, lf_model **out,
                    lf_error *err);
void lf_model_free(lf_model *m);
const lf_config *lf_model_config(const lf_model *m);

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

typedef struct lf_policy_config {
    lf_policy_kind kind;
    int budget;      /* slots per sequence and layer; 0 = prompt + max tokens (full) */
    int sinks;       /* first N prompt tokens never evicted (-1 = policy default) */
    int recent;      /* N newest tokens never evicted (-1 = policy default) */
    int evict_every; /* LongFlow: evict K slots at once every K steps (1 = paper) */
} lf_policy_config;

/* Parse a policy name ("full", "longflow", ...). Returns -1 if unknown. */
int lf_policy_from_name(const char *name, lf_policy_kind *out);
/* The name of a kind ("?" when out of range). */
const char *lf_policy_name(lf_policy_kind k);
/* The number of policies (kinds are 0 .. lf_policy_count()-1). */
int lf_policy_count(void);
/* Every policy's name, ", "-separated, into buf (truncated to fit size). */
void lf_policy_list(char *buf, size_t size);
void lf_policy_config_default(lf_policy_config *p);

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
    const char *note;          /* why it stopped when finish_reason alone does not say (the model's context), or NULL */
    size_t kv_bytes;           /* bytes of the K and V tensors of this sequence's cache */
    size_t kv_aux_bytes;       /* slot metadata and policy state of that cache */
    size_t kv_bytes_in_use_peak; /* most bytes of K/V in valid slots at any step */
    size_t kv_tokens_peak;     /* most tokens the cache held (max over layers) */
    int kv_slots;              /* slots per layer this sequence may use (0 until admitted) */
} lf_generation;

/* Bytes of K and V tensors for `slots` slots per layer (as the CPU cache
 * stores them, fp32). */
size_t lf_kv_bytes_for(const lf_model *m, int slots);
/* The same as `device` stores them: fp32 on the CPU, bf16 on CUDA. */
size_t lf_kv_bytes_for_device(const lf_model *m, int slots, lf_device device);

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

/* Queue a prompt; returns a request id >= 0, or -1 with err filled. */
int lf_engine_submit(lf_engine *e, const int *prompt, int n_prompt, lf_error *err);
/* The same with this request's own budget (slots per layer) for a budgeted
 * policy; 0 = the engine's. */
int lf_engine_submit_budget(lf_engine *e, const int *prompt, int n_prompt, int budget, lf_error *err);
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
