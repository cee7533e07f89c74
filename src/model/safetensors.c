/* safetensors reader: 8-byte little-endian header length, a JSON header
 * (parsed with cJSON) mapping tensor names to {dtype, shape, data_offsets},
 * then the raw data. The file is memory-mapped read-only and every entry is
 * validated before anything points into the mapping. */
#include "model/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/file.h"

/* The reference implementation refuses headers above 100 MB. */
#define LF_ST_MAX_HEADER (100ull * 1000 * 1000)
/* Integers above 2^53 do not survive a trip through a JSON double. */
#define LF_ST_MAX_INT 9007199254740992.0

typedef struct {
    size_t begin, end;
    int idx;
} lf_st_range;

static int range_cmp(const void *a, const void *b) {
    const lf_st_range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int tensor_name_cmp(const void *a, const void *b) {
    return strcmp(((const lf_tensor *)a)->name, ((const lf_tensor *)b)->name);
}

static int parse_dtype(const char *s, lf_dtype *out) {
    if (strcmp(s, "BF16") == 0) *out = LF_DTYPE_BF16;
    else if (strcmp(s, "F16") == 0) *out = LF_DTYPE_F16;
    else if (strcmp(s, "F32") == 0) *out = LF_DTYPE_F32;
    else return -1;
    return 0;
}

/* A non-negative integer JSON number that fits a double exactly. */
static int json_uint(const cJSON *j, double *out) {
    if (!cJSON_IsNumber(j)) return -1;
    double v = j->valuedouble;
    if (!(v >= 0) || v > LF_ST_MAX_INT || v != (double)(int64_t)v) return -1;
    *out = v;
    return 0;
}

void lf_st_close(lf_st_file *f) {
    if (!f) return;
    if (f->tensors) {
        for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
        free(f->tensors);
    }
    if (f->map && f->map != MAP_FAILED) munmap(f->map, f->map_size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

static int parse_entry(const char *path, const cJSON *e, lf_tensor *t, size_t data_size,
                       lf_st_range *r, lf_error *err) {
    const char *name = e->string;
    if (!cJSON_IsObject(e)) return lf_fail(err, "%s: tensor '%s': header entry is not an object", path, name);
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(jd)) return lf_fail(err, "%s: tensor '%s': missing or non-string \"dtype\"", path, name);
    if (!cJSON_IsArray(js)) return lf_fail(err, "%s: tensor '%s': missing or non-array \"shape\"", path, name);
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2)
        return lf_fail(err, "%s: tensor '%s': \"data_offsets\" must be an array of two integers", path, name);
    if (parse_dtype(jd->valuestring, &t->dtype) != 0)
        return lf_fail(err, "%s: tensor '%s': unsupported dtype %s (supported: BF16, F16, F32)", path, name,
                       jd->valuestring);
    int nd = cJSON_GetArraySize(js);
    if (nd > LF_MAX_DIMS)
        return lf_fail(err, "%s: tensor '%s': %d dimensions, at most %d supported", path, name, nd, LF_MAX_DIMS);
    t->ndim = nd;
    /* element count with overflow checks */
    double count = 1;
    for (int d = 0; d < nd; d++) {
        double v;
        if (json_uint(cJSON_GetArrayItem(js, d), &v) != 0)
            return lf_fail(err, "%s: tensor '%s': shape[%d] is not a non-negative integer", path, name, d);
        t->shape[d] = (int64_t)v;
        count *= v;
    }
    if (count * (double)lf_dtype_size(t->dtype) > LF_ST_MAX_INT)
        return lf_fail(err, "%s: tensor '%s': shape is too large", path, name);
    size_t nbytes = lf_dtype_size(t->dtype);
    for (int d = 0; d < nd; d++) nbytes *= (size_t)t->shape[d];
    double b, en;
    if (json_uint(cJSON_GetArrayItem(jo, 0), &b) != 0 || json_uint(cJSON_GetArrayItem(jo, 1), &en) != 0)
        return lf_fail(err, "%s: tensor '%s': data_offsets are not non-negative integers", path, name);
    if (b > en)
        return lf_fail(err, "%s: tensor '%s': data_offsets [%.0f, %.0f] begin after end", path, name, b, en);
    if (en > (double)data_size)
        return lf_fail(err, "%s: tensor '%s': data_offsets [%.0f, %.0f] past the end of the data (%zu bytes)",
                       path, name, b, en, data_size);
    if ((size_t)(en - b) != nbytes)
        return lf_fail(err,
                       "%s: tensor '%s': shape/bytes mismatch: data_offsets span %.0f bytes but dtype %s and "
                       "shape need %zu",
                       path, name, en - b, jd->valuestring, nbytes);
    r->begin = (size_t)b;
    r->end = (size_t)en;
    t->nbytes = nbytes;
    return 0;
}

int lf_st_open(const char *path, lf_st_file *f, lf_error *err) {
    memset(f, 0, sizeof *f);
    void *map;
    size_t size;
    if (lf_map_file(path, &map, &size, err) != 0) return -1;
    if (size < 8) {
        if (map) munmap(map, size);
        return lf_fail(err, "%s: truncated file: %zu bytes, too short for the 8-byte header length", path, size);
    }
    f->map = map;
    f->map_size = size;
    f->path = strdup(path);
    if (!f->path) {
        lf_st_close(f);
        return lf_fail(err, "%s: out of memory", path);
    }

    const unsigned char *p = map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | p[i];
    if (hlen > size - 8) {
        lf_st_close(f);
        return lf_fail(err, "%s: header length %llu past the end of the file (%zu bytes)", path,
                       (unsigned long long)hlen, size);
    }
    if (hlen > LF_ST_MAX_HEADER) {
        lf_st_close(f);
        return lf_fail(err, "%s: header length %llu is larger than the 100 MB limit", path,
                       (unsigned long long)hlen);
    }
    size_t data_start = 8 + (size_t)hlen;
    size_t data_size = size - data_start;

    cJSON *root = cJSON_ParseWithLength((const char *)p + 8, (size_t)hlen);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        lf_st_close(f);
        return lf_fail(err, "%s: header is not a JSON object", path);
    }

    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (e->string && strcmp(e->string, "__metadata__") == 0) continue;
        n++;
    }
    f->tensors = calloc(n ? (size_t)n : 1, sizeof *f->tensors);
    lf_st_range *ranges = calloc(n ? (size_t)n : 1, sizeof *ranges);
    if (!f->tensors || !ranges) {
        free(ranges);
        cJSON_Delete(root);
        lf_st_close(f);
        return lf_fail(err, "%s: out of memory for %d tensors", path, n);
    }

    int rc = 0;
    cJSON_ArrayForEach(e, root) {
        if (!e->string) continue;
        if (strcmp(e->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(e)) {
                rc = lf_fail(err, "%s: \"__metadata__\" is not an object", path);
                break;
            }
            continue;
        }
        int i = f->n_tensors;
        lf_tensor *t = &f->tensors[i];
        t->name = strdup(e->string);
        f->n_tensors++;
        if (!t->name) {
            rc = lf_fail(err, "%s: out of memory", path);
            break;
        }
        if (parse_entry(path, e, t, data_size, &ranges[i], err) != 0) {
            rc = -1;
            break;
        }
        ranges[i].idx = i;
        t->data = p + data_start + ranges[i].begin;
        size_t align = lf_dtype_size(t->dtype);
        if (t->nbytes && ((uintptr_t)t->data % align) != 0) {
            rc = lf_fail(err, "%s: tensor '%s': data at file offset %zu is not aligned to %zu bytes", path,
                         t->name, data_start + ranges[i].begin, align);
            break;
        }
    }
    cJSON_Delete(root);

    /* Duplicate names (cJSON keeps both entries, the format forbids it):
     * the tensors are kept sorted by name, which also serves lf_st_find */
    if (rc == 0 && f->n_tensors > 1) {
        lf_st_sort(f);
        for (int i = 1; i < f->n_tensors && rc == 0; i++)
            if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0)
                rc = lf_fail(err, "%s: tensor '%s' appears twice in the header", path, f->tensors[i].name);
        for (int i = 0; i < f->n_tensors; i++) { /* the byte ranges, in the sorted order */
            ranges[i].begin = (size_t)((const unsigned char *)f->tensors[i].data - (p + data_start));
            ranges[i].end = ranges[i].begin + f->tensors[i].nbytes;
            ranges[i].idx = i;
        }
    }
    if (rc == 0 && f->n_tensors > 1) {
        qsort(ranges, (size_t)f->n_tensors, sizeof *ranges, range_cmp);
        for (int i = 1; i < f->n_tensors; i++) {
            const lf_st_range *a = &ranges[i - 1], *b = &ranges[i];
            if (b->begin < a->end) {
                rc = lf_fail(err, "%s: overlapping data_offsets: tensor '%s' [%zu, %zu] and tensor '%s' [%zu, %zu]",
                             path, f->tensors[a->idx].name, a->begin, a->end, f->tensors[b->idx].name, b->begin,
                             b->end);
                break;
            }
        }
    }
    free(ranges);
    if (rc != 0) {
        lf_st_close(f);
        return -1;
    }
    return 0;
}

void lf_st_sort(lf_st_file *f) {
    if (f->n_tensors > 1) qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, tensor_name_cmp);
}

const lf_tensor *lf_st_find(const lf_st_file *f, const char *name) {
    if (f->n_tensors == 0) return NULL;
    const lf_tensor key = {.name = (char *)name};
    return bsearch(&key, f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, tensor_name_cmp);
}
