/* TOVA (Oren et al., arXiv 2401.06104): each step evict the slot with the
 * smallest current attention, averaged over the heads. */
#include "kv/policies/common.h"

const lf_policy_desc lf_policy_tova = {
    .name = "tova",
    .paper = "TOVA, Oren et al., arXiv 2401.06104",
    .rule = "each step evict the slot with the smallest current attention averaged over heads",
    .aux = "8 B (position, last score)",
    .aux_bytes_per_slot = 8,
    .budgeted = true,
    .score = LF_SCORE_ATT,
    .gpu = LF_GPU_ARGMIN,
    .defaults = lf_defaults_protect_none,
    LF_SCORED_HOOKS,
    .choose = lf_scored_argmin,
};
