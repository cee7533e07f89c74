/* eval's JSONL line parsers (src/eval/problems.c) on hand-written lines,
 * including the inputs fuzzing found (tests/fuzz/corpus/eval/regress_*). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "eval/problems.h"

static int parse_problem(const char *line, lf_eval_problem *p, lf_error *err) {
    return lf_eval_problem_parse(line, strlen(line), 42, p, err);
}

static int parse_result(const char *line, lf_eval_result *r) {
    return lf_eval_result_parse(line, strlen(line), r);
}

static void test_problem(void **state) {
    (void)state;
    lf_eval_problem p;
    lf_error err;
    assert_int_equal(parse_problem("{\"index\": 7, \"question\": \"1+1?\", \"true_answer\": 2}", &p, &err), 0);
    assert_int_equal(p.index, 7);
    assert_string_equal(p.question, "1+1?");
    assert_string_equal(p.truth, "2");
    lf_eval_problem_clear(&p);
    assert_int_equal(parse_problem("{\"question\": \"q\", \"true_answer\": \"x\"}", &p, &err), 0);
    assert_int_equal(p.index, 42); /* the default */
    lf_eval_problem_clear(&p);
    assert_int_equal(parse_problem("{\"question\": \"q\"}", &p, &err), -1);
    assert_non_null(strstr(err.msg, "true_answer"));
    assert_int_equal(parse_problem("[\"question\", \"true_answer\"]", &p, &err), -1);
    assert_int_equal(parse_problem("{\"index\": 1e300, \"question\": \"q\", \"true_answer\": 1}", &p, &err), -1);
    assert_non_null(strstr(err.msg, "index"));
    assert_int_equal(parse_problem("{\"index\": 1.5, \"question\": \"q\", \"true_answer\": 1}", &p, &err), -1);
    assert_int_equal(parse_problem("{\"index\": \"3\", \"question\": \"q\", \"true_answer\": 1}", &p, &err), -1);
}

static void test_result(void **state) {
    (void)state;
    lf_eval_result r;
    assert_int_equal(parse_result("{\"index\": 3, \"run\": 2, \"correct\": true, \"n_tokens\": 912, "
                                  "\"finish_reason\": \"length\", \"kv_bytes\": 4096, \"elapsed_s\": 1.5}", &r), 0);
    assert_true(r.has_index);
    assert_int_equal(r.index, 3);
    assert_int_equal(r.run, 2);
    assert_true(r.correct);
    assert_true(r.truncated);
    assert_true(r.has_n_tokens);
    assert_int_equal(r.n_tokens, 912);
    assert_true(r.kv_bytes == 4096.0);
    assert_true(r.elapsed_s == 1.5);
    assert_int_equal(parse_result("{\"index\": 4, \"correct\": tr", &r), -1); /* cut by an interruption */
    assert_int_equal(parse_result("{\"settings\": {}}", &r), 0);
    assert_false(r.has_index);
}

/* Found by fuzz_eval: numbers out of range were converted to integers
 * (undefined behaviour: n_tokens 1e308 cast to long, kv_bytes 1e300 to
 * size_t, run 1e300 saturated by cJSON to INT_MAX and then incremented). Now
 * such a field counts as absent. */
static void test_result_out_of_range(void **state) {
    (void)state;
    lf_eval_result r;
    assert_int_equal(parse_result("{\"index\": 3,  \"n_tokens\":01e308}", &r), 0);
    assert_true(r.has_index);
    assert_false(r.has_n_tokens);
    assert_int_equal(r.n_tokens, 0);
    assert_int_equal(parse_result("{\"index\": 2, \"run\": 1e300, \"n_tokens\": -5, \"kv_bytes\": 1e300, "
                                  "\"elapsed_s\": -1}", &r), 0);
    assert_int_equal(r.run, 0);
    assert_false(r.has_n_tokens);
    assert_true(r.kv_bytes == 0.0);
    assert_true(r.elapsed_s == 0.0);
    assert_int_equal(parse_result("{\"index\": -1e999, \"n_tokens\": 5}", &r), 0);
    assert_false(r.has_index);
    assert_int_equal(parse_result("{\"index\": 2.5}", &r), 0);
    assert_false(r.has_index);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_problem),
        cmocka_unit_test(test_result),
        cmocka_unit_test(test_result_out_of_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
