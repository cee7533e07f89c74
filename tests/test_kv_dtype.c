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
        lf_policy_config pc = policy_config(LF_POLICY_LONGFLOW, B, (lf_kv_dtype)dt);
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

/* ---- outlier rows through the fused decode kernel ---------------------------- */

enum { OL_H = 4, OL_G = 2, OL_HD = 64, OL_CAP = 40 };

/* A K or V row of kind 0 random in (-1, 1), 1 with one huge element (it sets
 * the scale), 2 zeros, 3 every value beyond e4m3's 448, 4 tiny. */
static void outlier_row(int kind, float *x) {
    for (int d = 0; d < OL_HD; d++) x[d] = frand(-1, 1);
    if (kind == 1) x[irand(OL_HD)] = 3e4f;
    for (int d = 0; d < OL_HD; d++) x[d] *= kind == 2 ? 0.0f : kind == 3 ? 2000.0f : kind == 4 ? 1e-3f : 1.0f;
}

/* A one-layer LongFlow cache of dtype dt whose slot i holds K of kind i % 5
 * and V of kind (i / 5) % 5 (every pair), the same rows for every dtype. */
static void outlier_cache(lf_kv_dtype dt, lf_kv_cache *c) {
    lf_error err;
    assert_int_equal(layer_cache(c, OL_H, OL_G, OL_HD, LF_POLICY_LONGFLOW, OL_CAP, dt, &err), 0);
    rng = 77;
    for (int g = 0; g < OL_G; g++)
        for (int i = 0; i < OL_CAP; i++) {
            float k[OL_HD], v[OL_HD];
            outlier_row(i % 5, k);
            outlier_row((i / 5) % 5, v);
            float *ks = lf_kv_kscale(c, 0, g), *vs = lf_kv_vscale(c, 0, g);
            size_t off = (size_t)i * c->row_bytes;
            lf_kv_row_store(dt, k, OL_HD, lf_kv_k(c, 0, g) + off, ks ? ks + i : NULL);
            lf_kv_row_store(dt, v, OL_HD, lf_kv_v(c, 0, g) + off, vs ? vs + i : NULL);
            if (dt == LF_KV_FP8) { /* the scale of a row of zeros is 0 and reads back zeros */
                assert_true(i % 5 == 2 ? ks[i] == 0.0f : ks[i] > 0.0f);
                assert_true((i / 5) % 5 == 2 ? vs[i] == 0.0f : vs[i] > 0.0f);
            }
        }
    for (int i = 0; i < OL_CAP; i++) c->layers[0].pos[i] = i;
    c->layers[0].hw = OL_CAP;
}

/* The kernel's output and per-slot results against double precision on the
 * rows the cache holds (read back with lf_kv_row_load). */
static void check_outlier_attention(const lf_kv_cache *c, const float *q, const float *out) {
    const int rep = OL_H / OL_G;
    for (int g = 0; g < OL_G; g++) {
        double K[OL_CAP][OL_HD], V[OL_CAP][OL_HD], att[OL_CAP] = {0}, vmax = 0;
        for (int i = 0; i < OL_CAP; i++) {
            float k[OL_HD], v[OL_HD];
            const float *ks = lf_kv_kscale(c, 0, g), *vs = lf_kv_vscale(c, 0, g);
            size_t off = (size_t)i * c->row_bytes;
            lf_kv_row_load(c->dtype, lf_kv_k(c, 0, g) + off, ks ? ks[i] : 1.0f, OL_HD, k);
            lf_kv_row_load(c->dtype, lf_kv_v(c, 0, g) + off, vs ? vs[i] : 1.0f, OL_HD, v);
            double vn = 0;
            for (int d = 0; d < OL_HD; d++) {
                K[i][d] = k[d];
                V[i][d] = v[d];
                vn += fabs(v[d]);
                vmax = fmax(vmax, fabs(v[d]));
            }
            double got = lf_att_vn(c, g)[i];
            if (fabs(got - vn) > 1e-5 * vn) fail_msg("|v|_1 of slot %d: got %.9g, reference %.9g", i, got, vn);
        }
        for (int h = g * rep; h < (g + 1) * rep; h++) {
            double a[OL_CAP], mx = -INFINITY, sum = 0;
            for (int i = 0; i < OL_CAP; i++) {
                a[i] = 0;
                for (int d = 0; d < OL_HD; d++) a[i] += (double)q[h * OL_HD + d] * K[i][d];
                a[i] /= sqrt((double)OL_HD);
                mx = fmax(mx, a[i]);
            }
            for (int i = 0; i < OL_CAP; i++) sum += (a[i] = exp(a[i] - mx));
            for (int i = 0; i < OL_CAP; i++) att[i] += a[i] / sum;
            for (int d = 0; d < OL_HD; d++) {
                double o = 0;
                for (int i = 0; i < OL_CAP; i++) o += a[i] / sum * V[i][d];
                double got = out[h * OL_HD + d];
                if (!isfinite(got) || fabs(got - o) > 2e-5 * vmax + 1e-4 * fabs(o))
                    fail_msg("%s output head %d dim %d: got %.9g, reference %.9g", lf_kv_dtype_name(c->dtype), h,
                             d, got, o);
            }
        }
        for (int i = 0; i < OL_CAP; i++) {
            double got = lf_att_att(c, g)[i];
            if (fabs(got - att[i]) > 1e-6 + 1e-4 * att[i])
                fail_msg("attention of slot %d: got %.9g, reference %.9g", i, got, att[i]);
        }
    }
}

/* Rows with one huge element, zeros, values beyond e4m3's range and tiny
 * values, K and V, through the fused kernel (both paths) of an fp8 cache:
 * its output, attention and |v|_1 equal double precision on what the cache
 * holds, and its output stays near the fp32 cache's on the same rows. */
static void test_fp8_outliers_in_attention(void **state) {
    (void)state;
    float q[OL_H * OL_HD], out[OL_H * OL_HD], out32[OL_H * OL_HD];
    rng = 78;
    for (int i = 0; i < OL_H * OL_HD; i++) q[i] = frand(-0.01f, 0.01f); /* logits of the 2000x rows ~ 10 */
    lf_kv_cache c32, c8;
    outlier_cache(LF_KV_F32, &c32);
    outlier_cache(LF_KV_FP8, &c8);
    lf_kv_cache *p32 = &c32, *p8 = &c8;
    lf_kv_attend(&p32, 1, 0, q, out32, true);
    for (int scalar = 0; scalar < 2; scalar++) {
        lf_att_force_scalar(scalar);
        lf_kv_attend(&p8, 1, 0, q, out, true);
        check_outlier_attention(&c8, q, out);
        double num = 0, den = 0;
        for (int i = 0; i < OL_H * OL_HD; i++) {
            num += ((double)out[i] - out32[i]) * ((double)out[i] - out32[i]);
            den += (double)out32[i] * out32[i];
        }
        printf("[ fp8 outliers ] %s kernel: output rel-L2 against the fp32 cache %.3g\n",
               scalar ? "scalar" : "default", sqrt(num / den));
        assert_true(sqrt(num / den) < 0.05);
    }
    lf_att_force_scalar(0);
    check_outlier_attention(&c32, q, out32);
    lf_kv_cache_free(&c32);
    lf_kv_cache_free(&c8);
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
        cmocka_unit_test(test_fp8_outliers_in_attention),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    free(load()->text);
    return rc;
}
