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

/* Small templates, one feature each, against Jinja2's own result (or its
 * raising). */
static void test_snippets(void **state) {
    (void)state;
    char *path = fmt("%s/chat/jinja_goldens.json", data_dir());
    char *text = slurp(path);
    assert_non_null(text);
    cJSON *g = cJSON_Parse(text);
    assert_non_null(g);
    int64_t now = fixed_now(cJSON_GetObjectItem(g, "now")->valuestring);
    int cases = 0, failures = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(g, "snippets")) {
        const char *src = cJSON_GetObjectItem(c, "template")->valuestring;
        char *vars = cJSON_PrintUnformatted(cJSON_GetObjectItem(c, "vars"));
        lf_error err = {{0}};
        char *got = render_vars(src, vars, true, now, &err);
        const cJSON *want = cJSON_GetObjectItem(c, "text");
        if (want && !got) {
            fprintf(stderr, "[%s]: error %s\n", src, err.msg);
            failures++;
        } else if (want && strcmp(got, want->valuestring)) {
            fprintf(stderr, "[%s]:\n  want [%s]\n  got  [%s]\n", src, want->valuestring, got);
            failures++;
        } else if (!want && got) {
            fprintf(stderr, "[%s]: rendered [%s], Jinja2 raised '%s'\n", src, got,
                    cJSON_GetObjectItem(c, "error")->valuestring);
            failures++;
        } else if (!want && !strstr(err.msg, "line 1: ")) {
            fprintf(stderr, "[%s]: error without its line: %s\n", src, err.msg);
            failures++;
        }
        free(got);
        free(vars);
        cases++;
    }
    fprintf(stderr, "[ jinja ] %d snippets, %d failures\n", cases, failures);
    assert_int_equal(failures, 0);
    cJSON_Delete(g);
    free(text);
    free(path);
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

static void test_real_templates(void **state) {
    (void)state;
    char *path = fmt("%s/chat/jinja_goldens.json", data_dir());
    char *text = slurp(path);
    assert_non_null(text);
    cJSON *g = cJSON_Parse(text);
    assert_non_null(g);
    int64_t now = fixed_now(cJSON_GetObjectItem(g, "now")->valuestring);
    int cases = 0, failures = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(g, "cases")) {
        failures += run_case(c, now);
        cases++;
    }
    fprintf(stderr, "[ jinja ] %d golden renders, %d failures\n", cases, failures);
    assert_true(cases >= 200);
    assert_int_equal(failures, 0);
    cJSON_Delete(g);
    free(text);
    free(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snippets),
        cmocka_unit_test(test_real_templates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
