/* KNorm (Devoto et al., "A Simple and Effective L2 Norm-Based Strategy for
 * KV Cache Compression", EMNLP 2024, arXiv 2406.11430; NVIDIA kvpress's
 * KnormPress): a key with a low L2 norm draws high attention, so evict the
 * slot whose key has the largest norm (averaged over the layer's KV heads,
 * which share the slot). The score is stored once, when the token is
 * written (score mode STORED, statistic NEG_KEY_L2): no attention term, the
 * same rule on the CPU and the GPU. */
#include "kv/policies/common.h"

const lf_policy_desc lf_policy_knorm = {
    .name = "knorm",
    .paper = "KNorm, Devoto et al., arXiv 2406.11430",
    .rule = "evict the slot whose key has the largest L2 norm (mean over KV heads), stored when written",
    .aux = "12 B (position, last score, stored key norm)",
    .aux_bytes_per_slot = 12,
    .budgeted = true,
    .score = LF_SCORE_STORED,
    .slot_stat = LF_SLOT_STAT_NEG_KEY_L2,
    .gpu = LF_GPU_ARGMIN,
    .defaults = lf_defaults_protect_none,
    LF_SCORED_HOOKS,
    .choose = lf_scored_argmin,
};
