/* The device-to-device bandwidth probe of cuda_membw.h. */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "core/error.h"
}
#include "cuda/cuda_membw.h"

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

extern "C" int lf_cuda_membw_measure(size_t bytes, int reps, lf_cuda_membw_result *out, lf_error *err) {
    memset(out, 0, sizeof *out);
    if (reps < 1 || reps > 1000) return lf_fail(err, "cuda membw: reps %d out of range [1, 1000]", reps);
    const size_t mib = (size_t)1 << 20, min_bytes = 256 * mib;
    bytes &= ~(mib - 1);
    if (bytes < min_bytes) return lf_fail(err, "cuda membw: %zu bytes is below the 256 MiB minimum", bytes);

    int dev = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) return lf_fail(err, "cuda membw: cudaGetDevice: %s", cudaGetErrorString(e));
    cudaDeviceProp prop;
    e = cudaGetDeviceProperties(&prop, dev);
    if (e != cudaSuccess) return lf_fail(err, "cuda membw: cudaGetDeviceProperties: %s", cudaGetErrorString(e));
    snprintf(out->device_name, sizeof out->device_name, "%s", prop.name);

    void *src = NULL, *dst = NULL;
    cudaStream_t stream = NULL;
    cudaEvent_t ev0 = NULL, ev1 = NULL;
    float *ms = (float *)calloc((size_t)reps, sizeof(float));
    int rc = -1;
    if (!ms) return lf_fail(err, "cuda membw: out of host memory");
    for (;;) {
        e = cudaMalloc(&src, bytes);
        if (e == cudaSuccess) {
            e = cudaMalloc(&dst, bytes);
            if (e == cudaSuccess) break;
            cudaFree(src);
            src = NULL;
        }
        (void)cudaGetLastError(); /* clear the allocation error */
        if (e != cudaErrorMemoryAllocation || bytes / 2 < min_bytes) {
            lf_fail(err, "cuda membw: cudaMalloc of 2 x %zu MiB: %s", bytes / mib, cudaGetErrorString(e));
            goto out;
        }
        bytes /= 2;
    }
    if ((e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)) != cudaSuccess ||
        (e = cudaEventCreate(&ev0)) != cudaSuccess || (e = cudaEventCreate(&ev1)) != cudaSuccess) {
        lf_fail(err, "cuda membw: stream/event creation: %s", cudaGetErrorString(e));
        goto out;
    }
    /* defined contents (and the pages touched) before timing */
    if ((e = cudaMemsetAsync(src, 0x5a, bytes, stream)) != cudaSuccess ||
        (e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream)) != cudaSuccess ||
        (e = cudaStreamSynchronize(stream)) != cudaSuccess) {
        lf_fail(err, "cuda membw: warm-up copy of %zu MiB: %s", bytes / mib, cudaGetErrorString(e));
        goto out;
    }
    for (int i = 0; i < reps; i++) {
        if ((e = cudaEventRecord(ev0, stream)) != cudaSuccess ||
            (e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream)) != cudaSuccess ||
            (e = cudaEventRecord(ev1, stream)) != cudaSuccess || (e = cudaEventSynchronize(ev1)) != cudaSuccess ||
            (e = cudaEventElapsedTime(&ms[i], ev0, ev1)) != cudaSuccess) {
            lf_fail(err, "cuda membw: timed copy %d of %zu MiB: %s", i, bytes / mib, cudaGetErrorString(e));
            goto out;
        }
        if (!(ms[i] > 0)) {
            lf_fail(err, "cuda membw: copy %d of %zu MiB took %g ms (no usable timing)", i, bytes / mib,
                    (double)ms[i]);
            goto out;
        }
    }
    qsort(ms, (size_t)reps, sizeof *ms, cmp_float);
    out->bytes = bytes;
    out->reps = reps;
    out->ms_median = reps % 2 ? ms[reps / 2] : 0.5 * ((double)ms[reps / 2 - 1] + ms[reps / 2]);
    out->gbps_rw = 2.0 * (double)bytes / (out->ms_median * 1e6);
    out->gbps_read = out->gbps_rw / 2;
    out->gbps_rw_best = 2.0 * (double)bytes / ((double)ms[0] * 1e6);
    rc = 0;
out:
    if (ev0) cudaEventDestroy(ev0);
    if (ev1) cudaEventDestroy(ev1);
    if (stream) cudaStreamDestroy(stream);
    if (src) cudaFree(src);
    if (dst) cudaFree(dst);
    free(ms);
    return rc;
}
