/* Chat prompts: the model's own Jinja template (chat/jinja.h) or a built-in
 * one, rendering exactly what the published Jinja templates render (checked
 * against transformers' apply_chat_template in tests/test_chat.c and
 * tests/test_jinja.c). The rendered text is kept as markup (template text,
 * where special tokens are recognised) and content (message text, where
 * they are not), so that a user cannot inject <|im_start|>system. */
#include "chat/chat.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja.h"
#include "core/error.h"

#define OOM() lf_fail(err, "out of memory")

static const char *const NAMES[LF_CHAT_COUNT] = {
    [LF_CHAT_QWEN3] = "qwen3",  [LF_CHAT_CHATML] = "chatml", [LF_CHAT_DEEPSEEK_R1] = "deepseek-r1",
    [LF_CHAT_LLAMA3] = "llama3", [LF_CHAT_LLAMA2] = "llama2", [LF_CHAT_QWQ] = "qwq",
    [LF_CHAT_TEMPLATE] = "model",
};

static const char NAME_LIST[] = "model, qwen3, qwq, chatml, deepseek-r1, llama3, llama2";

static const char QWEN25_DEFAULT_SYSTEM[] = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

const char *lf_chat_family_name(lf_chat_family f) {
    return f >= 0 && f < LF_CHAT_COUNT ? NAMES[f] : "unknown";
}

/* ---- recognising the family ---------------------------------------------- */
static bool has(const char *hay, const char *needle) { return hay && strstr(hay, needle) != NULL; }

static int need_tokens(const lf_tokenizer *t, lf_chat_family f, lf_error *err) {
    static const char *const chatml[] = {"<|im_start|>", "<|im_end|>", NULL};
    static const char *const ds[] = {"<\xef\xbd\x9cUser\xef\xbd\x9c>", "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>", NULL};
    static const char *const l3[] = {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", NULL};
    const char *const *need = NULL;
    switch (f) {
    case LF_CHAT_QWEN3:
    case LF_CHAT_QWQ:
    case LF_CHAT_CHATML: need = chatml; break;
    case LF_CHAT_DEEPSEEK_R1: need = ds; break;
    case LF_CHAT_LLAMA3: need = l3; break;
    case LF_CHAT_TEMPLATE:
        if (!lf_tokenizer_chat_template(t))
            return lf_fail(err, "chat template 'model': the model has no chat_template (tokenizer_config.json, "
                                "chat_template.jinja or GGUF); choose a built-in one (%s)", NAME_LIST + 7);
        return 0;
    case LF_CHAT_LLAMA2:
        if (!lf_tokenizer_bos_token(t) || !lf_tokenizer_eos_token(t))
            return lf_fail(err, "chat template llama2 needs bos_token and eos_token in tokenizer_config.json");
        return 0;
    default: return lf_fail(err, "unknown chat template family %d", (int)f);
    }
    for (int i = 0; need[i]; i++)
        if (lf_tokenizer_token_to_id(t, need[i]) < 0)
            return lf_fail(err, "chat template %s needs the token %s, which this tokenizer does not have",
                           NAMES[f], need[i]);
    return 0;
}

/* The model's template, parsed (error: the feature and line it lacks). */
static int parse_model_template(const lf_tokenizer *t, lf_jinja **out, lf_error *err) {
    const char *tm = lf_tokenizer_chat_template(t);
    lf_error e;
    if (lf_jinja_parse(tm, strlen(tm), "the model's chat_template", out, &e))
        return lf_fail(err, "%.900s; choose a built-in template with --chat-template NAME", e.msg);
    return 0;
}

int lf_chat_select(const lf_tokenizer *t, const char *override_name, lf_chat_family *out, lf_error *err) {
    if (override_name) {
        for (int f = 0; f < LF_CHAT_COUNT; f++)
            if (!strcmp(override_name, NAMES[f])) {
                if (need_tokens(t, (lf_chat_family)f, err)) return -1;
                *out = (lf_chat_family)f;
                if (f != LF_CHAT_TEMPLATE) return 0;
                lf_jinja *j;
                if (parse_model_template(t, &j, err)) return -1;
                lf_jinja_free(j);
                return 0;
            }
        return lf_fail(err, "unknown chat template '%s' (known: %s)", override_name, NAME_LIST);
    }
    if (lf_tokenizer_chat_template(t)) return lf_chat_select(t, NAMES[LF_CHAT_TEMPLATE], out, err);
    lf_chat_family f;
    if (lf_tokenizer_token_to_id(t, "<\xef\xbd\x9cUser\xef\xbd\x9c>") >= 0) {
        f = LF_CHAT_DEEPSEEK_R1;
    } else if (lf_tokenizer_token_to_id(t, "<|start_header_id|>") >= 0) {
        f = LF_CHAT_LLAMA3;
    } else if (lf_tokenizer_token_to_id(t, "<|im_start|>") >= 0) {
        f = lf_tokenizer_token_to_id(t, "</think>") >= 0 ? LF_CHAT_QWEN3 : LF_CHAT_CHATML;
    } else {
        return lf_fail(err, "no chat_template in tokenizer_config.json and no known chat tokens in the tokenizer; "
                            "choose a template with --chat-template NAME (%s)", NAME_LIST + 7);
    }
    if (need_tokens(t, f, err)) return -1;
    *out = f;
    return 0;
}

bool lf_chat_opens_think(lf_chat_family f, const lf_chat_options *opt) {
    if (opt && !opt->add_generation_prompt) return false;
    /* the model's template: only its rendering tells (lf_chat_prompt.think_open) */
    return f == LF_CHAT_DEEPSEEK_R1 || f == LF_CHAT_QWQ;
}

/* ---- rendering ----------------------------------------------------------- */
typedef struct rend {
    char *p;
    size_t n, cap;
    lf_jinja_range *mk; /* markup ranges */
    size_t nmk, mkcap;
} rend;

static int put(rend *r, const char *s, size_t n) {
    if (r->n + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 256;
        while (cap < r->n + n + 1) cap *= 2;
        char *p = realloc(r->p, cap);
        if (!p) return -1;
        r->p = p;
        r->cap = cap;
    }
    memcpy(r->p + r->n, s, n);
    r->n += n;
    r->p[r->n] = 0;
    return 0;
}

static int markup_n(rend *r, const char *s, size_t n) {
    size_t a = r->n;
    if (put(r, s, n)) return -1;
    if (r->nmk && r->mk[r->nmk - 1].end == a) {
        r->mk[r->nmk - 1].end = r->n;
        return 0;
    }
    if (r->nmk == r->mkcap) {
        size_t cap = r->mkcap ? r->mkcap * 2 : 16;
        lf_jinja_range *m = realloc(r->mk, cap * sizeof *m);
        if (!m) return -1;
        r->mk = m;
        r->mkcap = cap;
    }
    r->mk[r->nmk++] = (lf_jinja_range){a, r->n};
    return 0;
}

static int markup(rend *r, const char *s) { return markup_n(r, s, strlen(s)); }
static int content_n(rend *r, const char *s, size_t n) { return put(r, s, n); }
static int content(rend *r, const char *s) { return put(r, s, strlen(s)); }

/* str.strip(): [*a, *b) of s without surrounding whitespace */
static void py_strip(const char *s, size_t *a, size_t *b) { lf_jinja_strip_bounds(s, a, b, true, true); }

static void strip_nl(const char *s, size_t *a, size_t *b, bool left, bool right) {
    if (left)
        while (*a < *b && s[*a] == '\n') (*a)++;
    if (right)
        while (*b > *a && s[*b - 1] == '\n') (*b)--;
}

static const char *last_of(const char *s, const char *needle) {
    const char *r = NULL, *p = s;
    size_t nl = strlen(needle);
    while ((p = strstr(p, needle))) {
        r = p;
        p += nl;
    }
    return r;
}

static int check_roles(const lf_chat_message *m, int n, lf_error *err) {
    for (int i = 0; i < n; i++) {
        if (!m[i].role || !m[i].content) return lf_fail(err, "message %d has no role or no content", i);
        if (strcmp(m[i].role, "system") && strcmp(m[i].role, "user") && strcmp(m[i].role, "assistant"))
            return lf_fail(err, "message %d: unsupported role '%s' (system, user or assistant)", i, m[i].role);
    }
    return 0;
}

static bool is_role(const lf_chat_message *m, const char *r) { return !strcmp(m->role, r); }

/* One ChatML turn, <|im_start|>role\ntext<|im_end|>\n, all but text markup. */
static int im_turn(rend *r, const char *role, const char *text) {
    return markup(r, "<|im_start|>") | markup(r, role) | markup(r, "\n") | content(r, text) |
           markup(r, "<|im_end|>\n");
}

/* Qwen3 and QwQ: a system message first is the system turn; a later one
 * is a turn like a user's. */
static int qwen_system(rend *r, const lf_chat_message *m, int n) {
    return n > 0 && is_role(&m[0], "system") ? im_turn(r, "system", m[0].content) : 0;
}
static bool qwen_plain_turn(const lf_chat_message *m, int i) {
    return is_role(&m[i], "user") || (is_role(&m[i], "system") && i > 0);
}

/* Qwen3: history turns lose their reasoning; the turns after the last user
 * query keep it in a <think> block. */
static int render_qwen3(rend *r, const lf_chat_message *m, int n, const lf_chat_options *o) {
    int rc = qwen_system(r, m, n);
    int last_query = n - 1;
    for (int i = n - 1; i >= 0; i--) {
        const char *c = m[i].content;
        size_t l = strlen(c);
        bool tool_resp = l >= 31 && !strncmp(c, "<tool_response>", 15) && !strcmp(c + l - 16, "</tool_response>");
        if (is_role(&m[i], "user") && !tool_resp) {
            last_query = i;
            break;
        }
    }
    for (int i = 0; i < n && !rc; i++) {
        const char *c = m[i].content;
        if (qwen_plain_turn(m, i)) {
            rc |= im_turn(r, m[i].role, c);
        } else if (is_role(&m[i], "assistant")) {
            size_t ca = 0, cb = strlen(c), ra = 0, rb = 0;
            const char *close = strstr(c, "</think>");
            if (close) {
                const char *last = last_of(c, "</think>");
                ca = (size_t)(last - c) + 8;
                strip_nl(c, &ca, &cb, true, false);
                /* reasoning: before the first </think>, after the last <think> */
                rb = (size_t)(close - c);
                strip_nl(c, &ra, &rb, false, true);
                const char *open = NULL;
                for (const char *p = c; (p = strstr(p, "<think>")) && p + 7 <= c + rb; p += 7) open = p;
                if (open) ra = (size_t)(open - c) + 7;
                strip_nl(c, &ra, &rb, true, false);
            }
            if (i > last_query && (i == n - 1 || rb > ra)) {
                strip_nl(c, &ra, &rb, true, true);
                strip_nl(c, &ca, &cb, true, false);
                rc |= markup(r, "<|im_start|>assistant\n<think>\n") | content_n(r, c + ra, rb - ra) |
                      markup(r, "\n</think>\n\n") | content_n(r, c + ca, cb - ca);
            } else {
                rc |= markup(r, "<|im_start|>assistant\n") | content_n(r, c + ca, cb - ca);
            }
            rc |= markup(r, "<|im_end|>\n");
        }
    }
    if (o->add_generation_prompt) {
        rc |= markup(r, "<|im_start|>assistant\n");
        if (!o->enable_thinking) rc |= markup(r, "<think>\n\n</think>\n\n");
    }
    return rc;
}

/* QwQ: earlier assistant turns lose their reasoning; the prompt opens
 * <think>. */
static int render_qwq(rend *r, const lf_chat_message *m, int n, const lf_chat_options *o) {
    int rc = qwen_system(r, m, n);
    for (int i = 0; i < n && !rc; i++) {
        const char *c = m[i].content;
        if (qwen_plain_turn(m, i)) {
            rc |= im_turn(r, m[i].role, c);
        } else if (is_role(&m[i], "assistant")) {
            size_t ca = 0, cb = strlen(c);
            const char *last = last_of(c, "</think>");
            if (i != n - 1 && last) {
                ca = (size_t)(last - c) + 8;
                strip_nl(c, &ca, &cb, true, false);
            }
            rc |= markup(r, "<|im_start|>assistant\n") | content_n(r, c + ca, cb - ca) | markup(r, "<|im_end|>\n");
        }
    }
    if (o->add_generation_prompt) rc |= markup(r, "<|im_start|>assistant\n<think>\n");
    return rc;
}

static int render_chatml(rend *r, const lf_tokenizer *t, const lf_chat_message *m, int n, const lf_chat_options *o) {
    int rc = 0;
    if ((n == 0 || !is_role(&m[0], "system")) && has(lf_tokenizer_chat_template(t), QWEN25_DEFAULT_SYSTEM))
        rc |= im_turn(r, "system", QWEN25_DEFAULT_SYSTEM);
    for (int i = 0; i < n && !rc; i++) rc |= im_turn(r, m[i].role, m[i].content);
    if (o->add_generation_prompt) rc |= markup(r, "<|im_start|>assistant\n");
    return rc;
}

static int render_deepseek(rend *r, const lf_tokenizer *t, const lf_chat_message *m, int n,
                           const lf_chat_options *o) {
    int rc = 0;
    const char *bos = lf_tokenizer_bos_token(t);
    if (bos) rc |= markup(r, bos);
    const char *system = NULL;
    for (int i = 0; i < n; i++)
        if (is_role(&m[i], "system")) system = m[i].content;
    if (system) rc |= content(r, system);
    for (int i = 0; i < n && !rc; i++) {
        const char *c = m[i].content;
        if (is_role(&m[i], "user")) {
            rc |= markup(r, "<\xef\xbd\x9cUser\xef\xbd\x9c>") | content(r, c);
        } else if (is_role(&m[i], "assistant")) {
            const char *last = last_of(c, "</think>");
            if (last) c = last + 8;
            rc |= markup(r, "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>") | content(r, c) |
                  markup(r, "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>");
        }
    }
    if (o->add_generation_prompt) rc |= markup(r, "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c><think>\n");
    return rc;
}

static int render_llama3(rend *r, const lf_tokenizer *t, const lf_chat_message *m, int n, const lf_chat_options *o) {
    int rc = 0;
    const char *bos = lf_tokenizer_bos_token(t);
    for (int i = 0; i < n && !rc; i++) {
        if (i == 0 && bos) rc |= markup(r, bos);
        size_t a = 0, b = strlen(m[i].content);
        py_strip(m[i].content, &a, &b);
        rc |= markup(r, "<|start_header_id|>") | markup(r, m[i].role) | markup(r, "<|end_header_id|>\n\n") |
              content_n(r, m[i].content + a, b - a) | markup(r, "<|eot_id|>");
    }
    if (o->add_generation_prompt) rc |= markup(r, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return rc;
}

static int render_llama2(rend *r, const lf_tokenizer *t, const lf_chat_message *m, int n, lf_error *err) {
    const char *bos = lf_tokenizer_bos_token(t);
    const char *eos = lf_tokenizer_eos_token(t);
    const char *system = NULL;
    int first = 0;
    if (n > 0 && is_role(&m[0], "system")) {
        system = m[0].content;
        first = 1;
    }
    int rc = 0;
    for (int i = first; i < n && !rc; i++) {
        bool user = is_role(&m[i], "user");
        if (user != ((i - first) % 2 == 0))
            return lf_fail(err, "llama2 chat template: conversation roles must alternate user/assistant/user/... "
                                "(after an optional system message)");
        size_t l = strlen(m[i].content);
        char *c = NULL;
        if (i == first && system) {
            size_t sl = strlen(system);
            c = malloc(sl + l + 32);
            if (!c) return -1;
            memcpy(c, "<<SYS>>\n", 8);
            memcpy(c + 8, system, sl);
            memcpy(c + 8 + sl, "\n<</SYS>>\n\n", 11);
            memcpy(c + 19 + sl, m[i].content, l + 1);
            l += sl + 19;
        }
        const char *s = c ? c : m[i].content;
        size_t a = 0, b = l;
        py_strip(s, &a, &b);
        if (user)
            rc |= markup(r, bos) | markup(r, "[INST] ") | content_n(r, s + a, b - a) | markup(r, " [/INST]");
        else
            rc |= markup(r, " ") | content_n(r, s + a, b - a) | markup(r, " ") | markup(r, eos);
        free(c);
    }
    return rc;
}

static int render_builtin(lf_chat_family f, const lf_tokenizer *t, const lf_chat_message *msgs, int n,
                          const lf_chat_options *opt, rend *r, lf_error *err) {
    if (check_roles(msgs, n, err)) return -1;
    int rc;
    err->msg[0] = 0;
    switch (f) {
    case LF_CHAT_QWEN3: rc = render_qwen3(r, msgs, n, opt); break;
    case LF_CHAT_QWQ: rc = render_qwq(r, msgs, n, opt); break;
    case LF_CHAT_CHATML: rc = render_chatml(r, t, msgs, n, opt); break;
    case LF_CHAT_DEEPSEEK_R1: rc = render_deepseek(r, t, msgs, n, opt); break;
    case LF_CHAT_LLAMA3: rc = render_llama3(r, t, msgs, n, opt); break;
    case LF_CHAT_LLAMA2: rc = render_llama2(r, t, msgs, n, err); break;
    default: rc = lf_fail(err, "unknown chat template family %d", (int)f);
    }
    if (rc || put(r, "", 0)) {
        if (!err->msg[0]) OOM();
        return -1;
    }
    return 0;
}

/* ---- the model's template ------------------------------------------------- */
static const char *const RESERVED[] = {"messages", "add_generation_prompt", "tools", NULL};

static int add_var(lf_jinja_var *v, int *n, int cap, const char *name, const cJSON *j, int content) {
    for (int i = 0; i < *n; i++)
        if (!strcmp(v[i].name, name)) {
            v[i] = (lf_jinja_var){name, j, content};
            return 0;
        }
    if (*n == cap) return -1;
    v[(*n)++] = (lf_jinja_var){name, j, content};
    return 0;
}

/* The variables transformers passes: messages, add_generation_prompt,
 * bos_token, eos_token, enable_thinking, the keyword arguments, tools when
 * given. Content: everything that came with the request. */
static int template_vars(const lf_tokenizer *t, const cJSON *messages, const lf_chat_options *opt, cJSON *scratch,
                         const cJSON *kwargs, const cJSON *tools, lf_jinja_var *v, int *n, int cap, lf_error *err) {
    cJSON *think = cJSON_AddBoolToObject(scratch, "enable_thinking", opt->enable_thinking);
    cJSON *agp = cJSON_AddBoolToObject(scratch, "add_generation_prompt", opt->add_generation_prompt);
    const char *bos = lf_tokenizer_bos_token(t), *eos = lf_tokenizer_eos_token(t);
    cJSON *jb = bos ? cJSON_AddStringToObject(scratch, "bos_token", bos) : NULL;
    cJSON *je = eos ? cJSON_AddStringToObject(scratch, "eos_token", eos) : NULL;
    if (!think || !agp || (bos && !jb) || (eos && !je)) return OOM();
    *n = 0;
    add_var(v, n, cap, "enable_thinking", think, 0);
    if (jb) add_var(v, n, cap, "bos_token", jb, 0);
    if (je) add_var(v, n, cap, "eos_token", je, 0);
    const cJSON *e;
    cJSON_ArrayForEach(e, kwargs) {
        for (int i = 0; RESERVED[i]; i++)
            if (!strcmp(e->string, RESERVED[i]))
                return lf_fail(err, "chat_template_kwargs: '%s' cannot be set there", e->string);
        if (add_var(v, n, cap, e->string, e, 1)) return lf_fail(err, "chat_template_kwargs: more than %d", cap - 8);
    }
    add_var(v, n, cap, "messages", messages, 1);
    add_var(v, n, cap, "add_generation_prompt", agp, 0);
    if (tools) add_var(v, n, cap, "tools", tools, 1);
    return 0;
}

/* text (may be NULL: *out NULL) as a JSON array or object */
static int parse_json_opt(const char *text, const char *what, bool want_array, cJSON **out, lf_error *err) {
    *out = NULL;
    if (!text) return 0;
    cJSON *j = cJSON_Parse(text);
    if (!j || (want_array ? !cJSON_IsArray(j) : !cJSON_IsObject(j))) {
        cJSON_Delete(j);
        return lf_fail(err, "%s: expected a JSON %s", what, want_array ? "array" : "object");
    }
    *out = j;
    return 0;
}

static int render_template(const lf_tokenizer *t, const cJSON *messages, const lf_chat_options *opt,
                           const lf_chat_template_args *args, rend *r, lf_error *err) {
    static const lf_chat_template_args none = {0};
    if (!args) args = &none;
    lf_jinja *j = NULL;
    cJSON *kwargs = NULL, *tools = NULL, *scratch = NULL;
    lf_jinja_var v[72];
    int n = 0, rc = -1;
    if (!parse_model_template(t, &j, err) && !parse_json_opt(args->kwargs, "chat_template_kwargs", false, &kwargs, err) &&
        !parse_json_opt(args->tools, "tools", true, &tools, err)) {
        scratch = cJSON_CreateObject();
        if (!scratch)
            OOM();
        else if (!template_vars(t, messages, opt, scratch, kwargs, tools, v, &n, 72, err))
            rc = lf_jinja_render(j, v, n, args->now, &r->p, &r->n, &r->mk, &r->nmk, err);
    }
    cJSON_Delete(kwargs);
    cJSON_Delete(tools);
    cJSON_Delete(scratch);
    lf_jinja_free(j);
    return rc;
}

/* lf_chat_message[] as the JSON array the template reads */
static cJSON *messages_json(const lf_chat_message *msgs, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) {
        cJSON *m = cJSON_CreateObject();
        if (!m || !cJSON_AddItemToArray(a, m) || !cJSON_AddStringToObject(m, "role", msgs[i].role) ||
            !cJSON_AddStringToObject(m, "content", msgs[i].content)) {
            if (m && !cJSON_GetArraySize(a)) cJSON_Delete(m);
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

/* ---- encoding -------------------------------------------------------------- */
/* Special tokens are recognised in the markup only. */
static int encode_marked(const lf_tokenizer *t, const rend *r, int **ids, int *n_ids, lf_error *err) {
    lf_token_span *spans = NULL;
    int ns = 0, cap = 0;
    for (size_t k = 0; k < r->nmk; k++) {
        lf_token_span *sp;
        int m;
        if (lf_tokenizer_find_added(t, r->p + r->mk[k].start, r->mk[k].end - r->mk[k].start, &sp, &m, err)) {
            free(spans);
            return -1;
        }
        if (ns + m > cap) {
            cap = (ns + m) * 2;
            lf_token_span *v = realloc(spans, (size_t)cap * sizeof *v);
            if (!v) {
                free(sp);
                free(spans);
                return OOM();
            }
            spans = v;
        }
        for (int i = 0; i < m; i++) {
            spans[ns] = sp[i];
            spans[ns].start += r->mk[k].start;
            spans[ns].end += r->mk[k].start;
            ns++;
        }
        free(sp);
    }
    int rc = lf_tokenizer_encode_spans(t, r->p, r->n, spans, ns, ids, n_ids, err);
    free(spans);
    return rc;
}

/* Does the text end inside a <think> that the markup opened? The last
 * <think> or </think> of the markup decides; contents cannot. */
static bool markup_opens_think(const rend *r) {
    bool open = false;
    for (size_t k = 0; k < r->nmk; k++)
        for (size_t i = r->mk[k].start; i < r->mk[k].end; i++) {
            size_t left = r->mk[k].end - i;
            if (left >= 7 && !memcmp(r->p + i, "<think>", 7)) open = true;
            if (left >= 8 && !memcmp(r->p + i, "</think>", 8)) open = false;
        }
    return open;
}

static int finish_prompt(const lf_tokenizer *t, rend *r, int rc, lf_chat_prompt *out, lf_error *err) {
    if (!rc) rc = encode_marked(t, r, &out->ids, &out->n_ids, err);
    if (!rc) {
        out->think_open = markup_opens_think(r);
        out->text = r->p;
        r->p = NULL;
    }
    free(r->p);
    free(r->mk);
    return rc ? -1 : 0;
}

void lf_chat_prompt_free(lf_chat_prompt *p) {
    if (!p) return;
    free(p->text);
    free(p->ids);
    *p = (lf_chat_prompt){0};
}

static const lf_chat_options *default_options(const lf_chat_options *opt) {
    static const lf_chat_options dflt = {.add_generation_prompt = true, .enable_thinking = true};
    return opt ? opt : &dflt;
}

int lf_chat_render_messages(lf_chat_family f, const lf_tokenizer *t, const lf_chat_message *msgs, int n,
                            const lf_chat_options *opt, lf_chat_prompt *out, lf_error *err) {
    *out = (lf_chat_prompt){0};
    opt = default_options(opt);
    lf_error local;
    if (!err) err = &local;
    if (n < 0 || (n > 0 && !msgs)) return lf_fail(err, "no messages");
    if (need_tokens(t, f, err)) return -1;
    rend r = {0};
    int rc;
    if (f == LF_CHAT_TEMPLATE) {
        if (check_roles(msgs, n, err)) return -1;
        cJSON *m = messages_json(msgs, n);
        rc = m ? render_template(t, m, opt, NULL, &r, err) : OOM();
        cJSON_Delete(m);
    } else {
        rc = render_builtin(f, t, msgs, n, opt, &r, err);
    }
    return finish_prompt(t, &r, rc, out, err);
}

int lf_chat_render_json(lf_chat_family f, const lf_tokenizer *t, const char *messages_json_text, const char *what,
                        const lf_chat_options *opt, const lf_chat_template_args *args, lf_chat_prompt *out,
                        lf_error *err) {
    *out = (lf_chat_prompt){0};
    if (!what) what = "messages";
    if (f != LF_CHAT_TEMPLATE) {
        lf_chat_message *m;
        int n;
        if (lf_chat_messages_parse(messages_json_text, what, &m, &n, err)) return -1;
        int rc = lf_chat_render_messages(f, t, m, n, opt, out, err);
        lf_chat_messages_free(m, n);
        return rc;
    }
    opt = default_options(opt);
    if (need_tokens(t, f, err)) return -1;
    cJSON *j = cJSON_Parse(messages_json_text);
    if (!cJSON_IsArray(j) || !cJSON_GetArraySize(j)) {
        cJSON_Delete(j);
        return lf_fail(err, "%s: expected a non-empty JSON array of messages", what);
    }
    const cJSON *e;
    int k = 0;
    cJSON_ArrayForEach(e, j) {
        if (!cJSON_IsObject(e) || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "role"))) {
            cJSON_Delete(j);
            return lf_fail(err, "%s: message %d is not an object with a string \"role\"", what, k);
        }
        k++;
    }
    rend r = {0};
    int rc = render_template(t, j, opt, args, &r, err);
    cJSON_Delete(j);
    return finish_prompt(t, &r, rc, out, err);
}

int lf_chat_apply(lf_chat_family f, const lf_tokenizer *t, const lf_chat_message *msgs, int n,
                  const lf_chat_options *opt, char **text, int **ids, int *n_ids, lf_error *err) {
    lf_chat_prompt p;
    int rc = lf_chat_render_messages(f, t, msgs, n, opt, &p, err);
    *text = p.text;
    *ids = p.ids;
    *n_ids = p.n_ids;
    return rc;
}

/* ---- messages ------------------------------------------------------------ */
void lf_chat_messages_free(lf_chat_message *msgs, int n) {
    if (!msgs) return;
    for (int i = 0; i < n; i++) {
        free(msgs[i].role);
        free(msgs[i].content);
    }
    free(msgs);
}

/* content: a string, or OpenAI's list of parts [{"type": "text", "text": ...}] */
static char *content_text(const cJSON *c) {
    if (cJSON_IsString(c)) return strdup(c->valuestring);
    if (!cJSON_IsArray(c)) return NULL;
    size_t total = 1;
    const cJSON *p;
    cJSON_ArrayForEach(p, c) {
        const cJSON *tx = cJSON_GetObjectItemCaseSensitive(p, "text");
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(p, "type");
        if (!cJSON_IsString(tx) || (ty && (!cJSON_IsString(ty) || strcmp(ty->valuestring, "text")))) return NULL;
        total += strlen(tx->valuestring);
    }
    char *s = malloc(total);
    if (!s) return NULL;
    s[0] = 0;
    cJSON_ArrayForEach(p, c) strcat(s, cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring);
    return s;
}

int lf_chat_messages_parse(const char *json, const char *what, lf_chat_message **msgs, int *n, lf_error *err) {
    *msgs = NULL;
    *n = 0;
    if (!what) what = "messages";
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(json, &end, 0);
    if (!j) return lf_fail(err, "%s: invalid JSON near byte %zu", what, end ? (size_t)(end - json) : (size_t)0);
    if (!cJSON_IsArray(j)) {
        cJSON_Delete(j);
        return lf_fail(err, "%s: expected a JSON array of {\"role\", \"content\"} objects", what);
    }
    int cnt = cJSON_GetArraySize(j);
    if (cnt == 0) {
        cJSON_Delete(j);
        return lf_fail(err, "%s: no messages", what);
    }
    lf_chat_message *m = calloc((size_t)cnt, sizeof *m);
    if (!m) {
        cJSON_Delete(j);
        return OOM();
    }
    int k = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, j) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(e, "role");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (!cJSON_IsObject(e) || !cJSON_IsString(role)) {
            lf_fail(err, "%s: message %d is not an object with a string \"role\"", what, k);
            goto fail;
        }
        if (strcmp(role->valuestring, "system") && strcmp(role->valuestring, "user") &&
            strcmp(role->valuestring, "assistant")) {
            lf_fail(err, "%s: message %d: unsupported role '%.40s' (system, user or assistant)", what, k,
                    role->valuestring);
            goto fail;
        }
        m[k].role = strdup(role->valuestring);
        m[k].content = content_text(c);
        k++;
        if (!m[k - 1].role || !m[k - 1].content) {
            if (m[k - 1].role && (c == NULL || (!cJSON_IsString(c) && !cJSON_IsArray(c))))
                lf_fail(err, "%s: message %d: \"content\" must be a string", what, k - 1);
            else if (m[k - 1].role && cJSON_IsArray(c))
                lf_fail(err, "%s: message %d: \"content\" parts must be {\"type\": \"text\", \"text\": ...}", what,
                        k - 1);
            else
                OOM();
            goto fail;
        }
    }
    cJSON_Delete(j);
    *msgs = m;
    *n = k;
    return 0;
fail:
    lf_chat_messages_free(m, k);
    cJSON_Delete(j);
    return -1;
}

/* ---- </think> ------------------------------------------------------------ */
static char *dup_range(const char *s, size_t a, size_t b) {
    char *p = malloc(b - a + 1);
    if (!p) return NULL;
    memcpy(p, s + a, b - a);
    p[b - a] = 0;
    return p;
}

int lf_chat_split_think_ex(const char *text, bool think_open, char **reasoning, char **answer) {
    *reasoning = *answer = NULL;
    size_t n = strlen(text);
    const char *close = last_of(text, "</think>");
    size_t ra = 0, rb = 0, aa = 0, ab = 0;
    /* an opening <think>, possibly after whitespace */
    size_t lead = 0;
    while (lead < n && (text[lead] == ' ' || text[lead] == '\n' || text[lead] == '\t' || text[lead] == '\r')) lead++;
    bool opens = !strncmp(text + lead, "<think>", 7);
    if (close) {
        rb = (size_t)(close - text);
        ra = opens && lead + 7 <= rb ? lead + 7 : 0;
        aa = rb + 8;
        ab = n;
    } else if (opens || think_open) {
        ra = opens ? lead + 7 : 0;
        rb = n;
    } else {
        aa = 0;
        ab = n;
    }
    strip_nl(text, &ra, &rb, true, true);
    strip_nl(text, &aa, &ab, true, true);
    *reasoning = dup_range(text, ra, rb);
    *answer = dup_range(text, aa, ab);
    if (!*reasoning || !*answer) {
        free(*reasoning);
        free(*answer);
        *reasoning = *answer = NULL;
        return -1;
    }
    return 0;
}

int lf_chat_split_think(const char *text, char **reasoning, char **answer) {
    return lf_chat_split_think_ex(text, false, reasoning, answer);
}
