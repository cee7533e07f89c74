/* The fused CUDA decode kernel: attention over a slot cache for a batch of
 * sequences (one query token each), the KV-cache policy's per-slot score, the
 * masked argmin and the write of the next slot, in one launch.
 *
 * Plain C11 header: no CUDA types (a stream is a void * holding a
 * cudaStream_t, 0 = the legacy default stream). docs/cuda.md describes the
 * algorithm, the workspace and the numbers.
 *
 * Layout, per layer (element strides, pool index p = seq_index ? seq_index[s] : s):
 *   q    [n_seq][n_heads][head_dim]                       dtype (f16 or bf16)
 *   (kv_fp8: k and v one byte an element, e4m3, scale per row in k_scale/v_scale)
 *   k, v element (p, kvh, slot, d) at p*kv_seq_stride + (kvh*kvh_slots + slot)*head_dim + d
 *        (kvh_slots = capacity unless the args say otherwise)
 *   pos  [p*slot_seq_stride + slot]  int32, token position held, -1 = empty,
 *        LF_CUDA_SLOT_OFF = beyond this entry's budget (never attended, never chosen)
 *   out  [n_seq][n_heads][head_dim]                       out_dtype (f32 or dtype)
 *   score, acc [p*slot_seq_stride + slot]  float (optional / mode-dependent)
 *   next_slot [p]  int32 out, indexed by pool entry (= s without seq_index)
 *
 * The K/V of the current token must already be stored in the cache (its slot
 * is the next_slot chosen at the previous step). Per slot i of sequence s:
 *   a_{h,i} = softmax over valid slots of (q_h . k_{kv(h),i}) * scale
 *   ATT_VNORM: score_i = mean_h a_{h,i} * |v_{kv(h),i}|_1 / head_dim   (LongFlow)
 *   ATT:       score_i = mean_h a_{h,i}                               (TOVA)
 *   ACC:       acc_i += mean_h a_{h,i}; score_i = acc_i               (H2O)
 *   ACC_VNORM: acc_i += mean_h a_{h,i}; score_i = acc_i * mean_kvh |v_{kvh,i}|_1 / head_dim (VATP)
 *   STORED:    score_i = acc_i, the value the policy stored for the slot
 *              (lf_cuda_slot_stat, src/cuda/cuda_kernels.h); acc is only read
 * Empty slots score 0 (and their acc is set to 0), or -inf with STORED (an
 * empty slot is used first). next_slot = the slot with
 * the smallest score, lowest index on ties, among slots not protected by
 * `sinks` (0 <= pos < sinks) or `recent` (pos > cur_pos[s] - recent, needs
 * cur_pos); if every slot is protected, among all slots; never a slot whose
 * pos is LF_CUDA_SLOT_OFF. For ACC/ACC_VNORM the
 * chosen slot's acc is reset to 0 (the next token's K/V go there).
 */
#ifndef LF_CUDA_ATTENTION_H
#define LF_CUDA_ATTENTION_H

#include <stddef.h>
#include <stdint.h>
#include "longflow.h"
#include "kv/score_mode.h"

#ifdef __cplusplus
extern "C" {
#endif

/* pos of a slot that an entry with a budget smaller than the capacity does
 * not use: attention skips it like an empty slot, and next_slot never points
 * to it (an empty slot, -1, scores 0 and is chosen first). */
#define LF_CUDA_SLOT_OFF (-2)

/* The score modes are the policies' (src/kv/score_mode.h): the kernel
 * computes any of them, so a policy whose score is one needs no kernel edit. */
typedef lf_score_mode lf_cuda_score_mode;

/* Shape and choices; everything the workspace size depends on. Zero the
 * optional fields (n_split, e_smem, l2_hints, launches) for the defaults. */
typedef struct lf_cuda_attn_desc {
    int32_t n_seq, n_heads, n_kv_heads, head_dim, capacity;
    int32_t dtype;     /* lf_dtype: LF_DTYPE_F16 or LF_DTYPE_BF16 (q, k, v) */
    int32_t out_dtype; /* lf_dtype: LF_DTYPE_F32 or the same as dtype */
    int32_t mode;      /* lf_cuda_score_mode */
    int32_t n_split;   /* slot blocks per (sequence, KV head); 0 = automatic */
    int32_t e_smem;    /* per-slot partials in shared memory: 0 auto, 1 whenever they fit, -1 never */
    int32_t l2_hints;  /* 0 auto (1 with one launch, 2 with two); 1 K/V evict_first + discard consumed
                          scratch; 2 evict_first only; 3 none */
    int32_t launches;  /* 0 auto (two for scored modes below 4 waves of blocks, else one); 1 one launch
                          (last blocks combine); 2 attention kernel + combine kernel */
    int32_t kv_fp8;    /* 1: k and v hold FP8 e4m3 codes (one byte an element, same element offsets)
                          with a float scale per row in k_scale/v_scale (the CPU's format,
                          src/kv/dtype.h); q and out stay dtype, which must be bf16. 0: k and v are dtype */
} lf_cuda_attn_desc;

/* Device pointers of one call. */
typedef struct lf_cuda_attn_args {
    const void *q, *k, *v;
    int64_t kv_seq_stride;     /* elements between pool entries of k and v */
    const int32_t *pos;
    int64_t slot_seq_stride;   /* elements between pool entries of pos, score, acc */
    const int32_t *seq_index;  /* [n_seq] pool entry of each sequence, or NULL (= s) */
    void *out;
    float *score;              /* optional output (NULL = not written) */
    float *acc;                /* ACC modes: accumulator; STORED: stored scores (required in those modes) */
    int32_t *next_slot;        /* [pool entry] required unless mode is NONE */
    const int32_t *cur_pos;    /* [n_seq] position of the current token, or NULL */
    int32_t sinks, recent;     /* protected slots (0 = none) */
    float scale;               /* softmax scale; 0 = 1/sqrt(head_dim) */
    void *workspace;           /* zeroed once by lf_cuda_attn_workspace_init */
    size_t workspace_bytes;
    void *stream;              /* cudaStream_t */
    int32_t kvh_slots;         /* slots between the KV heads of one entry in k/v (0 = capacity).
                                  With kvh_slots > capacity the kernel looks at slots
                                  0..capacity-1 of a cache laid out for kvh_slots: an engine
                                  whose entries hold fewer tokens than they have room for
                                  passes capacity = the slots in use (rounded up), so
                                  attention reads only those. pos/score/acc strides are
                                  unaffected (slot_seq_stride). */
    const int32_t *recent_by_entry; /* [pool entry] the recent window of each entry (entries with
                                  their own budgets resolve their own), or NULL: `recent` */
    const float *k_scale, *v_scale; /* kv_fp8: the scale of the row at element offset o of k/v is
                                  k_scale/v_scale[o / head_dim] (kv_seq_stride a multiple of head_dim);
                                  element = code value * scale */
    const float *v_norm;       /* kv_fp8, optional: |v|_1 of each V row (dequantized), indexed as v_scale,
                                  written with the row (lf_cuda_rope_store's v8_norm); the LongFlow/VATP
                                  modes then read it instead of summing the row's codes */
} lf_cuda_attn_args;

/* Check a descriptor (head_dim 64 or 128, n_heads/n_kv_heads <= 8, ...). */
int lf_cuda_attn_check(const lf_cuda_attn_desc *d, lf_error *err);

/* Workspace bytes for d and for every smaller n_seq with the same other
 * fields (so one workspace serves a shrinking batch). */
int lf_cuda_attn_workspace_bytes(const lf_cuda_attn_desc *d, size_t *bytes, lf_error *err);

/* Zero a workspace (asynchronously on stream). Needed once after allocation,
 * and again after a failed launch. Each launch leaves its counters at zero,
 * but the counters of a launch with n sequences occupy the workspace's first
 * (n * n_kv_heads + n) ints and its scratch follows them, so after a launch
 * with fewer sequences a launch with more needs the workspace zeroed again
 * (the engine does, src/cuda/forward_decode.cu: attn_ws_for_rows). */
int lf_cuda_attn_workspace_init(void *workspace, size_t bytes, void *stream, lf_error *err);

/* Enqueue one fused decode step on a->stream (asynchronous; capturable in a
 * CUDA graph). */
int lf_cuda_attn_decode(const lf_cuda_attn_desc *d, const lf_cuda_attn_args *a, lf_error *err);

/* What the automatic choices resolve to for d on the current device
 * (for benchmarks and tests). */
typedef struct lf_cuda_attn_plan {
    int32_t n_split, split_len, e_smem, smem_bytes, blocks, blocks_per_sm;
    int32_t launches, n_chunks, chunk_len;
} lf_cuda_attn_plan;
int lf_cuda_attn_get_plan(const lf_cuda_attn_desc *d, lf_cuda_attn_plan *plan, lf_error *err);

/* sizeof the structs above, for foreign-function callers (ctypes) to check
 * their mirrors: returns sizeof(desc) * 65536 + sizeof(args). */
int64_t lf_cuda_attn_abi(void);

#ifdef __cplusplus
}
#endif
#endif
