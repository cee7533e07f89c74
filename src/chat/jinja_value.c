/* Jinja values: the arena they live in, strings that remember which bytes
 * came from caller content, lists and dicts (insertion-ordered, as Python's),
 * and the conversions Python would make: truth, equality, ordering, str(),
 * repr() and json.dumps(). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja_internal.h"
#include "core/error.h"

/* ---- arena ---------------------------------------------------------------- */
struct jarena_block {
    jarena_block *next;
    size_t used, cap;
    max_align_t data[];
};

void ja_fail(jarena *a, int line, const char *fmt, ...) {
    char msg[sizeof a->err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line > 0)
        lf_fail(a->err, "line %d: %s", line, msg);
    else
        lf_fail(a->err, "%s", msg);
    longjmp(*a->jmp, 1);
}

void *ja_alloc(jarena *a, size_t n) {
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    if (n == 0) n = sizeof(max_align_t);
    jarena_block *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        if (a->used + cap > a->limit) ja_fail(a, 0, "template used more than %zu MiB of memory", a->limit >> 20);
        b = malloc(sizeof *b + cap);
        if (!b) ja_fail(a, 0, "out of memory");
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
        a->used += cap;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

char *ja_strndup(jarena *a, const char *s, size_t n) {
    char *p = ja_alloc(a, n + 1);
    memcpy(p, s, n);
    return p;
}

void ja_free(jarena *a) {
    jarena_block *b = a->head;
    while (b) {
        jarena_block *nx = b->next;
        free(b);
        b = nx;
    }
    a->head = NULL;
    a->used = 0;
}

/* ---- string builder --------------------------------------------------------- */
static void jb_grow(jarena *a, jbuf *b, size_t add) {
    if (add > a->limit) ja_fail(a, 0, "string longer than %zu MiB", a->limit >> 20);
    if (b->limit && b->n + add > b->limit) ja_fail(a, 0, "output longer than %zu bytes", b->limit);
    if (b->n + add + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + add + 1) cap *= 2;
    char *p = ja_alloc(a, cap);
    uint8_t *t = ja_alloc(a, cap);
    if (b->n) {
        memcpy(p, b->p, b->n);
        memcpy(t, b->taint, b->n);
    }
    b->p = p;
    b->taint = t;
    b->cap = cap;
}

void jb_put(jarena *a, jbuf *b, const char *s, size_t n, bool content) {
    jb_grow(a, b, n);
    memcpy(b->p + b->n, s, n);
    memset(b->taint + b->n, content ? 1 : 0, n);
    if (content && n) b->any_taint = true;
    b->n += n;
}

void jb_put_slice(jarena *a, jbuf *b, const jstr *s, size_t i, size_t j) {
    jb_grow(a, b, j - i);
    memcpy(b->p + b->n, s->p + i, j - i);
    if (s->taint) {
        memcpy(b->taint + b->n, s->taint + i, j - i);
        for (size_t k = i; k < j && !b->any_taint; k++) b->any_taint = s->taint[k];
    } else {
        memset(b->taint + b->n, 0, j - i);
    }
    b->n += j - i;
}

void jb_put_str(jarena *a, jbuf *b, const jstr *s) { jb_put_slice(a, b, s, 0, s->n); }

jstr *jb_finish(jarena *a, jbuf *b) {
    jstr *s = ja_alloc(a, sizeof *s);
    s->n = b->n;
    s->p = b->n ? b->p : ja_alloc(a, 1);
    s->p[s->n] = 0;
    s->taint = b->any_taint ? b->taint : NULL;
    return s;
}

/* ---- constructors ------------------------------------------------------------ */
jv jv_undef(const char *name) { return (jv){.kind = JV_UNDEF, .u.un = name}; }
jv jv_none(void) { return (jv){.kind = JV_NONE}; }
jv jv_bool(bool b) { return (jv){.kind = JV_BOOL, .u.b = b}; }
jv jv_int(int64_t i) { return (jv){.kind = JV_INT, .u.i = i}; }
jv jv_float(double f) { return (jv){.kind = JV_FLOAT, .u.f = f}; }
jv jv_strv(jstr *s) { return (jv){.kind = JV_STR, .u.s = s}; }

jv jv_str(jarena *a, const char *s, size_t n, bool content) {
    jstr *r = ja_alloc(a, sizeof *r);
    r->n = n;
    r->p = ja_strndup(a, s, n);
    if (content && n) {
        r->taint = ja_alloc(a, n);
        memset(r->taint, 1, n);
    }
    return jv_strv(r);
}

jv jv_cstr(jarena *a, const char *s) { return jv_str(a, s, strlen(s), false); }

jv jv_list(jarena *a, size_t cap) {
    jlist *l = ja_alloc(a, sizeof *l);
    l->cap = cap ? cap : 4;
    l->v = ja_alloc(a, l->cap * sizeof *l->v);
    return (jv){.kind = JV_LIST, .u.l = l};
}

jv jv_dict(jarena *a, size_t cap) {
    jdict *d = ja_alloc(a, sizeof *d);
    d->cap = cap ? cap : 4;
    d->e = ja_alloc(a, d->cap * sizeof *d->e);
    return (jv){.kind = JV_DICT, .u.d = d};
}

/* nesting of a value: 0 for scalars, 1 + that of the deepest element */
static int jv_depth(jv v) {
    if (v.kind == JV_LIST) return v.u.l->depth;
    if (v.kind == JV_DICT || v.kind == JV_NS) return v.u.d->depth;
    return 0;
}

/* containers remember their nesting, so that no walk over a value (str(),
 * ==, ordering, tojson) recurses deeper than JV_MAX_NEST */
static void note_depth(jarena *a, int *depth, jv child) {
    int d = jv_depth(child) + 1;
    if (d > JV_MAX_NEST) ja_fail(a, 0, "value nested more than %d deep", JV_MAX_NEST);
    if (d > *depth) *depth = d;
}

void jl_push(jarena *a, jlist *l, jv v) {
    note_depth(a, &l->depth, v);
    if (l->n == l->cap) {
        jv *nv = ja_alloc(a, 2 * l->cap * sizeof *nv);
        memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        l->cap *= 2;
    }
    l->v[l->n++] = v;
}

/* the last entry with key k (JSON objects may repeat a key; the last wins) */
static jkv *jd_find(const jdict *d, jv k) {
    for (size_t i = d->n; i-- > 0;)
        if (jv_eq(d->e[i].k, k)) return &d->e[i];
    return NULL;
}

/* add without looking for k first (JSON objects: linear, however many keys) */
static void jd_append(jarena *a, jdict *d, jv k, jv v) {
    note_depth(a, &d->depth, k);
    note_depth(a, &d->depth, v);
    if (d->n == d->cap) {
        jkv *ne = ja_alloc(a, 2 * d->cap * sizeof *ne);
        memcpy(ne, d->e, d->n * sizeof *ne);
        d->e = ne;
        d->cap *= 2;
    }
    d->e[d->n++] = (jkv){k, v};
}

void jd_set(jarena *a, jdict *d, jv k, jv v) {
    jkv *e = jd_find(d, k);
    if (e) {
        note_depth(a, &d->depth, v);
        e->v = v;
        return;
    }
    jd_append(a, d, k, v);
}

bool jd_get(const jdict *d, jv k, jv *out) {
    jkv *e = jd_find(d, k);
    if (e) *out = e->v;
    return e != NULL;
}

bool jd_get_s(const jdict *d, const char *k, jv *out) {
    size_t n = strlen(k);
    for (size_t i = d->n; i-- > 0;) {
        jv key = d->e[i].k;
        if (key.kind == JV_STR && key.u.s->n == n && !memcmp(key.u.s->p, k, n)) {
            *out = d->e[i].v;
            return true;
        }
    }
    return false;
}

jstr *js_slice(jarena *a, const jstr *s, size_t i, size_t j) {
    jbuf b = {0};
    jb_put_slice(a, &b, s, i, j);
    return jb_finish(a, &b);
}

/* ---- Python semantics ---------------------------------------------------------- */
const char *jv_type_name(jv v) {
    static const char *const names[] = {"undefined", "NoneType", "bool",      "int",    "float",  "str",
                                        "list",      "dict",     "namespace", "macro", "method", "function", "loop"};
    return names[v.kind];
}

bool jv_truthy(jv v) {
    switch (v.kind) {
    case JV_UNDEF:
    case JV_NONE: return false;
    case JV_BOOL: return v.u.b;
    case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0.0;
    case JV_STR: return v.u.s->n > 0;
    case JV_LIST: return v.u.l->n > 0;
    case JV_DICT: return v.u.d->n > 0;
    default: return true;
    }
}

static bool is_num(jv v) { return v.kind == JV_BOOL || v.kind == JV_INT || v.kind == JV_FLOAT; }
static double num(jv v) { return v.kind == JV_FLOAT ? v.u.f : v.kind == JV_INT ? (double)v.u.i : v.u.b; }

bool jv_eq(jv a, jv b) {
    if (is_num(a) && is_num(b)) {
        if (a.kind != JV_FLOAT && b.kind != JV_FLOAT) return (a.kind == JV_INT ? a.u.i : a.u.b) == (b.kind == JV_INT ? b.u.i : b.u.b);
        return num(a) == num(b);
    }
    if (a.kind != b.kind) return false;
    switch (a.kind) {
    case JV_UNDEF:
    case JV_NONE: return true;
    case JV_STR: return a.u.s->n == b.u.s->n && !memcmp(a.u.s->p, b.u.s->p, a.u.s->n);
    case JV_LIST:
        if (a.u.l->n != b.u.l->n) return false;
        for (size_t i = 0; i < a.u.l->n; i++)
            if (!jv_eq(a.u.l->v[i], b.u.l->v[i])) return false;
        return true;
    case JV_DICT:
        if (a.u.d->n != b.u.d->n) return false;
        for (size_t i = 0; i < a.u.d->n; i++) {
            jv o;
            if (!jd_get(b.u.d, a.u.d->e[i].k, &o) || !jv_eq(a.u.d->e[i].v, o)) return false;
        }
        return true;
    case JV_NS: return a.u.d == b.u.d;
    case JV_MACRO: return a.u.m == b.u.m;
    case JV_FUNC: return a.u.fn == b.u.fn;
    default: return false;
    }
}

int jv_cmp(jarena *a, int line, jv x, jv y) {
    if (is_num(x) && is_num(y)) {
        if (x.kind != JV_FLOAT && y.kind != JV_FLOAT) {
            int64_t p = x.kind == JV_INT ? x.u.i : x.u.b, q = y.kind == JV_INT ? y.u.i : y.u.b;
            return (p > q) - (p < q);
        }
        double p = num(x), q = num(y);
        return (p > q) - (p < q);
    }
    if (x.kind == JV_STR && y.kind == JV_STR) {
        size_t n = x.u.s->n < y.u.s->n ? x.u.s->n : y.u.s->n;
        int c = memcmp(x.u.s->p, y.u.s->p, n); /* UTF-8 byte order = code point order */
        if (c) return c;
        return (x.u.s->n > y.u.s->n) - (x.u.s->n < y.u.s->n);
    }
    if (x.kind == JV_LIST && y.kind == JV_LIST) {
        for (size_t i = 0; i < x.u.l->n && i < y.u.l->n; i++)
            if (!jv_eq(x.u.l->v[i], y.u.l->v[i])) return jv_cmp(a, line, x.u.l->v[i], y.u.l->v[i]);
        return (x.u.l->n > y.u.l->n) - (x.u.l->n < y.u.l->n);
    }
    ja_fail(a, line, "cannot order %s and %s", jv_type_name(x), jv_type_name(y));
}

/* repr(float): the shortest digits that read back, Python's layout */
void py_float_repr(double f, char *out, size_t cap) {
    if (isnan(f)) {
        snprintf(out, cap, "nan");
        return;
    }
    if (isinf(f)) {
        snprintf(out, cap, f < 0 ? "-inf" : "inf");
        return;
    }
    char e[40];
    int p = 1;
    for (; p <= 17; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, f);
        if (strtod(e, NULL) == f) break;
    }
    /* e = [-]d.ddde[+-]xx */
    char digits[24];
    int nd = 0;
    const char *q = e;
    bool neg = *q == '-';
    if (neg) q++;
    for (; *q && *q != 'e'; q++)
        if (*q != '.') digits[nd++] = *q;
    int exp = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    char *o = out;
    size_t left = cap;
#define EMIT(...)                                          \
    do {                                                   \
        int w_ = snprintf(o, left, __VA_ARGS__);           \
        if (w_ < 0 || (size_t)w_ >= left) return;          \
        o += w_;                                           \
        left -= (size_t)w_;                                \
    } while (0)
    if (neg) EMIT("-");
    if (exp < -4 || exp >= 16) {
        EMIT("%c", digits[0]);
        if (nd > 1) EMIT(".%s", digits + 1);
        EMIT("e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    } else if (exp < 0) {
        EMIT("0.");
        for (int i = 0; i < -exp - 1; i++) EMIT("0");
        EMIT("%s", digits);
    } else {
        for (int i = 0; i <= exp; i++) EMIT("%c", i < nd ? digits[i] : '0');
        EMIT(".");
        if (nd > exp + 1)
            EMIT("%s", digits + exp + 1);
        else
            EMIT("0");
    }
#undef EMIT
}

static void put_c(jarena *a, jbuf *b, const char *s) { jb_put(a, b, s, strlen(s), false); }

static void repr_str(jarena *a, jbuf *b, const jstr *s) {
    bool sq = memchr(s->p, '\'', s->n) != NULL, dq = memchr(s->p, '"', s->n) != NULL;
    char q = sq && !dq ? '"' : '\'';
    bool content = s->taint != NULL;
    jb_put(a, b, &q, 1, false);
    for (size_t i = 0; i < s->n; i++) {
        unsigned char c = (unsigned char)s->p[i];
        char esc[8];
        if (c == '\\' || c == (unsigned char)q) {
            esc[0] = '\\';
            esc[1] = (char)c;
            jb_put(a, b, esc, 2, content);
        } else if (c == '\n') {
            jb_put(a, b, "\\n", 2, content);
        } else if (c == '\r') {
            jb_put(a, b, "\\r", 2, content);
        } else if (c == '\t') {
            jb_put(a, b, "\\t", 2, content);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\x%02x", c);
            jb_put(a, b, esc, 4, content);
        } else {
            jb_put(a, b, s->p + i, 1, content);
        }
    }
    jb_put(a, b, &q, 1, false);
}

static void scalar_str(jarena *a, int line, jbuf *b, jv v) {
    char tmp[64];
    switch (v.kind) {
    case JV_UNDEF: return;
    case JV_NONE: put_c(a, b, "None"); return;
    case JV_BOOL: put_c(a, b, v.u.b ? "True" : "False"); return;
    case JV_INT: snprintf(tmp, sizeof tmp, "%lld", (long long)v.u.i); put_c(a, b, tmp); return;
    case JV_FLOAT: py_float_repr(v.u.f, tmp, sizeof tmp); put_c(a, b, tmp); return;
    default: ja_fail(a, line, "cannot convert a %s to a string", jv_type_name(v));
    }
}

void jv_repr(jarena *a, int line, jbuf *b, jv v) {
    switch (v.kind) {
    case JV_STR: repr_str(a, b, v.u.s); return;
    case JV_LIST:
        put_c(a, b, v.u.l->tuple ? "(" : "[");
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i) put_c(a, b, ", ");
            jv_repr(a, line, b, v.u.l->v[i]);
        }
        put_c(a, b, v.u.l->tuple ? (v.u.l->n == 1 ? ",)" : ")") : "]");
        return;
    case JV_DICT:
        put_c(a, b, "{");
        for (size_t i = 0; i < v.u.d->n; i++) {
            if (i) put_c(a, b, ", ");
            jv_repr(a, line, b, v.u.d->e[i].k);
            put_c(a, b, ": ");
            jv_repr(a, line, b, v.u.d->e[i].v);
        }
        put_c(a, b, "}");
        return;
    default: scalar_str(a, line, b, v);
    }
}

jstr *jv_to_str(jarena *a, int line, jv v) {
    if (v.kind == JV_STR) return v.u.s;
    jbuf b = {0};
    jv_repr(a, line, &b, v);
    return jb_finish(a, &b);
}

/* ---- json.dumps ----------------------------------------------------------------- */
static void json_str(jarena *a, jbuf *b, const jstr *s) {
    bool content = s->taint != NULL;
    jb_put(a, b, "\"", 1, false);
    for (size_t i = 0; i < s->n; i++) {
        unsigned char c = (unsigned char)s->p[i];
        const char *e = NULL;
        char tmp[8];
        switch (c) {
        case '"': e = "\\\""; break;
        case '\\': e = "\\\\"; break;
        case '\n': e = "\\n"; break;
        case '\r': e = "\\r"; break;
        case '\t': e = "\\t"; break;
        case '\b': e = "\\b"; break;
        case '\f': e = "\\f"; break;
        default:
            if (c < 0x20) {
                snprintf(tmp, sizeof tmp, "\\u%04x", c);
                e = tmp;
            }
        }
        if (e)
            jb_put(a, b, e, strlen(e), content);
        else
            jb_put(a, b, s->p + i, 1, content);
    }
    jb_put(a, b, "\"", 1, false);
}

static void json_newline(jarena *a, jbuf *b, int indent, int depth) {
    put_c(a, b, "\n");
    for (int i = 0; i < indent * depth; i++) put_c(a, b, " ");
}

static int key_order(const void *x, const void *y) {
    const jkv *p = x, *q = y;
    size_t n = p->k.u.s->n < q->k.u.s->n ? p->k.u.s->n : q->k.u.s->n;
    int c = memcmp(p->k.u.s->p, q->k.u.s->p, n);
    return c ? c : (p->k.u.s->n > q->k.u.s->n) - (p->k.u.s->n < q->k.u.s->n);
}

static void json_dict(jarena *a, int line, jbuf *b, const jdict *d, int indent, const char *isep, const char *ksep,
                      bool sort_keys, int depth) {
    if (!d->n) {
        put_c(a, b, "{}");
        return;
    }
    jkv *e = d->e;
    if (sort_keys) {
        e = ja_alloc(a, d->n * sizeof *e);
        memcpy(e, d->e, d->n * sizeof *e);
        for (size_t i = 0; i < d->n; i++)
            if (e[i].k.kind != JV_STR) ja_fail(a, line, "tojson: sort_keys needs string keys");
        qsort(e, d->n, sizeof *e, key_order);
    }
    put_c(a, b, "{");
    for (size_t i = 0; i < d->n; i++) {
        if (i) put_c(a, b, isep);
        if (indent >= 0) json_newline(a, b, indent, depth + 1);
        jv k = e[i].k;
        if (k.kind == JV_STR)
            json_str(a, b, k.u.s);
        else if (k.kind == JV_NONE || k.kind == JV_BOOL || k.kind == JV_INT || k.kind == JV_FLOAT) {
            jbuf t = {0};
            jv_tojson(a, line, &t, k, -1, isep, ksep, sort_keys, depth + 1);
            put_c(a, b, "\"");
            jb_put_str(a, b, jb_finish(a, &t));
            put_c(a, b, "\"");
        } else
            ja_fail(a, line, "tojson: keys must be str, int, float, bool or None, not %s", jv_type_name(k));
        put_c(a, b, ksep);
        jv_tojson(a, line, b, e[i].v, indent, isep, ksep, sort_keys, depth + 1);
    }
    if (indent >= 0) json_newline(a, b, indent, depth);
    put_c(a, b, "}");
}

void jv_tojson(jarena *a, int line, jbuf *b, jv v, int indent, const char *isep, const char *ksep, bool sort_keys,
               int depth) {
    char tmp[64];
    if (depth > LF_JINJA_MAX_DEPTH) ja_fail(a, line, "tojson: value nested too deeply");
    switch (v.kind) {
    case JV_NONE: put_c(a, b, "null"); return;
    case JV_BOOL: put_c(a, b, v.u.b ? "true" : "false"); return;
    case JV_INT: snprintf(tmp, sizeof tmp, "%lld", (long long)v.u.i); put_c(a, b, tmp); return;
    case JV_FLOAT:
        if (isnan(v.u.f))
            put_c(a, b, "NaN");
        else if (isinf(v.u.f))
            put_c(a, b, v.u.f < 0 ? "-Infinity" : "Infinity");
        else {
            py_float_repr(v.u.f, tmp, sizeof tmp);
            put_c(a, b, tmp);
        }
        return;
    case JV_STR: json_str(a, b, v.u.s); return;
    case JV_LIST:
        if (!v.u.l->n) {
            put_c(a, b, "[]");
            return;
        }
        put_c(a, b, "[");
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i) put_c(a, b, isep);
            if (indent >= 0) json_newline(a, b, indent, depth + 1);
            jv_tojson(a, line, b, v.u.l->v[i], indent, isep, ksep, sort_keys, depth + 1);
        }
        if (indent >= 0) json_newline(a, b, indent, depth);
        put_c(a, b, "]");
        return;
    case JV_DICT: json_dict(a, line, b, v.u.d, indent, isep, ksep, sort_keys, depth); return;
    default: ja_fail(a, line, "tojson: Object of type %s is not JSON serializable", jv_type_name(v));
    }
}

/* ---- from cJSON ----------------------------------------------------------------- */
static bool known_role(const char *s) {
    static const char *const roles[] = {"system", "user", "assistant", "tool", "developer", "function", NULL};
    for (int i = 0; roles[i]; i++)
        if (!strcmp(s, roles[i])) return true;
    return false;
}

jv jv_from_json(jarena *a, const void *json, bool content, int depth) {
    const cJSON *j = json;
    if (depth > LF_JINJA_MAX_DEPTH) ja_fail(a, 0, "variable nested too deeply");
    if (!j || cJSON_IsNull(j)) return jv_none();
    if (cJSON_IsBool(j)) return jv_bool(cJSON_IsTrue(j));
    if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        if (d == floor(d) && fabs(d) < 9007199254740992.0) return jv_int((int64_t)d);
        return jv_float(d);
    }
    if (cJSON_IsString(j)) return jv_str(a, j->valuestring, strlen(j->valuestring), content);
    if (cJSON_IsArray(j)) {
        jv l = jv_list(a, (size_t)cJSON_GetArraySize(j));
        const cJSON *e;
        cJSON_ArrayForEach(e, j) jl_push(a, l.u.l, jv_from_json(a, e, content, depth + 1));
        return l;
    }
    if (cJSON_IsObject(j)) {
        jv d = jv_dict(a, (size_t)cJSON_GetArraySize(j));
        const cJSON *e;
        cJSON_ArrayForEach(e, j) {
            bool role = !strcmp(e->string, "role") && cJSON_IsString(e) && known_role(e->valuestring);
            jd_append(a, d.u.d, jv_str(a, e->string, strlen(e->string), content),
                      jv_from_json(a, e, content && !role, depth + 1));
        }
        return d;
    }
    ja_fail(a, 0, "unsupported JSON value");
}
