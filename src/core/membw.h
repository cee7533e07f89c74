/* Memory read bandwidth of this machine, measured: several threads sum a
 * buffer much larger than the last-level cache; the best of several passes
 * (plain loads and software-prefetched loads, alternating) is reported. The
 * benchmark uses it as the ceiling for memory-bound decode. */
#ifndef LF_CORE_MEMBW_H
#define LF_CORE_MEMBW_H

#include <stddef.h>
#include "longflow.h"

typedef struct lf_membw_result {
    double gbps;         /* best pass, 1e9 bytes per second */
    double gbps_median;  /* median pass */
    double gbps_plain;   /* best pass with plain loads */
    double gbps_prefetch;/* best pass with software prefetch (0 with 1 pass) */
    size_t bytes;        /* buffer size */
    int threads;
    int passes;
} lf_membw_result;

/* Read `bytes` (rounded down to 4 KiB; at least 64 MiB is sensible) with
 * `threads` threads (0 = OpenMP default), `passes` times (>= 1). */
int lf_membw_measure(size_t bytes, int threads, int passes, lf_membw_result *out, lf_error *err);

#endif
