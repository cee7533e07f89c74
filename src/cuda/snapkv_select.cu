/* SnapKV's prefill selection on the GPU (cuda_kernels.h:
 * lf_cuda_snapkv_select): the same kept positions as the CPU's
 * lf_snapkv_select_from_sums, from window sums already on the device.
 *
 * One block. The candidates are the positions sinks..m-1 (m = n - window),
 * each with the rank key of kv/snapkv_rule.h (its pooled score, then its
 * index: keys are distinct, larger ranks first). A radix select over the
 * 64-bit keys, eight passes of one byte from the top, finds the key of the
 * top-th best candidate; the chosen are the candidates at or above it
 * (exactly top of them). The kept positions, ascending, are the sinks, the
 * chosen and the window, written by a block-wide compaction. */
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "core/error.h"
#include "kv/policy.h"
#include "cuda/cuda_kernels.h"
}
#include "kv/snapkv_rule.h"

#define SEL_THREADS 1024

/* Whether position i (of n, m = n - window) is kept, given the threshold
 * key of the chosen candidates. */
__device__ __forceinline__ bool sel_kept(const float *raw, int m, int sinks, int i, uint64_t thr) {
    if (i < sinks || i >= m) return true;
    return lf_snapkv_rank_key(lf_snapkv_pooled(raw, m, i), i) >= thr;
}

/* The key of the top-th best candidate: MSB-first radix select, one byte a
 * pass, over the candidates whose higher bytes match the prefix so far. */
static __device__ uint64_t sel_threshold(const float *raw, int m, int sinks, int top) {
    __shared__ unsigned int hist[256];
    __shared__ uint64_t s_prefix;
    __shared__ int s_k;
    uint64_t prefix = 0, mask = 0;
    int k = top;
    for (int shift = 56; shift >= 0; shift -= 8) {
        for (int d = threadIdx.x; d < 256; d += blockDim.x) hist[d] = 0;
        __syncthreads();
        /* one atomic per distinct byte in a warp (the top bytes of most keys agree) */
        for (int base = sinks; base < m; base += blockDim.x) {
            const int i = base + (int)threadIdx.x;
            int bin = -1;
            if (i < m) {
                const uint64_t key = lf_snapkv_rank_key(lf_snapkv_pooled(raw, m, i), i);
                if ((key & mask) == prefix) bin = (int)((key >> shift) & 0xffu);
            }
            const unsigned grp = __match_any_sync(0xffffffffu, bin);
            if (bin >= 0 && (int)(threadIdx.x & 31u) == __ffs(grp) - 1) atomicAdd(&hist[bin], (unsigned)__popc(grp));
        }
        __syncthreads();
        if (threadIdx.x == 0) { /* the byte where the top k of the matching keys end */
            unsigned int above = 0;
            int d = 255;
            for (; d > 0; d--) {
                if (above + hist[d] >= (unsigned int)k) break;
                above += hist[d];
            }
            s_prefix = prefix | ((uint64_t)d << shift);
            s_k = k - (int)above;
        }
        __syncthreads();
        prefix = s_prefix;
        k = s_k;
        mask |= (uint64_t)0xffu << shift;
        __syncthreads();
    }
    return prefix;
}

__global__ void __launch_bounds__(SEL_THREADS)
    snapkv_select_kernel(const float *raw, int n, int sinks, int top, int32_t *kept) {
    __shared__ int offs[SEL_THREADS];
    const int m = n - LF_SNAPKV_WINDOW;
    const uint64_t thr = sel_threshold(raw, m, sinks, top);
    /* each thread a contiguous chunk of positions: count, scan, write */
    const int chunk = (n + (int)blockDim.x - 1) / (int)blockDim.x;
    const int lo = (int)threadIdx.x * chunk, hi = lo + chunk < n ? lo + chunk : n;
    int cnt = 0;
    for (int i = lo; i < hi; i++) cnt += sel_kept(raw, m, sinks, i, thr);
    offs[threadIdx.x] = cnt;
    __syncthreads();
    if (threadIdx.x == 0) {
        int run = 0;
        for (int t = 0; t < (int)blockDim.x; t++) {
            const int c = offs[t];
            offs[t] = run;
            run += c;
        }
    }
    __syncthreads();
    int o = offs[threadIdx.x];
    for (int i = lo; i < hi; i++)
        if (sel_kept(raw, m, sinks, i, thr)) kept[o++] = i;
}

extern "C" int lf_cuda_snapkv_select(const float *raw, int n, int keep, int sinks, int32_t *kept, void *stream,
                                     lf_error *err) {
    if (!raw || !kept) return lf_fail(err, "cuda SnapKV select: missing argument");
    if (sinks < 0) return lf_fail(err, "cuda SnapKV select: negative sinks %d", sinks);
    if (lf_snapkv_check_keep(n, keep, sinks, err)) return lf_fail_prefix(err, "cuda SnapKV select");
    const int top = keep - LF_SNAPKV_WINDOW - sinks;
    snapkv_select_kernel<<<1, SEL_THREADS, 0, (cudaStream_t)stream>>>(raw, n, sinks, top, kept);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return lf_fail(err, "cuda SnapKV select: launch: %s", cudaGetErrorString(e));
    return 0;
}
