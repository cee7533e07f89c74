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

typedef struct lf_cuda_gemm lf_cuda_gemm;

/* A cuBLASLt handle, a workspace, and a cache of the algorithm chosen per
 * shape. One per stream / engine. */
int lf_cuda_gemm_create(lf_cuda_gemm **out, lf_error *err);
void lf_cuda_gemm_free(lf_cuda_gemm *g);

/* Choose (and cache) the algorithm for this shape; call for every shape
 * before capturing a graph that uses it. Calling lf_cuda_gemm on an
 * unprepared shape prepares it first (not capturable). */
int lf_cuda_gemm_prepare(lf_cuda_gemm *g, int rows, int cols, int n, lf_dtype y_dtype, float beta,
                         lf_error *err);

/* Y[n][rows] = X[n][cols] . W[rows][cols]^T + beta * Y
 *   W: bf16, device, row-major [rows][cols] (leading dimension cols)
 *   X: bf16, device, row-major [n][cols]
 *   Y: y_dtype (LF_DTYPE_F32 or LF_DTYPE_BF16), device, row-major [n][rows]
 *   beta: 0 (overwrite) or 1 (accumulate: the residual add of the o and
 *   down projections is free).
 * rows and cols multiples of 8; n >= 1. Fails with a message naming the
 * shape on a bad argument or a CUDA/cuBLAS error. */
int lf_cuda_gemm(lf_cuda_gemm *g, const void *W, int rows, int cols, const void *X, int n, void *Y,
                 lf_dtype y_dtype, float beta, void *stream, lf_error *err);

/* The largest n the GEMV kernel takes (above it, cuBLASLt). */
int lf_cuda_gemv_max_n(void);

#ifdef __cplusplus
}
#endif
#endif
