/* CPU kernels: matrix products over weights in their stored dtype (bf16, f16,
 * f32) with fp32 accumulation, RMSNorm, SiLU, RoPE and the causal prompt
 * attention. Every kernel has an AVX2/FMA/F16C version and a portable scalar
 * version, chosen at run time (src/cpu/simd.h). The matrix products, the
 * norms of many rows and the attention run on the thread pool of
 * src/cpu/pool.h with lf_cpu_threads() threads. */
#ifndef LF_CPU_KERNELS_H
#define LF_CPU_KERNELS_H

#include <stddef.h>
#include "longflow.h"
#include "model/config.h"
#include "model/model.h"

/* Element i of a weight (row-major) as fp32. */
float lf_weight_at(const lf_weight *w, size_t i);
/* Row `row` of a weight matrix converted to fp32 (out has w->cols floats). */
void lf_weight_row_f32(const lf_weight *w, int row, float *out);

/* One output of a (fused) matrix product: y[t][r] = sum_c x[t][c] * w[r][c]
 * (+ bias[r] when bias is non-NULL and bias->data is non-NULL), for
 * t < n, r < w->rows; y has row stride w->rows. */
typedef struct lf_matmul_job {
    const lf_weight *w;
    const lf_weight *bias;
    float *y;
} lf_matmul_job;

/* Floats of scratch lf_matmul_multi needs for n rows of x with `cols` columns. */
size_t lf_matmul_scratch_floats(int n, int cols);

/* x is [n][cols] (row stride cols); every job's weight has `cols` columns.
 * The weights are read once for all n rows of x: n = 1 is a GEMV, small n a
 * batched GEMV (decode of a batch), large n a GEMM (prefill). `scratch` has
 * lf_matmul_scratch_floats(n, cols) floats. The jobs' rows are handed out
 * together to the pool's threads (jobs of different weight dtypes run one
 * dtype after the other). */
void lf_matmul_multi(const float *x, int n, int cols, const lf_matmul_job *jobs, int n_jobs,
                     float *scratch);
/* A single product: y[n][w->rows] = x[n][w->cols] w^T (+ bias). */
void lf_matmul(const float *x, int n, const lf_weight *w, const lf_weight *bias, float *y,
               float *scratch);

/* out[t] = x[t] * rsqrt(mean(x[t]^2) + eps) * w, for n rows of dim floats
 * (out may equal x). Computed in fp32 with a double sum of squares. */
void lf_rmsnorm(float *out, const float *x, const lf_weight *w, int n, int dim, float eps);

/* g[i] = silu(g[i]) * u[i] for i < n (AVX2: a vectorised exp, ~1e-7
 * relative error). */
void lf_silu_mul(float *g, const float *u, size_t n);

/* y[i] += x[i] for i < n. */
void lf_add(float *y, const float *x, size_t n);

/* Dot product of two fp32 vectors (fp32 accumulation). */
float lf_dot_f32(const float *a, const float *b, int n);

/* ---- RoPE (HF "rotate_half" convention) --------------------------------- */

/* Inverse frequencies of a rope configuration, as transformers computes them
 * in float32, and the factor multiplying cos/sin (yarn's attention factor;
 * 1 otherwise). */
typedef struct lf_rope {
    int head_dim;
    float *inv_freq;        /* [head_dim/2] */
    float attention_factor;
} lf_rope;

/* Build from cfg->rope, cfg->head_dim and cfg->max_position (the fallback
 * for a missing original_max_position). Fails on a head_dim that is not
 * positive and even, or a scaling factor that is not positive. */
int lf_rope_init(lf_rope *r, const lf_config *cfg, lf_error *err);
void lf_rope_free(lf_rope *r);
/* cos/sin of position pos: cos[i], sin[i] for i < head_dim/2, already
 * multiplied by the attention factor. The angle is pos * inv_freq[i] rounded
 * to float32 as in transformers; cos/sin of it are computed in double. */
void lf_rope_cos_sin(const lf_rope *r, int pos, float *cos_out, float *sin_out);
/* Rotate n_heads vectors of head_dim floats (contiguous) with one position's
 * cos/sin: x[i] <- x[i] c - x[i+h] s, x[i+h] <- x[i+h] c + x[i] s, h = hd/2. */
void lf_rope_apply(float *x, int n_heads, int head_dim, const float *cos_, const float *sin_);

/* ---- prompt attention ---------------------------------------------------- */

/* Causal softmax attention of n prompt tokens, exact, fp32:
 *   q [n][n_heads][hd], k, v [n][n_kv][hd] -> out [n][n_heads][hd],
 * query head h uses KV head h / (n_heads / n_kv), scale 1/sqrt(hd).
 * Multi-threaded over heads and blocks of 16 queries. `scratch` has
 * lf_attention_scratch_floats(n, n_kv, hd) floats (it depends on
 * lf_cpu_threads(): size it after setting the threads). */
size_t lf_attention_scratch_floats(int n, int n_kv, int hd);
void lf_attention_causal(const float *q, const float *k, const float *v, int n, int n_heads,
                         int n_kv, int hd, float *out, float *scratch);

/* Threads the kernels use (what lf_cpu_set_threads set, or the OpenMP
 * default: all cores or OMP_NUM_THREADS). */
int lf_cpu_threads(void);

#endif
