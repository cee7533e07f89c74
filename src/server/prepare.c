#include "server/server.h"

#include <stdlib.h>
#include <string.h>

#include "model/model.h"

/* Render the chat messages, or encode the completion prompt. */
static int encode(const lf_server *s, const lf_api_request *r, int **ids, int *n, bool *think_open, lf_api_error *e) {
    lf_error err = {{0}};
    *think_open = false;
    if (r->chat) {
        if (!s->has_chat)
            return lf_api_fail(e, 400, "messages", "no_chat_template",
                               "this model's tokenizer has no chat template longflow knows; use /v1/completions");
        lf_chat_options copt = {.add_generation_prompt = true, .enable_thinking = r->enable_thinking};
        lf_chat_prompt cp = {0};
        if (lf_chat_render_messages(s->family, s->tok, r->msgs, r->n_msgs, &copt, &cp, &err))
            return lf_api_fail(e, 400, "messages", "invalid_value", "messages: %s", err.msg);
        *think_open = cp.think_open;
        *ids = cp.ids;
        *n = cp.n_ids;
        cp.ids = NULL;
        lf_chat_prompt_free(&cp);
        return 0;
    }
    if (r->prompt_ids) {
        if (!(*ids = malloc((size_t)r->n_prompt_ids * sizeof(int))))
            return lf_api_fail(e, 500, NULL, NULL, "out of memory");
        memcpy(*ids, r->prompt_ids, (size_t)r->n_prompt_ids * sizeof(int));
        *n = r->n_prompt_ids;
        return 0;
    }
    if (lf_tokenizer_encode(s->tok, r->prompt, strlen(r->prompt), LF_TOK_ADD_SPECIAL | LF_TOK_PARSE_SPECIAL, ids, n,
                            &err))
        return lf_api_fail(e, 400, "prompt", "invalid_value", "prompt: %s", err.msg);
    return 0;
}

/* The engine's refusal, with the field it is about. */
static int engine_refusal(const char *msg, const char *input, lf_api_error *e) {
    const char *param = strstr(msg, "budget") ? "kv_budget"
                        : strstr(msg, "policy") ? "kv_policy"
                        : strstr(msg, "prompt") ? input
                        : strstr(msg, "max_tokens") ? "max_tokens"
                                                   : NULL;
    return lf_api_fail(e, 400, param, "invalid_value", "%s", msg);
}

int lf_server_prepare(const lf_server *s, const lf_api_request *r, lf_request_params *p, int **prompt,
                      bool *think_open, lf_api_error *e) {
    int n = 0;
    *prompt = NULL;
    if (encode(s, r, prompt, &n, think_open, e)) return -1;
    const char *input = r->chat ? "messages" : "prompt";
    if (n < 1) return lf_api_fail(e, 400, input, "invalid_value", "%s encodes to no tokens", input);
    /* the engine's context rule (lf_context_check), applied before queueing */
    lf_error err = {{0}};
    const int room = lf_context_check(s->model, n, &err);
    if (room < 0) return lf_api_fail(e, 400, input, "context_length_exceeded", "%s: %s", input, err.msg);
    int max_tokens = r->max_tokens;
    if (max_tokens == 0) {
        max_tokens = s->defaults.max_tokens < room ? s->defaults.max_tokens : room;
    } else if (max_tokens > room) {
        return lf_api_fail(e, 400, "max_tokens", "context_length_exceeded",
                           "prompt (%d tokens) + max_tokens (%d) exceeds the model's context of %d tokens", n,
                           max_tokens, s->context);
    }
    lf_request_params_default(s->engine, *prompt, n, p);
    p->max_tokens = max_tokens;
    p->sampling = r->sampling;
    p->stream = r->seed_given ? 0 : -1; /* without a seed: --seed mixed with the request id */
    p->ignore_eos = r->ignore_eos;
    p->policy = r->policy;
    p->budget = r->budget;
    if (lf_engine_check_params(s->engine, p, &err)) {
        if (r->policy != LF_POLICY_FULL && strstr(err.msg, "budget"))
            return lf_api_fail(e, 400, "kv_budget", "invalid_value", "kv_budget: %s", err.msg);
        return engine_refusal(err.msg, input, e);
    }
    return 0;
}
