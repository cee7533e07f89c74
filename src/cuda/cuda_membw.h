/* Device memory bandwidth of the current GPU, measured: a large
 * device-to-device cudaMemcpyAsync timed with CUDA events. The throughput
 * benchmark (longflow bench --device cuda) uses it as the roofline: the
 * bandwidth a kernel can reach.
 *
 * Plain C11 header, no CUDA types. Compiled only with LF_HAVE_CUDA. */
#ifndef LF_CUDA_MEMBW_H
#define LF_CUDA_MEMBW_H

#include <stddef.h>
#include "longflow.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lf_cuda_membw_result {
    double gbps_rw;      /* median copy: (read + write bytes) / time, 1e9 bytes per second */
    double gbps_read;    /* the same counting read bytes only (half of gbps_rw) */
    double gbps_rw_best; /* fastest copy, read + write */
    double ms_median;    /* median time of one copy */
    size_t bytes;        /* bytes copied per copy (read once, written once) */
    int reps;            /* timed copies (after one warm-up) */
    char device_name[128];
} lf_cuda_membw_result;

/* Copy `bytes` (rounded down to 1 MiB; halved while the allocation fails,
 * down to 256 MiB) from one device buffer to another, once to warm up and
 * `reps` times timed (reps >= 1; 5 is the benchmark's choice). Frees what it
 * allocated before returning. */
int lf_cuda_membw_measure(size_t bytes, int reps, lf_cuda_membw_result *out, lf_error *err);

#ifdef __cplusplus
}
#endif
#endif
