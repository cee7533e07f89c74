/* Helpers shared by the cmocka tests: where the test data is, walking its
 * case folders, reading a file, formatting a path, a small seeded random
 * generator (splitmix64) for random inputs, decoding weight elements, and
 * the policy and one-layer KV cache the cache tests build. Header-only;
 * every function is static inline. */
#ifndef LF_TEST_UTIL_H
#define LF_TEST_UTIL_H

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <cjson/cJSON.h>

#include "kv/cache.h"
#include "model/config.h"

/* tests/data, or $LF_TEST_DATA (set by CTest). */
static inline const char *data_dir(void) {
    const char *d = getenv("LF_TEST_DATA");
    return d && *d ? d : "tests/data";
}

/* fn(dir) for every folder <data_dir()>/<sub>/<name> whose name starts with
 * prefix and that holds the file `needs` (NULL: any folder entry not starting
 * with '.'), each announced as "<label> <name>" on stdout; how many, or -1
 * when <data_dir()>/<sub> cannot be opened. */
static inline int for_each_data_dir(const char *sub, const char *prefix, const char *needs, const char *label,
                                    void (*fn)(const char *dir)) {
    char root[512];
    snprintf(root, sizeof root, "%s/%s", data_dir(), sub);
    DIR *d = opendir(root);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || strncmp(e->d_name, prefix, strlen(prefix)) != 0) continue;
        char dir[800], need[1000];
        snprintf(dir, sizeof dir, "%s/%s", root, e->d_name);
        snprintf(need, sizeof need, "%s/%s", dir, needs ? needs : "");
        struct stat st;
        if (needs && stat(need, &st) != 0) continue;
        printf("%s %s\n", label, e->d_name);
        fn(dir);
        n++;
    }
    closedir(d);
    return n;
}

/* Whole file as a malloc'd NUL-terminated string, or NULL. */
static inline char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) n = 0;
    b[n] = 0;
    fclose(f);
    return b;
}

/* The JSON document in a file, or NULL when the file cannot be read or is
 * not JSON. */
static inline cJSON *read_json(const char *path) {
    char *text = slurp(path);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    free(text);
    return j;
}

/* printf into a malloc'd string. */
static inline char *fmt(const char *f, ...) {
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(NULL, 0, f, ap);
    va_end(ap);
    char *s = malloc((size_t)n + 1);
    va_start(ap, f);
    vsnprintf(s, (size_t)n + 1, f, ap);
    va_end(ap);
    return s;
}

/* Seeded random numbers: set rng to choose the stream. */
static uint64_t rng = 1;
static inline uint64_t next_u64(void) {
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static inline double urand(void) { return (double)(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
static inline float frand(float lo, float hi) { return lo + (hi - lo) * (float)urand(); }
static inline int irand(int n) { return (int)(urand() * n); }

/* Random queries q [nq] scaled by qscale, then keys and values k, v [nkv]
 * drawn in turn, all from U(-1, 1) of rng. */
static inline void rand_qkv(float *q, float *k, float *v, size_t nq, size_t nkv, float qscale) {
    for (size_t i = 0; i < nq; i++) q[i] = frand(-1, 1) * qscale;
    for (size_t i = 0; i < nkv; i++) {
        k[i] = frand(-1, 1);
        v[i] = frand(-1, 1);
    }
}

/* Element i of a float32, bfloat16 or float16 array, decoded here (not with
 * the library's fp.h) into a double. */
static inline double elem_value(const void *data, lf_dtype dt, size_t i) {
    if (dt == LF_DTYPE_F32) {
        float f;
        memcpy(&f, (const char *)data + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, (const char *)data + 2 * i, 2);
    if (dt == LF_DTYPE_BF16) {
        uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}

/* A model shape for KV-cache tests: n_layers, H query heads, G KV heads of hd. */
static inline lf_config shape(int n_layers, int H, int G, int hd) {
    lf_config c;
    memset(&c, 0, sizeof c);
    c.n_layers = n_layers;
    c.n_heads = H;
    c.n_kv_heads = G;
    c.head_dim = hd;
    c.hidden_size = H * hd;
    return c;
}

/* The policy defaults with kind, budget and the cache's dtype set. */
static inline lf_policy_config policy_config(lf_policy_kind kind, int budget, lf_kv_dtype dt) {
    lf_policy_config pc;
    lf_policy_config_default(&pc);
    pc.kind = kind;
    pc.budget = budget;
    pc.kv_dtype = dt;
    return pc;
}

/* An empty one-layer cache (H query heads, G KV heads of hd) of policy kind
 * with budget B, of dtype dt: lf_kv_cache_init's result. */
static inline int layer_cache(lf_kv_cache *c, int H, int G, int hd, lf_policy_kind kind, int B, lf_kv_dtype dt,
                              lf_error *err) {
    lf_config cfg = shape(1, H, G, hd);
    lf_policy_config pc = policy_config(kind, B, dt);
    return lf_kv_cache_init(c, &cfg, &pc, B, err);
}

/* Index of the largest value (the first on ties). */
static inline int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* ||got - ref|| / ||ref|| in double (||got - ref|| when ref is 0; inf on NaN). */
static inline double rel_l2(const float *got, const float *ref, int n) {
    double d = 0, r = 0;
    for (int i = 0; i < n; i++) {
        double e = (double)got[i] - (double)ref[i];
        d += e * e;
        r += (double)ref[i] * ref[i];
    }
    if (isnan(d)) return INFINITY;
    return r > 0 ? sqrt(d / r) : sqrt(d);
}

#endif
