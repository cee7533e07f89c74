/* The sampler against the distributions it must draw from, derived by hand
 * for small logit vectors (softmax, top-k, top-p, min-p, repetition penalty
 * as transformers defines them). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sampler/sampler.h"

#define V 6
#define DRAWS 200000

/* Empirical frequencies of DRAWS samples. */
static void draw(const lf_sampling *p, const float *logits, const int *hist, int nh, double *freq) {
    lf_sampler s;
    lf_error err;
    assert_int_equal(lf_sampler_init(&s, p, V, 1, &err), 0);
    memset(freq, 0, V * sizeof *freq);
    float buf[V];
    for (int i = 0; i < DRAWS; i++) {
        memcpy(buf, logits, sizeof buf);
        int t = lf_sampler_sample(&s, buf, hist, nh);
        assert_true(t >= 0 && t < V);
        freq[t] += 1.0 / DRAWS;
    }
    lf_sampler_free(&s);
}

/* Expected distribution: softmax(logits/T) restricted to `keep` and renormalised. */
static void expected(const float *logits, float T, const int *keep, double *want) {
    double z = 0;
    for (int i = 0; i < V; i++) want[i] = keep[i] ? exp((double)logits[i] / T) : 0, z += want[i];
    for (int i = 0; i < V; i++) want[i] /= z;
}

static void assert_close(const double *got, const double *want) {
    for (int i = 0; i < V; i++) {
        double sd = sqrt(want[i] * (1 - want[i]) / DRAWS) + 1e-9;
        if (fabs(got[i] - want[i]) > 5 * sd + 1e-4)
            fail_msg("token %d: frequency %.5f, expected %.5f", i, got[i], want[i]);
    }
}

static const float L[V] = {2.0f, 1.0f, 0.5f, 0.0f, -1.0f, 1.5f};
/* order by value: 0 (2.0), 5 (1.5), 1 (1.0), 2 (0.5), 3 (0.0), 4 (-1.0) */

static void test_greedy(void **state) {
    (void)state;
    lf_sampling p;
    lf_sampling_default(&p);
    lf_sampler s;
    lf_error err;
    assert_int_equal(lf_sampler_init(&s, &p, V, 0, &err), 0);
    float buf[V];
    memcpy(buf, L, sizeof buf);
    assert_int_equal(lf_sampler_sample(&s, buf, NULL, 0), 0);
    float tie[V] = {0, 3, 3, 1, 0, 0};
    assert_int_equal(lf_sampler_sample(&s, tie, NULL, 0), 1); /* lowest index on ties */
    lf_sampler_free(&s);
}

static void test_temperature(void **state) {
    (void)state;
    lf_sampling p;
    lf_sampling_default(&p);
    p.temperature = 0.7f;
    double got[V], want[V];
    int keep[V] = {1, 1, 1, 1, 1, 1};
    draw(&p, L, NULL, 0, got);
    expected(L, 0.7f, keep, want);
    assert_close(got, want);
}

static void test_top_k(void **state) {
    (void)state;
    lf_sampling p;
    lf_sampling_default(&p);
    p.temperature = 1.0f;
    p.top_k = 3;
    double got[V], want[V];
    int keep[V] = {1, 1, 0, 0, 0, 1};
    draw(&p, L, NULL, 0, got);
    expected(L, 1.0f, keep, want);
    assert_close(got, want);
}

static void test_top_p(void **state) {
    (void)state;
    /* softmax(L): p0=.4197 p5=.2546 p1=.1544 p2=.0937 p3=.0568 p4=.0209 (by hand)
     * cumulative: .4197 .6743 .8287 ... top_p=0.75 keeps {0,5,1} */
    lf_sampling p;
    lf_sampling_default(&p);
    p.temperature = 1.0f;
    p.top_p = 0.75f;
    double got[V], want[V];
    int keep[V] = {1, 1, 0, 0, 0, 1};
    draw(&p, L, NULL, 0, got);
    expected(L, 1.0f, keep, want);
    assert_close(got, want);
}

static void test_min_p(void **state) {
    (void)state;
    /* min_p=0.3: keep p >= 0.3 * p0 = .1259 -> {0, 5, 1} */
    lf_sampling p;
    lf_sampling_default(&p);
    p.temperature = 1.0f;
    p.min_p = 0.3f;
    double got[V], want[V];
    int keep[V] = {1, 1, 0, 0, 0, 1};
    draw(&p, L, NULL, 0, got);
    expected(L, 1.0f, keep, want);
    assert_close(got, want);
}

static void test_repetition_penalty(void **state) {
    (void)state;
    /* penalty 2 on tokens 0 (positive: 2.0 -> 1.0) and 4 (negative: -1 -> -2),
     * each once even if repeated in the history */
    lf_sampling p;
    lf_sampling_default(&p);
    p.repetition_penalty = 2.0f;
    lf_sampler s;
    lf_error err;
    assert_int_equal(lf_sampler_init(&s, &p, V, 0, &err), 0);
    float buf[V];
    memcpy(buf, L, sizeof buf);
    int hist[] = {0, 4, 0, 0};
    assert_int_equal(lf_sampler_sample(&s, buf, hist, 4), 5); /* 1.5 now beats 1.0 */
    assert_true(fabsf(buf[0] - 1.0f) < 1e-6f);
    assert_true(fabsf(buf[4] + 2.0f) < 1e-6f);
    lf_sampler_free(&s);
}

static void test_bad_params(void **state) {
    (void)state;
    lf_sampling p;
    lf_sampler s;
    lf_error err;
    lf_sampling_default(&p);
    p.temperature = -1;
    assert_int_equal(lf_sampler_init(&s, &p, V, 0, &err), -1);
    assert_non_null(strstr(err.msg, "--temperature"));
    lf_sampling_default(&p);
    p.top_p = 0;
    assert_int_equal(lf_sampler_init(&s, &p, V, 0, &err), -1);
    assert_non_null(strstr(err.msg, "--top-p"));
    lf_sampling_default(&p);
    p.repetition_penalty = 0;
    assert_int_equal(lf_sampler_init(&s, &p, V, 0, &err), -1);
    assert_non_null(strstr(err.msg, "--repetition-penalty"));
}

static void test_seed_streams(void **state) {
    (void)state;
    /* the same seed and stream repeat; another stream differs */
    lf_sampling p;
    lf_sampling_default(&p);
    p.temperature = 1.0f;
    p.seed = 42;
    lf_sampler a, b, c;
    lf_error err;
    assert_int_equal(lf_sampler_init(&a, &p, V, 3, &err), 0);
    assert_int_equal(lf_sampler_init(&b, &p, V, 3, &err), 0);
    assert_int_equal(lf_sampler_init(&c, &p, V, 4, &err), 0);
    int same = 1, diff = 0;
    for (int i = 0; i < 64; i++) {
        float x[V], y[V], z[V];
        memcpy(x, L, sizeof x);
        memcpy(y, L, sizeof y);
        memcpy(z, L, sizeof z);
        int ta = lf_sampler_sample(&a, x, NULL, 0), tb = lf_sampler_sample(&b, y, NULL, 0);
        int tc = lf_sampler_sample(&c, z, NULL, 0);
        same &= ta == tb;
        diff |= ta != tc;
    }
    assert_true(same);
    assert_true(diff);
    lf_sampler_free(&a);
    lf_sampler_free(&b);
    lf_sampler_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy),        cmocka_unit_test(test_temperature),
        cmocka_unit_test(test_top_k),         cmocka_unit_test(test_top_p),
        cmocka_unit_test(test_min_p),         cmocka_unit_test(test_repetition_penalty),
        cmocka_unit_test(test_bad_params),    cmocka_unit_test(test_seed_streams),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
