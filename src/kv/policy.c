/* The rules every backend shares: policy names, defaults, validation
 * against a budget, the clamp to a cache's slots, the prompt-fits check. */
#include "kv/policy.h"

#include <stdio.h>
#include <string.h>

#include "core/error.h"

int lf_policy_from_name(const char *name, lf_policy_kind *out) {
    if (!name) return -1;
    for (int i = 0; i < lf_policy_count(); i++)
        if (strcmp(name, lf_policy_get((lf_policy_kind)i)->name) == 0) {
            *out = (lf_policy_kind)i;
            return 0;
        }
    return -1;
}

const char *lf_policy_name(lf_policy_kind k) {
    const lf_policy_desc *d = lf_policy_get(k);
    return d ? d->name : "?";
}

void lf_policy_list(char *buf, size_t size) {
    if (size == 0) return;
    buf[0] = 0;
    size_t used = 0;
    for (int i = 0; i < lf_policy_count() && used < size; i++) {
        int w = snprintf(buf + used, size - used, "%s%s", i ? ", " : "", lf_policy_get((lf_policy_kind)i)->name);
        if (w < 0) break;
        used += (size_t)w;
    }
}

int lf_policy_parse(const char *what, const char *name, lf_policy_kind *out, lf_error *err) {
    if (lf_policy_from_name(name, out) == 0) return 0;
    char known[256];
    lf_policy_list(known, sizeof known);
    return lf_fail(err, "%s: unknown policy '%.40s' (known: %s; see longflow policies)", what, name ? name : "",
                   known);
}

int lf_policy_check_budget(lf_policy_kind kind, bool budget_given, const char *policy_what, const char *budget_what,
                           lf_error *err) {
    if (kind == LF_POLICY_FULL && budget_given)
        return lf_fail(err, "%s applies to budgeted policies; %s full keeps every token", budget_what, policy_what);
    if (kind != LF_POLICY_FULL && !budget_given)
        return lf_fail(err, "%s %s needs %s (KV slots per sequence and layer)", policy_what, lf_policy_name(kind),
                       budget_what);
    return 0;
}

void lf_policy_config_default(lf_policy_config *p) {
    p->kind = LF_POLICY_FULL;
    p->budget = 0;
    p->sinks = -1;
    p->recent = -1;
    p->evict_every = 1;
    p->protect_prompt = 0;
    p->kv_dtype = LF_KV_BF16;
}

bool lf_policy_is_budgeted(lf_policy_kind k) {
    const lf_policy_desc *d = lf_policy_get(k);
    return d && d->budgeted;
}

int lf_policy_resolve(const lf_policy_config *in, int budget, lf_policy_config *out, lf_error *err) {
    const lf_policy_desc *d = lf_policy_get(in->kind);
    if (!d) return lf_fail(err, "KV cache: unknown policy kind %d", (int)in->kind);
    if (budget <= 0) return lf_fail(err, "--budget must be a positive number of slots (got %d)", budget);
    if (in->sinks < -1) return lf_fail(err, "--sinks must be >= 0 (got %d)", in->sinks);
    if (in->recent < -1) return lf_fail(err, "--recent must be >= 0 (got %d)", in->recent);
    if (in->evict_every < 1) return lf_fail(err, "--evict-every must be >= 1 (got %d)", in->evict_every);
    if (!(in->protect_prompt >= 0 && in->protect_prompt < 1))
        return lf_fail(err, "--protect-prompt must be a share of the budget in (0, 1) (got %g)",
                       (double)in->protect_prompt);
    *out = *in;
    out->budget = budget;
    if (d->defaults(in, budget, out, err)) return -1;
    if (in->evict_every != 1 && in->kind != LF_POLICY_LONGFLOW)
        return lf_fail(err, "--evict-every applies to --policy longflow only (got --policy %s)", d->name);
    if (d->budgeted && out->sinks + out->recent >= budget)
        return lf_fail(err,
                       "--budget %d leaves no slot to evict for --policy %s: --sinks %d + --recent %d must "
                       "be smaller than the budget",
                       budget, d->name, out->sinks, out->recent);
    if (d->budgeted && in->protect_prompt > 0 && lf_policy_prompt_room(out, budget) + out->recent >= budget)
        return lf_fail(err,
                       "--budget %d leaves no slot to evict for --policy %s: the prompt's share (--protect-prompt %g: "
                       "%d slots) + --recent %d must be smaller than the budget",
                       budget, d->name, (double)in->protect_prompt, lf_policy_prompt_room(out, budget), out->recent);
    if (out->evict_every > budget - out->sinks - out->recent)
        return lf_fail(err, "--evict-every %d is larger than the %d evictable slots of --budget %d",
                       out->evict_every, budget - out->sinks - out->recent, budget);
    if (budget <= d->min_budget)
        return lf_fail(err, "--budget %d is too small for --policy %s: it needs a budget above %d", budget, d->name,
                       d->min_budget);
    return 0;
}

int lf_policy_resolve_slots(const lf_policy_config *in, int slots, lf_policy_config *out, lf_error *err) {
    if (slots <= 0) return lf_fail(err, "KV cache: budget must be positive (got %d)", slots);
    const int vb = in->budget > slots ? in->budget : slots;
    if (lf_policy_resolve(in, vb, out, err)) return -1;
    out->budget = slots;
    if (lf_policy_is_budgeted(out->kind)) {
        if (out->sinks >= slots) out->sinks = slots - 1;
        if (out->sinks + out->recent >= slots) out->recent = slots - 1 - out->sinks;
        if (out->evict_every > slots - out->sinks - out->recent) out->evict_every = slots - out->sinks - out->recent;
    }
    const lf_policy_desc *d = lf_policy_get(out->kind);
    if (slots <= d->min_budget)
        return lf_fail(err, "KV cache: --policy %s needs more than %d slots (got %d)", d->name, d->min_budget,
                       slots);
    return 0;
}

int lf_policy_check_gpu(const lf_policy_config *p, lf_error *err) {
    const lf_policy_desc *d = lf_policy_get(p->kind);
    if (!d) return lf_fail(err, "unknown policy kind %d", (int)p->kind);
    if (d->gpu == LF_GPU_NONE) return lf_fail(err, "--policy %s runs on the CPU only (use --device cpu)", d->name);
    if (p->evict_every > 1)
        return lf_fail(err, "--evict-every %d: the GPU runs --policy %s with --evict-every 1 only", p->evict_every,
                       d->name);
    if (p->protect_prompt > 0)
        return lf_fail(err, "--protect-prompt runs on the CPU only (use --device cpu; on the GPU, --sinks N keeps "
                            "the first N prompt tokens)");
    if (lf_kv_dtype_check_device(p->kv_dtype, LF_DEVICE_CUDA, err)) return -1;
    if (p->kv_dtype == LF_KV_FP8 && d->slot_stat)
        return lf_fail(err, "--policy %s with --kv-dtype fp8 is not supported on the GPU yet (its stored key "
                            "statistic reads bf16 keys; use --kv-dtype bf16)", d->name);
    return 0;
}

int lf_policy_check_prompt(const lf_policy_config *p, int budget, int capacity, int n, lf_error *err) {
    if (n <= 0) return lf_fail(err, "KV cache: empty prompt");
    if (!lf_policy_is_budgeted(p->kind)) {
        if (n > capacity)
            return lf_fail(err, "KV cache: a prompt of %d tokens does not fit the %d slots of --policy full", n,
                           capacity);
        return 0;
    }
    /* a prompt of up to budget-1 tokens (--protect-prompt: its share of the
     * budget) fits as it is; a longer one is compressed SnapKV-style, keeping
     * its last LF_SNAPKV_WINDOW tokens */
    if (n > budget - 1 && budget < LF_SNAPKV_MIN_BUDGET)
        return lf_fail(err,
                       "--budget %d is too small for a prompt of %d tokens: --policy %s needs a budget of at least "
                       "%d (the prompt + 1, or %d to compress a longer prompt SnapKV-style)",
                       budget, n, lf_policy_name(p->kind), n + 1 < LF_SNAPKV_MIN_BUDGET ? n + 1 : LF_SNAPKV_MIN_BUDGET,
                       LF_SNAPKV_MIN_BUDGET);
    return 0;
}

int lf_policy_prompt_room(const lf_policy_config *p, int budget) {
    int room = budget - 1;
    if (p->protect_prompt > 0) {
        int share = (int)(p->protect_prompt * (float)budget);
        if (share < LF_SNAPKV_MIN_BUDGET - 1) share = LF_SNAPKV_MIN_BUDGET - 1; /* what SnapKV's selection needs */
        if (share < room) room = share;
    }
    return room;
}

int lf_snapkv_sinks(const lf_policy_config *p, bool sinks_default, int keep) {
    int sinks = p->sinks;
    if (sinks_default && sinks > keep - LF_SNAPKV_WINDOW - 1) sinks = keep - LF_SNAPKV_WINDOW - 1;
    return sinks;
}

int lf_policy_describe(lf_policy_kind kind, lf_policy_info *info) {
    const lf_policy_desc *d = lf_policy_get(kind);
    if (!d) return -1;
    info->name = d->name;
    info->paper = d->paper;
    info->rule = d->rule;
    info->aux = d->aux;
    info->aux_bytes_per_slot = d->aux_bytes_per_slot;
    info->budgeted = d->budgeted;
    info->gpu = d->gpu != LF_GPU_NONE;
    info->score_mode = lf_score_mode_name(d->score);
    return 0;
}
