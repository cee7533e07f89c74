/* A model directory's JSON settings: config.json and generation_config.json
 * (src/model/config.c), and the CLI's reading of longflow.json and
 * generation_config.json for its defaults (lf_gen_model_defaults,
 * src/cli/common.c). Input
 * parts, separated by LF_FUZZ_SEP: the three files in that order; a missing
 * part means a missing file. A configuration the loader accepts must be
 * self-consistent (positive sizes, heads that divide). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/common.h"
#include "harness.h"
#include "model/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_accepted(const lf_config *c) {
    if (c->vocab_size <= 0 || c->hidden_size <= 0 || c->n_layers <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
        c->head_dim <= 0 || c->intermediate_size <= 0 || c->n_eos < 0 || c->n_eos > LF_MAX_EOS ||
        c->n_heads % c->n_kv_heads != 0) {
        fprintf(stderr, "accepted an inconsistent config: vocab %d hidden %d layers %d heads %d/%d head_dim %d\n",
                c->vocab_size, c->hidden_size, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const names[3] = {"config.json", "generation_config.json", "longflow.json"};
    lf_fuzz_part parts[3];
    int n = lf_fuzz_split(data, size, parts, 3);
    for (int i = 0; i < 3; i++)
        lf_fuzz_put(names[i], i < n ? (parts[i].data ? parts[i].data : (const uint8_t *)"") : NULL, parts[i].size);
    lf_config cfg;
    lf_error err;
    if (lf_config_load(lf_fuzz_dir(), &cfg, &err) == 0) {
        lf_fuzz_note("config", "loaded");
        check_accepted(&cfg);
        for (int t = -1; t < 4; t++) (void)lf_config_is_eos(&cfg, t);
    } else {
        lf_fuzz_note("config", err.msg);
    }
    lf_model_defaults d;
    if (lf_gen_model_defaults(lf_fuzz_dir(), &d, &err) == 0) {
        if (d.max_tokens < 0 || d.max_length < 0) {
            fprintf(stderr, "negative default max_tokens %d / max_length %d\n", d.max_tokens, d.max_length);
            abort();
        }
        lf_gen_model_defaults_free(&d);
    } else {
        lf_fuzz_note("model defaults", err.msg);
    }
    return 0;
}
