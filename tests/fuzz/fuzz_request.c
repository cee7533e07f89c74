/* libFuzzer harness: the body parser/validator of POST /v1/chat/completions
 * and /v1/completions (src/server/request.c) on arbitrary bytes. The first
 * byte picks the endpoint. A body is either refused with an OpenAI-style
 * error (status 4xx, a message, a terminated param) or accepted
 * with values inside the documented ranges. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_accepted(const lf_api_request *r) {
    if (r->chat && (r->n_msgs < 1 || !r->msgs)) abort();
    if (!r->chat && !r->prompt_ids && (!r->prompt || !r->prompt[0])) abort();
    for (int i = 0; i < r->n_prompt_ids; i++)
        if (r->prompt_ids[i] < 0) abort();
    if (r->max_tokens < 0 || r->max_tokens > 10000000) abort();
    const lf_sampling *s = &r->sampling;
    if (!(s->temperature >= 0 && s->temperature <= 2) || !(s->top_p > 0 && s->top_p <= 1) ||
        !(s->min_p >= 0 && s->min_p < 1) || !(s->repetition_penalty > 0) || s->top_k < 0)
        abort();
    if (r->n_stop < 0 || r->n_stop > LF_API_MAX_STOP) abort();
    for (int i = 0; i < r->n_stop; i++)
        if (!r->stop[i] || !r->stop[i][0] || strlen(r->stop[i]) > LF_API_MAX_STOP_BYTES) abort();
    if (r->policy == LF_POLICY_FULL ? r->budget != 0 : r->budget <= 0) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    bool chat = data[0] & 1;
    lf_api_defaults d = {.model_name = "tiny-reasoner", .max_tokens = 16, .policy = LF_POLICY_FULL};
    lf_sampling_default(&d.sampling);
    /* the body as the server holds it: its own buffer, not NUL-terminated past size */
    char *body = malloc(size - 1 ? size - 1 : 1);
    if (!body) return 0;
    memcpy(body, data + 1, size - 1);
    lf_api_request r;
    lf_api_error e;
    memset(&e, 0, sizeof e);
    if (lf_api_parse(body, size - 1, chat, &d, &r, &e) == 0) {
        check_accepted(&r);
        lf_api_request_free(&r);
    } else {
        if (e.status < 400 || e.status > 499 || !e.message[0] || !e.type[0]) abort();
        if (memchr(e.param, 0, sizeof e.param) == NULL || memchr(e.message, 0, sizeof e.message) == NULL) abort();
    }
    free(body);
    return 0;
}
