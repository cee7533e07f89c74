/* A safetensors file, memory-mapped and validated. The header is parsed with
 * cJSON; every tensor's dtype, shape and byte range are checked against the
 * file before anything reads it. */
#ifndef LF_MODEL_SAFETENSORS_H
#define LF_MODEL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include "longflow.h"

#define LF_MAX_DIMS 4

typedef struct lf_tensor {
    char *name;
    lf_dtype dtype;
    int ndim;
    int64_t shape[LF_MAX_DIMS];
    const void *data; /* points into the mapping */
    size_t nbytes;
} lf_tensor;

typedef struct lf_st_file {
    char *path;
    void *map;
    size_t map_size;
    int n_tensors;
    lf_tensor *tensors; /* sorted by name */
} lf_st_file;

/* Open and validate. On failure the file is left closed and err names the
 * path and the problem (header length past the end, overlapping offsets,
 * unsupported dtype, ...). */
int lf_st_open(const char *path, lf_st_file *f, lf_error *err);
void lf_st_close(lf_st_file *f);
/* Sort f's tensors by name (what lf_st_find needs; views built by other
 * loaders call it). */
void lf_st_sort(lf_st_file *f);
/* The tensor of that name (binary search), or NULL. */
const lf_tensor *lf_st_find(const lf_st_file *f, const char *name);

#endif
