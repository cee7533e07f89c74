#ifndef LF_CORE_TIMER_H
#define LF_CORE_TIMER_H

#include <time.h>

/* Monotonic wall clock in milliseconds. */
static inline double lf_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

#endif
