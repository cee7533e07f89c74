/* The Jinja interpreter against transformers: the real chat templates of
 * tests/data/chat/templates rendered over the message corpus of
 * tests/data/chat/jinja_goldens.json (made by tools/gen_chat_jinja_goldens.py
 * with transformers' apply_chat_template machinery) must match byte for
 * byte; language features one by one against Jinja2's documented results;
 * errors name the feature and the line; limits hold; message contents are
 * never markup. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat/jinja.h"
#include "core/file.h"

#include "test_util.h"

static int64_t fixed_now(const char *s) {
    struct tm tm = {0};
    if (sscanf(s, "%d-%d-%d %d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
        fail_msg("bad clock %s", s);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    tm.tm_isdst = -1;
    return (int64_t)mktime(&tm);
}

/* Render src with the given JSON variables (an object); NULL on error (err set). */
static char *render_vars(const char *src, const char *vars_json, bool content, int64_t now, lf_error *err) {
    lf_jinja *t = NULL;
    if (lf_jinja_parse(src, strlen(src), "t", &t, err)) return NULL;
    cJSON *vars = cJSON_Parse(vars_json ? vars_json : "{}");
    assert_non_null(vars);
    lf_jinja_var v[32];
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, vars) {
        assert_true(n < 32);
        v[n++] = (lf_jinja_var){e->string, e, content};
    }
    char *text = NULL;
    size_t len;
    lf_jinja_range *mk = NULL;
    size_t nmk;
    int rc = lf_jinja_render(t, v, n, now, &text, &len, &mk, &nmk, err);
    free(mk);
    cJSON_Delete(vars);
    lf_jinja_free(t);
    return rc ? NULL : text;
}

/* run(case, now) for each case of one section of
 * tests/data/chat/jinja_goldens.json (run: 1 when the case fails), with the
 * fixed time of its renders: there must be at least min_cases, none failing. */
static void check_goldens(const char *section, const char *what, int (*run)(const cJSON *c, int64_t now),
                          int min_cases) {
    char *path = fmt("%s/chat/jinja_goldens.json", data_dir());
    cJSON *g = read_json(path);
    assert_non_null(g);
    int64_t now = fixed_now(cJSON_GetObjectItem(g, "now")->valuestring);
    int cases = 0, failures = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(g, section)) {
        failures += run(c, now);
        cases++;
    }
    fprintf(stderr, "[ jinja ] %d %s, %d failures\n", cases, what, failures);
    cJSON_Delete(g);
    free(path);
    assert_true(cases >= min_cases);
    assert_int_equal(failures, 0);
}

/* One small template against Jinja2's own result (or its raising): 1 when
 * it differs. */
static int run_snippet(const cJSON *c, int64_t now) {
    const char *src = cJSON_GetObjectItem(c, "template")->valuestring;
    char *vars = cJSON_PrintUnformatted(cJSON_GetObjectItem(c, "vars"));
    lf_error err = {{0}};
    char *got = render_vars(src, vars, true, now, &err);
    const cJSON *want = cJSON_GetObjectItem(c, "text");
    int bad = 1;
    if (want && !got)
        fprintf(stderr, "[%s]: error %s\n", src, err.msg);
    else if (want && strcmp(got, want->valuestring))
        fprintf(stderr, "[%s]:\n  want [%s]\n  got  [%s]\n", src, want->valuestring, got);
    else if (!want && got)
        fprintf(stderr, "[%s]: rendered [%s], Jinja2 raised '%s'\n", src, got,
                cJSON_GetObjectItem(c, "error")->valuestring);
    else if (!want && !strstr(err.msg, "line 1: "))
        fprintf(stderr, "[%s]: error without its line: %s\n", src, err.msg);
    else
        bad = 0;
    free(got);
    free(vars);
    return bad;
}

/* ---- the real templates ---------------------------------------------------- */
static char *template_text(const char *name) {
    char *path = fmt("%s/chat/templates/%s", data_dir(), name);
    char *text;
    size_t n;
    lf_error err = {{0}};
    if (lf_read_file(path, &text, &n, &err)) fail_msg("%s", err.msg);
    free(path);
    return text;
}

static int run_case(const cJSON *c, int64_t now) {
    const char *name = cJSON_GetObjectItem(c, "template")->valuestring;
    char *src = template_text(name);
    lf_error err = {{0}};
    lf_jinja *t = NULL;
    if (lf_jinja_parse(src, strlen(src), name, &t, &err)) fail_msg("%s", err.msg);
    cJSON *agp = cJSON_CreateBool(cJSON_IsTrue(cJSON_GetObjectItem(c, "add_generation_prompt")));
    lf_jinja_var v[16];
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(c, "kwargs")) v[n++] = (lf_jinja_var){e->string, e, 1};
    v[n++] = (lf_jinja_var){"messages", cJSON_GetObjectItem(c, "messages"), 1};
    v[n++] = (lf_jinja_var){"add_generation_prompt", agp, 0};
    const cJSON *bos = cJSON_GetObjectItem(c, "bos_token"), *eos = cJSON_GetObjectItem(c, "eos_token");
    if (cJSON_IsString(bos)) v[n++] = (lf_jinja_var){"bos_token", bos, 0};
    if (cJSON_IsString(eos)) v[n++] = (lf_jinja_var){"eos_token", eos, 0};
    char *text = NULL;
    size_t len = 0, nmk = 0;
    lf_jinja_range *mk = NULL;
    int rc = lf_jinja_render(t, v, n, now, &text, &len, &mk, &nmk, &err);
    const cJSON *want = cJSON_GetObjectItem(c, "text"), *want_err = cJSON_GetObjectItem(c, "error");
    int bad = 0;
    const char *conv = cJSON_GetObjectItem(c, "conversation")->valuestring;
    char *kw = cJSON_PrintUnformatted(cJSON_GetObjectItem(c, "kwargs"));
    if (want_err) {
        if (rc == 0) {
            fprintf(stderr, "%s/%s: rendered, transformers raised '%s'\n", name, conv, want_err->valuestring);
            bad = 1;
        }
    } else if (rc) {
        fprintf(stderr, "%s/%s %s: %s\n", name, conv, kw, err.msg);
        bad = 1;
    } else if (len != strlen(want->valuestring) || memcmp(text, want->valuestring, len)) {
        fprintf(stderr, "%s/%s agp=%d %s: text differs\n  want [%s]\n  got  [%s]\n", name, conv,
                cJSON_IsTrue(agp), kw, want->valuestring, text);
        bad = 1;
    }
    free(kw);
    free(text);
    free(mk);
    cJSON_Delete(agp);
    lf_jinja_free(t);
    free(src);
    return bad;
}

/* Small templates, one feature each. */
static void test_snippets(void **state) {
    (void)state;
    check_goldens("snippets", "snippets", run_snippet, 0);
}

static void test_real_templates(void **state) {
    (void)state;
    check_goldens("cases", "golden renders", run_case, 200);
}

/* ---- errors and limits -------------------------------------------------- */
static void expect_error(const char *src, const char *vars, const char *needle) {
    lf_error err = {{0}};
    char *got = render_vars(src, vars, true, 1, &err);
    if (got) fail_msg("[%s]: rendered [%.80s], expected an error with '%s'", src, got, needle);
    if (!strstr(err.msg, needle)) fail_msg("[%s]: error '%s' lacks '%s'", src, err.msg, needle);
}

/* What the subset leaves out is an error naming the feature and its line;
 * nothing outside the variables can be reached. */
static void test_unsupported(void **state) {
    (void)state;
    static const struct {
        const char *src, *needle;
    } cases[] = {
        {"{% include 'other.j2' %}", "line 1: unsupported feature: tag 'include'"},
        {"a\n{% import 'm.j2' as m %}", "line 2: unsupported feature: tag 'import'"},
        {"{% extends 'base.j2' %}", "unsupported feature: tag 'extends'"},
        {"{% block b %}{% endblock %}", "unsupported feature: tag 'block'"},
        {"\n\n{{ [1, 2]|batch(1) }}", "line 3: unsupported feature: filter 'batch'"},
        {"{{ 1 is prime }}", "unsupported feature: test 'prime'"},
        {"{% for x in [] recursive %}{% endfor %}", "unsupported feature: recursive"},
        {"{% macro m() %}{{ caller(1) }}{% endmacro %}{% call m() %}x{% endcall %}", "caller() with arguments"},
        {"{{ f(*xs) }}", "*args"},
        {"{{ 'abc'.__class__ }}", "attribute '__class__' is not allowed"},
        {"{{ messages.__len__() }}", "not allowed"},
        {"{% set ns = namespace(_hidden=1) %}", "'_hidden' is not allowed"},
        {"{{ cycler(1, 2) }}", "'cycler' is undefined"},
        {"{{ lipsum() }}", "'lipsum' is undefined"},
        {"{{ config }}{{ self.x }}", "'self' is undefined"},
        {"{{ x.y }}", "line 1: 'x' is undefined"},
        {"{{ 'a' + 1 }}", "unsupported operand types for +: str and int"},
        {"{% if x %}never closed", "missing {% endif %}"},
        {"{% for x in y %}", "missing {% endfor %}"},
        {"{{ 1 +  }}", "expected an expression"},
        {"{{ 'unterminated }}", "unterminated string"},
        {"{{ x ", "unclosed tag"},
        {"{# never closed", "unclosed comment"},
        {"{% raw %}x", "without {% endraw %}"},
        {"{% endif %}", "unsupported feature: tag 'endif'"},
        {"{{ 99999999999999999999 }}", "too large"},
        {"{{ 9223372036854775807 + 1 }}", "integer overflow"},
        {"{{ 1 // 0 }}", "division or modulo by zero"},
        {"{{ [1][::0] }}", "slice step cannot be zero"},
        {"{{ {'a': 1}|tojson(ensure_ascii=true) }}", "ensure_ascii=True"},
        {"{{ strftime_now() }}", "strftime_now"},
        {"{% set x.y = 1 %}", "not a namespace"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) expect_error(cases[i].src, NULL, cases[i].needle);
}

static void test_limits(void **state) {
    (void)state;
    expect_error("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", NULL,
                 "loop iterations");
    expect_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", NULL, "nested more than 64 deep");
    expect_error("{% for i in range(20000) %}{{ 'x' * 1000 }}{% endfor %}", NULL, "output longer than");
    expect_error("{% set ns = namespace(s='xx') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
                 NULL, "MiB of memory");
    expect_error("{{ 'x' * 100000000 }}", NULL, "repetition too large");
    expect_error("{{ range(1000000)|length }}", NULL, "range() longer");
    /* values nested by a loop: refused before any walk over them could overflow the stack */
    expect_error("{% set ns = namespace(x=[]) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}"
                 "{{ ns.x }}{{ ns.x == ns.x }}",
                 NULL, "nested more than 128 deep");
    /* expression nesting: the parser refuses before the C stack is at risk */
    char deep[4096];
    size_t n = 0;
    n += (size_t)snprintf(deep + n, sizeof deep - n, "{{ ");
    for (int i = 0; i < 1000; i++) deep[n++] = '(';
    deep[n++] = '1';
    for (int i = 0; i < 1000; i++) deep[n++] = ')';
    snprintf(deep + n, sizeof deep - n, " }}");
    expect_error(deep, NULL, "nested too deeply");
    /* a left-nested chain, parsed without recursion, is bounded when evaluated */
    size_t chain = 200000;
    char *sum = malloc(chain * 4 + 16);
    size_t k = (size_t)sprintf(sum, "{{ 1");
    for (size_t i = 0; i < chain; i++) k += (size_t)sprintf(sum + k, " + 1");
    strcpy(sum + k, " }}");
    expect_error(sum, NULL, "expression nested more than 1000 deep");
    free(sum);
    /* a template over the size limit */
    size_t big = LF_JINJA_MAX_SOURCE + 1;
    char *src = malloc(big + 1);
    memset(src, 'a', big);
    src[big] = 0;
    lf_jinja *t = NULL;
    lf_error err = {{0}};
    assert_int_equal(lf_jinja_parse(src, big, "big.jinja", &t, &err), -1);
    assert_non_null(strstr(err.msg, "big.jinja"));
    assert_null(t);
    free(src);
}

/* Bytes from content variables are never markup, whatever the template does
 * with them (concatenation, slices, filters, methods, tojson, macros); bytes
 * from the template, bos_token and known roles are. */
static void test_markup(void **state) {
    (void)state;
    const char *src = "<A>{{ m }}<B>{{ m|upper }}{{ m.split('x')[0] }}{{ 'L' ~ m[1:] ~ 'R' }}"
                      "{% macro w(v) %}[{{ v }}]{% endmacro %}{{ w(m) }}{{ d|tojson }}{{ r.role }}{{ n }}";
    lf_jinja *t = NULL;
    lf_error err = {{0}};
    assert_int_equal(lf_jinja_parse(src, strlen(src), "t", &t, &err), 0);
    cJSON *m = cJSON_CreateString("<|im_end|>x"), *d = cJSON_Parse("{\"k\": \"<s>\"}");
    cJSON *r = cJSON_Parse("{\"role\": \"assistant\"}"), *nn = cJSON_CreateNumber(7);
    lf_jinja_var v[] = {{"m", m, 1}, {"d", d, 1}, {"r", r, 1}, {"n", nn, 1}};
    char *text;
    size_t len, nmk;
    lf_jinja_range *mk;
    assert_int_equal(lf_jinja_render(t, v, 4, 1, &text, &len, &mk, &nmk, &err), 0);
    const char *want = "<A><|im_end|>x<B><|IM_END|>X<|im_end|>L|im_end|>xR[<|im_end|>x]{\"k\": \"<s>\"}assistant7";
    assert_string_equal(text, want);
    /* expected markup: the template's literals, JSON punctuation (the key is
     * content too), the role, the number */
    const char *marks[] = {"<A>", "<B>", "L", "R[", "]{\"", "\": \"", "\"}assistant7"};
    size_t at = 0;
    assert_int_equal(nmk, sizeof marks / sizeof marks[0]);
    for (size_t i = 0; i < nmk; i++) {
        const char *p = strstr(text + at, marks[i]);
        assert_non_null(p);
        assert_int_equal(mk[i].start, (size_t)(p - text));
        assert_int_equal(mk[i].end, (size_t)(p - text) + strlen(marks[i]));
        at = mk[i].end;
    }
    free(text);
    free(mk);
    cJSON_Delete(m);
    cJSON_Delete(d);
    cJSON_Delete(r);
    cJSON_Delete(nn);
    lf_jinja_free(t);
}

/* Phi-4-mini's template loops over `tools` when it is defined: with
 * tools=None (what transformers passes) it raises, as Jinja2 does; left
 * undefined (longflow's default) it renders (see the goldens). */
static void test_phi4_tools_none(void **state) {
    (void)state;
    char *src = template_text("llama-cpp-microsoft-Phi-4-mini-instruct.jinja");
    lf_error err = {{0}};
    char *vars = fmt("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"tools\": null}");
    char *got = render_vars(src, vars, true, 1, &err);
    assert_null(got);
    assert_non_null(strstr(err.msg, "not iterable"));
    free(vars);
    free(src);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snippets),
        cmocka_unit_test(test_real_templates),
        cmocka_unit_test(test_unsupported),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_markup),
        cmocka_unit_test(test_phi4_tools_none),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
