#include "server/request.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <utf8proc.h>

int lf_api_fail(lf_api_error *e, int status, const char *param, const char *code, const char *fmt, ...) {
    if (!e) return -1;
    e->status = status;
    snprintf(e->type, sizeof e->type, "%s",
             status == 401   ? "authentication_error"
             : status == 404 ? "not_found_error"
             : status == 429 ? "rate_limit_error"
             : status >= 500 ? "server_error"
                             : "invalid_request_error");
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    snprintf(e->code, sizeof e->code, "%s", code ? code : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

#define BAD(param, ...) lf_api_fail(e, 400, param, "invalid_value", __VA_ARGS__)

/* Whole body valid UTF-8 (utf8proc's decoder: no overlongs, no surrogates)?
 * Returns the offset of the first bad byte, or -1 when all is valid. */
static long first_bad_utf8(const char *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t n = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(len - i), &cp);
        if (n <= 0) return (long)i;
        i += (size_t)n;
    }
    return -1;
}

/* Deepest nesting of [ and { outside strings, stopping once above limit. */
static int nesting_depth(const char *s, size_t len, int limit) {
    int depth = 0, max = 0;
    bool in_str = false;
    for (size_t i = 0; i < len && max <= limit; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max) max = depth;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return max;
}

/* The key whose value starts at byte `at` ("temperature" for
 * {"temperature": NaN}), copied into out; "" when there is none. */
static void key_before(const char *s, size_t at, char *out, size_t n) {
    out[0] = 0;
    size_t i = at;
    while (i > 0 && s[i - 1] != ':') {
        if (s[i - 1] != ' ' && s[i - 1] != '\t' && s[i - 1] != '\n' && s[i - 1] != '\r') return;
        i--;
    }
    if (i == 0) return;
    i--; /* the colon */
    while (i > 0 && s[i - 1] != '"') i--;
    if (i == 0) return;
    size_t end = --i;
    while (i > 0 && s[i - 1] != '"') i--;
    size_t k = end - i < n - 1 ? end - i : n - 1;
    memcpy(out, s + i, k);
    out[k] = 0;
}

/* Malformed JSON: name the field when the culprit is a non-JSON number
 * (NaN, Infinity) that some clients write. */
static int malformed(const char *s, size_t len, const char *end, lf_api_error *e) {
    size_t at = end && end >= s && end <= s + len ? (size_t)(end - s) : 0;
    const char *p = s + at;
    size_t left = len - at;
    bool nonfinite = (left >= 3 && !strncmp(p, "NaN", 3)) || (left >= 8 && !strncmp(p, "Infinity", 8)) ||
                     (left >= 9 && !strncmp(p, "-Infinity", 9));
    char key[64];
    key_before(s, at, key, sizeof key);
    if (nonfinite && key[0])
        return BAD(key, "%s: %.*s is not a number (JSON has no NaN or Infinity)", key, (int)(left < 9 ? left : 9), p);
    return lf_api_fail(e, 400, NULL, "invalid_json", "malformed JSON near byte %zu", at);
}

static const cJSON *field(const cJSON *o, const char *name) { return cJSON_GetObjectItemCaseSensitive(o, name); }

/* An optional number field in [lo, hi]; integral when `integer`. Returns 1
 * when present (value in *out), 0 when absent or null, -1 when invalid. */
static int number_field(const cJSON *o, const char *name, double lo, double hi, bool integer, double *out,
                        lf_api_error *e) {
    const cJSON *v = field(o, name);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v)) return BAD(name, "%s must be a %s", name, integer ? "integer" : "number");
    double x = v->valuedouble;
    if (!isfinite(x)) return BAD(name, "%s must be a finite number", name);
    if (integer && x != floor(x)) return BAD(name, "%s must be an integer (got %g)", name, x);
    if (x < lo || x > hi) return BAD(name, "%s must be in [%g, %g] (got %g)", name, lo, hi, x);
    *out = x;
    return 1;
}

/* An optional boolean; param: the field's full name in messages (NULL = name). */
static int bool_field(const cJSON *o, const char *name, const char *param, bool *out, lf_api_error *e) {
    const cJSON *v = field(o, name);
    if (!param) param = name;
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsBool(v)) return BAD(param, "%s must be true or false", param);
    *out = cJSON_IsTrue(v);
    return 1;
}

/* An optional sampling number in [lo, hi], or (lo, hi] / [lo, hi) where
 * open_lo / open_hi. The open ends are checked on the float the sampler
 * keeps, not on the double read: top_p 1e-300 rounds to 0.0f and is refused. */
static int float_field(const cJSON *o, const char *name, double lo, double hi, bool open_lo, bool open_hi,
                       float *out, lf_api_error *e) {
    double x = 0;
    int rc = number_field(o, name, lo, hi, false, &x, e);
    if (rc <= 0) return rc;
    float f = (float)x;
    if ((open_lo && f <= lo) || (open_hi && f >= hi))
        return BAD(name, "%s must be in %c%g, %g%c (got %.17g)", name, open_lo ? '(' : '[', lo, hi,
                   open_hi ? ')' : ']', x);
    *out = f;
    return 1;
}

static int parse_sampling(const cJSON *o, lf_sampling *s, bool *seed_given, lf_api_error *e) {
    double x;
    int rc;
    if (float_field(o, "temperature", 0, 2, false, false, &s->temperature, e) < 0) return -1;
    if (float_field(o, "top_p", 0, 1, true, false, &s->top_p, e) < 0) return -1;
    if ((rc = number_field(o, "top_k", -1, 1e8, true, &x, e)) < 0) return -1;
    if (rc) s->top_k = x < 0 ? 0 : (int)x; /* -1 = off, as vLLM */
    if (float_field(o, "min_p", 0, 1, false, true, &s->min_p, e) < 0) return -1;
    if (float_field(o, "repetition_penalty", 0, 100, true, false, &s->repetition_penalty, e) < 0) return -1;
    if ((rc = number_field(o, "seed", -9007199254740991.0, 9007199254740991.0, true, &x, e)) < 0) return -1;
    if (rc) s->seed = (uint64_t)(int64_t)x;
    *seed_given = rc == 1;
    const char *unsupported[] = {"presence_penalty", "frequency_penalty"};
    for (int i = 0; i < 2; i++) {
        if ((rc = number_field(o, unsupported[i], -2, 2, false, &x, e)) < 0) return -1;
        if (rc && x != 0)
            return lf_api_fail(e, 400, unsupported[i], "unsupported_value",
                               "%s is not supported (only 0); use repetition_penalty", unsupported[i]);
    }
    return 0;
}

static int parse_stop(const cJSON *o, lf_api_request *r, lf_api_error *e) {
    const cJSON *v = field(o, "stop");
    if (!v || cJSON_IsNull(v)) return 0;
    if (cJSON_IsString(v)) {
        if (!v->valuestring[0]) return BAD("stop", "stop strings must not be empty");
        if (strlen(v->valuestring) > LF_API_MAX_STOP_BYTES)
            return BAD("stop", "a stop string has at most %d bytes", LF_API_MAX_STOP_BYTES);
        if (!(r->stop[r->n_stop++] = strdup(v->valuestring))) return lf_api_fail(e, 500, NULL, NULL, "out of memory");
        return 0;
    }
    if (!cJSON_IsArray(v)) return BAD("stop", "stop must be a string or an array of strings");
    if (cJSON_GetArraySize(v) > LF_API_MAX_STOP) return BAD("stop", "stop has at most %d strings", LF_API_MAX_STOP);
    const cJSON *s;
    cJSON_ArrayForEach(s, v) {
        if (!cJSON_IsString(s)) return BAD("stop", "stop must be a string or an array of strings");
        if (!s->valuestring[0]) return BAD("stop", "stop strings must not be empty");
        if (strlen(s->valuestring) > LF_API_MAX_STOP_BYTES)
            return BAD("stop", "a stop string has at most %d bytes", LF_API_MAX_STOP_BYTES);
        if (!(r->stop[r->n_stop++] = strdup(s->valuestring))) return lf_api_fail(e, 500, NULL, NULL, "out of memory");
    }
    return 0;
}

/* kv_policy / kv_budget, with the CLI's rules for --policy / --budget: a
 * known name, a budget only for a budgeted policy and always with one. */
static int parse_policy(const cJSON *o, const lf_api_defaults *d, lf_api_request *r, lf_api_error *e) {
    const cJSON *p = field(o, "kv_policy");
    lf_error err = {{0}};
    double b = 0;
    int has_budget = number_field(o, "kv_budget", 1, 100000000, true, &b, e);
    if (has_budget < 0) return -1;
    r->policy = d->policy;
    r->budget = d->budget;
    if (p && !cJSON_IsNull(p)) {
        if (!cJSON_IsString(p)) return BAD("kv_policy", "kv_policy must be a string");
        if (lf_policy_parse("kv_policy", p->valuestring, &r->policy, &err)) return BAD("kv_policy", "%s", err.msg);
        if (r->policy != d->policy) r->budget = 0;
    }
    if (has_budget) r->budget = (int)b;
    /* the default budget counts as given for the default policy */
    bool budget_given = has_budget || (r->policy != LF_POLICY_FULL && r->budget > 0);
    if (lf_policy_check_budget(r->policy, budget_given, "kv_policy", "kv_budget", &err))
        return BAD("kv_budget", "%s", err.msg);
    if (r->policy == LF_POLICY_FULL) r->budget = 0;
    return 0;
}

/* prompt as token ids: integers >= 0 (the vocabulary is checked later). */
static int parse_prompt_ids(const cJSON *p, lf_api_request *r, lf_api_error *e) {
    int n = cJSON_GetArraySize(p);
    if (!(r->prompt_ids = malloc((size_t)n * sizeof(int)))) return lf_api_fail(e, 500, NULL, NULL, "out of memory");
    const cJSON *v;
    cJSON_ArrayForEach(v, p) {
        double x = cJSON_IsNumber(v) ? v->valuedouble : -1;
        if (!(x >= 0 && x <= 2147483647.0 && x == floor(x)))
            return BAD("prompt", "prompt token %d is not a token id (an integer >= 0)", r->n_prompt_ids);
        r->prompt_ids[r->n_prompt_ids++] = (int)x;
    }
    return 0;
}

/* messages (chat) or prompt (completions). */
static int parse_input(const cJSON *o, lf_api_request *r, lf_api_error *e) {
    if (r->chat) {
        const cJSON *m = field(o, "messages");
        if (!m) return lf_api_fail(e, 400, "messages", "missing_required_parameter", "messages is required");
        if (!cJSON_IsArray(m)) return BAD("messages", "messages must be an array of {\"role\", \"content\"} objects");
        char *json = cJSON_PrintUnformatted(m);
        if (!json) return lf_api_fail(e, 500, NULL, NULL, "out of memory");
        lf_error err = {{0}};
        int rc = lf_chat_messages_parse(json, "messages", &r->msgs, &r->n_msgs, &err);
        free(json);
        if (rc) return BAD("messages", "%s", err.msg);
        return 0;
    }
    const cJSON *p = field(o, "prompt");
    if (!p) return lf_api_fail(e, 400, "prompt", "missing_required_parameter", "prompt is required");
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 && cJSON_IsString(cJSON_GetArrayItem(p, 0)))
        p = cJSON_GetArrayItem(p, 0);
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) > 0 && cJSON_IsNumber(cJSON_GetArrayItem(p, 0)))
        return parse_prompt_ids(p, r, e);
    if (!cJSON_IsString(p))
        return BAD("prompt", "prompt must be a string, an array of one string, or an array of token ids");
    if (!p->valuestring[0]) return BAD("prompt", "prompt is empty");
    if (!(r->prompt = strdup(p->valuestring))) return lf_api_fail(e, 500, NULL, NULL, "out of memory");
    return 0;
}

static int parse_options(const cJSON *o, const lf_api_defaults *d, lf_api_request *r, lf_api_error *e) {
    double x;
    int rc;
    const char *mt = field(o, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    if ((rc = number_field(o, mt, 1, 10000000, true, &x, e)) < 0) return -1;
    if (rc) r->max_tokens = (int)x;
    if ((rc = number_field(o, "n", 1, 1, true, &x, e)) < 0) return -1;
    if (bool_field(o, "stream", NULL, &r->stream, e) < 0) return -1;
    if (bool_field(o, "ignore_eos", NULL, &r->ignore_eos, e) < 0) return -1;
    if (bool_field(o, "return_token_ids", NULL, &r->return_token_ids, e) < 0) return -1;
    bool logprobs = false;
    if (bool_field(o, "logprobs", NULL, &logprobs, e) < 0) return -1;
    if (logprobs) return lf_api_fail(e, 400, "logprobs", "unsupported_value", "logprobs are not supported");
    const cJSON *so = field(o, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so)) return BAD("stream_options", "stream_options must be an object");
        if (bool_field(so, "include_usage", "stream_options.include_usage", &r->include_usage, e) < 0) return -1;
    }
    const cJSON *kw = field(o, "chat_template_kwargs");
    if (kw && !cJSON_IsNull(kw)) {
        if (!cJSON_IsObject(kw)) return BAD("chat_template_kwargs", "chat_template_kwargs must be an object");
        if (bool_field(kw, "enable_thinking", "chat_template_kwargs.enable_thinking", &r->enable_thinking, e) < 0)
            return -1;
    }
    const cJSON *model = field(o, "model");
    if (model && !cJSON_IsNull(model)) {
        if (!cJSON_IsString(model)) return BAD("model", "model must be a string");
        if (d->model_name && strcmp(model->valuestring, d->model_name))
            return lf_api_fail(e, 404, "model", "model_not_found", "model '%.100s' does not exist (this server has '%s')",
                               model->valuestring, d->model_name);
    }
    return 0;
}

int lf_api_parse(const char *body, size_t len, bool chat, const lf_api_defaults *d, lf_api_request *r,
                 lf_api_error *e) {
    memset(r, 0, sizeof *r);
    r->chat = chat;
    r->sampling = d->sampling;
    r->ignore_eos = d->ignore_eos;
    r->enable_thinking = true;
    long bad = first_bad_utf8(body, len);
    if (bad >= 0) return lf_api_fail(e, 400, NULL, "invalid_encoding", "the body is not valid UTF-8 (byte %ld)", bad);
    if (nesting_depth(body, len, LF_API_MAX_DEPTH) > LF_API_MAX_DEPTH)
        return lf_api_fail(e, 400, NULL, "invalid_json", "JSON nested deeper than %d levels", LF_API_MAX_DEPTH);
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!o) return malformed(body, len, end, e);
    int rc = -1;
    if (!cJSON_IsObject(o)) {
        lf_api_fail(e, 400, NULL, "invalid_json", "the body must be a JSON object");
        goto out;
    }
    if (parse_input(o, r, e) || parse_options(o, d, r, e) || parse_sampling(o, &r->sampling, &r->seed_given, e) ||
        parse_stop(o, r, e) || parse_policy(o, d, r, e))
        goto out;
    rc = 0;
out:
    cJSON_Delete(o);
    if (rc) lf_api_request_free(r);
    return rc;
}

void lf_api_request_free(lf_api_request *r) {
    lf_chat_messages_free(r->msgs, r->n_msgs);
    free(r->prompt);
    free(r->prompt_ids);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    memset(r, 0, sizeof *r);
}
