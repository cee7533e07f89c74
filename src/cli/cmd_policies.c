/* longflow policies: one line per KV-cache policy with its paper, what it
 * evicts and the auxiliary memory it keeps per slot (--json for tools). */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "longflow.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: longflow policies [--json]\n"
            "\n"
            "List the KV-cache policies --policy accepts: name, paper, what is evicted, and the\n"
            "auxiliary memory per slot and layer beside K and V. Every budgeted policy compresses\n"
            "a prompt longer than budget-1 with SnapKV (last %d queries, pool %d), which needs a\n"
            "budget above %d. Extensions for longflow: --sinks N, --recent N, --evict-every K.\n",
            LF_SNAPKV_WINDOW, LF_SNAPKV_POOL, LF_SNAPKV_MIN_BUDGET - 1);
}

int lf_cmd_policies(int argc, char **argv) {
    lf_args a;
    lf_args_init(&a, "policies", argc, argv);
    bool json = false;
    const char *flag;
    while ((flag = lf_args_next(&a))) {
        if (!strcmp(flag, "--json")) {
            json = true;
        } else if (!strcmp(flag, "--help") || !strcmp(flag, "-h")) {
            usage(stdout);
            return 0;
        } else {
            lf_cli_error("policies", "unknown option '%s' (try 'longflow policies --help')", flag);
            return 2;
        }
    }
    if (a.inline_val) return 2; /* --flag=value on a flag without one (reported) */
    if (json) {
        cJSON *arr = cJSON_CreateArray();
        for (int k = 0; k < lf_policy_count(); k++) {
            lf_policy_info p;
            lf_policy_describe((lf_policy_kind)k, &p);
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "name", p.name);
            cJSON_AddStringToObject(o, "paper", p.paper);
            cJSON_AddStringToObject(o, "rule", p.rule);
            cJSON_AddStringToObject(o, "aux_memory_per_slot", p.aux);
            cJSON_AddNumberToObject(o, "aux_bytes_per_slot", p.aux_bytes_per_slot);
            cJSON_AddBoolToObject(o, "budgeted", p.budgeted);
            cJSON_AddBoolToObject(o, "gpu", p.gpu);
            cJSON_AddStringToObject(o, "score_mode", p.score_mode);
            cJSON_AddItemToArray(arr, o);
        }
        char *s = cJSON_PrintUnformatted(arr);
        cJSON_Delete(arr);
        if (!s) {
            lf_cli_error("policies", "out of memory");
            return 1;
        }
        printf("%s\n", s);
        cJSON_free(s);
        return 0;
    }
    for (int k = 0; k < lf_policy_count(); k++) {
        lf_policy_info p;
        lf_policy_describe((lf_policy_kind)k, &p);
        printf("%-10s %s | %s | aux memory per slot: %s%s\n", p.name, p.paper, p.rule, p.aux,
               p.gpu ? "" : " | CPU only");
    }
    return 0;
}
