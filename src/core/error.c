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
    snprintf(err->msg, sizeof err->msg, "%s: %.*s", prefix, (int)(sizeof err->msg / 2), old);
    return -1;
}
