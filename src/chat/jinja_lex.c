/* Jinja lexer: template text and tags, with Jinja2's whitespace rules as
 * transformers configures them (trim_blocks: the newline after a block or
 * comment tag goes; lstrip_blocks: spaces and tabs before a block or comment
 * tag on its own line go; `-` strips all whitespace on its side, `+` keeps
 * it), newlines normalized to \n and one trailing newline dropped, and
 * {% raw %} kept verbatim. Inside tags: names, numbers, strings (with
 * Python's escapes) and operators. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja_internal.h"

typedef struct lexer {
    jarena *a;
    const char *s;
    size_t n, pos;
    int line;
    bool line_starting;
    jtokens *out;
} lexer;

static void emit(lexer *L, jtok t) {
    jtokens *o = L->out;
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 256;
        jtok *v = ja_alloc(L->a, cap * sizeof *v);
        if (o->n) memcpy(v, o->v, o->n * sizeof *v);
        o->v = v;
        o->cap = cap;
    }
    o->v[o->n++] = t;
}

static void emit_data(lexer *L, const char *p, size_t n, int line) {
    if (n) emit(L, (jtok){.kind = TK_DATA, .line = line, .s = p, .n = n});
}

static bool ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static int count_lines(const char *p, size_t n) {
    int k = 0;
    for (size_t i = 0; i < n; i++) k += p[i] == '\n';
    return k;
}

/* text before a tag, with the tag's left whitespace control applied */
static size_t strip_before(lexer *L, const char *text, size_t n, char sign, bool block) {
    if (sign == '-') {
        while (n && ws(text[n - 1])) n--;
    } else if (sign != '+' && block) {
        size_t l = n;
        while (l && text[l - 1] != '\n') l--;
        if (l > 0 || L->line_starting) {
            size_t k = l;
            while (k < n && (text[k] == ' ' || text[k] == '\t')) k++;
            if (k == n) n = l;
        }
    }
    return n;
}

/* after a closing tag: '-' strips all whitespace, trim_blocks one newline */
static void after_close(lexer *L, char sign, bool trim) {
    if (sign == '-') {
        while (L->pos < L->n && ws(L->s[L->pos])) {
            L->line += L->s[L->pos] == '\n';
            L->pos++;
        }
    } else if (sign != '+' && trim && L->pos < L->n && L->s[L->pos] == '\n') {
        L->pos++;
        L->line++;
    }
    L->line_starting = L->pos > 0 && L->s[L->pos - 1] == '\n';
}

static unsigned hexval(jarena *a, int line, const char *p, int k) {
    unsigned v = 0;
    for (int i = 0; i < k; i++) {
        char c = p[i];
        if (!isxdigit((unsigned char)c)) ja_fail(a, line, "bad \\x/\\u escape in a string literal");
        v = v * 16 + (unsigned)(isdigit((unsigned char)c) ? c - '0' : (tolower((unsigned char)c) - 'a' + 10));
    }
    return v;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Python's unicode-escape decoding of a literal's body */
static size_t unescape(jarena *a, int line, const char *p, size_t n, char *o) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\\' || i + 1 >= n) {
            o[k++] = p[i];
            continue;
        }
        char c = p[++i];
        unsigned cp;
        switch (c) {
        case '\n': break; /* line continuation */
        case '\\': o[k++] = '\\'; break;
        case '\'': o[k++] = '\''; break;
        case '"': o[k++] = '"'; break;
        case 'a': o[k++] = '\a'; break;
        case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;
        case 'n': o[k++] = '\n'; break;
        case 'r': o[k++] = '\r'; break;
        case 't': o[k++] = '\t'; break;
        case 'v': o[k++] = '\v'; break;
        case 'x':
        case 'u':
        case 'U': {
            int w = c == 'x' ? 2 : c == 'u' ? 4 : 8;
            if (i + (size_t)w >= n) ja_fail(a, line, "truncated \\%c escape in a string literal", c);
            cp = hexval(a, line, p + i + 1, w);
            if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) ja_fail(a, line, "escape \\%c names no character", c);
            k += put_utf8(o + k, cp);
            i += (size_t)w;
            break;
        }
        default:
            if (c >= '0' && c <= '7') {
                cp = 0;
                int d = 0;
                while (d < 3 && i < n && p[i] >= '0' && p[i] <= '7') {
                    cp = cp * 8 + (unsigned)(p[i] - '0');
                    i++;
                    d++;
                }
                i--;
                k += put_utf8(o + k, cp);
            } else {
                o[k++] = '\\';
                o[k++] = c;
            }
        }
    }
    return k;
}

static void lex_string(lexer *L) {
    char q = L->s[L->pos];
    size_t i = L->pos + 1;
    int line = L->line;
    while (i < L->n && L->s[i] != q) {
        if (L->s[i] == '\\' && i + 1 < L->n) i++;
        i++;
    }
    if (i >= L->n) ja_fail(L->a, line, "unterminated string literal");
    const char *body = L->s + L->pos + 1;
    size_t bn = i - L->pos - 1;
    char *o = ja_alloc(L->a, bn * 2 + 8);
    size_t k = unescape(L->a, line, body, bn, o);
    emit(L, (jtok){.kind = TK_STRING, .line = line, .s = o, .n = k});
    L->line += count_lines(body, bn);
    L->pos = i + 1;
}

/* append to a number's text, counting what does not fit */
static void num_put(char *buf, size_t cap, size_t *k, char ch) {
    if (*k < cap - 1) buf[*k] = ch;
    (*k)++;
}
#define NUM_PUT(ch) num_put(buf, sizeof buf, &k, (ch))

static void lex_number(lexer *L) {
    size_t i = L->pos;
    bool is_float = false;
    char buf[64];
    size_t k = 0;
    while (i < L->n && (isdigit((unsigned char)L->s[i]) || L->s[i] == '_')) {
        if (L->s[i] != '_') NUM_PUT(L->s[i]);
        i++;
    }
    if (i + 1 < L->n && L->s[i] == '.' && isdigit((unsigned char)L->s[i + 1])) {
        is_float = true;
        NUM_PUT('.');
        i++;
        while (i < L->n && (isdigit((unsigned char)L->s[i]) || L->s[i] == '_')) {
            if (L->s[i] != '_') NUM_PUT(L->s[i]);
            i++;
        }
    }
    if (i < L->n && (L->s[i] == 'e' || L->s[i] == 'E')) {
        size_t j = i + 1;
        if (j < L->n && (L->s[j] == '+' || L->s[j] == '-')) j++;
        if (j < L->n && isdigit((unsigned char)L->s[j])) {
            is_float = true;
            while (i < j) NUM_PUT(L->s[i++]);
            while (i < L->n && isdigit((unsigned char)L->s[i])) NUM_PUT(L->s[i++]);
        }
    }
    if (k >= sizeof buf) ja_fail(L->a, L->line, "number literal longer than %zu characters", sizeof buf - 1);
    buf[k] = 0;
#undef NUM_PUT
    jtok t = {.kind = is_float ? TK_FLOAT : TK_INT, .line = L->line};
    if (is_float) {
        t.f = strtod(buf, NULL);
    } else {
        char *end;
        unsigned long long v = strtoull(buf, &end, 10);
        if (v > INT64_MAX) ja_fail(L->a, L->line, "integer literal %s too large", buf);
        t.i = (int64_t)v;
    }
    emit(L, t);
    L->pos = i;
}

static const char *const OPS[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">",
                                  "(",  ")",  "[",  "]",  "{",  "}",  ",", ".", ":", "|", "=", NULL};

/* Tokens of one tag up to its end ("}}" or "%}"); returns the end's sign */
static char lex_tag(lexer *L, char close) {
    int depth = 0;
    for (;;) {
        while (L->pos < L->n && ws(L->s[L->pos])) L->line += L->s[L->pos++] == '\n';
        if (L->pos >= L->n) ja_fail(L->a, L->line, "unclosed tag at end of template");
        const char *p = L->s + L->pos;
        size_t left = L->n - L->pos;
        if (depth == 0) {
            char sign = (*p == '-' || *p == '+') ? *p : 0;
            const char *q = p + (sign ? 1 : 0);
            if ((size_t)(q - p) + 2 <= left && q[0] == close && q[1] == '}') {
                L->pos += (size_t)(q - p) + 2;
                emit(L, (jtok){.kind = close == '}' ? TK_VEND : TK_BEND, .line = L->line});
                return sign;
            }
        }
        char c = *p;
        if (c == '\'' || c == '"') {
            lex_string(L);
        } else if (isdigit((unsigned char)c)) {
            lex_number(L);
        } else if (isalpha((unsigned char)c) || c == '_') {
            size_t i = L->pos;
            while (i < L->n && (isalnum((unsigned char)L->s[i]) || L->s[i] == '_')) i++;
            emit(L, (jtok){.kind = TK_NAME, .line = L->line, .s = p, .n = i - L->pos});
            L->pos = i;
        } else {
            int k = 0;
            for (; OPS[k]; k++)
                if (!strncmp(p, OPS[k], strlen(OPS[k])) && strlen(OPS[k]) <= left) break;
            if (!OPS[k]) ja_fail(L->a, L->line, "unexpected character '%c' in a tag", c);
            if (c == '(' || c == '[' || c == '{') depth++;
            if ((c == ')' || c == ']' || c == '}') && depth > 0) depth--;
            emit(L, (jtok){.kind = TK_OP, .line = L->line, .s = OPS[k], .n = strlen(OPS[k])});
            L->pos += strlen(OPS[k]);
        }
    }
}

/* {% raw %}: is the block at p (just after "{%" and its sign) a raw tag? */
static bool raw_tag(const char *p, const char *end, const char *word, size_t *len, char *close_sign) {
    const char *q = p;
    while (q < end && ws(*q)) q++;
    size_t wl = strlen(word);
    if ((size_t)(end - q) < wl || strncmp(q, word, wl)) return false;
    q += wl;
    while (q < end && ws(*q)) q++;
    char sign = 0;
    if (q < end && (*q == '-' || *q == '+')) sign = *q++;
    if (end - q < 2 || q[0] != '%' || q[1] != '}') return false;
    *len = (size_t)(q + 2 - p);
    *close_sign = sign;
    return true;
}

static void lex_raw(lexer *L, size_t body) {
    const char *end = L->s + L->n;
    for (size_t i = body; i + 1 < L->n; i++) {
        if (L->s[i] != '{' || L->s[i + 1] != '%') continue;
        const char *p = L->s + i + 2;
        char sign = 0;
        if (p < end && (*p == '-' || *p == '+')) sign = *p++;
        size_t tl;
        char cs;
        if (!raw_tag(p, end, "endraw", &tl, &cs)) continue;
        size_t n = strip_before(L, L->s + body, i - body, sign, true);
        emit_data(L, L->s + body, n, L->line);
        L->line += count_lines(L->s + body, i - body);
        L->pos = (size_t)(p - L->s) + tl;
        after_close(L, cs, true);
        return;
    }
    ja_fail(L->a, L->line, "{%% raw %%} without {%% endraw %%}");
}

static void lex_comment(lexer *L) {
    for (size_t i = L->pos; i + 1 < L->n; i++) {
        if (L->s[i] == '#' && L->s[i + 1] == '}') {
            char sign = i > L->pos && (L->s[i - 1] == '-' || L->s[i - 1] == '+') ? L->s[i - 1] : 0;
            L->line += count_lines(L->s + L->pos, i - L->pos);
            L->pos = i + 2;
            after_close(L, sign, true);
            return;
        }
    }
    ja_fail(L->a, L->line, "unclosed comment");
}

/* normalize \r\n and \r to \n, drop one trailing newline */
static char *normalize(jarena *a, const char *src, size_t len, size_t *out_n) {
    char *o = ja_alloc(a, len + 1);
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            o[k++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            o[k++] = src[i];
        }
    }
    if (k && o[k - 1] == '\n') k--;
    *out_n = k;
    return o;
}

void jlex(jarena *a, const char *src, size_t len, jtokens *out) {
    lexer L = {.a = a, .line = 1, .line_starting = true, .out = out};
    L.s = normalize(a, src, len, &L.n);
    while (L.pos < L.n) {
        const char *p = L.s + L.pos;
        const char *t = NULL;
        for (const char *q = p; q + 1 < L.s + L.n; q++)
            if (q[0] == '{' && (q[1] == '{' || q[1] == '%' || q[1] == '#')) {
                t = q;
                break;
            }
        if (!t) {
            emit_data(&L, p, L.n - L.pos, L.line);
            break;
        }
        char kind = t[1];
        char sign = (t + 2 < L.s + L.n && (t[2] == '-' || t[2] == '+')) ? t[2] : 0;
        if (kind == '{' && sign == '+') sign = 0;
        size_t n = strip_before(&L, p, (size_t)(t - p), sign, kind != '{');
        emit_data(&L, p, n, L.line);
        L.line += count_lines(p, (size_t)(t - p));
        L.pos = (size_t)(t - L.s) + 2 + (sign ? 1 : 0);
        L.line_starting = false;
        if (kind == '#') {
            lex_comment(&L);
            continue;
        }
        size_t tl;
        char cs;
        if (kind == '%' && raw_tag(L.s + L.pos, L.s + L.n, "raw", &tl, &cs)) {
            L.pos += tl;
            after_close(&L, cs, false);
            lex_raw(&L, L.pos);
            continue;
        }
        emit(&L, (jtok){.kind = kind == '{' ? TK_VBEGIN : TK_BBEGIN, .line = L.line});
        char close_sign = lex_tag(&L, kind == '{' ? '}' : '%');
        after_close(&L, close_sign, kind == '%');
    }
    emit(&L, (jtok){.kind = TK_EOF, .line = L.line});
}
