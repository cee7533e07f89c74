/* Fuzz harness of the KL base file parser of `longflow perplexity`
 * (src/eval/perplexity_base.c): any bytes are parsed or refused with a
 * message, never read past, never sized into a huge allocation. */
#include <stddef.h>
#include <stdint.h>

#include "eval/perplexity.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lf_ppl_base_header h;
    lf_ppl_result r;
    lf_error err;
    if (lf_ppl_base_parse("fuzz", data, size, &h, &r, &err) == 0) lf_ppl_result_free(&r);
    return 0;
}
