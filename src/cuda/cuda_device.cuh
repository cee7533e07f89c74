/* Device helpers that more than one .cu file needs to compute the same value
 * the same way (kernels.cu's RMSNorm and SwiGLU, and gemm.cu's GEMV with the
 * RMSNorm of its input and the SwiGLU of its output fused in must agree to
 * the bit, so that the fused and unfused decode chains give equal logits).
 * Included by .cu files only. */
#ifndef LF_CUDA_DEVICE_CUH
#define LF_CUDA_DEVICE_CUH

#ifdef __CUDACC__
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <string.h>

/* bf16 bits -> float (the low half of a 32-bit word is the lower address) */
__device__ __forceinline__ float lf_bf_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float lf_bf_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

__device__ __forceinline__ float lf_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets
 * the result. sh: 32 floats of shared memory. Deterministic for a given
 * blockDim. */
__device__ __forceinline__ float lf_block_sum(float v, float *sh) {
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = lf_warp_sum(v);
    __syncthreads(); /* sh may still be read by a previous call */
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    if (wid == 0) {
        float t = lane < nw ? sh[lane] : 0.f;
        t = lf_warp_sum(t);
        if (lane == 0) sh[0] = t;
    }
    __syncthreads();
    return sh[0];
}

/* RMSNorm's factor rsqrt(mean(x^2) + eps) of one row, summed by the whole
 * block in float4 steps (dim % 4 == 0, xr 16-byte aligned). The RMSNorm
 * kernel and the GEMV that normalises its own input both call this with 256
 * threads, so they get the same float. */
__device__ __forceinline__ float lf_rms_factor(const float *xr, int dim, float eps, float *sh) {
    const float4 *x4 = reinterpret_cast<const float4 *>(xr);
    float ss = 0.f;
    for (int i = threadIdx.x; i < dim / 4; i += blockDim.x) {
        const float4 v = x4[i];
        ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
    ss = lf_block_sum(ss, sh);
    return rsqrtf(ss / (float)dim + eps);
}

/* Two normalised values as bf16x2 bits (low = a): bf16(x * rs * w), the
 * expression transformers' RMSNorm rounds once (fp32 math, bf16 result). */
__device__ __forceinline__ uint32_t lf_rms_pack(float xa, float xb, float rs, float wa, float wb) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(xa * rs * wa, xb * rs * wb);
    uint32_t u;
    memcpy(&u, &h, 4);
    return u;
}

/* SwiGLU of one element: silu(g) * u, rounded to bf16. */
__device__ __forceinline__ __nv_bfloat16 lf_swiglu1(float g, float u) {
    return __float2bfloat16_rn(g / (1.f + expf(-g)) * u);
}
#endif /* __CUDACC__ */

#endif
