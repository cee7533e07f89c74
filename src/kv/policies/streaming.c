/* StreamingLLM (Xiao et al., arXiv 2309.17453): keep the first --sinks
 * tokens (default 4) and the most recent ones; evict the oldest other token. */
#include "kv/policies/common.h"

#include "core/error.h"

static int defaults(const lf_policy_config *in, int budget, lf_policy_config *out, lf_error *err) {
    (void)budget;
    if (in->recent > 0)
        return lf_fail(err, "--recent does not apply to --policy streaming (it keeps every recent "
                            "token that fits beside the sinks)");
    out->sinks = in->sinks < 0 ? LF_STREAMING_SINKS : in->sinks;
    out->recent = 0;
    return 0;
}

static int choose_oldest(lf_kv_cache *c, int layer, int pnow) {
    const lf_kv_layer *L = &c->layers[layer];
    int e = lf_first_empty(c, L);
    if (e >= 0) return e;
    for (int i = 0; i < c->capacity; i++)
        if (lf_slot_evictable(c, L->pos[i], pnow) && (e < 0 || L->pos[i] < L->pos[e])) e = i;
    return e;
}

const lf_policy_desc lf_policy_streaming = {
    .name = "streaming",
    .paper = "StreamingLLM, Xiao et al., arXiv 2309.17453",
    .rule = "keep --sinks (default 4) first tokens, evict the oldest other token",
    .aux = "4 B (position)",
    .aux_bytes_per_slot = 4,
    .budgeted = true,
    .score = LF_SCORE_NONE,
    .gpu = LF_GPU_OLDEST,
    .defaults = defaults,
    .prefill_select = lf_snapkv_prefill,
    .choose = choose_oldest,
};
