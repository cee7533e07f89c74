/* Programmatic dependent launch (PDL) for the kernels of the decode chain
 * (docs/cuda.md, "Programmatic dependent launch"). Included by .cu files only.
 *
 * Opt-in: LF_CUDA_PDL=1 in the environment (read once per process) on a
 * device of compute capability 9.0 or newer. When on, lf_launch launches a
 * kernel with cudaLaunchKernelEx and the attribute
 * cudaLaunchAttributeProgrammaticStreamSerialization = 1, so the GPU may
 * launch it and schedule its blocks while the previous kernel of the stream
 * drains; when off, it is a plain <<<>>> launch.
 *
 * Every kernel launched through lf_launch must execute lf_pdl_wait() as its
 * first statement, before it reads or writes any global memory: that waits
 * until the previous kernel has completed and its writes are visible, so
 * every read-after-write and write-after-read ordering of the stream is kept
 * exactly; only the launch and the block scheduling overlap. No kernel here
 * triggers its dependents early (griddepcontrol.launch_dependents), so the
 * next kernel still starts its blocks only as this one's blocks exit. */
#ifndef LF_CUDA_PDL_H
#define LF_CUDA_PDL_H

#ifdef __CUDACC__
#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>
#include <utility>

/* true iff LF_CUDA_PDL is "1" and the current device (at the first call) is
 * sm_90 or newer. Read once per process (a function-local static: one
 * instance across translation units, thread-safe initialisation). */
inline bool lf_cuda_pdl_enabled(void) {
    static const bool on = [] {
        const char *v = getenv("LF_CUDA_PDL");
        if (!v || strcmp(v, "1") != 0) return false;
        int dev = 0, major = 0;
        if (cudaGetDevice(&dev) != cudaSuccess) return false;
        if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) return false;
        return major >= 9;
    }();
    return on;
}

/* Launch kernel<<<grid, block, smem, stream>>>(args...), with the
 * programmatic stream serialization attribute when PDL is enabled. Returns
 * the launch status (cudaGetLastError() after a plain launch). */
template <typename... KArgs, typename... Args>
inline cudaError_t lf_launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                             Args &&...args) {
    if (lf_cuda_pdl_enabled()) {
        cudaLaunchAttribute attr[1];
        memset(attr, 0, sizeof attr);
        attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr[0].val.programmaticStreamSerializationAllowed = 1;
        cudaLaunchConfig_t cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.gridDim = grid;
        cfg.blockDim = block;
        cfg.dynamicSmemBytes = smem;
        cfg.stream = stream;
        cfg.attrs = attr;
        cfg.numAttrs = 1;
        const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
        if (e != cudaSuccess) (void)cudaGetLastError(); /* reported here, like the plain path */
        return e;
    }
    kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
    return cudaGetLastError();
}

/* First statement of every kernel launched through lf_launch: wait for the
 * previous kernel of the stream (griddepcontrol.wait). A no-op below sm_90,
 * and immediate when the kernel was launched without the attribute. */
__device__ __forceinline__ void lf_pdl_wait(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    cudaGridDependencySynchronize();
#endif
}
#endif /* __CUDACC__ */

#endif
