/* Jinja evaluator: expressions to values and statements to output, with
 * Jinja2's scoping (a for loop's body and a macro have their own scope; if
 * does not; `set` inside a loop does not leak out, hence namespace()), its
 * Undefined (printing nothing, false, iterable as empty, an error when
 * something is read from it), and the limits of jinja.h. Also the two entry
 * points, lf_jinja_parse and lf_jinja_render. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat/jinja_internal.h"
#include "core/error.h"

#define MAX_ITERATIONS 1000000L
#define MAX_EVAL_DEPTH 1000

enum { CTL_NONE = 0, CTL_BREAK = 1, CTL_CONTINUE = 2 };

/* ---- frames ---------------------------------------------------------------------- */
static jframe *frame_new(jctx *c, jframe *parent) {
    jframe *f = ja_alloc(c->a, sizeof *f);
    f->parent = parent;
    return f;
}

void jframe_set(jctx *c, jframe *f, const char *name, jv v) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->names[i], name)) {
            f->vals[i] = v;
            return;
        }
    if (f->n == f->cap) {
        int cap = f->cap ? f->cap * 2 : 8;
        const char **nn = ja_alloc(c->a, (size_t)cap * sizeof *nn);
        jv *nv = ja_alloc(c->a, (size_t)cap * sizeof *nv);
        if (f->n) {
            memcpy(nn, f->names, (size_t)f->n * sizeof *nn);
            memcpy(nv, f->vals, (size_t)f->n * sizeof *nv);
        }
        f->names = nn;
        f->vals = nv;
        f->cap = cap;
    }
    f->names[f->n] = name;
    f->vals[f->n++] = v;
}

bool jframe_get(const jframe *f, const char *name, jv *out) {
    for (; f; f = f->parent)
        for (int i = f->n - 1; i >= 0; i--)
            if (!strcmp(f->names[i], name)) {
                *out = f->vals[i];
                return true;
            }
    return false;
}

void jctx_step(jctx *c, int line) {
    if (++c->steps > LF_JINJA_MAX_STEPS) ja_fail(c->a, line, "template ran for more than %ld steps", LF_JINJA_MAX_STEPS);
}

/* ---- operators ----------------------------------------------------------------------- */
static bool is_num(jv v) { return v.kind == JV_INT || v.kind == JV_FLOAT || v.kind == JV_BOOL; }
static bool is_intish(jv v) { return v.kind == JV_INT || v.kind == JV_BOOL; }
static int64_t ival(jv v) { return v.kind == JV_BOOL ? v.u.b : v.u.i; }
static double fval(jv v) { return v.kind == JV_FLOAT ? v.u.f : (double)ival(v); }

static _Noreturn void bad_operands(jctx *c, int line, const char *op, jv x, jv y) {
    if (x.kind == JV_UNDEF || y.kind == JV_UNDEF) {
        const char *n = x.kind == JV_UNDEF ? x.u.un : y.u.un;
        ja_fail(c->a, line, "'%s' is undefined", n ? n : "value");
    }
    ja_fail(c->a, line, "unsupported operand types for %s: %s and %s", op, jv_type_name(x), jv_type_name(y));
}

static jv concat_lists(jctx *c, jlist *x, jlist *y) {
    jv r = jv_list(c->a, x->n + y->n);
    for (size_t i = 0; i < x->n; i++) jl_push(c->a, r.u.l, x->v[i]);
    for (size_t i = 0; i < y->n; i++) jl_push(c->a, r.u.l, y->v[i]);
    return r;
}

static jv int_arith(jctx *c, int line, char op, int64_t p, int64_t q) {
    int64_t r = 0;
    bool ovf = false;
    switch (op) {
    case '+': ovf = __builtin_add_overflow(p, q, &r); break;
    case '-': ovf = __builtin_sub_overflow(p, q, &r); break;
    case '*': ovf = __builtin_mul_overflow(p, q, &r); break;
    case 'f': /* floor division */
    case '%':
        if (q == 0) ja_fail(c->a, line, "integer division or modulo by zero");
        if (p == INT64_MIN && q == -1) ovf = true;
        else if (op == 'f') r = p / q - ((p % q != 0) && ((p < 0) != (q < 0)));
        else r = ((p % q) + q) % q;
        break;
    }
    if (ovf) ja_fail(c->a, line, "integer overflow in %c", op);
    return jv_int(r);
}

static jv repeat(jctx *c, int line, jv s, int64_t k) {
    if (k <= 0) return s.kind == JV_STR ? jv_str(c->a, "", 0, false) : jv_list(c->a, 0);
    size_t unit = s.kind == JV_STR ? s.u.s->n : s.u.l->n;
    if (unit && (uint64_t)k > LF_JINJA_MAX_OUTPUT / unit) ja_fail(c->a, line, "repetition too large");
    if (s.kind == JV_STR) {
        jbuf b = {0};
        for (int64_t i = 0; i < k; i++) jb_put_str(c->a, &b, s.u.s);
        return jv_strv(jb_finish(c->a, &b));
    }
    jv r = jv_list(c->a, unit * (size_t)k);
    for (int64_t i = 0; i < k; i++)
        for (size_t j = 0; j < unit; j++) jl_push(c->a, r.u.l, s.u.l->v[j]);
    return r;
}

static jv arith(jctx *c, int line, const char *op, jv x, jv y) {
    if (!strcmp(op, "~")) {
        jbuf b = {0};
        jb_put_str(c->a, &b, jv_to_str(c->a, line, x));
        jb_put_str(c->a, &b, jv_to_str(c->a, line, y));
        return jv_strv(jb_finish(c->a, &b));
    }
    if (!strcmp(op, "+")) {
        if (x.kind == JV_STR && y.kind == JV_STR) {
            jbuf b = {0};
            jb_put_str(c->a, &b, x.u.s);
            jb_put_str(c->a, &b, y.u.s);
            return jv_strv(jb_finish(c->a, &b));
        }
        if (x.kind == JV_LIST && y.kind == JV_LIST) return concat_lists(c, x.u.l, y.u.l);
    }
    if (!strcmp(op, "*")) {
        if ((x.kind == JV_STR || x.kind == JV_LIST) && is_intish(y)) return repeat(c, line, x, ival(y));
        if ((y.kind == JV_STR || y.kind == JV_LIST) && is_intish(x)) return repeat(c, line, y, ival(x));
    }
    if (!is_num(x) || !is_num(y)) bad_operands(c, line, op, x, y);
    bool ints = is_intish(x) && is_intish(y);
    char o = !strcmp(op, "//") ? 'f' : op[0];
    if (o == '/') {
        if (fval(y) == 0.0) ja_fail(c->a, line, "division by zero");
        return jv_float(fval(x) / fval(y));
    }
    if (!strcmp(op, "**")) {
        if (ints && ival(y) >= 0) {
            double r = pow(fval(x), fval(y));
            if (fabs(r) > 9.2e18) ja_fail(c->a, line, "integer overflow in **");
            return jv_int((int64_t)llround(r));
        }
        return jv_float(pow(fval(x), fval(y)));
    }
    if (ints) return int_arith(c, line, o, ival(x), ival(y));
    double p = fval(x), q = fval(y);
    switch (o) {
    case '+': return jv_float(p + q);
    case '-': return jv_float(p - q);
    case '*': return jv_float(p * q);
    case 'f':
        if (q == 0.0) ja_fail(c->a, line, "float floor division by zero");
        return jv_float(floor(p / q));
    case '%':
        if (q == 0.0) ja_fail(c->a, line, "float modulo by zero");
        return jv_float(p - floor(p / q) * q);
    }
    bad_operands(c, line, op, x, y);
}

static bool contains(jctx *c, int line, jv item, jv box) {
    switch (box.kind) {
    case JV_STR:
        if (item.kind != JV_STR) ja_fail(c->a, line, "'in <string>' requires a string, not %s", jv_type_name(item));
        if (!item.u.s->n) return true;
        for (size_t i = 0; i + item.u.s->n <= box.u.s->n; i++)
            if (!memcmp(box.u.s->p + i, item.u.s->p, item.u.s->n)) return true;
        return false;
    case JV_LIST:
        for (size_t i = 0; i < box.u.l->n; i++)
            if (jv_eq(item, box.u.l->v[i])) return true;
        return false;
    case JV_DICT:
    case JV_NS: {
        jv o;
        return jd_get(box.u.d, item, &o);
    }
    case JV_UNDEF: return false;
    default: ja_fail(c->a, line, "argument of type %s is not iterable", jv_type_name(box));
    }
}

static bool compare_op(jctx *c, int line, const char *op, jv x, jv y) {
    if (!strcmp(op, "==")) return jv_eq(x, y);
    if (!strcmp(op, "!=")) return !jv_eq(x, y);
    if (!strcmp(op, "in")) return contains(c, line, x, y);
    if (!strcmp(op, "not in")) return !contains(c, line, x, y);
    if ((x.kind == JV_UNDEF || y.kind == JV_UNDEF)) bad_operands(c, line, op, x, y);
    int r = jv_cmp(c->a, line, x, y);
    if (!strcmp(op, "<")) return r < 0;
    if (!strcmp(op, "<=")) return r <= 0;
    if (!strcmp(op, ">")) return r > 0;
    return r >= 0;
}

/* ---- access ---------------------------------------------------------------------------- */
static _Noreturn void undefined_read(jctx *c, int line, jv v, const char *what) {
    ja_fail(c->a, line, "'%s' is undefined (reading %s of it)", v.u.un ? v.u.un : "value", what);
}

static size_t cp_count(const jstr *s) {
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++) k += ((unsigned char)s->p[i] & 0xC0) != 0x80;
    return k;
}

/* byte offsets of each code point, plus the end */
static size_t *cp_offsets(jctx *c, const jstr *s, size_t *n) {
    size_t k = cp_count(s);
    size_t *o = ja_alloc(c->a, (k + 1) * sizeof *o);
    size_t j = 0;
    for (size_t i = 0; i < s->n; i++)
        if (((unsigned char)s->p[i] & 0xC0) != 0x80) o[j++] = i;
    o[k] = s->n;
    *n = k;
    return o;
}

/* loop.index and friends, computed when read */
static jv loop_attr(jctx *c, int line, const jloop *lp, const char *name) {
    size_t n = lp->items->n, i = lp->i;
    static const char *const names[] = {"index", "index0", "revindex", "revindex0", "first", "last",
                                        "length", "depth", "depth0", "previtem", "nextitem", NULL};
    int k = 0;
    while (names[k] && strcmp(names[k], name)) k++;
    switch (k) {
    case 0: return jv_int((int64_t)i + 1);
    case 1: return jv_int((int64_t)i);
    case 2: return jv_int((int64_t)(n - i));
    case 3: return jv_int((int64_t)(n - i - 1));
    case 4: return jv_bool(i == 0);
    case 5: return jv_bool(i + 1 == n);
    case 6: return jv_int((int64_t)n);
    case 7: return jv_int(1);
    case 8: return jv_int(0);
    case 9: return i ? lp->items->v[i - 1] : jv_undef("previtem");
    case 10: return i + 1 < n ? lp->items->v[i + 1] : jv_undef("nextitem");
    default: ja_fail(c->a, line, "unsupported feature: loop.%s", name);
    }
}

static jv get_attr(jctx *c, int line, jv obj, const char *name) {
    jv out;
    if (name[0] == '_') ja_fail(c->a, line, "access to attribute '%s' is not allowed", name);
    if (obj.kind == JV_UNDEF) {
        char *w = ja_alloc(c->a, strlen(name) + 16);
        strcpy(w, "attribute '");
        strcat(w, name);
        strcat(w, "'");
        undefined_read(c, line, obj, w);
    }
    if (obj.kind == JV_LOOP) return loop_attr(c, line, obj.u.lp, name);
    if (jhas_method(obj, name)) {
        jmethod *m = ja_alloc(c->a, sizeof *m);
        m->self = obj;
        m->name = name;
        return (jv){.kind = JV_METHOD, .u.me = m};
    }
    if ((obj.kind == JV_DICT || obj.kind == JV_NS) && jd_get_s(obj.u.d, name, &out)) return out;
    return jv_undef(name);
}

static jv get_item(jctx *c, int line, jv obj, jv key) {
    jv out;
    switch (obj.kind) {
    case JV_UNDEF: undefined_read(c, line, obj, "an item");
    case JV_DICT:
    case JV_NS:
        if (jd_get(obj.u.d, key, &out)) return out;
        break;
    case JV_LIST:
        if (key.kind == JV_INT || key.kind == JV_BOOL) {
            int64_t i = ival(key), n = (int64_t)obj.u.l->n;
            if (i < 0) i += n;
            if (i >= 0 && i < n) return obj.u.l->v[i];
        }
        break;
    case JV_STR:
        if (key.kind == JV_INT || key.kind == JV_BOOL) {
            size_t n;
            size_t *o = cp_offsets(c, obj.u.s, &n);
            int64_t i = ival(key);
            if (i < 0) i += (int64_t)n;
            if (i >= 0 && i < (int64_t)n) return jv_strv(js_slice(c->a, obj.u.s, o[i], o[i + 1]));
        }
        break;
    default: break;
    }
    if (key.kind == JV_STR && obj.kind != JV_DICT) return get_attr(c, line, obj, key.u.s->p);
    return jv_undef(key.kind == JV_STR ? key.u.s->p : NULL);
}

/* Python slice bounds for length n */
static void slice_bounds(jctx *c, int line, jv lo, jv hi, jv st, int64_t n, int64_t *start, int64_t *stop, int64_t *step) {
    *step = st.kind == JV_NONE || st.kind == JV_UNDEF ? 1 : ival(st);
    if (st.kind != JV_NONE && st.kind != JV_UNDEF && !is_intish(st)) ja_fail(c->a, line, "slice step must be an integer");
    if (*step == 0) ja_fail(c->a, line, "slice step cannot be zero");
    bool neg = *step < 0;
    int64_t lo_d = neg ? n - 1 : 0, hi_d = neg ? -1 : n;
    int64_t *b[2] = {start, stop};
    jv v[2] = {lo, hi};
    int64_t d[2] = {lo_d, hi_d};
    for (int k = 0; k < 2; k++) {
        if (v[k].kind == JV_NONE || v[k].kind == JV_UNDEF) {
            *b[k] = d[k];
            continue;
        }
        if (!is_intish(v[k])) ja_fail(c->a, line, "slice indices must be integers");
        int64_t i = ival(v[k]);
        if (i < 0) i += n;
        if (neg)
            i = i < -1 ? -1 : i > n - 1 ? n - 1 : i;
        else
            i = i < 0 ? 0 : i > n ? n : i;
        *b[k] = i;
    }
}

static jv do_slice(jctx *c, int line, jv obj, jv lo, jv hi, jv st) {
    if (obj.kind == JV_UNDEF) undefined_read(c, line, obj, "a slice");
    if (obj.kind != JV_LIST && obj.kind != JV_STR) ja_fail(c->a, line, "cannot slice a %s", jv_type_name(obj));
    size_t n = 0, *o = NULL;
    if (obj.kind == JV_STR)
        o = cp_offsets(c, obj.u.s, &n);
    else
        n = obj.u.l->n;
    int64_t a, b, s;
    slice_bounds(c, line, lo, hi, st, (int64_t)n, &a, &b, &s);
    if (obj.kind == JV_STR) {
        jbuf buf = {0};
        for (int64_t i = a; s > 0 ? i < b : i > b; i += s) jb_put_slice(c->a, &buf, obj.u.s, o[i], o[i + 1]);
        return jv_strv(jb_finish(c->a, &buf));
    }
    jv r = jv_list(c->a, 0);
    for (int64_t i = a; s > 0 ? i < b : i > b; i += s) jl_push(c->a, r.u.l, obj.u.l->v[i]);
    return r;
}

/* ---- calls --------------------------------------------------------------------------------- */
static void render_body(jctx *c, jframe *f, const jnode *body, jbuf *into) {
    jbuf *saved = c->out;
    into->limit = LF_JINJA_MAX_OUTPUT;
    c->out = into;
    int ctl = CTL_NONE;
    jexec(c, f, body, &ctl);
    c->out = saved;
}

jv jcall_macro(jctx *c, const jmacro *m, jv *args, const char **kw, int n, int line) {
    const jnode *d = m->def;
    if (++c->depth > LF_JINJA_MAX_DEPTH) ja_fail(c->a, line, "macro calls nested more than %d deep", LF_JINJA_MAX_DEPTH);
    jframe *f = frame_new(c, m->closure);
    jbuf out = {0};
    if (d->kind == N_CALLBLOCK) { /* caller() */
        if (n) ja_fail(c->a, line, "unsupported feature: caller() with arguments");
        render_body(c, f, d->b, &out);
        c->depth--;
        return jv_strv(jb_finish(c->a, &out));
    }
    if (c->caller_body) { /* called by {% call %}: caller() renders its body */
        jmacro *cm = ja_alloc(c->a, sizeof *cm);
        cm->def = c->caller_body;
        cm->closure = c->caller_frame;
        jframe_set(c, f, "caller", (jv){.kind = JV_MACRO, .u.m = cm});
        c->caller_body = NULL;
    }
    bool *bound = ja_alloc(c->a, (size_t)d->n_kids + 1);
    int pos = 0;
    for (int i = 0; i < n; i++) {
        int k = -1;
        if (!kw[i]) {
            k = pos++;
            if (k >= d->n_kids) ja_fail(c->a, line, "macro '%s' takes %d arguments, given more", d->name, d->n_kids);
        } else {
            for (int j = 0; j < d->n_kids; j++)
                if (!strcmp(d->kw[j], kw[i])) k = j;
            if (k < 0) ja_fail(c->a, line, "macro '%s' has no parameter '%s'", d->name, kw[i]);
        }
        jframe_set(c, f, d->kw[k], args[i]);
        bound[k] = true;
    }
    for (int j = 0; j < d->n_kids; j++)
        if (!bound[j]) jframe_set(c, f, d->kw[j], d->kids[j] ? jeval(c, f, d->kids[j]) : jv_undef(d->kw[j]));
    render_body(c, f, d->b, &out);
    c->depth--;
    return jv_strv(jb_finish(c->a, &out));
}

typedef struct argv_ {
    jv *v;
    const char **kw;
    int n;
} argv_;

static argv_ eval_args(jctx *c, jframe *f, const jnode *n) {
    argv_ r = {ja_alloc(c->a, ((size_t)n->n_kids + 1) * sizeof(jv)), n->kw, n->n_kids};
    for (int i = 0; i < n->n_kids; i++) r.v[i] = jeval(c, f, n->kids[i]);
    return r;
}

static jv call_value(jctx *c, int line, jv fn, argv_ a, const char *what) {
    switch (fn.kind) {
    case JV_MACRO: return jcall_macro(c, fn.u.m, a.v, a.kw, a.n, line);
    case JV_METHOD: return jmethod_call(c, line, fn.u.me, a.v, a.kw, a.n);
    case JV_FUNC: return jglobal_call(c, line, fn.u.fn, a.v, a.kw, a.n);
    case JV_UNDEF: ja_fail(c->a, line, "'%s' is undefined", fn.u.un ? fn.u.un : what);
    default: ja_fail(c->a, line, "'%s' (a %s) is not callable", what, jv_type_name(fn));
    }
}

static jv eval_call(jctx *c, jframe *f, const jnode *n) {
    jv fn = jeval(c, f, n->a);
    argv_ a = eval_args(c, f, n);
    const char *what = n->a->kind == N_NAME || n->a->kind == N_ATTR ? n->a->name : "value";
    return call_value(c, n->line, fn, a, what);
}

/* ---- expressions ------------------------------------------------------------------------- */
static jv eval_name(jctx *c, jframe *f, const jnode *n) {
    jv v;
    if (jframe_get(f, n->name, &v)) return v;
    if (jglobal_exists(n->name)) return (jv){.kind = JV_FUNC, .u.fn = n->name};
    return jv_undef(n->name);
}

static jv eval_cmp(jctx *c, jframe *f, const jnode *n) {
    jv x = jeval(c, f, n->kids[0]);
    for (int i = 1; i < n->n_kids; i++) {
        jv y = jeval(c, f, n->kids[i]);
        if (!compare_op(c, n->line, n->kw[i], x, y)) return jv_bool(false);
        x = y;
    }
    return jv_bool(true);
}

static jv eval_collection(jctx *c, jframe *f, const jnode *n) {
    if (n->kind == N_LIST) {
        jv l = jv_list(c->a, (size_t)n->n_kids);
        l.u.l->tuple = n->is_tuple;
        for (int i = 0; i < n->n_kids; i++) jl_push(c->a, l.u.l, jeval(c, f, n->kids[i]));
        return l;
    }
    jv d = jv_dict(c->a, (size_t)n->n_kids / 2 + 1);
    for (int i = 0; i + 1 < n->n_kids; i += 2) {
        jv k = jeval(c, f, n->kids[i]);
        if (k.kind == JV_LIST || k.kind == JV_DICT || k.kind == JV_UNDEF)
            ja_fail(c->a, n->line, "unhashable dict key of type %s", jv_type_name(k));
        jd_set(c->a, d.u.d, k, jeval(c, f, n->kids[i + 1]));
    }
    return d;
}

static jv eval_filter(jctx *c, jframe *f, const jnode *n, jv v) {
    argv_ a = eval_args(c, f, n);
    return jfilter(c, n->line, n->name, v, a.v, a.kw, a.n, f);
}

static jv eval_node(jctx *c, jframe *f, const jnode *n) {
    switch (n->kind) {
    case N_LIT: return n->lit;
    case N_NAME: return eval_name(c, f, n);
    case N_ATTR: return get_attr(c, n->line, jeval(c, f, n->a), n->name);
    case N_ITEM: {
        jv o = jeval(c, f, n->a);
        return get_item(c, n->line, o, jeval(c, f, n->b));
    }
    case N_SLICE: {
        jv o = jeval(c, f, n->a), p[3];
        for (int i = 0; i < 3; i++) p[i] = n->kids[i] ? jeval(c, f, n->kids[i]) : jv_none();
        return do_slice(c, n->line, o, p[0], p[1], p[2]);
    }
    case N_CALL: return eval_call(c, f, n);
    case N_FILTER: return eval_filter(c, f, n, jeval(c, f, n->a));
    case N_TEST: {
        jv v = jeval(c, f, n->a);
        argv_ a = eval_args(c, f, n);
        return jv_bool(jtest(c, n->line, n->name, v, a.v, a.n) != n->neg);
    }
    case N_NOT: return jv_bool(!jv_truthy(jeval(c, f, n->a)));
    case N_NEG:
    case N_POS: {
        jv v = jeval(c, f, n->a);
        if (!is_num(v)) ja_fail(c->a, n->line, "bad operand type for unary %c: %s", n->kind == N_NEG ? '-' : '+', jv_type_name(v));
        if (n->kind == N_POS) return v.kind == JV_BOOL ? jv_int(v.u.b) : v;
        if (v.kind == JV_FLOAT) return jv_float(-v.u.f);
        return int_arith(c, n->line, '-', 0, ival(v));
    }
    case N_BIN: {
        jv x = jeval(c, f, n->a);
        return arith(c, n->line, n->name, x, jeval(c, f, n->b));
    }
    case N_AND: {
        jv x = jeval(c, f, n->a);
        return jv_truthy(x) ? jeval(c, f, n->b) : x;
    }
    case N_OR: {
        jv x = jeval(c, f, n->a);
        return jv_truthy(x) ? x : jeval(c, f, n->b);
    }
    case N_COND:
        if (jv_truthy(jeval(c, f, n->b))) return jeval(c, f, n->a);
        return n->else_ ? jeval(c, f, n->else_) : jv_undef(NULL);
    case N_LIST:
    case N_DICT: return eval_collection(c, f, n);
    case N_CMP: return eval_cmp(c, f, n);
    default: ja_fail(c->a, n->line, "internal error: statement where an expression belongs");
    }
}

/* Left-nested chains (a + b + c ..., x|f|g ...) are parsed without
 * recursion, so their depth is bounded here, before the C stack is. */
jv jeval(jctx *c, jframe *f, const jnode *n) {
    jctx_step(c, n->line);
    if (++c->eval_depth > MAX_EVAL_DEPTH) ja_fail(c->a, n->line, "expression nested more than %d deep", MAX_EVAL_DEPTH);
    jv v = eval_node(c, f, n);
    c->eval_depth--;
    return v;
}

/* ---- statements ------------------------------------------------------------------------------ */
static void output(jctx *c, int line, jv v) {
    if (v.kind == JV_UNDEF) return;
    if (v.kind == JV_MACRO || v.kind == JV_METHOD || v.kind == JV_FUNC || v.kind == JV_LOOP)
        ja_fail(c->a, line, "cannot print a %s", jv_type_name(v));
    jb_put_str(c->a, c->out, jv_to_str(c->a, line, v));
}

static void bind_targets(jctx *c, jframe *f, const jnode *n, jv item) {
    if (n->n_targets == 1) {
        jframe_set(c, f, n->targets[0], item);
        return;
    }
    jlist *l = item.kind == JV_LIST ? item.u.l : NULL;
    if (!l || l->n != (size_t)n->n_targets)
        ja_fail(c->a, n->line, "cannot unpack a %s into %d names", jv_type_name(item), n->n_targets);
    for (int i = 0; i < n->n_targets; i++) jframe_set(c, f, n->targets[i], l->v[i]);
}

static void exec_for(jctx *c, jframe *f, const jnode *n, int *ctl) {
    jlist *all = jiter(c, n->line, jeval(c, f, n->a));
    jlist *items = all;
    if (n->c) { /* for x in y if cond */
        items = jv_list(c->a, all->n).u.l;
        for (size_t i = 0; i < all->n; i++) {
            jframe *t = frame_new(c, f);
            bind_targets(c, t, n, all->v[i]);
            if (jv_truthy(jeval(c, t, n->c))) jl_push(c->a, items, all->v[i]);
        }
    }
    /* one scope, emptied for each iteration: nothing set in the body outlives it */
    jframe *it = frame_new(c, f);
    jloop *lp = ja_alloc(c->a, sizeof *lp);
    lp->items = items;
    for (size_t i = 0; i < items->n; i++) {
        if (++c->iterations > MAX_ITERATIONS) ja_fail(c->a, n->line, "more than %ld loop iterations", MAX_ITERATIONS);
        it->n = 0;
        lp->i = i;
        bind_targets(c, it, n, items->v[i]);
        jframe_set(c, it, "loop", (jv){.kind = JV_LOOP, .u.lp = lp});
        int inner = CTL_NONE;
        jexec(c, it, n->b, &inner);
        if (inner == CTL_BREAK) break;
    }
    if (!items->n && n->else_) jexec(c, f, n->else_, ctl);
}

static void exec_set(jctx *c, jframe *f, const jnode *n) {
    jv v;
    if (n->kind == N_SETBLOCK) {
        jbuf b = {0};
        render_body(c, f, n->b, &b);
        v = jv_strv(jb_finish(c->a, &b));
    } else {
        v = jeval(c, f, n->a);
    }
    if (n->to_attr) {
        jv ns;
        if (!jframe_get(f, n->targets[0], &ns) || ns.kind != JV_NS)
            ja_fail(c->a, n->line, "cannot assign attribute '%s' on '%s', which is not a namespace", n->name, n->targets[0]);
        if (n->name[0] == '_') ja_fail(c->a, n->line, "namespace attribute '%s' is not allowed", n->name);
        jd_set(c->a, ns.u.d, jv_cstr(c->a, n->name), v);
        return;
    }
    bind_targets(c, f, n, v);
}

static void exec_callblock(jctx *c, jframe *f, const jnode *n) {
    const jnode *call = n->a;
    jv fn = jeval(c, f, call->a);
    if (fn.kind != JV_MACRO) ja_fail(c->a, n->line, "{%% call %%} needs a macro, not a %s", jv_type_name(fn));
    argv_ a = eval_args(c, f, call);
    c->caller_body = n;
    c->caller_frame = f;
    jv r = jcall_macro(c, fn.u.m, a.v, a.kw, a.n, n->line);
    jb_put_str(c->a, c->out, r.u.s);
}

void jexec(jctx *c, jframe *f, const jnode *n, int *ctl) {
    jctx_step(c, n->line);
    switch (n->kind) {
    case N_BODY:
        for (int i = 0; i < n->n_kids && *ctl == CTL_NONE; i++) jexec(c, f, n->kids[i], ctl);
        return;
    case N_TEXT: jb_put_str(c->a, c->out, n->lit.u.s); return;
    case N_OUT: output(c, n->line, jeval(c, f, n->a)); return;
    case N_IF:
        if (jv_truthy(jeval(c, f, n->a)))
            jexec(c, f, n->b, ctl);
        else if (n->else_)
            jexec(c, f, n->else_, ctl);
        return;
    case N_FOR: exec_for(c, f, n, ctl); return;
    case N_SET:
    case N_SETBLOCK: exec_set(c, f, n); return;
    case N_MACRO: {
        jmacro *m = ja_alloc(c->a, sizeof *m);
        m->def = n;
        m->closure = f;
        jframe_set(c, f, n->name, (jv){.kind = JV_MACRO, .u.m = m});
        return;
    }
    case N_CALLBLOCK: exec_callblock(c, f, n); return;
    case N_FILTERBLOCK: {
        jbuf b = {0};
        render_body(c, f, n->b, &b);
        jv r = eval_filter(c, f, n->a, jv_strv(jb_finish(c->a, &b)));
        output(c, n->line, r);
        return;
    }
    case N_BREAK: *ctl = CTL_BREAK; return;
    case N_CONTINUE: *ctl = CTL_CONTINUE; return;
    default: output(c, n->line, jeval(c, f, n));
    }
}

/* ---- entry points ------------------------------------------------------------------------------ */
struct lf_jinja {
    jarena a;
    jnode *root;
    char *name;
};

static int parse_protected(lf_jinja *t, const char *src, size_t len) {
    jmp_buf jb;
    t->a.jmp = &jb;
    if (setjmp(jb)) return -1;
    jtokens toks = {0};
    jlex(&t->a, src, len, &toks);
    t->root = jparse(&t->a, &toks);
    return 0;
}

int lf_jinja_parse(const char *src, size_t len, const char *name, lf_jinja **out, lf_error *err) {
    *out = NULL;
    if (!name) name = "chat template";
    if (len > LF_JINJA_MAX_SOURCE) return lf_fail(err, "%s: template larger than %u bytes", name, LF_JINJA_MAX_SOURCE);
    lf_jinja *t = calloc(1, sizeof *t);
    if (!t) return lf_fail(err, "out of memory");
    lf_error local;
    t->a.err = err ? err : &local;
    t->a.limit = LF_JINJA_MAX_MEMORY;
    t->name = strdup(name);
    if (!t->name || parse_protected(t, src, len)) {
        if (!t->name) lf_fail(err, "out of memory");
        else lf_fail_prefix(err, "%s", name);
        lf_jinja_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

void lf_jinja_free(lf_jinja *t) {
    if (!t) return;
    ja_free(&t->a);
    free(t->name);
    free(t);
}

typedef struct render_out {
    char **text;
    size_t *len;
    lf_jinja_range **markup;
    size_t *n_markup;
} render_out;

static int finish_output(jbuf *b, render_out o) {
    size_t nr = 0;
    for (size_t i = 0; i < b->n; i++)
        if (!b->taint[i] && (i == 0 || b->taint[i - 1])) nr++;
    char *text = malloc(b->n + 1);
    lf_jinja_range *r = malloc((nr ? nr : 1) * sizeof *r);
    if (!text || !r) {
        free(text);
        free(r);
        return -1;
    }
    if (b->n) memcpy(text, b->p, b->n);
    text[b->n] = 0;
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (b->taint[i]) continue;
        if (i == 0 || b->taint[i - 1]) r[k++].start = i;
        r[k - 1].end = i + 1;
    }
    *o.text = text;
    *o.len = b->n;
    *o.markup = r;
    *o.n_markup = nr;
    return 0;
}

static int render_protected(const lf_jinja *t, jarena *a, const lf_jinja_var *vars, int n_vars, int64_t now,
                            render_out o) {
    jmp_buf jb;
    a->jmp = &jb;
    if (setjmp(jb)) return -1;
    jctx c = {.a = a, .now = now ? now : (int64_t)time(NULL)};
    c.globals = frame_new(&c, NULL);
    for (int i = 0; i < n_vars; i++)
        jframe_set(&c, c.globals, vars[i].name, jv_from_json(a, vars[i].json, vars[i].content, 0));
    jframe *top = frame_new(&c, c.globals);
    jbuf out = {0};
    out.limit = LF_JINJA_MAX_OUTPUT;
    c.out = &out;
    int ctl = CTL_NONE;
    jexec(&c, top, t->root, &ctl);
    if (out.n == 0) jb_put(a, &out, "", 0, false);
    if (finish_output(&out, o)) ja_fail(a, 0, "out of memory");
    return 0;
}

int lf_jinja_render(const lf_jinja *t, const lf_jinja_var *vars, int n_vars, int64_t now, char **text,
                    size_t *len, lf_jinja_range **markup, size_t *n_markup, lf_error *err) {
    *text = NULL;
    *len = 0;
    *markup = NULL;
    *n_markup = 0;
    lf_error local;
    jarena a = {.err = err ? err : &local, .limit = LF_JINJA_MAX_MEMORY};
    int rc = render_protected(t, &a, vars, n_vars, now, (render_out){text, len, markup, n_markup});
    ja_free(&a);
    if (rc) return lf_fail_prefix(err, "%s", t->name);
    return 0;
}
