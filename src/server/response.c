#include "server/response.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

static cJSON *error_object(const lf_api_error *e) {
    cJSON *root = cJSON_CreateObject();
    cJSON *o = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(o, "message", e->message);
    cJSON_AddStringToObject(o, "type", e->type);
    if (e->param[0]) cJSON_AddStringToObject(o, "param", e->param);
    else cJSON_AddNullToObject(o, "param");
    if (e->code[0]) cJSON_AddStringToObject(o, "code", e->code);
    else cJSON_AddNullToObject(o, "code");
    return root;
}

static char *print_and_free(cJSON *root) {
    char *s = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return s;
}

/* "data: <json>\n\n" */
static char *sse(cJSON *root) {
    char *j = print_and_free(root);
    if (!j) return NULL;
    size_t n = strlen(j);
    char *s = malloc(n + 9);
    if (s) {
        memcpy(s, "data: ", 6);
        memcpy(s + 6, j, n);
        memcpy(s + 6 + n, "\n\n", 3);
    }
    free(j);
    return s;
}

char *lf_resp_error(const lf_api_error *e) { return print_and_free(error_object(e)); }

char *lf_resp_error_event(const lf_api_error *e) { return sse(error_object(e)); }

static cJSON *envelope(const lf_resp_ctx *c, bool chunk) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "id", c->id);
    cJSON_AddStringToObject(root, "object",
                            c->chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion");
    cJSON_AddNumberToObject(root, "created", (double)c->created);
    cJSON_AddStringToObject(root, "model", c->model);
    return root;
}

/* root's "choices": [{"index": 0}]; returns that choice. */
static cJSON *first_choice(cJSON *root) {
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, ch);
    cJSON_AddNumberToObject(ch, "index", 0);
    return ch;
}

static void add_usage(cJSON *root, const lf_usage *u) {
    cJSON *o = cJSON_AddObjectToObject(root, "usage");
    cJSON_AddNumberToObject(o, "prompt_tokens", u->prompt_tokens);
    cJSON_AddNumberToObject(o, "completion_tokens", u->completion_tokens);
    cJSON_AddNumberToObject(o, "total_tokens", u->prompt_tokens + u->completion_tokens);
    cJSON *kv = cJSON_AddObjectToObject(o, "kv");
    cJSON_AddStringToObject(kv, "policy", u->policy);
    cJSON_AddNumberToObject(kv, "budget", u->budget);
    cJSON_AddNumberToObject(kv, "peak_slots", (double)u->peak_slots);
    cJSON_AddNumberToObject(kv, "slots", u->slots);
    cJSON_AddNumberToObject(kv, "bytes", (double)u->bytes);
}

char *lf_resp_complete(const lf_resp_ctx *c, const char *reasoning, const char *content, const char *finish,
                       const lf_usage *u, const int *token_ids, int n_ids) {
    cJSON *root = envelope(c, false);
    cJSON *ch = first_choice(root);
    if (c->chat) {
        cJSON *m = cJSON_AddObjectToObject(ch, "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        cJSON_AddStringToObject(m, "content", content);
        if (reasoning) cJSON_AddStringToObject(m, "reasoning_content", reasoning);
    } else {
        cJSON_AddStringToObject(ch, "text", content);
        cJSON_AddNullToObject(ch, "logprobs");
    }
    cJSON_AddStringToObject(ch, "finish_reason", finish);
    if (token_ids) cJSON_AddItemToObject(ch, "token_ids", cJSON_CreateIntArray(token_ids, n_ids));
    add_usage(root, u);
    return print_and_free(root);
}

/* A string item from n bytes (not NUL-terminated). */
static void add_str_n(cJSON *o, const char *name, const char *s, size_t n) {
    char *t = malloc(n + 1);
    if (!t) return;
    memcpy(t, s, n);
    t[n] = 0;
    cJSON_AddStringToObject(o, name, t);
    free(t);
}

char *lf_resp_chunk(const lf_resp_ctx *c, bool role, const char *reasoning, size_t rn, const char *content,
                    size_t cn, const char *finish) {
    cJSON *root = envelope(c, true);
    cJSON *ch = first_choice(root);
    if (c->chat) {
        cJSON *d = cJSON_AddObjectToObject(ch, "delta");
        if (role) cJSON_AddStringToObject(d, "role", "assistant");
        if (reasoning && rn) add_str_n(d, "reasoning_content", reasoning, rn);
        if (content && cn) add_str_n(d, "content", content, cn);
        else if (role) cJSON_AddStringToObject(d, "content", "");
    } else {
        add_str_n(ch, "text", content ? content : "", content ? cn : 0);
        cJSON_AddNullToObject(ch, "logprobs");
    }
    if (finish) cJSON_AddStringToObject(ch, "finish_reason", finish);
    else cJSON_AddNullToObject(ch, "finish_reason");
    return sse(root);
}

char *lf_resp_usage_chunk(const lf_resp_ctx *c, const lf_usage *u) {
    cJSON *root = envelope(c, true);
    cJSON_AddArrayToObject(root, "choices");
    add_usage(root, u);
    return sse(root);
}
