/* The lines of eval's files, parsed in one place for `longflow eval` and its
 * fuzz harness: a problem of a benchmark JSONL ({"index","question",
 * "true_answer"}) and a record of a results JSONL. */
#ifndef LF_EVAL_PROBLEMS_H
#define LF_EVAL_PROBLEMS_H

#include <stdbool.h>
#include <stddef.h>
#include "longflow.h"

typedef struct lf_eval_problem {
    int index;      /* "index", or the default given */
    char *question; /* malloc'd */
    char *truth;    /* malloc'd; a numeric true_answer printed with %.17g */
} lf_eval_problem;

/* Parse one benchmark line (len bytes, need not be NUL-terminated); an
 * "index" must be an integer of at most 1e9 in magnitude. On failure err
 * says what is wrong with the line and nothing is allocated. */
int lf_eval_problem_parse(const char *line, size_t len, int default_index, lf_eval_problem *p, lf_error *err);
void lf_eval_problem_clear(lf_eval_problem *p);

/* One record of a results file. Every number is checked before it is
 * converted: a value that is not a number or is out of range for its field
 * counts as absent (0, or has_* false). */
typedef struct lf_eval_result {
    bool has_index;
    int index;         /* an integer of at most 1e9 in magnitude */
    int run;           /* 1.. (0: absent) */
    bool correct;
    bool truncated;    /* finish_reason "length" */
    bool has_n_tokens;
    int n_tokens;      /* 0 .. INT_MAX */
    double kv_bytes, kv_in_use_peak, kv_full_bytes, kv_full_in_use_peak, kv_all_peak; /* whole, 0 .. 2^53 */
    double elapsed_s;  /* finite, >= 0 */
} lf_eval_result;

/* Parse one results line; -1 when it is not a JSON object (a line cut by an
 * interruption, say). */
int lf_eval_result_parse(const char *line, size_t len, lf_eval_result *r);

#endif
