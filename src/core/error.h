/* Error reporting: every fallible function fills an lf_error and returns -1. */
#ifndef LF_CORE_ERROR_H
#define LF_CORE_ERROR_H

#include "longflow.h"

#if defined(__GNUC__)
#define LF_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define LF_PRINTF(a, b)
#endif

/* Format a message into err (which may be NULL) and return -1. */
int lf_fail(lf_error *err, const char *fmt, ...) LF_PRINTF(2, 3);

/* Prefix an existing message: "<prefix>: <old message>". Returns -1. */
int lf_fail_prefix(lf_error *err, const char *fmt, ...) LF_PRINTF(2, 3);

#endif
