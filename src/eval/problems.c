#include "eval/problems.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#define LF_EVAL_MAX_INDEX 1e9

/* A JSON number that is a whole number in [lo, hi]. Checked on valuedouble:
 * cJSON's valueint saturates silently, and converting an out-of-range
 * double to an integer type is undefined. */
static bool whole_in(const cJSON *v, double lo, double hi, double *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= lo && d <= hi) || d != floor(d)) return false;
    *out = d;
    return true;
}

static const cJSON *get(const cJSON *j, const char *key) { return cJSON_GetObjectItemCaseSensitive(j, key); }

void lf_eval_problem_clear(lf_eval_problem *p) {
    free(p->question);
    free(p->truth);
    p->question = p->truth = NULL;
}

int lf_eval_problem_parse(const char *line, size_t len, int default_index, lf_eval_problem *p, lf_error *err) {
    memset(p, 0, sizeof *p);
    cJSON *j = cJSON_ParseWithLength(line, len);
    const cJSON *q = get(j, "question"), *a = get(j, "true_answer"), *ix = get(j, "index");
    double index = default_index;
    int rc = -1;
    if (!cJSON_IsObject(j) || !cJSON_IsString(q) || !(cJSON_IsString(a) || cJSON_IsNumber(a))) {
        lf_fail(err, "expected a JSON object with string \"question\" and \"true_answer\"");
    } else if (ix && !whole_in(ix, -LF_EVAL_MAX_INDEX, LF_EVAL_MAX_INDEX, &index)) {
        lf_fail(err, "\"index\" must be an integer");
    } else {
        char buf[64];
        if (cJSON_IsNumber(a)) snprintf(buf, sizeof buf, "%.17g", a->valuedouble);
        p->index = (int)index;
        p->question = strdup(q->valuestring);
        p->truth = strdup(cJSON_IsString(a) ? a->valuestring : buf);
        if (p->question && p->truth) rc = 0;
        else lf_fail(err, "out of memory");
    }
    if (rc) lf_eval_problem_clear(p);
    cJSON_Delete(j);
    return rc;
}

/* A byte count or a duration: 0 when absent or out of range. */
static double size_field(const cJSON *j, const char *key) {
    double d = 0;
    return whole_in(get(j, key), 0, 9007199254740992.0 /* 2^53 */, &d) ? d : 0;
}

int lf_eval_result_parse(const char *line, size_t len, lf_eval_result *r) {
    memset(r, 0, sizeof *r);
    cJSON *j = cJSON_ParseWithLength(line, len);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return -1;
    }
    double d;
    if ((r->has_index = whole_in(get(j, "index"), -LF_EVAL_MAX_INDEX, LF_EVAL_MAX_INDEX, &d))) r->index = (int)d;
    if (whole_in(get(j, "run"), 1, LF_EVAL_MAX_INDEX, &d)) r->run = (int)d;
    if ((r->has_n_tokens = whole_in(get(j, "n_tokens"), 0, INT_MAX, &d))) r->n_tokens = (int)d;
    r->correct = cJSON_IsTrue(get(j, "correct"));
    const cJSON *fr = get(j, "finish_reason");
    r->truncated = cJSON_IsString(fr) && !strcmp(fr->valuestring, "length");
    r->kv_bytes = size_field(j, "kv_bytes");
    r->kv_in_use_peak = size_field(j, "kv_bytes_in_use_peak");
    r->kv_full_bytes = size_field(j, "kv_bytes_full");
    r->kv_full_in_use_peak = size_field(j, "kv_bytes_full_in_use_peak");
    r->kv_all_peak = size_field(j, "kv_bytes_all_peak");
    const cJSON *el = get(j, "elapsed_s");
    r->elapsed_s = cJSON_IsNumber(el) && isfinite(el->valuedouble) && el->valuedouble >= 0 ? el->valuedouble : 0;
    cJSON_Delete(j);
    return 0;
}
