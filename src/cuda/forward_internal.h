/* What the files of the CUDA backend (src/cuda/forward_*.cu) share: the
 * backend's state (struct lf_cuda_backend), its memory layout, and the
 * internal functions one file calls in another. Not a public header: only
 * src/cuda/forward_*.cu include it.
 *
 * The backend of cuda_forward.h, by role:
 *   forward_backend.cu  create / free / info; option checks; small helpers
 *                       (CUDA status, tracked allocations, fill kernels)
 *   forward_weights.cu  the weights on the GPU: bf16, wq|wk|wv and
 *                       w_gate|w_up concatenated (a layer is 4 GEMMs: qkv, o,
 *                       gate_up, down), lm_head padded to a multiple of 8 rows
 *                       (padded logits get -inf through a bias), RoPE tables
 *   forward_plan.cu     the memory plan: workspace layout, how many entries
 *                       fit, and the pool, workspace and pinned host mirror
 *                       carved out of one allocation each
 *   forward_layer.cu    pieces of a layer that prefill and decode share
 *                       (the MLP, rope_store's common arguments, profile marks)
 *   forward_prefill.cu  prefill of one prompt into an entry
 *   forward_select.cu   the prefill's selection on the GPU: SnapKV's kept
 *                       positions (snapkv_select.cu) and the H2O/VATP
 *                       starting accumulator from the window sums, laid out
 *                       as src/kv/cache.c's lf_kv_prefill_layer lays them
 *   forward_decode.cu   the decode step of a batch of entries (one upload,
 *                       then kernels that a CUDA graph per batch size replays)
 *   forward_slots.cu    the host's slot rules of full and streaming
 *   forward_logits.cu   the last rows to logits and sampled tokens
 *   forward_bench.cu    for tests and benchmarks: entry slots, bench fill,
 *                       profiled step
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
#ifndef LF_CUDA_FORWARD_INTERNAL_H
#define LF_CUDA_FORWARD_INTERNAL_H

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

/* The functions below are shared between the backend's files only: not
 * exported from the plugin. */
#define LF_FWD_INTERNAL __attribute__((visibility("hidden")))

typedef __nv_bfloat16 bf16;

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
    int n_layers, n_heads, n_kv_heads, head_dim, hidden, inter, vocab, vocab_pad, q_dim, kv_dim, qkv_dim;
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
    int32_t *d_ptok, *d_ppos, *d_kept;
    void *attn_ws, *samp_ws;
    size_t attn_ws_bytes, samp_ws_bytes, in_bytes;

    /* pinned host mirror of the decode inputs (same layout as d_seeds...) and
     * the prefill staging */
    void *h_in;
    uint64_t *h_seeds;
    int32_t *h_tokens, *h_pos, *h_entries, *h_row_slot, *h_steps, *h_out;
    int32_t *h_ptok, *h_kept; /* prefill tokens; the last layer's kept positions */
    size_t h_in_bytes;

    /* SnapKV's selection and the H2O/VATP accumulator (forward_select.cu) */
    float *d_raw, *d_win;       /* the window sums (SnapKV's, the accumulator's) [P] */
    void *win_ws;               /* lf_cuda_window_sums scratch */
    size_t win_ws_bytes;

    entry_state *st;
    int *mark; /* [E] duplicate check */

    cudaGraphExec_t *graphs; /* [2][E + 1]: without / with the logits copy */

    size_t free_at_start, gpu_total, gpu_free_plan, peak, tracked;
    char device_name[128];
    char plan[256];
};

/* Workspace bytes for E entries (every buffer that depends on the entry
 * count, plus the prefill buffers). Fills the offsets when `b` is set. */
typedef struct ws_layout {
    size_t x, h, qkv, q, att, gu, mlp, logits, logits_copy, q32, k32, pk, pv, pk8, pv8, pks, pvs, pvn, win, wsum;
    size_t win_bytes;
    size_t in, ptok, ppos, kept, attn, samp, total;
    size_t in_bytes, attn_bytes, samp_bytes;
    int rows, mlp_rows;
} ws_layout;

/* ---- inline helpers ---------------------------------------------------- */

static inline size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

/* Layer l of the K or V cache at entry e (element offsets are the same for
 * bf16 and fp8, kv_elem bytes each), and of their row scales (fp8). */
static inline void *kv_at(const lf_cuda_backend *b, void *base, int l, int e) {
    return (char *)base + ((size_t)l * b->kv_layer_stride + (size_t)e * b->kv_seq_stride) * b->kv_elem;
}
static inline float *kv_scale_at(const lf_cuda_backend *b, float *base, int l, int e) {
    return base ? base + ((size_t)l * b->kv_layer_stride + (size_t)e * b->kv_seq_stride) / b->head_dim : NULL;
}

/* ---- helpers (forward_backend.cu) ---------------------------------------- */

/* 0 on cudaSuccess, else an lf_fail naming `what`. */
LF_FWD_INTERNAL int ck(cudaError_t e, lf_error *err, const char *what);
LF_FWD_INTERNAL void note_peak(lf_cuda_backend *b);
LF_FWD_INTERNAL int dmalloc(lf_cuda_backend *b, void **p, size_t bytes, lf_error *err, const char *what);
/* base[l*layer_stride + i] = value for l < n_layers, i < count, on b's stream. */
LF_FWD_INTERNAL int launch_fill_i32(lf_cuda_backend *b, int32_t *base, long long layer_stride, int n_layers,
                                    int count, int32_t value, lf_error *err);
LF_FWD_INTERNAL int launch_fill_f32(lf_cuda_backend *b, float *base, long long layer_stride, int n_layers, int count,
                                    float value, lf_error *err);

/* ---- weights (forward_weights.cu) ------------------------------------------ */

LF_FWD_INTERNAL int upload_weights(lf_cuda_backend *b, const lf_model *m, lf_error *err);

/* ---- memory plan (forward_plan.cu) ------------------------------------------ */

LF_FWD_INTERNAL bool prefill_may_compress(const lf_cuda_backend *b);
/* The entry count, the per-entry bytes and the workspace layout (*wl), with
 * the one-line account in b->plan. */
LF_FWD_INTERNAL int plan_memory(lf_cuda_backend *b, const lf_cuda_options *o, ws_layout *wl, lf_error *err);
/* The pool (K, V, scales, slot state) of b->E entries, every slot empty. */
LF_FWD_INTERNAL int carve_pool(lf_cuda_backend *b, lf_error *err);
/* The workspace of layout wl, and the pinned host mirror of its inputs. */
LF_FWD_INTERNAL int carve_workspace(lf_cuda_backend *b, const ws_layout *wl, lf_error *err);
LF_FWD_INTERNAL int carve_host_mirror(lf_cuda_backend *b, const ws_layout *wl, lf_error *err);

/* ---- pieces of a layer (forward_layer.cu) ------------------------------------ */

LF_FWD_INTERNAL void prof_mark(prof *p, cudaStream_t s, int cat);
LF_FWD_INTERNAL int mlp_rows(lf_cuda_backend *b, const gpu_layer *g, int r0, int n, prof *pr, lf_error *err);
LF_FWD_INTERNAL void rope_args(const lf_cuda_backend *b, const gpu_layer *g, int n, const int32_t *pos,
                               lf_cuda_rope_store_args *a);

/* ---- prefill selection (forward_select.cu) ------------------------------------ */

/* One compressed / accumulated prefill layer after its attention: window
 * sums, the kept positions (SnapKV) and starting accumulators (H2O/VATP),
 * and the kept rows gathered into the entry's slots. *nk: tokens kept. */
LF_FWD_INTERNAL int prefill_select_layer(lf_cuda_backend *b, int l, int entry, int n, int bud, bool compress,
                                         void *Kl, float *KSl, void *Vl, float *VSl, float *VNl, int32_t *pos_l,
                                         int *nk, lf_error *err);

/* ---- host slot rules (forward_slots.cu) ---------------------------------------- */

LF_FWD_INTERNAL int next_host_slot(const lf_cuda_backend *b, const entry_state *st);
LF_FWD_INTERNAL void decode_advance(lf_cuda_backend *b, int n, const int *entries, const int *pos);

/* ---- logits and sampling (forward_logits.cu) ------------------------------------ */

LF_FWD_INTERNAL int prefill_first_token(lf_cuda_backend *b, int entry, int n, uint64_t seed, int *first_token,
                                        float *logits, lf_error *err);
LF_FWD_INTERNAL int decode_logits_sample(lf_cuda_backend *b, int n, bool copy_logits, prof *pr, lf_error *err);

/* ---- decode (forward_decode.cu) --------------------------------------------------- */

LF_FWD_INTERNAL int prepare_shapes(lf_cuda_backend *b, int n, lf_error *err);
LF_FWD_INTERNAL int decode_kernels(lf_cuda_backend *b, int n, bool copy_logits, prof *pr, lf_error *err);
LF_FWD_INTERNAL int decode_inputs(lf_cuda_backend *b, int n, const int *entries, const int *tokens, const int *pos,
                                  lf_error *err);
LF_FWD_INTERNAL int attn_ws_for_rows(lf_cuda_backend *b, int n, lf_error *err);
LF_FWD_INTERNAL void decode_recover(lf_cuda_backend *b);

#endif
