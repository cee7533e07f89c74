/* SnapKV's selection rule, written once for the CPU (src/kv/snapkv.c) and the
 * GPU (src/cuda/snapkv_select.cu): both compile this header, so they pool the
 * window sums with the same float operations and rank the positions in the
 * same order.
 *
 * pooled[i], i < m = n - LF_SNAPKV_WINDOW: the average pool of width
 * LF_SNAPKV_POOL (padding POOL/2, the zero padding counted) of the window
 * sums raw[0..m). A position ranks before another when its pooled score is
 * larger, or equal and its index smaller: lf_snapkv_rank_key orders the
 * positions so (larger key = earlier), +0 and -0 being one score. */
#ifndef LF_KV_SNAPKV_RULE_H
#define LF_KV_SNAPKV_RULE_H

#include <stdint.h>
#include <string.h>

#include "longflow.h"

#ifdef __CUDACC__
#define LF_SNAPKV_HD __host__ __device__
#else
#define LF_SNAPKV_HD
#endif

LF_SNAPKV_HD static inline float lf_snapkv_pooled(const float *raw, int m, int i) {
    const int r = LF_SNAPKV_POOL / 2;
    float s = 0;
    for (int d = -r; d <= r; d++)
        if (i + d >= 0 && i + d < m) s += raw[i + d];
    return s / (float)LF_SNAPKV_POOL;
}

/* The rank key of position i with pooled score s: the score's bits mapped
 * to an unsigned order (negative scores below positive ones), then the
 * index complemented, so that the larger key ranks first. */
LF_SNAPKV_HD static inline uint64_t lf_snapkv_rank_key(float s, int32_t i) {
    if (s == 0.0f) s = 0.0f; /* -0 ties with +0 */
    uint32_t u;
    memcpy(&u, &s, sizeof u);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ((uint64_t)u << 32) | (uint64_t)(0xffffffffu - (uint32_t)i);
}

#endif
