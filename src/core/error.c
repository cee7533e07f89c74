#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int lf_fail(lf_error *err, const char *fmt, ...) {
    if (!err) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int lf_fail_prefix(lf_error *err, const char *fmt, ...) {
    if (!err) return -1;
    char prefix[sizeof err->msg];
    char old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    size_t a = strnlen(prefix, sizeof prefix), b = strnlen(old, sizeof old);
    if (a > sizeof err->msg - 3) a = sizeof err->msg - 3;
    if (b > sizeof err->msg - 3 - a) b = sizeof err->msg - 3 - a;
    memcpy(err->msg, prefix, a);
    memcpy(err->msg + a, ": ", 2);
    memcpy(err->msg + a + 2, old, b);
    err->msg[a + 2 + b] = 0;
    return -1;
}
