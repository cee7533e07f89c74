/* Jinja filters, tests, methods of str and dict, and the global functions
 * chat templates call (namespace, raise_exception, strftime_now, range,
 * dict), each as Jinja2 / Python / transformers define it. Results built from
 * caller content stay content: slices keep their bytes' marks, and a value
 * transformed as a whole (upper, replace, ...) is content if any of its
 * input was. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "chat/jinja_internal.h"

/* ---- arguments ---------------------------------------------------------------- */
typedef struct args {
    jctx *c;
    int line;
    const char *what;
    jv *v;
    const char **kw;
    int n;
} args;

/* argument `pos` (positional index) or keyword `name`; dflt when absent */
static jv arg(const args *a, int pos, const char *name, jv dflt) {
    int p = 0;
    for (int i = 0; i < a->n; i++) {
        if (a->kw && a->kw[i]) {
            if (name && !strcmp(a->kw[i], name)) return a->v[i];
        } else if (p++ == pos) {
            return a->v[i];
        }
    }
    return dflt;
}

static void check_args(const args *a, int max_pos, const char *const *names) {
    int p = 0;
    for (int i = 0; i < a->n; i++) {
        if (a->kw && a->kw[i]) {
            bool ok = false;
            for (int k = 0; names && names[k]; k++) ok |= !strcmp(names[k], a->kw[i]);
            if (!ok) ja_fail(a->c->a, a->line, "%s got an unexpected keyword argument '%s'", a->what, a->kw[i]);
        } else if (++p > max_pos) {
            ja_fail(a->c->a, a->line, "%s takes at most %d arguments", a->what, max_pos);
        }
    }
}

static jstr *need_str(const args *a, jv v, const char *role) {
    if (v.kind == JV_UNDEF) ja_fail(a->c->a, a->line, "%s: '%s' is undefined", a->what, v.u.un ? v.u.un : role);
    if (v.kind != JV_STR) ja_fail(a->c->a, a->line, "%s: %s must be a string, not %s", a->what, role, jv_type_name(v));
    return v.u.s;
}

static int64_t need_int(const args *a, jv v, const char *role) {
    if (v.kind == JV_BOOL) return v.u.b;
    if (v.kind != JV_INT) ja_fail(a->c->a, a->line, "%s: %s must be an integer, not %s", a->what, role, jv_type_name(v));
    return v.u.i;
}

/* ---- UTF-8 and Python whitespace --------------------------------------------------- */
static int32_t cp_at(const char *s, size_t n, size_t i, size_t *len) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
    if (k <= 0) {
        *len = 1;
        return (unsigned char)s[i];
    }
    *len = (size_t)k;
    return cp;
}

/* str.isspace() */
static bool py_space(int32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

static bool in_chars(int32_t cp, const jstr *chars) {
    if (!chars) return py_space(cp);
    for (size_t i = 0, k; i < chars->n; i += k)
        if (cp_at(chars->p, chars->n, i, &k) == cp) return true;
    return false;
}

/* start of the code point that ends at byte j (not before byte lo); a
 * malformed sequence counts byte by byte */
static size_t cp_back(const char *s, size_t n, size_t lo, size_t j) {
    size_t p = j - 1, k;
    while (p > lo && j - p < 4 && ((unsigned char)s[p] & 0xC0) == 0x80) p--;
    cp_at(s, n, p, &k);
    return p + k == j ? p : j - 1;
}

static void strip_bounds(const char *s, size_t n, const jstr *chars, bool left, bool right, size_t *a, size_t *b) {
    size_t i = *a, j = *b, k;
    while (left && i < j && in_chars(cp_at(s, n, i, &k), chars)) i += k;
    while (right && j > i) {
        size_t p = cp_back(s, n, i, j);
        if (!in_chars(cp_at(s, n, p, &k), chars)) break;
        j = p;
    }
    *a = i;
    *b = j;
}

void lf_jinja_strip_bounds(const char *s, size_t *a, size_t *b, int left, int right) {
    strip_bounds(s, *b, NULL, left, right, a, b);
}

static jstr *strip(jctx *c, const jstr *s, const jstr *chars, bool left, bool right) {
    size_t i = 0, j = s->n;
    strip_bounds(s->p, s->n, chars, left, right, &i, &j);
    return js_slice(c->a, s, i, j);
}

typedef enum { CASE_UPPER, CASE_LOWER, CASE_TITLE, CASE_CAPITALIZE } case_mode;

/* jinja's title: words start after whitespace or one of - ( { [ < */
static jstr *change_case(jctx *c, const jstr *s, case_mode m) {
    jbuf b = {0};
    bool content = s->taint != NULL, start = true;
    for (size_t i = 0, k; i < s->n; i += k) {
        int32_t cp = cp_at(s->p, s->n, i, &k), o = cp;
        switch (m) {
        case CASE_UPPER: o = utf8proc_toupper(cp); break;
        case CASE_LOWER: o = utf8proc_tolower(cp); break;
        case CASE_CAPITALIZE: o = i == 0 ? utf8proc_toupper(cp) : utf8proc_tolower(cp); break;
        case CASE_TITLE:
            o = start ? utf8proc_totitle(cp) : utf8proc_tolower(cp);
            start = py_space(cp) || (cp < 128 && strchr("-({[<", (int)cp) && cp);
            break;
        }
        utf8proc_uint8_t enc[4];
        utf8proc_ssize_t w = utf8proc_encode_char(o, enc);
        jb_put(c->a, &b, (const char *)enc, (size_t)w, content);
    }
    return jb_finish(c->a, &b);
}

static jstr *replace(jctx *c, const jstr *s, const jstr *old, const jstr *nw, int64_t count) {
    jbuf b = {0};
    bool content = s->taint || old->taint || nw->taint;
    size_t i = 0;
    int64_t done = 0;
    if (old->n == 0) { /* Python inserts new between characters */
        for (size_t k; i <= s->n && (count < 0 || done < count); i += k, done++) {
            jb_put(c->a, &b, nw->p, nw->n, content);
            if (i == s->n) {
                i++;
                break;
            }
            cp_at(s->p, s->n, i, &k);
            jb_put(c->a, &b, s->p + i, k, content);
        }
        if (i <= s->n) jb_put(c->a, &b, s->p + i, s->n - i, content);
        return jb_finish(c->a, &b);
    }
    while (i < s->n) {
        if ((count < 0 || done < count) && i + old->n <= s->n && !memcmp(s->p + i, old->p, old->n)) {
            jb_put(c->a, &b, nw->p, nw->n, content);
            i += old->n;
            done++;
        } else {
            jb_put(c->a, &b, s->p + i, 1, content);
            i++;
        }
    }
    return jb_finish(c->a, &b);
}

static jv split(jctx *c, const jstr *s, const jstr *sep, int64_t maxsplit, bool from_right) {
    jv out = jv_list(c->a, 4);
    if (sep) {
        size_t start = 0;
        jlist *l = out.u.l;
        if (!from_right) {
            for (size_t i = 0; i + sep->n <= s->n;) {
                if ((maxsplit < 0 || (int64_t)l->n < maxsplit) && !memcmp(s->p + i, sep->p, sep->n)) {
                    jl_push(c->a, l, jv_strv(js_slice(c->a, s, start, i)));
                    i += sep->n;
                    start = i;
                } else {
                    i++;
                }
            }
            jl_push(c->a, l, jv_strv(js_slice(c->a, s, start, s->n)));
            return out;
        }
        /* rsplit: collect from the right, then reverse */
        size_t end = s->n;
        int64_t done = 0;
        for (size_t i = s->n; i >= sep->n && (maxsplit < 0 || done < maxsplit);) {
            if (!memcmp(s->p + i - sep->n, sep->p, sep->n)) {
                jl_push(c->a, l, jv_strv(js_slice(c->a, s, i, end)));
                i -= sep->n;
                end = i;
                done++;
            } else {
                i--;
            }
        }
        jl_push(c->a, l, jv_strv(js_slice(c->a, s, 0, end)));
        for (size_t i = 0; i < l->n / 2; i++) {
            jv t = l->v[i];
            l->v[i] = l->v[l->n - 1 - i];
            l->v[l->n - 1 - i] = t;
        }
        return out;
    }
    if (from_right && maxsplit >= 0) ja_fail(c->a, 0, "unsupported feature: rsplit() on whitespace with maxsplit");
    size_t i = 0, k;
    while (i < s->n) {
        while (i < s->n && py_space(cp_at(s->p, s->n, i, &k))) i += k;
        if (i >= s->n) break;
        size_t w = i;
        if (maxsplit >= 0 && (int64_t)out.u.l->n >= maxsplit) {
            jstr *rest = strip(c, js_slice(c->a, s, w, s->n), NULL, false, true);
            jl_push(c->a, out.u.l, jv_strv(rest));
            break;
        }
        while (i < s->n && !py_space(cp_at(s->p, s->n, i, &k))) i += k;
        jl_push(c->a, out.u.l, jv_strv(js_slice(c->a, s, w, i)));
    }
    return out;
}

static bool affix(const jstr *s, const jstr *x, bool at_end) {
    if (x->n > s->n) return false;
    return !memcmp(s->p + (at_end ? s->n - x->n : 0), x->p, x->n);
}

static bool affix_any(const args *a, const jstr *s, jv x, bool at_end) {
    if (x.kind == JV_LIST) {
        for (size_t i = 0; i < x.u.l->n; i++)
            if (affix(s, need_str(a, x.u.l->v[i], "prefix"), at_end)) return true;
        return false;
    }
    return affix(s, need_str(a, x, "prefix"), at_end);
}

static size_t cp_count(const jstr *s) {
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++) k += ((unsigned char)s->p[i] & 0xC0) != 0x80;
    return k;
}

static int64_t find(const jstr *s, const jstr *x, bool last) {
    int64_t r = -1;
    for (size_t i = 0; i + x->n <= s->n; i++)
        if (!memcmp(s->p + i, x->p, x->n)) {
            jstr pre = {i, s->p, NULL};
            r = (int64_t)cp_count(&pre);
            if (!last) break;
        }
    return r;
}

/* "{} {0} {name}".format(...) */
static jv format(jctx *c, const args *a, const jstr *s) {
    jbuf b = {0};
    int auto_i = 0;
    for (size_t i = 0; i < s->n; i++) {
        char ch = s->p[i];
        if ((ch == '{' || ch == '}') && i + 1 < s->n && s->p[i + 1] == ch) {
            jb_put_slice(c->a, &b, s, i, i + 1);
            i++;
            continue;
        }
        if (ch != '{') {
            jb_put_slice(c->a, &b, s, i, i + 1);
            continue;
        }
        size_t j = i + 1;
        while (j < s->n && s->p[j] != '}') j++;
        if (j >= s->n) ja_fail(c->a, a->line, "format(): single '{' in the format string");
        char key[64];
        size_t kl = j - i - 1 < sizeof key - 1 ? j - i - 1 : sizeof key - 1;
        memcpy(key, s->p + i + 1, kl);
        key[kl] = 0;
        if (strpbrk(key, ":!.[")) ja_fail(c->a, a->line, "unsupported feature: format spec '{%s}'", key);
        jv v;
        if (!kl)
            v = arg(a, auto_i++, NULL, jv_undef(NULL));
        else if (key[0] >= '0' && key[0] <= '9')
            v = arg(a, atoi(key), NULL, jv_undef(NULL));
        else
            v = arg(a, 1 << 30, key, jv_undef(key));
        if (v.kind == JV_UNDEF) ja_fail(c->a, a->line, "format(): no argument for '{%s}'", key);
        jb_put_str(c->a, &b, jv_to_str(c->a, a->line, v));
        i = j;
    }
    return jv_strv(jb_finish(c->a, &b));
}

/* ---- iteration ------------------------------------------------------------------------ */
jlist *jiter(jctx *c, int line, jv v) {
    switch (v.kind) {
    case JV_LIST: return v.u.l;
    case JV_UNDEF: return jv_list(c->a, 1).u.l;
    case JV_DICT: {
        jlist *l = jv_list(c->a, v.u.d->n).u.l;
        for (size_t i = 0; i < v.u.d->n; i++) jl_push(c->a, l, v.u.d->e[i].k);
        return l;
    }
    case JV_STR: {
        jlist *l = jv_list(c->a, v.u.s->n).u.l;
        for (size_t i = 0, k; i < v.u.s->n; i += k) {
            cp_at(v.u.s->p, v.u.s->n, i, &k);
            jl_push(c->a, l, jv_strv(js_slice(c->a, v.u.s, i, i + k)));
        }
        return l;
    }
    default: ja_fail(c->a, line, "'%s' object is not iterable", jv_type_name(v));
    }
}

static jv items_of(jctx *c, const jdict *d) {
    jv l = jv_list(c->a, d->n);
    for (size_t i = 0; i < d->n; i++) {
        jv p = jv_list(c->a, 2);
        p.u.l->tuple = true;
        jl_push(c->a, p.u.l, d->e[i].k);
        jl_push(c->a, p.u.l, d->e[i].v);
        jl_push(c->a, l.u.l, p);
    }
    return l;
}

/* ---- methods ------------------------------------------------------------------------------ */
static const char *const STR_METHODS[] = {"split",      "rsplit",       "strip",   "lstrip", "rstrip", "startswith",
                                          "endswith",   "upper",        "lower",   "replace", "title", "capitalize",
                                          "find",       "rfind",        "count",   "format", "join",   "isdigit",
                                          "isalpha",    "isspace",      "islower", "isupper", "splitlines",
                                          "removeprefix", "removesuffix", NULL};
static const char *const DICT_METHODS[] = {"items", "keys", "values", "get", NULL};

static bool in_list(const char *const *l, const char *s) {
    for (int i = 0; l[i]; i++)
        if (!strcmp(l[i], s)) return true;
    return false;
}

bool jhas_method(jv self, const char *name) {
    if (self.kind == JV_STR) return in_list(STR_METHODS, name);
    if (self.kind == JV_DICT) return in_list(DICT_METHODS, name);
    return false;
}

static bool all_cp(const jstr *s, int kind) {
    if (!s->n) return false;
    bool cased = false;
    for (size_t i = 0, k; i < s->n; i += k) {
        int32_t cp = cp_at(s->p, s->n, i, &k);
        utf8proc_category_t g = utf8proc_category(cp);
        switch (kind) {
        case 'd': if (g != UTF8PROC_CATEGORY_ND) return false; break;
        case 'a': if (g < UTF8PROC_CATEGORY_LU || g > UTF8PROC_CATEGORY_LO) return false; break;
        case 's': if (!py_space(cp)) return false; break;
        case 'l':
            if (g == UTF8PROC_CATEGORY_LU || g == UTF8PROC_CATEGORY_LT) return false;
            cased |= g == UTF8PROC_CATEGORY_LL;
            break;
        case 'u':
            if (g == UTF8PROC_CATEGORY_LL || g == UTF8PROC_CATEGORY_LT) return false;
            cased |= g == UTF8PROC_CATEGORY_LU;
            break;
        }
    }
    return kind == 'l' || kind == 'u' ? cased : true;
}

static jv join(jctx *c, const args *a, const jstr *sep, jv items, jv attribute) {
    jlist *l = jiter(c, a->line, items);
    jbuf b = {0};
    for (size_t i = 0; i < l->n; i++) {
        if (i) jb_put_str(c->a, &b, sep);
        jv v = l->v[i];
        if (attribute.kind != JV_UNDEF) v = v.kind == JV_DICT ? (jd_get(v.u.d, attribute, &v) ? v : jv_undef(NULL)) : jv_undef(NULL);
        if (v.kind != JV_UNDEF) jb_put_str(c->a, &b, jv_to_str(c->a, a->line, v));
    }
    return jv_strv(jb_finish(c->a, &b));
}

static jv splitlines(jctx *c, const jstr *s) {
    jv l = jv_list(c->a, 4);
    size_t start = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (s->p[i] != '\n' && s->p[i] != '\r') continue;
        jl_push(c->a, l.u.l, jv_strv(js_slice(c->a, s, start, i)));
        if (s->p[i] == '\r' && i + 1 < s->n && s->p[i + 1] == '\n') i++;
        start = i + 1;
    }
    if (start < s->n) jl_push(c->a, l.u.l, jv_strv(js_slice(c->a, s, start, s->n)));
    return l;
}

static jv str_method(const args *a, const jstr *s, const char *m) {
    jctx *c = a->c;
    jv none = jv_none();
    if (!strcmp(m, "split") || !strcmp(m, "rsplit")) {
        static const char *const kw[] = {"sep", "maxsplit", NULL};
        check_args(a, 2, kw);
        jv sep = arg(a, 0, "sep", none);
        const jstr *sp = sep.kind == JV_NONE ? NULL : need_str(a, sep, "sep");
        if (sp && !sp->n) ja_fail(c->a, a->line, "%s: empty separator", a->what);
        return split(c, s, sp, need_int(a, arg(a, 1, "maxsplit", jv_int(-1)), "maxsplit"), m[0] == 'r');
    }
    if (!strcmp(m, "strip") || !strcmp(m, "lstrip") || !strcmp(m, "rstrip")) {
        check_args(a, 1, NULL);
        jv ch = arg(a, 0, NULL, none);
        const jstr *chars = ch.kind == JV_NONE ? NULL : need_str(a, ch, "chars");
        return jv_strv(strip(c, s, chars, m[0] != 'r', m[0] != 'l'));
    }
    if (!strcmp(m, "startswith") || !strcmp(m, "endswith")) {
        check_args(a, 1, NULL);
        return jv_bool(affix_any(a, s, arg(a, 0, NULL, jv_undef("prefix")), m[0] == 'e'));
    }
    if (!strcmp(m, "upper") || !strcmp(m, "lower") || !strcmp(m, "title") || !strcmp(m, "capitalize")) {
        check_args(a, 0, NULL);
        case_mode cm = m[0] == 'u' ? CASE_UPPER : m[0] == 'l' ? CASE_LOWER : m[0] == 't' ? CASE_TITLE : CASE_CAPITALIZE;
        return jv_strv(change_case(c, s, cm));
    }
    if (!strcmp(m, "replace")) {
        check_args(a, 3, NULL);
        return jv_strv(replace(c, s, need_str(a, arg(a, 0, NULL, jv_undef("old")), "old"),
                               need_str(a, arg(a, 1, NULL, jv_undef("new")), "new"),
                               need_int(a, arg(a, 2, NULL, jv_int(-1)), "count")));
    }
    if (!strcmp(m, "find") || !strcmp(m, "rfind")) {
        check_args(a, 1, NULL);
        return jv_int(find(s, need_str(a, arg(a, 0, NULL, jv_undef("sub")), "sub"), m[0] == 'r'));
    }
    if (!strcmp(m, "count")) {
        check_args(a, 1, NULL);
        const jstr *x = need_str(a, arg(a, 0, NULL, jv_undef("sub")), "sub");
        if (!x->n) return jv_int((int64_t)cp_count(s) + 1);
        int64_t k = 0;
        for (size_t i = 0; i + x->n <= s->n;)
            if (!memcmp(s->p + i, x->p, x->n)) {
                k++;
                i += x->n;
            } else {
                i++;
            }
        return jv_int(k);
    }
    if (!strcmp(m, "format")) return format(c, a, s);
    if (!strcmp(m, "join")) {
        check_args(a, 1, NULL);
        return join(c, a, s, arg(a, 0, NULL, jv_undef("iterable")), jv_undef(NULL));
    }
    if (!strcmp(m, "splitlines")) return splitlines(c, s);
    if (!strcmp(m, "removeprefix") || !strcmp(m, "removesuffix")) {
        check_args(a, 1, NULL);
        const jstr *x = need_str(a, arg(a, 0, NULL, jv_undef("affix")), "affix");
        bool end = m[6] == 's';
        if (!affix(s, x, end)) return jv_strv((jstr *)s);
        return jv_strv(end ? js_slice(c->a, s, 0, s->n - x->n) : js_slice(c->a, s, x->n, s->n));
    }
    check_args(a, 0, NULL);
    return jv_bool(all_cp(s, m[2] == 'd' ? 'd' : m[2] == 'a' ? 'a' : m[2] == 's' ? 's' : m[2] == 'l' ? 'l' : 'u'));
}

static jv dict_method(const args *a, const jdict *d, const char *m) {
    jctx *c = a->c;
    if (!strcmp(m, "get")) {
        check_args(a, 2, NULL);
        jv v;
        if (jd_get(d, arg(a, 0, NULL, jv_undef("key")), &v)) return v;
        return arg(a, 1, NULL, jv_none());
    }
    check_args(a, 0, NULL);
    if (!strcmp(m, "items")) return items_of(c, d);
    jv l = jv_list(c->a, d->n);
    for (size_t i = 0; i < d->n; i++) jl_push(c->a, l.u.l, m[0] == 'k' ? d->e[i].k : d->e[i].v);
    return l;
}

jv jmethod_call(jctx *c, int line, const jmethod *m, jv *v, const char **kw, int n) {
    char what[48];
    snprintf(what, sizeof what, "%s()", m->name);
    args a = {c, line, what, v, kw, n};
    if (m->self.kind == JV_STR) return str_method(&a, m->self.u.s, m->name);
    return dict_method(&a, m->self.u.d, m->name);
}

/* ---- names the parser accepts ----------------------------------------------------------------- */
static const char *const FILTERS[] = {"trim", "upper", "lower", "capitalize", "title", "replace", "string",
                                      "safe", "indent", "wordcount", "tojson", "default", "d", "length", "count",
                                      "join", "first", "last", "selectattr", "rejectattr", "select", "reject",
                                      "map", "items", "list", "int", "float", "abs", "unique", "reverse",
                                      "dictsort", NULL};
static const char *const TESTS[] = {"eq", "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt",
                                    "greaterthan", ">", "ge", ">=", "sameas", "in", "defined", "undefined", "none",
                                    "boolean", "true", "false", "integer", "float", "number", "string", "mapping",
                                    "iterable", "sequence", "callable", "escaped", "lower", "upper", "odd", "even",
                                    "divisibleby", NULL};

bool jfilter_known(const char *name) { return in_list(FILTERS, name); }
bool jtest_known(const char *name) { return in_list(TESTS, name); }

/* ---- tests --------------------------------------------------------------------------------- */
static bool is_numeric(jv v) { return v.kind == JV_INT || v.kind == JV_FLOAT || v.kind == JV_BOOL; }

static bool compare_test(jctx *c, int line, const char *name, jv v, jv o, bool *handled) {
    *handled = true;
    if (!strcmp(name, "eq") || !strcmp(name, "equalto") || !strcmp(name, "==")) return jv_eq(v, o);
    if (!strcmp(name, "ne") || !strcmp(name, "!=")) return !jv_eq(v, o);
    if (!strcmp(name, "lt") || !strcmp(name, "lessthan") || !strcmp(name, "<")) return jv_cmp(c->a, line, v, o) < 0;
    if (!strcmp(name, "le") || !strcmp(name, "<=")) return jv_cmp(c->a, line, v, o) <= 0;
    if (!strcmp(name, "gt") || !strcmp(name, "greaterthan") || !strcmp(name, ">")) return jv_cmp(c->a, line, v, o) > 0;
    if (!strcmp(name, "ge") || !strcmp(name, ">=")) return jv_cmp(c->a, line, v, o) >= 0;
    if (!strcmp(name, "sameas")) {
        if (v.kind != o.kind) return false;
        switch (v.kind) {
        case JV_NONE: return true;
        case JV_BOOL: return v.u.b == o.u.b;
        case JV_INT: return v.u.i == o.u.i && v.u.i >= -5 && v.u.i <= 256; /* CPython's cached ints */
        case JV_STR: return v.u.s == o.u.s;
        case JV_LIST: return v.u.l == o.u.l;
        case JV_DICT:
        case JV_NS: return v.u.d == o.u.d;
        default: return false;
        }
    }
    if (!strcmp(name, "in")) {
        if (o.kind == JV_LIST) {
            for (size_t i = 0; i < o.u.l->n; i++)
                if (jv_eq(v, o.u.l->v[i])) return true;
            return false;
        }
        if (o.kind == JV_DICT) {
            jv t;
            return jd_get(o.u.d, v, &t);
        }
        if (o.kind == JV_STR && v.kind == JV_STR)
            return v.u.s->n == 0 || find(o.u.s, v.u.s, false) >= 0;
        ja_fail(c->a, line, "test 'in' needs a container");
    }
    *handled = false;
    return false;
}

bool jtest(jctx *c, int line, const char *name, jv v, jv *args_, int n) {
    jv o = n > 0 ? args_[0] : jv_undef(NULL);
    bool handled;
    bool r = compare_test(c, line, name, v, o, &handled);
    if (handled) return r;
    if (!strcmp(name, "defined")) return v.kind != JV_UNDEF;
    if (!strcmp(name, "undefined")) return v.kind == JV_UNDEF;
    if (!strcmp(name, "none")) return v.kind == JV_NONE;
    if (!strcmp(name, "boolean")) return v.kind == JV_BOOL;
    if (!strcmp(name, "true")) return v.kind == JV_BOOL && v.u.b;
    if (!strcmp(name, "false")) return v.kind == JV_BOOL && !v.u.b;
    if (!strcmp(name, "integer")) return v.kind == JV_INT;
    if (!strcmp(name, "float")) return v.kind == JV_FLOAT;
    if (!strcmp(name, "number")) return is_numeric(v);
    if (!strcmp(name, "string")) return v.kind == JV_STR;
    if (!strcmp(name, "mapping")) return v.kind == JV_DICT;
    if (!strcmp(name, "iterable")) return v.kind == JV_STR || v.kind == JV_LIST || v.kind == JV_DICT || v.kind == JV_UNDEF;
    if (!strcmp(name, "sequence")) return v.kind == JV_STR || v.kind == JV_LIST || v.kind == JV_DICT;
    if (!strcmp(name, "callable")) return v.kind == JV_MACRO || v.kind == JV_METHOD || v.kind == JV_FUNC;
    if (!strcmp(name, "escaped")) return false;
    if (!strcmp(name, "lower") || !strcmp(name, "upper"))
        return v.kind == JV_STR && all_cp(v.u.s, name[0] == 'l' ? 'l' : 'u');
    if (!strcmp(name, "odd") || !strcmp(name, "even") || !strcmp(name, "divisibleby")) {
        if (v.kind != JV_INT && v.kind != JV_BOOL) ja_fail(c->a, line, "test '%s' needs an integer", name);
        int64_t x = v.kind == JV_BOOL ? v.u.b : v.u.i;
        if (name[0] == 'o') return x % 2 != 0;
        if (name[0] == 'e') return x % 2 == 0;
        if (o.kind != JV_INT || o.u.i == 0) ja_fail(c->a, line, "test 'divisibleby' needs a non-zero integer");
        return x % o.u.i == 0;
    }
    ja_fail(c->a, line, "unsupported feature: test '%s'", name);
}

/* ---- filters ------------------------------------------------------------------------------ */
static jv attr_of(jctx *c, int line, jv item, jv attr) {
    /* "a.b" paths as jinja's make_attrgetter splits them; ints index lists */
    if (attr.kind == JV_INT) {
        if (item.kind == JV_LIST && attr.u.i >= 0 && (size_t)attr.u.i < item.u.l->n) return item.u.l->v[attr.u.i];
        return jv_undef(NULL);
    }
    if (attr.kind != JV_STR) ja_fail(c->a, line, "attribute must be a string");
    const char *p = attr.u.s->p;
    jv cur = item;
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        char *key = ja_strndup(c->a, p, n);
        jv nx;
        if ((cur.kind == JV_DICT || cur.kind == JV_NS) && jd_get_s(cur.u.d, key, &nx))
            cur = nx;
        else if (cur.kind == JV_LIST && key[0] >= '0' && key[0] <= '9' && (size_t)atoll(key) < cur.u.l->n)
            cur = cur.u.l->v[atoll(key)];
        else
            return jv_undef(key);
        p += n + (dot ? 1 : 0);
    }
    return cur;
}

static jv select_items(jctx *c, const args *a, jv seq, bool by_attr, bool keep) {
    jlist *l = jiter(c, a->line, seq);
    jv out = jv_list(c->a, l->n);
    int first = by_attr ? 1 : 0;
    jv test = arg(a, first, NULL, jv_undef(NULL));
    const char *tname = NULL;
    if (test.kind != JV_UNDEF) tname = need_str(a, test, "test name")->p;
    int nt = 0;
    for (int i = 0; i < a->n; i++) nt += !a->kw || !a->kw[i];
    int targs = nt - first - 1 > 0 ? nt - first - 1 : 0;
    jv *ta = ja_alloc(c->a, ((size_t)targs + 1) * sizeof *ta);
    for (int i = 0; i < targs; i++) ta[i] = arg(a, first + 1 + i, NULL, jv_undef(NULL));
    for (size_t i = 0; i < l->n; i++) {
        jv v = by_attr ? attr_of(c, a->line, l->v[i], arg(a, 0, NULL, jv_undef("attribute"))) : l->v[i];
        bool ok = tname ? jtest(c, a->line, tname, v, ta, targs) : jv_truthy(v);
        if (ok == keep) jl_push(c->a, out.u.l, l->v[i]);
    }
    return out;
}

static jv map_items(jctx *c, const args *a, jv seq, jframe *f) {
    jlist *l = jiter(c, a->line, seq);
    jv out = jv_list(c->a, l->n);
    jv attribute = arg(a, 1 << 30, "attribute", jv_undef(NULL));
    if (attribute.kind != JV_UNDEF) {
        jv dflt = arg(a, 1 << 30, "default", jv_undef(NULL));
        for (size_t i = 0; i < l->n; i++) {
            jv v = attr_of(c, a->line, l->v[i], attribute);
            jl_push(c->a, out.u.l, v.kind == JV_UNDEF && dflt.kind != JV_UNDEF ? dflt : v);
        }
        return out;
    }
    const char *fname = need_str(a, arg(a, 0, NULL, jv_undef("filter")), "filter name")->p;
    int rest = a->n - 1;
    for (size_t i = 0; i < l->n; i++)
        jl_push(c->a, out.u.l, jfilter(c, a->line, fname, l->v[i], a->v + 1, a->kw ? a->kw + 1 : NULL, rest, f));
    return out;
}

static jv tojson(jctx *c, const args *a, jv v) {
    static const char *const kw[] = {"indent", "ensure_ascii", "separators", "sort_keys", NULL};
    check_args(a, 4, kw);
    jv ind = arg(a, 0, "indent", jv_none());
    jv ea = arg(a, 1, "ensure_ascii", jv_bool(false));
    jv seps = arg(a, 2, "separators", jv_none());
    bool sort = jv_truthy(arg(a, 3, "sort_keys", jv_bool(false)));
    if (jv_truthy(ea)) ja_fail(c->a, a->line, "unsupported feature: tojson(ensure_ascii=True)");
    int indent = -1;
    if (ind.kind != JV_NONE) indent = (int)need_int(a, ind, "indent");
    if (indent > 64) ja_fail(c->a, a->line, "tojson: indent too large");
    const char *isep = indent >= 0 ? "," : ", ", *ksep = ": ";
    if (seps.kind == JV_LIST && seps.u.l->n == 2) {
        isep = need_str(a, seps.u.l->v[0], "separator")->p;
        ksep = need_str(a, seps.u.l->v[1], "separator")->p;
    } else if (seps.kind != JV_NONE) {
        ja_fail(c->a, a->line, "tojson: separators must be a pair of strings");
    }
    jbuf b = {0};
    jv_tojson(c->a, a->line, &b, v, indent < 0 ? -1 : indent, isep, ksep, sort, 0);
    return jv_strv(jb_finish(c->a, &b));
}

static int64_t length(jctx *c, int line, jv v) {
    switch (v.kind) {
    case JV_STR: return (int64_t)cp_count(v.u.s);
    case JV_LIST: return (int64_t)v.u.l->n;
    case JV_DICT:
    case JV_NS: return (int64_t)v.u.d->n;
    case JV_UNDEF: return 0;
    default: ja_fail(c->a, line, "object of type %s has no len()", jv_type_name(v));
    }
}

static jv to_int(jctx *c, const args *a, jv v) {
    jv dflt = arg(a, 0, "default", jv_int(0));
    switch (v.kind) {
    case JV_INT: return v;
    case JV_BOOL: return jv_int(v.u.b);
    case JV_FLOAT: return v.u.f > -9.2e18 && v.u.f < 9.2e18 ? jv_int((int64_t)v.u.f) : dflt;
    case JV_STR: {
        jstr *s = strip(c, v.u.s, NULL, true, true);
        char *end;
        long long x = strtoll(s->p, &end, 10);
        if (s->n && !*end) return jv_int(x);
        double d = strtod(s->p, &end);
        if (s->n && !*end && d > -9.2e18 && d < 9.2e18) return jv_int((int64_t)d);
        return dflt;
    }
    default: return dflt;
    }
}

static jv first_last(jctx *c, int line, jv v, bool last) {
    jlist *l = jiter(c, line, v);
    if (!l->n) return jv_undef(last ? "last" : "first");
    return l->v[last ? l->n - 1 : 0];
}

static jv indent(jctx *c, const args *a, const jstr *s) {
    jv w = arg(a, 0, "width", jv_int(4));
    bool first = jv_truthy(arg(a, 1, "first", jv_bool(false)));
    bool blank = jv_truthy(arg(a, 2, "blank", jv_bool(false)));
    jbuf pad = {0};
    if (w.kind == JV_STR)
        jb_put_str(c->a, &pad, w.u.s);
    else
        for (int64_t i = 0; i < need_int(a, w, "width") && i < 256; i++) jb_put(c->a, &pad, " ", 1, false);
    jstr *p = jb_finish(c->a, &pad);
    jbuf b = {0};
    size_t start = 0;
    for (size_t i = 0; i <= s->n; i++) {
        if (i < s->n && s->p[i] != '\n') continue;
        bool empty = i == start;
        if ((start > 0 || first) && (blank || !empty)) jb_put_str(c->a, &b, p);
        jb_put_slice(c->a, &b, s, start, i < s->n ? i + 1 : i);
        start = i + 1;
    }
    return jv_strv(jb_finish(c->a, &b));
}

static jv unique_or_reverse(jctx *c, int line, jv v, bool unique) {
    if (!unique && v.kind == JV_STR) {
        jlist *l = jiter(c, line, v);
        jbuf b = {0};
        for (size_t i = l->n; i-- > 0;) jb_put_str(c->a, &b, l->v[i].u.s);
        return jv_strv(jb_finish(c->a, &b));
    }
    jlist *l = jiter(c, line, v);
    jv out = jv_list(c->a, l->n);
    for (size_t i = 0; i < l->n; i++) {
        jv x = l->v[unique ? i : l->n - 1 - i];
        bool seen = false;
        for (size_t k = 0; unique && k < out.u.l->n && !seen; k++) seen = jv_eq(out.u.l->v[k], x);
        if (!seen) jl_push(c->a, out.u.l, x);
    }
    return out;
}

static jv string_filters(jctx *c, const args *a, const char *name, jv v, bool *handled) {
    *handled = true;
    if (!strcmp(name, "trim")) {
        jv ch = arg(a, 0, "chars", jv_none());
        return jv_strv(strip(c, jv_to_str(c->a, a->line, v), ch.kind == JV_NONE ? NULL : need_str(a, ch, "chars"), true, true));
    }
    if (!strcmp(name, "upper") || !strcmp(name, "lower") || !strcmp(name, "capitalize") || !strcmp(name, "title")) {
        case_mode m = name[0] == 'u' ? CASE_UPPER : name[0] == 'l' ? CASE_LOWER : name[0] == 'c' ? CASE_CAPITALIZE : CASE_TITLE;
        return jv_strv(change_case(c, jv_to_str(c->a, a->line, v), m));
    }
    if (!strcmp(name, "replace")) {
        jstr *s = jv_to_str(c->a, a->line, v);
        return jv_strv(replace(c, s, jv_to_str(c->a, a->line, arg(a, 0, "old", jv_undef("old"))),
                               jv_to_str(c->a, a->line, arg(a, 1, "new", jv_undef("new"))),
                               need_int(a, arg(a, 2, "count", jv_int(-1)), "count")));
    }
    if (!strcmp(name, "string")) return jv_strv(jv_to_str(c->a, a->line, v));
    if (!strcmp(name, "safe")) return v;
    if (!strcmp(name, "indent")) return indent(c, a, jv_to_str(c->a, a->line, v));
    if (!strcmp(name, "wordcount")) return jv_int((int64_t)split(c, jv_to_str(c->a, a->line, v), NULL, -1, false).u.l->n);
    if (!strcmp(name, "tojson")) return tojson(c, a, v);
    *handled = false;
    return v;
}

jv jfilter(jctx *c, int line, const char *name, jv v, jv *argv_, const char **kw, int n, jframe *f) {
    char what[48];
    snprintf(what, sizeof what, "filter '%s'", name);
    args a = {c, line, what, argv_, kw, n};
    bool handled;
    jctx_step(c, line);
    /* as in Jinja2, most filters take an undefined value as empty; these do not */
    static const char *const strict[] = {"int", "float", "indent", "abs", "dictsort", "tojson", NULL};
    if (v.kind == JV_UNDEF && in_list(strict, name))
        ja_fail(c->a, line, "'%s' is undefined (filter '%s')", v.u.un ? v.u.un : "value", name);
    jv r = string_filters(c, &a, name, v, &handled);
    if (handled) return r;
    if (!strcmp(name, "default") || !strcmp(name, "d")) {
        bool boolean = jv_truthy(arg(&a, 1, "boolean", jv_bool(false)));
        if (v.kind == JV_UNDEF || (boolean && !jv_truthy(v))) return arg(&a, 0, "default_value", jv_cstr(c->a, ""));
        return v;
    }
    if (!strcmp(name, "length") || !strcmp(name, "count")) return jv_int(length(c, line, v));
    if (!strcmp(name, "join")) {
        jv sep = arg(&a, 0, "d", jv_cstr(c->a, ""));
        return join(c, &a, jv_to_str(c->a, line, sep), v, arg(&a, 1, "attribute", jv_undef(NULL)));
    }
    if (!strcmp(name, "first") || !strcmp(name, "last")) return first_last(c, line, v, name[0] == 'l');
    if (!strcmp(name, "selectattr") || !strcmp(name, "rejectattr")) return select_items(c, &a, v, true, name[0] == 's');
    if (!strcmp(name, "select") || !strcmp(name, "reject")) return select_items(c, &a, v, false, name[0] == 's');
    if (!strcmp(name, "map")) return map_items(c, &a, v, f);
    if (!strcmp(name, "items")) {
        if (v.kind == JV_UNDEF) return jv_list(c->a, 1);
        if (v.kind != JV_DICT) ja_fail(c->a, line, "filter 'items' needs a mapping, not %s", jv_type_name(v));
        return items_of(c, v.u.d);
    }
    if (!strcmp(name, "list")) {
        jlist *l = jiter(c, line, v);
        jv out = jv_list(c->a, l->n);
        for (size_t i = 0; i < l->n; i++) jl_push(c->a, out.u.l, l->v[i]);
        return out;
    }
    if (!strcmp(name, "int")) return to_int(c, &a, v);
    if (!strcmp(name, "float")) {
        if (v.kind == JV_FLOAT) return v;
        if (v.kind == JV_INT || v.kind == JV_BOOL) return jv_float(v.kind == JV_INT ? (double)v.u.i : v.u.b);
        if (v.kind == JV_STR) {
            char *end;
            double d = strtod(v.u.s->p, &end);
            if (v.u.s->n && !*end) return jv_float(d);
        }
        return arg(&a, 0, "default", jv_float(0.0));
    }
    if (!strcmp(name, "abs")) {
        if (v.kind == JV_INT) return jv_int(v.u.i < 0 ? -v.u.i : v.u.i);
        if (v.kind == JV_FLOAT) return jv_float(v.u.f < 0 ? -v.u.f : v.u.f);
        ja_fail(c->a, line, "filter 'abs' needs a number");
    }
    if (!strcmp(name, "unique") || !strcmp(name, "reverse")) return unique_or_reverse(c, line, v, name[0] == 'u');
    if (!strcmp(name, "dictsort")) {
        if (v.kind != JV_DICT) ja_fail(c->a, line, "filter 'dictsort' needs a mapping");
        jv items = items_of(c, v.u.d);
        jlist *l = items.u.l;
        for (size_t i = 1; i < l->n; i++) /* insertion sort: small dicts, stable */
            for (size_t j = i; j > 0 && jv_cmp(c->a, line, l->v[j - 1].u.l->v[0], l->v[j].u.l->v[0]) > 0; j--) {
                jv t = l->v[j];
                l->v[j] = l->v[j - 1];
                l->v[j - 1] = t;
            }
        return items;
    }
    ja_fail(c->a, line, "unsupported feature: filter '%s'", name);
}

/* ---- globals ----------------------------------------------------------------------------------- */
static const char *const GLOBALS[] = {"namespace", "raise_exception", "strftime_now", "range", "dict", NULL};

bool jglobal_exists(const char *name) { return in_list(GLOBALS, name); }

static jv range(jctx *c, const args *a) {
    int pos = a->n;
    int64_t start = 0, stop, step = 1;
    if (pos == 1) {
        stop = need_int(a, a->v[0], "stop");
    } else if (pos == 2 || pos == 3) {
        start = need_int(a, a->v[0], "start");
        stop = need_int(a, a->v[1], "stop");
        if (pos == 3) step = need_int(a, a->v[2], "step");
    } else {
        ja_fail(c->a, a->line, "range() takes 1 to 3 arguments");
    }
    if (step == 0) ja_fail(c->a, a->line, "range() step must not be zero");
    jv l = jv_list(c->a, 8);
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
        if (l.u.l->n >= 100000) ja_fail(c->a, a->line, "range() longer than 100000");
        jl_push(c->a, l.u.l, jv_int(i));
    }
    return l;
}

static jv strftime_now(jctx *c, const args *a) {
    check_args(a, 1, NULL);
    const jstr *fmt = need_str(a, arg(a, 0, NULL, jv_undef("format")), "format");
    time_t t = (time_t)c->now;
    struct tm tm;
    if (!localtime_r(&t, &tm)) ja_fail(c->a, a->line, "strftime_now: bad clock");
    char out[512];
    if (fmt->n > 128) ja_fail(c->a, a->line, "strftime_now: format too long");
    size_t n = strftime(out, sizeof out, fmt->p, &tm);
    if (n == 0 && fmt->n) ja_fail(c->a, a->line, "strftime_now: result too long or empty");
    return jv_str(c->a, out, n, false);
}

jv jglobal_call(jctx *c, int line, const char *fn, jv *v, const char **kw, int n) {
    args a = {c, line, fn, v, kw, n};
    if (!strcmp(fn, "raise_exception")) {
        jstr *msg = jv_to_str(c->a, line, arg(&a, 0, NULL, jv_cstr(c->a, "")));
        ja_fail(c->a, line, "raise_exception: %.*s", (int)(msg->n > 400 ? 400 : msg->n), msg->p);
    }
    if (!strcmp(fn, "strftime_now")) return strftime_now(c, &a);
    if (!strcmp(fn, "range")) return range(c, &a);
    /* namespace(...) and dict(...): keyword arguments, and an optional mapping first */
    jv d = jv_dict(c->a, (size_t)n + 1);
    for (int i = 0; i < n; i++) {
        if (kw && kw[i]) {
            if (!strcmp(fn, "namespace") && kw[i][0] == '_') ja_fail(c->a, line, "namespace attribute '%s' is not allowed", kw[i]);
            jd_set(c->a, d.u.d, jv_cstr(c->a, kw[i]), v[i]);
        } else if (i == 0 && v[i].kind == JV_DICT) {
            for (size_t k = 0; k < v[i].u.d->n; k++) jd_set(c->a, d.u.d, v[i].u.d->e[k].k, v[i].u.d->e[k].v);
        } else {
            ja_fail(c->a, line, "%s() takes keyword arguments (and one mapping)", fn);
        }
    }
    if (!strcmp(fn, "namespace")) d.kind = JV_NS;
    return d;
}
