/* eval's JSONL lines (src/eval/problems.c): the input is one line, parsed
 * both as a benchmark problem and as a results line. */
#include <stdint.h>
#include <stdlib.h>

#include "eval/problems.h"
#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lf_eval_problem p;
    lf_error err;
    if (lf_eval_problem_parse((const char *)data, size, &p, &err) == 0) {
        if (!p.question || !p.truth) abort();
        lf_eval_problem_clear(&p);
    }
    lf_eval_result r;
    (void)lf_eval_result_parse((const char *)data, size, &r);
    return 0;
}
