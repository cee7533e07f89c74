/* The JSON the server answers with, in the OpenAI API's shapes: errors,
 * chat.completion / text_completion objects, stream chunks (as SSE "data:"
 * lines) and usage with LongFlow's kv object. Each function returns a
 * malloc'd string, or NULL when out of memory. */
#ifndef LF_SERVER_RESPONSE_H
#define LF_SERVER_RESPONSE_H

#include <stdbool.h>
#include <stddef.h>
#include "longflow.h"
#include "server/request.h"

typedef struct lf_resp_ctx {
    char id[48];            /* "chatcmpl-<n>" / "cmpl-<n>" */
    const char *model;
    long created;           /* unix seconds */
    bool chat;
} lf_resp_ctx;

typedef struct lf_usage {
    int prompt_tokens, completion_tokens;
    const char *policy;
    int budget;             /* 0 for full */
    long peak_slots;        /* most KV slots per layer the sequence held */
    int slots;              /* KV slots per layer allocated for it */
    size_t bytes;           /* K and V bytes allocated for it */
} lf_usage;

char *lf_resp_error(const lf_api_error *e);
/* A whole answer. reasoning NULL: no reasoning_content (completions, or no
 * think block). token_ids NULL: not asked for. */
char *lf_resp_complete(const lf_resp_ctx *c, const char *reasoning, const char *content, const char *finish,
                       const lf_usage *u, const int *token_ids, int n_ids);
/* One SSE chunk: "data: {...}\n\n". role: the first chunk (delta.role).
 * reasoning/content may be NULL; finish NULL while running. */
char *lf_resp_chunk(const lf_resp_ctx *c, bool role, const char *reasoning, size_t rn, const char *content,
                    size_t cn, const char *finish);
/* The usage chunk of stream_options.include_usage (choices empty). */
char *lf_resp_usage_chunk(const lf_resp_ctx *c, const lf_usage *u);
/* An error mid-stream: "data: {"error": ...}\n\n". */
char *lf_resp_error_event(const lf_api_error *e);

#endif
