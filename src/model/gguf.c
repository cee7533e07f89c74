/* GGUF reader. Layout (little-endian): "GGUF", u32 version, u64 tensor
 * count, u64 key/value count; the key/values (u64-length string key, u32
 * type, value; arrays are u32 element type, u64 count, elements); the tensor
 * infos (name, u32 dimension count, u64 dimensions, u32 ggml type, u64
 * offset); padding to general.alignment (32 by default); the data section.
 * Every read goes through a cursor that refuses to step past the end. */
#include "model/gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/error.h"
#include "core/file.h"

#define GGUF_DEFAULT_ALIGNMENT 32
/* Smallest encodings, used to bound counts before anything is allocated. */
#define MIN_KV_BYTES 13     /* empty key (8) + type (4) + a one-byte value */
#define MIN_TENSOR_BYTES 32 /* empty name (8) + n_dims (4) + one dimension (8) + type (4) + offset (8) */

typedef struct {
    const uint8_t *p;
    size_t size, pos;
    const char *name;
    lf_error *err;
} cursor;

static size_t remaining(const cursor *c) { return c->size - c->pos; }

/* The next n bytes, or NULL (and an error) when the file ends first. */
static const uint8_t *take(cursor *c, uint64_t n, const char *what) {
    if (n > remaining(c)) {
        lf_fail(c->err, "%s: truncated file: %s ends past the end of the file (at byte %zu of %zu)", c->name, what,
                c->pos, c->size);
        return NULL;
    }
    const uint8_t *at = c->p + c->pos;
    c->pos += (size_t)n;
    return at;
}

static uint64_t le(const uint8_t *b, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | b[i];
    return v;
}

static int take_u32(cursor *c, uint32_t *v, const char *what) {
    const uint8_t *b = take(c, 4, what);
    if (!b) return -1;
    *v = (uint32_t)le(b, 4);
    return 0;
}

static int take_u64(cursor *c, uint64_t *v, const char *what) {
    const uint8_t *b = take(c, 8, what);
    if (!b) return -1;
    *v = le(b, 8);
    return 0;
}

/* A u64-length string: its bytes stay in the file. */
static int take_str(cursor *c, const uint8_t **s, uint64_t *len, const char *what) {
    *s = NULL;
    if (take_u64(c, len, what) != 0) return -1;
    if (*len > remaining(c))
        return lf_fail(c->err, "%s: %s: string length %llu is past the end of the file (%zu bytes left)", c->name,
                       what, (unsigned long long)*len, remaining(c));
    *s = take(c, *len, what);
    return 0;
}

/* A malloc'd NUL-terminated copy of a name read from the file; a NUL inside
 * would make two different names compare equal, so it is refused. */
static char *dup_name(cursor *c, const uint8_t *s, uint64_t len, const char *what) {
    if (memchr(s, 0, (size_t)len)) {
        lf_fail(c->err, "%s: %s holds a NUL byte", c->name, what);
        return NULL;
    }
    char *d = malloc((size_t)len + 1);
    if (!d) {
        lf_fail(c->err, "%s: out of memory", c->name);
        return NULL;
    }
    memcpy(d, s, (size_t)len);
    d[len] = 0;
    return d;
}

/* A name (metadata key or tensor name) as a malloc'd copy. */
static int take_name(cursor *c, char **out, const char *what) {
    const uint8_t *s = NULL;
    uint64_t len = 0;
    if (take_str(c, &s, &len, what) != 0) return -1;
    *out = dup_name(c, s, len, what);
    return *out ? 0 : -1;
}

/* Bytes of one scalar of a metadata type; 0 for strings, arrays, unknown. */
static size_t scalar_size(uint32_t t) {
    switch (t) {
    case LF_GGUF_UINT8: case LF_GGUF_INT8: case LF_GGUF_BOOL: return 1;
    case LF_GGUF_UINT16: case LF_GGUF_INT16: return 2;
    case LF_GGUF_UINT32: case LF_GGUF_INT32: case LF_GGUF_FLOAT32: return 4;
    case LF_GGUF_UINT64: case LF_GGUF_INT64: case LF_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

/* ---- metadata ------------------------------------------------------------ */

static int parse_array(cursor *c, lf_gguf_kv *kv) {
    if (take_u32(c, &kv->elem_type, "array element type") || take_u64(c, &kv->count, "array length")) return -1;
    size_t es = scalar_size(kv->elem_type);
    if (kv->elem_type == LF_GGUF_ARRAY)
        return lf_fail(c->err, "%s: key '%s': arrays of arrays are not supported", c->name, kv->key);
    if (es == 0 && kv->elem_type != LF_GGUF_STRING)
        return lf_fail(c->err, "%s: key '%s': unknown array element type %u", c->name, kv->key, kv->elem_type);
    /* a string takes at least its 8-byte length */
    uint64_t min_each = es ? es : 8;
    if (kv->count > remaining(c) / min_each)
        return lf_fail(c->err, "%s: key '%s': array count %llu is past the end of the file", c->name, kv->key,
                       (unsigned long long)kv->count);
    kv->value = c->p + c->pos;
    if (es) return take(c, kv->count * es, "array") ? 0 : -1;
    char what[160];
    snprintf(what, sizeof what, "key '%.100s': string %s", kv->key, "element");
    for (uint64_t i = 0; i < kv->count; i++) {
        const uint8_t *s;
        uint64_t len;
        if (take_str(c, &s, &len, what) != 0) return -1;
    }
    return 0;
}

static int parse_kv(cursor *c, lf_gguf_kv *kv, int index) {
    char what[160];
    snprintf(what, sizeof what, "metadata key %d", index);
    if (take_name(c, &kv->key, what) != 0) return -1;
    snprintf(what, sizeof what, "key '%.100s'", kv->key);
    if (take_u32(c, &kv->type, what) != 0) return -1;
    kv->count = 1;
    if (kv->type == LF_GGUF_STRING) return take_str(c, &kv->value, &kv->str_len, what);
    if (kv->type == LF_GGUF_ARRAY) return parse_array(c, kv);
    size_t es = scalar_size(kv->type);
    if (es == 0) return lf_fail(c->err, "%s: key '%s': unknown value type %u", c->name, kv->key, kv->type);
    kv->value = take(c, es, what);
    return kv->value ? 0 : -1;
}

/* ---- tensor infos -------------------------------------------------------- */

static int parse_tensor_type(cursor *c, lf_gguf_tensor *t) {
    uint32_t type;
    if (take_u32(c, &type, t->name) != 0) return -1;
    t->type = lf_quant_find(type);
    if (t->type) return 0;
    const char *known = lf_quant_type_name(type);
    if (known)
        return lf_fail(c->err, "%s: tensor '%s' has type %s, which is not supported (supported: F32, F16, BF16, "
                       "Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)", c->name, t->name, known);
    return lf_fail(c->err, "%s: tensor '%s' has unknown tensor type %u", c->name, t->name, type);
}

static int parse_tensor(cursor *c, lf_gguf_tensor *t, int index) {
    char what[48];
    snprintf(what, sizeof what, "tensor info %d", index);
    if (take_name(c, &t->name, what) != 0) return -1;
    uint32_t nd;
    if (take_u32(c, &nd, t->name) != 0) return -1;
    if (nd < 1 || nd > LF_GGUF_MAX_DIMS)
        return lf_fail(c->err, "%s: tensor '%s' has %u dimensions (1 to %d supported)", c->name, t->name, nd,
                       LF_GGUF_MAX_DIMS);
    t->ndim = (int)nd;
    uint64_t elems = 1;
    for (int d = 0; d < t->ndim; d++) {
        uint64_t ne;
        if (take_u64(c, &ne, t->name) != 0) return -1;
        if (ne > (uint64_t)INT64_MAX || (ne && elems > UINT64_MAX / ne))
            return lf_fail(c->err, "%s: tensor '%s': dimensions overflow", c->name, t->name);
        t->ne[d] = (int64_t)ne;
        elems *= ne;
    }
    if (parse_tensor_type(c, t) != 0) return -1;
    uint64_t be = (uint64_t)t->type->block_elems, bb = (uint64_t)t->type->block_bytes;
    if ((uint64_t)t->ne[0] % be != 0)
        return lf_fail(c->err, "%s: tensor '%s': row length %lld is not a multiple of %s's block of %llu", c->name,
                       t->name, (long long)t->ne[0], t->type->name, (unsigned long long)be);
    if (elems / be > (uint64_t)SIZE_MAX / bb)
        return lf_fail(c->err, "%s: tensor '%s': data past the end of the file", c->name, t->name);
    t->nbytes = (size_t)(elems / be * bb);
    return take_u64(c, &t->offset, t->name);
}

/* ---- duplicates ---------------------------------------------------------- */

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The first name that appears twice in names[n], or NULL. Sorts names. */
static const char *find_duplicate(const char **names, int n) {
    qsort(names, (size_t)n, sizeof *names, cmp_str_ptr);
    for (int i = 1; i < n; i++)
        if (strcmp(names[i - 1], names[i]) == 0) return names[i];
    return NULL;
}

static int check_duplicates(const lf_gguf_file *f, lf_error *err) {
    int n = f->n_kv > f->n_tensors ? f->n_kv : f->n_tensors;
    const char **names = malloc((n ? (size_t)n : 1) * sizeof *names);
    if (!names) return lf_fail(err, "%s: out of memory", f->path);
    for (int i = 0; i < f->n_kv; i++) names[i] = f->kv[i].key;
    const char *dup = find_duplicate(names, f->n_kv);
    int rc = 0;
    if (dup) {
        rc = lf_fail(err, "%s: duplicate metadata key '%s'", f->path, dup);
    } else {
        for (int i = 0; i < f->n_tensors; i++) names[i] = f->tensors[i].name;
        dup = find_duplicate(names, f->n_tensors);
        if (dup) rc = lf_fail(err, "%s: duplicate tensor name '%s'", f->path, dup);
    }
    free(names);
    return rc;
}

/* ---- the whole file ------------------------------------------------------ */

static int parse_header(cursor *c, lf_gguf_file *f, uint64_t *n_tensors, uint64_t *n_kv) {
    const uint8_t *magic = take(c, 4, "the magic number");
    if (!magic) return -1;
    if (memcmp(magic, "GGUF", 4) != 0) return lf_fail(c->err, "%s: not a GGUF file (bad magic number)", c->name);
    if (take_u32(c, &f->version, "the version")) return -1;
    if (f->version == 1) return lf_fail(c->err, "%s: GGUF version 1 is not supported (only 2 and 3)", c->name);
    if (f->version != 2 && f->version != 3) {
        if ((f->version & 0xffff) == 0 && f->version != 0)
            return lf_fail(c->err, "%s: big-endian GGUF files are not supported", c->name);
        return lf_fail(c->err, "%s: unknown GGUF version %u (supported: 2 and 3)", c->name, f->version);
    }
    if (take_u64(c, n_tensors, "the tensor count") || take_u64(c, n_kv, "the metadata count")) return -1;
    if (*n_kv > remaining(c) / MIN_KV_BYTES)
        return lf_fail(c->err, "%s: metadata count %llu is past the end of the file", c->name,
                       (unsigned long long)*n_kv);
    if (*n_tensors > remaining(c) / MIN_TENSOR_BYTES)
        return lf_fail(c->err, "%s: tensor count %llu is past the end of the file", c->name,
                       (unsigned long long)*n_tensors);
    return 0;
}

static int read_alignment(lf_gguf_file *f, lf_error *err) {
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t a;
    int r = lf_gguf_get_int(f, "general.alignment", &a, err);
    if (r < 0) return -1;
    if (r == 0) return 0;
    if (a <= 0 || a > (1 << 20) || (a & (a - 1)) != 0)
        return lf_fail(err, "%s: general.alignment = %lld is not a power of two up to 1 MiB", f->path, (long long)a);
    f->alignment = (uint64_t)a;
    return 0;
}

/* Place every tensor inside the data section, aligned. */
static int place_tensors(cursor *c, lf_gguf_file *f) {
    size_t start = (c->pos + (size_t)f->alignment - 1) / (size_t)f->alignment * (size_t)f->alignment;
    if (f->n_tensors > 0 && start > c->size)
        return lf_fail(c->err, "%s: truncated file: the data section starts past the end of the file", c->name);
    size_t data_size = start <= c->size ? c->size - start : 0;
    for (int i = 0; i < f->n_tensors; i++) {
        lf_gguf_tensor *t = &f->tensors[i];
        if (t->offset % f->alignment != 0)
            return lf_fail(c->err, "%s: tensor '%s': offset %llu is not a multiple of the alignment %llu", c->name,
                           t->name, (unsigned long long)t->offset, (unsigned long long)f->alignment);
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return lf_fail(c->err, "%s: tensor '%s': data (%zu bytes at offset %llu) past the end of the file",
                           c->name, t->name, t->nbytes, (unsigned long long)t->offset);
        t->data = c->p + start + t->offset;
    }
    return 0;
}

int lf_gguf_parse(const uint8_t *data, size_t size, const char *name, lf_gguf_file *f, lf_error *err) {
    memset(f, 0, sizeof *f);
    cursor c = {data, size, 0, name, err};
    f->path = strdup(name);
    if (!f->path) return lf_fail(err, "%s: out of memory", name);
    uint64_t n_tensors = 0, n_kv = 0;
    if (parse_header(&c, f, &n_tensors, &n_kv) != 0) goto fail;
    f->kv = calloc(n_kv ? (size_t)n_kv : 1, sizeof *f->kv);
    f->tensors = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *f->tensors);
    if (!f->kv || !f->tensors) {
        lf_fail(err, "%s: out of memory", name);
        goto fail;
    }
    for (uint64_t i = 0; i < n_kv; i++, f->n_kv++)
        if (parse_kv(&c, &f->kv[i], (int)i) != 0) {
            f->n_kv++; /* free its key too */
            goto fail;
        }
    if (read_alignment(f, err) != 0) goto fail;
    for (uint64_t i = 0; i < n_tensors; i++, f->n_tensors++)
        if (parse_tensor(&c, &f->tensors[i], (int)i) != 0) {
            f->n_tensors++;
            goto fail;
        }
    if (check_duplicates(f, err) != 0 || place_tensors(&c, f) != 0) goto fail;
    return 0;
fail:
    lf_gguf_close(f);
    return -1;
}

int lf_gguf_open(const char *path, lf_gguf_file *f, lf_error *err) {
    memset(f, 0, sizeof *f);
    void *map;
    size_t size;
    if (lf_map_file(path, &map, &size, err) != 0) return -1;
    if (size == 0) return lf_fail(err, "%s: truncated file: empty", path);
    if (lf_gguf_parse(map, size, path, f, err) != 0) {
        munmap(map, size);
        return -1;
    }
    f->map = map;
    f->map_size = size;
    return 0;
}

void lf_gguf_close(lf_gguf_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n_kv; i++) free(f->kv[i].key);
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->kv);
    free(f->tensors);
    free(f->path);
    if (f->map) munmap(f->map, f->map_size);
    memset(f, 0, sizeof *f);
}

/* ---- lookups ------------------------------------------------------------- */

const lf_gguf_kv *lf_gguf_find_kv(const lf_gguf_file *f, const char *key) {
    for (int i = 0; i < f->n_kv; i++)
        if (strcmp(f->kv[i].key, key) == 0) return &f->kv[i];
    return NULL;
}

const lf_gguf_tensor *lf_gguf_find_tensor(const lf_gguf_file *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

static const char *const type_names[] = {"uint8", "int8",  "uint16", "int16", "uint32", "int32", "float32",
                                         "bool",  "string", "array", "uint64", "int64", "float64"};

static int wrong_type(const lf_gguf_file *f, const lf_gguf_kv *kv, const char *want, lf_error *err) {
    const char *have = kv->type < sizeof type_names / sizeof type_names[0] ? type_names[kv->type] : "?";
    return lf_fail(err, "%s: key '%s' is a %s, expected %s", f->path, kv->key, have, want);
}

/* An integer element of an integer type (signed types sign-extended). */
static int int_value(uint32_t type, const uint8_t *v, int64_t *out) {
    switch (type) {
    case LF_GGUF_UINT8: *out = v[0]; return 0;
    case LF_GGUF_INT8: *out = (int8_t)v[0]; return 0;
    case LF_GGUF_UINT16: *out = (int64_t)le(v, 2); return 0;
    case LF_GGUF_INT16: *out = (int16_t)le(v, 2); return 0;
    case LF_GGUF_UINT32: *out = (int64_t)le(v, 4); return 0;
    case LF_GGUF_INT32: *out = (int32_t)le(v, 4); return 0;
    case LF_GGUF_INT64: *out = (int64_t)le(v, 8); return 0;
    case LF_GGUF_UINT64:
        if (le(v, 8) > (uint64_t)INT64_MAX) return -1;
        *out = (int64_t)le(v, 8);
        return 0;
    default: return -1;
    }
}

int lf_gguf_get_int(const lf_gguf_file *f, const char *key, int64_t *out, lf_error *err) {
    const lf_gguf_kv *kv = lf_gguf_find_kv(f, key);
    if (!kv) return 0;
    if (scalar_size(kv->type) == 0 || kv->type == LF_GGUF_FLOAT32 || kv->type == LF_GGUF_FLOAT64 ||
        kv->type == LF_GGUF_BOOL)
        return wrong_type(f, kv, "an integer", err);
    if (int_value(kv->type, kv->value, out) != 0)
        return lf_fail(err, "%s: key '%s': value does not fit a signed 64-bit integer", f->path, key);
    return 1;
}

int lf_gguf_get_float(const lf_gguf_file *f, const char *key, double *out, lf_error *err) {
    const lf_gguf_kv *kv = lf_gguf_find_kv(f, key);
    if (!kv) return 0;
    if (kv->type == LF_GGUF_FLOAT32) {
        float v;
        uint32_t u = (uint32_t)le(kv->value, 4);
        memcpy(&v, &u, 4);
        *out = v;
        return 1;
    }
    if (kv->type == LF_GGUF_FLOAT64) {
        uint64_t u = le(kv->value, 8);
        memcpy(out, &u, 8);
        return 1;
    }
    int64_t i;
    int r = lf_gguf_get_int(f, key, &i, err);
    if (r <= 0) return r < 0 ? wrong_type(f, kv, "a number", err) : 0;
    *out = (double)i;
    return 1;
}

int lf_gguf_get_bool(const lf_gguf_file *f, const char *key, bool *out, lf_error *err) {
    const lf_gguf_kv *kv = lf_gguf_find_kv(f, key);
    if (!kv) return 0;
    if (kv->type != LF_GGUF_BOOL) return wrong_type(f, kv, "a bool", err);
    *out = kv->value[0] != 0;
    return 1;
}

int lf_gguf_get_str(const lf_gguf_file *f, const char *key, char **out, lf_error *err) {
    const lf_gguf_kv *kv = lf_gguf_find_kv(f, key);
    if (!kv) return 0;
    if (kv->type != LF_GGUF_STRING) return wrong_type(f, kv, "a string", err);
    if (memchr(kv->value, 0, (size_t)kv->str_len)) return lf_fail(err, "%s: key '%s' holds a NUL byte", f->path, key);
    char *s = malloc((size_t)kv->str_len + 1);
    if (!s) return lf_fail(err, "%s: out of memory", f->path);
    memcpy(s, kv->value, (size_t)kv->str_len);
    s[kv->str_len] = 0;
    *out = s;
    return 1;
}

int lf_gguf_get_array(const lf_gguf_file *f, const char *key, uint32_t elem_type, uint64_t *n,
                      const uint8_t **first, lf_error *err) {
    const lf_gguf_kv *kv = lf_gguf_find_kv(f, key);
    if (!kv) return 0;
    if (kv->type != LF_GGUF_ARRAY || kv->elem_type != elem_type) {
        char want[48];
        snprintf(want, sizeof want, "an array of %s", elem_type < 13 ? type_names[elem_type] : "?");
        return wrong_type(f, kv, want, err);
    }
    *n = kv->count;
    *first = kv->value;
    return 1;
}

void lf_gguf_free_strs(char **s, int n) {
    if (!s) return;
    for (int i = 0; i < n; i++) free(s[i]);
    free(s);
}

int lf_gguf_get_strs(const lf_gguf_file *f, const char *key, char ***out, int *n, lf_error *err) {
    uint64_t count;
    const uint8_t *p;
    int r = lf_gguf_get_array(f, key, LF_GGUF_STRING, &count, &p, err);
    if (r <= 0) return r;
    if (count > (uint64_t)INT32_MAX) return lf_fail(err, "%s: key '%s': too many strings", f->path, key);
    char **v = calloc(count ? (size_t)count : 1, sizeof *v);
    if (!v) return lf_fail(err, "%s: out of memory", f->path);
    for (uint64_t i = 0; i < count; i++) {
        size_t len = (size_t)le(p, 8); /* validated by the parser */
        p += 8;
        if (memchr(p, 0, len) || !(v[i] = malloc(len + 1))) {
            lf_gguf_free_strs(v, (int)i);
            return lf_fail(err, "%s: key '%s': string %llu holds a NUL byte (or out of memory)", f->path, key,
                           (unsigned long long)i);
        }
        memcpy(v[i], p, len);
        v[i][len] = 0;
        p += len;
    }
    *out = v;
    *n = (int)count;
    return 1;
}
