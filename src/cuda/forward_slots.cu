/* The host's slot rules of the policies whose next slot the host chooses
 * (full: append; streaming: the oldest non-sink slot), and the entries'
 * host state after a decode step. */
#include "cuda/forward_internal.h"

/* Streaming's slot for the next token of an entry, equal to cache.c's rule
 * (first empty slot; once full, the evictable slot with the smallest
 * position; sinks = positions < --sinks are never evicted, recent is 0).
 *
 * `cap` below is the entry's budget (its slots; beyond them LF_CUDA_SLOT_OFF).
 * Claim: with positions stored in increasing order, the slots always hold
 * increasing positions in slot order while filling, and once full the
 * non-sink slots s0..cap-1 read cyclically from s0 + ring hold increasing
 * positions; so the smallest evictable position is in slot s0 + ring.
 * Proof: the prefill leaves slots 0..nk-1 with ascending positions (all of
 * the prompt, or SnapKV's kept positions, which it writes ascending); cache.c
 * fills the empty slots nk, nk+1, ... in order (first_empty, and every slot
 * below `filled` is valid) with ever larger positions, so at the moment the
 * cache is full slot order = position order, the positions < sinks are the
 * prefix 0..s0-1 (s0 counted as they were stored), and the oldest non-sink
 * is slot s0 (ring = 0). Every later token has a larger position than all
 * held (and >= sinks: cap > sinks distinct positions were stored before it),
 * so overwriting the oldest non-sink slot s0 + ring with it makes it the
 * newest, and the cyclic order starting at s0 + ring + 1 is again increasing:
 * ring advances by one modulo cap - s0. The current token is evictable too
 * (recent = 0), but it is the newest, so it is the minimum only when it is
 * the only non-sink slot (cap - s0 = 1), where the ring stays on it as well.
 * s0 < cap because cap > sinks (lf_policy_resolve; lf_cuda_prefill checks a
 * per-entry budget). */
static int streaming_slot(const entry_state *st) {
    if (st->filled < st->budget) return st->filled;
    return st->s0 + st->ring;
}

int next_host_slot(const lf_cuda_backend *b, const entry_state *st) {
    if (b->desc->gpu == LF_GPU_APPEND) return st->filled < b->cap ? st->filled : -1;
    return streaming_slot(st); /* LF_GPU_OLDEST */
}

/* After a successful step: the host state of the rows' entries. */
void decode_advance(lf_cuda_backend *b, int n, const int *entries, const int *pos) {
    for (int i = 0; i < n; i++) {
        entry_state *st = &b->st[entries[i]];
        st->step++;
        if (st->filled < st->budget) {
            if (pos[i] < b->pol.sinks) st->s0++;
            st->filled++;
        } else if (b->desc->gpu == LF_GPU_OLDEST) {
            st->ring = (st->ring + 1) % (st->budget - st->s0);
        }
    }
}
