/* The CUDA backend as a plugin: liblongflow-cuda.so (src/cuda, with its own
 * copy of the library code it calls) is opened with dlopen the first time a
 * CUDA entry point is used, i.e. only when --device cuda is asked for. The
 * functions below have the names and signatures of cuda/cuda_forward.h and
 * cuda/cuda_membw.h and forward to the plugin's, so the engine and the CLI
 * call them as before; the library and the binary link no CUDA library.
 *
 * Where the plugin is looked for, in order: $LF_CUDA_PLUGIN (a path), the
 * directory of the running program, the directory of the library holding
 * this code (liblongflow.so), then the dynamic linker's search (rpath,
 * LD_LIBRARY_PATH, system). When it cannot be opened, the error says why in
 * the dynamic linker's words, which name the missing library (for example
 * "libcudart.so.13: cannot open shared object file"). */
#define _GNU_SOURCE 1
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "cuda/cuda_forward.h"
#include "cuda/cuda_membw.h"

#define PLUGIN "liblongflow-cuda.so"

static struct {
    int (*backend_create)(const lf_model *, const lf_cuda_options *, lf_cuda_backend **, lf_error *);
    void (*backend_free)(lf_cuda_backend *);
    void (*backend_info)(const lf_cuda_backend *, lf_cuda_info *);
    size_t (*backend_peak_bytes)(const lf_cuda_backend *);
    int (*prefill)(lf_cuda_backend *, int, const int *, int, int, uint64_t, int *, float *, lf_error *);
    int (*decode)(lf_cuda_backend *, int, const int *, const int *, const int *, int *, float *, lf_error *);
    int (*entry_slots)(lf_cuda_backend *, int, int, int32_t *, int32_t *, lf_error *);
    int (*bench_fill)(lf_cuda_backend *, int, int, lf_error *);
    int (*profile_step)(lf_cuda_backend *, int, const int *, const int *, const int *, lf_cuda_step_profile *,
                        lf_error *);
    int (*membw_measure)(size_t, int, lf_cuda_membw_result *, lf_error *);
} api;

static void *handle;
static char load_error[512];
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* dir/PLUGIN if that file exists; returns whether it was opened, and keeps
 * the dynamic linker's message in why otherwise. */
static bool open_in(const char *file_in_dir, char *why, size_t n) {
    char path[PATH_MAX];
    const char *slash = strrchr(file_in_dir, '/');
    if (!slash) return false;
    int w = snprintf(path, sizeof path, "%.*s/%s", (int)(slash - file_in_dir), file_in_dir, PLUGIN);
    if (w < 0 || (size_t)w >= sizeof path || access(path, F_OK) != 0) return false;
    handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) snprintf(why, n, "%s", dlerror());
    return handle != NULL;
}

static void *sym(const char *name, char *why, size_t n) {
    void *p = dlsym(handle, name);
    if (!p && !why[0]) snprintf(why, n, "%s has no symbol %s (a plugin from another build?)", PLUGIN, name);
    return p;
}

static void load(void) {
    char why[400] = "";
    const char *env = getenv("LF_CUDA_PLUGIN");
    if (env && *env) {
        if (!(handle = dlopen(env, RTLD_NOW | RTLD_LOCAL))) snprintf(why, sizeof why, "%s", dlerror());
    } else {
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        Dl_info self;
        if (n > 0) {
            exe[n] = 0;
            open_in(exe, why, sizeof why);
        }
        if (!handle && !why[0] && dladdr((void *)load, &self) && self.dli_fname) open_in(self.dli_fname, why, sizeof why);
        if (!handle && !why[0] && !(handle = dlopen(PLUGIN, RTLD_NOW | RTLD_LOCAL)))
            snprintf(why, sizeof why, "%s", dlerror());
    }
    if (handle) {
        why[0] = 0;
        *(void **)&api.backend_create = sym("lf_cuda_backend_create", why, sizeof why);
        *(void **)&api.backend_free = sym("lf_cuda_backend_free", why, sizeof why);
        *(void **)&api.backend_info = sym("lf_cuda_backend_info", why, sizeof why);
        *(void **)&api.backend_peak_bytes = sym("lf_cuda_backend_peak_bytes", why, sizeof why);
        *(void **)&api.prefill = sym("lf_cuda_prefill", why, sizeof why);
        *(void **)&api.decode = sym("lf_cuda_decode", why, sizeof why);
        *(void **)&api.entry_slots = sym("lf_cuda_entry_slots", why, sizeof why);
        *(void **)&api.bench_fill = sym("lf_cuda_bench_fill", why, sizeof why);
        *(void **)&api.profile_step = sym("lf_cuda_profile_step", why, sizeof why);
        *(void **)&api.membw_measure = sym("lf_cuda_membw_measure", why, sizeof why);
        if (why[0]) {
            dlclose(handle);
            handle = NULL;
        }
    }
    if (!handle)
        snprintf(load_error, sizeof load_error, "--device cuda: cannot load the CUDA backend (%s): %s", PLUGIN, why);
}

static int loaded(lf_error *err) {
    pthread_once(&once, load);
    return handle ? 0 : lf_fail(err, "%s", load_error);
}

int lf_cuda_backend_create(const lf_model *m, const lf_cuda_options *o, lf_cuda_backend **out, lf_error *err) {
    *out = NULL;
    return loaded(err) ? -1 : api.backend_create(m, o, out, err);
}

/* The other entry points take a backend, which only a loaded plugin made. */
void lf_cuda_backend_free(lf_cuda_backend *b) {
    if (b) api.backend_free(b);
}

void lf_cuda_backend_info(const lf_cuda_backend *b, lf_cuda_info *info) { api.backend_info(b, info); }

size_t lf_cuda_backend_peak_bytes(const lf_cuda_backend *b) { return api.backend_peak_bytes(b); }

int lf_cuda_prefill(lf_cuda_backend *b, int entry, const int *tokens, int n, int budget, uint64_t seed,
                    int *first_token, float *logits, lf_error *err) {
    return api.prefill(b, entry, tokens, n, budget, seed, first_token, logits, err);
}

int lf_cuda_decode(lf_cuda_backend *b, int n, const int *entries, const int *tokens, const int *pos, int *out,
                   float *logits, lf_error *err) {
    return api.decode(b, n, entries, tokens, pos, out, logits, err);
}

int lf_cuda_entry_slots(lf_cuda_backend *b, int entry, int layer, int32_t *pos, int32_t *next_slot, lf_error *err) {
    return api.entry_slots(b, entry, layer, pos, next_slot, err);
}

int lf_cuda_bench_fill(lf_cuda_backend *b, int entry, int length, lf_error *err) {
    return api.bench_fill(b, entry, length, err);
}

int lf_cuda_profile_step(lf_cuda_backend *b, int n, const int *entries, const int *tokens, const int *pos,
                         lf_cuda_step_profile *p, lf_error *err) {
    return api.profile_step(b, n, entries, tokens, pos, p, err);
}

int lf_cuda_membw_measure(size_t bytes, int reps, lf_cuda_membw_result *out, lf_error *err) {
    return loaded(err) ? -1 : api.membw_measure(bytes, reps, out, err);
}
