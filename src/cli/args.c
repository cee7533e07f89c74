#include "cli/args.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void lf_cli_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "longflow %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void lf_args_init(lf_args *a, const char *cmd, int argc, char **argv) {
    a->argc = argc;
    a->argv = argv;
    a->i = 0;
    a->cmd = cmd;
    a->inline_val = NULL;
}

const char *lf_args_next(lf_args *a) {
    static char flagbuf[128];
    if (a->inline_val) {
        lf_cli_error(a->cmd, "flag %s does not take a value", flagbuf);
        return NULL;
    }
    if (a->i >= a->argc) return NULL;
    const char *s = a->argv[a->i++];
    const char *eq = strncmp(s, "--", 2) == 0 ? strchr(s, '=') : NULL;
    if (eq && (size_t)(eq - s) < sizeof flagbuf) {
        memcpy(flagbuf, s, (size_t)(eq - s));
        flagbuf[eq - s] = 0;
        a->inline_val = eq + 1;
        return flagbuf;
    }
    snprintf(flagbuf, sizeof flagbuf, "%s", s);
    return s;
}

const char *lf_arg_value(lf_args *a, const char *flag) {
    if (a->inline_val) {
        const char *v = a->inline_val;
        a->inline_val = NULL;
        return v;
    }
    if (a->i >= a->argc) {
        lf_cli_error(a->cmd, "%s needs a value", flag);
        return NULL;
    }
    return a->argv[a->i++];
}

bool lf_arg_int(lf_args *a, const char *flag, long lo, long hi, int *out) {
    const char *v = lf_arg_value(a, flag);
    if (!v) return false;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end) {
        lf_cli_error(a->cmd, "%s: '%s' is not an integer", flag, v);
        return false;
    }
    if (x < lo || x > hi) {
        lf_cli_error(a->cmd, "%s: %ld is out of range [%ld, %ld]", flag, x, lo, hi);
        return false;
    }
    *out = (int)x;
    return true;
}

bool lf_arg_float(lf_args *a, const char *flag, double lo, double hi, float *out) {
    const char *v = lf_arg_value(a, flag);
    if (!v) return false;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x)) {
        lf_cli_error(a->cmd, "%s: '%s' is not a number", flag, v);
        return false;
    }
    if (x < lo || x > hi) {
        lf_cli_error(a->cmd, "%s: %g is out of range [%g, %g]", flag, x, lo, hi);
        return false;
    }
    *out = (float)x;
    return true;
}

bool lf_arg_u64(lf_args *a, const char *flag, uint64_t *out) {
    const char *v = lf_arg_value(a, flag);
    if (!v) return false;
    char *end;
    errno = 0;
    if (*v == '-') {
        lf_cli_error(a->cmd, "%s: '%s' must not be negative", flag, v);
        return false;
    }
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end) {
        lf_cli_error(a->cmd, "%s: '%s' is not a non-negative integer", flag, v);
        return false;
    }
    *out = (uint64_t)x;
    return true;
}

/* One element of a comma-separated id list: a decimal integer in [0, limit). */
static bool parse_id(const char *cmd, const char *flag, const char *p, int k, long limit, const char *limit_what,
                     long *out, const char **end_out) {
    char *end;
    errno = 0;
    long long x = strtoll(p, &end, 10);
    size_t len = strcspn(p, ", ");
    if (end == p || (*end && *end != ',' && *end != ' ')) {
        lf_cli_error(cmd, "%s: element %d '%.*s' is not a token id (a non-negative integer)", flag, k + 1, (int)len, p);
        return false;
    }
    if (errno || x < 0 || x >= limit) {
        lf_cli_error(cmd, "%s: element %d (%.*s) is outside %s [0, %ld)", flag, k + 1, (int)len, p, limit_what, limit);
        return false;
    }
    *out = (long)x;
    *end_out = end;
    return true;
}

bool lf_parse_ids(const char *cmd, const char *flag, const char *s, long limit, const char *limit_what, int **ids,
                  int *n) {
    *ids = NULL;
    *n = 0;
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        if (*p == ',') cap++;
    int *out = malloc(cap * sizeof *out);
    if (!out) {
        lf_cli_error(cmd, "%s: out of memory", flag);
        return false;
    }
    int k = 0;
    const char *p = s;
    while (*p) {
        while (*p == ' ') p++;
        long x;
        const char *end;
        if (!parse_id(cmd, flag, p, k, limit, limit_what, &x, &end)) {
            free(out);
            return false;
        }
        out[k++] = (int)x;
        p = end;
        while (*p == ' ') p++;
        if (*p == ',') {
            p++;
            if (!*p) break;
        } else if (*p) {
            lf_cli_error(cmd, "%s: expected ',' after element %d, found '%c'", flag, k, *p);
            free(out);
            return false;
        }
    }
    if (k == 0) {
        lf_cli_error(cmd, "%s: no token ids given", flag);
        free(out);
        return false;
    }
    *ids = out;
    *n = k;
    return true;
}
