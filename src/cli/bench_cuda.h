/* longflow bench --device cuda: the throughput benchmark of the GPU engine
 * (src/cli/bench_cuda.c; docs/cuda.md, "The CUDA engine and the throughput
 * benchmark"). */
#ifndef LF_CLI_BENCH_CUDA_H
#define LF_CLI_BENCH_CUDA_H

#include <stdbool.h>
#include "cli/common.h"
#include "longflow.h"

typedef struct lf_bench_cuda_args {
    const lf_gen_options *o; /* model dir, policy, seed, --gpu-mem-fraction */
    const char *preset;      /* --random-weights --config NAME, or NULL for --model */
    lf_dtype dtype;          /* of the random weights (uploaded as bf16) */
    int prompt_len, gen_len;
    int batch;               /* 0 = as many as fit */
    bool json;
    const char *mode;        /* "sampled", "real" or NULL (sampled when gen_len > 2048) */
    const char *lengths;     /* "L1,L2,..." or NULL (the default points) */
    int membw_mb;            /* bytes copied by the bandwidth probe, MiB (0 = skip) */
} lf_bench_cuda_args;

/* Run it; prints the result (text or JSON) and returns the exit status. */
int lf_bench_cuda(const lf_bench_cuda_args *a);

#endif
