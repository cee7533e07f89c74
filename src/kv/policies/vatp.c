/* VATP (Guo et al., arXiv 2406.12335): H2O's accumulated attention times the
 * slot's value norm (mean over KV heads of |v|_1), outside a recent window. */
#include "kv/policies/common.h"

const lf_policy_desc lf_policy_vatp = {
    .name = "vatp",
    .paper = "VATP, Guo et al., arXiv 2406.12335",
    .rule = "evict the smallest accumulated attention * mean_kv |v|_1 outside a recent window (default budget/2)",
    .aux = "12 B (position, last score, accumulated attention)",
    .aux_bytes_per_slot = 12,
    .budgeted = true,
    .score = LF_SCORE_ACC_VNORM,
    .gpu = LF_GPU_ARGMIN,
    .defaults = lf_defaults_recent_half,
    LF_SCORED_HOOKS,
    .choose = lf_scored_argmin,
};
