/* safetensors loading (src/model/safetensors.c): the input is one
 * .safetensors file. Every tensor the loader accepts is read end to end, so
 * a byte range it failed to check against the file shows up under ASan. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/error.h"
#include "harness.h"
#include "model/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lf_fuzz_put("model.safetensors", data, size);
    static char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", lf_fuzz_dir());
    lf_st_file f;
    lf_error err;
    if (lf_st_open(path, &f, &err)) {
        lf_fuzz_note("safetensors", err.msg);
        return 0;
    }
    lf_fuzz_note("safetensors", "opened");
    volatile uint8_t sink = 0;
    for (int i = 0; i < f.n_tensors; i++) {
        const lf_tensor *t = &f.tensors[i];
        const uint8_t *p = t->data;
        for (size_t b = 0; b < t->nbytes; b++) sink ^= p[b];
        if (lf_st_find(&f, t->name) == NULL) {
            fprintf(stderr, "tensor %s listed but not found by name\n", t->name);
            abort();
        }
    }
    (void)sink;
    lf_st_close(&f);
    return 0;
}
