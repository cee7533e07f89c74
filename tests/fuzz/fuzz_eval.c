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
    if (lf_eval_problem_parse((const char *)data, size, -1, &p, &err) == 0) {
        if (!p.question || !p.truth) abort();
        lf_eval_problem_clear(&p);
    }
    lf_eval_result r;
    if (lf_eval_result_parse((const char *)data, size, &r) == 0 && (r.n_tokens < 0 || r.run < 0)) abort();
    return 0;
}
