/* Policy names, defaults, validation and descriptions. */
#include "kv/policy.h"

#include <string.h>

#include "core/error.h"

static const lf_policy_info infos[LF_POLICY_COUNT] = {
    [LF_POLICY_FULL] = {LF_POLICY_FULL, "full", "-",
                        "no eviction: the cache holds prompt + max tokens", "4 B (token position)"},
    [LF_POLICY_LONGFLOW] = {LF_POLICY_LONGFLOW, "longflow", "LongFlow, arXiv 2603.11504",
                            "each step evict the slot with the smallest mean_h(alpha_h*|v|_1)/head_dim of "
                            "the current query (fused into attention)",
                            "8 B (position, last score); no history"},
    [LF_POLICY_STREAMING] = {LF_POLICY_STREAMING, "streaming",
                             "StreamingLLM, Xiao et al., arXiv 2309.17453",
                             "keep --sinks (default 4) first tokens, evict the oldest other token",
                             "4 B (position)"},
    [LF_POLICY_TOVA] = {LF_POLICY_TOVA, "tova", "TOVA, Oren et al., arXiv 2401.06104",
                        "each step evict the slot with the smallest current attention averaged over heads",
                        "8 B (position, last score)"},
    [LF_POLICY_H2O] = {LF_POLICY_H2O, "h2o", "H2O, Zhang et al., arXiv 2306.14048",
                       "evict the smallest accumulated attention outside a recent window (default budget/2)",
                       "12 B (position, last score, accumulated attention)"},
    [LF_POLICY_VATP] = {LF_POLICY_VATP, "vatp", "VATP, Guo et al., arXiv 2406.12335",
                        "evict the smallest accumulated attention * mean_kv |v|_1 outside a recent window "
                        "(default budget/2)",
                        "12 B (position, last score, accumulated attention)"},
    [LF_POLICY_RKV] = {LF_POLICY_RKV, "rkv", "R-KV, Cai et al., arXiv 2505.24133",
                       "buffer 128 new tokens, then keep the best budget by 0.1*importance(last 8 queries, "
                       "max-pool 5) - 0.9*redundancy(key cosine similarity)",
                       "4 B (position) + 128 buffer slots of K/V per layer + 8 queries per layer"},
};

int lf_policy_from_name(const char *name, lf_policy_kind *out) {
    if (!name) return -1;
    for (int i = 0; i < LF_POLICY_COUNT; i++)
        if (strcmp(name, infos[i].name) == 0) {
            *out = (lf_policy_kind)i;
            return 0;
        }
    return -1;
}

const char *lf_policy_name(lf_policy_kind k) {
    return ((int)k >= 0 && k < LF_POLICY_COUNT) ? infos[k].name : "?";
}

const lf_policy_info *lf_policy_info_get(lf_policy_kind k) {
    return ((int)k >= 0 && k < LF_POLICY_COUNT) ? &infos[k] : NULL;
}

void lf_policy_config_default(lf_policy_config *p) {
    p->kind = LF_POLICY_FULL;
    p->budget = 0;
    p->sinks = -1;
    p->recent = -1;
    p->evict_every = 1;
}

bool lf_policy_is_budgeted(lf_policy_kind k) { return k != LF_POLICY_FULL; }

int lf_policy_resolve(const lf_policy_config *in, int budget, lf_policy_config *out, lf_error *err) {
    if ((int)in->kind < 0 || in->kind >= LF_POLICY_COUNT)
        return lf_fail(err, "KV cache: unknown policy kind %d", (int)in->kind);
    const char *name = infos[in->kind].name;
    if (budget <= 0) return lf_fail(err, "--budget must be a positive number of slots (got %d)", budget);
    if (in->sinks < -1) return lf_fail(err, "--sinks must be >= 0 (got %d)", in->sinks);
    if (in->recent < -1) return lf_fail(err, "--recent must be >= 0 (got %d)", in->recent);
    if (in->evict_every < 1) return lf_fail(err, "--evict-every must be >= 1 (got %d)", in->evict_every);
    *out = *in;
    out->budget = budget;
    switch (in->kind) {
    case LF_POLICY_FULL:
    case LF_POLICY_RKV:
        if (in->sinks > 0 || in->recent > 0)
            return lf_fail(err, "--sinks/--recent do not apply to --policy %s", name);
        out->sinks = out->recent = 0;
        break;
    case LF_POLICY_STREAMING:
        if (in->recent > 0)
            return lf_fail(err, "--recent does not apply to --policy streaming (it keeps every recent "
                                "token that fits beside the sinks)");
        out->sinks = in->sinks < 0 ? LF_STREAMING_SINKS : in->sinks;
        out->recent = 0;
        break;
    case LF_POLICY_H2O:
    case LF_POLICY_VATP:
        out->sinks = in->sinks < 0 ? 0 : in->sinks;
        out->recent = in->recent < 0 ? budget / 2 : in->recent;
        break;
    default: /* longflow, tova: the paper's algorithm protects nothing */
        out->sinks = in->sinks < 0 ? 0 : in->sinks;
        out->recent = in->recent < 0 ? 0 : in->recent;
        break;
    }
    if (in->evict_every != 1 && in->kind != LF_POLICY_LONGFLOW)
        return lf_fail(err, "--evict-every applies to --policy longflow only (got --policy %s)", name);
    if (in->kind != LF_POLICY_FULL && out->sinks + out->recent >= budget)
        return lf_fail(err,
                       "--budget %d leaves no slot to evict for --policy %s: --sinks %d + --recent %d must "
                       "be smaller than the budget",
                       budget, name, out->sinks, out->recent);
    if (out->evict_every > budget - out->sinks - out->recent)
        return lf_fail(err, "--evict-every %d is larger than the %d evictable slots of --budget %d",
                       out->evict_every, budget - out->sinks - out->recent, budget);
    if (in->kind == LF_POLICY_RKV && budget <= LF_RKV_WINDOW)
        return lf_fail(err, "--budget %d is too small for --policy rkv: it keeps the %d newest tokens and "
                            "needs a budget above that",
                       budget, LF_RKV_WINDOW);
    return 0;
}
