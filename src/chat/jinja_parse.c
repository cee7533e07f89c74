/* Jinja parser: tokens to a tree of statements and expressions, with
 * Jinja2's grammar and precedence (condexpr < or < and < not < comparisons
 * < + - < ~ < * / // % < ** < unary < postfix (attribute, item, slice, call)
 * < filters and tests). A tag outside the supported subset is an error
 * naming it and its line. */
#include <string.h>

#include "chat/jinja_internal.h"

#define MAX_NEST 200

typedef struct parser {
    jarena *a;
    const jtokens *t;
    size_t pos;
    int depth;
} parser;

static const jtok *peek(parser *P) { return &P->t->v[P->pos]; }
static const jtok *peek2(parser *P) { return P->pos + 1 < P->t->n ? &P->t->v[P->pos + 1] : peek(P); }
static const jtok *next(parser *P) {
    const jtok *t = peek(P);
    if (t->kind != TK_EOF) P->pos++;
    return t;
}
static bool tok_is(const jtok *t, jtok_kind k, const char *s) {
    return t->kind == k && (!s || (t->n == strlen(s) && !memcmp(t->s, s, t->n)));
}
static bool is_op(parser *P, const char *s) { return tok_is(peek(P), TK_OP, s); }
static bool is_name(parser *P, const char *s) { return tok_is(peek(P), TK_NAME, s); }

static const char *tok_desc(parser *P, const jtok *t) {
    switch (t->kind) {
    case TK_EOF: return "end of template";
    case TK_DATA: return "template text";
    case TK_VBEGIN: return "'{{'";
    case TK_VEND: return "'}}'";
    case TK_BBEGIN: return "'{%'";
    case TK_BEND: return "'%}'";
    case TK_STRING: return "a string";
    case TK_INT:
    case TK_FLOAT: return "a number";
    default: {
        char *s = ja_alloc(P->a, t->n + 3);
        s[0] = '\'';
        memcpy(s + 1, t->s, t->n);
        s[t->n + 1] = '\'';
        return s;
    }
    }
}

static _Noreturn void expected(parser *P, const char *what) {
    const jtok *t = peek(P);
    ja_fail(P->a, t->line, "expected %s, found %s", what, tok_desc(P, t));
}

static void expect_op(parser *P, const char *s) {
    if (!is_op(P, s)) {
        char w[16] = "'";
        strncat(w, s, 8);
        strcat(w, "'");
        expected(P, w);
    }
    next(P);
}

static const char *name_str(parser *P, const jtok *t) { return ja_strndup(P->a, t->s, t->n); }

static const char *expect_name(parser *P) {
    if (peek(P)->kind != TK_NAME) expected(P, "a name");
    return name_str(P, next(P));
}

static jnode *node(parser *P, jnode_kind k, int line) {
    jnode *n = ja_alloc(P->a, sizeof *n);
    n->kind = k;
    n->line = line;
    return n;
}

/* growable child list */
typedef struct kids {
    jnode **v;
    const char **kw;
    int n, cap;
} kids;

static void kid_push(parser *P, kids *k, jnode *n, const char *kw) {
    if (k->n == k->cap) {
        int cap = k->cap ? k->cap * 2 : 4;
        jnode **v = ja_alloc(P->a, (size_t)cap * sizeof *v);
        const char **w = ja_alloc(P->a, (size_t)cap * sizeof *w);
        if (k->n) {
            memcpy(v, k->v, (size_t)k->n * sizeof *v);
            memcpy(w, k->kw, (size_t)k->n * sizeof *w);
        }
        k->v = v;
        k->kw = w;
        k->cap = cap;
    }
    k->v[k->n] = n;
    k->kw[k->n++] = kw;
}

static void kids_to(jnode *n, const kids *k) {
    n->kids = k->v;
    n->kw = k->kw;
    n->n_kids = k->n;
}

static jnode *expr(parser *P);
static jnode *or_expr(parser *P);
static jnode *unary(parser *P, bool with_filter);

static void enter(parser *P) {
    if (++P->depth > MAX_NEST) ja_fail(P->a, peek(P)->line, "template nested too deeply");
}

/* (args) with name=value keywords */
static void call_args(parser *P, jnode *n) {
    kids k = {0};
    expect_op(P, "(");
    while (!is_op(P, ")")) {
        if (k.n) expect_op(P, ",");
        if (is_op(P, ")")) break;
        if (is_op(P, "*") || is_op(P, "**")) ja_fail(P->a, peek(P)->line, "unsupported feature: *args / **kwargs in a call");
        const char *kw = NULL;
        if (peek(P)->kind == TK_NAME && tok_is(peek2(P), TK_OP, "=")) {
            kw = expect_name(P);
            next(P);
        }
        kid_push(P, &k, expr(P), kw);
    }
    next(P);
    kids_to(n, &k);
}

static jnode *literal(parser *P, jv v, int line) {
    jnode *n = node(P, N_LIT, line);
    n->lit = v;
    return n;
}

static jnode *seq_literal(parser *P, const char *close, int line) {
    jnode *n = node(P, N_LIST, line);
    kids k = {0};
    while (!is_op(P, close)) {
        if (k.n) expect_op(P, ",");
        if (is_op(P, close)) break;
        kid_push(P, &k, expr(P), NULL);
    }
    next(P);
    kids_to(n, &k);
    return n;
}

static jnode *dict_literal(parser *P, int line) {
    jnode *n = node(P, N_DICT, line);
    kids k = {0};
    while (!is_op(P, "}")) {
        if (k.n) expect_op(P, ",");
        if (is_op(P, "}")) break;
        kid_push(P, &k, expr(P), NULL);
        expect_op(P, ":");
        kid_push(P, &k, expr(P), NULL);
    }
    next(P);
    kids_to(n, &k);
    return n;
}

static jnode *primary(parser *P) {
    const jtok *t = next(P);
    switch (t->kind) {
    case TK_NAME: {
        static const char *const T[] = {"true", "True"}, *const F[] = {"false", "False"}, *const N[] = {"none", "None"};
        for (int i = 0; i < 2; i++) {
            if (tok_is(t, TK_NAME, T[i])) return literal(P, jv_bool(true), t->line);
            if (tok_is(t, TK_NAME, F[i])) return literal(P, jv_bool(false), t->line);
            if (tok_is(t, TK_NAME, N[i])) return literal(P, jv_none(), t->line);
        }
        jnode *n = node(P, N_NAME, t->line);
        n->name = name_str(P, t);
        return n;
    }
    case TK_STRING: {
        jbuf b = {0};
        jb_put(P->a, &b, t->s, t->n, false);
        while (peek(P)->kind == TK_STRING) {
            const jtok *u = next(P);
            jb_put(P->a, &b, u->s, u->n, false);
        }
        return literal(P, jv_strv(jb_finish(P->a, &b)), t->line);
    }
    case TK_INT: return literal(P, jv_int(t->i), t->line);
    case TK_FLOAT: return literal(P, jv_float(t->f), t->line);
    case TK_OP:
        if (tok_is(t, TK_OP, "(")) {
            if (is_op(P, ")")) {
                next(P);
                jnode *n = node(P, N_LIST, t->line);
                n->is_tuple = true;
                return n;
            }
            jnode *e = expr(P);
            if (is_op(P, ",")) { /* a tuple: a list printed as (a, b) */
                jnode *n = node(P, N_LIST, t->line);
                n->is_tuple = true;
                kids k = {0};
                kid_push(P, &k, e, NULL);
                while (is_op(P, ",")) {
                    next(P);
                    if (is_op(P, ")")) break;
                    kid_push(P, &k, expr(P), NULL);
                }
                kids_to(n, &k);
                e = n;
            }
            expect_op(P, ")");
            return e;
        }
        if (tok_is(t, TK_OP, "[")) return seq_literal(P, "]", t->line);
        if (tok_is(t, TK_OP, "{")) return dict_literal(P, t->line);
        /* fallthrough */
    default: P->pos--; expected(P, "an expression");
    }
}

static jnode *subscript(parser *P, jnode *obj) {
    const jtok *t = next(P);
    if (tok_is(t, TK_OP, ".")) {
        const jtok *u = next(P);
        jnode *n;
        if (u->kind == TK_NAME) {
            n = node(P, N_ATTR, u->line);
            n->name = name_str(P, u);
        } else if (u->kind == TK_INT) {
            n = node(P, N_ITEM, u->line);
            n->b = literal(P, jv_int(u->i), u->line);
        } else {
            P->pos--;
            expected(P, "an attribute name");
        }
        n->a = obj;
        return n;
    }
    /* [ index ] or [ a : b : c ] */
    jnode *parts[3] = {NULL, NULL, NULL};
    int k = 0;
    bool is_slice = false;
    for (;;) {
        if (!is_op(P, ":") && !is_op(P, "]")) parts[k] = expr(P);
        if (is_op(P, ":")) {
            is_slice = true;
            if (++k > 2) expected(P, "']'");
            next(P);
            continue;
        }
        break;
    }
    expect_op(P, "]");
    jnode *n = node(P, is_slice ? N_SLICE : N_ITEM, t->line);
    n->a = obj;
    if (is_slice) {
        n->kids = ja_alloc(P->a, 3 * sizeof *n->kids);
        memcpy(n->kids, parts, sizeof parts);
        n->n_kids = 3;
    } else {
        if (!parts[0]) expected(P, "an index");
        n->b = parts[0];
    }
    return n;
}

/* n(arguments) */
static jnode *call_of(parser *P, jnode *n) {
    jnode *c = node(P, N_CALL, peek(P)->line);
    c->a = n;
    call_args(P, c);
    return c;
}

/* A filter applied to a: its name (a known filter) and arguments. */
static jnode *filter_of(parser *P, int line, jnode *a) {
    jnode *f = node(P, N_FILTER, line);
    f->name = expect_name(P);
    if (!jfilter_known(f->name)) ja_fail(P->a, line, "unsupported feature: filter '%s'", f->name);
    f->a = a;
    if (is_op(P, "(")) call_args(P, f);
    return f;
}

static jnode *postfix(parser *P, jnode *n) {
    for (;;) {
        if (is_op(P, ".") || is_op(P, "[")) {
            n = subscript(P, n);
        } else if (is_op(P, "(")) {
            n = call_of(P, n);
        } else {
            return n;
        }
    }
}

static bool test_arg_follows(parser *P) {
    const jtok *t = peek(P);
    if (t->kind == TK_STRING || t->kind == TK_INT || t->kind == TK_FLOAT) return true;
    if (t->kind == TK_OP) return tok_is(t, TK_OP, "(") || tok_is(t, TK_OP, "[") || tok_is(t, TK_OP, "{");
    if (t->kind == TK_NAME)
        return !tok_is(t, TK_NAME, "else") && !tok_is(t, TK_NAME, "or") && !tok_is(t, TK_NAME, "and") &&
               !tok_is(t, TK_NAME, "if") && !tok_is(t, TK_NAME, "in") && !tok_is(t, TK_NAME, "is") &&
               !tok_is(t, TK_NAME, "not");
    return false;
}

static jnode *filter_or_test(parser *P, jnode *n) {
    for (;;) {
        if (is_op(P, "|")) {
            n = filter_of(P, next(P)->line, n);
        } else if (is_name(P, "is")) {
            int line = next(P)->line;
            jnode *t = node(P, N_TEST, line);
            if (is_name(P, "not")) {
                next(P);
                t->neg = true;
            }
            t->name = expect_name(P);
            if (!jtest_known(t->name)) ja_fail(P->a, line, "unsupported feature: test '%s'", t->name);
            t->a = n;
            if (is_op(P, "(")) {
                call_args(P, t);
            } else if (test_arg_follows(P)) {
                kids k = {0};
                kid_push(P, &k, postfix(P, primary(P)), NULL);
                kids_to(t, &k);
            }
            n = t;
        } else if (is_op(P, "(")) {
            n = call_of(P, n);
        } else {
            return n;
        }
    }
}

static jnode *unary(parser *P, bool with_filter) {
    enter(P);
    jnode *n;
    if (is_op(P, "-") || is_op(P, "+")) {
        const jtok *t = next(P);
        n = node(P, tok_is(t, TK_OP, "-") ? N_NEG : N_POS, t->line);
        n->a = unary(P, false);
    } else {
        n = primary(P);
    }
    n = postfix(P, n);
    if (with_filter) n = filter_or_test(P, n);
    P->depth--;
    return n;
}

static jnode *binary(parser *P, jnode *l, const jtok *op, jnode *r) {
    jnode *n = node(P, N_BIN, op->line);
    n->name = ja_strndup(P->a, op->s, op->n);
    n->a = l;
    n->b = r;
    return n;
}

static jnode *pow_expr(parser *P) {
    jnode *l = unary(P, true);
    while (is_op(P, "**")) {
        const jtok *op = next(P);
        l = binary(P, l, op, unary(P, true));
    }
    return l;
}

static jnode *mul_expr(parser *P) {
    jnode *l = pow_expr(P);
    while (is_op(P, "*") || is_op(P, "/") || is_op(P, "//") || is_op(P, "%")) {
        const jtok *op = next(P);
        l = binary(P, l, op, pow_expr(P));
    }
    return l;
}

static jnode *concat_expr(parser *P) {
    jnode *l = mul_expr(P);
    while (is_op(P, "~")) {
        const jtok *op = next(P);
        l = binary(P, l, op, mul_expr(P));
    }
    return l;
}

static jnode *add_expr(parser *P) {
    jnode *l = concat_expr(P);
    while (is_op(P, "+") || is_op(P, "-")) {
        const jtok *op = next(P);
        l = binary(P, l, op, concat_expr(P));
    }
    return l;
}

static const char *cmp_op(parser *P) {
    static const char *const ops[] = {"==", "!=", "<", "<=", ">", ">=", NULL};
    for (int i = 0; ops[i]; i++)
        if (is_op(P, ops[i])) {
            next(P);
            return ops[i];
        }
    if (is_name(P, "in")) {
        next(P);
        return "in";
    }
    if (is_name(P, "not") && tok_is(peek2(P), TK_NAME, "in")) {
        next(P);
        next(P);
        return "not in";
    }
    return NULL;
}

static jnode *compare(parser *P) {
    int line = peek(P)->line;
    jnode *first = add_expr(P);
    kids k = {0};
    kid_push(P, &k, first, NULL);
    const char *op;
    while ((op = cmp_op(P))) kid_push(P, &k, add_expr(P), op);
    if (k.n == 1) return first;
    jnode *n = node(P, N_CMP, line);
    kids_to(n, &k);
    return n;
}

static jnode *not_expr(parser *P) {
    if (is_name(P, "not")) {
        enter(P);
        jnode *n = node(P, N_NOT, next(P)->line);
        n->a = not_expr(P);
        P->depth--;
        return n;
    }
    return compare(P);
}

/* operand (word operand)*, grouped from the left, for "and" and "or". */
static jnode *bool_chain(parser *P, const char *word, jnode_kind k, jnode *(*operand)(parser *)) {
    jnode *l = operand(P);
    while (is_name(P, word)) {
        jnode *n = node(P, k, next(P)->line);
        n->a = l;
        n->b = operand(P);
        l = n;
    }
    return l;
}

static jnode *and_expr(parser *P) { return bool_chain(P, "and", N_AND, not_expr); }
static jnode *or_expr(parser *P) { return bool_chain(P, "or", N_OR, and_expr); }

static jnode *expr(parser *P) {
    enter(P);
    jnode *e = or_expr(P);
    while (is_name(P, "if")) {
        jnode *n = node(P, N_COND, next(P)->line);
        n->a = e;
        n->b = or_expr(P);
        if (is_name(P, "else")) {
            next(P);
            n->else_ = or_expr(P);
        }
        e = n;
    }
    P->depth--;
    return e;
}

/* ---- statements --------------------------------------------------------------- */
static jnode *body(parser *P, const char *const *ends);

static void end_tag(parser *P) {
    if (peek(P)->kind != TK_BEND) expected(P, "'%}'");
    next(P);
}

/* "%}", then the body up to one of the tags named in ends; returns that
 * tag's name token (consumed; its "%}" is left to the caller). */
static const jtok *tag_body(parser *P, const char *const *ends, jnode **out) {
    end_tag(P);
    *out = body(P, ends);
    return next(P);
}

static jnode *stmt_if(parser *P, int line) {
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    jnode *n = node(P, N_IF, line);
    n->a = expr(P);
    const jtok *e = tag_body(P, ends, &n->b);
    if (tok_is(e, TK_NAME, "elif")) {
        n->else_ = stmt_if(P, e->line);
        return n;
    }
    if (tok_is(e, TK_NAME, "else")) {
        static const char *const endif[] = {"endif", NULL};
        tag_body(P, endif, &n->else_);
    }
    end_tag(P);
    return n;
}

static void targets(parser *P, jnode *n) {
    const char **t = ja_alloc(P->a, 8 * sizeof *t);
    int k = 0;
    bool paren = is_op(P, "(");
    if (paren) next(P);
    do {
        if (k && is_op(P, ",")) next(P);
        if (k == 8) ja_fail(P->a, peek(P)->line, "too many loop targets");
        t[k++] = expect_name(P);
    } while (is_op(P, ","));
    if (paren) expect_op(P, ")");
    n->targets = t;
    n->n_targets = k;
}

static jnode *stmt_for(parser *P, int line) {
    static const char *const ends[] = {"else", "endfor", NULL}, *const endfor[] = {"endfor", NULL};
    jnode *n = node(P, N_FOR, line);
    targets(P, n);
    if (!is_name(P, "in")) expected(P, "'in'");
    next(P);
    n->a = or_expr(P);
    if (is_name(P, "if")) {
        next(P);
        n->c = expr(P);
    }
    if (is_name(P, "recursive")) ja_fail(P->a, peek(P)->line, "unsupported feature: recursive for loops");
    if (tok_is(tag_body(P, ends, &n->b), TK_NAME, "else")) tag_body(P, endfor, &n->else_);
    end_tag(P);
    return n;
}

static jnode *stmt_set(parser *P, int line) {
    static const char *const ends[] = {"endset", NULL};
    jnode *n = node(P, N_SET, line);
    const char *first = expect_name(P);
    if (is_op(P, ".")) { /* namespace attribute */
        next(P);
        n->name = expect_name(P);
        n->targets = ja_alloc(P->a, sizeof *n->targets);
        n->targets[0] = first;
        n->n_targets = 1;
        n->to_attr = true;
    } else {
        P->pos--;
        targets(P, n);
    }
    if (is_op(P, "=")) {
        next(P);
        n->a = expr(P);
        if (is_op(P, ",")) ja_fail(P->a, line, "unsupported feature: tuple assignment in set");
        end_tag(P);
        return n;
    }
    if (n->to_attr || n->n_targets != 1) expected(P, "'='");
    if (is_op(P, "|")) ja_fail(P->a, line, "unsupported feature: filtered block set");
    n->kind = N_SETBLOCK;
    tag_body(P, ends, &n->b);
    end_tag(P);
    return n;
}

static jnode *stmt_macro(parser *P, int line) {
    static const char *const ends[] = {"endmacro", NULL};
    jnode *n = node(P, N_MACRO, line);
    n->name = expect_name(P);
    expect_op(P, "(");
    kids k = {0};
    while (!is_op(P, ")")) {
        if (k.n) expect_op(P, ",");
        const char *param = expect_name(P);
        jnode *dflt = NULL;
        if (is_op(P, "=")) {
            next(P);
            dflt = expr(P);
        }
        kid_push(P, &k, dflt, param);
    }
    next(P);
    kids_to(n, &k);
    tag_body(P, ends, &n->b);
    if (peek(P)->kind == TK_NAME) next(P); /* {% endmacro name %} */
    end_tag(P);
    return n;
}

static jnode *stmt_call(parser *P, int line) {
    static const char *const ends[] = {"endcall", NULL};
    if (is_op(P, "(")) ja_fail(P->a, line, "unsupported feature: call block with caller arguments");
    jnode *n = node(P, N_CALLBLOCK, line);
    n->a = postfix(P, primary(P));
    if (n->a->kind != N_CALL) expected(P, "a macro call");
    tag_body(P, ends, &n->b);
    end_tag(P);
    return n;
}

static jnode *stmt_simple_block(parser *P, int line, jnode_kind kind, const char *endname) {
    const char *ends[] = {endname, NULL};
    jnode *n = node(P, kind, line);
    if (kind == N_FILTERBLOCK) n->a = filter_of(P, line, NULL);
    tag_body(P, ends, &n->b);
    end_tag(P);
    return n;
}

static jnode *statement(parser *P) {
    const jtok *t = peek(P);
    if (t->kind != TK_NAME) expected(P, "a tag name");
    int line = t->line;
    const char *name = name_str(P, next(P));
    if (!strcmp(name, "if")) return stmt_if(P, line);
    if (!strcmp(name, "for")) return stmt_for(P, line);
    if (!strcmp(name, "set")) return stmt_set(P, line);
    if (!strcmp(name, "macro")) return stmt_macro(P, line);
    if (!strcmp(name, "call")) return stmt_call(P, line);
    if (!strcmp(name, "generation")) return stmt_simple_block(P, line, N_BODY, "endgeneration")->b;
    if (!strcmp(name, "filter")) return stmt_simple_block(P, line, N_FILTERBLOCK, "endfilter");
    if (!strcmp(name, "break") || !strcmp(name, "continue")) {
        end_tag(P);
        return node(P, name[0] == 'b' ? N_BREAK : N_CONTINUE, line);
    }
    ja_fail(P->a, line, "unsupported feature: tag '%s'", name);
}

static bool at_end(parser *P, const char *const *ends) {
    const jtok *t = peek2(P);
    if (!ends || t->kind != TK_NAME) return false;
    for (int i = 0; ends[i]; i++)
        if (tok_is(t, TK_NAME, ends[i])) return true;
    return false;
}

/* statements up to one of the end tags (its '{%' consumed, its name not) */
static jnode *body(parser *P, const char *const *ends) {
    enter(P);
    jnode *n = node(P, N_BODY, peek(P)->line);
    kids k = {0};
    for (;;) {
        const jtok *t = peek(P);
        if (t->kind == TK_EOF) {
            if (ends) {
                int last = 0;
                while (ends[last + 1]) last++;
                ja_fail(P->a, t->line, "missing {%% %s %%} at end of template", ends[last]);
            }
            break;
        }
        if (t->kind == TK_DATA) {
            jnode *d = node(P, N_TEXT, t->line);
            d->lit = jv_str(P->a, t->s, t->n, false);
            kid_push(P, &k, d, NULL);
            next(P);
        } else if (t->kind == TK_VBEGIN) {
            next(P);
            jnode *o = node(P, N_OUT, t->line);
            o->a = expr(P);
            if (peek(P)->kind != TK_VEND) expected(P, "'}}'");
            next(P);
            kid_push(P, &k, o, NULL);
        } else if (t->kind == TK_BBEGIN) {
            if (at_end(P, ends)) {
                next(P);
                break;
            }
            next(P);
            kid_push(P, &k, statement(P), NULL);
        } else {
            expected(P, "template text or a tag");
        }
    }
    kids_to(n, &k);
    P->depth--;
    return n;
}

jnode *jparse(jarena *a, const jtokens *toks) {
    parser P = {.a = a, .t = toks};
    return body(&P, NULL);
}
