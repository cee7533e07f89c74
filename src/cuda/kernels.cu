/* The small kernels of the CUDA forward (see cuda_kernels.h and the "Small
 * kernels" section of docs/cuda.md): embedding, RMSNorm, bias, SwiGLU,
 * q/k-norm + RoPE + K/V store, causal prefill attention (cuBLASLt for the two
 * products, a causal row-softmax kernel between them), K/V row gather, and
 * sampling (greedy, temperature, top-k, top-p, min-p) without sorting.
 *
 * Every entry point validates its arguments, launches asynchronously on the
 * given stream, and checks cudaGetLastError after each launch. */
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cublasLt.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "core/error.h"
}
#include "cuda/cuda_kernels.h"
#include "kv/score_mode.h"
#include "cuda/cuda_pdl.h"
#include "kv/fp8_code.h"

namespace {

typedef __nv_bfloat16 bf16;

/* ---- conversions ----------------------------------------------------------- */
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }

/* bf16 bits -> float (the low half of a 32-bit word is the lower address) */
__device__ __forceinline__ float bf_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

/* ---- reductions ------------------------------------------------------------ */
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets
 * the result. sh: 32 floats of shared memory. Deterministic for a given
 * blockDim. */
__device__ float block_sum(float v, float *sh) {
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* sh may still be read by a previous call */
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    if (wid == 0) {
        float t = lane < nw ? sh[lane] : 0.f;
        t = warp_sum(t);
        if (lane == 0) sh[0] = t;
    }
    __syncthreads();
    return sh[0];
}
__device__ float block_max(float v, float *sh) {
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    if (wid == 0) {
        float t = lane < nw ? sh[lane] : -INFINITY;
        t = warp_max(t);
        if (lane == 0) sh[0] = t;
    }
    __syncthreads();
    return sh[0];
}

static bool aligned(const void *p, size_t a) { return ((uintptr_t)p % a) == 0; }

static int launched(lf_error *err, const char *what) {
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return lf_fail(err, "cuda %s: launch: %s", what, cudaGetErrorString(e));
    return 0;
}

/* The status lf_launch returned (cuda_pdl.h). */
static int launched(cudaError_t e, lf_error *err, const char *what) {
    if (e != cudaSuccess) return lf_fail(err, "cuda %s: launch: %s", what, cudaGetErrorString(e));
    return 0;
}

static bool dt_ok(int dt) { return dt == LF_DTYPE_BF16 || dt == LF_DTYPE_F16; }

/* ============================================================================
 * embed
 * ========================================================================== */
__global__ void k_embed(const bf16 *table, int vocab, int hidden, const int32_t *tokens, float *x, int vec) {
    lf_pdl_wait();
    const int64_t r = blockIdx.x;
    const int tok = tokens[r];
    float *xr = x + r * hidden;
    if (tok < 0 || tok >= vocab) {
        for (int i = threadIdx.x; i < hidden; i += blockDim.x) xr[i] = 0.f;
        return;
    }
    const bf16 *tr = table + (int64_t)tok * hidden;
    if (vec) { /* hidden % 8 == 0, table and x 16-byte aligned */
        const uint4 *src = reinterpret_cast<const uint4 *>(tr);
        float4 *dst = reinterpret_cast<float4 *>(xr);
        for (int i = threadIdx.x; i < hidden / 8; i += blockDim.x) {
            const uint4 u = src[i];
            dst[2 * i] = make_float4(bf_lo(u.x), bf_hi(u.x), bf_lo(u.y), bf_hi(u.y));
            dst[2 * i + 1] = make_float4(bf_lo(u.z), bf_hi(u.z), bf_lo(u.w), bf_hi(u.w));
        }
    } else {
        for (int i = threadIdx.x; i < hidden; i += blockDim.x) xr[i] = __bfloat162float(tr[i]);
    }
}

/* ============================================================================
 * RMSNorm: one block per row
 * ========================================================================== */
constexpr int NORM_THREADS = 256;

__global__ void __launch_bounds__(NORM_THREADS) k_rmsnorm(const float *x, const bf16 *w, int dim, float eps,
                                                         bf16 *y, int vec) {
    lf_pdl_wait();
    __shared__ float sh[32];
    const int64_t r = blockIdx.x;
    const float *xr = x + r * dim;
    bf16 *yr = y + r * dim;
    float ss = 0.f;
    if (vec) { /* dim % 4 == 0; x 16-byte, w and y 8-byte aligned */
        const float4 *x4 = reinterpret_cast<const float4 *>(xr);
        for (int i = threadIdx.x; i < dim / 4; i += blockDim.x) {
            const float4 v = x4[i];
            ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
    } else {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
    }
    ss = block_sum(ss, sh);
    const float rs = rsqrtf(ss / (float)dim + eps);
    if (vec) {
        const float4 *x4 = reinterpret_cast<const float4 *>(xr);
        const uint2 *w4 = reinterpret_cast<const uint2 *>(w);
        uint2 *y4 = reinterpret_cast<uint2 *>(yr);
        for (int i = threadIdx.x; i < dim / 4; i += blockDim.x) {
            const float4 v = x4[i];
            const uint2 wu = w4[i];
            __nv_bfloat162 a = __floats2bfloat162_rn(v.x * rs * bf_lo(wu.x), v.y * rs * bf_hi(wu.x));
            __nv_bfloat162 b = __floats2bfloat162_rn(v.z * rs * bf_lo(wu.y), v.w * rs * bf_hi(wu.y));
            uint2 o;
            memcpy(&o.x, &a, 4);
            memcpy(&o.y, &b, 4);
            y4[i] = o;
        }
    } else {
        for (int i = threadIdx.x; i < dim; i += blockDim.x)
            yr[i] = __float2bfloat16_rn(xr[i] * rs * __bfloat162float(w[i]));
    }
}

/* ============================================================================
 * bias, SwiGLU: element-wise, grid-stride
 * ========================================================================== */
__global__ void k_add_bias(float *y, const bf16 *b, int64_t total, int cols) {
    lf_pdl_wait();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
        y[i] += __bfloat162float(b[i % cols]);
}

__global__ void k_swiglu(const float *gu, int64_t total, int inter, bf16 *out) {
    lf_pdl_wait();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / inter, j = i % inter;
        const float g = gu[r * 2 * inter + j], u = gu[r * 2 * inter + inter + j];
        out[i] = __float2bfloat16_rn(g / (1.f + expf(-g)) * u);
    }
}

static unsigned elementwise_blocks(int64_t total) {
    int64_t b = (total + 255) / 256;
    if (b > 65536) b = 65536;
    return (unsigned)(b < 1 ? 1 : b);
}

/* ============================================================================
 * q/k-norm + RoPE + store: one block per row, one warp per head
 * ========================================================================== */
constexpr int ROPE_THREADS = 256;
constexpr int ROPE_PAIRS = 4; /* head_dim <= 256: at most 4 pairs (i, i + hd/2) per lane */

/* One K or V row held by a warp (lane holds elements lane + 32j and
 * lane + 32j + hd/2) stored as FP8 at byte offset o: the scale from the
 * row's |max| and its finiteness, then each element's code
 * (src/kv/fp8_code.h, the CPU cache's rule). */
__device__ void store_fp8_row(const lf_cuda_rope_store_args &a, void *dst, float *scale, float *norm, int64_t o,
                              const float (&xa)[ROPE_PAIRS], const float (&xb)[ROPE_PAIRS], int lane) {
    const int hd = a.head_dim, half = hd / 2;
    float amax = 0.f;
    bool fin = true;
#pragma unroll
    for (int j = 0; j < ROPE_PAIRS; j++)
        if (lane + 32 * j < half) {
            fin = fin && isfinite(xa[j]) && isfinite(xb[j]);
            amax = fmaxf(amax, fmaxf(fabsf(xa[j]), fabsf(xb[j])));
        }
    for (int m = 16; m > 0; m >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, m));
    fin = __all_sync(0xffffffffu, fin);
    const float sc = lf_fp8_row_scale(amax, fin);
    uint8_t *d = static_cast<uint8_t *>(dst) + o;
    float l1 = 0.f; /* sum of |code value| (exact in fp32 but for the last bits of a 128-term sum) */
#pragma unroll
    for (int j = 0; j < ROPE_PAIRS; j++) {
        const int i = lane + 32 * j;
        if (i < half) {
            const uint8_t ca = lf_fp8_row_code(xa[j], sc), cb = lf_fp8_row_code(xb[j], sc);
            d[i] = ca;
            d[i + half] = cb;
            l1 += fabsf(lf_fp8_value(ca)) + fabsf(lf_fp8_value(cb));
        }
    }
    if (norm) l1 = warp_sum(l1);
    if (lane == 0) {
        scale[o / hd] = sc;
        if (norm) norm[o / hd] = sc * l1; /* NaN for a non-finite row, 0 for zeros */
    }
}

template <typename T>
__global__ void __launch_bounds__(ROPE_THREADS) k_rope_store(lf_cuda_rope_store_args a) {
    lf_pdl_wait();
    const int r = blockIdx.x;
    const int nh = a.n_heads, nkv = a.n_kv_heads, hd = a.head_dim, half = hd / 2;
    const int total = nh + 2 * nkv;
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const float *row = a.qkv + (int64_t)r * total * hd;
    const int32_t pos = a.pos[r];
    const int32_t e = a.row_entry ? a.row_entry[r] : 0;
    int32_t s;
    if (a.slot_by_entry) s = e >= 0 ? a.slot_by_entry[e] : -1;
    else s = a.row_slot ? a.row_slot[r] : r;
    const bool store = e >= 0 && s >= 0;
    if (threadIdx.x == 0 && store && a.cache_pos) a.cache_pos[(int64_t)e * a.slot_entry_stride + s] = pos;
    const bf16 *bias = static_cast<const bf16 *>(a.bias);
    const float fpos = (float)pos;

    for (int hh = wid; hh < total; hh += nw) {
        const int kind = hh < nh ? 0 : (hh < nh + nkv ? 1 : 2); /* q, k, v */
        const float *x = row + (int64_t)hh * hd;
        float xa[ROPE_PAIRS], xb[ROPE_PAIRS];
#pragma unroll
        for (int j = 0; j < ROPE_PAIRS; j++) {
            const int i = lane + 32 * j;
            xa[j] = 0.f;
            xb[j] = 0.f;
            if (i < half) {
                xa[j] = x[i];
                xb[j] = x[i + half];
                if (bias) {
                    xa[j] += __bfloat162float(bias[(int64_t)hh * hd + i]);
                    xb[j] += __bfloat162float(bias[(int64_t)hh * hd + i + half]);
                }
            }
        }
        if (kind != 2) {
            const bf16 *nwt = static_cast<const bf16 *>(kind == 0 ? a.q_norm : a.k_norm);
            if (nwt) { /* RMSNorm over head_dim (warp-uniform branch) */
                float ss = 0.f;
#pragma unroll
                for (int j = 0; j < ROPE_PAIRS; j++) ss += xa[j] * xa[j] + xb[j] * xb[j];
                ss = warp_sum(ss);
                const float rs = rsqrtf(ss / (float)hd + a.eps);
#pragma unroll
                for (int j = 0; j < ROPE_PAIRS; j++) {
                    const int i = lane + 32 * j;
                    if (i < half) {
                        xa[j] = xa[j] * rs * __bfloat162float(nwt[i]);
                        xb[j] = xb[j] * rs * __bfloat162float(nwt[i + half]);
                    }
                }
            }
#pragma unroll
            for (int j = 0; j < ROPE_PAIRS; j++) {
                const int i = lane + 32 * j;
                if (i < half) {
                    const float ang = __fmul_rn(fpos, a.inv_freq[i]); /* as transformers: float(pos) * inv_freq */
                    float sn, cs;
                    sincosf(ang, &sn, &cs);
                    cs *= a.attention_factor;
                    sn *= a.attention_factor;
                    const float na = xa[j] * cs - xb[j] * sn;
                    const float nb = xb[j] * cs + xa[j] * sn;
                    xa[j] = na;
                    xb[j] = nb;
                }
            }
        }
        if (kind != 0 && store && a.k8_dst) /* warp-uniform */
            store_fp8_row(a, kind == 1 ? a.k8_dst : a.v8_dst, kind == 1 ? a.k8_scale : a.v8_scale,
                          kind == 1 ? nullptr : a.v8_norm,
                          (int64_t)e * a.f8_entry_stride + (int64_t)(hh - nh - (kind == 2 ? nkv : 0)) * a.f8_kvh_stride +
                              (int64_t)s * hd,
                          xa, xb, lane);
        /* writes */
#pragma unroll
        for (int j = 0; j < ROPE_PAIRS; j++) {
            const int i = lane + 32 * j;
            if (i >= half) continue;
            if (kind == 0) {
                const int h = hh;
                T *q = static_cast<T *>(a.q_out);
                const int64_t o = a.q_head_major ? ((int64_t)h * a.n + r) * hd : ((int64_t)r * nh + h) * hd;
                q[o + i] = from_f<T>(xa[j]);
                q[o + i + half] = from_f<T>(xb[j]);
                if (a.q_f32) {
                    const int64_t of = ((int64_t)r * nh + h) * hd;
                    a.q_f32[of + i] = xa[j];
                    a.q_f32[of + i + half] = xb[j];
                }
            } else {
                const int kh = kind == 1 ? hh - nh : hh - nh - nkv;
                if (kind == 1 && a.k_f32) {
                    const int64_t of = ((int64_t)r * nkv + kh) * hd;
                    a.k_f32[of + i] = xa[j];
                    a.k_f32[of + i + half] = xb[j];
                }
                if (store && a.k_dst) {
                    T *dst = static_cast<T *>(kind == 1 ? a.k_dst : a.v_dst);
                    const int64_t o = (int64_t)e * a.kv_entry_stride + (int64_t)kh * a.kvh_stride + (int64_t)s * hd;
                    dst[o + i] = from_f<T>(xa[j]);
                    dst[o + i + half] = from_f<T>(xb[j]);
                }
            }
        }
    }
}

/* ============================================================================
 * gather rows of K or V
 * ========================================================================== */
template <typename V>
__global__ void k_gather_rows(const V *src, int64_t src_stride, V *dst, int64_t dst_stride, int per_row,
                              const int32_t *index) {
    /* block = (row i, KV head); per_row elements of type V per row */
    const int i = blockIdx.x, kvh = blockIdx.y;
    const int32_t s = index[i];
    V *d = dst + (int64_t)kvh * dst_stride + (int64_t)i * per_row;
    if (s < 0) {
        for (int t = threadIdx.x; t < per_row; t += blockDim.x) memset(&d[t], 0, sizeof(V));
        return;
    }
    const V *sp = src + (int64_t)kvh * src_stride + (int64_t)s * per_row;
    for (int t = threadIdx.x; t < per_row; t += blockDim.x) d[t] = sp[t];
}

/* ============================================================================
 * prefill attention helpers
 * ========================================================================== */
/* Qc[h][t][d] = q[h][t0 + t][d]; grid (c, nh), block hd */
__global__ void k_prefill_gather_q(const uint16_t *q, uint16_t *qc, int n, int t0, int c, int hd) {
    const int t = blockIdx.x, h = blockIdx.y;
    const uint16_t *s = q + ((int64_t)h * n + t0 + t) * hd;
    uint16_t *d = qc + ((int64_t)h * c + t) * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) d[i] = s[i];
}

/* out[t0 + t][h][d] = Oc[h][t][d]; grid (c, nh), block hd */
__global__ void k_prefill_scatter_o(const uint16_t *oc, uint16_t *out, int nh, int t0, int c, int hd) {
    const int t = blockIdx.x, h = blockIdx.y;
    const uint16_t *s = oc + ((int64_t)h * c + t) * hd;
    uint16_t *d = out + ((int64_t)(t0 + t) * nh + h) * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) d[i] = s[i];
}

/* Row (h, t) of the chunk sees keys 0..t0+t: P = softmax(S) there, 0 up to t1. */
constexpr int SOFTMAX_THREADS = 128;
template <typename T>
__global__ void __launch_bounds__(SOFTMAX_THREADS) k_causal_softmax(const float *S, T *P, int64_t ld, int c, int t0,
                                                                    int t1) {
    __shared__ float sh[32];
    const int64_t row = blockIdx.x;
    const int t = (int)(row % c);
    const int L = t0 + t + 1;
    const float *s = S + row * ld;
    T *p = P + row * ld;
    float m = -INFINITY;
    for (int k = threadIdx.x; k < L; k += blockDim.x) m = fmaxf(m, s[k]);
    m = block_max(m, sh);
    float sum = 0.f;
    for (int k = threadIdx.x; k < L; k += blockDim.x) sum += expf(s[k] - m);
    sum = block_sum(sum, sh);
    const float inv = 1.f / sum;
    for (int k = threadIdx.x; k < t1; k += blockDim.x) p[k] = from_f<T>(k < L ? expf(s[k] - m) * inv : 0.f);
}

/* ============================================================================
 * sampling: one block per row
 * ========================================================================== */
constexpr int SAMPLE_THREADS = 1024;
constexpr int SAMPLE_WARPS = SAMPLE_THREADS / 32;
constexpr int MASS_COPIES = 8; /* privatised mass histograms (fewer atomic collisions) */
constexpr float MASS_ONE = 1099511627776.0f; /* 2^40: fixed-point unit of probability mass */

/* float -> key whose unsigned order is the float order; NaN lowest; -0 = +0 */
__device__ __forceinline__ uint32_t fkey(float f) {
    if (f != f) return 0u;
    if (f == 0.f) f = 0.f;
    const uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* unnormalised probability of a logit: exp((l - m) / T). k_sample calls it
 * only on rows whose logits are finite or -inf, with m the finite max. */
__device__ __forceinline__ float sweight(float l, float m, float T) { return expf((l - m) / T); }

__device__ __forceinline__ uint64_t splitmix64(uint64_t x) {
    uint64_t z = x + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

struct sample_smem {
    unsigned int cnt[256];
    unsigned long long mass[MASS_COPIES][256];
    float fred[32];
    float bv[SAMPLE_WARPS];
    int bi[SAMPLE_WARPS];
    float wtot[SAMPLE_WARPS];
    uint32_t prefix;
    uint32_t kk;
    unsigned long long acc, need;
    int wsel;
    float rloc;
    float amax;
    int aidx;
};

/* argmax over non-NaN values, lowest index on ties; -1 when every value is
 * NaN. *usable: no value is NaN or +inf and the max is not -inf (the rule of
 * the CPU sampler's lf_logits_usable), found in the same pass over the row
 * (one compare per value) and reduced by the barrier the argmax needs anyway. */
__device__ void row_argmax(const float *x, int V, sample_smem &sm, float *vmax, int *imax, bool *usable) {
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    float bv = -INFINITY;
    int bi = -1;
    int broken = 0; /* this thread saw a NaN or a +inf */
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        const float l = x[i];
        broken |= !(l < INFINITY);
        if (l == l && (bi < 0 || l > bv)) {
            bv = l;
            bi = i;
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) {
            bv = ov;
            bi = oi;
        }
    }
    if (lane == 0) {
        sm.bv[wid] = bv;
        sm.bi[wid] = bi;
    }
    broken = __syncthreads_or(broken);
    if (threadIdx.x == 0) {
        float v = -INFINITY;
        int idx = -1;
        for (int w = 0; w < SAMPLE_WARPS; w++)
            if (sm.bi[w] >= 0 && (idx < 0 || sm.bv[w] > v || (sm.bv[w] == v && sm.bi[w] < idx))) {
                v = sm.bv[w];
                idx = sm.bi[w];
            }
        sm.amax = v;
        sm.aidx = idx;
    }
    __syncthreads();
    *vmax = sm.amax;
    *imax = sm.aidx;
    *usable = !broken && sm.amax != -INFINITY;
}

/* The top-k threshold key of row x: the k-th largest key, 0 without top-k. */
__device__ __forceinline__ uint32_t sample_topk_threshold(const float *x, int V, int top_k, sample_smem &sm) {
    const int tid = threadIdx.x, lane = tid & 31;
    uint32_t thr = 0;
    if (top_k > 0 && top_k < V) {
        uint32_t prefix = 0, pmask = 0, kk = (uint32_t)top_k;
        for (int shift = 24; shift >= 0; shift -= 8) {
            for (int b = tid; b < 256; b += blockDim.x) sm.cnt[b] = 0;
            __syncthreads();
            for (int base = 0; base < V; base += SAMPLE_THREADS) {
                const int i = base + tid;
                int bin = -1;
                if (i < V) {
                    const uint32_t key = fkey(x[i]);
                    if ((key & pmask) == prefix) bin = (int)((key >> shift) & 255u);
                }
                const unsigned grp = __match_any_sync(0xffffffffu, bin);
                if (bin >= 0 && lane == __ffs(grp) - 1) atomicAdd(&sm.cnt[bin], (unsigned)__popc(grp));
            }
            __syncthreads();
            if (tid == 0) {
                uint32_t acc = 0;
                int b = 255;
                for (; b > 0; b--) {
                    if (acc + sm.cnt[b] >= kk) break;
                    acc += sm.cnt[b];
                }
                sm.prefix = prefix | ((uint32_t)b << shift);
                sm.kk = kk - acc;
            }
            __syncthreads();
            prefix = sm.prefix;
            kk = sm.kk;
            pmask |= 255u << shift;
        }
        thr = prefix;
    }
    return thr;
}

/* The top-p threshold key over the keys >= thr (raised to it, or thr). */
__device__ __forceinline__ uint32_t sample_topp_threshold(const float *x, int V, float m, float T, float top_p,
                                                          uint32_t thr, sample_smem &sm) {
    const int tid = threadIdx.x, wid = tid >> 5;
    if (top_p < 1.f) {
        float z = 0.f;
        for (int i = tid; i < V; i += blockDim.x) {
            const float l = x[i];
            if (fkey(l) >= thr) z += sweight(l, m, T);
        }
        z = block_sum(z, sm.fred);
        const float scl = MASS_ONE / z;
        uint32_t prefix = 0, pmask = 0;
        for (int shift = 24; shift >= 0; shift -= 8) {
            for (int b = tid; b < MASS_COPIES * 256; b += blockDim.x) (&sm.mass[0][0])[b] = 0ull;
            __syncthreads();
            unsigned long long *hist = sm.mass[wid % MASS_COPIES];
            for (int i = tid; i < V; i += blockDim.x) {
                const float l = x[i];
                const uint32_t key = fkey(l);
                if (key < thr || (key & pmask) != prefix) continue;
                const unsigned long long u = __float2ull_rz(sweight(l, m, T) * scl);
                if (u) atomicAdd(&hist[(key >> shift) & 255u], u);
            }
            __syncthreads();
            for (int b = tid; b < 256; b += blockDim.x) {
                unsigned long long t = 0;
                for (int c = 0; c < MASS_COPIES; c++) t += sm.mass[c][b];
                sm.mass[0][b] = t;
            }
            __syncthreads();
            if (tid == 0) {
                unsigned long long acc = shift == 24 ? 0ull : sm.acc, need;
                if (shift == 24) {
                    unsigned long long tot = 0;
                    for (int b = 0; b < 256; b++) tot += sm.mass[0][b];
                    need = (unsigned long long)ceil((double)top_p * (double)tot);
                    if (need < 1) need = 1;
                    sm.need = need;
                } else {
                    need = sm.need;
                }
                int b = 255;
                for (; b > 0; b--) {
                    if (acc + sm.mass[0][b] >= need) break;
                    acc += sm.mass[0][b];
                }
                sm.acc = acc;
                sm.prefix = prefix | ((uint32_t)b << shift);
            }
            __syncthreads();
            prefix = sm.prefix;
            pmask |= 255u << shift;
        }
        if (prefix > thr) thr = prefix;
    }
    return thr;
}

/* The warp whose ids hold the draw (sm.wsel, -1: no mass) and where in its
 * mass the draw falls (sm.rloc): per-warp totals of the kept weights, the
 * draw of (row_seed, row_step) scaled to their sum. */
__device__ __forceinline__ void sample_choose_warp(const float *x, int V, float m, float T, uint32_t thr, float wcut,
                                                   int span, uint64_t row_seed, int32_t row_step, sample_smem &sm) {
    const int tid = threadIdx.x, lane = tid & 31, wid = tid >> 5;
    const int lo = wid * span, hi = min(V, lo + span);
    float part = 0.f;
    for (int i = lo + lane; i < hi; i += 32) {
        const float l = x[i];
        if (fkey(l) >= thr) {
            const float w = sweight(l, m, T);
            if (w > 0.f && w >= wcut) part += w;
        }
    }
    part = warp_sum(part);
    if (lane == 0) sm.wtot[wid] = part;
    __syncthreads();
    if (tid == 0) {
        float tot = 0.f;
        for (int w = 0; w < SAMPLE_WARPS; w++) tot += sm.wtot[w];
        const uint64_t h = splitmix64(row_seed ^ splitmix64((uint64_t)(uint32_t)row_step));
        const double u = (double)(h >> 11) * (1.0 / 9007199254740992.0);
        float rr = (float)(u * (double)tot);
        int sel = -1, last = -1;
        float before = 0.f;
        for (int w = 0; w < SAMPLE_WARPS; w++) {
            if (!(sm.wtot[w] > 0.f)) continue;
            last = w;
            if (rr < before + sm.wtot[w]) {
                sel = w;
                break;
            }
            before += sm.wtot[w];
        }
        if (sel < 0) { /* rounding put r at the very top: the last kept token */
            sel = last;
            rr = INFINITY;
            before = 0.f;
        }
        sm.wsel = sel;
        sm.rloc = rr - before;
    }
}

/* In warp wsel (all its lanes): the first kept id whose running mass
 * exceeds rl, else the last kept id, else am. */
__device__ __forceinline__ int sample_pick_in_warp(const float *x, int V, float m, float T, uint32_t thr, float wcut,
                                                   int span, int wsel, float rl, int am) {
    const int lane = threadIdx.x & 31;
    const int wlo = wsel * span, whi = min(V, wlo + span);
    float run = 0.f;
    int last = -1, pick = -1;
    for (int base = wlo; base < whi; base += 32) {
        const int i = base + lane;
        float w = 0.f;
        if (i < whi) {
            const float l = x[i];
            if (fkey(l) >= thr) {
                const float ww = sweight(l, m, T);
                if (ww > 0.f && ww >= wcut) w = ww;
            }
        }
        float incl = w;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const float t = __shfl_up_sync(0xffffffffu, incl, o);
            if (lane >= o) incl += t;
        }
        const float cum = run + incl;
        const unsigned hit = __ballot_sync(0xffffffffu, w > 0.f && cum > rl);
        const unsigned any = __ballot_sync(0xffffffffu, w > 0.f);
        if (any) last = base + 31 - __clz(any);
        if (hit) {
            pick = base + __ffs(hit) - 1;
            break;
        }
        run += __shfl_sync(0xffffffffu, incl, 31);
    }
    return pick >= 0 ? pick : (last >= 0 ? last : am);
}

__global__ void __launch_bounds__(SAMPLE_THREADS) k_sample(const float *logits, int V, float T, int top_k,
                                                           float top_p, float min_p, const uint64_t *row_seed,
                                                           const int32_t *row_step, int32_t *out) {
    lf_pdl_wait();
    __shared__ sample_smem sm;
    const int64_t r = blockIdx.x;
    const float *x = logits + r * V;
    const int tid = threadIdx.x, lane = tid & 31, wid = tid >> 5;

    float m;
    int am;
    bool usable;
    row_argmax(x, V, sm, &m, &am, &usable);
    if (!usable || T == 0.f) { /* broken logits are refused; greedy takes the argmax */
        if (tid == 0) out[r] = usable ? am : LF_SAMPLE_NONFINITE;
        return;
    }

    /* ---- top-k: the k-th largest key, by radix select on counts ---- */
    uint32_t thr = sample_topk_threshold(x, V, top_k, sm);
    /* ---- top-p: the largest key whose upper mass reaches top_p, by radix
     * select on fixed-point probability mass (integer sums: deterministic) ---- */
    thr = sample_topp_threshold(x, V, m, T, top_p, thr, sm);

    /* ---- the kept set: key >= thr, weight >= min_p (relative to the max's
     * weight, which is 1), weight > 0. Inverse CDF over ids in increasing
     * order: warp w owns ids [w*span, (w+1)*span). ---- */
    const float wcut = min_p > 0.f ? min_p : 0.f;
    const int span = (V + SAMPLE_WARPS - 1) / SAMPLE_WARPS;
    sample_choose_warp(x, V, m, T, thr, wcut, span, row_seed[r], row_step[r], sm);
    __syncthreads();
    const int wsel = sm.wsel;
    if (wsel < 0) { /* no mass at all (cannot happen with a finite max): the argmax */
        if (tid == 0) out[r] = am;
        return;
    }
    if (wid != wsel) return;
    const int pick = sample_pick_in_warp(x, V, m, T, thr, wcut, span, wsel, sm.rloc, am);
    if (lane == 0) out[r] = pick;
}

/* ============================================================================
 * cuBLASLt for the prefill
 * ========================================================================== */
static size_t align_of(const void *p, int64_t stride_bytes, int batch) {
    uint64_t v = (uint64_t)(uintptr_t)p;
    if (batch > 1) v |= (uint64_t)stride_bytes;
    size_t a = 256;
    while (a > 1 && v % a) a >>= 1;
    return a;
}

static int lt_fail(lf_error *err, const char *what, cublasStatus_t st) {
    return lf_fail(err, "cuda prefill: %s: %s", what, cublasLtGetStatusString(st));
}

} // namespace

/* The prefill context (opaque in the header). */
struct lf_cuda_prefill_attn {
    int max_n, nh, nkv, hd;
    lf_dtype dt;
    int chunk_rows;  /* rows of Qc / Oc allocated */
    int chunk_limit; /* rows per chunk in use (<= chunk_rows) */
    size_t s_elems;  /* elements of S (fp32) and of P (dt) */
    cublasLtHandle_t lt;
    void *lt_ws;
    size_t lt_ws_bytes;
    float *S;
    void *P, *Qc, *Oc;
    size_t bytes;
};

namespace {

constexpr size_t PREFILL_SCRATCH_MAX = (size_t)256 << 20; /* bytes of S + P */
constexpr int PREFILL_CHUNK_ROWS = 1024;
constexpr size_t LT_WORKSPACE = (size_t)32 << 20;

static int64_t round8(int64_t x) { return (x + 7) / 8 * 8; }

/* D (col-major m x nn, ldd) = alpha * op(A) op(B), batched with strides. */
struct lt_mat {
    const void *p;
    cudaDataType_t type;
    uint64_t rows, cols;
    int64_t ld, stride;
};

static int lt_matmul(lf_cuda_prefill_attn *pf, cublasOperation_t ta, cublasOperation_t tb, const lt_mat &A, const lt_mat &B,
                     const lt_mat &D, int batch, float alpha, cudaStream_t st, lf_error *err) {
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasStatus_t s;
    int rc = -1;
    const float beta = 0.f;
    const lt_mat *mats[3] = {&A, &B, &D};
    cublasLtMatrixLayout_t *lays[3] = {&la, &lb, &ld};
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    uint32_t al[3];

    s = cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (s != CUBLAS_STATUS_SUCCESS) {
        lt_fail(err, "matmul descriptor", s);
        goto done;
    }
    if ((s = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta)) != CUBLAS_STATUS_SUCCESS ||
        (s = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb)) != CUBLAS_STATUS_SUCCESS) {
        lt_fail(err, "matmul transpose attributes", s);
        goto done;
    }
    for (int i = 0; i < 3; i++) {
        const lt_mat *M = mats[i];
        s = cublasLtMatrixLayoutCreate(lays[i], M->type, M->rows, M->cols, M->ld);
        if (s != CUBLAS_STATUS_SUCCESS) {
            lt_fail(err, "matrix layout", s);
            goto done;
        }
        const int32_t bc = batch;
        const int64_t so = M->stride;
        if ((s = cublasLtMatrixLayoutSetAttribute(*lays[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc)) !=
                CUBLAS_STATUS_SUCCESS ||
            (s = cublasLtMatrixLayoutSetAttribute(*lays[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &so,
                                                  sizeof so)) != CUBLAS_STATUS_SUCCESS) {
            lt_fail(err, "matrix batch attributes", s);
            goto done;
        }
        const size_t es = M->type == CUDA_R_32F ? 4 : 2;
        al[i] = (uint32_t)align_of(M->p, M->stride * (int64_t)es, batch);
    }
    s = cublasLtMatmulPreferenceCreate(&pref);
    if (s != CUBLAS_STATUS_SUCCESS) {
        lt_fail(err, "matmul preference", s);
        goto done;
    }
    if ((s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &pf->lt_ws_bytes,
                                                  sizeof pf->lt_ws_bytes)) != CUBLAS_STATUS_SUCCESS ||
        (s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al[0],
                                                  sizeof al[0])) != CUBLAS_STATUS_SUCCESS ||
        (s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al[1],
                                                  sizeof al[1])) != CUBLAS_STATUS_SUCCESS ||
        (s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al[2],
                                                  sizeof al[2])) != CUBLAS_STATUS_SUCCESS ||
        (s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al[2],
                                                  sizeof al[2])) != CUBLAS_STATUS_SUCCESS) {
        lt_fail(err, "matmul preference attributes", s);
        goto done;
    }
    s = cublasLtMatmulAlgoGetHeuristic(pf->lt, op, la, lb, ld, ld, pref, 1, &heur, &found);
    if (s != CUBLAS_STATUS_SUCCESS || found < 1) {
        lf_fail(err, "cuda prefill: no cuBLASLt algorithm for %llux%llu (k %llu, batch %d): %s",
                (unsigned long long)D.rows, (unsigned long long)D.cols,
                (unsigned long long)(ta == CUBLAS_OP_N ? A.cols : A.rows), batch,
                s != CUBLAS_STATUS_SUCCESS ? cublasLtGetStatusString(s) : "none found");
        goto done;
    }
    s = cublasLtMatmul(pf->lt, op, &alpha, A.p, la, B.p, lb, &beta, D.p, ld, const_cast<void *>(D.p), ld, &heur.algo,
                       pf->lt_ws, pf->lt_ws_bytes, st);
    if (s != CUBLAS_STATUS_SUCCESS) {
        lt_fail(err, "cublasLtMatmul", s);
        goto done;
    }
    rc = 0;
done:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (ld) cublasLtMatrixLayoutDestroy(ld);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (op) cublasLtMatmulDescDestroy(op);
    return rc;
}

} // namespace

/* ============================================================================
 * entry points
 * ========================================================================== */
extern "C" int lf_cuda_embed(const void *table, int vocab, int hidden, const int32_t *tokens, int n, float *x,
                             void *stream, lf_error *err) {
    if (n < 0 || vocab < 1 || hidden < 1)
        return lf_fail(err, "cuda embed: bad shape (n %d, vocab %d, hidden %d)", n, vocab, hidden);
    if (n == 0) return 0;
    if (!table || !tokens || !x) return lf_fail(err, "cuda embed: table, tokens and x are required");
    const int vec = hidden % 8 == 0 && aligned(table, 16) && aligned(x, 16);
    return launched(lf_launch(k_embed, dim3((unsigned)n), dim3(256), 0, (cudaStream_t)stream,
                              static_cast<const bf16 *>(table), vocab, hidden, tokens, x, vec),
                    err, "embed");
}

extern "C" int lf_cuda_rmsnorm(const float *x, const void *w, int n, int dim, float eps, void *y, void *stream,
                               lf_error *err) {
    if (n < 0 || dim < 1) return lf_fail(err, "cuda rmsnorm: bad shape (n %d, dim %d)", n, dim);
    if (!(eps >= 0.f)) return lf_fail(err, "cuda rmsnorm: eps %g must be >= 0", (double)eps);
    if (n == 0) return 0;
    if (!x || !w || !y) return lf_fail(err, "cuda rmsnorm: x, w and y are required");
    const int vec = dim % 4 == 0 && aligned(x, 16) && aligned(w, 8) && aligned(y, 8);
    return launched(lf_launch(k_rmsnorm, dim3((unsigned)n), dim3(NORM_THREADS), 0, (cudaStream_t)stream, x,
                              static_cast<const bf16 *>(w), dim, eps, static_cast<bf16 *>(y), vec),
                    err, "rmsnorm");
}

extern "C" int lf_cuda_add_bias(float *y, const void *b, int n, int cols, void *stream, lf_error *err) {
    if (n < 0 || cols < 1) return lf_fail(err, "cuda add_bias: bad shape (n %d, cols %d)", n, cols);
    if (n == 0) return 0;
    if (!y || !b) return lf_fail(err, "cuda add_bias: y and b are required");
    const int64_t total = (int64_t)n * cols;
    return launched(lf_launch(k_add_bias, dim3(elementwise_blocks(total)), dim3(256), 0, (cudaStream_t)stream, y,
                              static_cast<const bf16 *>(b), total, cols),
                    err, "add_bias");
}

extern "C" int lf_cuda_swiglu(const float *gu, int n, int inter, void *out, void *stream, lf_error *err) {
    if (n < 0 || inter < 1) return lf_fail(err, "cuda swiglu: bad shape (n %d, inter %d)", n, inter);
    if (n == 0) return 0;
    if (!gu || !out) return lf_fail(err, "cuda swiglu: gu and out are required");
    const int64_t total = (int64_t)n * inter;
    return launched(lf_launch(k_swiglu, dim3(elementwise_blocks(total)), dim3(256), 0, (cudaStream_t)stream, gu,
                              total, inter, static_cast<bf16 *>(out)),
                    err, "swiglu");
}

extern "C" int lf_cuda_rope_store(const lf_cuda_rope_store_args *a, void *stream, lf_error *err) {
    if (!a) return lf_fail(err, "cuda rope_store: no arguments");
    if (a->n < 0) return lf_fail(err, "cuda rope_store: n %d must be >= 0", a->n);
    if (a->n_heads < 1 || a->n_kv_heads < 1 || a->n_heads % a->n_kv_heads)
        return lf_fail(err, "cuda rope_store: %d query heads not a multiple of %d KV heads", a->n_heads,
                       a->n_kv_heads);
    if (a->head_dim < 2 || a->head_dim > 256 || a->head_dim % 2)
        return lf_fail(err, "cuda rope_store: head_dim %d must be even and in 2..256", a->head_dim);
    if (!dt_ok(a->dt)) return lf_fail(err, "cuda rope_store: dtype %d must be bf16 or f16", a->dt);
    if (!(a->eps >= 0.f)) return lf_fail(err, "cuda rope_store: eps %g must be >= 0", (double)a->eps);
    if (!isfinite(a->attention_factor))
        return lf_fail(err, "cuda rope_store: attention_factor %g is not finite", (double)a->attention_factor);
    if (a->kvh_stride < a->head_dim || a->kv_entry_stride < 0 || a->slot_entry_stride < 0)
        return lf_fail(err, "cuda rope_store: bad strides (kvh %lld < head_dim %d, or a negative entry stride)",
                       (long long)a->kvh_stride, a->head_dim);
    const bool f8 = a->k8_dst || a->v8_dst;
    if (f8 && (!a->k8_dst || !a->v8_dst || !a->k8_scale || !a->v8_scale || a->f8_entry_stride < 0 ||
               a->f8_kvh_stride < a->head_dim || a->f8_entry_stride % a->head_dim || a->f8_kvh_stride % a->head_dim))
        return lf_fail(err, "cuda rope_store: the FP8 store needs k8_dst, v8_dst, k8_scale, v8_scale and strides "
                            "that are multiples of head_dim %d", a->head_dim);
    if (a->n == 0) return 0;
    if (!a->qkv || !a->inv_freq || !a->pos || !a->q_out || (!a->k_dst && !f8) || !a->k_dst != !a->v_dst)
        return lf_fail(err, "cuda rope_store: qkv, inv_freq, pos, q_out, and k_dst and v_dst (or the FP8 store) "
                            "are required");
    const cudaStream_t st = (cudaStream_t)stream;
    const dim3 grid((unsigned)a->n), block(ROPE_THREADS);
    const cudaError_t e = a->dt == LF_DTYPE_BF16 ? lf_launch(k_rope_store<__nv_bfloat16>, grid, block, 0, st, *a)
                                                 : lf_launch(k_rope_store<__half>, grid, block, 0, st, *a);
    return launched(e, err, "rope_store");
}

extern "C" int lf_cuda_gather_rows(const void *src, int64_t src_kvh_stride, void *dst, int64_t dst_kvh_stride,
                                   int n_kv_heads, int head_dim, lf_dtype dt, const int32_t *index, int nk,
                                   void *stream, lf_error *err) {
    if (nk < 0 || n_kv_heads < 1 || n_kv_heads > 65535 || head_dim < 1)
        return lf_fail(err, "cuda gather_rows: bad shape (nk %d, %d KV heads, head_dim %d)", nk, n_kv_heads, head_dim);
    if (!dt_ok(dt)) return lf_fail(err, "cuda gather_rows: dtype %d must be bf16 or f16", (int)dt);
    if (n_kv_heads > 1 && (src_kvh_stride < 0 || dst_kvh_stride < (int64_t)nk * head_dim))
        return lf_fail(err, "cuda gather_rows: dst KV-head stride %lld smaller than %d rows of %d",
                       (long long)dst_kvh_stride, nk, head_dim);
    if (nk == 0) return 0;
    if (!src || !dst || !index) return lf_fail(err, "cuda gather_rows: src, dst and index are required");
    if (src == dst) return lf_fail(err, "cuda gather_rows: src and dst must not overlap");
    const cudaStream_t st = (cudaStream_t)stream;
    const dim3 grid((unsigned)nk, (unsigned)n_kv_heads);
    if (head_dim % 8 == 0 && src_kvh_stride % 8 == 0 && dst_kvh_stride % 8 == 0 && aligned(src, 16) &&
        aligned(dst, 16)) {
        const int per = head_dim / 8;
        k_gather_rows<uint4><<<grid, per < 128 ? per : 128, 0, st>>>(static_cast<const uint4 *>(src),
                                                                    src_kvh_stride / 8, static_cast<uint4 *>(dst),
                                                                    dst_kvh_stride / 8, per, index);
    } else {
        k_gather_rows<uint16_t><<<grid, head_dim < 256 ? head_dim : 256, 0, st>>>(
            static_cast<const uint16_t *>(src), src_kvh_stride, static_cast<uint16_t *>(dst), dst_kvh_stride,
            head_dim, index);
    }
    return launched(err, "gather_rows");
}

/* ---- per-slot stats of STORED-mode policies ---------------------------------- */
/* block = one row; warp w < nkv takes KV head w */
template <typename T>
__global__ void __launch_bounds__(1024) k_slot_stat(const T *k, int64_t entry_stride, int64_t kvh_stride, int hd,
                                                    int nkv, const int32_t *row_entry, const int32_t *slot_by_entry,
                                                    float *out, int64_t out_entry_stride) {
    __shared__ float norms[32];
    const int r = blockIdx.x, w = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t e = row_entry ? row_entry[r] : 0;
    const int slot = slot_by_entry ? slot_by_entry[e] : r;
    if (slot < 0) return; /* the same for the whole block */
    const T *kr = k + e * entry_stride + (int64_t)w * kvh_stride + (int64_t)slot * hd;
    float s = 0.f;
    for (int d = lane; d < hd; d += 32) {
        const float x = static_cast<float>(kr[d]);
        s += x * x;
    }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) norms[w] = sqrtf(s);
    __syncthreads();
    if (threadIdx.x == 0) {
        float t = 0.f;
        for (int h = 0; h < nkv; h++) t += norms[h];
        out[e * out_entry_stride + slot] = -t / (float)nkv;
    }
}

extern "C" int lf_cuda_slot_stat(int stat, const void *k, lf_dtype dt, int64_t kv_entry_stride, int64_t kvh_stride,
                                 int n_kv_heads, int head_dim, const int32_t *row_entry, const int32_t *slot_by_entry,
                                 int n_rows, float *out, int64_t out_entry_stride, void *stream, lf_error *err) {
    if (stat != LF_SLOT_STAT_NEG_KEY_L2) return lf_fail(err, "cuda slot_stat: unknown statistic %d", stat);
    if (n_rows < 0 || n_kv_heads < 1 || n_kv_heads > 32 || head_dim < 1)
        return lf_fail(err, "cuda slot_stat: bad shape (%d rows, %d KV heads, head_dim %d)", n_rows, n_kv_heads,
                       head_dim);
    if (!dt_ok(dt)) return lf_fail(err, "cuda slot_stat: dtype %d must be bf16 or f16", (int)dt);
    if (n_rows == 0) return 0;
    if (!k || !out) return lf_fail(err, "cuda slot_stat: k and out are required");
    const cudaStream_t st = (cudaStream_t)stream;
    const dim3 grid((unsigned)n_rows), block((unsigned)(32 * n_kv_heads));
    if (dt == LF_DTYPE_BF16)
        k_slot_stat<<<grid, block, 0, st>>>(static_cast<const __nv_bfloat16 *>(k), kv_entry_stride, kvh_stride,
                                            head_dim, n_kv_heads, row_entry, slot_by_entry, out, out_entry_stride);
    else
        k_slot_stat<<<grid, block, 0, st>>>(static_cast<const __half *>(k), kv_entry_stride, kvh_stride, head_dim,
                                            n_kv_heads, row_entry, slot_by_entry, out, out_entry_stride);
    return launched(err, "slot_stat");
}

/* ---- window softmax sums (SnapKV, H2O/VATP prefill) --------------------------- */
constexpr int WIN_MAX = 32;  /* queries in the window (LF_SNAPKV_WINDOW) */
constexpr int WIN_KEYS = 64; /* keys per block of k_window_scores */

/* Scores of the window's queries of head blockIdx.y against keys
 * [64 blockIdx.x, +64): S[h][t][j] = q_t . k_j * scale, -inf where j >=
 * keys(t). The block stages its q rows and K chunk in shared memory. */
__global__ void __launch_bounds__(256) k_window_scores(const float *q, const float *k, int n, int nh, int nkv,
                                                       int hd, int w, int causal, float scale, float *S) {
    extern __shared__ float wsh[];
    float *sq = wsh;                  /* [w][hd] */
    float *sk = wsh + (size_t)w * hd; /* [WIN_KEYS][hd + 1] (padded against bank conflicts) */
    const int h = blockIdx.y, g = h / (nh / nkv), j0 = blockIdx.x * WIN_KEYS, t0 = n - w;
    const int nk = min(WIN_KEYS, n - j0);
    for (int x = threadIdx.x; x < w * hd; x += blockDim.x) {
        const int t = x / hd, d = x % hd;
        sq[x] = q[((size_t)(t0 + t) * nh + h) * hd + d];
    }
    for (int x = threadIdx.x; x < nk * hd; x += blockDim.x) {
        const int j = x / hd, d = x % hd;
        sk[j * (hd + 1) + d] = k[((size_t)(j0 + j) * nkv + g) * hd + d];
    }
    __syncthreads();
    for (int x = threadIdx.x; x < w * WIN_KEYS; x += blockDim.x) {
        const int t = x / WIN_KEYS, jj = x % WIN_KEYS, j = j0 + jj;
        if (jj >= nk) continue;
        const int keys = causal ? t0 + t + 1 : t0;
        float s = -INFINITY;
        if (j < keys) {
            const float *a = sq + (size_t)t * hd, *b = sk + jj * (hd + 1);
            float acc = 0.f;
            for (int d = 0; d < hd; d++) acc += a[d] * b[d];
            s = acc * scale;
        }
        S[((size_t)h * w + t) * n + j] = s;
    }
}

/* Per (head, query) row of S: max and wgt / sum of exp(s - max). */
__global__ void __launch_bounds__(256) k_window_rowstats(const float *S, int n, float wgt, float2 *stats) {
    __shared__ float sh[32];
    const float *row = S + (size_t)blockIdx.x * n;
    float m = -INFINITY;
    for (int j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, row[j]);
    m = block_max(m, sh);
    float z = 0.f;
    if (m != -INFINITY)
        for (int j = threadIdx.x; j < n; j += blockDim.x) z += expf(row[j] - m);
    z = block_sum(z, sh);
    if (threadIdx.x == 0) stats[blockIdx.x] = make_float2(m, z > 0.f ? wgt / z : 0.f);
}

/* out[j] = sum over rows r (head-major, then query) of exp(S[r][j] - m_r) * inv_r. */
__global__ void k_window_colsum(const float *S, const float2 *stats, int n, int rows, float *out) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n) return;
    float acc = 0.f;
    for (int r = 0; r < rows; r++) {
        const float s = S[(size_t)r * n + j];
        const float2 st = stats[r];
        if (s != -INFINITY) acc += expf(s - st.x) * st.y;
    }
    out[j] = acc;
}

extern "C" size_t lf_cuda_window_sums_bytes(int n, int n_heads, int w) {
    if (n < 1 || n_heads < 1 || w < 1) return 0;
    const size_t rows = (size_t)n_heads * w;
    return ((rows * n * sizeof(float) + 255) & ~(size_t)255) + rows * sizeof(float2);
}

extern "C" int lf_cuda_window_sums(const float *q, const float *k, int n, int n_heads, int n_kv_heads, int head_dim,
                                   int w, int causal, float wgt, float *out, void *scratch, size_t scratch_bytes,
                                   void *stream, lf_error *err) {
    if (n < 1 || n_heads < 1 || n_kv_heads < 1 || n_heads % n_kv_heads || head_dim < 1 || head_dim > 256 ||
        n_heads > 65535)
        return lf_fail(err, "cuda window sums: bad shape (n %d, %d heads, %d KV heads, head_dim %d)", n, n_heads,
                       n_kv_heads, head_dim);
    if (w < 1 || w > WIN_MAX || w > n || (!causal && w >= n))
        return lf_fail(err, "cuda window sums: a window of %d queries for %d tokens (1..%d%s)", w, n, WIN_MAX,
                       causal ? "" : ", fewer than the tokens");
    if (!q || !k || !out || !scratch) return lf_fail(err, "cuda window sums: q, k, out and scratch are required");
    const size_t need = lf_cuda_window_sums_bytes(n, n_heads, w);
    if (scratch_bytes < need)
        return lf_fail(err, "cuda window sums: scratch of %zu bytes, %zu needed", scratch_bytes, need);
    const cudaStream_t st = (cudaStream_t)stream;
    const int rows = n_heads * w;
    float *S = static_cast<float *>(scratch);
    float2 *stats = reinterpret_cast<float2 *>(static_cast<char *>(scratch) +
                                               (((size_t)rows * n * sizeof(float) + 255) & ~(size_t)255));
    const size_t smem = ((size_t)w * head_dim + (size_t)WIN_KEYS * (head_dim + 1)) * sizeof(float);
    if (smem > 48 * 1024) { /* hd 128: 48.3 KB, above the default limit of dynamic shared memory */
        const cudaError_t e = cudaFuncSetAttribute(k_window_scores, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                   (int)smem);
        if (e != cudaSuccess) return lf_fail(err, "cuda window sums: shared memory: %s", cudaGetErrorString(e));
    }
    const float scale = 1.f / sqrtf((float)head_dim);
    k_window_scores<<<dim3((unsigned)((n + WIN_KEYS - 1) / WIN_KEYS), (unsigned)n_heads), 256, smem, st>>>(
        q, k, n, n_heads, n_kv_heads, head_dim, w, causal, scale, S);
    if (launched(err, "window scores")) return -1;
    k_window_rowstats<<<(unsigned)rows, 256, 0, st>>>(S, n, wgt, stats);
    if (launched(err, "window row statistics")) return -1;
    k_window_colsum<<<(unsigned)((n + 255) / 256), 256, 0, st>>>(S, stats, n, rows, out);
    return launched(err, "window column sums");
}

/* ---- repetition penalty ------------------------------------------------------ */
/* Thread (row, word): the word's history bits (with the row's new token, which
 * this thread also stores), and the penalty on each set bit's logit. Every
 * word of a row has one thread, so the bitmap update races with nothing. */
__global__ void k_rep_penalty(float *logits, int vocab, int64_t ld, float penalty, uint32_t *seen, int words,
                              const int32_t *entries, const int32_t *tokens) {
    lf_pdl_wait();
    const int r = blockIdx.x, w = blockIdx.y * blockDim.x + threadIdx.x;
    if (w >= words) return;
    uint32_t *hist = seen + (int64_t)(entries ? entries[r] : r) * words;
    uint32_t bits = hist[w];
    const int tok = tokens ? tokens[r] : -1;
    if (tok >= 0 && tok < vocab && tok / 32 == w) {
        bits |= 1u << (tok % 32);
        hist[w] = bits;
    }
    float *row = logits + (int64_t)r * ld;
    while (bits) {
        const int b = __ffs((int)bits) - 1;
        bits &= bits - 1;
        const int t = w * 32 + b;
        if (t < vocab) row[t] = row[t] > 0.f ? row[t] / penalty : row[t] * penalty;
    }
}

__global__ void k_history_reset(uint32_t *seen, int words, const int32_t *tokens, int n) {
    lf_pdl_wait();
    /* one block: clear, then set (atomics: a prompt repeats tokens) */
    for (int w = threadIdx.x; w < words; w += blockDim.x) seen[w] = 0u;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const int t = tokens[i];
        if (t >= 0 && t / 32 < words) atomicOr(&seen[t / 32], 1u << (t % 32));
    }
}

extern "C" int lf_cuda_repetition_penalty(float *logits, int n, int vocab, int64_t ld, float penalty, uint32_t *seen,
                                          int words, const int32_t *entries, const int32_t *tokens, void *stream,
                                          lf_error *err) {
    if (n < 0 || vocab < 1 || ld < vocab || words != (vocab + 31) / 32)
        return lf_fail(err, "cuda repetition penalty: bad shape (n %d, vocab %d, ld %lld, %d words)", n, vocab,
                       (long long)ld, words);
    if (!(penalty > 0.f) || !isfinite(penalty))
        return lf_fail(err, "cuda repetition penalty: %g must be finite and > 0", (double)penalty);
    if (n == 0) return 0;
    if (!logits || !seen) return lf_fail(err, "cuda repetition penalty: logits and the history are required");
    const dim3 grid((unsigned)n, (unsigned)((words + 255) / 256));
    return launched(lf_launch(k_rep_penalty, grid, dim3(256), 0, (cudaStream_t)stream, logits, vocab, ld, penalty,
                              seen, words, entries, tokens),
                    err, "repetition penalty");
}

extern "C" int lf_cuda_history_reset(uint32_t *seen, int words, const int32_t *tokens, int n, void *stream,
                                     lf_error *err) {
    if (words < 1 || n < 0) return lf_fail(err, "cuda history reset: bad shape (%d words, %d tokens)", words, n);
    if (!seen || (n > 0 && !tokens)) return lf_fail(err, "cuda history reset: the history and tokens are required");
    return launched(lf_launch(k_history_reset, dim3(1), dim3(1024), 0, (cudaStream_t)stream, seen, words, tokens, n),
                    err, "history reset");
}

/* ---- sampling ---------------------------------------------------------------- */
extern "C" size_t lf_cuda_sample_workspace_bytes(int max_n, int vocab) {
    (void)max_n;
    (void)vocab;
    return 0; /* the kernel needs no workspace */
}

extern "C" int lf_cuda_sample(float *logits, int n, int vocab, const lf_sampling *params, const uint64_t *row_seed,
                              const int32_t *row_step, int32_t *out, void *workspace, size_t workspace_bytes,
                              void *stream, lf_error *err) {
    (void)workspace;
    (void)workspace_bytes;
    if (n < 0 || vocab < 1) return lf_fail(err, "cuda sample: bad shape (n %d, vocab %d)", n, vocab);
    if (!params) return lf_fail(err, "cuda sample: no sampling parameters");
    const lf_sampling *p = params;
    if (!(p->temperature >= 0.f) || !isfinite(p->temperature))
        return lf_fail(err, "cuda sample: temperature %g must be finite and >= 0", (double)p->temperature);
    if (p->top_k < 0) return lf_fail(err, "cuda sample: top_k %d must be >= 0", p->top_k);
    if (!(p->top_p > 0.f && p->top_p <= 1.f)) return lf_fail(err, "cuda sample: top_p %g must be in (0, 1]", (double)p->top_p);
    if (!(p->min_p >= 0.f && p->min_p < 1.f)) return lf_fail(err, "cuda sample: min_p %g must be in [0, 1)", (double)p->min_p);
    if (n == 0) return 0;
    if (!logits || !out) return lf_fail(err, "cuda sample: logits and out are required");
    if (p->temperature > 0.f && (!row_seed || !row_step))
        return lf_fail(err, "cuda sample: row_seed and row_step are required when temperature > 0");
    return launched(lf_launch(k_sample, dim3((unsigned)n), dim3(SAMPLE_THREADS), 0, (cudaStream_t)stream, logits,
                              vocab, p->temperature, p->top_k, p->top_p, p->min_p, row_seed, row_step, out),
                    err, "sample");
}

/* ---- prefill attention ------------------------------------------------------- */
extern "C" void lf_cuda_prefill_free(lf_cuda_prefill_attn *p) {
    if (!p) return;
    if (p->lt) cublasLtDestroy(p->lt);
    cudaFree(p->lt_ws);
    cudaFree(p->S);
    cudaFree(p->P);
    cudaFree(p->Qc);
    cudaFree(p->Oc);
    free(p);
}

extern "C" int lf_cuda_prefill_create(int max_n, int n_heads, int n_kv_heads, int head_dim, lf_dtype dt,
                                      lf_cuda_prefill_attn **out, lf_error *err) {
    if (!out) return lf_fail(err, "cuda prefill: no output pointer");
    *out = NULL;
    if (max_n < 1) return lf_fail(err, "cuda prefill: max_n %d must be >= 1", max_n);
    if (n_heads < 1 || n_kv_heads < 1 || n_heads % n_kv_heads)
        return lf_fail(err, "cuda prefill: %d query heads not a multiple of %d KV heads", n_heads, n_kv_heads);
    if (n_heads > 65535) return lf_fail(err, "cuda prefill: %d query heads, at most 65535", n_heads);
    if (head_dim < 8 || head_dim > 256 || head_dim % 8)
        return lf_fail(err, "cuda prefill: head_dim %d must be a multiple of 8 in 8..256", head_dim);
    if (!dt_ok(dt)) return lf_fail(err, "cuda prefill: dtype %d must be bf16 or f16", (int)dt);

    lf_cuda_prefill_attn *p = static_cast<lf_cuda_prefill_attn *>(calloc(1, sizeof *p));
    if (!p) return lf_fail(err, "cuda prefill: out of host memory");
    p->max_n = max_n;
    p->nh = n_heads;
    p->nkv = n_kv_heads;
    p->hd = head_dim;
    p->dt = dt;
    p->chunk_rows = max_n < PREFILL_CHUNK_ROWS ? max_n : PREFILL_CHUNK_ROWS;
    p->chunk_limit = p->chunk_rows;
    const size_t row_elems = (size_t)n_heads * (size_t)round8(max_n); /* one query row of every head */
    size_t s_elems = PREFILL_SCRATCH_MAX / (sizeof(float) + 2);
    if (s_elems > row_elems * (size_t)p->chunk_rows) s_elems = row_elems * (size_t)p->chunk_rows;
    if (s_elems < row_elems) s_elems = row_elems; /* at least one row per chunk */
    p->s_elems = s_elems;
    p->lt_ws_bytes = LT_WORKSPACE;
    const size_t qc_bytes = (size_t)n_heads * p->chunk_rows * head_dim * 2;

    cudaError_t e;
    cublasStatus_t s = cublasLtCreate(&p->lt);
    if (s != CUBLAS_STATUS_SUCCESS) {
        p->lt = NULL;
        lt_fail(err, "cublasLtCreate", s);
        lf_cuda_prefill_free(p);
        return -1;
    }
    if ((e = cudaMalloc(&p->lt_ws, p->lt_ws_bytes)) != cudaSuccess ||
        (e = cudaMalloc((void **)&p->S, s_elems * sizeof(float))) != cudaSuccess ||
        (e = cudaMalloc(&p->P, s_elems * 2)) != cudaSuccess || (e = cudaMalloc(&p->Qc, qc_bytes)) != cudaSuccess ||
        (e = cudaMalloc(&p->Oc, qc_bytes)) != cudaSuccess) {
        lf_fail(err, "cuda prefill: cudaMalloc of the scratch (%zu bytes in all): %s",
                p->lt_ws_bytes + s_elems * 6 + 2 * qc_bytes, cudaGetErrorString(e));
        lf_cuda_prefill_free(p);
        return -1;
    }
    p->bytes = p->lt_ws_bytes + s_elems * 6 + 2 * qc_bytes;
    *out = p;
    return 0;
}

extern "C" size_t lf_cuda_prefill_bytes(const lf_cuda_prefill_attn *p) { return p ? p->bytes : 0; }

extern "C" int lf_cuda_prefill_set_chunk(lf_cuda_prefill_attn *p, int max_rows, lf_error *err) {
    if (!p) return lf_fail(err, "cuda prefill: no context");
    if (max_rows < 1) return lf_fail(err, "cuda prefill: chunk of %d rows must be >= 1", max_rows);
    p->chunk_limit = max_rows < p->chunk_rows ? max_rows : p->chunk_rows;
    return 0;
}

extern "C" int lf_cuda_prefill_attention(lf_cuda_prefill_attn *p, const void *q, const void *k, const void *v,
                                         int64_t kvh_stride, int n, float scale, void *out, void *stream,
                                         lf_error *err) {
    if (!p) return lf_fail(err, "cuda prefill: no context");
    if (n < 0 || n > p->max_n) return lf_fail(err, "cuda prefill: %d tokens, the context takes 0..%d", n, p->max_n);
    if (!(scale >= 0.f) || !isfinite(scale)) return lf_fail(err, "cuda prefill: scale %g must be >= 0", (double)scale);
    if (p->nkv > 1 && kvh_stride < (int64_t)n * p->hd)
        return lf_fail(err, "cuda prefill: KV-head stride %lld smaller than %d tokens of %d", (long long)kvh_stride, n,
                       p->hd);
    if (n == 0) return 0;
    if (!q || !k || !v || !out) return lf_fail(err, "cuda prefill: q, k, v and out are required");
    const cudaStream_t st = (cudaStream_t)stream;
    const int nh = p->nh, nkv = p->nkv, hd = p->hd, G = nh / nkv;
    const float sc = scale > 0.f ? scale : 1.f / sqrtf((float)hd);
    const cudaDataType_t ct = p->dt == LF_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F;
    for (int t0 = 0; t0 < n;) {
        int c = n - t0 < p->chunk_limit ? n - t0 : p->chunk_limit;
        int64_t ld = round8(t0 + c);
        while (c > 1 && (size_t)nh * c * ld > p->s_elems) {
            int64_t c2 = (int64_t)(p->s_elems / ((size_t)nh * ld));
            c = (int)(c2 < 1 ? 1 : (c2 < c - 1 ? c2 : c - 1));
            ld = round8(t0 + c);
        }
        const int t1 = t0 + c;
        const dim3 grid((unsigned)c, (unsigned)nh);
        k_prefill_gather_q<<<grid, hd, 0, st>>>(static_cast<const uint16_t *>(q), static_cast<uint16_t *>(p->Qc), n,
                                                t0, c, hd);
        if (launched(err, "prefill (q gather)")) return -1;
        /* S_j (row-major [G*c][ld]) = sc * Qc_j K_j^T, as column-major
         * S^T (t1 x G*c) = K^T(op T of the hd x t1 col-major view of K) * Qc^T */
        {
            const lt_mat A = {k, ct, (uint64_t)hd, (uint64_t)t1, hd, kvh_stride};
            const lt_mat B = {p->Qc, ct, (uint64_t)hd, (uint64_t)G * c, hd, (int64_t)G * c * hd};
            const lt_mat D = {p->S, CUDA_R_32F, (uint64_t)t1, (uint64_t)G * c, ld, (int64_t)G * c * ld};
            if (lt_matmul(p, CUBLAS_OP_T, CUBLAS_OP_N, A, B, D, nkv, sc, st, err)) return -1;
        }
        if (p->dt == LF_DTYPE_BF16)
            k_causal_softmax<__nv_bfloat16><<<(unsigned)((int64_t)nh * c), SOFTMAX_THREADS, 0, st>>>(
                p->S, static_cast<__nv_bfloat16 *>(p->P), ld, c, t0, t1);
        else
            k_causal_softmax<__half><<<(unsigned)((int64_t)nh * c), SOFTMAX_THREADS, 0, st>>>(
                p->S, static_cast<__half *>(p->P), ld, c, t0, t1);
        if (launched(err, "prefill (softmax)")) return -1;
        /* Oc_j (row-major [G*c][hd]) = P_j V_j, as column-major
         * Oc^T (hd x G*c) = V^T (hd x t1 view) * P^T (t1 x G*c view) */
        {
            const lt_mat A = {v, ct, (uint64_t)hd, (uint64_t)t1, hd, kvh_stride};
            const lt_mat B = {p->P, ct, (uint64_t)t1, (uint64_t)G * c, ld, (int64_t)G * c * ld};
            const lt_mat D = {p->Oc, ct, (uint64_t)hd, (uint64_t)G * c, hd, (int64_t)G * c * hd};
            if (lt_matmul(p, CUBLAS_OP_N, CUBLAS_OP_N, A, B, D, nkv, 1.f, st, err)) return -1;
        }
        k_prefill_scatter_o<<<grid, hd, 0, st>>>(static_cast<const uint16_t *>(p->Oc), static_cast<uint16_t *>(out),
                                                 nh, t0, c, hd);
        if (launched(err, "prefill (output scatter)")) return -1;
        t0 = t1;
    }
    return 0;
}
