/* The KV cache's bf16 and FP8 e4m3 rows (src/kv/dtype.c) against values made
 * by ml_dtypes (tools/gen_kv_dtype_fixtures.py -> tests/data/
 * kv_dtype_rounding.txt): float -> bf16 and scaled float -> e4m3 rounding
 * (nearest even, e4m3 saturating at +-448), every e4m3 code's value, and
 * whole rows with their scale (random rows, a row of zeros, one huge
 * element, values beyond e4m3's range, tiny values, an infinity, a NaN).
 * Then what a cache of each dtype allocates and counts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv/attention.h"
#include "kv/cache.h"
#include "kv/dtype.h"

#include "test_util.h"

static float f32_of(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static uint32_t bits_of(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

/* Same float, or both NaN. */
static int same(float a, float b) { return (isnan(a) && isnan(b)) || bits_of(a) == bits_of(b); }

typedef struct fixture {
    char *text;
    float dec[256]; /* ml_dtypes' value of each non-NaN code */
    int have_dec[256];
} fixture;

static fixture *load(void) {
    static fixture fx;
    if (fx.text) return &fx;
    char *path = fmt("%s/kv_dtype_rounding.txt", data_dir());
    fx.text = slurp(path);
    if (!fx.text) fail_msg("cannot read %s (run tools/gen_kv_dtype_fixtures.py)", path);
    free(path);
    for (char *l = fx.text; l && *l;) {
        unsigned c, u;
        if (sscanf(l, "dec %x %x", &c, &u) == 2 && c < 256) {
            fx.dec[c] = f32_of(u);
            fx.have_dec[c] = 1;
        }
        l = strchr(l, '\n');
        if (l) l++;
    }
    return &fx;
}

/* Call fn on every line starting with `tag `; returns the count. */
static int each_line(const char *tag, void (*fn)(const char *line, const fixture *fx)) {
    fixture *fx = load();
    size_t tl = strlen(tag);
    int n = 0;
    for (const char *l = fx->text; *l;) {
        if (!strncmp(l, tag, tl) && l[tl] == ' ') {
            fn(l + tl + 1, fx);
            n++;
        }
        l = strchr(l, '\n');
        if (!l) break;
        l++;
    }
    return n;
}

static void bf16_line(const char *l, const fixture *fx) {
    (void)fx;
    unsigned u, want;
    assert_int_equal(sscanf(l, "%x %x", &u, &want), 2);
    float x = f32_of(u);
    uint16_t got = lf_bf16_from_f32(x);
    if (isnan(x)) {
        assert_true(isnan(lf_bf16_to_f32(got))); /* NaN stays NaN (payload not compared) */
        assert_int_equal(got >> 15, u >> 31);
    } else if (got != want) {
        fail_msg("bf16(%08x = %.9g): got %04x, ml_dtypes %04x", u, x, got, want);
    }
    assert_true(same(lf_bf16_to_f32(got), f32_of((uint32_t)got << 16)));
}

static void fp8_line(const char *l, const fixture *fx) {
    unsigned u, want;
    assert_int_equal(sscanf(l, "%x %x", &u, &want), 2);
    uint8_t got = lf_fp8_from_f32(f32_of(u));
    if (got != want) fail_msg("e4m3(%08x = %.9g): got %02x, ml_dtypes %02x", u, f32_of(u), got, want);
    assert_true(fx->have_dec[got]);
}

static void dec_line(const char *l, const fixture *fx) {
    (void)fx;
    unsigned c, u;
    assert_int_equal(sscanf(l, "%x %x", &c, &u), 2);
    float got = lf_fp8_to_f32((uint8_t)c);
    if (!same(got, f32_of(u))) fail_msg("e4m3 code %02x: got %.9g, ml_dtypes %.9g", c, got, f32_of(u));
}

static void row_line(const char *l, const fixture *fx) {
    int n, off;
    unsigned su;
    assert_int_equal(sscanf(l, "%d %x%n", &n, &su, &off), 2);
    assert_true(n > 0 && n <= 64);
    float x[64], back[64];
    uint8_t want[64], got[64];
    l += off;
    for (int i = 0; i < n; i++) {
        unsigned u;
        assert_int_equal(sscanf(l, "%x%n", &u, &off), 1);
        x[i] = f32_of(u);
        l += off;
    }
    for (int i = 0; i < n; i++) {
        unsigned c;
        assert_int_equal(sscanf(l, "%x%n", &c, &off), 1);
        want[i] = (uint8_t)c;
        l += off;
    }
    float scale = -1;
    lf_kv_row_store(LF_KV_FP8, x, n, got, &scale);
    if (!same(scale, f32_of(su))) fail_msg("row scale: got %.9g, want %.9g", scale, f32_of(su));
    assert_memory_equal(got, want, (size_t)n);
    lf_kv_row_load(LF_KV_FP8, got, scale, n, back);
    for (int i = 0; i < n; i++) {
        float ref = isnan(scale) ? NAN : fx->dec[want[i]] * scale; /* ml_dtypes' value times the scale */
        if (!same(back[i], ref)) fail_msg("row element %d: read %.9g, want %.9g", i, back[i], ref);
        /* the round trip keeps a finite row within half an e4m3 step of x (relative 1/16), or below the
         * subnormal step of the scale */
        if (!isnan(scale)) assert_true(fabsf(back[i] - x[i]) <= fabsf(x[i]) / 16 + scale * 0x1p-10f);
    }
}

static void test_bf16_rounding(void **state) {
    (void)state;
    assert_true(each_line("bf16", bf16_line) > 150);
}

static void test_fp8_codes(void **state) {
    (void)state;
    assert_int_equal(each_line("dec", dec_line), 254); /* 256 codes less +-NaN */
    assert_true(each_line("fp8", fp8_line) > 150);
}

static void test_fp8_rows(void **state) {
    (void)state;
    assert_true(each_line("row", row_line) >= 14);
}

/* bf16 round trip of a whole row through the public row functions. */
static void test_bf16_rows(void **state) {
    (void)state;
    float x[40], y[40];
    uint16_t b[40];
    for (int i = 0; i < 40; i++) x[i] = frand(-50, 50);
    lf_kv_row_store(LF_KV_BF16, x, 40, b, NULL);
    lf_kv_row_load(LF_KV_BF16, b, 0, 40, y);
    for (int i = 0; i < 40; i++) {
        assert_int_equal(b[i], lf_bf16_from_f32(x[i]));
        assert_true(fabsf(y[i] - x[i]) <= fabsf(x[i]) * 0x1p-8f);
    }
}

/* What each dtype allocates and counts: K and V of every slot in 4, 2 or 1
 * bytes an element, fp8 plus a float scale per (slot, KV head) for K and V. */
static void test_cache_bytes(void **state) {
    (void)state;
    const int L = 3, H = 4, G = 2, hd = 16, B = 40, n = 10;
    lf_config cfg = shape(L, H, G, hd);
    size_t bytes[3], in_use[3];
    float *q = calloc((size_t)n * H * hd, sizeof *q), *k = calloc((size_t)n * G * hd, sizeof *k);
    float *v = calloc((size_t)n * G * hd, sizeof *v);
    for (int dt = 0; dt < 3; dt++) {
        lf_policy_config pc;
        lf_policy_config_default(&pc);
        pc.kind = LF_POLICY_LONGFLOW;
        pc.budget = B;
        pc.kv_dtype = (lf_kv_dtype)dt;
        lf_kv_cache c;
        lf_error err;
        assert_int_equal(lf_kv_cache_init(&c, &cfg, &pc, B, &err), 0);
        assert_int_equal(c.dtype, dt);
        for (int l = 0; l < L; l++) assert_int_equal(lf_kv_prefill_layer(&c, l, q, k, v, n, &err), 0);
        bytes[dt] = c.bytes;
        in_use[dt] = lf_kv_cache_bytes_in_use(&c);
        assert_true((c.ks != NULL) == (dt == LF_KV_FP8));
        lf_kv_cache_free(&c);
    }
    const size_t rows = (size_t)2 * L * G * B; /* K and V rows */
    assert_int_equal(bytes[LF_KV_F32] - bytes[LF_KV_BF16], rows * hd * 2);
    assert_int_equal(bytes[LF_KV_BF16] - bytes[LF_KV_FP8], rows * hd * 1 - rows * sizeof(float));
    assert_int_equal(in_use[LF_KV_F32], (size_t)L * n * 2 * G * hd * 4);
    assert_int_equal(in_use[LF_KV_BF16], (size_t)L * n * 2 * G * hd * 2);
    assert_int_equal(in_use[LF_KV_FP8], (size_t)L * n * 2 * G * (hd + 4));
    assert_int_equal(lf_kv_token_bytes(LF_KV_FP8, G, hd), (size_t)2 * G * (hd + 4));
    free(q);
    free(k);
    free(v);
}

/* Names, and the refusals: an unknown dtype, a head_dim the widening kernel
 * has no room for. */
static void test_names_and_refusals(void **state) {
    (void)state;
    lf_kv_dtype t;
    const char *names[] = {"fp32", "bf16", "fp8"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(lf_kv_dtype_from_name(names[i], &t), 0);
        assert_int_equal(t, i);
        assert_string_equal(lf_kv_dtype_name(t), names[i]);
    }
    assert_int_equal(lf_kv_dtype_from_name("fp16", &t), -1);
    assert_int_equal(lf_kv_dtype_from_name(NULL, &t), -1);
    assert_string_equal(lf_kv_dtype_name((lf_kv_dtype)7), "?");
    lf_policy_config pc;
    lf_policy_config_default(&pc);
    assert_int_equal(pc.kv_dtype, LF_KV_BF16); /* the default */
    lf_kv_cache c;
    lf_error err;
    pc.kv_dtype = (lf_kv_dtype)3;
    lf_config cfg = shape(1, 2, 1, 16);
    assert_int_equal(lf_kv_cache_init(&c, &cfg, &pc, 8, &err), -1);
    assert_non_null(strstr(err.msg, "kv-dtype"));
    pc.kv_dtype = LF_KV_FP8;
    cfg = shape(1, 2, 1, LF_ATT_WIDE_HD + 2);
    assert_int_equal(lf_kv_cache_init(&c, &cfg, &pc, 8, &err), -1);
    assert_non_null(strstr(err.msg, "head_dim"));
    pc.kv_dtype = LF_KV_F32;
    assert_int_equal(lf_kv_cache_init(&c, &cfg, &pc, 8, &err), 0);
    lf_kv_cache_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bf16_rounding), cmocka_unit_test(test_fp8_codes),
        cmocka_unit_test(test_fp8_rows),      cmocka_unit_test(test_bf16_rows),
        cmocka_unit_test(test_cache_bytes),   cmocka_unit_test(test_names_and_refusals),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    free(load()->text);
    return rc;
}
