/* The BPE model: a word's characters become symbols (with byte fallback and
 * unk handling), then the lowest-ranked adjacent pair is merged repeatedly,
 * the leftmost first among equal ranks, through a min-heap of candidate
 * merges (as the `tokenizers` library does). */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/tok_internal.h"

#define MERGE_EMPTY UINT64_MAX

static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    return x;
}

static inline bool merge_find(const lf_tokenizer *t, int32_t a, int32_t b, uint32_t *rank, int32_t *new_id) {
    if (!t->mcap) return false;
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t mask = t->mcap - 1;
    size_t i = (size_t)mix64(key) & mask;
    for (;;) {
        uint64_t k = t->merges[i].key;
        if (k == key) {
            uint64_t v = t->merges[i].val;
            *rank = (uint32_t)(v >> 32);
            *new_id = (int32_t)(uint32_t)v;
            return true;
        }
        if (k == MERGE_EMPTY) return false;
        i = (i + 1) & mask;
    }
}

/* ---- the heap ------------------------------------------------------------ */
static inline bool heap_less(const lf_bpe_merge_entry *a, const lf_bpe_merge_entry *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static int heap_push(lf_scratch *sc, uint32_t rank, uint32_t pos, int32_t new_id) {
    if (sc->hn == sc->hcap) {
        lf_bpe_merge_entry *h = lf_grow(sc->heap, &sc->hcap, sc->hn + 1, sizeof *h, 64);
        if (!h) return -1;
        sc->heap = h;
    }
    lf_bpe_merge_entry e = {rank, pos, new_id};
    size_t i = sc->hn++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&e, &sc->heap[p])) break;
        sc->heap[i] = sc->heap[p];
        i = p;
    }
    sc->heap[i] = e;
    return 0;
}

static lf_bpe_merge_entry heap_pop(lf_scratch *sc) {
    lf_bpe_merge_entry top = sc->heap[0];
    lf_bpe_merge_entry last = sc->heap[--sc->hn];
    size_t i = 0, n = sc->hn;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= n) break;
        size_t m = l;
        if (l + 1 < n && heap_less(&sc->heap[l + 1], &sc->heap[l])) m = l + 1;
        if (!heap_less(&sc->heap[m], &last)) break;
        sc->heap[i] = sc->heap[m];
        i = m;
    }
    if (n) sc->heap[i] = last;
    return top;
}

/* ---- symbols ------------------------------------------------------------- */
static int sym_reserve(lf_scratch *sc, size_t n) {
    if (n <= sc->scap) return 0;
    size_t cap = sc->scap ? sc->scap : 64;
    while (cap < n) cap *= 2;
    int32_t *c = realloc(sc->sc, cap * sizeof *c);
    if (!c) return -1;
    sc->sc = c;
    int32_t *p = realloc(sc->sprev, cap * sizeof *p);
    if (!p) return -1;
    sc->sprev = p;
    int32_t *x = realloc(sc->snext, cap * sizeof *x);
    if (!x) return -1;
    sc->snext = x;
    uint32_t *l = realloc(sc->slen, cap * sizeof *l);
    if (!l) return -1;
    sc->slen = l;
    sc->scap = cap;
    return 0;
}

static inline void sym_add(lf_scratch *sc, size_t *ns, int32_t id, uint32_t len) {
    size_t i = (*ns)++;
    sc->sc[i] = id;
    sc->slen[i] = len;
    sc->sprev[i] = (int32_t)i - 1;
    sc->snext[i] = -1;
    if (i > 0) sc->snext[i - 1] = (int32_t)i;
}

static int lookup_char(const lf_tokenizer *t, lf_scratch *sc, const char *w, size_t n, size_t i, size_t k) {
    bool first = i == 0, last = i + k == n;
    bool pre = !first && t->cont_prefix, suf = last && t->eow_suffix;
    if (!pre && !suf) {
        if (k <= 2) {
            uint32_t cp;
            lf_utf8_decode(w + i, k, &cp);
            if (cp < LF_CHAR_IDS) return t->char_ids[cp];
        }
        return lf_tok_vocab_find(t, w + i, k);
    }
    lf_buf *b = &sc->tmp;
    b->n = 0;
    if (pre && lf_buf_append(b, t->cont_prefix, strlen(t->cont_prefix))) return -2;
    if (lf_buf_append(b, w + i, k)) return -2;
    if (suf && lf_buf_append(b, t->eow_suffix, strlen(t->eow_suffix))) return -2;
    return lf_tok_vocab_find(t, b->p, b->n);
}

int lf_bpe_word(const lf_tokenizer *t, lf_scratch *sc, const char *w, size_t n, lf_ivec *out, lf_error *err) {
    if (n == 0) return 0;
    if (t->ignore_merges) {
        int id = lf_tok_vocab_find(t, w, n);
        if (id >= 0) return lf_ivec_push(out, id) ? lf_fail(err, "out of memory") : 0;
    }
    if (sym_reserve(sc, n + 1)) return lf_fail(err, "out of memory");
    size_t ns = 0;
    int32_t unk = -1;
    uint32_t unk_len = 0;
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = (size_t)lf_utf8_decode(w + i, n - i, &cp);
        int id = lookup_char(t, sc, w, n, i, k);
        if (id == -2) return lf_fail(err, "out of memory");
        if (id >= 0) {
            if (unk >= 0) {
                sym_add(sc, &ns, unk, unk_len);
                unk = -1;
            }
            sym_add(sc, &ns, id, (uint32_t)k);
        } else {
            bool done = false;
            if (t->byte_fallback) {
                bool all = true;
                for (size_t b = 0; b < k; b++)
                    if (t->byte_ids[(unsigned char)w[i + b]] < 0) all = false;
                if (all) {
                    for (size_t b = 0; b < k; b++) sym_add(sc, &ns, t->byte_ids[(unsigned char)w[i + b]], 1);
                    done = true;
                }
            }
            if (!done && t->unk_id >= 0) {
                if (unk >= 0 && t->fuse_unk) {
                    unk_len += (uint32_t)k;
                } else {
                    if (unk >= 0) sym_add(sc, &ns, unk, unk_len);
                    unk = t->unk_id;
                    unk_len = (uint32_t)k;
                }
            }
            /* neither: the reference drops the character */
        }
        i += k;
    }
    if (unk >= 0) sym_add(sc, &ns, unk, unk_len);
    if (ns == 0) return 0;

    /* merge */
    sc->hn = 0;
    for (size_t p = 0; p + 1 < ns; p++) {
        uint32_t rank;
        int32_t nid;
        if (merge_find(t, sc->sc[p], sc->sc[p + 1], &rank, &nid) && heap_push(sc, rank, (uint32_t)p, nid))
            return lf_fail(err, "out of memory");
    }
    while (sc->hn) {
        lf_bpe_merge_entry top = heap_pop(sc);
        size_t pos = top.pos;
        if (sc->slen[pos] == 0) continue;
        int32_t nx = sc->snext[pos];
        if (nx < 0) continue;
        uint32_t rank;
        int32_t nid;
        if (!merge_find(t, sc->sc[pos], sc->sc[nx], &rank, &nid) || nid != top.new_id) continue;
        /* merge pos with its right neighbour */
        sc->sc[pos] = top.new_id;
        sc->slen[pos] += sc->slen[nx];
        sc->snext[pos] = sc->snext[nx];
        sc->slen[nx] = 0;
        if (sc->snext[nx] >= 0) sc->sprev[sc->snext[nx]] = (int32_t)pos;
        int32_t pv = sc->sprev[pos];
        if (pv >= 0 && merge_find(t, sc->sc[pv], sc->sc[pos], &rank, &nid) &&
            heap_push(sc, rank, (uint32_t)pv, nid))
            return lf_fail(err, "out of memory");
        int32_t nn = sc->snext[pos];
        if (nn >= 0 && merge_find(t, sc->sc[pos], sc->sc[nn], &rank, &nid) &&
            heap_push(sc, rank, (uint32_t)pos, nid))
            return lf_fail(err, "out of memory");
    }
    if (lf_ivec_reserve(out, ns)) return lf_fail(err, "out of memory");
    for (size_t p = 0; p < ns; p++)
        if (sc->slen[p]) out->p[out->n++] = sc->sc[p];
    return 0;
}
