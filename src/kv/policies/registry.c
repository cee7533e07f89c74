/* The registry: the one list of KV-cache policies. A policy's kind is its
 * index in this table; the first seven keep the order of include/longflow.h's
 * LF_POLICY_* names. `longflow policies`, the CLI's help and errors,
 * lf_policy_from_name, tools/sweep_accuracy.py (through `longflow policies
 * --json`) and docs/policies.md's table all come from it. Adding a policy is
 * one line here (X(name) for the descriptor lf_policy_<name> its file
 * exports); docs/adding-a-policy.md. */
#include "kv/policy.h"

#define LF_POLICY_TABLE(X) \
    X(full)                \
    X(longflow)            \
    X(streaming)           \
    X(tova)                \
    X(h2o)                 \
    X(vatp)                \
    X(rkv)                 \
    X(knorm)               \
    /* new policies here: X(name) \ */

#define DECLARE(n) extern const lf_policy_desc lf_policy_##n;
LF_POLICY_TABLE(DECLARE)
#undef DECLARE

#define ENTRY(n) &lf_policy_##n,
static const lf_policy_desc *const registry[] = {LF_POLICY_TABLE(ENTRY)};
#undef ENTRY

int lf_policy_count(void) { return (int)(sizeof registry / sizeof registry[0]); }

const lf_policy_desc *lf_policy_get(lf_policy_kind k) {
    return ((int)k >= 0 && (int)k < lf_policy_count()) ? registry[k] : NULL;
}
