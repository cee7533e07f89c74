/* A free list of KV buffers: the block that holds one cache's K and V rows
 * (and fp8's row scales), kept when its sequence ends so that the next
 * sequence's cache takes it instead of a fresh allocation. A long-running
 * engine (the server) opens and closes a cache per request; without the
 * list every request would allocate and free megabytes.
 *
 * Bounded: at most `cap` buffers exist at once, taken and free together
 * (the CPU backend passes its places, --max-seqs), so the memory it keeps
 * is at most cap of the largest caches run. take hands out the smallest
 * free buffer that is large enough; when none is, it frees one that is too
 * small (when the bound is reached) and allocates. A reused buffer is not
 * cleared: a cache reads only the slots its own sequence wrote (slots below
 * each layer's high-water mark, which a new cache starts at 0). */
#ifndef LF_KV_BUFFERS_H
#define LF_KV_BUFFERS_H

#include <stddef.h>

typedef struct lf_kv_buffer {
    void *p;
    size_t bytes;
} lf_kv_buffer;

typedef struct lf_kv_buffers {
    lf_kv_buffer *free_list; /* [cap] */
    int n_free;
    int n_taken;    /* buffers handed out and not yet given back */
    int cap;
    long allocated; /* buffers take allocated */
    long reused;    /* buffers take handed out again */
} lf_kv_buffers;

/* An empty list of at most cap buffers. -1: out of memory. */
int lf_kv_buffers_init(lf_kv_buffers *b, int cap);
/* Frees the free buffers (every taken one must have been given back). */
void lf_kv_buffers_free(lf_kv_buffers *b);
/* A buffer of at least `bytes` (its size in *out). -1: out of memory. */
int lf_kv_buffers_take(lf_kv_buffers *b, size_t bytes, lf_kv_buffer *out);
/* Give back a buffer take handed out. */
void lf_kv_buffers_give(lf_kv_buffers *b, lf_kv_buffer buf);

#endif
