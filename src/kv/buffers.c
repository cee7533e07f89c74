/* The free list of KV buffers (buffers.h). */
#include "kv/buffers.h"

#include <stdlib.h>
#include <string.h>

int lf_kv_buffers_init(lf_kv_buffers *b, int cap) {
    memset(b, 0, sizeof *b);
    if (cap < 1) cap = 1;
    b->free_list = calloc((size_t)cap, sizeof *b->free_list);
    if (!b->free_list) return -1;
    b->cap = cap;
    return 0;
}

void lf_kv_buffers_free(lf_kv_buffers *b) {
    for (int i = 0; i < b->n_free; i++) free(b->free_list[i].p);
    free(b->free_list);
    memset(b, 0, sizeof *b);
}

/* Take entry i out of the free list. */
static lf_kv_buffer unlist(lf_kv_buffers *b, int i) {
    lf_kv_buffer got = b->free_list[i];
    b->free_list[i] = b->free_list[--b->n_free];
    return got;
}

/* Index of the smallest free buffer of at least `bytes` (min_bytes 0: the
 * smallest of all); -1 when none. */
static int smallest_free(const lf_kv_buffers *b, size_t min_bytes) {
    int best = -1;
    for (int i = 0; i < b->n_free; i++)
        if (b->free_list[i].bytes >= min_bytes && (best < 0 || b->free_list[i].bytes < b->free_list[best].bytes))
            best = i;
    return best;
}

int lf_kv_buffers_take(lf_kv_buffers *b, size_t bytes, lf_kv_buffer *out) {
    int i = smallest_free(b, bytes);
    if (i >= 0) {
        *out = unlist(b, i);
        b->n_taken++;
        b->reused++;
        return 0;
    }
    /* none fits: a new one, within the bound (a free buffer that is too
     * small gives way) */
    if (b->n_free > 0 && b->n_free + b->n_taken >= b->cap) free(unlist(b, smallest_free(b, 0)).p);
    out->p = calloc(1, bytes ? bytes : 1);
    out->bytes = bytes;
    if (!out->p) return -1;
    b->n_taken++;
    b->allocated++;
    return 0;
}

void lf_kv_buffers_give(lf_kv_buffers *b, lf_kv_buffer buf) {
    if (!buf.p) return;
    b->n_taken--;
    if (b->n_free + b->n_taken >= b->cap) { /* over the bound (more were taken than cap): drop the smaller */
        int i = smallest_free(b, 0);
        if (i < 0 || b->free_list[i].bytes >= buf.bytes) {
            free(buf.p);
            return;
        }
        free(unlist(b, i).p);
    }
    b->free_list[b->n_free++] = buf;
}
