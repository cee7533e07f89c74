/* Helpers shared by the cmocka tests: where the test data is, reading a
 * file, formatting a path, and a small seeded random generator (splitmix64)
 * for random inputs. Header-only; every function is static inline. */
#ifndef LF_TEST_UTIL_H
#define LF_TEST_UTIL_H

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/config.h"

/* tests/data, or $LF_TEST_DATA (set by CTest). */
static inline const char *data_dir(void) {
    const char *d = getenv("LF_TEST_DATA");
    return d && *d ? d : "tests/data";
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
