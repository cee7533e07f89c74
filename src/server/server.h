/* `longflow serve`: an OpenAI-compatible HTTP server over the engine.
 * One scheduler thread owns the engine (sched.h); libmicrohttpd runs one
 * thread per connection that parses and validates a request (request.h),
 * turns it into engine parameters (lf_server_prepare), queues it and
 * streams the tokens back (http.c). docs/serve.md lists every field, status
 * code and metric. */
#ifndef LF_SERVER_SERVER_H
#define LF_SERVER_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>

#include "chat/chat.h"
#include "longflow.h"
#include "server/metrics.h"
#include "server/request.h"
#include "server/sched.h"
#include "tokenizer/tokenizer.h"

typedef struct lf_serve_options {
    const char *host;          /* address to bind (default 127.0.0.1) */
    int port;                  /* default 8080 */
    const char *api_key;       /* NULL: no authentication */
    int max_queue;             /* requests waiting beyond the running ones */
    int timeout_s;             /* idle connection timeout */
    int shutdown_timeout_s;    /* SIGINT/SIGTERM: how long running requests may finish */
    size_t max_body;           /* request body limit, bytes */
    const char *chat_template; /* family override, NULL = recognise */
    int max_prompt;            /* cuda: the longest prompt the GPU pool is planned for */
    const char *random_preset; /* benchmarks: random weights of this shape (lf_model_random) instead of --model */
    const char *tokenizer_dir; /* the tokenizer's directory (default: the model directory) */
} lf_serve_options;

typedef struct lf_server {
    lf_serve_options opt;
    const lf_model *model;
    const lf_tokenizer *tok;
    lf_engine *engine;
    lf_chat_family family;
    bool has_chat;             /* the tokenizer has a chat template longflow knows */
    lf_api_defaults defaults;
    char model_name[256];
    lf_metrics metrics;
    lf_sched sched;
    struct MHD_Daemon *mhd;
    atomic_bool ready;
    atomic_long next_id;
    atomic_int http_jobs;      /* jobs an HTTP thread still answers */
    int context;               /* the model's context length (max_position_embeddings) */
} lf_server;

/* A validated request as engine parameters: the prompt (chat template or
 * plain text), max_tokens, sampling, policy, budget; the context-length
 * check. think_open: the prompt opened <think>. The job holds its copy of
 * the prompt; *prompt is malloc'd. Returns 0 or -1 with e (400). */
int lf_server_prepare(const lf_server *s, const lf_api_request *r, lf_request_params *p, int **prompt,
                      bool *think_open, lf_api_error *e);

/* Serve the model in model_dir with engine configuration ec until SIGINT or
 * SIGTERM (server.c). defaults: the request defaults (its model_name is
 * filled here). Returns the process exit status. */
int lf_serve_run(const lf_serve_options *o, const char *model_dir, const lf_engine_config *ec,
                 const lf_api_defaults *defaults);

/* HTTP (http.c): start listening (with /health answering 503 until
 * s->ready), stop accepting, stop. */
int lf_http_start(lf_server *s, lf_error *err);
void lf_http_quiesce(lf_server *s);
void lf_http_stop(lf_server *s);

#endif
