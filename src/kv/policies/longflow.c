/* LongFlow (arXiv 2603.11504): each step evict the slot with the smallest
 * mean_h(alpha_h * |v|_1) / head_dim of the current query, fused into the
 * attention kernel. Extension: --evict-every K evicts the K smallest at once
 * every K steps. */
#include "kv/policies/common.h"

static int choose(lf_kv_cache *c, int layer, int pnow) {
    if (c->policy.evict_every > 1) return lf_scored_queued(c, layer, pnow);
    return lf_scored_argmin(c, layer, pnow);
}

const lf_policy_desc lf_policy_longflow = {
    .name = "longflow",
    .paper = "LongFlow, arXiv 2603.11504",
    .rule = "each step evict the slot with the smallest mean_h(alpha_h*|v|_1)/head_dim of the current query "
            "(fused into attention)",
    .aux = "8 B (position, last score); no history",
    .aux_bytes_per_slot = 8,
    .budgeted = true,
    .score = LF_SCORE_ATT_VNORM,
    .gpu = LF_GPU_ARGMIN,
    .defaults = lf_defaults_protect_none,
    LF_SCORED_HOOKS,
    .choose = choose,
};
