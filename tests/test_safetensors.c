/* safetensors reader: good files written by the test (values checked after
 * the round trip) and one bad file per validation rule, each of which must
 * fail with a one-line message naming the file and the problem. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "model/safetensors.h"

static char tmpdir[256];

static int setup(void **state) {
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/lf_st_XXXXXX", base && *base ? base : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Write [8-byte length][header][data] to tmpdir/name; returns the path. */
static const char *write_raw(const char *name, uint64_t hlen_field, const char *header, size_t hbytes,
                             const void *data, size_t dlen) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)(hlen_field >> (8 * i));
    assert_int_equal(fwrite(len, 1, 8, f), 8);
    if (hbytes) assert_int_equal(fwrite(header, 1, hbytes, f), hbytes);
    if (dlen) assert_int_equal(fwrite(data, 1, dlen, f), dlen);
    fclose(f);
    return path;
}

/* Header padded with spaces to a multiple of 8 bytes, as the format's
 * writers do, so that the data that follows is aligned. */
static const char *write_st(const char *name, const char *header, const void *data, size_t dlen) {
    size_t h = strlen(header);
    size_t padded = (h + 7) & ~(size_t)7;
    char *buf = malloc(padded + 1);
    memcpy(buf, header, h);
    memset(buf + h, ' ', padded - h);
    const char *p = write_raw(name, padded, buf, padded, data, dlen);
    free(buf);
    return p;
}

/* Independent encoders for the test values (exactly representable). */
static uint16_t bf16_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    assert_int_equal(u & 0xffffu, 0); /* exact in bf16 */
    return (uint16_t)(u >> 16);
}

/* f16 for small dyadic values k/8 with |k| < 2048: build the bits by hand */
static uint16_t f16_bits(int k8) {
    if (k8 == 0) return 0;
    uint16_t sign = k8 < 0 ? 0x8000 : 0;
    int a = k8 < 0 ? -k8 : k8; /* value = a / 8 */
    int e = 0;
    while ((a >> e) > 1) e++;  /* a in [2^e, 2^(e+1)) */
    int exp = e - 3 + 15;      /* unbiased exponent e-3 */
    int man = (int)(((unsigned)a << (10 - e)) & 0x3ff);
    return (uint16_t)(sign | (exp << 10) | man);
}

static float f16_value(uint16_t h) {
    int exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    double v = (1.0 + man / 1024.0) * ldexp(1.0, exp - 15);
    return (float)((h & 0x8000) ? -v : v);
}

static void test_good_file(void **state) {
    /* a: F32 [2,3]; b: BF16 [4]; c: F16 [3,1]; s: F32 scalar; z: BF16 [0,5] */
    float a[6] = {1.5f, -2.25f, 3.0e-3f, 1e6f, -0.0f, 7.125f};
    float bv[4] = {1.0f, -0.5f, 3.25f, 65536.0f};
    int ck[3] = {3, -17, 1000};
    float s = 42.0f;
    unsigned char data[24 + 8 + 6 + 2 /*pad*/ + 4];
    memset(data, 0, sizeof data);
    memcpy(data, a, 24);
    for (int i = 0; i < 4; i++) {
        uint16_t h = bf16_bits(bv[i]);
        memcpy(data + 24 + 2 * i, &h, 2);
    }
    for (int i = 0; i < 3; i++) {
        uint16_t h = f16_bits(ck[i]);
        memcpy(data + 32 + 2 * i, &h, 2);
    }
    memcpy(data + 40, &s, 4);
    const char *hdr =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
        "\"c\":{\"dtype\":\"F16\",\"shape\":[3,1],\"data_offsets\":[32,38]},"
        "\"z\":{\"dtype\":\"BF16\",\"shape\":[0,5],\"data_offsets\":[40,40]},"
        "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[40,44]}}";
    const char *path = write_st("good.safetensors", hdr, data, sizeof data);
    lf_st_file f;
    lf_error err = {{0}};
    int rc = lf_st_open(path, &f, &err);
    if (rc != 0) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(f.n_tensors, 5);
    assert_null(lf_st_find(&f, "__metadata__"));
    assert_null(lf_st_find(&f, "nope"));

    const lf_tensor *ta = lf_st_find(&f, "a");
    assert_non_null(ta);
    assert_int_equal(ta->dtype, LF_DTYPE_F32);
    assert_int_equal(ta->ndim, 2);
    assert_int_equal(ta->shape[0], 2);
    assert_int_equal(ta->shape[1], 3);
    assert_int_equal(ta->nbytes, 24);
    for (int i = 0; i < 6; i++) {
        float v;
        memcpy(&v, (const char *)ta->data + 4 * i, 4);
        assert_memory_equal(&v, &a[i], 4);
    }
    const lf_tensor *tb = lf_st_find(&f, "b");
    assert_non_null(tb);
    assert_int_equal(tb->dtype, LF_DTYPE_BF16);
    assert_int_equal(tb->ndim, 1);
    assert_int_equal(tb->shape[0], 4);
    assert_int_equal(tb->nbytes, 8);
    for (int i = 0; i < 4; i++) {
        uint16_t h;
        memcpy(&h, (const char *)tb->data + 2 * i, 2);
        uint32_t u = (uint32_t)h << 16;
        float v;
        memcpy(&v, &u, 4);
        assert_true(v == bv[i]);
    }
    const lf_tensor *tc = lf_st_find(&f, "c");
    assert_non_null(tc);
    assert_int_equal(tc->dtype, LF_DTYPE_F16);
    assert_int_equal(tc->shape[0], 3);
    assert_int_equal(tc->shape[1], 1);
    for (int i = 0; i < 3; i++) {
        uint16_t h;
        memcpy(&h, (const char *)tc->data + 2 * i, 2);
        assert_true(f16_value(h) == (float)ck[i] / 8.0f);
    }
    const lf_tensor *ts = lf_st_find(&f, "s");
    assert_non_null(ts);
    assert_int_equal(ts->ndim, 0);
    assert_int_equal(ts->nbytes, 4);
    assert_true(*(const float *)ts->data == 42.0f);
    const lf_tensor *tz = lf_st_find(&f, "z");
    assert_non_null(tz);
    assert_int_equal(tz->nbytes, 0);
    assert_int_equal(tz->shape[0], 0);
    assert_int_equal(tz->shape[1], 5);
    /* data really points into the file's mapping */
    assert_true((const char *)ta->data >= (const char *)f.map &&
                (const char *)ta->data + 24 <= (const char *)f.map + f.map_size);
    assert_string_equal(f.path, path);
    lf_st_close(&f);
}

static void test_empty_header_object(void **state) {
    const char *path = write_st("empty.safetensors", "{}", NULL, 0);
    lf_st_file f;
    lf_error err = {{0}};
    assert_int_equal(lf_st_open(path, &f, &err), 0);
    assert_int_equal(f.n_tensors, 0);
    lf_st_close(&f);
}

/* Expect failure with a message naming the file and containing phrase. */
static void expect_fail(const char *path, const char *phrase) {
    lf_st_file f;
    lf_error err = {{0}};
    int rc = lf_st_open(path, &f, &err);
    if (rc == 0) lf_st_close(&f);
    assert_int_equal(rc, -1);
    if (!strstr(err.msg, path) || !strstr(err.msg, phrase))
        fail_msg("message '%s' lacks '%s' or '%s'", err.msg, path, phrase);
    assert_null(strchr(err.msg, '\n'));
    assert_null(f.map);
    assert_null(f.tensors);
}

static const char F32x2[8] = {0};

static void test_missing_file(void **state) {
    char path[400];
    snprintf(path, sizeof path, "%s/does-not-exist.safetensors", tmpdir);
    expect_fail(path, "cannot open");
}

static void test_truncated(void **state) {
    char path[400];
    snprintf(path, sizeof path, "%s/trunc.safetensors", tmpdir);
    FILE *f = fopen(path, "wb");
    fwrite("\x10\x00\x00", 1, 3, f);
    fclose(f);
    expect_fail(path, "truncated");
    f = fopen(path, "wb");
    fclose(f);
    expect_fail(path, "truncated");
}

static void test_header_past_end(void **state) {
    const char *h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    expect_fail(write_raw("hlen.safetensors", 4096, h, strlen(h), F32x2, 8), "header length");
    /* a length whose 8+len wraps around 64 bits */
    expect_fail(write_raw("hlen2.safetensors", UINT64_MAX - 3, h, strlen(h), F32x2, 8), "header length");
}

static void test_header_not_json(void **state) {
    expect_fail(write_st("notjson.safetensors", "{\"a\": {\"dtype\": ", NULL, 0), "not a JSON object");
    expect_fail(write_st("array.safetensors", "[1,2,3]", NULL, 0), "not a JSON object");
    expect_fail(write_st("entry.safetensors", "{\"a\": 3}", NULL, 0), "not an object");
}

static void test_overlap(void **state) {
    char data[16] = {0};
    expect_fail(write_st("overlap.safetensors",
                         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                         data, 16),
                "overlapping");
    /* the same range twice, listed in reverse order */
    expect_fail(write_st("overlap2.safetensors",
                         "{\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[8,16]},"
                         "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                         "\"c\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[8,16]}}",
                         data, 16),
                "overlapping");
}

static void test_offsets_past_end(void **state) {
    expect_fail(write_st("past.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
                         F32x2, 8),
                "past the end");
}

static void test_offsets_reversed(void **state) {
    expect_fail(write_st("rev.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}",
                         F32x2, 8),
                "begin after end");
    expect_fail(write_st("neg.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}",
                         F32x2, 8),
                "data_offsets");
    expect_fail(write_st("frac.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,7.5]}}",
                         F32x2, 8),
                "data_offsets");
}

static void test_bad_dtype(void **state) {
    expect_fail(write_st("i8.safetensors", "{\"w\":{\"dtype\":\"I8\",\"shape\":[8],\"data_offsets\":[0,8]}}",
                         F32x2, 8),
                "unsupported dtype I8");
    expect_fail(write_st("f64.safetensors", "{\"w\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}",
                         F32x2, 8),
                "'w': unsupported dtype F64");
    expect_fail(write_st("nodtype.safetensors", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", F32x2, 8),
                "\"dtype\"");
}

static void test_shape_bytes_mismatch(void **state) {
    expect_fail(write_st("mism.safetensors", "{\"w\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,8]}}",
                         F32x2, 8),
                "shape/bytes mismatch");
    expect_fail(write_st("negshape.safetensors",
                         "{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", F32x2, 8),
                "shape[0]");
    expect_fail(write_st("dims.safetensors",
                         "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,2],\"data_offsets\":[0,8]}}", F32x2, 8),
                "dimensions");
    expect_fail(write_st("huge.safetensors",
                         "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}",
                         F32x2, 8),
                "too large");
}

static void test_duplicate_name(void **state) {
    char data[16] = {0};
    expect_fail(write_st("dup.safetensors",
                         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                         "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
                         data, 16),
                "appears twice");
}

static void test_misaligned(void **state) {
    /* header of 7 bytes + an F32 tensor: data at file offset 15 */
    char data[12] = {0};
    const char *h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1,9]}}";
    size_t hl = strlen(h); /* the test relies on 8+hl+1 not being a multiple of 4 */
    char buf[128];
    memcpy(buf, h, hl);
    size_t pad = ((8 + hl + 1) % 4 == 0) ? 1 : 0;
    memset(buf + hl, ' ', pad);
    expect_fail(write_raw("misaligned.safetensors", hl + pad, buf, hl + pad, data, sizeof data), "aligned");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_file),
        cmocka_unit_test(test_empty_header_object),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_header_past_end),
        cmocka_unit_test(test_header_not_json),
        cmocka_unit_test(test_overlap),
        cmocka_unit_test(test_offsets_past_end),
        cmocka_unit_test(test_offsets_reversed),
        cmocka_unit_test(test_bad_dtype),
        cmocka_unit_test(test_shape_bytes_mismatch),
        cmocka_unit_test(test_duplicate_name),
        cmocka_unit_test(test_misaligned),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
