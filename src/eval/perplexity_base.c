/* KL base files of `longflow perplexity` (format: docs/perplexity.md).
 *
 *   offset  size  field (little-endian)
 *   0       8     magic "LFKLBASE"
 *   8       4     version (1)
 *   12      4     k: top logits per position
 *   16      4     ctx
 *   20      4     stride
 *   24      4     vocab size
 *   28      4     n: positions
 *   32      8     tokens of the text
 *   40      8     text hash (FNV-1a 64 of the token ids and the prompt's length)
 *   48      8     model fingerprint
 *   56      256   model name, NUL-padded
 *   312     n records of 12 + 8k bytes: u32 index, f32 lse, f32 nll,
 *                 i32 ids[k], f32 logits[k]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/file.h"
#include "eval/perplexity.h"
#include "model/model.h"

#define BASE_MAGIC "LFKLBASE"
#define BASE_VERSION 1u
#define BASE_HEADER 312u

static const uint64_t FNV_OFFSET = 0xcbf29ce484222325ull, FNV_PRIME = 0x100000001b3ull;

static uint64_t fnv(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * FNV_PRIME;
    return h;
}

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}
static void put_f32(unsigned char *p, float f) {
    uint32_t v;
    memcpy(&v, &f, 4);
    put_u32(p, v);
}
static float get_f32(const unsigned char *p) {
    uint32_t v = get_u32(p);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

uint64_t lf_ppl_hash_tokens(const int *tokens, int n, int score_from) {
    uint64_t h = FNV_OFFSET;
    unsigned char b[4];
    for (int i = 0; i < n; i++) {
        put_u32(b, (uint32_t)tokens[i]);
        h = fnv(h, b, 4);
    }
    put_u32(b, (uint32_t)score_from);
    return fnv(h, b, 4);
}

static uint64_t fnv_weight(uint64_t h, const lf_weight *w, size_t max_bytes) {
    if (!w->data) return h;
    size_t bytes = (size_t)w->rows * lf_dtype_row_bytes(w->dtype, (size_t)w->cols);
    return fnv(h, w->data, bytes < max_bytes ? bytes : max_bytes);
}

uint64_t lf_ppl_model_fingerprint(const lf_model *m) {
    const lf_config *c = &m->cfg;
    int shape[] = {c->vocab_size, c->hidden_size, c->intermediate_size, c->n_layers,
                   c->n_heads,    c->n_kv_heads,  c->head_dim,          c->max_position};
    uint64_t h = fnv(FNV_OFFSET, c->arch_name, strnlen(c->arch_name, sizeof c->arch_name));
    h = fnv(h, shape, sizeof shape);
    h = fnv_weight(h, &m->embed, 1u << 16);
    h = fnv_weight(h, &m->final_norm, 1u << 16);
    return fnv_weight(h, &m->lm_head, 1u << 16);
}

static size_t record_bytes(uint32_t k) {
    return 12 + 8 * (size_t)k;
}

static void put_record(unsigned char *p, const lf_ppl_result *r, int i) {
    put_u32(p, (uint32_t)r->pos[i].index);
    put_f32(p + 4, r->pos[i].lse);
    put_f32(p + 8, r->pos[i].nll);
    for (int j = 0; j < r->k; j++) {
        put_u32(p + 12 + 4 * j, (uint32_t)r->top_id[(size_t)i * r->k + j]);
        put_f32(p + 12 + 4 * ((size_t)r->k + j), r->top_logit[(size_t)i * r->k + j]);
    }
}

int lf_ppl_base_write(const char *path, const lf_ppl_base_header *h, const lf_ppl_result *r, lf_error *err) {
    if (r->k < 1) return lf_fail(err, "%s: no top logits were recorded to write", path);
    unsigned char hdr[BASE_HEADER] = {0};
    memcpy(hdr, BASE_MAGIC, 8);
    put_u32(hdr + 8, BASE_VERSION);
    put_u32(hdr + 12, (uint32_t)r->k);
    put_u32(hdr + 16, h->ctx);
    put_u32(hdr + 20, h->stride);
    put_u32(hdr + 24, h->vocab);
    put_u32(hdr + 28, (uint32_t)r->n);
    put_u64(hdr + 32, h->n_tokens);
    put_u64(hdr + 40, h->text_hash);
    put_u64(hdr + 48, h->model_hash);
    memcpy(hdr + 56, h->model_name, strnlen(h->model_name, sizeof h->model_name - 1));
    FILE *f = fopen(path, "wb");
    if (!f) return lf_fail(err, "%s: cannot create: %s", path, strerror(errno));
    unsigned char *rec = malloc(record_bytes((uint32_t)r->k));
    int ok = rec && fwrite(hdr, 1, sizeof hdr, f) == sizeof hdr;
    for (int i = 0; ok && i < r->n; i++) {
        put_record(rec, r, i);
        ok = fwrite(rec, 1, record_bytes((uint32_t)r->k), f) == record_bytes((uint32_t)r->k);
    }
    free(rec);
    if (fclose(f) != 0) ok = 0;
    if (!ok) return lf_fail(err, "%s: write error: %s", path, strerror(errno));
    return 0;
}

/* The header fields; checks the magic, version and sizes against len. */
static int parse_header(const char *path, const unsigned char *b, size_t len, lf_ppl_base_header *h, uint32_t *n,
                        lf_error *err) {
    if (len < BASE_HEADER || memcmp(b, BASE_MAGIC, 8) != 0)
        return lf_fail(err, "%s: not a KL base file of longflow perplexity (bad magic or too short)", path);
    if (get_u32(b + 8) != BASE_VERSION)
        return lf_fail(err, "%s: KL base version %u, this longflow reads version %u", path, get_u32(b + 8),
                       BASE_VERSION);
    memset(h, 0, sizeof *h);
    h->k = get_u32(b + 12);
    h->ctx = get_u32(b + 16);
    h->stride = get_u32(b + 20);
    h->vocab = get_u32(b + 24);
    *n = get_u32(b + 28);
    h->n_tokens = get_u64(b + 32);
    h->text_hash = get_u64(b + 40);
    h->model_hash = get_u64(b + 48);
    memcpy(h->model_name, b + 56, sizeof h->model_name - 1);
    if (h->k < 1 || h->k > LF_PPL_TOPK_MAX || h->vocab < h->k || *n > (uint32_t)INT32_MAX)
        return lf_fail(err, "%s: bad header (k %u, vocabulary %u, %u positions)", path, h->k, h->vocab, *n);
    if ((len - BASE_HEADER) / record_bytes(h->k) != *n || (len - BASE_HEADER) % record_bytes(h->k) != 0)
        return lf_fail(err, "%s: %zu bytes of records, but the header says %u positions of %zu bytes", path,
                       len - BASE_HEADER, *n, record_bytes(h->k));
    return 0;
}

/* Records into r; ids must lie in the vocabulary and indices ascend. */
static int parse_records(const char *path, const unsigned char *b, const lf_ppl_base_header *h, lf_ppl_result *r,
                         lf_error *err) {
    const int k = (int)h->k;
    for (int i = 0; i < r->n; i++) {
        const unsigned char *p = b + BASE_HEADER + (size_t)i * record_bytes(h->k);
        uint32_t idx = get_u32(p);
        if (idx >= h->n_tokens || (i > 0 && (int64_t)idx <= r->pos[i - 1].index))
            return lf_fail(err, "%s: record %d: token index %u out of order or past the text", path, i, idx);
        r->pos[i].index = (int32_t)idx;
        r->pos[i].lse = get_f32(p + 4);
        r->pos[i].nll = get_f32(p + 8);
        for (int j = 0; j < k; j++) {
            uint32_t id = get_u32(p + 12 + 4 * j);
            if (id >= h->vocab) return lf_fail(err, "%s: record %d: token id %u outside the vocabulary", path, i, id);
            r->top_id[(size_t)i * k + j] = (int32_t)id;
            r->top_logit[(size_t)i * k + j] = get_f32(p + 12 + 4 * ((size_t)k + j));
        }
        r->pos[i].argmax = r->top_id[(size_t)i * k];
    }
    return 0;
}

int lf_ppl_base_parse(const char *path, const void *data, size_t len, lf_ppl_base_header *h, lf_ppl_result *r,
                      lf_error *err) {
    memset(r, 0, sizeof *r);
    const unsigned char *b = data;
    uint32_t n = 0;
    int rc = parse_header(path, b, len, h, &n, err);
    if (rc == 0) {
        r->n = (int)n;
        r->k = (int)h->k;
        r->pos = calloc(n ? n : 1, sizeof *r->pos);
        r->top_id = malloc((n ? n : 1) * (size_t)h->k * sizeof *r->top_id);
        r->top_logit = malloc((n ? n : 1) * (size_t)h->k * sizeof *r->top_logit);
        if (!r->pos || !r->top_id || !r->top_logit) rc = lf_fail(err, "%s: out of memory for %u positions", path, n);
    }
    if (rc == 0) rc = parse_records(path, b, h, r, err);
    if (rc) lf_ppl_result_free(r);
    return rc;
}

int lf_ppl_base_read(const char *path, lf_ppl_base_header *h, lf_ppl_result *r, lf_error *err) {
    char *buf;
    size_t len;
    memset(r, 0, sizeof *r);
    if (lf_read_file(path, &buf, &len, err)) return -1;
    int rc = lf_ppl_base_parse(path, buf, len, h, r, err);
    free(buf);
    return rc;
}

int lf_ppl_base_check(const char *path, const lf_ppl_base_header *file, const lf_ppl_base_header *run,
                      lf_error *err) {
    if (file->model_hash != run->model_hash || file->vocab != run->vocab)
        return lf_fail(err, "%s was made with another model (%s), not %s", path, file->model_name, run->model_name);
    if (file->n_tokens != run->n_tokens || file->text_hash != run->text_hash)
        return lf_fail(err, "%s was made for another text or --prompt-file (%llu tokens, hash %016llx; this one: %llu tokens, hash %016llx)",
                       path, (unsigned long long)file->n_tokens, (unsigned long long)file->text_hash,
                       (unsigned long long)run->n_tokens, (unsigned long long)run->text_hash);
    if (file->ctx != run->ctx)
        return lf_fail(err, "%s was made with --ctx %u, this run has --ctx %u", path, file->ctx, run->ctx);
    if (file->stride != run->stride)
        return lf_fail(err, "%s was made with --stride %u, this run has --stride %u", path, file->stride, run->stride);
    return 0;
}
