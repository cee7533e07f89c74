/* \boxed{} answer extraction and comparison (src/eval/answer.c).
 * Input: a generation, optionally followed by LF_FUZZ_SEP and a true answer.
 * Checked beyond "no crash": an answer always matches itself, and a
 * backslash-free answer with balanced braces comes back unchanged from
 * \boxed{answer}. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/answer.h"
#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Braces balanced and no backslash: \boxed{s} must give back s. */
static bool plain_balanced(const char *s) {
    int depth = 0;
    for (; *s; s++) {
        if (*s == '\\') return false;
        if (*s == '{') depth++;
        else if (*s == '}' && --depth < 0) return false;
    }
    return depth == 0;
}

static void check_boxed_round_trip(const char *s) {
    if (!plain_balanced(s)) return;
    size_t n = strlen(s);
    char *wrapped = malloc(n + 9);
    if (!wrapped) return;
    memcpy(wrapped, "\\boxed{", 7);
    memcpy(wrapped + 7, s, n);
    memcpy(wrapped + 7 + n, "}", 2);
    char *got = lf_extract_boxed(wrapped);
    if (!got || strcmp(got, s)) {
        fprintf(stderr, "\\boxed{%s} extracted as %s\n", s, got ? got : "(null)");
        abort();
    }
    free(got);
    free(wrapped);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lf_fuzz_part parts[2];
    lf_fuzz_split(data, size, parts, 2);
    char *text = lf_fuzz_cstr(parts[0].data, parts[0].size);
    char *truth = lf_fuzz_cstr(parts[1].data, parts[1].size);
    char *pred = lf_extract_boxed(text);
    if (pred) {
        char *norm = lf_normalize_answer(pred);
        free(norm);
        if (!lf_answers_match(pred, pred)) {
            fprintf(stderr, "answer %s does not match itself\n", pred);
            abort();
        }
        (void)lf_answers_match(pred, truth);
        (void)lf_answers_match(truth, pred);
    }
    check_boxed_round_trip(truth);
    free(pred);
    free(text);
    free(truth);
    return 0;
}
