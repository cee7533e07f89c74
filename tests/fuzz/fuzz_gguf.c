/* GGUF parsing (src/model/gguf.c) and the metadata -> config mapping
 * (src/model/gguf_model.c): the input is one GGUF file image. Whatever the
 * parser accepts is then used the way the loader uses it: every metadata
 * value read through the typed getters, every tensor's bytes read, the first
 * blocks of each tensor dequantized, and the config derived; a range the
 * parser failed to check shows up under ASan. Then the same bytes, written to
 * a file, go through lf_model_load_mode, both with the Q8_0/Q4_0/Q4_1
 * blocks kept and with every block type dequantized (tensor mapping,
 * dequantization, Q/K reordering, binding). Seeds: corpus/gguf/ (made by
 * tools/gen_gguf_fixtures.py). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "model/gguf.h"
#include "model/gguf_model.h"
#include "model/model.h"
#include "model/quant.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void read_metadata(const lf_gguf_file *f) {
    lf_error err;
    for (int i = 0; i < f->n_kv; i++) {
        const lf_gguf_kv *kv = &f->kv[i];
        int64_t iv;
        double dv;
        bool bv;
        char *s = NULL;
        (void)lf_gguf_get_int(f, kv->key, &iv, &err);
        (void)lf_gguf_get_float(f, kv->key, &dv, &err);
        (void)lf_gguf_get_bool(f, kv->key, &bv, &err);
        if (lf_gguf_get_str(f, kv->key, &s, &err) > 0) free(s);
        char **strs = NULL;
        int n = 0;
        if (lf_gguf_get_strs(f, kv->key, &strs, &n, &err) > 0) lf_gguf_free_strs(strs, n);
        if (lf_gguf_find_kv(f, kv->key) == NULL) abort();
    }
}

static void read_tensors(const lf_gguf_file *f) {
    volatile uint8_t sink = 0;
    uint16_t out[1024];
    for (int i = 0; i < f->n_tensors; i++) {
        const lf_gguf_tensor *t = &f->tensors[i];
        for (size_t b = 0; b < t->nbytes; b++) sink ^= t->data[b];
        size_t be = (size_t)t->type->block_elems, n = (size_t)t->ne[0];
        for (int d = 1; d < t->ndim; d++) n *= (size_t)t->ne[d];
        if (n > 1024) n = 1024 / be * be;
        n = n / be * be;
        if (lf_quant_row_bytes(t->type, n) > t->nbytes) abort();
        lf_quant_to_bf16(t->type, t->data, n, out);
        if (lf_gguf_find_tensor(f, t->name) == NULL) abort();
    }
    (void)sink;
}

/* The whole model path needs a file: one temporary file, rewritten per
 * input and removed at exit. */
static char path[64];
static void remove_file(void) { unlink(path); }

static void load_as_model(const uint8_t *data, size_t size) {
    if (!path[0]) {
        snprintf(path, sizeof path, "/tmp/lf_fuzz_gguf_%ld.gguf", (long)getpid());
        atexit(remove_file);
    }
    FILE *fp = fopen(path, "wb");
    if (!fp) return;
    size_t w = fwrite(data, 1, size, fp);
    fclose(fp);
    if (w != size) return;
    lf_model *m = NULL;
    lf_error err;
    if (lf_model_load_mode(path, LF_WEIGHTS_QUANT, &m, &err) == 0) lf_model_free(m);
    if (lf_model_load_mode(path, LF_WEIGHTS_BF16, &m, &err) == 0) lf_model_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    load_as_model(data, size);
    lf_gguf_file f;
    lf_error err;
    if (lf_gguf_parse(data, size, "fuzz.gguf", &f, &err) != 0) return 0;
    read_metadata(&f);
    read_tensors(&f);
    lf_config cfg;
    (void)lf_gguf_config(&f, &cfg, &err);
    lf_gguf_close(&f);
    return 0;
}
