/* libFuzzer harness for the Jinja interpreter (src/chat/jinja*.c): the input
 * is a template; it is parsed and, when it parses, rendered with a small
 * conversation. Any crash, sanitizer report, leak or hang is a bug: errors
 * must come back as lf_error, and the limits of chat/jinja.h must bound
 * time and memory. Seeds: tests/fuzz/corpus/jinja (the real templates). */
#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "chat/jinja.h"

static const char VARS[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
    "{\"role\": \"user\", \"content\": \"What is 2+2? {{ x }} <think>\"},"
    "{\"role\": \"assistant\", \"content\": \"<think>\\nadd\\n</think>\\n\\n4\","
    "\"tool_calls\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": {\"a\": [1, 2.5]}}}]},"
    "{\"role\": \"user\", \"content\": \"And 3+3?\"}],"
    "\"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"enable_thinking\": false}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lf_jinja *t = NULL;
    lf_error err;
    if (lf_jinja_parse((const char *)data, size, "fuzz", &t, &err)) return 0;
    cJSON *vars = cJSON_Parse(VARS);
    lf_jinja_var v[8];
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, vars) v[n++] = (lf_jinja_var){e->string, e, e->string[0] == 'm'};
    char *text = NULL;
    size_t len = 0, nmk = 0;
    lf_jinja_range *mk = NULL;
    if (lf_jinja_render(t, v, n, 1700000000, &text, &len, &mk, &nmk, &err) == 0) {
        /* the markup ranges are sorted, disjoint and inside the text */
        size_t at = 0;
        for (size_t i = 0; i < nmk; i++) {
            if (mk[i].start < at || mk[i].end <= mk[i].start || mk[i].end > len) abort();
            at = mk[i].end;
        }
    }
    free(text);
    free(mk);
    cJSON_Delete(vars);
    lf_jinja_free(t);
    return 0;
}
