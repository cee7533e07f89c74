/* full: no eviction; the cache holds the prompt and every generated token. */
#include "kv/policies/common.h"

static int choose_append(lf_kv_cache *c, int layer, int pnow) {
    (void)pnow;
    const lf_kv_layer *L = &c->layers[layer];
    return L->hw < c->capacity ? L->hw : -1;
}

const lf_policy_desc lf_policy_full = {
    .name = "full",
    .paper = "-",
    .rule = "no eviction: the cache holds prompt + max tokens",
    .aux = "4 B (token position)",
    .aux_bytes_per_slot = 4,
    .budgeted = false,
    .score = LF_SCORE_NONE,
    .gpu = LF_GPU_APPEND,
    .defaults = lf_defaults_unprotected,
    .choose = choose_append,
};
