/* See harness.h. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utf8proc.h>

#ifndef LF_FUZZ_SOURCE_DIR
#define LF_FUZZ_SOURCE_DIR "."
#endif

static char g_dir[256];

int lf_fuzz_split(const uint8_t *data, size_t size, lf_fuzz_part *parts, int max) {
    const size_t sl = strlen(LF_FUZZ_SEP);
    for (int i = 0; i < max; i++) parts[i] = (lf_fuzz_part){NULL, 0};
    int n = 0;
    size_t start = 0;
    for (size_t i = 0; n < max - 1 && i + sl <= size; i++)
        if (!memcmp(data + i, LF_FUZZ_SEP, sl)) {
            parts[n++] = (lf_fuzz_part){data + start, i - start};
            start = i + sl;
            i = start - 1;
        }
    if (n < max) parts[n++] = (lf_fuzz_part){data + start, size - start};
    return n;
}

static void remove_dir(const char *dir) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "fuzz: could not remove %s\n", dir);
}

static void cleanup(void) {
    if (g_dir[0]) remove_dir(g_dir);
}

const char *lf_fuzz_dir(void) {
    if (g_dir[0]) return g_dir;
    struct stat st;
    const char *base = getenv("LF_FUZZ_SCRATCH");
    if (!base || !*base) base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
    snprintf(g_dir, sizeof g_dir, "%s/lf_fuzz_XXXXXX", base);
    if (!mkdtemp(g_dir)) {
        perror("fuzz: mkdtemp");
        abort();
    }
    atexit(cleanup);
    return g_dir;
}

static char *join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = malloc(n);
    if (!s) abort();
    snprintf(s, n, "%s/%s", a, b);
    return s;
}

void lf_fuzz_put(const char *name, const uint8_t *data, size_t size) {
    char *path = join(lf_fuzz_dir(), name);
    if (!data) {
        unlink(path);
        free(path);
        return;
    }
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f)) {
        perror(path);
        abort();
    }
    free(path);
}

char *lf_fuzz_cstr(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) abort();
    if (size) memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

const char *lf_fuzz_source_dir(void) {
    const char *e = getenv("LF_SOURCE_DIR");
    return e && *e ? e : LF_FUZZ_SOURCE_DIR;
}

char *lf_fuzz_stage(const char *sub, const char *const *srcs, const char *const *dsts, int n) {
    char *dir = join(lf_fuzz_dir(), sub);
    if (mkdir(dir, 0700) && access(dir, W_OK)) {
        perror(dir);
        abort();
    }
    for (int i = 0; i < n; i++) {
        char *src = join(lf_fuzz_source_dir(), srcs[i]), *dst = join(dir, dsts[i]);
        size_t l = strlen(src);
        const char *tool = l > 3 && !strcmp(src + l - 3, ".xz") ? "xz -dc" : "cat";
        size_t cl = l + strlen(dst) + 32;
        char *cmd = malloc(cl);
        if (!cmd) abort();
        snprintf(cmd, cl, "%s '%s' > '%s'", tool, src, dst);
        if (system(cmd) != 0) {
            fprintf(stderr, "fuzz: cannot stage %s (set LF_SOURCE_DIR to the repository)\n", src);
            abort();
        }
        free(cmd);
        free(src);
        free(dst);
    }
    return dir;
}

void lf_fuzz_note(const char *what, const char *msg) {
    static int verbose = -1;
    if (verbose < 0) {
        const char *e = getenv("LF_FUZZ_VERBOSE");
        verbose = e && *e && strcmp(e, "0");
    }
    if (verbose) fprintf(stderr, "%s: %s\n", what, msg);
}

bool lf_fuzz_valid_utf8(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate(s + i, (utf8proc_ssize_t)(n - i), &c);
        if (k <= 0) return false;
        i += (size_t)k;
    }
    return true;
}

bool lf_fuzz_is_nfc(const uint8_t *s, size_t n) {
    utf8proc_uint8_t *out = NULL;
    utf8proc_ssize_t m = utf8proc_map(s, (utf8proc_ssize_t)n, &out, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    bool same = m >= 0 && (size_t)m == n && (n == 0 || !memcmp(out, s, n));
    free(out);
    return same;
}
