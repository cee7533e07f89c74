/* Model directory loading (src/model/model.c with config.c and
 * safetensors.c): single-file and sharded checkpoints. Input parts,
 * separated by LF_FUZZ_SEP: config.json, model.safetensors.index.json, then
 * the weight files. With an empty index part the first weight file is
 * model.safetensors; otherwise weight file i of n is
 * model-<i>-of-<n>.safetensors, as Hugging Face names shards. */
#include <stdint.h>
#include <stdio.h>

#include "harness.h"
#include "longflow.h"

#define MAX_SHARDS 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int g_prev_shards;

static void shard_name(char *buf, size_t n, int i, int count) {
    snprintf(buf, n, "model-%05d-of-%05d.safetensors", i + 1, count);
}

/* Remove the previous input's weight files (names depend on their count). */
static void clear_shards(void) {
    char name[64];
    for (int i = 0; i < g_prev_shards; i++) {
        shard_name(name, sizeof name, i, g_prev_shards);
        lf_fuzz_put(name, NULL, 0);
    }
    g_prev_shards = 0;
    lf_fuzz_put("model.safetensors", NULL, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lf_fuzz_part parts[2 + MAX_SHARDS];
    int n = lf_fuzz_split(data, size, parts, 2 + MAX_SHARDS);
    int n_shards = n > 2 ? n - 2 : 0;
    clear_shards();
    lf_fuzz_put("config.json", parts[0].data ? parts[0].data : (const uint8_t *)"", parts[0].size);
    if (parts[1].size == 0) {
        lf_fuzz_put("model.safetensors.index.json", NULL, 0);
        if (n_shards) lf_fuzz_put("model.safetensors", parts[2].data, parts[2].size);
    } else {
        lf_fuzz_put("model.safetensors.index.json", parts[1].data, parts[1].size);
        char name[64];
        for (int i = 0; i < n_shards; i++) {
            shard_name(name, sizeof name, i, n_shards);
            lf_fuzz_put(name, parts[2 + i].data ? parts[2 + i].data : (const uint8_t *)"", parts[2 + i].size);
        }
        g_prev_shards = n_shards;
    }
    lf_model *m = NULL;
    lf_error err;
    if (lf_model_load(lf_fuzz_dir(), &m, &err) == 0) {
        lf_fuzz_note("model", "loaded");
        lf_model_free(m);
    } else {
        lf_fuzz_note("model", err.msg);
    }
    return 0;
}
