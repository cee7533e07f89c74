/* Dequantizers for the ggml block types GGUF files use, to bf16.
 *
 * Every value is computed in fp32 with the same operations, in the same
 * order, as ggml's reference dequantizers (d * q, d * q + m, (d * sc) * q -
 * dmin * m) and rounded once to bf16, so the result equals the gguf Python
 * package's fp32 output rounded to bf16. The file is compiled without FMA
 * contraction (CMakeLists.txt), which would change the last bit. */
#include "model/quant.h"

#include <string.h>

#include "core/fp.h"

#define QK 32     /* values per block of the legacy types */
#define QK_K 256  /* values per super-block of the k-quants */

static float rd_f16(const uint8_t *p) { return lf_f16_to_f32((uint16_t)(p[0] | (p[1] << 8))); }

static uint32_t rd_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* ---- legacy 32-value blocks ---------------------------------------------- */

/* Q4_0: d (f16), 16 bytes of nibbles; value j = d * (nibble - 8), low
 * nibbles are values 0..15, high nibbles 16..31. */
static void deq_q4_0(const uint8_t *b, float *y) {
    float d = rd_f16(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < QK / 2; j++) {
        y[j] = d * (float)((qs[j] & 0x0F) - 8);
        y[j + QK / 2] = d * (float)((qs[j] >> 4) - 8);
    }
}

/* Q4_1: d, m (f16), nibbles; value = d * nibble + m. */
static void deq_q4_1(const uint8_t *b, float *y) {
    float d = rd_f16(b), m = rd_f16(b + 2);
    const uint8_t *qs = b + 4;
    for (int j = 0; j < QK / 2; j++) {
        y[j] = d * (float)(qs[j] & 0x0F) + m;
        y[j + QK / 2] = d * (float)(qs[j] >> 4) + m;
    }
}

/* The fifth bits of value j (low half) and j + 16 (high half) of a Q5 block. */
static void q5_values(uint32_t qh, const uint8_t *qs, int j, int *lo, int *hi) {
    int h0 = (int)(((qh >> j) << 4) & 0x10);
    int h1 = (int)((qh >> (j + 12)) & 0x10);
    *lo = (qs[j] & 0x0F) | h0;
    *hi = (qs[j] >> 4) | h1;
}

/* Q5_0: d, 32 high bits, nibbles; value = d * (5-bit - 16). */
static void deq_q5_0(const uint8_t *b, float *y) {
    float d = rd_f16(b);
    uint32_t qh = rd_u32(b + 2);
    const uint8_t *qs = b + 6;
    for (int j = 0; j < QK / 2; j++) {
        int lo, hi;
        q5_values(qh, qs, j, &lo, &hi);
        y[j] = d * (float)(lo - 16);
        y[j + QK / 2] = d * (float)(hi - 16);
    }
}

/* Q5_1: d, m, 32 high bits, nibbles; value = d * 5-bit + m. */
static void deq_q5_1(const uint8_t *b, float *y) {
    float d = rd_f16(b), m = rd_f16(b + 2);
    uint32_t qh = rd_u32(b + 4);
    const uint8_t *qs = b + 8;
    for (int j = 0; j < QK / 2; j++) {
        int lo, hi;
        q5_values(qh, qs, j, &lo, &hi);
        y[j] = d * (float)lo + m;
        y[j + QK / 2] = d * (float)hi + m;
    }
}

/* Q8_0: d, 32 signed bytes; value = d * q. */
static void deq_q8_0(const uint8_t *b, float *y) {
    float d = rd_f16(b);
    for (int j = 0; j < QK; j++) y[j] = d * (float)(int8_t)b[2 + j];
}

/* ---- k-quants: 256-value super-blocks ------------------------------------ */


/* Q4_K: d, dmin (f16), 12 scale bytes, 128 nibble bytes. Each 64 values use
 * 32 bytes: low nibbles for the first 32 (sub-block 2i), high nibbles for
 * the next 32 (sub-block 2i+1); value = (d * sc) * q - dmin * m. */
static void deq_q4_k(const uint8_t *b, float *y) {
    float d = rd_f16(b), dmin = rd_f16(b + 2);
    const uint8_t *scales = b + 4, *qs = b + 16;
    for (int i = 0; i < 4; i++) {
        for (int half = 0; half < 2; half++) {
            int sc, m;
            lf_quant_k_scale_min(2 * i + half, scales, &sc, &m);
            float d1 = d * (float)sc, m1 = dmin * (float)m;
            for (int l = 0; l < 32; l++) {
                int q = half ? qs[32 * i + l] >> 4 : qs[32 * i + l] & 0x0F;
                y[64 * i + 32 * half + l] = d1 * (float)q - m1;
            }
        }
    }
}

/* Q5_K: as Q4_K plus 32 bytes of fifth bits: value 64i + 32h + l takes bit
 * (2i + h) of qh[l]. */
static void deq_q5_k(const uint8_t *b, float *y) {
    float d = rd_f16(b), dmin = rd_f16(b + 2);
    const uint8_t *scales = b + 4, *qh = b + 16, *qs = b + 48;
    for (int i = 0; i < 4; i++) {
        for (int half = 0; half < 2; half++) {
            int sc, m;
            lf_quant_k_scale_min(2 * i + half, scales, &sc, &m);
            float d1 = d * (float)sc, m1 = dmin * (float)m;
            int bit = 2 * i + half;
            for (int l = 0; l < 32; l++) {
                int q = half ? qs[32 * i + l] >> 4 : qs[32 * i + l] & 0x0F;
                q |= ((qh[l] >> bit) & 1) << 4;
                y[64 * i + 32 * half + l] = d1 * (float)q - m1;
            }
        }
    }
}

/* Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 signed 8-bit
 * scales, d (f16) last. Two halves of 128 values; in each, value 32k + l
 * (k = 0..3) takes its low nibble from ql[l + 32 (k & 1)] (high nibble when
 * k >= 2) and bits 2k..2k+1 of qh[l]; value = (d * scale[8 half + l/16 +
 * 2k]) * (q - 32). */
static void deq_q6_k(const uint8_t *b, float *y) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = rd_f16(b + 208);
    for (int half = 0; half < 2; half++) {
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            for (int k = 0; k < 4; k++) {
                int lo = ql[l + 32 * (k & 1)];
                lo = k >= 2 ? lo >> 4 : lo & 0x0F;
                int q = (lo | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
                y[32 * k + l] = (d * (float)sc[is + 2 * k]) * (float)q;
            }
        }
        ql += 64;
        qh += 32;
        sc += 8;
        y += 128;
    }
}

/* ---- the table ----------------------------------------------------------- */

typedef void (*lf_deq_fn)(const uint8_t *block, float *out);

typedef struct {
    lf_quant_type t;
    lf_deq_fn fn; /* NULL for the plain float types */
} lf_quant_entry;

static const lf_quant_entry quant_types[] = {
    {{LF_GGML_F32, "F32", 1, 4}, NULL},
    {{LF_GGML_F16, "F16", 1, 2}, NULL},
    {{LF_GGML_BF16, "BF16", 1, 2}, NULL},
    {{LF_GGML_Q4_0, "Q4_0", QK, 18}, deq_q4_0},
    {{LF_GGML_Q4_1, "Q4_1", QK, 20}, deq_q4_1},
    {{LF_GGML_Q5_0, "Q5_0", QK, 22}, deq_q5_0},
    {{LF_GGML_Q5_1, "Q5_1", QK, 24}, deq_q5_1},
    {{LF_GGML_Q8_0, "Q8_0", QK, 34}, deq_q8_0},
    {{LF_GGML_Q4_K, "Q4_K", QK_K, 144}, deq_q4_k},
    {{LF_GGML_Q5_K, "Q5_K", QK_K, 176}, deq_q5_k},
    {{LF_GGML_Q6_K, "Q6_K", QK_K, 210}, deq_q6_k},
};
#define N_QUANT_TYPES (sizeof quant_types / sizeof quant_types[0])

static const lf_quant_entry *find_entry(uint32_t type) {
    for (size_t i = 0; i < N_QUANT_TYPES; i++)
        if (quant_types[i].t.type == type) return &quant_types[i];
    return NULL;
}

const lf_quant_type *lf_quant_find(uint32_t type) {
    const lf_quant_entry *e = find_entry(type);
    return e ? &e->t : NULL;
}

/* ggml's type numbering (ggml.h); NULL marks numbers that were retired. */
static const char *const ggml_names[] = {
    "F32",    "F16",    "Q4_0",    "Q4_1",    NULL,     NULL,    "Q5_0",  "Q5_1",     "Q8_0",     "Q8_1",
    "Q2_K",   "Q3_K",   "Q4_K",    "Q5_K",    "Q6_K",   "Q8_K",  "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",
    "IQ4_NL", "IQ3_S",  "IQ2_S",   "IQ4_XS",  "I8",     "I16",   "I32",   "I64",      "F64",      "IQ1_M",
    "BF16",   NULL,     NULL,      NULL,      "TQ1_0",  "TQ2_0", NULL,    NULL,       NULL,       "MXFP4",
};

const char *lf_quant_type_name(uint32_t type) {
    return type < sizeof ggml_names / sizeof ggml_names[0] ? ggml_names[type] : NULL;
}

size_t lf_quant_row_bytes(const lf_quant_type *q, size_t n_elems) {
    return n_elems / (size_t)q->block_elems * (size_t)q->block_bytes;
}

void lf_quant_to_bf16(const lf_quant_type *q, const void *src, size_t n_elems, uint16_t *dst) {
    const uint8_t *s = src;
    switch (q->type) {
    case LF_GGML_BF16:
        memcpy(dst, s, n_elems * 2);
        return;
    case LF_GGML_F16:
        for (size_t i = 0; i < n_elems; i++)
            dst[i] = lf_f32_to_bf16(lf_f16_to_f32((uint16_t)(s[2 * i] | (s[2 * i + 1] << 8))));
        return;
    case LF_GGML_F32:
        for (size_t i = 0; i < n_elems; i++) {
            float f;
            memcpy(&f, s + 4 * i, 4);
            dst[i] = lf_f32_to_bf16(f);
        }
        return;
    default:
        break;
    }
    lf_deq_fn fn = find_entry(q->type)->fn;
    float y[QK_K];
    size_t be = (size_t)q->block_elems;
    for (size_t b = 0; b < n_elems / be; b++) {
        fn(s + b * (size_t)q->block_bytes, y);
        for (size_t i = 0; i < be; i++) dst[b * be + i] = lf_f32_to_bf16(y[i]);
    }
}

void lf_quant_to_f32(const lf_quant_type *q, const void *src, size_t n_elems, float *dst) {
    lf_deq_fn fn = find_entry(q->type)->fn;
    size_t be = (size_t)q->block_elems;
    for (size_t b = 0; b < n_elems / be; b++) fn((const uint8_t *)src + b * (size_t)q->block_bytes, dst + b * be);
}
