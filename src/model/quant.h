/* ggml tensor types as GGUF files store them, and their dequantizers to
 * bf16. Each block type keeps its elements in fixed-size blocks (32 or 256
 * values) with one or more fp16 scales; dequantizing computes every value in
 * fp32 in the same order as ggml's reference (and the gguf Python package)
 * and rounds it once to bf16 (round to nearest even). */
#ifndef LF_MODEL_QUANT_H
#define LF_MODEL_QUANT_H

#include <stddef.h>
#include <stdint.h>

/* ggml_type numbers (the values in GGUF tensor infos). */
enum {
    LF_GGML_F32 = 0,
    LF_GGML_F16 = 1,
    LF_GGML_Q4_0 = 2,
    LF_GGML_Q4_1 = 3,
    LF_GGML_Q5_0 = 6,
    LF_GGML_Q5_1 = 7,
    LF_GGML_Q8_0 = 8,
    LF_GGML_Q4_K = 12,
    LF_GGML_Q5_K = 13,
    LF_GGML_Q6_K = 14,
    LF_GGML_BF16 = 30,
};

typedef struct lf_quant_type {
    uint32_t type;     /* ggml_type */
    const char *name;  /* "Q4_K" */
    int block_elems;   /* values per block (1 for F32/F16/BF16) */
    int block_bytes;   /* bytes per block */
} lf_quant_type;

/* The supported type with this number, or NULL. */
const lf_quant_type *lf_quant_find(uint32_t type);
/* A ggml type's name for messages, also for types that are known but not
 * supported ("IQ2_XXS"); NULL when the number names no ggml type. */
const char *lf_quant_type_name(uint32_t type);
/* Bytes of n_elems values (n_elems a multiple of the block size). */
size_t lf_quant_row_bytes(const lf_quant_type *q, size_t n_elems);
/* Dequantize n_elems values (a multiple of the block size) from src into
 * dst as bf16. */
void lf_quant_to_bf16(const lf_quant_type *q, const void *src, size_t n_elems, uint16_t *dst);
/* Dequantize n_elems values of a block type (not F32/F16/BF16) into dst as
 * fp32 (the values lf_quant_to_bf16 rounds). */
void lf_quant_to_f32(const lf_quant_type *q, const void *src, size_t n_elems, float *dst);

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K super-block
 * from its 12 packed scale bytes q (inline: the CPU's k-quant dot products
 * unpack them for every super-block). */
static inline void lf_quant_k_scale_min(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

#endif
