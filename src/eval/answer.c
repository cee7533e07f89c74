#include "eval/answer.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

char *lf_extract_boxed(const char *text) {
    const char *best = NULL;
    size_t best_len = 0;
    const char *p = text;
    for (;;) {
        const char *b = strstr(p, "\\boxed");
        const char *f = strstr(p, "\\fbox");
        const char *m = (!b || (f && f < b)) ? f : b;
        if (!m) break;
        const char *q = m + (m == b ? 6 : 5);
        while (*q == ' ') q++;
        if (*q != '{') {
            p = q;
            continue;
        }
        int depth = 0;
        const char *start = q + 1, *r = q;
        for (; *r; r++) {
            if (*r == '\\' && r[1]) {
                r++;
                continue;
            }
            if (*r == '{') depth++;
            else if (*r == '}' && --depth == 0) break;
        }
        if (!*r) break; /* unbalanced: not a complete answer */
        best = start;
        best_len = (size_t)(r - start);
        p = r + 1;
    }
    if (!best) return NULL;
    char *out = malloc(best_len + 1);
    if (!out) return NULL;
    memcpy(out, best, best_len);
    out[best_len] = 0;
    return out;
}

/* Remove every occurrence of pat from s in place. */
static void drop_all(char *s, const char *pat) {
    size_t n = strlen(pat);
    char *w = s;
    for (const char *r = s; *r;) {
        if (strncmp(r, pat, n) == 0) r += n;
        else *w++ = *r++;
    }
    *w = 0;
}

static void replace_all(char **s, const char *pat, const char *rep) {
    size_t n = strlen(pat), m = strlen(rep), len = strlen(*s);
    char *out = malloc(len * (m > n ? m : n) / (n ? n : 1) + len + 1);
    if (!out) return;
    char *w = out;
    for (const char *r = *s; *r;) {
        if (strncmp(r, pat, n) == 0) {
            memcpy(w, rep, m);
            w += m;
            r += n;
        } else {
            *w++ = *r++;
        }
    }
    *w = 0;
    free(*s);
    *s = out;
}

/* \text{abc} -> abc (also \textbf, \mathrm, \mbox). */
static void unwrap_cmd(char *s, const char *cmd) {
    size_t n = strlen(cmd);
    char *w = s;
    const char *r = s;
    while (*r) {
        if (strncmp(r, cmd, n) == 0 && r[n] == '{') {
            r += n + 1;
            int depth = 1;
            while (*r && depth) {
                if (*r == '{') depth++;
                else if (*r == '}' && --depth == 0) {
                    r++;
                    break;
                }
                if (depth) *w++ = *r++;
            }
        } else {
            *w++ = *r++;
        }
    }
    *w = 0;
}

/* 1,234,567 -> 1234567 (only commas between digit groups of three). */
static void drop_thousands(char *s) {
    char *w = s;
    for (char *r = s; *r; r++) {
        if (*r == ',' && r > s && isdigit((unsigned char)r[-1]) && isdigit((unsigned char)r[1]) &&
            isdigit((unsigned char)r[2]) && isdigit((unsigned char)r[3]) && !isdigit((unsigned char)r[4]))
            continue;
        *w++ = *r;
    }
    *w = 0;
}

/* x.000 -> x (a number ending in a decimal point followed by zeros). */
static void drop_trailing_zero_decimals(char *s) {
    size_t n = strlen(s);
    size_t i = n;
    while (i > 0 && s[i - 1] == '0') i--;
    if (i > 0 && i < n && s[i - 1] == '.' && i >= 2 && isdigit((unsigned char)s[i - 2])) s[i - 1] = 0;
}

char *lf_normalize_answer(const char *in) {
    char *s = strdup(in ? in : "");
    if (!s) return NULL;
    drop_all(s, "\\left");
    drop_all(s, "\\right");
    drop_all(s, "\\!");
    drop_all(s, "\\,");
    drop_all(s, "\\;");
    drop_all(s, "\\ ");
    drop_all(s, "^\\circ");
    drop_all(s, "^{\\circ}");
    drop_all(s, "\\%");
    drop_all(s, "\\$");
    replace_all(&s, "\\dfrac", "\\frac");
    replace_all(&s, "\\tfrac", "\\frac");
    unwrap_cmd(s, "\\text");
    unwrap_cmd(s, "\\textbf");
    unwrap_cmd(s, "\\mathrm");
    unwrap_cmd(s, "\\mbox");
    /* remove white space */
    char *w = s;
    for (char *r = s; *r; r++)
        if (!isspace((unsigned char)*r)) *w++ = *r;
    *w = 0;
    /* outer $...$ */
    size_t n = strlen(s);
    while (n >= 2 && s[0] == '$' && s[n - 1] == '$') {
        memmove(s, s + 1, n - 2);
        n -= 2;
        s[n] = 0;
    }
    while (n > 0 && s[n - 1] == '.') s[--n] = 0;
    drop_thousands(s);
    drop_trailing_zero_decimals(s);
    return s;
}

static bool parse_number(const char *s, double *out) {
    char *end;
    double x = strtod(s, &end);
    if (end == s || *end) return false;
    *out = x;
    return true;
}

bool lf_answers_match(const char *pred, const char *truth) {
    if (!pred || !truth) return false;
    char *a = lf_normalize_answer(pred), *b = lf_normalize_answer(truth);
    bool eq = a && b && strcmp(a, b) == 0;
    double x, y;
    if (!eq && a && b && parse_number(a, &x) && parse_number(b, &y))
        eq = fabs(x - y) <= 1e-9 * fmax(1.0, fabs(y));
    free(a);
    free(b);
    return eq;
}
