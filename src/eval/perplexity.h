/* Teacher-forced evaluation of a model and KV-cache policy on a text
 * (`longflow perplexity`, docs/perplexity.md).
 *
 * The token ids are cut into windows of `ctx` tokens that start every
 * `stride` tokens; each window starts with an empty cache, its first token is
 * prefilled alone and every later token goes through one decode step, so the
 * policy evicts exactly as it does while generating. A window scores the
 * tokens the previous window did not (all but its first token when stride =
 * ctx). Windows run `batch` at a time through a backend's batched decode
 * (src/backend/backend.h: the CPU's or the GPU's), one cache per window.
 *
 * Per scored position: the NLL of the text's token, the log-sum-exp and the
 * argmax of the logits, optionally the top-K logits (a KL base), and, given a
 * base made with the full cache, the KL divergence from it over its top K plus
 * a remainder bucket. */
#ifndef LF_EVAL_PERPLEXITY_H
#define LF_EVAL_PERPLEXITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "longflow.h"

#define LF_PPL_TOPK_MAX 1024

/* One scored position. */
typedef struct lf_ppl_pos {
    int32_t index;  /* index in the token ids of the scored (predicted) token */
    int32_t argmax; /* the logits' argmax (lowest id on ties) */
    float nll;      /* -log p(token) in nats */
    float lse;      /* log of the sum of exp(logits) over the vocabulary */
    float kl;       /* KL(base || this) over the base's top K + remainder; 0 without a base */
} lf_ppl_pos;

/* Per-position results (also what a KL base file holds). */
typedef struct lf_ppl_result {
    int n;             /* positions */
    int k;             /* top logits per position (0: none recorded) */
    lf_ppl_pos *pos;   /* [n] */
    int32_t *top_id;   /* [n][k], descending logit (ties: lower id first) */
    float *top_logit;  /* [n][k] */
} lf_ppl_result;

void lf_ppl_result_free(lf_ppl_result *r);

typedef void (*lf_ppl_progress)(void *user, long done, long total);

typedef struct lf_ppl_params {
    lf_policy_config policy; /* budget: the policy's slots (ignored for full) */
    int ctx;                 /* window length (>= 2) */
    int stride;              /* 1 .. ctx */
    int batch;               /* windows decoded together (>= 1; cuda: 0 = as many as fit in the pool) */
    int max_windows;         /* 0 = every window */
    int top_k;               /* top logits to record (0 .. LF_PPL_TOPK_MAX) */
    int score_from;          /* tokens before this index are context only, never scored (a prompt) */
    const lf_ppl_result *base; /* NULL, or the full cache's result (k >= 1) to compute KL against */
    lf_ppl_progress progress;  /* called after every step with scored positions so far (more than once
                                  with the final count); may be NULL */
    void *progress_user;
    lf_device device;          /* LF_DEVICE_CPU (the reference) or LF_DEVICE_CUDA */
    double gpu_mem_fraction;   /* cuda: share of the free GPU memory a pool may use (0 = the backend's default) */
} lf_ppl_params;

/* Windows of n tokens: how many (after max_windows) and how many positions
 * they score. */
void lf_ppl_plan(int n, int ctx, int stride, int max_windows, int score_from, int *n_windows, int *n_scored);

/* Run the evaluation through the backend of p->device (src/backend), whose
 * prefill_logits/step_logits return each step's logits; CPU threads as set
 * by lf_threads_set (the CPU forward, and the scoring of each step's rows).
 * Fails on a bad ctx/stride/batch/top_k, a token outside the vocabulary, a
 * policy the cache or the device refuses (the message names the flag), a
 * base that does not cover the positions, or non-finite logits. */
int lf_ppl_run(const lf_model *m, const int *tokens, int n, const lf_ppl_params *p, lf_ppl_result *out,
               lf_error *err);

/* The same for several policies over the same windows: out[j] (n_policies
 * of them) receives policies[j]'s result; p->policy is not used. Each
 * (window, policy) pair has its own cache; p->batch of them are decoded
 * together (on the CPU different policies in one batched step, so a text
 * scored under many policies reads the weights once per step for all of
 * them; the GPU pool runs one policy, so there the runs go pool by pool:
 * one pass per policy, its budgets side by side). */
int lf_ppl_run_policies(const lf_model *m, const int *tokens, int n, const lf_ppl_params *p,
                        const lf_policy_config *policies, int n_policies, lf_ppl_result *out, lf_error *err);

/* The checks of the runs that need no model: budgets, device, batch, and
 * on cuda each policy against what the GPU runs (lf_ppl_run_policies makes
 * them too; a caller can make them before a long first run). */
int lf_ppl_check_runs(const lf_ppl_params *p, const lf_policy_config *policies, int n_policies, lf_error *err);

/* Mean and standard error of the mean (sample standard deviation / sqrt(n);
 * 0 when n < 2). */
typedef struct lf_ppl_stat {
    double mean, se;
} lf_ppl_stat;

typedef struct lf_ppl_summary {
    int n;
    lf_ppl_stat nll;       /* nats per token; perplexity = exp(nll.mean) */
    /* against a base (with_base): */
    bool with_base;
    lf_ppl_stat kl;        /* KL(base || run) */
    lf_ppl_stat top1;      /* share of positions whose argmax equals the base's */
    lf_ppl_stat delta_nll; /* run's NLL - base's NLL, paired per position */
} lf_ppl_summary;

/* base may be NULL; otherwise it covers r's positions (lf_ppl_run checked). */
void lf_ppl_summarize(const lf_ppl_result *r, const lf_ppl_result *base, lf_ppl_summary *s);

/* ---- KL base files (format in docs/perplexity.md) ------------------------- */

typedef struct lf_ppl_base_header {
    uint32_t k, ctx, stride, vocab;
    uint64_t n_tokens;    /* tokens of the text */
    uint64_t text_hash;   /* lf_ppl_hash_tokens of them */
    uint64_t model_hash;  /* lf_ppl_model_fingerprint */
    char model_name[256]; /* the --model path as given (informational) */
} lf_ppl_base_header;

/* FNV-1a 64 over the token ids and score_from (each as 4 bytes little-endian). */
uint64_t lf_ppl_hash_tokens(const int *tokens, int n, int score_from);
/* FNV-1a 64 over the config's shape and the first bytes of the embedding,
 * final norm and lm_head: the same weights give the same value wherever the
 * directory lies. */
uint64_t lf_ppl_model_fingerprint(const lf_model *m);

int lf_ppl_base_write(const char *path, const lf_ppl_base_header *h, const lf_ppl_result *r, lf_error *err);
/* Read a base file; every size is checked against the file before it sizes
 * an allocation, ids against the header's vocabulary. */
int lf_ppl_base_read(const char *path, lf_ppl_base_header *h, lf_ppl_result *r, lf_error *err);
/* The same over the bytes of a file (path names it in messages). */
int lf_ppl_base_parse(const char *path, const void *data, size_t len, lf_ppl_base_header *h, lf_ppl_result *r,
                      lf_error *err);
/* A base made for this run? The message names the mismatch (model, text,
 * --ctx, --stride) and the file. */
int lf_ppl_base_check(const char *path, const lf_ppl_base_header *file, const lf_ppl_base_header *run,
                      lf_error *err);

#endif
