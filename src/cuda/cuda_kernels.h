/* The small kernels of the CUDA forward (everything except the matrix
 * products, cuda_gemm.h, and the fused decode attention, cuda_attention.h):
 * embedding, RMSNorm, bias, q/k-norm + RoPE + K/V store, SwiGLU, prefill
 * attention, K/V gather, and sampling.
 *
 * Plain C11 header, no CUDA types: a stream is a void * holding a
 * cudaStream_t (NULL = legacy default stream). "bf16" below means the
 * cache/activation dtype `dt` where a dtype is passed (LF_DTYPE_BF16 or
 * LF_DTYPE_F16), bf16 otherwise. All pointers are device pointers unless
 * said otherwise. Every entry point is asynchronous, allocates nothing, and
 * may be captured in a CUDA graph; it returns 0, or -1 with err naming the
 * kernel and the bad argument / CUDA error. */
#ifndef LF_CUDA_KERNELS_H
#define LF_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include "longflow.h"

#ifdef __cplusplus
extern "C" {
#endif
#include "sampler/sampler.h" /* LF_SAMPLE_NONFINITE */

/* x[r][:] = table[tokens[r]][:] as fp32. table bf16 [vocab][hidden]. A token
 * outside [0, vocab) gives a zero row (the engine checks tokens first). */
int lf_cuda_embed(const void *table, int vocab, int hidden, const int32_t *tokens, int n, float *x,
                  void *stream, lf_error *err);

/* y[r] = x[r] * rsqrt(mean(x[r]^2) + eps) * w, computed in fp32, stored
 * bf16. x fp32 [n][dim], w bf16 [dim], y bf16 [n][dim]. */
int lf_cuda_rmsnorm(const float *x, const void *w, int n, int dim, float eps, void *y, void *stream,
                    lf_error *err);

/* y[r][c] += b[c]: y fp32 [n][cols], b bf16 [cols]. */
int lf_cuda_add_bias(float *y, const void *b, int n, int cols, void *stream, lf_error *err);

/* out[r][j] = silu(gu[r][j]) * gu[r][inter + j]: gu fp32 [n][2*inter] (the
 * gate and up projections side by side), out bf16 [n][inter]. */
int lf_cuda_swiglu(const float *gu, int n, int inter, void *out, void *stream, lf_error *err);

/* After the fused QKV projection of n rows (tokens):
 *   qkv fp32 [n][(nh + 2*nkv) * hd]: q heads, then k heads, then v heads.
 * For each row r: add bias (if any), apply q_norm / k_norm (RMSNorm over
 * head_dim, Qwen3; if given), rotate q and k by RoPE at position pos[r]
 * (rotate-half convention as transformers: pairs (i, i + hd/2), angle
 * pos * inv_freq[i], cos and sin multiplied by attention_factor), then
 *   - write q (dtype dt) to q_out: [n][nh][hd], or [nh][n][hd] if q_head_major;
 *   - optionally write the rotated q and k in fp32 to q_f32 [n][nh][hd] and
 *     k_f32 [n][nkv][hd] (NULL = not written);
 *   - store k and v (dtype dt) into the cache:
 *       entry e = row_entry ? row_entry[r] : 0
 *       slot  s = slot_by_entry ? slot_by_entry[e] : (row_slot ? row_slot[r] : r)
 *       element (e, kvh, s, d) at e*kv_entry_stride + kvh*kvh_stride + s*hd + d
 *     and cache_pos[e*slot_entry_stride + s] = pos[r] (if cache_pos given).
 *     A slot < 0 means no room: the row's K/V are not stored (the engine
 *     never lets this happen; the kernel just does not write out of range).
 *     k_dst/v_dst may be NULL when the FP8 copy below is asked for;
 *   - optionally store k and v as FP8 (the CPU cache's format, src/kv/dtype.h:
 *     e4m3 codes of the fp32 row over its scale |max| / 448, same bytes as
 *     lf_kv_row_store): codes of (e, kvh, s) at byte e*f8_entry_stride +
 *     kvh*f8_kvh_stride + s*hd of k8_dst/v8_dst, the row's scale at
 *     k8_scale/v8_scale[that offset / hd] (both strides multiples of hd). */
typedef struct lf_cuda_rope_store_args {
    int32_t n, n_heads, n_kv_heads, head_dim;
    int32_t dt;                   /* lf_dtype of q_out and the cache: BF16 or F16 */
    const float *qkv;
    const void *bias;             /* bf16 [(nh+2nkv)*hd] or NULL */
    const void *q_norm, *k_norm;  /* bf16 [hd] or NULL */
    float eps;
    const float *inv_freq;        /* fp32 [hd/2] */
    float attention_factor;       /* 1 unless yarn */
    const int32_t *pos;           /* [n] */
    void *q_out;
    int32_t q_head_major;
    float *q_f32, *k_f32;         /* optional */
    void *k_dst, *v_dst;          /* layer base of the cache (or a scratch) */
    int64_t kv_entry_stride, kvh_stride;
    const int32_t *row_entry;     /* [n] or NULL */
    const int32_t *slot_by_entry; /* [entries] or NULL */
    const int32_t *row_slot;      /* [n] or NULL */
    int32_t *cache_pos;           /* layer base of the slot positions, or NULL */
    int64_t slot_entry_stride;
    void *k8_dst, *v8_dst;        /* FP8 codes (layer base), or NULL */
    float *k8_scale, *v8_scale;   /* their row scales (required with k8_dst/v8_dst) */
    float *v8_norm;               /* optional: |v|_1 of each stored V row (scale * sum |code value|), at
                                     the scale's index; the fused kernel's LongFlow/VATP term */
    int64_t f8_entry_stride, f8_kvh_stride;
} lf_cuda_rope_store_args;
int lf_cuda_rope_store(const lf_cuda_rope_store_args *a, void *stream, lf_error *err);

/* Causal attention of one prompt of n tokens (positions 0..n-1), for the
 * prefill, on tensor cores:
 *   q   dt [nh][n][hd] (head-major, as lf_cuda_rope_store writes it)
 *   k,v dt element (kvh, t, d) at kvh*kvh_stride + t*hd + d
 *   out dt [n][nh][hd] (token-major: the input of the o projection)
 * softmax in fp32 with scale (0 = 1/sqrt(hd)); query head h uses KV head
 * h / (nh / nkv). The context owns its workspace (sized for max_n, bounded by
 * processing queries in chunks). */
typedef struct lf_cuda_prefill_attn lf_cuda_prefill_attn;
int lf_cuda_prefill_create(int max_n, int n_heads, int n_kv_heads, int head_dim, lf_dtype dt,
                           lf_cuda_prefill_attn **out, lf_error *err);
void lf_cuda_prefill_free(lf_cuda_prefill_attn *p);
size_t lf_cuda_prefill_bytes(const lf_cuda_prefill_attn *p); /* device memory it holds */
int lf_cuda_prefill_attention(lf_cuda_prefill_attn *p, const void *q, const void *k, const void *v,
                              int64_t kvh_stride, int n, float scale, void *out, void *stream,
                              lf_error *err);
/* At most max_rows query rows per chunk (clamped to what the context was
 * sized for; >= 1). For tests that exercise the chunking on short prompts. */
int lf_cuda_prefill_set_chunk(lf_cuda_prefill_attn *p, int max_rows, lf_error *err);

/* Copy rows of K or V: for i < nk and every KV head,
 *   dst[kvh*dst_kvh_stride + i*hd + d] = src[kvh*src_kvh_stride + index[i]*hd + d]
 * (dtype dt). Used to keep SnapKV's selection of a long prompt. An index < 0
 * writes a zero row; src and dst must not overlap (src == dst is refused). */
int lf_cuda_gather_rows(const void *src, int64_t src_kvh_stride, void *dst, int64_t dst_kvh_stride,
                        int n_kv_heads, int head_dim, lf_dtype dt, const int32_t *index, int nk,
                        void *stream, lf_error *err);

/* The per-slot value a STORED-mode policy keeps (src/kv/score_mode.h's
 * lf_slot_stat `stat`) for keys just written: for row r < n_rows, entry
 * e = row_entry ? row_entry[r] : 0 and slot = slot_by_entry ? slot_by_entry[e] : r
 * (rows whose slot is < 0 are skipped),
 *   out[e * out_entry_stride + slot] = stat(K of (e, slot))
 * with K element (e, kvh, slot, d) at e*kv_entry_stride + kvh*kvh_stride +
 * slot*head_dim + d (dtype dt). NEG_KEY_L2: -mean_kvh ||k_kvh||_2. */
int lf_cuda_slot_stat(int stat, const void *k, lf_dtype dt, int64_t kv_entry_stride, int64_t kvh_stride,
                      int n_kv_heads, int head_dim, const int32_t *row_entry, const int32_t *slot_by_entry,
                      int n_rows, float *out, int64_t out_entry_stride, void *stream, lf_error *err);

/* The window softmax sums of a prompt's last w queries, on the GPU (as
 * src/kv/snapkv.c computes them on the CPU): for each query head h and each
 * query t in [n - w, n), the softmax of q_t . k_j / sqrt(hd) over the keys
 * j < keys(t), times wgt, summed into out[j] (0 where no query reaches).
 * keys(t) = n - w (causal = 0: SnapKV's window attends to the keys before
 * it, lf_snapkv_window_sums with wgt 1) or t + 1 (causal = 1: H2O's and
 * VATP's start, lf_window_attention with wgt 1 / n_heads).
 *   q fp32 [n][n_heads][hd], k fp32 [n][n_kv_heads][hd], out fp32 [n]
 * 1 <= w <= min(n, 32) (and w < n when causal = 0); query head h uses KV head
 * h / (n_heads / n_kv_heads). Deterministic: fixed summation order.
 * scratch: lf_cuda_window_sums_bytes(n, n_heads, w) bytes of device memory. */
size_t lf_cuda_window_sums_bytes(int n, int n_heads, int w);
int lf_cuda_window_sums(const float *q, const float *k, int n, int n_heads, int n_kv_heads, int head_dim, int w,
                        int causal, float wgt, float *out, void *scratch, size_t scratch_bytes, void *stream,
                        lf_error *err);

/* SnapKV's selection on the GPU (src/cuda/snapkv_select.cu), the same as
 * lf_snapkv_select_from_sums on the CPU (the rule is kv/snapkv_rule.h): from
 * the window sums raw [n], the `keep` kept prompt positions into kept [keep],
 * ascending: 0..sinks-1, the keep - LF_SNAPKV_WINDOW - sinks best-ranked
 * positions of sinks..n-LF_SNAPKV_WINDOW-1 (larger pooled score first, on
 * ties the lower index), and the window. keep and sinks are checked as the
 * CPU checks them (lf_snapkv_check_keep). One block. */
int lf_cuda_snapkv_select(const float *raw, int n, int keep, int sinks, int32_t *kept, void *stream,
                          lf_error *err);

/* The repetition penalty on the GPU, as transformers and the CPU sampler
 * apply it: in row r of logits (fp32, rows ld floats apart), every token of
 * the sequence's history has its logit divided by penalty if positive, else
 * multiplied by it, once per distinct token. The history is a bitmap of
 * `words` = (vocab + 31) / 32 words per sequence: row r uses
 * seen + entries[r] * words (entries NULL: r * words). tokens (NULL: none):
 * one token per row that joins the history first, and stays in it (a
 * decode step's input, the token sampled last). penalty > 0. */
int lf_cuda_repetition_penalty(float *logits, int n, int vocab, int64_t ld, float penalty, uint32_t *seen,
                               int words, const int32_t *entries, const int32_t *tokens, void *stream,
                               lf_error *err);

/* One sequence's history bitmap (words words): cleared, then the bits of
 * tokens[0..n) set (a prompt). */
int lf_cuda_history_reset(uint32_t *seen, int words, const int32_t *tokens, int n, void *stream, lf_error *err);

/* Sampling on the GPU, one token per row of logits fp32 [n][vocab] (the
 * logits may be overwritten). params (host struct) applies to every row:
 * temperature 0 = greedy (argmax, lowest index on ties); otherwise logits /
 * temperature, then top-k, top-p, min-p as transformers orders them, and a
 * draw from the renormalised distribution (repetition_penalty is not
 * applied here: lf_cuda_repetition_penalty does it first). Row r draws with
 * the counter-based generator keyed by (row_seed[r], row_step[r]) so a sequence's draws do
 * not depend on which batch it is in. out int32 [n]. Ties at the top-k or
 * top-p threshold value are all kept. A row with a NaN or +inf logit, or
 * with every logit -inf, samples nothing: out[r] = LF_SAMPLE_NONFINITE, as
 * the CPU sampler answers (the check rides on the argmax pass every row
 * makes; -inf alone masks a token). */
size_t lf_cuda_sample_workspace_bytes(int max_n, int vocab);
int lf_cuda_sample(float *logits, int n, int vocab, const lf_sampling *params, const uint64_t *row_seed,
                   const int32_t *row_step, int32_t *out, void *workspace, size_t workspace_bytes,
                   void *stream, lf_error *err);

#ifdef __cplusplus
}
#endif
#endif
