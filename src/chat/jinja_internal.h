/* Internals of the Jinja interpreter shared by its parts: the lexer
 * (jinja_lex.c), the parser (jinja_parse.c), values and memory
 * (jinja_value.c), the evaluator (jinja_eval.c) and the filters, tests and
 * methods (jinja_filters.c). Errors unwind with longjmp to the entry point
 * (lf_jinja_parse / lf_jinja_render); all memory lives in an arena freed
 * there, so nothing is leaked by unwinding. */
#ifndef LF_CHAT_JINJA_INTERNAL_H
#define LF_CHAT_JINJA_INTERNAL_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat/jinja.h"

/* ---- arena ---------------------------------------------------------------- */
typedef struct jarena_block jarena_block;
typedef struct jarena {
    jarena_block *head;
    size_t used, limit;
    lf_error *err;
    jmp_buf *jmp;
} jarena;

void *ja_alloc(jarena *a, size_t n); /* zeroed; unwinds on exhaustion */
char *ja_strndup(jarena *a, const char *s, size_t n);
void ja_free(jarena *a);
_Noreturn void ja_fail(jarena *a, int line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* ---- tokens ---------------------------------------------------------------- */
typedef enum {
    TK_EOF,
    TK_DATA,   /* template text */
    TK_VBEGIN, /* {{ */
    TK_VEND,   /* }} */
    TK_BBEGIN, /* {% */
    TK_BEND,   /* %} */
    TK_NAME,
    TK_STRING,
    TK_INT,
    TK_FLOAT,
    TK_OP
} jtok_kind;

typedef struct jtok {
    jtok_kind kind;
    int line;
    const char *s; /* text: DATA, NAME, STRING (decoded), OP */
    size_t n;
    int64_t i;
    double f;
} jtok;

typedef struct jtokens {
    jtok *v;
    size_t n, cap;
} jtokens;

/* Tokenize normalized source (the lexer normalizes newlines itself). */
void jlex(jarena *a, const char *src, size_t len, jtokens *out);

/* ---- values ---------------------------------------------------------------- */
typedef enum { JV_UNDEF, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT, JV_NS, JV_MACRO, JV_METHOD, JV_FUNC, JV_LOOP } jv_kind;

typedef struct jstr jstr;
typedef struct jlist jlist;
typedef struct jdict jdict;
struct jnode;

typedef struct jv {
    jv_kind kind;
    union {
        bool b;
        int64_t i;
        double f;
        jstr *s;
        jlist *l;
        jdict *d; /* JV_DICT, JV_NS */
        struct jmacro *m;
        struct jmethod *me;
        const char *fn;  /* JV_FUNC: global function name */
        const char *un;  /* JV_UNDEF: the name that was missing, or NULL */
        struct jloop *lp;
    } u;
} jv;

/* A string: bytes plus, when some came from caller content, one flag per
 * byte (1 = content). */
struct jstr {
    size_t n;
    char *p;
    uint8_t *taint; /* NULL: all markup */
};

#define JV_MAX_NEST 128 /* lists and dicts inside each other */

struct jlist {
    size_t n, cap;
    jv *v;
    bool tuple; /* printed as (a, b) */
    int depth;  /* nesting (see jl_push) */
};

typedef struct jkv {
    jv k, v;
} jkv;

struct jdict {
    size_t n, cap;
    jkv *e;
    int depth;
};

typedef struct jloop {
    jlist *items;
    size_t i;
} jloop;

typedef struct jmethod {
    jv self;
    const char *name;
} jmethod;

/* builders */
typedef struct jbuf {
    char *p;
    uint8_t *taint;
    size_t n, cap;
    bool any_taint;
    size_t limit;
} jbuf;

void jb_put(jarena *a, jbuf *b, const char *s, size_t n, bool content);
void jb_put_str(jarena *a, jbuf *b, const jstr *s);          /* with its taint */
void jb_put_slice(jarena *a, jbuf *b, const jstr *s, size_t i, size_t j);
jstr *jb_finish(jarena *a, jbuf *b);

jv jv_undef(const char *name);
jv jv_none(void);
jv jv_bool(bool b);
jv jv_int(int64_t i);
jv jv_float(double f);
jv jv_str(jarena *a, const char *s, size_t n, bool content);
jv jv_cstr(jarena *a, const char *s); /* markup */
jv jv_strv(jstr *s);
jv jv_list(jarena *a, size_t cap);
jv jv_dict(jarena *a, size_t cap);
void jl_push(jarena *a, jlist *l, jv v);
void jd_set(jarena *a, jdict *d, jv k, jv v);
bool jd_get(const jdict *d, jv k, jv *out);
bool jd_get_s(const jdict *d, const char *k, jv *out);
jstr *js_slice(jarena *a, const jstr *s, size_t i, size_t j); /* keeps taint */

const char *jv_type_name(jv v);
bool jv_truthy(jv v);
bool jv_eq(jv a, jv b);
int jv_cmp(jarena *a, int line, jv x, jv y); /* <0, 0, >0; unwinds when not orderable */
/* str(v) as Python prints it (None, True, 1.5, ['a'], {'k': 1}); strings as themselves */
jstr *jv_to_str(jarena *a, int line, jv v);
void jv_repr(jarena *a, int line, jbuf *b, jv v);
/* json.dumps(v, ensure_ascii=False, indent, separators, sort_keys) */
void jv_tojson(jarena *a, int line, jbuf *b, jv v, int indent, const char *item_sep, const char *key_sep,
               bool sort_keys, int depth);
void py_float_repr(double f, char *out, size_t cap);
jv jv_from_json(jarena *a, const void *json, bool content, int depth);

/* ---- AST ------------------------------------------------------------------- */
typedef enum {
    /* expressions */
    N_LIT, N_NAME, N_ATTR, N_ITEM, N_SLICE, N_CALL, N_FILTER, N_TEST, N_NOT, N_NEG, N_POS, N_BIN, N_AND, N_OR,
    N_COND, N_LIST, N_DICT, N_CMP,
    /* statements */
    N_TEXT, N_OUT, N_IF, N_FOR, N_SET, N_SETBLOCK, N_MACRO, N_CALLBLOCK, N_BREAK, N_CONTINUE, N_BODY,
    N_FILTERBLOCK
} jnode_kind;

typedef struct jnode jnode;
struct jnode {
    jnode_kind kind;
    int line;
    const char *name; /* NAME, ATTR, CALL kwargs, FILTER/TEST name, BIN/CMP op, SET target attr */
    jv lit;           /* LIT, TEXT */
    jnode *a, *b, *c; /* operands / condition / bodies */
    jnode **kids;     /* args, list items, dict k/v pairs, statements, FOR targets */
    const char **kw;  /* keyword names for kids (NULL entries for positional) */
    int n_kids;
    jnode *else_;  /* IF else, FOR else, COND else */
    bool neg;      /* TEST: is not */
    bool is_tuple; /* LIST: written (a, b) */
    bool to_attr;  /* SET: ns.attr = ... (name is the attribute) */
    const char **targets; /* FOR / SET targets */
    int n_targets;
};

jnode *jparse(jarena *a, const jtokens *toks);

/* ---- evaluation ------------------------------------------------------------ */
typedef struct jframe jframe;
struct jframe {
    jframe *parent;
    const char **names;
    jv *vals;
    int n, cap;
};

typedef struct jmacro {
    const jnode *def;
    jframe *closure;
} jmacro;

typedef struct jctx {
    jarena *a;
    jframe *globals;
    long steps;
    long iterations;
    int depth;      /* macro calls */
    int eval_depth; /* expressions being evaluated */
    int64_t now;
    jbuf *out;
    const jnode *caller_body; /* body of the innermost {% call %} */
    jframe *caller_frame;
} jctx;

void jctx_step(jctx *c, int line);
jv jeval(jctx *c, jframe *f, const jnode *n);
void jexec(jctx *c, jframe *f, const jnode *n, int *ctl);
jv jcall_macro(jctx *c, const jmacro *m, jv *args, const char **kw, int n, int line);
void jframe_set(jctx *c, jframe *f, const char *name, jv v);
bool jframe_get(const jframe *f, const char *name, jv *out);

/* filters, tests, methods, globals (jinja_filters.c) */
jv jfilter(jctx *c, int line, const char *name, jv v, jv *args, const char **kw, int n, jframe *f);
bool jtest(jctx *c, int line, const char *name, jv v, jv *args, int n);
jv jmethod_call(jctx *c, int line, const jmethod *m, jv *args, const char **kw, int n);
bool jhas_method(jv self, const char *name);
jv jglobal_call(jctx *c, int line, const char *fn, jv *args, const char **kw, int n);
bool jglobal_exists(const char *name);
/* the filters and tests there are (the parser refuses others) */
bool jfilter_known(const char *name);
bool jtest_known(const char *name);
/* list a value iterates over (lists, dict keys, string characters) */
jlist *jiter(jctx *c, int line, jv v);

#endif
