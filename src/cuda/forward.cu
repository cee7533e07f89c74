/* The CUDA forward: the whole GPU backend of cuda_forward.h in one file, read
 * top to bottom.
 *
 *   1. options check (what the GPU does not do is refused, naming the option)
 *   2. weights: bf16 on the GPU, wq|wk|wv and w_gate|w_up concatenated, so a
 *      layer is 4 GEMMs (qkv, o, gate_up, down); lm_head padded to a multiple
 *      of 8 rows (padded logits get -inf through a bias)
 *   3. memory plan and the entry pool (one cudaMalloc)
 *   4. prefill of one prompt into an entry (SnapKV's and H2O's window sums on
 *      the GPU, the selection on the host, as src/kv/cache.c's lf_kv_prefill_layer)
 *   5. the decode step of a batch of entries (one upload, then kernels that a
 *      CUDA graph per batch size replays)
 *   6. tests and benchmarks: entry slots, bench fill, profiled step, info
 *
 * Everything runs on one stream. All failures are lf_fail messages starting
 * with "cuda"; nothing exits or aborts.
 *
 * Policy state, and why it equals src/kv/cache.c:
 *   full       the token goes to slot `filled` (the number of tokens stored:
 *              cache.c's hw, since full fills slots 0, 1, 2, ... in order);
 *              host counter, passed as the per-row slot.
 *   streaming  host state per entry: filled, s0, ring (see streaming_slot).
 *   longflow, tova, h2o, vatp
 *              next_slot[layer][entry] lives on the GPU: the prefill sets it
 *              to the number of prompt tokens kept, the fused attention
 *              kernel (cuda_attention.h) writes the next one every step with
 *              the rule of cache.c's argmin_score (smallest score among the
 *              unprotected slots, lowest index on ties; empty slots score 0;
 *              H2O/VATP reset the chosen slot's accumulator).
 */
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "core/error.h"
#include "core/fp.h"
#include "cpu/kernels.h"
#include "kv/policy.h"
#include "kv/dtype.h"
#include "cuda/cuda_attention.h"
#include "cuda/cuda_forward.h"
#include "cuda/cuda_gemm.h"
#include "cuda/cuda_kernels.h"
}
#include "cuda/cuda_pdl.h"

/* Upper bound of the pool's entry count when --max-seqs is 0. */
#define LF_CUDA_MAX_ENTRIES 4096
/* Prefill runs the MLP over at most this many rows at a time (bounds the
 * fp32 gate/up scratch for long prompts). Decode never splits: the MLP
 * scratch holds max(entries, this) rows. */
#define LF_CUDA_MLP_CHUNK 1024

typedef __nv_bfloat16 bf16;

/* ---- small kernels of this file ----------------------------------------- */

/* base[l*layer_stride + i] = value for l < n_layers, i < count. */
template <typename T>
__global__ void fill_strided_kernel(T *base, long long layer_stride, int n_layers, int count, T value) {
    const long long total = (long long)n_layers * count;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const long long l = t / count, i = t % count;
        base[l * layer_stride + i] = value;
    }
}

__device__ __forceinline__ unsigned long long mix64(unsigned long long x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Benchmark state of one entry: K/V of slots < n_valid of every layer hold
 * uniform values in [-0.5, 0.5) from a hash of (seed, element), positions as
 * bench_position() says, empty slots -1. kbase/vbase/pbase point at the
 * entry in layer 0. */
/* FP8 cache (ks, vs given): the same values stored as codes with the scale
 * 0.5 / 448 of every row (the scale the rows' |max| gives up to rounding). */
__global__ void bench_fill_kernel(void *kbase, void *vbase, float *ks, float *vs, int32_t *pbase, int n_layers,
                                  int nkv, int cap, int hd, long long kv_layer_stride, long long slot_layer_stride,
                                  int n_valid, int sinks, int length, unsigned long long seed) {
    const float f8s = 0.5f / LF_FP8_MAX;
    const long long per_layer = (long long)nkv * n_valid * hd;
    const long long total = (long long)n_layers * per_layer;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total; t += stride) {
        const long long l = t / per_layer;
        long long r = t % per_layer;
        const long long kvh = r / ((long long)n_valid * hd);
        r %= (long long)n_valid * hd;
        const long long s = r / hd, d = r % hd;
        const long long off = l * kv_layer_stride + (kvh * cap + s) * hd + d;
        const unsigned long long h = mix64(seed ^ mix64((unsigned long long)t));
        const float a = (float)(h & 0xffffu) * (1.0f / 65536.0f) - 0.5f;
        const float b = (float)((h >> 16) & 0xffffu) * (1.0f / 65536.0f) - 0.5f;
        if (ks) {
            static_cast<uint8_t *>(kbase)[off] = lf_fp8_row_code(a, f8s);
            static_cast<uint8_t *>(vbase)[off] = lf_fp8_row_code(b, f8s);
            if (d == 0) ks[off / hd] = vs[off / hd] = f8s;
        } else {
            static_cast<bf16 *>(kbase)[off] = __float2bfloat16(a);
            static_cast<bf16 *>(vbase)[off] = __float2bfloat16(b);
        }
    }
    const long long ptotal = (long long)n_layers * cap;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < ptotal; t += stride) {
        const long long l = t / cap;
        const int s = (int)(t % cap);
        int p = -1;
        if (s < n_valid) p = (length <= cap || s < sinks) ? s : length - cap + s;
        pbase[l * slot_layer_stride + s] = p;
    }
}

/* |v|_1 of the first n_valid rows of every (layer, KV head) of an entry's FP8
 * V cache (bench fill): scale * sum |code value|, as rope_store stores it. */
__global__ void bench_vnorm_kernel(const uint8_t *vbase, const float *vs, float *vn, int n_layers, int nkv, int cap,
                                   int hd, long long kv_layer_stride, int n_valid) {
    const long long rows = (long long)n_layers * nkv * n_valid;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < rows; t += (long long)gridDim.x * blockDim.x) {
        const long long l = t / ((long long)nkv * n_valid), r = t % ((long long)nkv * n_valid);
        const long long off = l * kv_layer_stride + (r / n_valid * cap + r % n_valid) * hd;
        float s = 0.f;
        for (int d = 0; d < hd; d++) s += fabsf(lf_fp8_value(vbase[off + d]));
        vn[off / hd] = vs[off / hd] * s;
    }
}

/* ---- the backend --------------------------------------------------------- */

typedef struct gpu_layer {
    bf16 *attn_norm, *wqkv, *bqkv, *q_norm, *k_norm, *wo, *ffn_norm, *wgu, *wdown;
} gpu_layer;

/* Host state of one entry. */
typedef struct entry_state {
    bool live;     /* prefilled (or bench-filled) */
    uint64_t seed; /* sampling stream */
    int32_t step;  /* draws so far (the prefill's is step 0) */
    int budget;    /* slots this entry may use (<= capacity); slots budget.. hold LF_CUDA_SLOT_OFF */
    int filled;    /* tokens stored: slots 0..filled-1 were written (capped at budget) */
    int s0;        /* streaming: slots 0..s0-1 hold positions < sinks */
    int ring;      /* streaming: next victim is slot s0 + ring once the cache is full */
} entry_state;

enum { CAT_GEMM = 0, CAT_ATTN = 1, CAT_OTHER = 2 };

/* Event marks of a profiled step: interval i (between mark i and i+1) is of
 * category cat[i]. */
typedef struct prof {
    cudaEvent_t *ev;
    int *cat;
    int n, cap;
} prof;

struct lf_cuda_backend {
    lf_cuda_options o;
    lf_policy_config pol; /* resolved as lf_kv_cache_init resolves it (lf_policy_resolve_slots) */
    const lf_policy_desc *desc; /* the policy's descriptor: score mode, slot rule, stored stat */
    int mode;             /* desc->score */
    bool scored, uses_acc;
    bool f8;              /* --kv-dtype fp8: K/V are e4m3 codes (kv_elem 1 byte) with row scales KS/VS */
    bool vnorm;           /* fp8 with a |v|_1 score (LongFlow, VATP): each V row's |v|_1 kept in VN */
    int kv_elem;          /* bytes of a stored K/V element: 2 (bf16) or 1 (fp8) */

    /* shape */
    int L, H, KV, HD, hidden, inter, vocab, vocab_pad, qdim, kvdim, qkvdim;
    float eps;
    int cap, P, E; /* slots per entry and layer, longest prompt, entries */
    /* Attention reads only the slots in use: each step looks at the first
     * `scan` slots, the batch's largest (filled + 2) rounded up to a multiple
     * of max(64, about 1/16 of it) so that at most ~6% more slots are read
     * than hold tokens (the +2 keeps an empty slot in view so a budgeted
     * policy that is not full yet still picks it). One decode graph per
     * (rows, scan); scan_bucket = 64 is the unit of the graph table. */
    int scan_bucket, n_buckets, cur_scan;
    bool full_scan; /* LF_CUDA_FULL_SCAN=1: always scan every slot (diagnostics) */
    /* The attention kernel keeps its per-launch counters at the start of its
     * workspace, (pairs + n) ints, and its scratch right after them, so the
     * scratch of a launch with few rows overlaps where a launch with more rows
     * keeps counters. Each launch leaves its own counters zero; a step with
     * more rows than the fewest any step had since the workspace was last
     * zeroed zeroes it again first. */
    int attn_ws_rows; /* fewest rows of a step since the last zeroing (INT_MAX: none) */
    int mlp_rows;  /* rows of the MLP scratch */

    cudaStream_t stream;
    struct lf_cuda_gemm *gemm;
    lf_cuda_prefill_attn *pf;

    /* weights (one allocation) */
    void *wblock;
    size_t weight_bytes, gemm_weight_bytes;
    gpu_layer *layers;
    bf16 *embed, *final_norm, *lm_head, *vocab_bias; /* vocab_bias: -inf on padded rows, or NULL */
    float *inv_freq;
    float attention_factor;

    /* pool (one allocation) */
    void *pool;
    size_t pool_bytes, kv_per_entry, aux_per_entry;
    void *K, *V;       /* [layer][entry][kvh][cap][hd], kv_elem bytes an element */
    float *KS, *VS;    /* fp8: the row scales, [layer][entry][kvh][cap] (element offset / hd), else NULL */
    float *VN;         /* vnorm: |v|_1 of each V row, indexed as VS (policy state, counted in aux) */
    int32_t *cpos, *next_slot;
    int32_t *recent_e; /* [entry] the recent window each entry resolved for its budget */
    uint32_t *seen;    /* [entry][seen_words] token history bitmaps (repetition penalty only) */
    int seen_words;    /* (vocab + 31) / 32 with a repetition penalty, else 0 */
    float *score, *acc;
    long long kv_seq_stride, kv_layer_stride, slot_layer_stride;

    /* workspace (one allocation) */
    void *ws;
    size_t ws_bytes;
    float *x, *qkv, *gu, *logits, *logits_copy, *q32, *k32;
    bf16 *h, *q, *att, *mlp, *pk, *pv;
    uint8_t *pk8, *pv8; /* fp8 + compressing prefill: the prompt's FP8 rows [kvh][n][hd] before SnapKV picks */
    float *pks, *pvs, *pvn; /* and their scales [kvh][n] (and |v|_1) */
    uint64_t *d_seeds;
    int32_t *d_tokens, *d_pos, *d_entries, *d_row_slot, *d_steps, *d_out;
    int32_t *d_ptok, *d_ppos, *d_kept, *d_slotpos;
    float *d_slotacc;
    void *attn_ws, *samp_ws;
    size_t attn_ws_bytes, samp_ws_bytes, in_bytes;

    /* pinned host mirror of the decode inputs (same layout as d_seeds...) and
     * the prefill staging */
    void *h_in;
    uint64_t *h_seeds;
    int32_t *h_tokens, *h_pos, *h_entries, *h_row_slot, *h_steps, *h_out;
    int32_t *h_ptok, *h_kept, *h_slotpos;
    float *h_slotacc;
    size_t h_in_bytes;

    /* host scratch for SnapKV's selection and the H2O/VATP accumulator */
    float *hraw, *hwin;         /* host copies of the window sums (SnapKV's, the accumulator's) [P] */
    float *d_raw, *d_win;       /* the same on the device */
    void *win_ws;               /* lf_cuda_window_sums scratch */
    size_t win_ws_bytes;

    entry_state *st;
    int *mark; /* [E] duplicate check */

    cudaGraphExec_t *graphs; /* [2][E + 1]: without / with the logits copy */

    size_t free_at_start, gpu_total, gpu_free_plan, peak, tracked;
    char device_name[128];
    char plan[256];
};

/* ---- helpers ------------------------------------------------------------- */

static int ck(cudaError_t e, lf_error *err, const char *what) {
    if (e == cudaSuccess) return 0;
    return lf_fail(err, "cuda: %s: %s", what, cudaGetErrorString(e));
}

static size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

/* Layer l of the K or V cache at entry e (element offsets are the same for
 * bf16 and fp8, kv_elem bytes each), and of their row scales (fp8). */
static void *kv_at(const lf_cuda_backend *b, void *base, int l, int e) {
    return (char *)base + ((size_t)l * b->kv_layer_stride + (size_t)e * b->kv_seq_stride) * b->kv_elem;
}
static float *kv_scale_at(const lf_cuda_backend *b, float *base, int l, int e) {
    return base ? base + ((size_t)l * b->kv_layer_stride + (size_t)e * b->kv_seq_stride) / b->HD : NULL;
}

static void note_peak(lf_cuda_backend *b) {
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) == cudaSuccess && b->free_at_start > fr) {
        size_t used = b->free_at_start - fr;
        if (used > b->peak) b->peak = used;
    }
    if (b->tracked > b->peak) b->peak = b->tracked;
}

static int dmalloc(lf_cuda_backend *b, void **p, size_t bytes, lf_error *err, const char *what) {
    *p = NULL;
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 256);
    if (e != cudaSuccess) {
        *p = NULL;
        return lf_fail(err, "cuda: cudaMalloc of %zu bytes for %s: %s", bytes, what, cudaGetErrorString(e));
    }
    b->tracked += bytes;
    note_peak(b);
    return 0;
}

static int launch_fill_i32(lf_cuda_backend *b, int32_t *base, long long layer_stride, int n_layers, int count,
                           int32_t value, lf_error *err) {
    long long total = (long long)n_layers * count;
    int blocks = (int)((total + 255) / 256);
    if (blocks > 1024) blocks = 1024;
    if (blocks < 1) blocks = 1;
    fill_strided_kernel<int32_t><<<blocks, 256, 0, b->stream>>>(base, layer_stride, n_layers, count, value);
    return ck(cudaGetLastError(), err, "fill kernel launch");
}

static int launch_fill_f32(lf_cuda_backend *b, float *base, long long layer_stride, int n_layers, int count,
                           float value, lf_error *err) {
    long long total = (long long)n_layers * count;
    int blocks = (int)((total + 255) / 256);
    if (blocks > 1024) blocks = 1024;
    if (blocks < 1) blocks = 1;
    fill_strided_kernel<float><<<blocks, 256, 0, b->stream>>>(base, layer_stride, n_layers, count, value);
    return ck(cudaGetLastError(), err, "fill kernel launch");
}

/* ---- 1. options ----------------------------------------------------------- */

static int check_options(const lf_model *m, const lf_cuda_options *o, lf_policy_config *pol, lf_error *err) {
    const lf_config *c = &m->cfg;
    if (lf_policy_check_gpu(&o->policy, err)) return -1;
    if (!(o->sampling.repetition_penalty > 0.0f) || !isfinite(o->sampling.repetition_penalty))
        return lf_fail(err, "--repetition-penalty must be finite and > 0 (got %g)",
                       (double)o->sampling.repetition_penalty);
    if (c->head_dim != 64 && c->head_dim != 128)
        return lf_fail(err, "cuda: head_dim %d is not supported on the GPU (64 or 128); use --device cpu",
                       c->head_dim);
    if (c->n_heads <= 0 || c->n_kv_heads <= 0 || c->n_heads % c->n_kv_heads)
        return lf_fail(err, "cuda: %d attention heads are not a multiple of %d KV heads", c->n_heads,
                       c->n_kv_heads);
    if (c->n_heads / c->n_kv_heads > 8)
        return lf_fail(err, "cuda: %d query heads per KV head; the GPU takes at most 8 (use --device cpu)",
                       c->n_heads / c->n_kv_heads);
    if (c->o_bias) return lf_fail(err, "cuda: %s with an o_proj bias (attention_bias) is not supported on the GPU",
                                  c->arch_name);
    if (c->mlp_bias) return lf_fail(err, "cuda: %s with mlp_bias is not supported on the GPU", c->arch_name);
    if (c->hidden_size <= 0 || c->hidden_size % 8 || c->intermediate_size <= 0 || c->intermediate_size % 8)
        return lf_fail(err, "cuda: hidden_size %d and intermediate_size %d must be positive multiples of 8",
                       c->hidden_size, c->intermediate_size);
    if (c->vocab_size <= 0 || c->n_layers <= 0) return lf_fail(err, "cuda: model has no layers or no vocabulary");
    if (o->capacity <= 0) return lf_fail(err, "cuda: capacity %d must be positive", o->capacity);
    if (o->max_prompt <= 0) return lf_fail(err, "cuda: max_prompt %d must be positive", o->max_prompt);
    if (o->max_seqs < 0) return lf_fail(err, "--max-seqs %d must be >= 0", o->max_seqs);
    if (o->mem_fraction < 0 || o->mem_fraction > 1)
        return lf_fail(err, "cuda: mem_fraction %g must be in (0, 1] (0 = default 0.92)", o->mem_fraction);
    if (o->capacity > (1 << 24)) return lf_fail(err, "cuda: capacity %d is too large", o->capacity);
    /* (a `full` prompt longer than the capacity is refused at prefill) */
    return lf_policy_resolve_slots(&o->policy, o->capacity, pol, err);
}

/* ---- 2. weights ----------------------------------------------------------- */

/* Copy weight w (any dtype) as bf16 into dst + row_off rows, or zeros when
 * absent (expected elements: `elems`). stage holds max elements. */
static int upload_weight(const lf_weight *w, size_t elems, bf16 *dst, uint16_t *stage, const char *what,
                         lf_error *err) {
    if (!w->data) {
        return ck(cudaMemset(dst, 0, elems * 2), err, what);
    }
    size_t n = (size_t)w->rows * (size_t)w->cols;
    if (n != elems)
        return lf_fail(err, "cuda: weight %s has %zu elements, %zu expected", what, n, elems);
    const void *src = w->data;
    if (w->dtype == LF_DTYPE_F32) {
        const float *f = (const float *)w->data;
        for (size_t i = 0; i < n; i++) stage[i] = lf_f32_to_bf16(f[i]);
        src = stage;
    } else if (w->dtype == LF_DTYPE_F16) {
        const uint16_t *h = (const uint16_t *)w->data;
        for (size_t i = 0; i < n; i++) stage[i] = lf_f32_to_bf16(lf_f16_to_f32(h[i]));
        src = stage;
    } else if (w->dtype != LF_DTYPE_BF16) {
        return lf_fail(err, "cuda: weight %s has unsupported dtype %d", what, (int)w->dtype);
    }
    return ck(cudaMemcpy(dst, src, n * 2, cudaMemcpyHostToDevice), err, what);
}

/* Element offset of the next weight in the one device block (each 256-byte
 * aligned). */
static size_t wtake(size_t *off, size_t elems) {
    size_t at = *off;
    *off += align256(elems * 2) / 2;
    return at;
}

static int upload_weights(lf_cuda_backend *b, const lf_model *m, lf_error *err) {
    const lf_config *c = &m->cfg;
    const size_t hid = (size_t)b->hidden;
    /* layout */
    size_t off = 0;
    size_t *lo = (size_t *)calloc((size_t)b->L * 9, sizeof(size_t));
    if (!lo) return lf_fail(err, "cuda: out of host memory");
    const bool has_qkv_bias = c->qkv_bias || m->layers[0].bq.data || m->layers[0].bk.data || m->layers[0].bv.data;
    for (int l = 0; l < b->L; l++) {
        size_t *s = lo + (size_t)l * 9;
        s[0] = wtake(&off, hid);                              /* attn_norm */
        s[1] = wtake(&off, (size_t)b->qkvdim * hid);          /* wqkv */
        s[2] = has_qkv_bias ? wtake(&off, (size_t)b->qkvdim) : SIZE_MAX;
        s[3] = c->qk_norm ? wtake(&off, (size_t)b->HD) : SIZE_MAX;
        s[4] = c->qk_norm ? wtake(&off, (size_t)b->HD) : SIZE_MAX;
        s[5] = wtake(&off, hid * (size_t)b->qdim);            /* wo */
        s[6] = wtake(&off, hid);                              /* ffn_norm */
        s[7] = wtake(&off, (size_t)2 * b->inter * hid);       /* w_gate | w_up */
        s[8] = wtake(&off, hid * (size_t)b->inter);           /* w_down */
    }
    const size_t o_embed = wtake(&off, (size_t)b->vocab_pad * hid);
    const size_t o_fnorm = wtake(&off, hid);
    const bool tied = m->lm_head.data == m->embed.data;
    const size_t o_head = tied ? o_embed : wtake(&off, (size_t)b->vocab_pad * hid);
    const size_t o_vbias = b->vocab_pad != b->vocab ? wtake(&off, (size_t)b->vocab_pad) : SIZE_MAX;
    const size_t total_bytes = off * 2;
    if (dmalloc(b, &b->wblock, total_bytes, err, "the weights")) {
        free(lo);
        return lf_fail_prefix(err, "cuda: %.2f GB of bf16 weights do not fit", (double)total_bytes / 1e9);
    }
    b->weight_bytes = total_bytes;
    bf16 *W = (bf16 *)b->wblock;
    b->layers = (gpu_layer *)calloc((size_t)b->L, sizeof(gpu_layer));
    if (!b->layers) {
        free(lo);
        return lf_fail(err, "cuda: out of host memory");
    }
    /* staging for conversions: the largest weight */
    size_t maxe = (size_t)b->vocab_pad * hid;
    size_t cand[] = {(size_t)b->qdim * hid, (size_t)b->inter * hid};
    for (size_t i = 0; i < 2; i++)
        if (cand[i] > maxe) maxe = cand[i];
    uint16_t *stage = (uint16_t *)malloc(maxe * 2);
    if (!stage) {
        free(lo);
        return lf_fail(err, "cuda: out of host memory for a %zu-element weight", maxe);
    }
    int rc = 0;
    char what[96];
    const size_t qr = (size_t)b->qdim, kr = (size_t)b->kvdim;
    for (int l = 0; l < b->L && !rc; l++) {
        const lf_layer_weights *w = &m->layers[l];
        const size_t *s = lo + (size_t)l * 9;
        gpu_layer *g = &b->layers[l];
        g->attn_norm = W + s[0];
        g->wqkv = W + s[1];
        g->bqkv = s[2] != SIZE_MAX ? W + s[2] : NULL;
        g->q_norm = s[3] != SIZE_MAX ? W + s[3] : NULL;
        g->k_norm = s[4] != SIZE_MAX ? W + s[4] : NULL;
        g->wo = W + s[5];
        g->ffn_norm = W + s[6];
        g->wgu = W + s[7];
        g->wdown = W + s[8];
        snprintf(what, sizeof what, "layer %d input_layernorm", l);
        rc = rc || upload_weight(&w->attn_norm, hid, g->attn_norm, stage, what, err);
        snprintf(what, sizeof what, "layer %d q_proj", l);
        rc = rc || upload_weight(&w->wq, qr * hid, g->wqkv, stage, what, err);
        snprintf(what, sizeof what, "layer %d k_proj", l);
        rc = rc || upload_weight(&w->wk, kr * hid, g->wqkv + qr * hid, stage, what, err);
        snprintf(what, sizeof what, "layer %d v_proj", l);
        rc = rc || upload_weight(&w->wv, kr * hid, g->wqkv + (qr + kr) * hid, stage, what, err);
        if (g->bqkv) {
            snprintf(what, sizeof what, "layer %d q/k/v biases", l);
            rc = rc || upload_weight(&w->bq, qr, g->bqkv, stage, what, err);
            rc = rc || upload_weight(&w->bk, kr, g->bqkv + qr, stage, what, err);
            rc = rc || upload_weight(&w->bv, kr, g->bqkv + qr + kr, stage, what, err);
        }
        if (g->q_norm) {
            snprintf(what, sizeof what, "layer %d q_norm/k_norm", l);
            rc = rc || upload_weight(&w->q_norm, (size_t)b->HD, g->q_norm, stage, what, err);
            rc = rc || upload_weight(&w->k_norm, (size_t)b->HD, g->k_norm, stage, what, err);
        }
        snprintf(what, sizeof what, "layer %d o_proj", l);
        rc = rc || upload_weight(&w->wo, hid * qr, g->wo, stage, what, err);
        snprintf(what, sizeof what, "layer %d post_attention_layernorm", l);
        rc = rc || upload_weight(&w->ffn_norm, hid, g->ffn_norm, stage, what, err);
        snprintf(what, sizeof what, "layer %d gate_proj", l);
        rc = rc || upload_weight(&w->w_gate, (size_t)b->inter * hid, g->wgu, stage, what, err);
        snprintf(what, sizeof what, "layer %d up_proj", l);
        rc = rc || upload_weight(&w->w_up, (size_t)b->inter * hid, g->wgu + (size_t)b->inter * hid, stage, what,
                                 err);
        snprintf(what, sizeof what, "layer %d down_proj", l);
        rc = rc || upload_weight(&w->w_down, hid * (size_t)b->inter, g->wdown, stage, what, err);
    }
    b->embed = W + o_embed;
    b->final_norm = W + o_fnorm;
    b->lm_head = W + o_head;
    b->vocab_bias = o_vbias != SIZE_MAX ? W + o_vbias : NULL;
    const size_t vh = (size_t)b->vocab * hid, pad = (size_t)(b->vocab_pad - b->vocab) * hid;
    rc = rc || upload_weight(&m->embed, vh, b->embed, stage, "embed_tokens", err);
    if (!rc && pad) rc = ck(cudaMemset(b->embed + vh, 0, pad * 2), err, "embedding padding");
    rc = rc || upload_weight(&m->final_norm, hid, b->final_norm, stage, "final norm", err);
    if (!tied) {
        rc = rc || upload_weight(&m->lm_head, vh, b->lm_head, stage, "lm_head", err);
        if (!rc && pad) rc = ck(cudaMemset(b->lm_head + vh, 0, pad * 2), err, "lm_head padding");
    }
    if (!rc && b->vocab_bias) {
        /* 0 for real tokens, -inf for the padding rows: they are never sampled */
        for (int i = 0; i < b->vocab_pad; i++) stage[i] = i < b->vocab ? 0 : 0xff80u;
        rc = ck(cudaMemcpy(b->vocab_bias, stage, (size_t)b->vocab_pad * 2, cudaMemcpyHostToDevice), err,
                "vocabulary padding bias");
    }
    free(stage);
    free(lo);
    /* cudaMemset on the legacy stream is asynchronous and the backend's stream
     * does not wait for it: finish the uploads here */
    if (!rc) rc = ck(cudaDeviceSynchronize(), err, "weight upload");
    if (rc) return -1;
    /* bytes one decode step's GEMMs read: every weight but the embedding table
     * (the lm_head counted even when tied) */
    size_t gb = 0;
    for (int l = 0; l < b->L; l++)
        gb += ((size_t)b->qkvdim * hid + hid * qr + (size_t)2 * b->inter * hid + hid * (size_t)b->inter) * 2;
    gb += (size_t)b->vocab_pad * hid * 2;
    b->gemm_weight_bytes = gb;
    /* RoPE tables (host code of the CPU path) */
    lf_rope rope;
    if (lf_rope_init(&rope, c, err)) return lf_fail_prefix(err, "cuda");
    b->attention_factor = rope.attention_factor;
    int r2 = dmalloc(b, (void **)&b->inv_freq, (size_t)(b->HD / 2) * sizeof(float), err, "RoPE frequencies");
    if (!r2)
        r2 = ck(cudaMemcpy(b->inv_freq, rope.inv_freq, (size_t)(b->HD / 2) * sizeof(float),
                           cudaMemcpyHostToDevice),
                err, "RoPE frequencies upload");
    lf_rope_free(&rope);
    return r2;
}

/* ---- 3. memory plan --------------------------------------------------------- */

/* Workspace bytes for E entries (every buffer that depends on the entry
 * count, plus the prefill buffers). Fills the offsets when `b` is set. */
typedef struct ws_layout {
    size_t x, h, qkv, q, att, gu, mlp, logits, logits_copy, q32, k32, pk, pv, pk8, pv8, pks, pvs, pvn, win, wsum;
    size_t win_bytes;
    size_t in, ptok, ppos, kept, slotpos, slotacc, attn, samp, total;
    size_t in_bytes, attn_bytes, samp_bytes;
    int rows, mlp_rows;
} ws_layout;

/* Whether a prefill may have to compress its prompt (SnapKV), which needs
 * the prompt's K/V scratch and fp32 q/k: a budgeted policy and a prompt
 * longer than the smallest budget that may compress (a sequence's own
 * budget, lf_cuda_prefill's, can be smaller than the entries' slots). */
static bool prefill_may_compress(const lf_cuda_backend *b) {
    return b->desc->budgeted && b->P > LF_SNAPKV_MIN_BUDGET - 1;
}

static int ws_plan(const lf_cuda_backend *b, int E, ws_layout *w, lf_error *err) {
    memset(w, 0, sizeof *w);
    const size_t R = (size_t)(b->P > E ? b->P : E);
    int mr = b->P < LF_CUDA_MLP_CHUNK ? b->P : LF_CUDA_MLP_CHUNK;
    if (E > mr) mr = E;
    const size_t M = (size_t)mr;
    const size_t P = (size_t)b->P;
    const bool may_compress = prefill_may_compress(b);
    const bool need_f32 = may_compress || lf_score_writes_acc(b->mode);
    const bool bf16_scratch = may_compress || b->f8; /* fp8: prefill attention reads the bf16 rows */
    const bool f8_scratch = may_compress && b->f8;
    size_t off = 0;
#define TAKE(field, bytes)        \
    do {                          \
        w->field = off;           \
        off += align256(bytes);   \
    } while (0)
    TAKE(x, R * b->hidden * 4);
    TAKE(h, R * b->hidden * 2);
    TAKE(qkv, R * b->qkvdim * 4);
    TAKE(q, R * b->qdim * 2);
    TAKE(att, R * b->qdim * 2);
    TAKE(gu, M * 2 * b->inter * 4);
    TAKE(mlp, M * b->inter * 2);
    TAKE(logits, (size_t)E * b->vocab_pad * 4);
    TAKE(logits_copy, (size_t)E * b->vocab_pad * 4);
    TAKE(q32, need_f32 ? P * b->qdim * 4 : 0);
    TAKE(k32, need_f32 ? P * b->kvdim * 4 : 0);
    TAKE(pk, bf16_scratch ? P * b->kvdim * 2 : 0);
    TAKE(pv, bf16_scratch ? P * b->kvdim * 2 : 0);
    TAKE(pk8, f8_scratch ? P * b->kvdim : 0);
    TAKE(pv8, f8_scratch ? P * b->kvdim : 0);
    TAKE(pks, f8_scratch ? P * b->KV * 4 : 0);
    TAKE(pvs, f8_scratch ? P * b->KV * 4 : 0);
    TAKE(pvn, f8_scratch && b->vnorm ? P * b->KV * 4 : 0);
    /* the window softmax sums: scratch, and SnapKV's [P] + the accumulator's [P] */
    w->win_bytes = need_f32 ? lf_cuda_window_sums_bytes(b->P, b->H, LF_SNAPKV_WINDOW) : 0;
    TAKE(win, w->win_bytes);
    TAKE(wsum, need_f32 ? 2 * P * 4 : 0);
    /* decode inputs: seeds (u64), tokens, pos, entries, row_slot, steps, out */
    w->in_bytes = (size_t)E * (8 + 6 * 4);
    TAKE(in, w->in_bytes);
    TAKE(ptok, P * 4);
    TAKE(ppos, P * 4);
    TAKE(kept, (size_t)b->cap * 4);
    TAKE(slotpos, (size_t)b->cap * 4);
    TAKE(slotacc, (size_t)b->cap * 4);
    lf_cuda_attn_desc d;
    memset(&d, 0, sizeof d);
    d.n_seq = E;
    d.n_heads = b->H;
    d.n_kv_heads = b->KV;
    d.head_dim = b->HD;
    d.dtype = LF_DTYPE_BF16;
    d.out_dtype = LF_DTYPE_BF16;
    d.mode = b->mode;
    d.kv_fp8 = b->f8;
    /* every scan a step may use (multiples of 64, and cap): the kernel's plan,
     * and with it the workspace, is not monotonic in the slots scanned */
    w->attn_bytes = 0;
    for (int sc = 64;; sc += 64) {
        d.capacity = sc < b->cap ? sc : b->cap;
        size_t t = 0;
        if (lf_cuda_attn_workspace_bytes(&d, &t, err)) return lf_fail_prefix(err, "cuda: plan");
        if (t > w->attn_bytes) w->attn_bytes = t;
        if (d.capacity == b->cap) break;
    }
    TAKE(attn, w->attn_bytes);
    w->samp_bytes = lf_cuda_sample_workspace_bytes(E, b->vocab_pad);
    TAKE(samp, w->samp_bytes);
#undef TAKE
    w->total = off;
    w->rows = (int)R;
    w->mlp_rows = mr;
    return 0;
}

/* Entries: the largest E <= cap_e with E * per_entry + ws(E) <= avail. */
static int plan_entries(lf_cuda_backend *b, size_t avail, size_t per_entry, int cap_e, int *out, ws_layout *wl,
                        lf_error *err) {
    ws_layout w1;
    if (ws_plan(b, 1, &w1, err)) return -1;
    if (per_entry + w1.total > avail)
        return lf_fail(err,
                       "cuda: not even one sequence fits: one entry needs %zu bytes (K/V %zu + slot state %zu) "
                       "plus %zu bytes of workspace, but only %zu of the %zu free bytes may be used "
                       "(mem_fraction %.3g); lower --budget/--max-tokens or the prompt length",
                       per_entry, b->kv_per_entry, b->aux_per_entry, w1.total, avail, b->gpu_free_plan,
                       b->o.mem_fraction > 0 ? b->o.mem_fraction : 0.92);
    size_t e0 = (avail - w1.total) / per_entry;
    int hi = e0 > (size_t)cap_e ? cap_e : (int)e0;
    if (hi < 1) hi = 1;
    ws_layout w;
    if (ws_plan(b, hi, &w, err)) return -1;
    if ((size_t)hi * per_entry + w.total <= avail) {
        *out = hi;
        *wl = w;
        return 0;
    }
    /* binary search: lo fits, hi does not */
    int lo = 1;
    ws_layout wlo = w1;
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        if (ws_plan(b, mid, &w, err)) return -1;
        if ((size_t)mid * per_entry + w.total <= avail) {
            lo = mid;
            wlo = w;
        } else {
            hi = mid;
        }
    }
    *out = lo;
    *wl = wlo;
    return 0;
}

extern "C" void lf_cuda_backend_free(lf_cuda_backend *b) {
    if (!b) return;
    if (b->stream) cudaStreamSynchronize(b->stream);
    if (b->graphs) {
        for (int i = 0; i < 2 * (b->E + 1) * b->n_buckets; i++)
            if (b->graphs[i]) cudaGraphExecDestroy(b->graphs[i]);
        free(b->graphs);
    }
    if (b->pf) lf_cuda_prefill_free(b->pf);
    if (b->gemm) lf_cuda_gemm_free(b->gemm);
    cudaFree(b->wblock);
    cudaFree(b->inv_freq);
    cudaFree(b->pool);
    cudaFree(b->ws);
    if (b->h_in) cudaFreeHost(b->h_in);
    if (b->stream) cudaStreamDestroy(b->stream);
    free(b->layers);
    free(b->hraw);
    free(b->hwin);
    free(b->st);
    free(b->mark);
    free(b);
}

extern "C" int lf_cuda_backend_create(const lf_model *m, const lf_cuda_options *o, lf_cuda_backend **out,
                                      lf_error *err) {
    *out = NULL;
    if (!m || !o) return lf_fail(err, "cuda: no model or no options");
    lf_policy_config pol;
    if (check_options(m, o, &pol, err)) return -1;
    const lf_config *c = &m->cfg;

    lf_cuda_backend *b = (lf_cuda_backend *)calloc(1, sizeof *b);
    if (!b) return lf_fail(err, "cuda: out of host memory");
    b->o = *o;
    b->pol = pol;
    b->desc = lf_policy_get(pol.kind);
    b->mode = b->desc->score;
    b->scored = b->mode != LF_SCORE_NONE;
    b->uses_acc = lf_score_reads_acc(b->mode);
    b->f8 = o->policy.kv_dtype == LF_KV_FP8;
    b->vnorm = b->f8 && (b->mode == LF_SCORE_ATT_VNORM || b->mode == LF_SCORE_ACC_VNORM);
    b->kv_elem = b->f8 ? 1 : 2;
    b->L = c->n_layers;
    b->H = c->n_heads;
    b->KV = c->n_kv_heads;
    b->HD = c->head_dim;
    b->hidden = c->hidden_size;
    b->inter = c->intermediate_size;
    b->vocab = c->vocab_size;
    b->vocab_pad = (c->vocab_size + 7) / 8 * 8;
    b->qdim = b->H * b->HD;
    b->kvdim = b->KV * b->HD;
    b->qkvdim = b->qdim + 2 * b->kvdim;
    b->eps = (float)c->rms_norm_eps;
    b->cap = o->capacity;
    b->P = o->max_prompt;

    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev < 1) {
        free(b);
        return lf_fail(err, "cuda: no CUDA device (%s); use --device cpu",
                       e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    }
    if (ck(cudaSetDevice(0), err, "cudaSetDevice(0)")) {
        free(b);
        return -1;
    }
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
        snprintf(b->device_name, sizeof b->device_name, "%.127s", prop.name);
    size_t fr = 0, tot = 0;
    if (ck(cudaMemGetInfo(&fr, &tot), err, "cudaMemGetInfo")) {
        free(b);
        return -1;
    }
    b->free_at_start = fr;
    b->gpu_total = tot;
    if (ck(cudaStreamCreateWithFlags(&b->stream, cudaStreamNonBlocking), err, "stream creation")) goto fail;
    if (lf_cuda_gemm_create(&b->gemm, err)) goto fail;
    if (lf_cuda_prefill_create(b->P, b->H, b->KV, b->HD, LF_DTYPE_BF16, &b->pf, err)) {
        lf_fail_prefix(err, "cuda: prefill attention for --max-prompt %d", b->P);
        goto fail;
    }
    note_peak(b);
    if (upload_weights(b, m, err)) goto fail;

    {
        /* ---- the plan ---- */
        b->kv_per_entry = (size_t)b->L * b->cap * lf_kv_token_bytes(o->policy.kv_dtype, b->KV, b->HD);
        b->seen_words = o->sampling.repetition_penalty != 1.0f ? (b->vocab + 31) / 32 : 0;
        b->aux_per_entry = (size_t)b->L * b->cap * (4 + (b->scored ? 4 : 0) + (b->uses_acc ? 4 : 0) +
                                                     (b->vnorm ? 4 * (size_t)b->KV : 0)) +
                           (size_t)b->L * 4 + 4 + (size_t)b->seen_words * 4;
        const size_t per_entry = b->kv_per_entry + align256(b->aux_per_entry) + 256;
        if (ck(cudaMemGetInfo(&fr, &tot), err, "cudaMemGetInfo")) goto fail;
        b->gpu_free_plan = fr;
        const double frac = o->mem_fraction > 0 ? o->mem_fraction : 0.92;
        const size_t avail = (size_t)(frac * (double)fr);
        const int cap_e = o->max_seqs > 0 ? o->max_seqs : LF_CUDA_MAX_ENTRIES;
        ws_layout wl;
        int E = 0;
        if (plan_entries(b, avail, per_entry, cap_e, &E, &wl, err)) goto fail;
        b->E = E;
        b->mlp_rows = wl.mlp_rows;
        size_t fit_e = (avail > wl.total) ? (avail - wl.total) / per_entry : 0;
        snprintf(b->plan, sizeof b->plan,
                 "entries = min(%s %d, fit %zu) = %d: %.3g of %.3g free bytes (mem_fraction %.2f) minus %.3g "
                 "workspace, %zu bytes per entry; PDL %s",
                 o->max_seqs > 0 ? "--max-seqs" : "limit", cap_e, fit_e, E, (double)avail, (double)fr, frac,
                 (double)wl.total, per_entry, lf_cuda_pdl_enabled() ? "on (LF_CUDA_PDL=1)" : "off");

        /* pool: K [layer][entry][kvh][cap][hd], V same, pos/score/acc
         * [layer][entry][cap], next_slot [layer][entry] */
        const size_t kv_elems = (size_t)b->L * E * b->KV * (size_t)b->cap * b->HD;
        const size_t slots = (size_t)b->L * E * b->cap;
        size_t off = 0;
        const size_t oK = off;
        off += align256(kv_elems * b->kv_elem);
        const size_t oV = off;
        off += align256(kv_elems * b->kv_elem);
        const size_t oKS = off; /* fp8: a float scale per row */
        off += b->f8 ? align256(kv_elems / b->HD * 4) : 0;
        const size_t oVS = off;
        off += b->f8 ? align256(kv_elems / b->HD * 4) : 0;
        const size_t oVN = off;
        off += b->vnorm ? align256(kv_elems / b->HD * 4) : 0;
        const size_t oP = off;
        off += align256(slots * 4);
        const size_t oS = off;
        off += b->scored ? align256(slots * 4) : 0;
        const size_t oA = off;
        off += b->uses_acc ? align256(slots * 4) : 0;
        const size_t oN = off;
        off += align256((size_t)b->L * E * 4);
        const size_t oR = off;
        off += align256((size_t)E * 4);
        const size_t oH = off;
        off += align256((size_t)E * b->seen_words * 4);
        if (dmalloc(b, &b->pool, off, err, "the KV pool")) goto fail;
        b->pool_bytes = off;
        char *pb = (char *)b->pool;
        b->K = pb + oK;
        b->V = pb + oV;
        b->KS = b->f8 ? (float *)(pb + oKS) : NULL;
        b->VS = b->f8 ? (float *)(pb + oVS) : NULL;
        b->VN = b->vnorm ? (float *)(pb + oVN) : NULL;
        b->cpos = (int32_t *)(pb + oP);
        b->score = b->scored ? (float *)(pb + oS) : NULL;
        b->acc = b->uses_acc ? (float *)(pb + oA) : NULL;
        b->next_slot = (int32_t *)(pb + oN);
        b->recent_e = (int32_t *)(pb + oR);
        b->seen = b->seen_words ? (uint32_t *)(pb + oH) : NULL;
        b->kv_seq_stride = (long long)b->KV * b->cap * b->HD;
        b->kv_layer_stride = (long long)E * b->kv_seq_stride;
        b->slot_layer_stride = (long long)E * b->cap;
        /* every slot empty */
        if (ck(cudaMemsetAsync(b->cpos, 0xff, slots * 4, b->stream), err, "pool init")) goto fail;
        if (b->scored && ck(cudaMemsetAsync(b->score, 0, slots * 4, b->stream), err, "pool init")) goto fail;
        if (b->uses_acc && ck(cudaMemsetAsync(b->acc, 0, slots * 4, b->stream), err, "pool init")) goto fail;
        if (ck(cudaMemsetAsync(b->next_slot, 0, (size_t)b->L * E * 4, b->stream), err, "pool init")) goto fail;
        if (launch_fill_i32(b, b->recent_e, 0, 1, E, b->pol.recent, err)) goto fail;

        /* workspace */
        if (dmalloc(b, &b->ws, wl.total, err, "the activations")) goto fail;
        b->ws_bytes = wl.total;
        char *w = (char *)b->ws;
        b->x = (float *)(w + wl.x);
        b->h = (bf16 *)(w + wl.h);
        b->qkv = (float *)(w + wl.qkv);
        b->q = (bf16 *)(w + wl.q);
        b->att = (bf16 *)(w + wl.att);
        b->gu = (float *)(w + wl.gu);
        b->mlp = (bf16 *)(w + wl.mlp);
        b->logits = (float *)(w + wl.logits);
        b->logits_copy = (float *)(w + wl.logits_copy);
        b->q32 = (float *)(w + wl.q32);
        b->k32 = (float *)(w + wl.k32);
        b->pk = (bf16 *)(w + wl.pk);
        b->win_ws = w + wl.win;
        b->win_ws_bytes = wl.win_bytes;
        b->d_raw = (float *)(w + wl.wsum);
        b->d_win = b->d_raw + b->P;
        b->pv = (bf16 *)(w + wl.pv);
        b->pk8 = (uint8_t *)(w + wl.pk8);
        b->pv8 = (uint8_t *)(w + wl.pv8);
        b->pks = (float *)(w + wl.pks);
        b->pvs = (float *)(w + wl.pvs);
        b->pvn = (float *)(w + wl.pvn);
        b->in_bytes = wl.in_bytes;
        char *in = w + wl.in;
        b->d_seeds = (uint64_t *)in;
        b->d_tokens = (int32_t *)(in + (size_t)E * 8);
        b->d_pos = b->d_tokens + E;
        b->d_entries = b->d_pos + E;
        b->d_row_slot = b->d_entries + E;
        b->d_steps = b->d_row_slot + E;
        b->d_out = b->d_steps + E;
        b->d_ptok = (int32_t *)(w + wl.ptok);
        b->d_ppos = (int32_t *)(w + wl.ppos);
        b->d_kept = (int32_t *)(w + wl.kept);
        b->d_slotpos = (int32_t *)(w + wl.slotpos);
        b->d_slotacc = (float *)(w + wl.slotacc);
        b->attn_ws = w + wl.attn;
        b->attn_ws_bytes = wl.attn_bytes;
        b->samp_ws = w + wl.samp;
        b->samp_ws_bytes = wl.samp_bytes;
        if (lf_cuda_attn_workspace_init(b->attn_ws, b->attn_ws_bytes, b->stream, err)) goto fail;
        b->attn_ws_rows = INT_MAX;

        /* pinned host mirror: decode inputs, then prefill tokens, kept, slot pos, slot acc */
        b->h_in_bytes = wl.in_bytes + (size_t)b->P * 4 + (size_t)b->cap * 12 + 64;
        if (ck(cudaMallocHost(&b->h_in, b->h_in_bytes), err, "pinned host buffer")) goto fail;
        char *hi = (char *)b->h_in;
        b->h_seeds = (uint64_t *)hi;
        b->h_tokens = (int32_t *)(hi + (size_t)E * 8);
        b->h_pos = b->h_tokens + E;
        b->h_entries = b->h_pos + E;
        b->h_row_slot = b->h_entries + E;
        b->h_steps = b->h_row_slot + E;
        b->h_out = b->h_steps + E;
        b->h_ptok = b->h_out + E;
        b->h_kept = b->h_ptok + b->P;
        b->h_slotpos = b->h_kept + b->cap;
        b->h_slotacc = (float *)(b->h_slotpos + b->cap);
        memset(b->h_in, 0, b->h_in_bytes);

        /* prefill positions 0..P-1 */
        for (int i = 0; i < b->P; i++) b->h_ptok[i] = i;
        if (ck(cudaMemcpyAsync(b->d_ppos, b->h_ptok, (size_t)b->P * 4, cudaMemcpyHostToDevice, b->stream), err,
               "prefill positions upload"))
            goto fail;
        if (ck(cudaStreamSynchronize(b->stream), err, "pool initialisation")) goto fail;

        const bool need_f32 = prefill_may_compress(b) || lf_score_writes_acc(b->mode);
        if (need_f32) {
            b->hraw = (float *)malloc((size_t)b->P * sizeof(float));
            b->hwin = (float *)malloc((size_t)b->P * sizeof(float));
            if (!b->hraw || !b->hwin) {
                lf_fail(err, "cuda: out of host memory for the window sums of %d tokens", b->P);
                goto fail;
            }
        }
        b->st = (entry_state *)calloc((size_t)E, sizeof(entry_state));
        b->mark = (int *)calloc((size_t)E, sizeof(int));
        b->scan_bucket = 64;
        {
            const char *fs = getenv("LF_CUDA_FULL_SCAN"), *ng = getenv("LF_CUDA_NO_GRAPHS");
            b->full_scan = fs && strcmp(fs, "1") == 0;
            if (ng && strcmp(ng, "1") == 0) b->o.no_graphs = true; /* diagnostics */
        }
        b->n_buckets = (b->cap + b->scan_bucket - 1) / b->scan_bucket;
        b->cur_scan = b->cap;
        b->graphs = (cudaGraphExec_t *)calloc((size_t)2 * (E + 1) * b->n_buckets, sizeof(cudaGraphExec_t));
        if (!b->st || !b->mark || !b->graphs) {
            lf_fail(err, "cuda: out of host memory");
            goto fail;
        }
    }
    note_peak(b);
    *out = b;
    return 0;
fail:
    if (b->stream) cudaStreamSynchronize(b->stream);
    lf_cuda_backend_free(b);
    return -1;
}

/* ---- shared pieces of the forward ---------------------------------------- */

static void prof_mark(prof *p, cudaStream_t s, int cat) {
    if (!p || p->n >= p->cap) return;
    cudaEventRecord(p->ev[p->n], s);
    p->cat[p->n] = cat;
    p->n++;
}

/* x += down(silu(gate(h)) * up(h)) with h = rmsnorm(x), rows r0..r0+n-1 */
static int mlp_rows(lf_cuda_backend *b, const gpu_layer *g, int r0, int n, prof *pr, lf_error *err) {
    void *s = b->stream;
    float *x = b->x + (size_t)r0 * b->hidden;
    bf16 *h = b->h + (size_t)r0 * b->hidden;
    prof_mark(pr, b->stream, CAT_OTHER);
    if (lf_cuda_rmsnorm(x, g->ffn_norm, n, b->hidden, b->eps, h, s, err)) return -1;
    prof_mark(pr, b->stream, CAT_GEMM);
    if (lf_cuda_gemm(b->gemm, g->wgu, 2 * b->inter, b->hidden, h, n, b->gu, LF_DTYPE_F32, 0.f, s, err)) return -1;
    prof_mark(pr, b->stream, CAT_OTHER);
    if (lf_cuda_swiglu(b->gu, n, b->inter, b->mlp, s, err)) return -1;
    prof_mark(pr, b->stream, CAT_GEMM);
    if (lf_cuda_gemm(b->gemm, g->wdown, b->hidden, b->inter, b->mlp, n, x, LF_DTYPE_F32, 1.f, s, err)) return -1;
    return 0;
}

/* ---- 4. prefill ------------------------------------------------------------- */

/* The fields of a rope_store call that prefill and decode share: the layer's
 * q/k/v from b->qkv, its bias and q/k norms, RoPE at positions pos. */
static void rope_args(const lf_cuda_backend *b, const gpu_layer *g, int n, const int32_t *pos,
                      lf_cuda_rope_store_args *a) {
    memset(a, 0, sizeof *a);
    a->n = n;
    a->n_heads = b->H;
    a->n_kv_heads = b->KV;
    a->head_dim = b->HD;
    a->dt = LF_DTYPE_BF16;
    a->qkv = b->qkv;
    a->bias = g->bqkv;
    a->q_norm = g->q_norm;
    a->k_norm = g->k_norm;
    a->eps = b->eps;
    a->inv_freq = b->inv_freq;
    a->attention_factor = b->attention_factor;
    a->pos = pos;
}

/* Host part of a compressed / accumulated prefill layer, as
 * lf_kv_prefill_layer, from the window sums the GPU computed (hraw, hwin):
 * kept positions (SnapKV) and the H2O/VATP starting accumulator. Returns nk. */
static int prefill_host_layer(lf_cuda_backend *b, int n, int bud, bool compress, int *nk_out, lf_error *err) {
    const int cap = b->cap;
    int nk = n;
    if (compress) {
        nk = bud - 1;
        const int sinks = lf_snapkv_sinks(&b->pol, b->o.policy.sinks < 0, nk);
        if (lf_snapkv_select_from_sums(b->hraw, n, nk, sinks, b->h_kept, err))
            return lf_fail_prefix(err, "cuda prefill: SnapKV");
    }
    if (lf_score_writes_acc(b->mode)) {
        for (int i = 0; i < cap; i++) b->h_slotacc[i] = i < nk ? b->hwin[compress ? b->h_kept[i] : i] : 0.f;
    }
    for (int i = 0; i < cap; i++)
        b->h_slotpos[i] = i < nk ? (compress ? b->h_kept[i] : i) : i < bud ? -1 : LF_CUDA_SLOT_OFF;
    *nk_out = nk;
    return 0;
}

/* SnapKV's kept rows (d_kept) of the prompt's FP8 scratch into the entry's
 * slots 0..nk-1: codes and scales are copied as they are (the row's bytes do
 * not depend on where it lives), with lf_cuda_gather_rows over 16-bit units
 * (a row of hd codes is hd/2 units, a scale 2). */
static int gather_fp8_rows(lf_cuda_backend *b, int n, void *Kl, float *KSl, void *Vl, float *VSl, float *VNl,
                           int nk, lf_error *err) {
    void *s = (void *)b->stream;
    const int cap = b->cap, hu = b->HD / 2;
    return lf_cuda_gather_rows(b->pk8, (int64_t)n * hu, Kl, (int64_t)cap * hu, b->KV, hu, LF_DTYPE_BF16, b->d_kept,
                               nk, s, err) ||
           lf_cuda_gather_rows(b->pv8, (int64_t)n * hu, Vl, (int64_t)cap * hu, b->KV, hu, LF_DTYPE_BF16, b->d_kept,
                               nk, s, err) ||
           lf_cuda_gather_rows(b->pks, (int64_t)n * 2, KSl, (int64_t)cap * 2, b->KV, 2, LF_DTYPE_BF16, b->d_kept, nk,
                               s, err) ||
           lf_cuda_gather_rows(b->pvs, (int64_t)n * 2, VSl, (int64_t)cap * 2, b->KV, 2, LF_DTYPE_BF16, b->d_kept, nk,
                               s, err) ||
           (VNl && lf_cuda_gather_rows(b->pvn, (int64_t)n * 2, VNl, (int64_t)cap * 2, b->KV, 2, LF_DTYPE_BF16,
                                       b->d_kept, nk, s, err))
               ? -1
               : 0;
}

static int prefill_run(lf_cuda_backend *b, int entry, const int *tokens, int n, int bud, uint64_t seed,
                       int *first_token, float *logits, lf_error *err) {
    cudaStream_t s = b->stream;
    void *vs = (void *)s;
    const int cap = b->cap;
    const bool compress = b->desc->budgeted && n > bud - 1;
    const bool need_f32 = compress || lf_score_writes_acc(b->mode);
    int nk = compress ? bud - 1 : n;

    for (int i = 0; i < n; i++) b->h_ptok[i] = tokens[i];
    if (ck(cudaMemcpyAsync(b->d_ptok, b->h_ptok, (size_t)n * 4, cudaMemcpyHostToDevice, s), err,
           "prefill token upload"))
        return -1;
    /* the entry's slots: empty up to its budget, off beyond; scores and accumulators 0 */
    int32_t *pos_e = b->cpos + (size_t)entry * cap;
    if (launch_fill_i32(b, pos_e, b->slot_layer_stride, b->L, bud, -1, err)) return -1;
    if (bud < cap && launch_fill_i32(b, pos_e + bud, b->slot_layer_stride, b->L, cap - bud, LF_CUDA_SLOT_OFF, err))
        return -1;
    if (b->scored && launch_fill_f32(b, b->score + (size_t)entry * cap, b->slot_layer_stride, b->L, cap, 0.f, err))
        return -1;
    if (b->uses_acc && launch_fill_f32(b, b->acc + (size_t)entry * cap, b->slot_layer_stride, b->L, cap, 0.f, err))
        return -1;

    if (lf_cuda_embed(b->embed, b->vocab, b->hidden, b->d_ptok, n, b->x, vs, err)) return -1;
    for (int l = 0; l < b->L; l++) {
        const gpu_layer *g = &b->layers[l];
        void *Kl = kv_at(b, b->K, l, entry), *Vl = kv_at(b, b->V, l, entry);
        float *KSl = kv_scale_at(b, b->KS, l, entry), *VSl = kv_scale_at(b, b->VS, l, entry);
        float *VNl = kv_scale_at(b, b->VN, l, entry);
        int32_t *pos_l = b->cpos + (size_t)l * b->slot_layer_stride + (size_t)entry * cap;
        /* bf16 rows for the prefill attention in the scratch (fp8 cache, or SnapKV picks later) */
        const bool scratch = compress || b->f8;
        if (lf_cuda_rmsnorm(b->x, g->attn_norm, n, b->hidden, b->eps, b->h, vs, err)) goto layer_fail;
        if (lf_cuda_gemm(b->gemm, g->wqkv, b->qkvdim, b->hidden, b->h, n, b->qkv, LF_DTYPE_F32, 0.f, vs, err))
            goto layer_fail;
        {
            lf_cuda_rope_store_args a;
            rope_args(b, g, n, b->d_ppos, &a);
            a.q_out = b->q;
            a.q_head_major = 1;
            a.q_f32 = need_f32 ? b->q32 : NULL;
            a.k_f32 = need_f32 ? b->k32 : NULL;
            if (scratch) { /* into the prefill scratch [kvh][n][hd] */
                a.k_dst = b->pk;
                a.v_dst = b->pv;
                a.kvh_stride = (int64_t)n * b->HD;
            } else { /* straight into the entry's slots 0..n-1 */
                a.k_dst = Kl;
                a.v_dst = Vl;
                a.kvh_stride = (int64_t)cap * b->HD;
            }
            a.cache_pos = compress ? NULL : pos_l;
            if (b->f8) { /* FP8 rows from the fp32 values: the entry's slots 0..n-1, or a scratch SnapKV picks from */
                a.k8_dst = compress ? (void *)b->pk8 : Kl;
                a.v8_dst = compress ? (void *)b->pv8 : Vl;
                a.k8_scale = compress ? b->pks : KSl;
                a.v8_scale = compress ? b->pvs : VSl;
                a.v8_norm = b->vnorm ? (compress ? b->pvn : VNl) : NULL;
                a.f8_entry_stride = 0;
                a.f8_kvh_stride = (int64_t)(compress ? n : cap) * b->HD;
            }
            a.kv_entry_stride = 0;
            a.slot_entry_stride = 0;
            if (lf_cuda_rope_store(&a, vs, err)) goto layer_fail;
        }
        {
            const void *kk = scratch ? (const void *)b->pk : (const void *)Kl;
            const void *vv = scratch ? (const void *)b->pv : (const void *)Vl;
            const int64_t kst = scratch ? (int64_t)n * b->HD : (int64_t)cap * b->HD;
            if (lf_cuda_prefill_attention(b->pf, b->q, kk, vv, kst, n, 0.f, b->att, vs, err)) goto layer_fail;
        }
        if (need_f32) {
            /* the window sums on the GPU (fp32 q/k from rope_store), n floats each back to the host */
            const int ww = n < LF_SNAPKV_WINDOW ? n : LF_SNAPKV_WINDOW;
            if (compress &&
                (lf_cuda_window_sums(b->q32, b->k32, n, b->H, b->KV, b->HD, LF_SNAPKV_WINDOW, 0, 1.f, b->d_raw,
                                     b->win_ws, b->win_ws_bytes, vs, err) ||
                 ck(cudaMemcpyAsync(b->hraw, b->d_raw, (size_t)n * 4, cudaMemcpyDeviceToHost, s), err,
                    "SnapKV window sums download")))
                goto layer_fail;
            if (lf_score_writes_acc(b->mode) &&
                (lf_cuda_window_sums(b->q32, b->k32, n, b->H, b->KV, b->HD, ww, 1, 1.f / (float)b->H, b->d_win,
                                     b->win_ws, b->win_ws_bytes, vs, err) ||
                 ck(cudaMemcpyAsync(b->hwin, b->d_win, (size_t)n * 4, cudaMemcpyDeviceToHost, s), err,
                    "window attention download")))
                goto layer_fail;
            if (ck(cudaStreamSynchronize(s), err, "prefill layer")) goto layer_fail;
            if (prefill_host_layer(b, n, bud, compress, &nk, err)) goto layer_fail;
            if (compress) {
                if (ck(cudaMemcpyAsync(b->d_kept, b->h_kept, (size_t)nk * 4, cudaMemcpyHostToDevice, s), err,
                       "SnapKV indices upload"))
                    goto layer_fail;
                if (b->f8 ? gather_fp8_rows(b, n, Kl, KSl, Vl, VSl, VNl, nk, err)
                          : (lf_cuda_gather_rows(b->pk, (int64_t)n * b->HD, Kl, (int64_t)cap * b->HD, b->KV, b->HD,
                                                 LF_DTYPE_BF16, b->d_kept, nk, vs, err) ||
                             lf_cuda_gather_rows(b->pv, (int64_t)n * b->HD, Vl, (int64_t)cap * b->HD, b->KV, b->HD,
                                                 LF_DTYPE_BF16, b->d_kept, nk, vs, err)))
                    goto layer_fail;
                if (ck(cudaMemcpyAsync(pos_l, b->h_slotpos, (size_t)cap * 4, cudaMemcpyHostToDevice, s), err,
                       "slot positions upload"))
                    goto layer_fail;
            }
            if (lf_score_writes_acc(b->mode)) {
                float *acc_l = b->acc + (size_t)l * b->slot_layer_stride + (size_t)entry * cap;
                if (ck(cudaMemcpyAsync(acc_l, b->h_slotacc, (size_t)cap * 4, cudaMemcpyHostToDevice, s), err,
                       "accumulator upload"))
                    goto layer_fail;
            }
        }
        if (b->desc->slot_stat &&
            lf_cuda_slot_stat(b->desc->slot_stat, Kl, LF_DTYPE_BF16, 0, (int64_t)cap * b->HD, b->KV, b->HD, NULL,
                              NULL, nk, b->acc + (size_t)l * b->slot_layer_stride + (size_t)entry * cap, 0, vs, err))
            goto layer_fail;
        if (lf_cuda_gemm(b->gemm, g->wo, b->hidden, b->qdim, b->att, n, b->x, LF_DTYPE_F32, 1.f, vs, err))
            goto layer_fail;
        for (int r0 = 0; r0 < n; r0 += b->mlp_rows) {
            int nt = n - r0 < b->mlp_rows ? n - r0 : b->mlp_rows;
            if (mlp_rows(b, g, r0, nt, NULL, err)) goto layer_fail;
        }
        continue;
    layer_fail:
        return lf_fail_prefix(err, "cuda prefill of %d tokens into entry %d, layer %d", n, entry, l);
    }
    if (b->scored && launch_fill_i32(b, b->next_slot + entry, b->E, b->L, 1, nk, err)) return -1;

    /* the last row: final norm, lm_head, first token */
    if (lf_cuda_rmsnorm(b->x + (size_t)(n - 1) * b->hidden, b->final_norm, 1, b->hidden, b->eps, b->h, vs, err) ||
        lf_cuda_gemm(b->gemm, b->lm_head, b->vocab_pad, b->hidden, b->h, 1, b->logits, LF_DTYPE_F32, 0.f, vs,
                     err))
        return lf_fail_prefix(err, "cuda prefill: logits");
    if (b->vocab_bias && lf_cuda_add_bias(b->logits, b->vocab_bias, 1, b->vocab_pad, vs, err))
        return lf_fail_prefix(err, "cuda prefill: logits");
    if (logits &&
        ck(cudaMemcpyAsync(logits, b->logits, (size_t)b->vocab * 4, cudaMemcpyDeviceToHost, s), err,
           "prefill logits download"))
        return -1;
    b->h_seeds[0] = seed;
    b->h_steps[0] = 0;
    if (ck(cudaMemcpyAsync(b->d_seeds, b->h_seeds, 8, cudaMemcpyHostToDevice, s), err, "seed upload") ||
        ck(cudaMemcpyAsync(b->d_steps, b->h_steps, 4, cudaMemcpyHostToDevice, s), err, "seed upload"))
        return -1;
    if (b->seen) { /* the prompt is the history the first token is penalised against */
        uint32_t *seen_e = b->seen + (size_t)entry * b->seen_words;
        if (lf_cuda_history_reset(seen_e, b->seen_words, b->d_ptok, n, vs, err) ||
            lf_cuda_repetition_penalty(b->logits, 1, b->vocab, b->vocab_pad, b->o.sampling.repetition_penalty,
                                       seen_e, b->seen_words, NULL, NULL, vs, err))
            return lf_fail_prefix(err, "cuda prefill");
    }
    if (lf_cuda_sample(b->logits, 1, b->vocab_pad, &b->o.sampling, b->d_seeds, b->d_steps, b->d_out, b->samp_ws,
                       b->samp_ws_bytes, vs, err))
        return lf_fail_prefix(err, "cuda prefill: sampling");
    if (ck(cudaMemcpyAsync(b->h_out, b->d_out, 4, cudaMemcpyDeviceToHost, s), err, "token download") ||
        ck(cudaStreamSynchronize(s), err, "prefill"))
        return -1;
    *first_token = b->h_out[0]; /* or LF_SAMPLE_NONFINITE */

    entry_state *st = &b->st[entry];
    st->live = true;
    st->seed = seed;
    st->step = 1;
    st->budget = bud;
    st->filled = nk;
    st->ring = 0;
    st->s0 = 0;
    for (int i = 0; i < nk; i++) {
        int p = compress ? b->h_kept[i] : i;
        if (p < b->pol.sinks) st->s0++;
    }
    return 0;
}

extern "C" int lf_cuda_prefill(lf_cuda_backend *b, int entry, const int *tokens, int n, int budget, uint64_t seed,
                               int *first_token, float *logits, lf_error *err) {
    if (!b || !tokens || !first_token) return lf_fail(err, "cuda prefill: missing argument");
    if (entry < 0 || entry >= b->E)
        return lf_fail(err, "cuda prefill: entry %d out of range (the pool has %d)", entry, b->E);
    if (n <= 0) return lf_fail(err, "cuda prefill: the prompt is empty");
    if (n > b->P)
        return lf_fail(err, "cuda prefill: a prompt of %d tokens is longer than the %d the backend was sized for "
                            "(max_prompt)", n, b->P);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= b->vocab)
            return lf_fail(err, "cuda prefill: token id %d at index %d is outside the vocabulary [0, %d)",
                           tokens[i], i, b->vocab);
    if (budget < 0 || budget > b->cap)
        return lf_fail(err, "cuda prefill: budget %d for entry %d is outside 1..%d (the entries' slots; 0 = all)",
                       budget, entry, b->cap);
    if (!b->desc->budgeted && budget != 0 && budget != b->cap)
        return lf_fail(err, "cuda prefill: --policy full keeps every token; a budget of %d slots does not apply",
                       budget);
    const int bud = budget ? budget : b->cap;
    if (lf_policy_check_prompt(&b->pol, bud, b->cap, n, err)) return lf_fail_prefix(err, "cuda prefill");
    /* the recent window, and the check that something is left to evict, as
     * lf_kv_cache_init resolves them for a cache of `bud` slots and this budget */
    int recent = b->pol.recent;
    if (budget && b->desc->budgeted) {
        lf_policy_config in = b->o.policy, res;
        in.budget = bud;
        if (lf_policy_resolve_slots(&in, bud, &res, err))
            return lf_fail_prefix(err, "cuda prefill: entry %d's budget", entry);
        if (b->pol.sinks >= bud)
            return lf_fail(err, "cuda prefill: budget %d must exceed the %d sinks of --policy %s", bud, b->pol.sinks,
                           lf_policy_name(b->pol.kind));
        recent = res.recent;
        if (b->pol.sinks + recent >= bud) recent = bud - 1 - b->pol.sinks;
    }
    b->st[entry].live = false;
    if (launch_fill_i32(b, b->recent_e + entry, 0, 1, 1, recent, err)) return -1;
    if (prefill_run(b, entry, tokens, n, bud, seed, first_token, logits, err)) {
        cudaStreamSynchronize(b->stream);
        b->st[entry].live = false;
        return -1;
    }
    return 0;
}

/* ---- 5. decode ---------------------------------------------------------------- */

/* Streaming's slot for the next token of an entry, equal to cache.c's rule
 * (first empty slot; once full, the evictable slot with the smallest
 * position; sinks = positions < --sinks are never evicted, recent is 0).
 *
 * `cap` below is the entry's budget (its slots; beyond them LF_CUDA_SLOT_OFF).
 * Claim: with positions stored in increasing order, the slots always hold
 * increasing positions in slot order while filling, and once full the
 * non-sink slots s0..cap-1 read cyclically from s0 + ring hold increasing
 * positions; so the smallest evictable position is in slot s0 + ring.
 * Proof: the prefill leaves slots 0..nk-1 with ascending positions (all of
 * the prompt, or SnapKV's kept positions, which it writes ascending); cache.c
 * fills the empty slots nk, nk+1, ... in order (first_empty, and every slot
 * below `filled` is valid) with ever larger positions, so at the moment the
 * cache is full slot order = position order, the positions < sinks are the
 * prefix 0..s0-1 (s0 counted as they were stored), and the oldest non-sink
 * is slot s0 (ring = 0). Every later token has a larger position than all
 * held (and >= sinks: cap > sinks distinct positions were stored before it),
 * so overwriting the oldest non-sink slot s0 + ring with it makes it the
 * newest, and the cyclic order starting at s0 + ring + 1 is again increasing:
 * ring advances by one modulo cap - s0. The current token is evictable too
 * (recent = 0), but it is the newest, so it is the minimum only when it is
 * the only non-sink slot (cap - s0 = 1), where the ring stays on it as well.
 * s0 < cap because cap > sinks (lf_policy_resolve; lf_cuda_prefill checks a
 * per-entry budget). */
static int streaming_slot(const entry_state *st) {
    if (st->filled < st->budget) return st->filled;
    return st->s0 + st->ring;
}

static int next_host_slot(const lf_cuda_backend *b, const entry_state *st) {
    if (b->desc->gpu == LF_GPU_APPEND) return st->filled < b->cap ? st->filled : -1;
    return streaming_slot(st); /* LF_GPU_OLDEST */
}

static int prepare_shapes(lf_cuda_backend *b, int n, lf_error *err) {
    const int hd = b->hidden;
    if (lf_cuda_gemm_prepare(b->gemm, b->qkvdim, hd, n, LF_DTYPE_F32, 0.f, err) ||
        lf_cuda_gemm_prepare(b->gemm, hd, b->qdim, n, LF_DTYPE_F32, 1.f, err) ||
        lf_cuda_gemm_prepare(b->gemm, 2 * b->inter, hd, n, LF_DTYPE_F32, 0.f, err) ||
        lf_cuda_gemm_prepare(b->gemm, hd, b->inter, n, LF_DTYPE_F32, 1.f, err) ||
        lf_cuda_gemm_prepare(b->gemm, b->vocab_pad, hd, n, LF_DTYPE_F32, 0.f, err))
        return lf_fail_prefix(err, "cuda decode: GEMM shapes for %d rows", n);
    return 0;
}

static void attn_desc(const lf_cuda_backend *b, int n, lf_cuda_attn_desc *d) {
    memset(d, 0, sizeof *d);
    d->n_seq = n;
    d->n_heads = b->H;
    d->n_kv_heads = b->KV;
    d->head_dim = b->HD;
    d->capacity = b->cur_scan > 0 ? b->cur_scan : b->cap;
    d->dtype = LF_DTYPE_BF16;
    d->out_dtype = LF_DTYPE_BF16;
    d->mode = b->mode;
    d->kv_fp8 = b->f8;
}

/* The decode kernels of n rows, reading the inputs from the fixed device
 * arrays (d_tokens, d_pos, d_entries, d_row_slot, d_seeds, d_steps); the
 * sampled tokens go to d_out; with copy_logits the raw logits are copied to
 * logits_copy before sampling. Captured in a graph unless no_graphs/pr. */
static int decode_kernels(lf_cuda_backend *b, int n, bool copy_logits, prof *pr, lf_error *err) {
    cudaStream_t s = b->stream;
    void *vs = (void *)s;
    const int cap = b->cap;
    prof_mark(pr, s, CAT_OTHER);
    if (lf_cuda_embed(b->embed, b->vocab, b->hidden, b->d_tokens, n, b->x, vs, err)) return -1;
    lf_cuda_attn_desc d;
    attn_desc(b, n, &d);
    for (int l = 0; l < b->L; l++) {
        const gpu_layer *g = &b->layers[l];
        void *Kl = kv_at(b, b->K, l, 0), *Vl = kv_at(b, b->V, l, 0);
        float *KSl = kv_scale_at(b, b->KS, l, 0), *VSl = kv_scale_at(b, b->VS, l, 0);
        float *VNl = kv_scale_at(b, b->VN, l, 0);
        int32_t *pos_l = b->cpos + (size_t)l * b->slot_layer_stride;
        int32_t *next_l = b->next_slot + (size_t)l * b->E;
        prof_mark(pr, s, CAT_OTHER);
        if (lf_cuda_rmsnorm(b->x, g->attn_norm, n, b->hidden, b->eps, b->h, vs, err)) goto layer_fail;
        prof_mark(pr, s, CAT_GEMM);
        if (lf_cuda_gemm(b->gemm, g->wqkv, b->qkvdim, b->hidden, b->h, n, b->qkv, LF_DTYPE_F32, 0.f, vs, err))
            goto layer_fail;
        prof_mark(pr, s, CAT_OTHER);
        {
            lf_cuda_rope_store_args a;
            rope_args(b, g, n, b->d_pos, &a);
            a.q_out = b->q;
            a.q_head_major = 0;
            a.k_dst = b->f8 ? NULL : Kl;
            a.v_dst = b->f8 ? NULL : Vl;
            a.kv_entry_stride = b->kv_seq_stride;
            a.kvh_stride = (int64_t)cap * b->HD;
            if (b->f8) {
                a.k8_dst = Kl;
                a.v8_dst = Vl;
                a.k8_scale = KSl;
                a.v8_scale = VSl;
                a.v8_norm = VNl;
                a.f8_entry_stride = b->kv_seq_stride;
                a.f8_kvh_stride = (int64_t)cap * b->HD;
            }
            a.row_entry = b->d_entries;
            a.slot_by_entry = b->scored ? next_l : NULL;
            a.row_slot = b->scored ? NULL : b->d_row_slot;
            a.cache_pos = pos_l;
            a.slot_entry_stride = cap;
            if (lf_cuda_rope_store(&a, vs, err)) goto layer_fail;
        }
        if (b->desc->slot_stat && /* the stored score of the slot just written */
            lf_cuda_slot_stat(b->desc->slot_stat, Kl, LF_DTYPE_BF16, b->kv_seq_stride, (int64_t)cap * b->HD, b->KV,
                              b->HD, b->d_entries, next_l, n, b->acc + (size_t)l * b->slot_layer_stride, cap, vs, err))
            goto layer_fail;
        prof_mark(pr, s, CAT_ATTN);
        {
            lf_cuda_attn_args a;
            memset(&a, 0, sizeof a);
            a.q = b->q;
            a.k = Kl;
            a.v = Vl;
            a.k_scale = KSl;
            a.v_scale = VSl;
            a.v_norm = VNl;
            a.kv_seq_stride = b->kv_seq_stride;
            a.kvh_slots = cap;
            a.pos = pos_l;
            a.slot_seq_stride = cap;
            a.seq_index = b->d_entries;
            a.out = b->att;
            a.score = b->scored ? b->score + (size_t)l * b->slot_layer_stride : NULL;
            a.acc = b->uses_acc ? b->acc + (size_t)l * b->slot_layer_stride : NULL;
            a.next_slot = b->scored ? next_l : NULL;
            a.cur_pos = b->d_pos;
            a.sinks = b->pol.sinks;
            a.recent = b->pol.recent;
            a.recent_by_entry = b->recent_e;
            a.scale = 0.f;
            a.workspace = b->attn_ws;
            a.workspace_bytes = b->attn_ws_bytes;
            a.stream = vs;
            if (lf_cuda_attn_decode(&d, &a, err)) goto layer_fail;
        }
        prof_mark(pr, s, CAT_GEMM);
        if (lf_cuda_gemm(b->gemm, g->wo, b->hidden, b->qdim, b->att, n, b->x, LF_DTYPE_F32, 1.f, vs, err))
            goto layer_fail;
        if (mlp_rows(b, g, 0, n, pr, err)) goto layer_fail;
        continue;
    layer_fail:
        return lf_fail_prefix(err, "cuda decode of %d sequences, layer %d", n, l);
    }
    prof_mark(pr, s, CAT_OTHER);
    if (lf_cuda_rmsnorm(b->x, b->final_norm, n, b->hidden, b->eps, b->h, vs, err))
        return lf_fail_prefix(err, "cuda decode: final norm");
    prof_mark(pr, s, CAT_GEMM);
    if (lf_cuda_gemm(b->gemm, b->lm_head, b->vocab_pad, b->hidden, b->h, n, b->logits, LF_DTYPE_F32, 0.f, vs, err))
        return lf_fail_prefix(err, "cuda decode: lm_head");
    prof_mark(pr, s, CAT_OTHER);
    if (b->vocab_bias && lf_cuda_add_bias(b->logits, b->vocab_bias, n, b->vocab_pad, vs, err))
        return lf_fail_prefix(err, "cuda decode: logits padding");
    if (copy_logits && ck(cudaMemcpyAsync(b->logits_copy, b->logits, (size_t)n * b->vocab_pad * 4,
                                          cudaMemcpyDeviceToDevice, s),
                          err, "logits copy"))
        return -1;
    /* the step's input token (sampled last) joins its sequence's history first */
    if (b->seen && lf_cuda_repetition_penalty(b->logits, n, b->vocab, b->vocab_pad, b->o.sampling.repetition_penalty,
                                              b->seen, b->seen_words, b->d_entries, b->d_tokens, vs, err))
        return lf_fail_prefix(err, "cuda decode");
    if (lf_cuda_sample(b->logits, n, b->vocab_pad, &b->o.sampling, b->d_seeds, b->d_steps, b->d_out, b->samp_ws,
                       b->samp_ws_bytes, vs, err))
        return lf_fail_prefix(err, "cuda decode: sampling");
    prof_mark(pr, s, CAT_OTHER);
    return 0;
}

/* Check a batch and fill the pinned inputs (row slots from the host state
 * for full/streaming). */
static int decode_inputs(lf_cuda_backend *b, int n, const int *entries, const int *tokens, const int *pos,
                         lf_error *err) {
    if (n < 1 || n > b->E)
        return lf_fail(err, "cuda decode: %d sequences for a pool of %d entries", n, b->E);
    if (!entries || !tokens || !pos) return lf_fail(err, "cuda decode: missing argument");
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        const int e = entries[i];
        if (e < 0 || e >= b->E) {
            rc = lf_fail(err, "cuda decode: row %d: entry %d out of range (the pool has %d)", i, e, b->E);
            break;
        }
        if (!b->st[e].live) {
            rc = lf_fail(err, "cuda decode: row %d: entry %d holds no sequence (prefill it first)", i, e);
            break;
        }
        if (b->mark[e]) {
            rc = lf_fail(err, "cuda decode: entry %d appears twice in one batch", e);
            break;
        }
        b->mark[e] = 1;
        if (tokens[i] < 0 || tokens[i] >= b->vocab) {
            rc = lf_fail(err, "cuda decode: row %d: token id %d is outside the vocabulary [0, %d)", i, tokens[i],
                         b->vocab);
            break;
        }
        if (pos[i] < 0) {
            rc = lf_fail(err, "cuda decode: row %d has negative position %d", i, pos[i]);
            break;
        }
        if (!b->desc->budgeted && b->st[e].filled >= b->cap) {
            rc = lf_fail(err, "cuda decode: entry %d: its KV cache (policy full, %d slots) is full", e, b->cap);
            break;
        }
        b->h_tokens[i] = tokens[i];
        b->h_pos[i] = pos[i];
        b->h_entries[i] = e;
        b->h_row_slot[i] = b->scored ? -1 : next_host_slot(b, &b->st[e]);
        b->h_seeds[i] = b->st[e].seed;
        b->h_steps[i] = b->st[e].step;
    }
    for (int i = 0; i < n; i++)
        if (entries[i] >= 0 && entries[i] < b->E) b->mark[entries[i]] = 0;
    if (!rc) {
        int need = 1;
        for (int i = 0; i < n; i++) {
            const int f = b->st[entries[i]].filled + 2;
            if (f > need) need = f;
        }
        if (b->full_scan) need = b->cap;
        int q = (need / 16 / b->scan_bucket) * b->scan_bucket;
        if (q < b->scan_bucket) q = b->scan_bucket;
        int scan = ((need + q - 1) / q) * q;
        b->cur_scan = scan < b->cap ? scan : b->cap;
    }
    return rc;
}

/* After a successful step: the host state of the rows' entries. */
static void decode_advance(lf_cuda_backend *b, int n, const int *entries, const int *pos) {
    for (int i = 0; i < n; i++) {
        entry_state *st = &b->st[entries[i]];
        st->step++;
        if (st->filled < st->budget) {
            if (pos[i] < b->pol.sinks) st->s0++;
            st->filled++;
        } else if (b->desc->gpu == LF_GPU_OLDEST) {
            st->ring = (st->ring + 1) % (st->budget - st->s0);
        }
    }
}

static int graph_for(lf_cuda_backend *b, int n, bool copy_logits, cudaGraphExec_t *out, lf_error *err) {
    const int bucket = (b->cur_scan + b->scan_bucket - 1) / b->scan_bucket - 1;
    cudaGraphExec_t *slot = &b->graphs[((size_t)(copy_logits ? 1 : 0) * (b->E + 1) + n) * b->n_buckets + bucket];
    if (*slot) {
        *out = *slot;
        return 0;
    }
    if (prepare_shapes(b, n, err)) return -1;
    /* resolve the attention kernel's launch plan (function attributes,
     * occupancy) outside the capture */
    lf_cuda_attn_desc d;
    attn_desc(b, n, &d);
    lf_cuda_attn_plan plan;
    if (lf_cuda_attn_get_plan(&d, &plan, err)) return lf_fail_prefix(err, "cuda decode");
    cudaGraph_t graph = NULL;
    if (ck(cudaStreamBeginCapture(b->stream, cudaStreamCaptureModeRelaxed), err, "graph capture begin")) return -1;
    int rc = decode_kernels(b, n, copy_logits, NULL, err);
    cudaError_t e = cudaStreamEndCapture(b->stream, &graph);
    if (rc) {
        if (graph) cudaGraphDestroy(graph);
        cudaGetLastError();
        return lf_fail_prefix(err, "cuda: capturing the decode graph of %d sequences", n);
    }
    if (e != cudaSuccess || !graph) {
        if (graph) cudaGraphDestroy(graph);
        return lf_fail(err, "cuda: capturing the decode graph of %d sequences: %s", n, cudaGetErrorString(e));
    }
    cudaGraphExec_t exec = NULL;
    e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    if (e != cudaSuccess)
        return lf_fail(err, "cuda: instantiating the decode graph of %d sequences: %s", n, cudaGetErrorString(e));
    *slot = exec;
    *out = exec;
    note_peak(b);
    return 0;
}

/* Zero the attention workspace when this step has more rows than the
 * fewest of any step since it was last zeroed (see attn_ws_rows).
 * Stream-ordered, outside any graph capture. */
static int attn_ws_for_rows(lf_cuda_backend *b, int n, lf_error *err) {
    if (n > b->attn_ws_rows) {
        if (lf_cuda_attn_workspace_init(b->attn_ws, b->attn_ws_bytes, b->stream, err))
            return lf_fail_prefix(err, "cuda decode");
        b->attn_ws_rows = INT_MAX;
    }
    if (n < b->attn_ws_rows) b->attn_ws_rows = n;
    return 0;
}

/* After a failed step: drain the stream, clear a sticky launch error, reset
 * the attention workspace's counters. */
static void decode_recover(lf_cuda_backend *b) {
    cudaStreamSynchronize(b->stream);
    cudaGetLastError();
    lf_error e2;
    if (lf_cuda_attn_workspace_init(b->attn_ws, b->attn_ws_bytes, b->stream, &e2) == 0)
        cudaStreamSynchronize(b->stream);
    b->attn_ws_rows = INT_MAX;
}

extern "C" int lf_cuda_decode(lf_cuda_backend *b, int n, const int *entries, const int *tokens, const int *pos,
                              int *out, float *logits, lf_error *err) {
    if (!b || !out) return lf_fail(err, "cuda decode: missing argument");
    if (decode_inputs(b, n, entries, tokens, pos, err)) return -1;
    cudaStream_t s = b->stream;
    const bool copy_logits = logits != NULL;
    if (ck(cudaMemcpyAsync(b->d_seeds, b->h_seeds, b->in_bytes - (size_t)b->E * 4, cudaMemcpyHostToDevice, s), err,
           "decode input upload"))
        return -1;
    if (attn_ws_for_rows(b, n, err)) return -1;
    int rc;
    if (b->o.no_graphs) {
        rc = prepare_shapes(b, n, err) || decode_kernels(b, n, copy_logits, NULL, err);
    } else {
        cudaGraphExec_t g = NULL;
        rc = graph_for(b, n, copy_logits, &g, err);
        if (!rc) rc = ck(cudaGraphLaunch(g, s), err, "decode graph launch");
    }
    if (!rc) rc = ck(cudaMemcpyAsync(b->h_out, b->d_out, (size_t)n * 4, cudaMemcpyDeviceToHost, s), err,
                     "token download");
    if (!rc && copy_logits)
        rc = ck(cudaMemcpy2DAsync(logits, (size_t)b->vocab * 4, b->logits_copy, (size_t)b->vocab_pad * 4,
                                  (size_t)b->vocab * 4, (size_t)n, cudaMemcpyDeviceToHost, s),
                err, "logits download");
    if (!rc) rc = ck(cudaStreamSynchronize(s), err, "decode step");
    if (rc) {
        decode_recover(b);
        return -1;
    }
    decode_advance(b, n, entries, pos); /* the K/V were stored */
    for (int i = 0; i < n; i++) {
        out[i] = b->h_out[i];
        if (out[i] != LF_SAMPLE_NONFINITE && (out[i] < 0 || out[i] >= b->vocab))
            return lf_fail(err, "cuda decode: row %d sampled token %d outside the vocabulary [0, %d)", i, out[i],
                           b->vocab);
    }
    return 0;
}

/* ---- 6. tests, benchmarks, info ------------------------------------------------ */

extern "C" int lf_cuda_entry_slots(lf_cuda_backend *b, int entry, int layer, int32_t *pos, int32_t *next_slot,
                                   lf_error *err) {
    if (!b) return lf_fail(err, "cuda: no backend");
    if (entry < 0 || entry >= b->E) return lf_fail(err, "cuda: entry %d out of range (pool of %d)", entry, b->E);
    if (layer < 0 || layer >= b->L) return lf_fail(err, "cuda: layer %d out of range (%d layers)", layer, b->L);
    cudaStream_t s = b->stream;
    if (pos && ck(cudaMemcpyAsync(pos, b->cpos + (size_t)layer * b->slot_layer_stride + (size_t)entry * b->cap,
                                  (size_t)b->cap * 4, cudaMemcpyDeviceToHost, s),
                  err, "slot positions download"))
        return -1;
    int32_t ns = -1;
    if (b->scored) {
        if (ck(cudaMemcpyAsync(b->h_out, b->next_slot + (size_t)layer * b->E + entry, 4, cudaMemcpyDeviceToHost, s),
               err, "next slot download"))
            return -1;
    } else {
        ns = next_host_slot(b, &b->st[entry]);
    }
    if (ck(cudaStreamSynchronize(s), err, "slot download")) return -1;
    if (b->scored) ns = b->h_out[0];
    if (next_slot) *next_slot = ns;
    return 0;
}

/* The state after `length` tokens. Positions held (see bench_fill_kernel):
 * length <= capacity: 0..length-1 in slots 0..length-1 (nothing evicted yet);
 * length > capacity (budgeted): the first `sinks` positions in slots
 * 0..sinks-1 and the newest capacity-sinks positions (length-capacity+sinks
 * .. length-1) in the other slots, ascending: exactly what streaming holds,
 * and a plausible state for the score policies. The next slot: the first
 * empty one, else slot `sinks` (the oldest non-sink token: streaming's
 * choice, and as good a guess as any for the others). */
extern "C" int lf_cuda_bench_fill(lf_cuda_backend *b, int entry, int length, lf_error *err) {
    if (!b) return lf_fail(err, "cuda: no backend");
    if (entry < 0 || entry >= b->E) return lf_fail(err, "cuda bench fill: entry %d out of range (pool of %d)",
                                                   entry, b->E);
    if (length < 0) return lf_fail(err, "cuda bench fill: negative length %d", length);
    if (!b->desc->budgeted && length >= b->cap)
        return lf_fail(err, "cuda bench fill: %d tokens leave no free slot in the %d slots of --policy full", length,
                       b->cap);
    const int cap = b->cap;
    const int nv = length < cap ? length : cap;
    const int sinks = b->pol.sinks;
    long long total = (long long)b->L * b->KV * nv * b->HD;
    int blocks = (int)((total + 255) / 256);
    if (blocks > 4096) blocks = 4096;
    if (blocks < 1) blocks = 1;
    bench_fill_kernel<<<blocks, 256, 0, b->stream>>>(
        kv_at(b, b->K, 0, entry), kv_at(b, b->V, 0, entry), kv_scale_at(b, b->KS, 0, entry),
        kv_scale_at(b, b->VS, 0, entry), b->cpos + (size_t)entry * cap, b->L, b->KV, cap, b->HD, b->kv_layer_stride, b->slot_layer_stride, nv,
        sinks, length, 0x5eedull + (unsigned long long)entry);
    if (ck(cudaGetLastError(), err, "bench fill kernel launch")) return -1;
    if (b->vnorm) {
        bench_vnorm_kernel<<<1024, 256, 0, b->stream>>>((const uint8_t *)kv_at(b, b->V, 0, entry),
                                                         kv_scale_at(b, b->VS, 0, entry), kv_scale_at(b, b->VN, 0, entry),
                                                         b->L, b->KV, cap, b->HD, b->kv_layer_stride, nv);
        if (ck(cudaGetLastError(), err, "bench |v|_1 kernel launch")) return -1;
    }
    const int next = length < cap ? length : sinks;
    if (b->scored) {
        if (launch_fill_f32(b, b->score + (size_t)entry * cap, b->slot_layer_stride, b->L, cap, 0.f, err) ||
            launch_fill_i32(b, b->next_slot + entry, b->E, b->L, 1, next, err))
            return -1;
    }
    if (b->uses_acc && launch_fill_f32(b, b->acc + (size_t)entry * cap, b->slot_layer_stride, b->L, cap, 0.f, err))
        return -1;
    for (int l = 0; b->desc->slot_stat && l < b->L; l++)
        if (lf_cuda_slot_stat(b->desc->slot_stat, kv_at(b, b->K, l, entry),
                              LF_DTYPE_BF16, 0, (int64_t)cap * b->HD, b->KV, b->HD, NULL, NULL, nv,
                              b->acc + (size_t)l * b->slot_layer_stride + (size_t)entry * cap, 0, b->stream, err))
            return -1;
    if (ck(cudaStreamSynchronize(b->stream), err, "bench fill")) return -1;
    if (launch_fill_i32(b, b->recent_e + entry, 0, 1, 1, b->pol.recent, err)) return -1;
    if (b->seen && lf_cuda_history_reset(b->seen + (size_t)entry * b->seen_words, b->seen_words, NULL, 0, b->stream,
                                         err))
        return -1;
    entry_state *st = &b->st[entry];
    st->live = true;
    st->seed = b->o.sampling.seed + (uint64_t)entry;
    st->step = 1;
    st->budget = cap;
    st->filled = nv;
    st->s0 = length <= cap ? (nv < sinks ? nv : sinks) : sinks;
    st->ring = 0;
    return 0;
}

extern "C" int lf_cuda_profile_step(lf_cuda_backend *b, int n, const int *entries, const int *tokens,
                                    const int *pos, lf_cuda_step_profile *p, lf_error *err) {
    if (!b || !p) return lf_fail(err, "cuda profile: missing argument");
    memset(p, 0, sizeof *p);
    if (decode_inputs(b, n, entries, tokens, pos, err)) return -1;
    /* K/V bytes of the valid slots this step reads (after storing the token) */
    double kvb = 0;
    for (int i = 0; i < n; i++) {
        const entry_state *st = &b->st[entries[i]];
        int valid = st->filled < st->budget ? st->filled + 1 : st->budget;
        kvb += (double)valid * b->L *
               ((double)lf_kv_token_bytes(b->o.policy.kv_dtype, b->KV, b->HD) + (b->vnorm ? 4.0 * b->KV : 0.0));
    }
    cudaStream_t s = b->stream;
    prof pr;
    pr.cap = b->L * 16 + 32;
    pr.n = 0;
    pr.ev = (cudaEvent_t *)calloc((size_t)pr.cap, sizeof(cudaEvent_t));
    pr.cat = (int *)calloc((size_t)pr.cap, sizeof(int));
    int rc = 0, made = 0;
    if (!pr.ev || !pr.cat) rc = lf_fail(err, "cuda profile: out of host memory");
    for (; !rc && made < pr.cap; made++) rc = ck(cudaEventCreate(&pr.ev[made]), err, "event creation");
    if (!rc) rc = prepare_shapes(b, n, err);
    if (!rc) rc = attn_ws_for_rows(b, n, err);
    if (!rc)
        rc = ck(cudaMemcpyAsync(b->d_seeds, b->h_seeds, b->in_bytes - (size_t)b->E * 4, cudaMemcpyHostToDevice, s),
                err, "decode input upload");
    if (!rc) rc = decode_kernels(b, n, false, &pr, err);
    if (!rc) rc = ck(cudaStreamSynchronize(s), err, "profiled step");
    if (!rc) {
        for (int i = 0; i + 1 < pr.n; i++) {
            float ms = 0;
            if (cudaEventElapsedTime(&ms, pr.ev[i], pr.ev[i + 1]) != cudaSuccess) continue;
            if (pr.cat[i] == CAT_GEMM) p->gemm_ms += ms;
            else if (pr.cat[i] == CAT_ATTN) p->attention_ms += ms;
            else p->other_ms += ms;
        }
        float tot = 0;
        if (pr.n >= 2 && cudaEventElapsedTime(&tot, pr.ev[0], pr.ev[pr.n - 1]) == cudaSuccess) p->total_ms = tot;
        p->bytes_read = (double)b->gemm_weight_bytes + kvb;
    }
    if (rc) decode_recover(b);
    else decode_advance(b, n, entries, pos);
    for (int i = 0; i < made; i++)
        if (pr.ev[i]) cudaEventDestroy(pr.ev[i]);
    free(pr.ev);
    free(pr.cat);
    return rc ? -1 : 0;
}

extern "C" size_t lf_cuda_backend_peak_bytes(const lf_cuda_backend *b) {
    if (!b) return 0;
    return b->peak;
}

extern "C" void lf_cuda_backend_info(const lf_cuda_backend *b, lf_cuda_info *info) {
    memset(info, 0, sizeof *info);
    if (!b) return;
    snprintf(info->device_name, sizeof info->device_name, "%s", b->device_name);
    info->entries = b->E;
    info->capacity = b->cap;
    info->weight_bytes = b->weight_bytes;
    info->kv_bytes_per_entry = b->kv_per_entry;
    info->aux_bytes_per_entry = b->aux_per_entry;
    info->workspace_bytes = b->ws_bytes + (b->pf ? lf_cuda_prefill_bytes(b->pf) : 0);
    info->gpu_free_bytes = b->gpu_free_plan;
    info->gpu_total_bytes = b->gpu_total;
    snprintf(info->plan, sizeof info->plan, "%s", b->plan);
}
