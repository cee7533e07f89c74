/* Loading tokenizer.json / tokenizer_config.json, encoding (added tokens,
 * normalizer, pre-tokenizer, BPE, post-processor) and decoding. */
#include "tokenizer/tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/file.h"
#include "tokenizer/tok_internal.h"

#define OOM() lf_fail(err, "out of memory")
#define OOM_CTX(c) lf_fail((c)->err, "out of memory")

/* ---- scratch ------------------------------------------------------------- */
int lf_scratch_init(lf_scratch *s) {
    memset(s, 0, sizeof *s);
    s->md = pcre2_match_data_create(16, NULL);
    return s->md ? 0 : -1;
}

void lf_scratch_free(lf_scratch *s) {
    if (s->md) pcre2_match_data_free(s->md);
    for (int i = 0; i < 3; i++) lf_buf_free(&s->nb[i]);
    lf_pieces_free(&s->pc[0]);
    lf_pieces_free(&s->pc[1]);
    lf_buf_free(&s->tmp);
    free(s->sc);
    free(s->sprev);
    free(s->snext);
    free(s->slen);
    free(s->heap);
    memset(s, 0, sizeof *s);
}

/* ---- string storage ------------------------------------------------------ */
static char *tok_strdup(lf_tokenizer *t, const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) return NULL;
    char **b = realloc(t->blocks, (size_t)(t->n_blocks + 1) * sizeof *b);
    if (!b) {
        free(p);
        return NULL;
    }
    t->blocks = b;
    t->blocks[t->n_blocks++] = p;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* ---- vocabulary map ------------------------------------------------------ */
/* Open addressing; each slot holds the string, its length, a hash tag and
 * the id, so that a lookup costs the slot and the string. */
static int vocab_find_h(const lf_tokenizer *t, const char *s, size_t n, uint64_t h) {
    if (!t->vmap.cap) return -1;
    size_t mask = t->vmap.cap - 1;
    uint32_t tag = (uint32_t)(h >> 32);
    size_t i = (size_t)h & mask;
    for (;;) {
        const lf_vocab_slot *v = &t->vmap.slots[i];
        if (!v->s) return -1;
        if (v->tag == tag && v->len == n && !memcmp(v->s, s, n)) return v->id;
        i = (i + 1) & mask;
    }
}

int lf_tok_vocab_find(const lf_tokenizer *t, const char *s, size_t n) {
    return vocab_find_h(t, s, n, lf_hash_bytes(s, n));
}

static inline void vocab_prefetch(const lf_tokenizer *t, uint64_t h) {
#if defined(__GNUC__)
    __builtin_prefetch(&t->vmap.slots[(size_t)h & (t->vmap.cap - 1)]);
#else
    (void)t;
    (void)h;
#endif
}

static int vmap_build(lf_tokenizer *t, lf_error *err) {
    size_t cap = 16;
    while (cap < (size_t)t->n_entries + (size_t)t->n_entries / 2) cap *= 2;
    t->vmap.slots = calloc(cap, sizeof *t->vmap.slots);
    if (!t->vmap.slots) return OOM();
    t->vmap.cap = cap;
    size_t mask = cap - 1;
    for (int e = 0; e < t->n_entries; e++) {
        uint64_t h = lf_hash_bytes(t->e_str[e], t->e_len[e]);
        size_t i = (size_t)h & mask;
        while (t->vmap.slots[i].s) i = (i + 1) & mask;
        t->vmap.slots[i] = (lf_vocab_slot){t->e_str[e], t->e_len[e], (uint32_t)(h >> 32), t->e_id[e]};
    }
    return 0;
}

/* The id tables are indexed by id. Vocabularies are dense (ids 0..n-1, the
 * added tokens right after), so an id may lie at most LF_TOK_ID_SLACK past
 * twice the number of tokens defined: the tables are then sized by what the
 * file holds, never by a number written in it (a few escalating ids would
 * otherwise ask for gigabytes). */
#define LF_TOK_ID_SLACK 65536

static int id_check(const char *path, const char *what, int id, long long tokens, lf_error *err) {
    const long long limit = 2 * tokens + LF_TOK_ID_SLACK;
    if (id < limit) return 0;
    return lf_fail(err, "%s: %s has id %d, beyond %lld for %lld tokens (ids must stay below 2 x tokens + %d)",
                   path, what, id, limit, tokens, LF_TOK_ID_SLACK);
}

static int ids_grow(lf_tokenizer *t, int n, lf_error *err) {
    if (n <= t->n_ids) return 0;
    const char **s = realloc(t->id_str, (size_t)n * sizeof *s);
    if (!s) return OOM();
    t->id_str = s;
    uint32_t *l = realloc(t->id_len, (size_t)n * sizeof *l);
    if (!l) return OOM();
    t->id_len = l;
    uint8_t *f = realloc(t->id_flags, (size_t)n);
    if (!f) return OOM();
    t->id_flags = f;
    for (int i = t->n_ids; i < n; i++) {
        t->id_str[i] = NULL;
        t->id_len[i] = 0;
        t->id_flags[i] = 0;
    }
    t->n_ids = n;
    return 0;
}

/* ---- merges map ---------------------------------------------------------- */
static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    return x;
}

static void merge_put_raw(lf_merge_slot *m, size_t cap, uint64_t key, uint64_t val, size_t *count) {
    size_t mask = cap - 1;
    size_t i = (size_t)mix64(key) & mask;
    while (m[i].key != UINT64_MAX && m[i].key != key) i = (i + 1) & mask;
    if (m[i].key == UINT64_MAX) (*count)++;
    m[i].key = key;
    m[i].val = val; /* a later duplicate replaces the earlier one, as in the reference */
}

static int merge_put(lf_tokenizer *t, int32_t a, int32_t b, uint32_t rank, int32_t new_id) {
    if ((t->n_merges + 1) * 2 > t->mcap) {
        size_t cap = t->mcap ? t->mcap * 2 : 1024;
        lf_merge_slot *m = malloc(cap * sizeof *m);
        if (!m) return -1;
        memset(m, 0xff, cap * sizeof *m);
        size_t cnt = 0;
        for (size_t i = 0; i < t->mcap; i++)
            if (t->merges[i].key != UINT64_MAX) merge_put_raw(m, cap, t->merges[i].key, t->merges[i].val, &cnt);
        free(t->merges);
        t->merges = m;
        t->mcap = cap;
    }
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    merge_put_raw(t->merges, t->mcap, key, ((uint64_t)rank << 32) | (uint32_t)new_id, &t->n_merges);
    return 0;
}

/* ---- loading: the model -------------------------------------------------- */
static bool json_id(const cJSON *v, int *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (d < 0 || d > 0x7ffffffe || d != (double)(int)d) return false;
    *out = (int)d;
    return true;
}

static int block_add(lf_tokenizer *t, char *p) {
    char **b = realloc(t->blocks, (size_t)(t->n_blocks + 1) * sizeof *b);
    if (!b) return -1;
    t->blocks = b;
    t->blocks[t->n_blocks++] = p;
    return 0;
}

typedef struct load_ctx {
    lf_tokenizer *t;
    const char *path;
    lf_error *err;
    int cap;
    int max_id;
} load_ctx;

/* One vocab entry; s must stay valid (it points into a block). */
static int vocab_add(void *vctx, const char *s, size_t n, int id) {
    load_ctx *c = vctx;
    lf_tokenizer *t = c->t;
    if (lf_utf8_valid_prefix(s, n) != n)
        return lf_fail(c->err, "%s: vocab entry %d (id %d) is not valid UTF-8", c->path, t->n_entries, id);
    if (t->n_entries == c->cap) {
        int cap = c->cap ? c->cap * 2 : 1024;
        const char **es = realloc(t->e_str, (size_t)cap * sizeof *es);
        if (!es) return OOM_CTX(c);
        t->e_str = es;
        uint32_t *el = realloc(t->e_len, (size_t)cap * sizeof *el);
        if (!el) return OOM_CTX(c);
        t->e_len = el;
        int32_t *ei = realloc(t->e_id, (size_t)cap * sizeof *ei);
        if (!ei) return OOM_CTX(c);
        t->e_id = ei;
        c->cap = cap;
    }
    t->e_str[t->n_entries] = s;
    t->e_len[t->n_entries] = (uint32_t)n;
    t->e_id[t->n_entries] = id;
    t->n_entries++;
    if (id > c->max_id) c->max_id = id;
    return 0;
}

/* Merges are resolved in batches: the hash slots of a batch's tokens are
 * prefetched before they are looked up, which hides most of the memory
 * latency of ~3 random lookups per merge. */
#define MERGE_BATCH 64

typedef struct merge_batch {
    load_ctx *c;
    lf_buf text; /* a, b and the merged string of each pending merge */
    size_t a_off[MERGE_BATCH], b_off[MERGE_BATCH], m_off[MERGE_BATCH];
    uint32_t a_len[MERGE_BATCH], b_len[MERGE_BATCH], m_len[MERGE_BATCH], rank[MERGE_BATCH];
    int n;
} merge_batch;

static int merge_flush(merge_batch *mb) {
    load_ctx *c = mb->c;
    lf_tokenizer *t = c->t;
    lf_error *err = c->err;
    const char *base = mb->text.p;
    uint64_t ha[MERGE_BATCH], hb[MERGE_BATCH], hm[MERGE_BATCH];
    int ia[MERGE_BATCH], ib[MERGE_BATCH];
    for (int i = 0; i < mb->n; i++) {
        ha[i] = lf_hash_bytes(base + mb->a_off[i], mb->a_len[i]);
        hb[i] = lf_hash_bytes(base + mb->b_off[i], mb->b_len[i]);
        hm[i] = lf_hash_bytes(base + mb->m_off[i], mb->m_len[i]);
        vocab_prefetch(t, ha[i]);
        vocab_prefetch(t, hb[i]);
        vocab_prefetch(t, hm[i]);
    }
    for (int i = 0; i < mb->n; i++) {
        ia[i] = vocab_find_h(t, base + mb->a_off[i], mb->a_len[i], ha[i]);
        ib[i] = vocab_find_h(t, base + mb->b_off[i], mb->b_len[i], hb[i]);
        if (ia[i] < 0 || ib[i] < 0) {
            bool a_bad = ia[i] < 0;
            return lf_fail(err, "%s: merge %u: token '%.*s' is not in the vocabulary", c->path, mb->rank[i],
                           (int)(a_bad ? mb->a_len[i] : mb->b_len[i]), base + (a_bad ? mb->a_off[i] : mb->b_off[i]));
        }
#if defined(__GNUC__)
        if (t->mcap) {
            uint64_t key = ((uint64_t)(uint32_t)ia[i] << 32) | (uint32_t)ib[i];
            __builtin_prefetch(&t->merges[(size_t)mix64(key) & (t->mcap - 1)], 1);
        }
#endif
    }
    for (int i = 0; i < mb->n; i++) {
        int id = vocab_find_h(t, base + mb->m_off[i], mb->m_len[i], hm[i]);
        if (id < 0)
            return lf_fail(err, "%s: merge %u: the merged token '%.*s' is not in the vocabulary", c->path,
                           mb->rank[i], (int)mb->m_len[i], base + mb->m_off[i]);
        if (merge_put(t, ia[i], ib[i], mb->rank[i], id)) return OOM();
    }
    mb->n = 0;
    mb->text.n = 0;
    return 0;
}

static int merge_add(void *vctx, const char *a, size_t la, const char *b, size_t lb, uint32_t rank) {
    merge_batch *mb = vctx;
    lf_tokenizer *t = mb->c->t;
    lf_error *err = mb->c->err;
    size_t skip = 0;
    if (t->cont_prefix) {
        skip = strlen(t->cont_prefix);
        if (skip > lb) skip = lb;
    }
    int i = mb->n;
    lf_buf *x = &mb->text;
    mb->a_off[i] = x->n;
    mb->a_len[i] = (uint32_t)la;
    if (lf_buf_append(x, a, la)) return OOM();
    mb->b_off[i] = x->n;
    mb->b_len[i] = (uint32_t)lb;
    if (lf_buf_append(x, b, lb)) return OOM();
    mb->m_off[i] = x->n;
    mb->m_len[i] = (uint32_t)(la + lb - skip);
    if (lf_buf_append(x, a, la) || lf_buf_append(x, b + skip, lb - skip)) return OOM();
    mb->rank[i] = rank;
    if (++mb->n == MERGE_BATCH) return merge_flush(mb);
    return 0;
}

/* cJSON form of a merge: "a b" or ["a", "b"] */
static int merge_add_json(merge_batch *mb, const cJSON *m, uint32_t rank) {
    load_ctx *c = mb->c;
    if (cJSON_IsString(m)) {
        const char *s = m->valuestring;
        const char *sp = strchr(s, ' ');
        if (!sp || strchr(sp + 1, ' '))
            return lf_fail(c->err, "%s: merge %u '%.60s' is not two tokens separated by one space", c->path, rank, s);
        return merge_add(mb, s, (size_t)(sp - s), sp + 1, strlen(sp + 1), rank);
    }
    if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) && cJSON_IsString(m->child->next))
        return merge_add(mb, m->child->valuestring, strlen(m->child->valuestring), m->child->next->valuestring,
                         strlen(m->child->next->valuestring), rank);
    return lf_fail(c->err, "%s: merge %u is neither \"a b\" nor [\"a\", \"b\"]", c->path, rank);
}

/* The model; vocab/merges come from the fast scanner when their spans are
 * given, else from the cJSON tree. */
static int load_model(lf_tokenizer *t, const char *path, const cJSON *model, const lf_json_span *vs,
                      const lf_json_span *ms, lf_error *err) {
    if (!cJSON_IsObject(model)) return lf_fail(err, "%s: no \"model\" object", path);
    const char *type = lf_json_str(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (type && strcmp(type, "BPE"))
        return lf_fail(err, "%s: unsupported model type '%s' (only BPE is supported)", path, type);
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges))
        return lf_fail(err, "%s: the BPE model needs a \"vocab\" object and a \"merges\" array", path);

    const char *cp = lf_json_str(model, "continuing_subword_prefix");
    const char *ew = lf_json_str(model, "end_of_word_suffix");
    if (cp && *cp && !(t->cont_prefix = tok_strdup(t, cp, strlen(cp)))) return OOM();
    if (ew && *ew && !(t->eow_suffix = tok_strdup(t, ew, strlen(ew)))) return OOM();
    t->byte_fallback = lf_json_bool(model, "byte_fallback", false);
    t->fuse_unk = lf_json_bool(model, "fuse_unk", false);
    t->ignore_merges = lf_json_bool(model, "ignore_merges", false);

    load_ctx c = {t, path, err, 0, -1};
    /* vocabulary */
    if (vs) {
        char *arena = malloc(vs->n + 1);
        if (!arena || block_add(t, arena)) {
            free(arena);
            return OOM();
        }
        int r = lf_json_scan_vocab(vs, arena, vocab_add, &c);
        if (r == -2) return lf_fail(err, "%s: model.vocab: entry %d is not a string with a valid id", path, t->n_entries);
        if (r) return -1;
    } else {
        size_t total = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, vocab) total += strlen(e->string) + 1;
        char *arena = malloc(total ? total : 1);
        if (!arena || block_add(t, arena)) {
            free(arena);
            return OOM();
        }
        size_t off = 0;
        cJSON_ArrayForEach(e, vocab) {
            int id;
            if (!json_id(e, &id))
                return lf_fail(err, "%s: vocab entry '%.60s' does not have a valid id", path, e->string);
            size_t l = strlen(e->string);
            memcpy(arena + off, e->string, l + 1);
            if (vocab_add(&c, arena + off, l, id)) return -1;
            off += l + 1;
        }
    }
    if (id_check(path, "model.vocab", c.max_id, t->n_entries, err)) return -1;
    if (vmap_build(t, err)) return -1;
    if (ids_grow(t, c.max_id + 1, err)) return -1;
    for (int i = 0; i < t->n_entries; i++) {
        t->id_str[t->e_id[i]] = t->e_str[i];
        t->id_len[t->e_id[i]] = t->e_len[i];
    }

    /* merges (about as many as vocab entries: size the table for that) */
    size_t mcap = 1024;
    while (mcap < 2 * (size_t)t->n_entries + 2) mcap *= 2;
    if (!(t->merges = malloc(mcap * sizeof *t->merges))) return OOM();
    memset(t->merges, 0xff, mcap * sizeof *t->merges);
    t->mcap = mcap;
    merge_batch *mb = calloc(1, sizeof *mb);
    if (!mb) return OOM();
    mb->c = &c;
    int mr = 0;
    if (ms) {
        uint32_t bad = 0;
        mr = lf_json_scan_merges(ms, merge_add, mb, &bad);
        if (mr == -2) lf_fail(err, "%s: merge %u is neither \"a b\" nor [\"a\", \"b\"]", path, bad);
    } else {
        uint32_t rank = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, merges) {
            if ((mr = merge_add_json(mb, e, rank))) break;
            rank++;
        }
    }
    if (!mr) mr = merge_flush(mb);
    lf_buf_free(&mb->text);
    free(mb);
    if (mr) return -1;

    const char *unk = lf_json_str(model, "unk_token");
    t->unk_id = unk ? lf_tok_vocab_find(t, unk, strlen(unk)) : -1;
    return lf_tok_model_tables(t, err);
}

/* Lookup tables of the model: the <0xXX> byte tokens and the ids of single
 * characters. */
int lf_tok_model_tables(lf_tokenizer *t, lf_error *err) {
    for (int i = 0; i < 256; i++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", i);
        t->byte_ids[i] = lf_tok_vocab_find(t, name, 6);
    }
    t->char_ids = malloc(LF_CHAR_IDS * sizeof *t->char_ids);
    if (!t->char_ids) return OOM();
    for (uint32_t ch = 0; ch < LF_CHAR_IDS; ch++) {
        char enc[4];
        int k = lf_utf8_encode(ch, enc);
        t->char_ids[ch] = lf_tok_vocab_find(t, enc, (size_t)k);
    }
    return 0;
}

/* ---- loading: added tokens ----------------------------------------------- */
static int find_added(const lf_tokenizer *t, const char *s) {
    for (int i = 0; i < t->n_added; i++)
        if (!strcmp(t->added[i].content, s)) return i;
    return -1;
}

static int add_token(lf_tokenizer *t, const char *path, const cJSON *a, int id, lf_error *err) {
    const char *content = lf_json_str(a, "content");
    if (!content) return lf_fail(err, "%s: added token %d without \"content\"", path, id);
    bool special = lf_json_bool(a, "special", false);
    lf_added spec = {.id = id, .content = (char *)content, .len = strlen(content), .special = special,
                     .lstrip = lf_json_bool(a, "lstrip", false), .rstrip = lf_json_bool(a, "rstrip", false),
                     .single_word = lf_json_bool(a, "single_word", false),
                     .normalized = lf_json_bool(a, "normalized", !special)};
    return lf_tok_add_token(t, path, &spec, err);
}

/* Add (or redefine) an added token from spec's id, content and flags. */
int lf_tok_add_token(lf_tokenizer *t, const char *path, const lf_added *spec, lf_error *err) {
    const char *content = spec->content;
    int id = spec->id;
    if (lf_utf8_valid_prefix(content, strlen(content)) != strlen(content))
        return lf_fail(err, "%s: added token %d is not valid UTF-8", path, id);
    char what[96];
    snprintf(what, sizeof what, "added token '%.40s'", content);
    if (id_check(path, what, id, (long long)t->n_entries + t->n_added + 1, err)) return -1;
    if (!*content) return 0; /* ignored, as the reference does */
    int k = find_added(t, content);
    lf_added *x;
    if (k >= 0) {
        x = &t->added[k];
    } else {
        lf_added *v = realloc(t->added, (size_t)(t->n_added + 1) * sizeof *v);
        if (!v) return OOM();
        t->added = v;
        x = &t->added[t->n_added++];
        memset(x, 0, sizeof *x);
        x->len = strlen(content);
        x->content = tok_strdup(t, content, x->len);
        if (!x->content) return OOM();
    }
    x->id = id;
    x->special = spec->special;
    x->lstrip = spec->lstrip;
    x->rstrip = spec->rstrip;
    x->single_word = spec->single_word;
    x->normalized = spec->normalized;
    if (ids_grow(t, id + 1, err)) return -1;
    t->id_str[id] = x->content;
    t->id_len[id] = (uint32_t)x->len;
    t->id_flags[id] = LF_IDF_ADDED | (x->special ? LF_IDF_SPECIAL : 0);
    return 0;
}

static int load_added(lf_tokenizer *t, const char *path, const cJSON *arr, lf_error *err) {
    if (!arr || cJSON_IsNull(arr)) return 0;
    if (!cJSON_IsArray(arr)) return lf_fail(err, "%s: \"added_tokens\" is not an array", path);
    const cJSON *a;
    cJSON_ArrayForEach(a, arr) {
        int id;
        if (!json_id(cJSON_GetObjectItemCaseSensitive(a, "id"), &id))
            return lf_fail(err, "%s: added token without a valid \"id\"", path);
        if (add_token(t, path, a, id, err)) return -1;
    }
    return 0;
}

typedef struct mentry {
    int idx;
    const char *p;
    size_t n;
} mentry;

static int mentry_cmp(const void *a, const void *b) {
    const mentry *x = a, *y = b;
    unsigned char cx = (unsigned char)x->p[0], cy = (unsigned char)y->p[0];
    if (cx != cy) return cx < cy ? -1 : 1;
    if (x->n != y->n) return x->n > y->n ? -1 : 1;
    return x->idx - y->idx;
}

static int build_matcher(lf_tokenizer *t, bool normalized, lf_matcher *m, lf_error *err) {
    memset(m, 0, sizeof *m);
    mentry *v = calloc((size_t)(t->n_added ? t->n_added : 1), sizeof *v);
    if (!v) return OOM();
    int n = 0;
    for (int i = 0; i < t->n_added; i++) {
        const lf_added *a = &t->added[i];
        if (a->normalized != normalized) continue;
        const char *p = normalized ? a->norm : a->content;
        size_t l = normalized ? a->norm_len : a->len;
        if (!p || !l) continue;
        v[n++] = (mentry){i, p, l};
    }
    qsort(v, (size_t)n, sizeof *v, mentry_cmp);
    m->idx = malloc((size_t)(n ? n : 1) * sizeof *m->idx);
    m->pat = malloc((size_t)(n ? n : 1) * sizeof *m->pat);
    m->pat_len = malloc((size_t)(n ? n : 1) * sizeof *m->pat_len);
    if (!m->idx || !m->pat || !m->pat_len) {
        free(v);
        return OOM();
    }
    for (int i = 0; i < n; i++) {
        m->idx[i] = v[i].idx;
        m->pat[i] = v[i].p;
        m->pat_len[i] = v[i].n;
    }
    m->n = n;
    int k = 0;
    for (int b = 0; b <= 256; b++) {
        while (k < n && (unsigned char)v[k].p[0] < b) k++;
        m->first[b] = k;
    }
    free(v);
    return 0;
}

static void free_matcher(lf_matcher *m) {
    free(m->idx);
    free(m->pat);
    free(m->pat_len);
    memset(m, 0, sizeof *m);
}

/* ---- loading: post-processor --------------------------------------------- */
static int ivec_from_json_ids(const cJSON *arr, int **out, int *n) {
    int cnt = cJSON_GetArraySize(arr);
    int *v = malloc((size_t)(cnt ? cnt : 1) * sizeof *v);
    if (!v) return -1;
    int k = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        int id;
        if (!json_id(e, &id)) {
            free(v);
            return -2;
        }
        v[k++] = id;
    }
    *out = v;
    *n = k;
    return 0;
}

static int ids_append(int **v, int *n, const int *x, int k) {
    int *p = realloc(*v, (size_t)(*n + k + 1) * sizeof *p);
    if (!p) return -1;
    if (k) memcpy(p + *n, x, (size_t)k * sizeof *p);
    *v = p;
    *n += k;
    return 0;
}

static int ids_prepend(int **v, int *n, const int *x, int k) {
    int *p = malloc((size_t)(*n + k + 1) * sizeof *p);
    if (!p) return -1;
    if (k) memcpy(p, x, (size_t)k * sizeof *p);
    if (*n) memcpy(p + k, *v, (size_t)*n * sizeof *p);
    free(*v);
    *v = p;
    *n += k;
    return 0;
}

/* Wrap the current prefix/suffix with one processor's (single sequence). */
static int load_postproc(lf_tokenizer *t, const char *path, const cJSON *pp, lf_error *err) {
    if (!pp || cJSON_IsNull(pp)) return 0;
    const char *type = lf_json_str(pp, "type");
    if (!type) return lf_fail(err, "%s: post_processor without a \"type\"", path);
    if (!strcmp(type, "ByteLevel")) return 0;
    if (!strcmp(type, "Sequence")) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(pp, "processors");
        if (!cJSON_IsArray(arr)) return lf_fail(err, "%s: Sequence post_processor without \"processors\"", path);
        const cJSON *c;
        cJSON_ArrayForEach(c, arr) if (load_postproc(t, path, c, err)) return -1;
        return 0;
    }
    if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(pp, "cls");
        const cJSON *sep = cJSON_GetObjectItemCaseSensitive(pp, "sep");
        int ci, si;
        if (!cJSON_IsArray(cls) || !cJSON_IsArray(sep) || !json_id(cJSON_GetArrayItem(cls, 1), &ci) ||
            !json_id(cJSON_GetArrayItem(sep, 1), &si))
            return lf_fail(err, "%s: %s post_processor needs \"cls\" and \"sep\" as [token, id]", path, type);
        if (ids_prepend(&t->pp_prefix, &t->n_pp_prefix, &ci, 1) || ids_append(&t->pp_suffix, &t->n_pp_suffix, &si, 1))
            return OOM();
        return 0;
    }
    if (strcmp(type, "TemplateProcessing"))
        return lf_fail(err, "%s: unsupported post_processor type '%s' (supported: TemplateProcessing, ByteLevel, "
                            "Sequence, RobertaProcessing, BertProcessing)", path, type);
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(pp, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(pp, "special_tokens");
    if (!cJSON_IsArray(single)) return lf_fail(err, "%s: TemplateProcessing without a \"single\" template", path);
    int *pre = NULL, npre = 0, *suf = NULL, nsuf = 0;
    bool seen_a = false;
    const cJSON *item;
    int rc = 0;
    cJSON_ArrayForEach(item, single) {
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(item, "SpecialToken");
        const cJSON *sq = cJSON_GetObjectItemCaseSensitive(item, "Sequence");
        if (sq) {
            const char *sid = lf_json_str(sq, "id");
            if (!sid || strcmp(sid, "A")) {
                rc = lf_fail(err, "%s: TemplateProcessing: the single template may only use sequence A", path);
                break;
            }
            if (seen_a) {
                rc = lf_fail(err, "%s: TemplateProcessing: sequence A appears twice", path);
                break;
            }
            seen_a = true;
            continue;
        }
        const char *name = st ? lf_json_str(st, "id") : NULL;
        if (!name) {
            rc = lf_fail(err, "%s: TemplateProcessing: bad item in the single template", path);
            break;
        }
        const cJSON *spec = cJSON_GetObjectItemCaseSensitive(specials, name);
        const cJSON *ids = spec ? cJSON_GetObjectItemCaseSensitive(spec, "ids") : NULL;
        int *v = NULL, nv = 0;
        if (!cJSON_IsArray(ids) || ivec_from_json_ids(ids, &v, &nv)) {
            rc = lf_fail(err, "%s: TemplateProcessing: special token '%s' has no ids", path, name);
            break;
        }
        if (seen_a ? ids_append(&suf, &nsuf, v, nv) : ids_append(&pre, &npre, v, nv)) rc = OOM();
        free(v);
        if (rc) break;
    }
    if (!rc && !seen_a) rc = lf_fail(err, "%s: TemplateProcessing: the single template has no $A", path);
    if (!rc && (ids_prepend(&t->pp_prefix, &t->n_pp_prefix, pre, npre) ||
                ids_append(&t->pp_suffix, &t->n_pp_suffix, suf, nsuf)))
        rc = OOM();
    free(pre);
    free(suf);
    return rc;
}

/* ---- loading: tokenizer_config.json -------------------------------------- */
static const char *token_content(const cJSON *v) {
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) return lf_json_str(v, "content");
    return NULL;
}

static int load_config(lf_tokenizer *t, const char *dir, lf_error *err) {
    char *path = lf_path_join(dir, "tokenizer_config.json");
    if (!path) return OOM();
    if (!lf_file_exists(path)) {
        free(path);
    } else {
        char *text = NULL;
        size_t len = 0;
        if (lf_read_file(path, &text, &len, err)) {
            free(path);
            return -1;
        }
        const char *end = NULL;
        cJSON *j = cJSON_ParseWithLengthOpts(text, len, &end, 0);
        if (!j || !cJSON_IsObject(j)) {
            lf_fail(err, "%s: invalid JSON near byte %zu", path, end ? (size_t)(end - text) : (size_t)0);
            cJSON_Delete(j);
            free(text);
            free(path);
            return -1;
        }
        int rc = lf_json_check_utf8(j, path, err);
        /* added_tokens_decoder entries missing from tokenizer.json */
        const cJSON *atd = cJSON_GetObjectItemCaseSensitive(j, "added_tokens_decoder");
        const cJSON *a;
        if (!rc && cJSON_IsObject(atd)) {
            cJSON_ArrayForEach(a, atd) {
                char *endp;
                errno = 0;
                long id = strtol(a->string, &endp, 10);
                const char *content = lf_json_str(a, "content");
                if (errno || *endp || id < 0 || id > 0x7ffffffe || !content) {
                    rc = lf_fail(err, "%s: bad added_tokens_decoder entry '%s'", path, a->string);
                    break;
                }
                if (find_added(t, content) < 0 && (rc = add_token(t, path, a, (int)id, err))) break;
            }
        }
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(j, "chat_template");
        const char *tmpl = NULL;
        if (cJSON_IsString(ct)) {
            tmpl = ct->valuestring;
        } else if (cJSON_IsArray(ct)) {
            cJSON_ArrayForEach(a, ct) {
                const char *name = lf_json_str(a, "name");
                if (!tmpl || (name && !strcmp(name, "default"))) tmpl = lf_json_str(a, "template");
            }
        }
        if (!rc && tmpl && !(t->chat_template = tok_strdup(t, tmpl, strlen(tmpl)))) rc = OOM();
        const char *bos = token_content(cJSON_GetObjectItemCaseSensitive(j, "bos_token"));
        const char *eos = token_content(cJSON_GetObjectItemCaseSensitive(j, "eos_token"));
        if (!rc && bos && !(t->bos_str = tok_strdup(t, bos, strlen(bos)))) rc = OOM();
        if (!rc && eos && !(t->eos_str = tok_strdup(t, eos, strlen(eos)))) rc = OOM();
        cJSON_Delete(j);
        free(text);
        free(path);
        if (rc) return -1;
    }
    if (!t->chat_template) {
        /* newer checkpoints keep the template in its own file */
        char *jp = lf_path_join(dir, "chat_template.jinja");
        if (!jp) return OOM();
        if (lf_file_exists(jp)) {
            char *text = NULL;
            size_t len = 0;
            if (lf_read_file(jp, &text, &len, err)) {
                free(jp);
                return -1;
            }
            t->chat_template = tok_strdup(t, text, len);
            free(text);
            if (!t->chat_template) {
                free(jp);
                return OOM();
            }
        }
        free(jp);
    }
    return 0;
}

/* The loader's building blocks, for the tokenizer built from GGUF metadata
 * (vocab_spec.c). */
char *lf_tok_strdup(lf_tokenizer *t, const char *s, size_t n) { return tok_strdup(t, s, n); }
int lf_tok_vmap_build(lf_tokenizer *t, lf_error *err) { return vmap_build(t, err); }
int lf_tok_ids_grow(lf_tokenizer *t, int n, lf_error *err) { return ids_grow(t, n, err); }
int lf_tok_merge_put(lf_tokenizer *t, int32_t a, int32_t b, uint32_t rank, int32_t new_id) {
    return merge_put(t, a, b, rank, new_id);
}

/* An empty tokenizer (no unk, bos or eos). */
lf_tokenizer *lf_tok_alloc(void) {
    lf_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    pthread_mutex_init(&t->cache_mu, NULL);
    t->unk_id = t->bos_id = t->eos_id = -1;
    return t;
}

/* The normalized forms of the normalized added tokens, then the matchers. */
int lf_tok_finish_added(lf_tokenizer *t, lf_error *err) {
    if (t->n_added) {
        lf_scratch sc;
        if (lf_scratch_init(&sc)) return OOM();
        int rc = 0;
        for (int i = 0; i < t->n_added && !rc; i++) {
            lf_added *a = &t->added[i];
            if (!a->normalized) continue;
            if (t->norm) {
                lf_buf nb = {0};
                rc = lf_normalizer_apply(t->norm, &sc, a->content, a->len, &nb, err);
                if (!rc && !(a->norm = tok_strdup(t, nb.p ? nb.p : "", nb.n))) rc = OOM();
                a->norm_len = nb.n;
                lf_buf_free(&nb);
            } else {
                a->norm = a->content;
                a->norm_len = a->len;
            }
        }
        lf_scratch_free(&sc);
        if (rc) return -1;
        /* the reference decodes (and names) a normalized added token by its
         * normalized form */
        for (int i = 0; i < t->n_added; i++) {
            const lf_added *a = &t->added[i];
            if (a->normalized && a->norm && a->norm_len) {
                t->id_str[a->id] = a->norm;
                t->id_len[a->id] = (uint32_t)a->norm_len;
            }
        }
    }
    if (build_matcher(t, false, &t->m_raw, err) || build_matcher(t, true, &t->m_norm, err)) return -1;
    return 0;
}

/* ---- load ---------------------------------------------------------------- */
/* tokenizer.json's member key, or NULL when it is absent or null. */
static const cJSON *component(const cJSON *j, const char *key) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsNull(c) ? NULL : c;
}

/* The normalizer, pre_tokenizer and decoder, each optional; their errors
 * name the file. */
static int load_components(lf_tokenizer *t, const char *path, const cJSON *j, lf_error *err) {
    const cJSON *nj = component(j, "normalizer"), *pj = component(j, "pre_tokenizer"), *dj = component(j, "decoder");
    if ((nj && !(t->norm = calloc(1, sizeof *t->norm))) || (pj && !(t->pretok = calloc(1, sizeof *t->pretok))) ||
        (dj && !(t->dec = calloc(1, sizeof *t->dec))))
        return OOM();
    if ((nj && lf_normalizer_parse(nj, t->norm, err)) || (pj && lf_pretok_parse(pj, t->pretok, err)) ||
        (dj && lf_decoder_parse(dj, t->dec, err)))
        return lf_fail_prefix(err, "%s", path);
    return 0;
}

/* Every post_processor token id names a token. */
static int check_pp_ids(const lf_tokenizer *t, const char *path, const int *ids, int n, lf_error *err) {
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= t->n_ids)
            return lf_fail(err, "%s: post_processor token id %d is out of range", path, ids[i]);
    return 0;
}

int lf_tokenizer_load(const char *dir, lf_tokenizer **out, lf_error *err) {
    *out = NULL;
    lf_tokenizer *t = lf_tok_alloc();
    if (!t) return OOM();
    char *path = lf_path_join(dir, "tokenizer.json");
    char *text = NULL;
    cJSON *j = NULL;
    size_t len = 0;
    if (!path || !(t->dir = strdup(dir))) {
        OOM();
        goto fail;
    }
    if (lf_read_file(path, &text, &len, err)) goto fail;
    /* model.vocab and model.merges are read by the fast scanner, the rest of
     * the file (with those two emptied) by cJSON */
    lf_json_span vs, ms;
    bool fast = lf_json_find_model_parts(text, len, &vs, &ms) == 0;
    const char *end = NULL;
    if (fast) {
        const lf_json_span *first = vs.p < ms.p ? &vs : &ms, *second = vs.p < ms.p ? &ms : &vs;
        lf_buf rest = {0};
        int r = lf_buf_append(&rest, text, (size_t)(first->p - text)) ||
                lf_buf_append(&rest, first == &vs ? "{}" : "[]", 2) ||
                lf_buf_append(&rest, first->p + first->n, (size_t)(second->p - (first->p + first->n))) ||
                lf_buf_append(&rest, second == &vs ? "{}" : "[]", 2) ||
                lf_buf_append(&rest, second->p + second->n, (size_t)(text + len - (second->p + second->n)));
        if (r) {
            lf_buf_free(&rest);
            OOM();
            goto fail;
        }
        j = cJSON_ParseWithLengthOpts(rest.p, rest.n, &end, 0);
        lf_buf_free(&rest);
        if (!j) fast = false; /* report the error from the whole file */
    }
    if (!j) j = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!j || !cJSON_IsObject(j)) {
        lf_fail(err, "%s: invalid JSON near byte %zu", path,
                end && !fast && end >= text && end <= text + len ? (size_t)(end - text) : (size_t)0);
        goto fail;
    }
    if (lf_json_check_utf8(j, path, err)) goto fail;
    if (load_model(t, path, cJSON_GetObjectItemCaseSensitive(j, "model"), fast ? &vs : NULL, fast ? &ms : NULL,
                   err))
        goto fail;
    free(text);
    text = NULL;
    if (load_added(t, path, cJSON_GetObjectItemCaseSensitive(j, "added_tokens"), err)) goto fail;

    if (load_components(t, path, j, err)) goto fail;
    /* BOS/EOS come from the post-processor alone: transformers 5 drops
     * tokenizer_config.json's add_bos_token / add_eos_token when a
     * tokenizer.json is present */
    if (load_postproc(t, path, cJSON_GetObjectItemCaseSensitive(j, "post_processor"), err)) goto fail;
    cJSON_Delete(j);
    j = NULL;

    if (load_config(t, dir, err)) goto fail;
    t->bos_id = t->bos_str ? lf_tokenizer_token_to_id(t, t->bos_str) : -1;
    t->eos_id = t->eos_str ? lf_tokenizer_token_to_id(t, t->eos_str) : -1;
    if (check_pp_ids(t, path, t->pp_prefix, t->n_pp_prefix, err) ||
        check_pp_ids(t, path, t->pp_suffix, t->n_pp_suffix, err))
        goto fail;

    if (lf_tok_finish_added(t, err)) goto fail;
    free(path);
    *out = t;
    return 0;
fail:
    cJSON_Delete(j);
    free(text);
    free(path);
    lf_tokenizer_free(t);
    return -1;
}

void lf_tokenizer_free(lf_tokenizer *t) {
    if (!t) return;
    if (t->norm) lf_normalizer_free(t->norm);
    free(t->norm);
    if (t->pretok) lf_pretok_free(t->pretok);
    free(t->pretok);
    if (t->dec) lf_decoder_free(t->dec);
    free(t->dec);
    free_matcher(&t->m_raw);
    free_matcher(&t->m_norm);
    for (int i = 0; i < t->n_blocks; i++) free(t->blocks[i]);
    free(t->blocks);
    free(t->e_str);
    free(t->e_len);
    free(t->e_id);
    free(t->vmap.slots);
    free(t->id_str);
    free(t->id_len);
    free(t->id_flags);
    free(t->merges);
    free(t->char_ids);
    free(t->added);
    free(t->pp_prefix);
    free(t->pp_suffix);
    free(t->cache);
    lf_buf_free(&t->cache_keys);
    free(t->cache_ids.p);
    pthread_mutex_destroy(&t->cache_mu);
    free(t->dir);
    free(t);
}

/* ---- queries ------------------------------------------------------------- */
int lf_tokenizer_vocab_size(const lf_tokenizer *t) { return t->n_ids; }

int lf_tokenizer_token_to_id(const lf_tokenizer *t, const char *token) {
    for (int i = 0; i < t->n_added; i++)
        if (!strcmp(t->added[i].content, token)) return t->added[i].id;
    return lf_tok_vocab_find(t, token, strlen(token));
}

const char *lf_tokenizer_id_to_token(const lf_tokenizer *t, int id) {
    if (id < 0 || id >= t->n_ids) return NULL;
    return t->id_str[id];
}

bool lf_tokenizer_is_special(const lf_tokenizer *t, int id) {
    return id >= 0 && id < t->n_ids && (t->id_flags[id] & LF_IDF_SPECIAL);
}

const char *lf_tokenizer_chat_template(const lf_tokenizer *t) { return t->chat_template; }
int lf_tokenizer_eos_id(const lf_tokenizer *t) { return t->eos_id; }
int lf_tokenizer_bos_id(const lf_tokenizer *t) { return t->bos_id; }
const char *lf_tokenizer_bos_token(const lf_tokenizer *t) { return t->bos_str; }
const char *lf_tokenizer_eos_token(const lf_tokenizer *t) { return t->eos_str; }

/* ---- encoding ------------------------------------------------------------ */
typedef struct enc_ctx {
    const lf_tokenizer *t;
    lf_scratch sc;
    lf_ivec out;
    bool parse_special;
    lf_error *err;
} enc_ctx;

typedef int (*chunk_fn)(enc_ctx *c, const char *s, size_t n, bool at_start);

/* ---- pre-token cache ----------------------------------------------------- */
/* The model's ids for recent pre-tokens (words repeat a lot), shared by all
 * calls on a tokenizer and guarded by its mutex; emptied when half full. */
#define CACHE_MAX_KEY 48
#define CACHE_SLOTS (1u << 16)

static bool cache_get(const lf_tokenizer *tc, const char *s, size_t n, uint64_t h, lf_ivec *out) {
    lf_tokenizer *t = (lf_tokenizer *)tc; /* the cache is the only mutable state */
    bool hit = false;
    pthread_mutex_lock(&t->cache_mu);
    if (t->cache) {
        size_t mask = t->cache_cap - 1, i = (size_t)h & mask;
        for (;;) {
            const lf_cache_entry *e = &t->cache[i];
            if (!e->key_len) break;
            if (e->hash == h && e->key_len == n && !memcmp(t->cache_keys.p + e->key_off, s, n)) {
                if (!lf_ivec_reserve(out, e->n_ids)) {
                    if (e->n_ids) /* a pre-token may map to no ids (no unk token) */
                        memcpy(out->p + out->n, t->cache_ids.p + e->ids_off, e->n_ids * sizeof *out->p);
                    out->n += e->n_ids;
                    hit = true;
                }
                break;
            }
            i = (i + 1) & mask;
        }
    }
    pthread_mutex_unlock(&t->cache_mu);
    return hit;
}

/* Store ids from[..] of the model's output for pre-token s (possibly none). */
static void cache_put(const lf_tokenizer *tc, const char *s, size_t n, uint64_t h, const lf_ivec *ids,
                      size_t from) {
    lf_tokenizer *t = (lf_tokenizer *)tc;
    const size_t k = ids->n - from;
    pthread_mutex_lock(&t->cache_mu);
    if (!t->cache) {
        t->cache = calloc(CACHE_SLOTS, sizeof *t->cache);
        t->cache_cap = t->cache ? CACHE_SLOTS : 0;
    }
    if (t->cache && (t->cache_n + 1) * 2 > t->cache_cap) {
        memset(t->cache, 0, t->cache_cap * sizeof *t->cache);
        t->cache_n = 0;
        t->cache_keys.n = 0;
        t->cache_ids.n = 0;
    }
    if (t->cache && !lf_ivec_reserve(&t->cache_ids, k) && !lf_buf_reserve(&t->cache_keys, n)) {
        size_t mask = t->cache_cap - 1, i = (size_t)h & mask;
        bool present = false;
        while (t->cache[i].key_len) {
            const lf_cache_entry *e = &t->cache[i];
            if (e->hash == h && e->key_len == n && !memcmp(t->cache_keys.p + e->key_off, s, n)) {
                present = true; /* another thread put it meanwhile */
                break;
            }
            i = (i + 1) & mask;
        }
        if (!present) {
            t->cache[i] = (lf_cache_entry){h, (uint32_t)t->cache_keys.n, (uint32_t)n, (uint32_t)t->cache_ids.n,
                                           (uint32_t)k};
            memcpy(t->cache_keys.p + t->cache_keys.n, s, n);
            t->cache_keys.n += n;
            if (k) memcpy(t->cache_ids.p + t->cache_ids.n, ids->p + from, k * sizeof *ids->p);
            t->cache_ids.n += k;
            t->cache_n++;
        }
    }
    pthread_mutex_unlock(&t->cache_mu);
}

/* The model on one pre-token, through the cache. */
static int model_word(enc_ctx *c, const char *s, size_t n) {
    if (n == 0) return 0;
    if (n > CACHE_MAX_KEY) return lf_bpe_word(c->t, &c->sc, s, n, &c->out, c->err);
    uint64_t h = lf_hash_bytes(s, n);
    if (cache_get(c->t, s, n, h, &c->out)) return 0;
    size_t before = c->out.n;
    if (lf_bpe_word(c->t, &c->sc, s, n, &c->out, c->err)) return -1;
    cache_put(c->t, s, n, h, &c->out, before);
    return 0;
}

static int model_chunk(enc_ctx *c, const char *s, size_t n, bool at_start) {
    if (!n) return 0;
    const lf_tokenizer *t = c->t;
    if (!t->pretok) return model_word(c, s, n);
    lf_pieces *in = &c->sc.pc[0], *pt = &c->sc.pc[1];
    lf_pieces_clear(in);
    if (lf_pieces_add(in, s, n, at_start)) return lf_fail(c->err, "out of memory");
    if (lf_pretok_apply(t->pretok, &c->sc, in, pt, c->err)) return -1;
    for (size_t i = 0; i < pt->n; i++)
        if (model_word(c, lf_piece_str(pt, i), pt->v[i].len)) return -1;
    return 0;
}

static bool space_at(const char *s, size_t n, size_t i, size_t *k) {
    uint32_t cp;
    *k = (size_t)lf_utf8_decode(s + i, n - i, &cp);
    return lf_uni_is_space(cp);
}

/* single_word: no word character right before or right after the match */
static bool single_word_ok(const char *s, size_t n, size_t ms, size_t me) {
    uint32_t cp;
    if (ms > 0) {
        size_t p = lf_utf8_prev(s, ms);
        lf_utf8_decode(s + p, ms - p, &cp);
        if (lf_uni_is_word(cp)) return false;
    }
    if (me < n) {
        lf_utf8_decode(s + me, n - me, &cp);
        if (lf_uni_is_word(cp)) return false;
    }
    return true;
}

/* The longest pattern of m that starts at s[i] (i < n), or -1. */
static int match_at(const lf_matcher *m, const char *s, size_t n, size_t i) {
    unsigned char b = (unsigned char)s[i];
    for (int k = m->first[b]; k < m->first[b + 1]; k++)
        if (m->pat_len[k] <= n - i && !memcmp(s + i, m->pat[k], m->pat_len[k])) return k;
    return -1;
}

/* The next added token of m in s[0..n) from *i on (leftmost-longest; not a
 * special one when skip_special; a single_word one only standing alone),
 * with its span [*ms, *me) grown by lstrip (back to pos at most) and rstrip
 * whitespace and *i moved past it; NULL when there is none. */
static const lf_added *next_added(const lf_tokenizer *t, const lf_matcher *m, const char *s, size_t n, size_t pos,
                                  bool skip_special, size_t *i, size_t *ms, size_t *me) {
    while (m->n && *i < n) {
        int hit = match_at(m, s, n, *i);
        if (hit < 0) {
            (*i)++;
            continue;
        }
        const lf_added *a = &t->added[m->idx[hit]];
        size_t a0 = *i, a1 = *i + m->pat_len[hit], k;
        *i = a1;
        if ((a->special && skip_special) || (a->single_word && !single_word_ok(s, n, a0, a1))) continue;
        while (a->lstrip && a0 > pos) {
            size_t p = lf_utf8_prev(s, a0);
            if (!space_at(s, n, p, &k)) break;
            a0 = p;
        }
        if (a->rstrip) {
            while (a1 < n && space_at(s, n, a1, &k)) a1 += k;
            *i = a1;
        }
        *ms = a0;
        *me = a1;
        return a;
    }
    return NULL;
}

/* Cut the added tokens of matcher m out of s (see next_added), passing the
 * text between them to next. */
static int split_added(enc_ctx *c, const lf_matcher *m, const char *s, size_t n, bool at_start, chunk_fn next,
                       const bool *skip_specials) {
    if (m->n == 0) return next(c, s, n, at_start);
    size_t pos = 0, i = 0, ms, me;
    const lf_added *a;
    while ((a = next_added(c->t, m, s, n, pos, skip_specials && *skip_specials, &i, &ms, &me))) {
        if (ms > pos && next(c, s + pos, ms - pos, at_start && pos == 0)) return -1;
        if (lf_ivec_push(&c->out, a->id)) return lf_fail(c->err, "out of memory");
        pos = me;
    }
    if (pos < n) return next(c, s + pos, n - pos, at_start && pos == 0);
    return 0;
}

static int norm_chunk(enc_ctx *c, const char *s, size_t n, bool at_start) {
    if (!n) return 0;
    const lf_tokenizer *t = c->t;
    const char *ns = s;
    size_t nn = n;
    lf_buf nb = {0};
    if (t->norm) {
        if (lf_normalizer_apply(t->norm, &c->sc, s, n, &nb, c->err)) {
            lf_buf_free(&nb);
            return -1;
        }
        ns = nb.p ? nb.p : "";
        nn = nb.n;
        /* valid by construction (valid input, contents checked at load): the
         * regexes that come next trust it */
        size_t ok = lf_utf8_valid_prefix(ns, nn);
        if (ok != nn) {
            lf_buf_free(&nb);
            return lf_fail(c->err, "the normalizer produced invalid UTF-8 (byte 0x%02X at offset %zu)",
                           (unsigned char)ns[ok], ok);
        }
    }
    bool skip = !c->parse_special;
    int rc = split_added(c, &t->m_norm, ns, nn, at_start, model_chunk, &skip);
    lf_buf_free(&nb);
    return rc;
}

/* Encode with the added-token matching of the reference; `skip_specials`
 * makes special tokens plain text (encode_special_tokens). */
static int encode_text(enc_ctx *c, const char *text, size_t len, bool at_start) {
    bool skip = !c->parse_special;
    return split_added(c, &c->t->m_raw, text, len, at_start, norm_chunk, &skip);
}

/* The start of an encode: no output yet, the text checked to be UTF-8,
 * the scratch made. */
static int enc_begin(enc_ctx *c, const char *text, size_t len, int **ids, int *n_ids) {
    *ids = NULL;
    *n_ids = 0;
    size_t ok = lf_utf8_valid_prefix(text, len);
    if (ok != len)
        return lf_fail(c->err, "input text is not valid UTF-8 (bad byte 0x%02X at offset %zu)",
                       (unsigned char)text[ok], ok);
    return lf_scratch_init(&c->sc) ? OOM_CTX(c) : 0;
}

/* The end of an encode that returned rc: the scratch freed and, on
 * success, the ids handed over (an empty result is still allocated). */
static int enc_finish(enc_ctx *c, int rc, int **ids, int *n_ids) {
    lf_scratch_free(&c->sc);
    if (rc) {
        free(c->out.p);
        return -1;
    }
    if (!c->out.p && !(c->out.p = malloc(sizeof(int)))) return OOM_CTX(c);
    *ids = c->out.p;
    *n_ids = (int)c->out.n;
    return 0;
}

static int push_ids(enc_ctx *c, const int *v, int n) {
    for (int i = 0; i < n; i++)
        if (lf_ivec_push(&c->out, v[i])) return OOM_CTX(c);
    return 0;
}

int lf_tokenizer_encode(const lf_tokenizer *t, const char *text, size_t len, unsigned flags, int **ids, int *n_ids,
                        lf_error *err) {
    enc_ctx c = {.t = t, .parse_special = (flags & LF_TOK_PARSE_SPECIAL) != 0, .err = err};
    if (enc_begin(&c, text, len, ids, n_ids)) return -1;
    int rc = 0;
    if (flags & LF_TOK_ADD_SPECIAL) rc = push_ids(&c, t->pp_prefix, t->n_pp_prefix);
    if (!rc) rc = encode_text(&c, text, len, true);
    if (!rc && (flags & LF_TOK_ADD_SPECIAL)) rc = push_ids(&c, t->pp_suffix, t->n_pp_suffix);
    return enc_finish(&c, rc, ids, n_ids);
}

int lf_tokenizer_encode_spans(const lf_tokenizer *t, const char *text, size_t len, const lf_token_span *spans,
                              int n_spans, int **ids, int *n_ids, lf_error *err) {
    enc_ctx c = {.t = t, .parse_special = false, .err = err};
    if (enc_begin(&c, text, len, ids, n_ids)) return -1;
    int rc = 0;
    size_t pos = 0;
    for (int k = 0; k < n_spans && !rc; k++) {
        const lf_token_span *sp = &spans[k];
        if (sp->start < pos || sp->end < sp->start || sp->end > len || sp->id < 0 || sp->id >= t->n_ids) {
            rc = lf_fail(err, "internal error: bad token span");
            break;
        }
        if (sp->start > pos) rc = encode_text(&c, text + pos, sp->start - pos, pos == 0);
        if (!rc && lf_ivec_push(&c.out, sp->id)) rc = OOM();
        pos = sp->end;
    }
    if (!rc && pos < len) rc = encode_text(&c, text + pos, len - pos, pos == 0);
    return enc_finish(&c, rc, ids, n_ids);
}

int lf_tokenizer_find_added(const lf_tokenizer *t, const char *text, size_t len, lf_token_span **spans, int *n,
                            lf_error *err) {
    *spans = NULL;
    *n = 0;
    lf_token_span *v = NULL;
    int cnt = 0, cap = 0;
    size_t i = 0, pos = 0;
    const lf_matcher *m = &t->m_raw;
    size_t ms, me;
    const lf_added *a;
    while ((a = next_added(t, m, text, len, pos, false, &i, &ms, &me))) {
        if (cnt == cap) {
            cap = cap ? cap * 2 : 8;
            lf_token_span *nv = realloc(v, (size_t)cap * sizeof *nv);
            if (!nv) {
                free(v);
                return OOM();
            }
            v = nv;
        }
        v[cnt++] = (lf_token_span){ms, me, a->id};
        pos = me;
    }
    *spans = v;
    *n = cnt;
    return 0;
}

/* ---- decoding ------------------------------------------------------------ */
static int decode_pieces(const lf_tokenizer *t, const int *ids, int n, bool skip_special, lf_buf *out, lf_error *err) {
    lf_pieces toks = {0}, res = {0};
    int rc = 0;
    out->n = 0;
    for (int i = 0; i < n && !rc; i++) {
        int id = ids[i];
        if (id < 0 || id >= t->n_ids || !t->id_str[id]) {
            rc = lf_fail(err, "token id %d is not in the vocabulary (%d ids)", id, t->n_ids);
            break;
        }
        if (skip_special && (t->id_flags[id] & LF_IDF_SPECIAL)) continue;
        if (lf_pieces_add(&toks, t->id_str[id], t->id_len[id], false)) rc = OOM();
    }
    if (!rc) {
        if (t->dec) {
            rc = lf_decoder_apply(t->dec, &toks, &res, err);
            for (size_t i = 0; i < res.n && !rc; i++)
                if (lf_buf_append(out, lf_piece_str(&res, i), res.v[i].len)) rc = OOM();
        } else {
            for (size_t i = 0; i < toks.n && !rc; i++)
                if ((i && lf_buf_append(out, " ", 1)) || lf_buf_append(out, lf_piece_str(&toks, i), toks.v[i].len))
                    rc = OOM();
        }
    }
    if (!rc && lf_buf_append(out, "", 0)) rc = OOM();
    lf_pieces_free(&toks);
    lf_pieces_free(&res);
    return rc;
}

int lf_tokenizer_decode(const lf_tokenizer *t, const int *ids, int n, bool skip_special, char **out, size_t *len,
                        lf_error *err) {
    *out = NULL;
    if (len) *len = 0;
    lf_buf b = {0};
    if (decode_pieces(t, ids, n, skip_special, &b, err)) {
        lf_buf_free(&b);
        return -1;
    }
    *out = b.p;
    if (len) *len = b.n;
    return 0;
}

/* ---- streaming decode ---------------------------------------------------- */
/* A window of recent ids is re-decoded after each push; what the window's
 * text gained since the last emission goes out once it no longer ends in
 * U+FFFD (an unfinished character). The window is cut back now and then,
 * keeping a few ids of context so that decoders that treat the first token
 * specially (Metaspace, Strip) see the same thing as a full decode. */
#define STREAM_KEEP 4
#define STREAM_MAX 24

struct lf_detok_stream {
    const lf_tokenizer *t;
    bool skip_special;
    lf_ivec ids;
    lf_buf cur;   /* decode of the window */
    size_t done;  /* bytes of cur already emitted */
    lf_buf out;
};

lf_detok_stream *lf_detok_stream_new(const lf_tokenizer *t, bool skip_special) {
    lf_detok_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->t = t;
    s->skip_special = skip_special;
    return s;
}

void lf_detok_stream_free(lf_detok_stream *s) {
    if (!s) return;
    free(s->ids.p);
    lf_buf_free(&s->cur);
    lf_buf_free(&s->out);
    free(s);
}

static bool is_byte_token(const lf_tokenizer *t, int id) {
    const char *s = t->id_str[id];
    return t->id_len[id] == 6 && !memcmp(s, "<0x", 3) && s[5] == '>';
}

static bool ends_with_fffd(const lf_buf *b) {
    return b->n >= 3 && !memcmp(b->p + b->n - 3, "\xef\xbf\xbd", 3);
}

int lf_detok_stream_push(lf_detok_stream *s, int id, const char **text, size_t *len, lf_error *err) {
    const lf_tokenizer *t = s->t;
    *text = "";
    *len = 0;
    if (id < 0 || id >= t->n_ids || !t->id_str[id])
        return lf_fail(err, "token id %d is not in the vocabulary (%d ids)", id, t->n_ids);
    if (s->skip_special && (t->id_flags[id] & LF_IDF_SPECIAL)) return 0;
    if (lf_ivec_push(&s->ids, id)) return OOM();
    lf_buf nb = {0};
    if (decode_pieces(t, s->ids.p, (int)s->ids.n, s->skip_special, &nb, err)) {
        lf_buf_free(&nb);
        return -1;
    }
    if (nb.n <= s->done || ends_with_fffd(&nb)) {
        lf_buf_free(&s->cur);
        s->cur = nb;
        return 0;
    }
    size_t from = s->done;
    if (s->done && (s->cur.n < s->done || memcmp(nb.p, s->cur.p, s->done))) {
        /* the window's earlier text changed (an invalid byte run was
         * reinterpreted): continue after the emitted length */
        while (from < nb.n && ((unsigned char)nb.p[from] & 0xC0) == 0x80) from++;
    }
    s->out.n = 0;
    if (lf_buf_append(&s->out, nb.p + from, nb.n - from)) {
        lf_buf_free(&nb);
        return OOM();
    }
    lf_buf_free(&s->cur);
    s->cur = nb;
    s->done = nb.n;
    if (s->ids.n > STREAM_MAX) {
        /* keep at least STREAM_KEEP ids, cutting before a token that does not
         * continue a byte-fallback run (ByteFallback judges a run of <0xXX>
         * tokens as a whole) */
        size_t k = s->ids.n - STREAM_KEEP;
        while (k > 0 && is_byte_token(t, s->ids.p[k])) k--;
        if (k > 0) {
            memmove(s->ids.p, s->ids.p + k, (s->ids.n - k) * sizeof *s->ids.p);
            s->ids.n -= k;
            lf_buf kb = {0};
            if (decode_pieces(t, s->ids.p, (int)s->ids.n, s->skip_special, &kb, err)) {
                lf_buf_free(&kb);
                return -1;
            }
            lf_buf_free(&s->cur);
            s->cur = kb;
            s->done = kb.n;
        }
    }
    *text = s->out.p;
    *len = s->out.n;
    return 0;
}

int lf_detok_stream_flush(lf_detok_stream *s, const char **text, size_t *len) {
    *text = "";
    *len = 0;
    s->out.n = 0;
    if (s->cur.n > s->done && !lf_buf_append(&s->out, s->cur.p + s->done, s->cur.n - s->done)) {
        *text = s->out.p;
        *len = s->out.n;
    }
    s->ids.n = 0;
    lf_buf_free(&s->cur);
    s->done = 0;
    return 0;
}
