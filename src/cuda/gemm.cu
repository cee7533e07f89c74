/* Matrix products of the CUDA forward (see cuda_gemm.h and docs/cuda.md,
 * "Matrix products"): Y[n][rows] = X[n][cols] . W[rows][cols]^T + beta * Y.
 *
 * Two paths:
 *
 * - GEMV (1 <= n <= 16): a bandwidth-bound kernel on tensor cores. The batch
 *   is the M side of mma.m16n8k16 (rows of X, 16 at most), eight rows of W
 *   are the N side, so one mma per 16 columns covers any n <= 16 and the
 *   kernel reads each W byte once, with 16-byte loads that do not allocate
 *   in L1 and are evict-first in L2. A block (8 warps) owns 8*R rows of W;
 *   its warps split the columns into contiguous slices (K split inside the
 *   block, so even a 1024-row matrix gives 128 blocks of 8 warps), and sum
 *   their partial tiles through shared memory at the end (fixed order: the
 *   result does not depend on timing; no atomics).
 *
 *   The k order inside each 32-column chunk is permuted, identically for X
 *   and W (a dot product does not care), so that each lane's fragment is one
 *   16-byte load: lane (g = lane/4, t = lane%4) loads columns
 *   [32c + 8t, 32c + 8t + 8) of W row g and of X rows g and g+8; the mma's
 *   logical k = 2t + 8p + e of k-step s is the physical column
 *   32c + 8t + 4s + 2p + e.
 *
 * - cuBLASLt (any n): Y^T (rows x n, column-major = Y row-major) =
 *   op(W) * X^T with W seen as a cols x rows column-major matrix (ld cols)
 *   and op = transpose, X^T a cols x n column-major matrix (ld cols), C = D =
 *   Y (ld rows). bf16 A/B, fp32 compute and scale, fp32 or bf16 C/D. The
 *   algorithm of each (rows, cols, n, y dtype, beta != 0) comes from the
 *   heuristic once and is cached with its descriptors.
 */
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cublasLt.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "core/error.h"
}
#include "cuda/cuda_gemm.h"
#include "cuda/cuda_pdl.h"

namespace {

constexpr int GEMV_WARPS = 8;
constexpr int GEMV_THREADS = GEMV_WARPS * 32;
constexpr int GEMV_MAX_N = 16;
constexpr size_t LT_WORKSPACE = (size_t)32 << 20;
/* Above this many rows the automatic GEMV variant gives each warp two 8-row
 * tiles (halves the X traffic; there are still >= 512 blocks). */
constexpr int GEMV_R2_ROWS = 8192;

/* ---- device helpers -------------------------------------------------- */
__device__ __forceinline__ uint64_t evict_first_policy() {
    uint64_t pol;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(pol));
    return pol;
}

/* 16 bytes of W: read once, so no L1 allocation and first out of L2. */
__device__ __forceinline__ uint4 ld_stream16(const void *p, uint64_t pol) {
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0,%1,%2,%3}, [%4], %5;\n"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p), "l"(pol));
    return v;
}

/* 16 bytes of X: re-read by every block, so through L1. */
__device__ __forceinline__ uint4 ld_x16(const void *p) {
    return __ldg(static_cast<const uint4 *>(p));
}

/* D = A B + D, m16n8k16, bf16 inputs, fp32 accumulators.
 * a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]
 * b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
 * d0 = D[g][2t], d1 = D[g][2t+1], d2 = D[g+8][2t], d3 = D[g+8][2t+1] */
__device__ __forceinline__ void mma_bf16(float d[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* R: 8-row tiles of W per block (each warp does all R over its column
 * slice). BIG: n > 8 (X rows g+8 are loaded). YBF: Y is bf16 (else fp32).
 * rows % 8 == 0, cols % 8 == 0, 1 <= n <= 16 (BIG iff n > 8); W, X 16-byte
 * aligned. */
template <int R, bool BIG, bool YBF>
__global__ void __launch_bounds__(GEMV_THREADS, 2)
    gemv_kernel(const uint16_t *__restrict__ W, const uint16_t *__restrict__ X, void *__restrict__ Y,
                int rows, int cols, int n, float beta) {
    lf_pdl_wait(); /* first: the previous kernel's writes (X, and Y when beta != 0) are visible */
    constexpr int U = 8 / R; /* 32-column chunks per loop iteration: 8 W loads in flight per lane */
    __shared__ __align__(16) float red[GEMV_WARPS][R * 128];

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const long row_base = (long)blockIdx.x * (8 * R);
    const int nchunks = (cols + 31) >> 5;
    const int cpw = (nchunks + GEMV_WARPS - 1) / GEMV_WARPS;
    const int c0 = min(warp * cpw, nchunks);
    const int c1 = min(c0 + cpw, nchunks);
    const uint64_t pol = evict_first_policy();

    /* rows is a multiple of 8, so a tile is entirely in range or not at all
     * (warp-uniform). */
    const uint16_t *wrow[R];
    bool rok[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        const long row = row_base + r * 8 + g;
        rok[r] = row_base + r * 8 < rows;
        wrow[r] = W + (rok[r] ? row : 0) * (long)cols + t * 8;
    }
    const bool xok0 = g < n;
    const bool xok1 = BIG && g + 8 < n;
    const uint16_t *x0 = X + (long)(xok0 ? g : 0) * cols + t * 8;
    const uint16_t *x1 = X + (long)(xok1 ? g + 8 : 0) * cols + t * 8;

    float acc[R][4];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = 0.f;

    const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
    for (int c = c0; c < c1; c += U) { /* c0, c1 warp-uniform: every lane reaches the mma */
        uint4 wv[U][R], xa[U], xb[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const long off = (long)(c + u) * 32;
            /* cols % 8 == 0: a lane's 8 columns are all in range or all out */
            const bool kok = c + u < c1 && off + t * 8 < cols;
#pragma unroll
            for (int r = 0; r < R; r++) wv[u][r] = kok && rok[r] ? ld_stream16(wrow[r] + off, pol) : zero;
            xa[u] = kok && xok0 ? ld_x16(x0 + off) : zero;
            xb[u] = BIG && kok && xok1 ? ld_x16(x1 + off) : zero;
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
#pragma unroll
            for (int r = 0; r < R; r++) {
                /* k-step 0: physical columns 8t + 0..3; k-step 1: 8t + 4..7 */
                mma_bf16(acc[r], xa[u].x, xb[u].x, xa[u].y, xb[u].y, wv[u][r].x, wv[u][r].y);
                mma_bf16(acc[r], xa[u].z, xb[u].z, xa[u].w, xb[u].w, wv[u][r].z, wv[u][r].w);
            }
        }
    }

    /* acc[r][i] of lane (g, t) = partial Y[m][row_base + 8r + 2t + (i & 1)],
     * m = g + 8 * (i >> 1), over this warp's columns. */
#pragma unroll
    for (int r = 0; r < R; r++)
        *reinterpret_cast<float4 *>(&red[warp][r * 128 + lane * 4]) =
            make_float4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
    __syncthreads();
    for (int e = threadIdx.x; e < R * 128; e += GEMV_THREADS) {
        float s = 0.f;
#pragma unroll
        for (int w = 0; w < GEMV_WARPS; w++) s += red[w][e];
        const int r = e >> 7, ln = (e >> 2) & 31, i = e & 3;
        const int m = (ln >> 2) + ((i & 2) ? 8 : 0);
        const long row = row_base + r * 8 + 2 * (ln & 3) + (i & 1);
        if (m < n && row < rows) {
            const long idx = (long)m * rows + row;
            if (YBF) {
                __nv_bfloat16 *y = static_cast<__nv_bfloat16 *>(Y);
                if (beta != 0.f) s += beta * __bfloat162float(y[idx]);
                y[idx] = __float2bfloat16_rn(s);
            } else {
                float *y = static_cast<float *>(Y);
                if (beta != 0.f) s += beta * y[idx];
                y[idx] = s;
            }
        }
    }
}

template <int R, bool BIG, bool YBF>
cudaError_t launch_gemv(const void *W, int rows, int cols, const void *X, int n, void *Y, float beta,
                        cudaStream_t st) {
    const int rpb = 8 * R;
    const unsigned blocks = (unsigned)((rows + rpb - 1) / rpb);
    return lf_launch(gemv_kernel<R, BIG, YBF>, dim3(blocks), dim3(GEMV_THREADS), 0, st,
                     static_cast<const uint16_t *>(W), static_cast<const uint16_t *>(X), Y, rows, cols, n, beta);
}

template <int R>
cudaError_t launch_gemv_r(const void *W, int rows, int cols, const void *X, int n, void *Y, bool ybf, float beta,
                          cudaStream_t st) {
    if (n > 8) {
        return ybf ? launch_gemv<R, true, true>(W, rows, cols, X, n, Y, beta, st)
                   : launch_gemv<R, true, false>(W, rows, cols, X, n, Y, beta, st);
    }
    return ybf ? launch_gemv<R, false, true>(W, rows, cols, X, n, Y, beta, st)
               : launch_gemv<R, false, false>(W, rows, cols, X, n, Y, beta, st);
}

/* ---- host helpers ---------------------------------------------------- */
const char *ydt_name(lf_dtype t) {
    switch (t) {
    case LF_DTYPE_F32: return "f32";
    case LF_DTYPE_BF16: return "bf16";
    case LF_DTYPE_F16: return "f16";
    default: break;
    }
    return "?";
}

#define SHAPE_FMT "cuda gemm (rows %d, cols %d, n %d, y %s, beta %g)"
#define SHAPE_ARGS rows, cols, n, ydt_name(y_dtype), (double)beta

int check_shape(int rows, int cols, int n, lf_dtype y_dtype, float beta, lf_error *err) {
    if (rows < 8 || rows % 8 != 0)
        return lf_fail(err, SHAPE_FMT ": rows must be a positive multiple of 8", SHAPE_ARGS);
    if (cols < 8 || cols % 8 != 0)
        return lf_fail(err, SHAPE_FMT ": cols must be a positive multiple of 8", SHAPE_ARGS);
    if (n < 1) return lf_fail(err, SHAPE_FMT ": n must be >= 1", SHAPE_ARGS);
    if (y_dtype != LF_DTYPE_F32 && y_dtype != LF_DTYPE_BF16)
        return lf_fail(err, SHAPE_FMT ": Y must be f32 or bf16", SHAPE_ARGS);
    if (!isfinite(beta)) return lf_fail(err, SHAPE_FMT ": beta must be finite", SHAPE_ARGS);
    return 0;
}

int check_pointers(const void *W, const void *X, const void *Y, int rows, int cols, int n, lf_dtype y_dtype,
                   float beta, lf_error *err) {
    const void *p[3] = {W, X, Y};
    const char *name[3] = {"W", "X", "Y"};
    for (int i = 0; i < 3; i++) {
        if (!p[i]) return lf_fail(err, SHAPE_FMT ": %s is NULL", SHAPE_ARGS, name[i]);
        if ((uintptr_t)p[i] % 16 != 0)
            return lf_fail(err, SHAPE_FMT ": %s (%p) is not 16-byte aligned", SHAPE_ARGS, name[i], p[i]);
    }
    return 0;
}

const char *lt_status(cublasStatus_t s) {
    const char *n = cublasLtGetStatusName(s);
    return n ? n : "unknown cuBLAS status";
}

/* One prepared cuBLASLt shape. */
struct LtEntry {
    int used;
    int rows, cols, n, ydt, beta_nz;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
};

uint32_t entry_hash(int rows, int cols, int n, int ydt, int beta_nz) {
    uint32_t h = 2166136261u;
    const uint32_t v[5] = {(uint32_t)rows, (uint32_t)cols, (uint32_t)n, (uint32_t)ydt, (uint32_t)beta_nz};
    for (int i = 0; i < 5; i++) {
        h ^= v[i];
        h *= 16777619u;
        h ^= h >> 15;
    }
    return h;
}

void entry_destroy(LtEntry *e) {
    if (e->c) cublasLtMatrixLayoutDestroy(e->c);
    if (e->b) cublasLtMatrixLayoutDestroy(e->b);
    if (e->a) cublasLtMatrixLayoutDestroy(e->a);
    if (e->op) cublasLtMatmulDescDestroy(e->op);
    memset(e, 0, sizeof *e);
}

} // namespace

struct lf_cuda_gemm {
    cublasLtHandle_t lt;
    void *workspace;
    size_t workspace_bytes;
    LtEntry *tab; /* open addressing, capacity a power of two, at most half full */
    int tab_cap, tab_count;
};

namespace {

LtEntry *lt_find(struct lf_cuda_gemm *g, int rows, int cols, int n, int ydt, int beta_nz) {
    if (!g->tab_cap) return NULL;
    const uint32_t mask = (uint32_t)g->tab_cap - 1;
    for (uint32_t i = entry_hash(rows, cols, n, ydt, beta_nz) & mask;; i = (i + 1) & mask) {
        LtEntry *e = &g->tab[i];
        if (!e->used) return NULL;
        if (e->rows == rows && e->cols == cols && e->n == n && e->ydt == ydt && e->beta_nz == beta_nz) return e;
    }
}

/* A free slot for a new key (grows the table first when needed). */
LtEntry *lt_slot(struct lf_cuda_gemm *g, int rows, int cols, int n, int ydt, int beta_nz, lf_error *err) {
    if ((g->tab_count + 1) * 2 > g->tab_cap) {
        const int ncap = g->tab_cap ? g->tab_cap * 2 : 64;
        LtEntry *nt = static_cast<LtEntry *>(calloc((size_t)ncap, sizeof(LtEntry)));
        if (!nt) {
            lf_fail(err, "cuda gemm: out of host memory for the algorithm cache");
            return NULL;
        }
        const uint32_t mask = (uint32_t)ncap - 1;
        for (int i = 0; i < g->tab_cap; i++) {
            const LtEntry *o = &g->tab[i];
            if (!o->used) continue;
            uint32_t j = entry_hash(o->rows, o->cols, o->n, o->ydt, o->beta_nz) & mask;
            while (nt[j].used) j = (j + 1) & mask;
            nt[j] = *o;
        }
        free(g->tab);
        g->tab = nt;
        g->tab_cap = ncap;
    }
    const uint32_t mask = (uint32_t)g->tab_cap - 1;
    uint32_t i = entry_hash(rows, cols, n, ydt, beta_nz) & mask;
    while (g->tab[i].used) i = (i + 1) & mask;
    return &g->tab[i];
}

/* Prepare the cuBLASLt algorithm of a checked shape (or find it). */
int lt_prepare(struct lf_cuda_gemm *g, int rows, int cols, int n, lf_dtype y_dtype, float beta, LtEntry **out,
               lf_error *err) {
    const int beta_nz = beta != 0.f;
    LtEntry *hit = lt_find(g, rows, cols, n, (int)y_dtype, beta_nz);
    if (hit) {
        *out = hit;
        return 0;
    }
    LtEntry e;
    memset(&e, 0, sizeof e);
    e.rows = rows;
    e.cols = cols;
    e.n = n;
    e.ydt = (int)y_dtype;
    e.beta_nz = beta_nz;
    const cudaDataType_t yt = y_dtype == LF_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    const uint64_t ws = g->workspace_bytes;
    const uint32_t align = 16;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res;
    int nres = 0;
    const char *what = "";
    cublasStatus_t s;
#define LT_TRY(call)                                                                                           \
    do {                                                                                                       \
        what = #call;                                                                                          \
        s = (call);                                                                                            \
        if (s != CUBLAS_STATUS_SUCCESS) goto fail;                                                             \
    } while (0)
    LT_TRY(cublasLtMatmulDescCreate(&e.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    LT_TRY(cublasLtMatmulDescSetAttribute(e.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    LT_TRY(cublasLtMatmulDescSetAttribute(e.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    /* A = W as stored: cols x rows column-major, ld cols (op T gives rows x cols) */
    LT_TRY(cublasLtMatrixLayoutCreate(&e.a, CUDA_R_16BF, (uint64_t)cols, (uint64_t)rows, (int64_t)cols));
    /* B = X^T: cols x n column-major, ld cols */
    LT_TRY(cublasLtMatrixLayoutCreate(&e.b, CUDA_R_16BF, (uint64_t)cols, (uint64_t)n, (int64_t)cols));
    /* C = D = Y^T: rows x n column-major, ld rows */
    LT_TRY(cublasLtMatrixLayoutCreate(&e.c, yt, (uint64_t)rows, (uint64_t)n, (int64_t)rows));
    LT_TRY(cublasLtMatmulPreferenceCreate(&pref));
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align,
                                                sizeof align));
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align,
                                                sizeof align));
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align,
                                                sizeof align));
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align,
                                                sizeof align));
    memset(&res, 0, sizeof res);
    if (y_dtype == LF_DTYPE_BF16) {
        /* A split-K reduction "in place" or "in output type" would add the
         * partial sums in bf16; keep them in fp32 (falls back to any scheme
         * only if no algorithm is left). */
        const uint32_t mask = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
        LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &mask,
                                                    sizeof mask));
        if (cublasLtMatmulAlgoGetHeuristic(g->lt, e.op, e.a, e.b, e.c, e.c, pref, 1, &res, &nres) !=
            CUBLAS_STATUS_SUCCESS)
            nres = 0;
        if (nres < 1) {
            const uint32_t all = CUBLASLT_REDUCTION_SCHEME_MASK;
            LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &all,
                                                        sizeof all));
        }
    }
    if (nres < 1) LT_TRY(cublasLtMatmulAlgoGetHeuristic(g->lt, e.op, e.a, e.b, e.c, e.c, pref, 1, &res, &nres));
#undef LT_TRY
    cublasLtMatmulPreferenceDestroy(pref);
    pref = NULL;
    if (nres < 1 || res.state != CUBLAS_STATUS_SUCCESS) {
        entry_destroy(&e);
        return lf_fail(err, SHAPE_FMT ": cuBLASLt has no algorithm for this shape (%s)", SHAPE_ARGS,
                       nres < 1 ? "no heuristic result" : lt_status(res.state));
    }
    e.algo = res.algo;
    e.used = 1;
    {
        LtEntry *slot = lt_slot(g, rows, cols, n, (int)y_dtype, beta_nz, err);
        if (!slot) {
            entry_destroy(&e);
            return -1;
        }
        *slot = e;
        g->tab_count++;
        *out = slot;
    }
    return 0;
fail:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    entry_destroy(&e);
    return lf_fail(err, SHAPE_FMT ": %s: %s", SHAPE_ARGS, what, lt_status(s));
}

int lt_run(struct lf_cuda_gemm *g, const void *W, int rows, int cols, const void *X, int n, void *Y, lf_dtype y_dtype,
           float beta, void *stream, lf_error *err) {
    LtEntry *e = lt_find(g, rows, cols, n, (int)y_dtype, beta != 0.f);
    if (!e) {
        /* Preparing during stream capture would be a host query inside the
         * captured region: refuse it with a clear message. */
        cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
        if (cudaStreamIsCapturing(static_cast<cudaStream_t>(stream), &cs) == cudaSuccess &&
            cs != cudaStreamCaptureStatusNone)
            return lf_fail(err, SHAPE_FMT ": shape not prepared (call lf_cuda_gemm_prepare before capturing)",
                           SHAPE_ARGS);
        if (lt_prepare(g, rows, cols, n, y_dtype, beta, &e, err)) return -1;
    }
    const float alpha = 1.f;
    const cublasStatus_t s = cublasLtMatmul(g->lt, e->op, &alpha, W, e->a, X, e->b, &beta, Y, e->c, Y, e->c,
                                            &e->algo, g->workspace, g->workspace_bytes,
                                            static_cast<cudaStream_t>(stream));
    if (s != CUBLAS_STATUS_SUCCESS) return lf_fail(err, SHAPE_FMT ": cublasLtMatmul: %s", SHAPE_ARGS, lt_status(s));
    return 0;
}

} // namespace

extern "C" {

int lf_cuda_gemv_max_n(void) { return GEMV_MAX_N; }

int lf_cuda_gemm_create(struct lf_cuda_gemm **out, lf_error *err) {
    if (!out) return lf_fail(err, "cuda gemm: no output pointer");
    *out = NULL;
    struct lf_cuda_gemm *g = static_cast<struct lf_cuda_gemm *>(calloc(1, sizeof *g));
    if (!g) return lf_fail(err, "cuda gemm: out of host memory");
    const cublasStatus_t s = cublasLtCreate(&g->lt);
    if (s != CUBLAS_STATUS_SUCCESS) {
        free(g);
        return lf_fail(err, "cuda gemm: cublasLtCreate: %s", lt_status(s));
    }
    const cudaError_t e = cudaMalloc(&g->workspace, LT_WORKSPACE);
    if (e != cudaSuccess) {
        cublasLtDestroy(g->lt);
        free(g);
        return lf_fail(err, "cuda gemm: cudaMalloc of the %zu MiB cuBLASLt workspace: %s", LT_WORKSPACE >> 20,
                       cudaGetErrorString(e));
    }
    g->workspace_bytes = LT_WORKSPACE;
    *out = g;
    return 0;
}

void lf_cuda_gemm_free(struct lf_cuda_gemm *g) {
    if (!g) return;
    for (int i = 0; i < g->tab_cap; i++)
        if (g->tab[i].used) entry_destroy(&g->tab[i]);
    free(g->tab);
    if (g->workspace) cudaFree(g->workspace);
    if (g->lt) cublasLtDestroy(g->lt);
    free(g);
}

size_t lf_cuda_gemm_device_bytes(const struct lf_cuda_gemm *g) { return g ? g->workspace_bytes : 0; }

int lf_cuda_gemm_prepare(struct lf_cuda_gemm *g, int rows, int cols, int n, lf_dtype y_dtype, float beta,
                         lf_error *err) {
    if (!g) return lf_fail(err, "cuda gemm: no handle");
    if (check_shape(rows, cols, n, y_dtype, beta, err)) return -1;
    if (n <= GEMV_MAX_N) return 0; /* the GEMV needs nothing prepared */
    LtEntry *e;
    return lt_prepare(g, rows, cols, n, y_dtype, beta, &e, err);
}

int lf_cuda_gemm_lt_prepare(struct lf_cuda_gemm *g, int rows, int cols, int n, lf_dtype y_dtype, float beta,
                            lf_error *err) {
    if (!g) return lf_fail(err, "cuda gemm: no handle");
    if (check_shape(rows, cols, n, y_dtype, beta, err)) return -1;
    LtEntry *e;
    return lt_prepare(g, rows, cols, n, y_dtype, beta, &e, err);
}

int lf_cuda_gemv(const void *W, int rows, int cols, const void *X, int n, void *Y, lf_dtype y_dtype, float beta,
                 int variant, void *stream, lf_error *err) {
    if (check_shape(rows, cols, n, y_dtype, beta, err)) return -1;
    if (n > GEMV_MAX_N) return lf_fail(err, SHAPE_FMT ": the GEMV takes n <= %d", SHAPE_ARGS, GEMV_MAX_N);
    if (variant < 0 || variant > 2)
        return lf_fail(err, SHAPE_FMT ": GEMV variant %d (0 auto, 1 or 2 row tiles per warp)", SHAPE_ARGS, variant);
    if (check_pointers(W, X, Y, rows, cols, n, y_dtype, beta, err)) return -1;
    const int r = variant ? variant : (rows >= GEMV_R2_ROWS ? 2 : 1);
    const bool ybf = y_dtype == LF_DTYPE_BF16;
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    const cudaError_t e = r == 2 ? launch_gemv_r<2>(W, rows, cols, X, n, Y, ybf, beta, st)
                                 : launch_gemv_r<1>(W, rows, cols, X, n, Y, ybf, beta, st);
    if (e != cudaSuccess) return lf_fail(err, SHAPE_FMT ": GEMV launch: %s", SHAPE_ARGS, cudaGetErrorString(e));
    return 0;
}

int lf_cuda_gemm_lt(struct lf_cuda_gemm *g, const void *W, int rows, int cols, const void *X, int n, void *Y,
                    lf_dtype y_dtype, float beta, void *stream, lf_error *err) {
    if (!g) return lf_fail(err, "cuda gemm: no handle");
    if (check_shape(rows, cols, n, y_dtype, beta, err)) return -1;
    if (check_pointers(W, X, Y, rows, cols, n, y_dtype, beta, err)) return -1;
    return lt_run(g, W, rows, cols, X, n, Y, y_dtype, beta, stream, err);
}

int lf_cuda_gemm(struct lf_cuda_gemm *g, const void *W, int rows, int cols, const void *X, int n, void *Y,
                 lf_dtype y_dtype, float beta, void *stream, lf_error *err) {
    if (!g) return lf_fail(err, "cuda gemm: no handle");
    if (check_shape(rows, cols, n, y_dtype, beta, err)) return -1;
    if (n <= GEMV_MAX_N) return lf_cuda_gemv(W, rows, cols, X, n, Y, y_dtype, beta, 0, stream, err);
    if (check_pointers(W, X, Y, rows, cols, n, y_dtype, beta, err)) return -1;
    return lt_run(g, W, rows, cols, X, n, Y, y_dtype, beta, stream, err);
}

} // extern "C"
