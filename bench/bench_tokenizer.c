/* Tokenizer benchmark: load time of tokenizer.json and single-thread
 * encoding throughput over a corpus (JSON lines with a "text" or "question"
 * field, or several such files). bench/bench_tokenizer.py runs it beside the
 * Python `tokenizers` library on the same text.
 *
 * usage: bench_tokenizer --model DIR --corpus FILE [--corpus FILE ...]
 *                        [--loads N] [--reps N] [--json] */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "core/timer.h"
#include "tokenizer/tokenizer.h"

typedef struct text {
    char *s;
    size_t n;
} text;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int add_corpus(const char *path, text **v, int *n, int *cap) {
    char *data;
    size_t len;
    lf_error err = {{0}};
    if (lf_read_file(path, &data, &len, &err)) {
        fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
        return -1;
    }
    char *save = NULL;
    for (char *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *t = j ? cJSON_GetObjectItem(j, "text") : NULL;
        if (!cJSON_IsString(t)) t = j ? cJSON_GetObjectItem(j, "question") : NULL;
        if (cJSON_IsString(t)) {
            if (*n == *cap) {
                *cap = *cap ? *cap * 2 : 256;
                *v = realloc(*v, (size_t)*cap * sizeof **v);
            }
            (*v)[*n].s = strdup(t->valuestring);
            (*v)[*n].n = strlen(t->valuestring);
            (*n)++;
        }
        cJSON_Delete(j);
    }
    free(data);
    return 0;
}

int main(int argc, char **argv) {
    const char *model = NULL;
    const char *corpora[16];
    int n_corpora = 0, loads = 5, reps = 5;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "--corpus") && i + 1 < argc && n_corpora < 16) corpora[n_corpora++] = argv[++i];
        else if (!strcmp(argv[i], "--loads") && i + 1 < argc) loads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json")) json = 1;
        else {
            fprintf(stderr, "usage: bench_tokenizer --model DIR --corpus FILE [--corpus FILE ...] [--loads N] "
                            "[--reps N] [--json]\n");
            return 2;
        }
    }
    if (!model || !n_corpora || loads < 1 || reps < 1) {
        fprintf(stderr, "bench_tokenizer: --model and --corpus are required\n");
        return 2;
    }
    text *texts = NULL;
    int n = 0, cap = 0;
    for (int i = 0; i < n_corpora; i++)
        if (add_corpus(corpora[i], &texts, &n, &cap)) return 1;
    size_t bytes = 0;
    for (int i = 0; i < n; i++) bytes += texts[i].n;

    lf_error err = {{0}};
    double *lt = calloc((size_t)loads, sizeof *lt);
    lf_tokenizer *t = NULL;
    for (int i = 0; i < loads; i++) {
        lf_tokenizer_free(t);
        double t0 = lf_now_ms();
        if (lf_tokenizer_load(model, &t, &err)) {
            fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
            return 1;
        }
        lt[i] = lf_now_ms() - t0;
    }
    qsort(lt, (size_t)loads, sizeof *lt, cmp_double);
    double load_ms = lt[loads / 2];

    /* encode: first pass on the freshly loaded tokenizer, then the best of
     * the repetitions */
    double first = 0, best = 1e30;
    long tokens = 0;
    for (int r = 0; r < reps; r++) {
        long tk = 0;
        double t0 = lf_now_ms();
        for (int i = 0; i < n; i++) {
            int *ids, m;
            if (lf_tokenizer_encode(t, texts[i].s, texts[i].n, LF_TOK_PARSE_SPECIAL, &ids, &m, &err)) {
                fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
                return 1;
            }
            tk += m;
            free(ids);
        }
        double ms = lf_now_ms() - t0;
        if (r == 0) first = ms;
        if (ms < best) best = ms;
        tokens = tk;
    }
    double mbs_first = bytes / 1e6 / (first / 1e3), mbs_best = bytes / 1e6 / (best / 1e3);
    if (json) {
        printf("{\"load_ms\": %.2f, \"encode_first_mb_s\": %.3f, \"encode_mb_s\": %.3f, \"bytes\": %zu, "
               "\"texts\": %d, \"tokens\": %ld}\n",
               load_ms, mbs_first, mbs_best, bytes, n, tokens);
    } else {
        printf("load (median of %d): %.1f ms\n", loads, load_ms);
        printf("encode: %d texts, %zu bytes, %ld tokens\n", n, bytes, tokens);
        printf("  first pass: %.2f MB/s   best of %d: %.2f MB/s\n", mbs_first, reps, mbs_best);
    }
    lf_tokenizer_free(t);
    for (int i = 0; i < n; i++) free(texts[i].s);
    free(texts);
    free(lt);
    return 0;
}
