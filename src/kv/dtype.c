/* bf16 and FP8 e4m3 rows of the KV cache (see dtype.h). */
#include "kv/dtype.h"
#include "kv/fp8_code.h"
#include "core/error.h"

#include <math.h>
#include <string.h>

static const char *const names[] = {"fp32", "bf16", "fp8"};

int lf_kv_dtype_from_name(const char *name, lf_kv_dtype *out) {
    if (!name) return -1;
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, names[i])) {
            *out = (lf_kv_dtype)i;
            return 0;
        }
    return -1;
}

const char *lf_kv_dtype_name(lf_kv_dtype t) { return (unsigned)t < 3 ? names[t] : "?"; }

int lf_kv_dtype_check_device(lf_kv_dtype t, lf_device device, lf_error *err) {
    if ((unsigned)t > LF_KV_FP8) return lf_fail(err, "--kv-dtype %d: unknown KV-cache dtype (fp32, bf16 or fp8)", (int)t);
    if (device == LF_DEVICE_CUDA && t == LF_KV_F32)
        return lf_fail(err, "--kv-dtype fp32: the CUDA backend stores its KV cache as bf16 or fp8 (use --kv-dtype "
                            "bf16 or fp8)");
    return 0;
}

size_t lf_kv_dtype_elem(lf_kv_dtype t) { return t == LF_KV_F32 ? 4 : t == LF_KV_BF16 ? 2 : 1; }

size_t lf_kv_token_bytes(lf_kv_dtype t, int n_kv_heads, int head_dim) {
    size_t row = (size_t)head_dim * lf_kv_dtype_elem(t) + (t == LF_KV_FP8 ? sizeof(float) : 0);
    return 2 * (size_t)n_kv_heads * row;
}

static uint32_t f32_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float bits_f32(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

uint16_t lf_bf16_from_f32(float x) {
    uint32_t u = f32_bits(x);
    if (isnan(x)) return (uint16_t)((u >> 16) | 0x40); /* quiet, sign kept */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float lf_bf16_to_f32(uint16_t b) { return bits_f32((uint32_t)b << 16); }

uint8_t lf_fp8_from_f32(float x) { return lf_fp8_code(x); }

float lf_fp8_to_f32(uint8_t c) { return lf_fp8_value(c); }

static float fp8_row_scale(const float *x, int n) {
    float amax = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(x[i])) return lf_fp8_row_scale(0, 0);
        float a = fabsf(x[i]);
        if (a > amax) amax = a;
    }
    return lf_fp8_row_scale(amax, 1);
}

void lf_kv_row_store(lf_kv_dtype t, const float *x, int n, void *dst, float *scale) {
    switch (t) {
    case LF_KV_F32:
        memcpy(dst, x, (size_t)n * sizeof(float));
        break;
    case LF_KV_BF16: {
        uint16_t *o = dst;
        for (int i = 0; i < n; i++) o[i] = lf_bf16_from_f32(x[i]);
        break;
    }
    case LF_KV_FP8: {
        uint8_t *o = dst;
        float s = fp8_row_scale(x, n);
        *scale = s;
        for (int i = 0; i < n; i++) o[i] = lf_fp8_row_code(x[i], s); /* all 0 for zeros or a NaN scale */
        break;
    }
    }
}

void lf_kv_row_load(lf_kv_dtype t, const void *src, float scale, int n, float *out) {
    switch (t) {
    case LF_KV_F32:
        memcpy(out, src, (size_t)n * sizeof(float));
        break;
    case LF_KV_BF16: {
        const uint16_t *b = src;
        for (int i = 0; i < n; i++) out[i] = lf_bf16_to_f32(b[i]);
        break;
    }
    case LF_KV_FP8: {
        const uint8_t *b = src;
        for (int i = 0; i < n; i++) out[i] = lf_fp8_to_f32(b[i]) * scale;
        break;
    }
    }
}
