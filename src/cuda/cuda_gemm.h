/* Matrix products of the CUDA forward: Y = X W^T with the weights as
 * PyTorch's nn.Linear stores them ([rows][cols], row-major), bf16 operands,
 * fp32 accumulation. cuBLASLt for batches; a bandwidth-bound GEMV kernel for
 * a few rows of X (batch-1 decode reads every weight byte once per token).
 *
 * Plain C11 header, no CUDA types: a stream is a void * holding a
 * cudaStream_t (NULL = the legacy default stream). Every call is
 * asynchronous and may be captured in a CUDA graph once the shape has been
 * prepared (lf_cuda_gemm_prepare), because preparing is the only step that
 * queries heuristics or allocates. */
#ifndef LF_CUDA_GEMM_H
#define LF_CUDA_GEMM_H

#include <stddef.h>
#include <stdint.h>
#include "longflow.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The handle is `struct lf_cuda_gemm` (no typedef: in C a typedef name and
 * the function lf_cuda_gemm below cannot share the identifier). */
struct lf_cuda_gemm;

/* A cuBLASLt handle, a workspace, and a cache of the algorithm chosen per
 * shape. One per stream / engine. */
int lf_cuda_gemm_create(struct lf_cuda_gemm **out, lf_error *err);
void lf_cuda_gemm_free(struct lf_cuda_gemm *g);

/* Choose (and cache) the algorithm for this shape; call for every shape
 * before capturing a graph that uses it. Calling lf_cuda_gemm on an
 * unprepared shape prepares it first (not capturable). */
int lf_cuda_gemm_prepare(struct lf_cuda_gemm *g, int rows, int cols, int n, lf_dtype y_dtype, float beta,
                         lf_error *err);

/* Y[n][rows] = X[n][cols] . W[rows][cols]^T + beta * Y
 *   W: bf16, device, row-major [rows][cols] (leading dimension cols)
 *   X: bf16, device, row-major [n][cols]
 *   Y: y_dtype (LF_DTYPE_F32 or LF_DTYPE_BF16), device, row-major [n][rows]
 *   beta: 0 (overwrite) or 1 (accumulate: the residual add of the o and
 *   down projections is free).
 * rows and cols multiples of 8; n >= 1; W, X and Y 16-byte aligned (cudaMalloc
 * gives 256); Y must not overlap W or X. Fails with a message naming the
 * shape on a bad argument or a CUDA/cuBLAS error. */
int lf_cuda_gemm(struct lf_cuda_gemm *g, const void *W, int rows, int cols, const void *X, int n, void *Y,
                 lf_dtype y_dtype, float beta, void *stream, lf_error *err);

/* The largest n the GEMV kernel takes (above it, cuBLASLt). */
int lf_cuda_gemv_max_n(void);

/* ---- additions (C2): the two paths forced, for tests and benchmarks ---- */

/* The GEMV kernel alone, 1 <= n <= lf_cuda_gemv_max_n(); needs no handle and
 * nothing prepared (capturable). variant: 0 automatic (what lf_cuda_gemm
 * uses), 1 or 2 = 8-row tiles of W per block (each warp does all of them over
 * its slice of the columns). W, X, Y 16-byte aligned; Y must not overlap W
 * or X. Same arguments and errors as lf_cuda_gemm otherwise. */
int lf_cuda_gemv(const void *W, int rows, int cols, const void *X, int n, void *Y, lf_dtype y_dtype, float beta,
                 int variant, void *stream, lf_error *err);

/* cuBLASLt for any n (lf_cuda_gemm uses it only above lf_cuda_gemv_max_n());
 * prepares an unprepared shape first (not capturable: call
 * lf_cuda_gemm_lt_prepare before capturing). */
int lf_cuda_gemm_lt_prepare(struct lf_cuda_gemm *g, int rows, int cols, int n, lf_dtype y_dtype, float beta,
                            lf_error *err);
int lf_cuda_gemm_lt(struct lf_cuda_gemm *g, const void *W, int rows, int cols, const void *X, int n, void *Y,
                    lf_dtype y_dtype, float beta, void *stream, lf_error *err);

/* Device memory the handle holds (the cuBLASLt workspace), for memory plans. */
size_t lf_cuda_gemm_device_bytes(const struct lf_cuda_gemm *g);

#ifdef __cplusplus
}
#endif
#endif
