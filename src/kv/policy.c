/* Policy names and defaults. */
#include <string.h>

#include "longflow.h"

static const char *const names[LF_POLICY_COUNT] = {
    [LF_POLICY_FULL] = "full",   [LF_POLICY_LONGFLOW] = "longflow", [LF_POLICY_STREAMING] = "streaming",
    [LF_POLICY_TOVA] = "tova",   [LF_POLICY_H2O] = "h2o",           [LF_POLICY_VATP] = "vatp",
    [LF_POLICY_RKV] = "rkv",
};

int lf_policy_from_name(const char *name, lf_policy_kind *out) {
    for (int i = 0; i < LF_POLICY_COUNT; i++)
        if (strcmp(name, names[i]) == 0) {
            *out = (lf_policy_kind)i;
            return 0;
        }
    return -1;
}

const char *lf_policy_name(lf_policy_kind k) {
    return (k >= 0 && k < LF_POLICY_COUNT) ? names[k] : "?";
}

void lf_policy_config_default(lf_policy_config *p) {
    p->kind = LF_POLICY_FULL;
    p->budget = 0;
    p->sinks = -1;
    p->recent = -1;
    p->evict_every = 1;
}
