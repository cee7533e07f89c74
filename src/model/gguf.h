/* A GGUF file (versions 2 and 3), memory-mapped read-only and validated:
 * header, metadata key/values of every type, tensor infos and the alignment
 * of the data section. Every length and count read from the file is checked
 * against the bytes that remain before it is used, so nothing is allocated
 * beyond what the file's size justifies. */
#ifndef LF_MODEL_GGUF_H
#define LF_MODEL_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "longflow.h"
#include "model/quant.h"

/* GGUF metadata value types. */
enum {
    LF_GGUF_UINT8 = 0,
    LF_GGUF_INT8 = 1,
    LF_GGUF_UINT16 = 2,
    LF_GGUF_INT16 = 3,
    LF_GGUF_UINT32 = 4,
    LF_GGUF_INT32 = 5,
    LF_GGUF_FLOAT32 = 6,
    LF_GGUF_BOOL = 7,
    LF_GGUF_STRING = 8,
    LF_GGUF_ARRAY = 9,
    LF_GGUF_UINT64 = 10,
    LF_GGUF_INT64 = 11,
    LF_GGUF_FLOAT64 = 12,
};

#define LF_GGUF_MAX_DIMS 4

typedef struct lf_gguf_kv {
    char *key;
    uint32_t type;        /* LF_GGUF_* */
    uint32_t elem_type;   /* arrays: type of the elements */
    uint64_t count;       /* arrays: number of elements; else 1 */
    const uint8_t *value; /* into the mapping: the scalar, the string's bytes, or the first element */
    uint64_t str_len;     /* strings: byte length */
} lf_gguf_kv;

typedef struct lf_gguf_tensor {
    char *name;
    int ndim;
    int64_t ne[LF_GGUF_MAX_DIMS]; /* ggml order: ne[0] is the innermost (a row's length) */
    const lf_quant_type *type;
    uint64_t offset;              /* from the start of the data section */
    const uint8_t *data;          /* into the mapping */
    size_t nbytes;
} lf_gguf_tensor;

typedef struct lf_gguf_file {
    char *path;
    uint8_t *map;
    size_t map_size;
    uint32_t version;
    uint64_t alignment;
    int n_kv;
    lf_gguf_kv *kv;
    int n_tensors;
    lf_gguf_tensor *tensors;
} lf_gguf_file;

/* Open, map and validate. On failure nothing stays open and err holds one
 * line naming the file and the problem. */
int lf_gguf_open(const char *path, lf_gguf_file *f, lf_error *err);
/* Validate a GGUF image already in memory (the bytes must outlive f; the
 * fuzz harness and tests use this). lf_gguf_close does not free them. */
int lf_gguf_parse(const uint8_t *data, size_t size, const char *name, lf_gguf_file *f, lf_error *err);
void lf_gguf_close(lf_gguf_file *f);

const lf_gguf_kv *lf_gguf_find_kv(const lf_gguf_file *f, const char *key);
const lf_gguf_tensor *lf_gguf_find_tensor(const lf_gguf_file *f, const char *name);

/* Typed getters. Each returns 1 when the key is there and has a usable type,
 * 0 when it is absent, -1 (with err naming the file and key) when it has
 * another type or its value does not fit. */
int lf_gguf_get_int(const lf_gguf_file *f, const char *key, int64_t *out, lf_error *err);   /* any integer */
int lf_gguf_get_float(const lf_gguf_file *f, const char *key, double *out, lf_error *err);  /* float or int */
int lf_gguf_get_bool(const lf_gguf_file *f, const char *key, bool *out, lf_error *err);
/* A string as a malloc'd NUL-terminated copy (an embedded NUL is an error). */
int lf_gguf_get_str(const lf_gguf_file *f, const char *key, char **out, lf_error *err);
/* An array with elements of elem_type: *n elements, *first points at them. */
int lf_gguf_get_array(const lf_gguf_file *f, const char *key, uint32_t elem_type, uint64_t *n,
                      const uint8_t **first, lf_error *err);
/* An array of strings as malloc'd NUL-terminated copies: (*out)[i]; free
 * with lf_gguf_free_strs. */
int lf_gguf_get_strs(const lf_gguf_file *f, const char *key, char ***out, int *n, lf_error *err);
void lf_gguf_free_strs(char **s, int n);

#endif
