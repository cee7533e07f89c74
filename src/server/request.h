/* The body of POST /v1/chat/completions and /v1/completions: parsed from
 * JSON and validated field by field before anything is queued. Every
 * refusal is an lf_api_error naming the field (OpenAI's error shape).
 * No tokenizer or engine here: this is the parser the fuzz harness drives
 * (tests/fuzz/fuzz_request.c). */
#ifndef LF_SERVER_REQUEST_H
#define LF_SERVER_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include "chat/chat.h"
#include "core/error.h"
#include "longflow.h"

#define LF_API_MAX_STOP 4          /* stop strings per request, as OpenAI */
#define LF_API_MAX_STOP_BYTES 256  /* bytes per stop string */
#define LF_API_MAX_DEPTH 32        /* JSON nesting levels a body may have */

typedef struct lf_api_error {
    int status;          /* HTTP status: 400, 401, 404, 413, 429, 500, 503 */
    char type[48];       /* "invalid_request_error", ... */
    char param[64];      /* the field at fault, "" when none */
    char code[48];       /* "invalid_value", "context_length_exceeded", ... "" when none */
    char message[512];
} lf_api_error;

/* Fill e (always returns -1, for `return lf_api_fail(...)`). */
int lf_api_fail(lf_api_error *e, int status, const char *param, const char *code, const char *fmt, ...)
    LF_PRINTF(5, 6);

/* What a request may leave out: the server's command-line settings. */
typedef struct lf_api_defaults {
    const char *model_name;  /* the served model's name (the "model" field must match when given) */
    int max_tokens;          /* used when the request gives none */
    lf_sampling sampling;
    bool ignore_eos;
    lf_policy_kind policy;
    int budget;              /* 0 when the default policy is full */
} lf_api_defaults;

typedef struct lf_api_request {
    bool chat;               /* /v1/chat/completions (else /v1/completions) */
    lf_chat_message *msgs;   /* chat */
    int n_msgs;
    char *prompt;            /* completions: text, or */
    int *prompt_ids;         /* completions: token ids (an array of integers) */
    int n_prompt_ids;
    int max_tokens;          /* 0 = not given (the server picks, see docs/serve.md) */
    lf_sampling sampling;
    bool seed_given;         /* "seed": sample on a stream of its own, the same on any server run */
    bool ignore_eos;
    bool stream, include_usage;
    bool enable_thinking;    /* chat_template_kwargs.enable_thinking (default true) */
    bool return_token_ids;
    char *stop[LF_API_MAX_STOP];
    int n_stop;
    lf_policy_kind policy;
    int budget;              /* 0 for full */
} lf_api_request;

/* Parse and validate a body of len bytes (not NUL-terminated). chat: which
 * endpoint. Returns 0, or -1 with e filled (status 400/404). */
int lf_api_parse(const char *body, size_t len, bool chat, const lf_api_defaults *d, lf_api_request *out,
                 lf_api_error *e);
void lf_api_request_free(lf_api_request *r);

#endif
