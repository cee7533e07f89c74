/* The per-slot scores the fused decode kernels (CPU: src/kv/attention.c with
 * src/kv/policies/scored.c; GPU: src/cuda/attention.cu) can compute, and so the
 * vocabulary a policy descriptor chooses its score from. A policy whose score
 * is one of these needs no kernel edit. Plain C, no dependencies: the CUDA
 * code includes it too. With a_{h,i} the attention of query head h on slot i
 * and |v_i|_1 the L1 norm of the slot's value (per KV head):
 *   NONE       no score (attention only): the policy chooses slots another way
 *   ATT_VNORM  mean_h a_{h,i} * |v_{kv(h),i}|_1 / head_dim        (LongFlow)
 *   ATT        mean_h a_{h,i}                                     (TOVA)
 *   ACC        acc_i += mean_h a_{h,i}; score_i = acc_i           (H2O)
 *   ACC_VNORM  acc_i += mean_h a_{h,i}; score_i = acc_i * mean_kvh |v_{kvh,i}|_1 (/ head_dim on the GPU) (VATP)
 *   STORED     score_i = the value the policy stored for the slot when its
 *              token was written (lf_slot_stat below); no attention term (KNorm)
 * The victim is the unprotected slot with the smallest score (lowest index on
 * ties). */
#ifndef LF_KV_SCORE_MODE_H
#define LF_KV_SCORE_MODE_H

typedef enum lf_score_mode {
    LF_SCORE_NONE = 0,
    LF_SCORE_ATT_VNORM,
    LF_SCORE_ATT,
    LF_SCORE_ACC,
    LF_SCORE_ACC_VNORM,
    LF_SCORE_STORED,
    LF_SCORE_MODE_COUNT
} lf_score_mode;

/* What a STORED-mode policy stores per slot when a token is written, from the
 * token's K or V alone (computed on the device by the GPU backend):
 *   NEG_KEY_L2  -mean_kvh ||k_{kvh}||_2  (evict the largest key norm) */
typedef enum lf_slot_stat {
    LF_SLOT_STAT_NONE = 0,
    LF_SLOT_STAT_NEG_KEY_L2,
    LF_SLOT_STAT_COUNT
} lf_slot_stat;

/* The mode's name in docs and `longflow policies --json`. */
static inline const char *lf_score_mode_name(int m) {
    static const char *const names[LF_SCORE_MODE_COUNT] = {"none", "att_vnorm", "att", "acc", "acc_vnorm",
                                                           "stored"};
    return m >= 0 && m < LF_SCORE_MODE_COUNT ? names[m] : "?";
}

#ifdef __CUDACC__
#define LF_SCORE_FN __host__ __device__ static inline
#else
#define LF_SCORE_FN static inline
#endif
/* Whether a mode reads the per-slot acc array (ACC modes, STORED) / updates
 * it from the attention (ACC modes). */
LF_SCORE_FN int lf_score_reads_acc(int m) {
    return m == LF_SCORE_ACC || m == LF_SCORE_ACC_VNORM || m == LF_SCORE_STORED;
}
LF_SCORE_FN int lf_score_writes_acc(int m) { return m == LF_SCORE_ACC || m == LF_SCORE_ACC_VNORM; }

#endif
