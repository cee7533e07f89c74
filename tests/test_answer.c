/* \boxed{} extraction and answer normalisation, on cases written by hand
 * from the formats the benchmarks in ../shared/datasets use. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "eval/answer.h"

static void expect_boxed(const char *text, const char *want) {
    char *got = lf_extract_boxed(text);
    if (!want) {
        assert_null(got);
        return;
    }
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_extract(void **state) {
    (void)state;
    expect_boxed("so the answer is \\boxed{204}.", "204");
    expect_boxed("\\boxed{1} then \\boxed{2}", "2");                       /* the last one */
    expect_boxed("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}");                  /* nested braces */
    expect_boxed("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)");
    expect_boxed("\\boxed {42}", "42");
    expect_boxed("\\fbox{7}", "7");
    expect_boxed("no answer here", NULL);
    expect_boxed("\\boxed{12", NULL);                                       /* cut off */
    expect_boxed("\\boxed{a} and a broken \\boxed{b", "a");
    expect_boxed("\\boxed{\\{1,2\\}}", "\\{1,2\\}");                        /* escaped braces */
}

static void test_match(void **state) {
    (void)state;
    assert_true(lf_answers_match("\\dfrac{1}{2}", "\\frac{1}{2}"));
    assert_true(lf_answers_match("\\left( 3, \\frac{\\pi}{2} \\right)", "\\left( 3, \\frac{\\pi}{2} \\right)"));
    assert_true(lf_answers_match("(3,\\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"));
    assert_true(lf_answers_match("27", "27.0"));
    assert_true(lf_answers_match("1,234,567", "1234567"));
    assert_true(lf_answers_match("\\text{(B)}", "(B)"));
    assert_true(lf_answers_match("45^\\circ", "45"));
    assert_true(lf_answers_match("$18$", "18"));
    assert_true(lf_answers_match("  p - q ", "p-q"));
    assert_true(lf_answers_match("0.50", "0.5"));
    assert_true(lf_answers_match("18.", "18"));
    assert_false(lf_answers_match("28", "27.0"));
    assert_false(lf_answers_match("\\frac{1}{3}", "\\frac{1}{2}"));
    assert_false(lf_answers_match("1,23", "123"));  /* not a thousands separator */
    assert_false(lf_answers_match(NULL, "1"));
    assert_false(lf_answers_match("A", "B"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_extract),
        cmocka_unit_test(test_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
