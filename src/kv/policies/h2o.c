/* H2O (Zhang et al., arXiv 2306.14048): evict the smallest accumulated
 * attention outside a recent window (default budget/2); the accumulation
 * starts from the attention of the last 32 prompt queries. */
#include "kv/policies/common.h"

const lf_policy_desc lf_policy_h2o = {
    .name = "h2o",
    .paper = "H2O, Zhang et al., arXiv 2306.14048",
    .rule = "evict the smallest accumulated attention outside a recent window (default budget/2)",
    .aux = "12 B (position, last score, accumulated attention)",
    .aux_bytes_per_slot = 12,
    .budgeted = true,
    .score = LF_SCORE_ACC,
    .gpu = LF_GPU_ARGMIN,
    .defaults = lf_defaults_recent_half,
    LF_SCORED_HOOKS,
    .choose = lf_scored_argmin,
};
