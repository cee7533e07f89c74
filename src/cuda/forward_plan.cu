/* The CUDA backend's memory plan: the workspace layout for E entries, the
 * largest E that fits, and the three allocations carved from it (the entry
 * pool, the workspace, the pinned host mirror of the inputs). */
#include "cuda/forward_internal.h"

/* Whether a prefill may have to compress its prompt (SnapKV), which needs
 * the prompt's K/V scratch and fp32 q/k: a budgeted policy and a prompt
 * longer than the smallest budget that may compress (a sequence's own
 * budget, lf_cuda_prefill's, can be smaller than the entries' slots). */
bool prefill_may_compress(const lf_cuda_backend *b) {
    return b->desc->budgeted && b->P > LF_SNAPKV_MIN_BUDGET - 1;
}

/* The workspace layout for E entries (ws_layout, forward_internal.h). */
static int ws_plan(const lf_cuda_backend *b, int E, ws_layout *w, lf_error *err) {
    memset(w, 0, sizeof *w);
    const size_t R = (size_t)(b->P > E ? b->P : E);
    int mr = b->P < LF_CUDA_MLP_CHUNK ? b->P : LF_CUDA_MLP_CHUNK;
    if (E > mr) mr = E;
    const size_t M = (size_t)mr;
    const size_t P = (size_t)b->P;
    const bool may_compress = prefill_may_compress(b);
    const bool need_f32 = may_compress || lf_score_writes_acc(b->mode);
    const bool bf16_scratch = may_compress || b->f8; /* fp8: prefill attention reads the bf16 rows */
    const bool f8_scratch = may_compress && b->f8;
    size_t off = 0;
#define TAKE(field, bytes)        \
    do {                          \
        w->field = off;           \
        off += align256(bytes);   \
    } while (0)
    TAKE(x, R * b->hidden * 4);
    TAKE(h, R * b->hidden * 2);
    TAKE(qkv, R * b->qkv_dim * 4);
    TAKE(q, R * b->q_dim * 2);
    TAKE(att, R * b->q_dim * 2);
    TAKE(gu, M * 2 * b->inter * 4);
    TAKE(mlp, M * b->inter * 2);
    TAKE(logits, (size_t)E * b->vocab_pad * 4);
    TAKE(logits_copy, (size_t)E * b->vocab_pad * 4);
    TAKE(q32, need_f32 ? P * b->q_dim * 4 : 0);
    TAKE(k32, need_f32 ? P * b->kv_dim * 4 : 0);
    TAKE(pk, bf16_scratch ? P * b->kv_dim * 2 : 0);
    TAKE(pv, bf16_scratch ? P * b->kv_dim * 2 : 0);
    TAKE(pk8, f8_scratch ? P * b->kv_dim : 0);
    TAKE(pv8, f8_scratch ? P * b->kv_dim : 0);
    TAKE(pks, f8_scratch ? P * b->n_kv_heads * 4 : 0);
    TAKE(pvs, f8_scratch ? P * b->n_kv_heads * 4 : 0);
    TAKE(pvn, f8_scratch && b->vnorm ? P * b->n_kv_heads * 4 : 0);
    /* the window softmax sums: scratch, and SnapKV's [P] + the accumulator's [P] */
    w->win_bytes = need_f32 ? lf_cuda_window_sums_bytes(b->P, b->n_heads, LF_SNAPKV_WINDOW) : 0;
    TAKE(win, w->win_bytes);
    TAKE(wsum, need_f32 ? 2 * P * 4 : 0);
    /* decode inputs: seeds (u64), tokens, pos, entries, row_slot, steps, out */
    w->in_bytes = (size_t)E * (8 + 6 * 4);
    TAKE(in, w->in_bytes);
    TAKE(ptok, P * 4);
    TAKE(ppos, P * 4);
    TAKE(kept, (size_t)b->cap * 4);
    lf_cuda_attn_desc d;
    memset(&d, 0, sizeof d);
    d.n_seq = E;
    d.n_heads = b->n_heads;
    d.n_kv_heads = b->n_kv_heads;
    d.head_dim = b->head_dim;
    d.dtype = LF_DTYPE_BF16;
    d.out_dtype = LF_DTYPE_BF16;
    d.mode = b->mode;
    d.kv_fp8 = b->f8;
    /* every scan a step may use (multiples of 64, and cap): the kernel's plan,
     * and with it the workspace, is not monotonic in the slots scanned */
    w->attn_bytes = 0;
    for (int sc = 64;; sc += 64) {
        d.capacity = sc < b->cap ? sc : b->cap;
        size_t t = 0;
        if (lf_cuda_attn_workspace_bytes(&d, &t, err)) return lf_fail_prefix(err, "cuda: plan");
        if (t > w->attn_bytes) w->attn_bytes = t;
        if (d.capacity == b->cap) break;
    }
    TAKE(attn, w->attn_bytes);
    w->samp_bytes = lf_cuda_sample_workspace_bytes(E, b->vocab_pad);
    TAKE(samp, w->samp_bytes);
#undef TAKE
    w->total = off;
    w->rows = (int)R;
    w->mlp_rows = mr;
    return 0;
}

/* Entries: the largest E <= cap_e with E * per_entry + ws(E) <= avail. */
static int plan_entries(lf_cuda_backend *b, size_t avail, size_t per_entry, int cap_e, int *out, ws_layout *wl,
                        lf_error *err) {
    ws_layout w1;
    if (ws_plan(b, 1, &w1, err)) return -1;
    if (per_entry + w1.total > avail)
        return lf_fail(err,
                       "cuda: not even one sequence fits: one entry needs %zu bytes (K/V %zu + slot state %zu) "
                       "plus %zu bytes of workspace, but only %zu of the %zu free bytes may be used "
                       "(mem_fraction %.3g); lower --budget/--max-tokens or the prompt length",
                       per_entry, b->kv_per_entry, b->aux_per_entry, w1.total, avail, b->gpu_free_plan,
                       b->o.mem_fraction > 0 ? b->o.mem_fraction : 0.92);
    size_t e0 = (avail - w1.total) / per_entry;
    int hi = e0 > (size_t)cap_e ? cap_e : (int)e0;
    if (hi < 1) hi = 1;
    ws_layout w;
    if (ws_plan(b, hi, &w, err)) return -1;
    if ((size_t)hi * per_entry + w.total <= avail) {
        *out = hi;
        *wl = w;
        return 0;
    }
    /* binary search: lo fits, hi does not */
    int lo = 1;
    ws_layout wlo = w1;
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        if (ws_plan(b, mid, &w, err)) return -1;
        if ((size_t)mid * per_entry + w.total <= avail) {
            lo = mid;
            wlo = w;
        } else {
            hi = mid;
        }
    }
    *out = lo;
    *wl = wlo;
    return 0;
}

int plan_memory(lf_cuda_backend *b, const lf_cuda_options *o, ws_layout *wl, lf_error *err) {
    size_t fr = 0, tot = 0;
    b->kv_per_entry = (size_t)b->n_layers * b->cap * lf_kv_token_bytes(o->policy.kv_dtype, b->n_kv_heads, b->head_dim);
    b->seen_words = o->sampling.repetition_penalty != 1.0f ? (b->vocab + 31) / 32 : 0;
    b->aux_per_entry = (size_t)b->n_layers * b->cap * (4 + (b->scored ? 4 : 0) + (b->uses_acc ? 4 : 0) +
                                                 (b->vnorm ? 4 * (size_t)b->n_kv_heads : 0)) +
                       (size_t)b->n_layers * 4 + 4 + (size_t)b->seen_words * 4;
    const size_t per_entry = b->kv_per_entry + align256(b->aux_per_entry) + 256;
    if (ck(cudaMemGetInfo(&fr, &tot), err, "cudaMemGetInfo")) return -1;
    b->gpu_free_plan = fr;
    const double frac = o->mem_fraction > 0 ? o->mem_fraction : 0.92;
    const size_t avail = (size_t)(frac * (double)fr);
    const int cap_e = o->max_seqs > 0 ? o->max_seqs : LF_CUDA_MAX_ENTRIES;
    int E = 0;
    if (plan_entries(b, avail, per_entry, cap_e, &E, wl, err)) return -1;
    b->E = E;
    b->mlp_rows = wl->mlp_rows;
    size_t fit_e = (avail > wl->total) ? (avail - wl->total) / per_entry : 0;
    snprintf(b->plan, sizeof b->plan,
             "entries = min(%s %d, fit %zu) = %d: %.3g of %.3g free bytes (mem_fraction %.2f) minus %.3g "
             "workspace, %zu bytes per entry; PDL %s",
             o->max_seqs > 0 ? "--max-seqs" : "limit", cap_e, fit_e, E, (double)avail, (double)fr, frac,
             (double)wl->total, per_entry, lf_cuda_pdl_enabled() ? "on (LF_CUDA_PDL=1)" : "off");
    return 0;
}

int carve_pool(lf_cuda_backend *b, lf_error *err) {
    const int E = b->E;
    /* pool: K [layer][entry][kvh][cap][hd], V same, pos/score/acc
     * [layer][entry][cap], next_slot [layer][entry] */
    const size_t kv_elems = (size_t)b->n_layers * E * b->n_kv_heads * (size_t)b->cap * b->head_dim;
    const size_t slots = (size_t)b->n_layers * E * b->cap;
    size_t off = 0;
    const size_t oK = off;
    off += align256(kv_elems * b->kv_elem);
    const size_t oV = off;
    off += align256(kv_elems * b->kv_elem);
    const size_t oKS = off; /* fp8: a float scale per row */
    off += b->f8 ? align256(kv_elems / b->head_dim * 4) : 0;
    const size_t oVS = off;
    off += b->f8 ? align256(kv_elems / b->head_dim * 4) : 0;
    const size_t oVN = off;
    off += b->vnorm ? align256(kv_elems / b->head_dim * 4) : 0;
    const size_t oP = off;
    off += align256(slots * 4);
    const size_t oS = off;
    off += b->scored ? align256(slots * 4) : 0;
    const size_t oA = off;
    off += b->uses_acc ? align256(slots * 4) : 0;
    const size_t oN = off;
    off += align256((size_t)b->n_layers * E * 4);
    const size_t oR = off;
    off += align256((size_t)E * 4);
    const size_t oH = off;
    off += align256((size_t)E * b->seen_words * 4);
    if (dmalloc(b, &b->pool, off, err, "the KV pool")) return -1;
    b->pool_bytes = off;
    char *pb = (char *)b->pool;
    b->K = pb + oK;
    b->V = pb + oV;
    b->KS = b->f8 ? (float *)(pb + oKS) : NULL;
    b->VS = b->f8 ? (float *)(pb + oVS) : NULL;
    b->VN = b->vnorm ? (float *)(pb + oVN) : NULL;
    b->cpos = (int32_t *)(pb + oP);
    b->score = b->scored ? (float *)(pb + oS) : NULL;
    b->acc = b->uses_acc ? (float *)(pb + oA) : NULL;
    b->next_slot = (int32_t *)(pb + oN);
    b->recent_e = (int32_t *)(pb + oR);
    b->seen = b->seen_words ? (uint32_t *)(pb + oH) : NULL;
    b->kv_seq_stride = (long long)b->n_kv_heads * b->cap * b->head_dim;
    b->kv_layer_stride = (long long)E * b->kv_seq_stride;
    b->slot_layer_stride = (long long)E * b->cap;
    /* every slot empty */
    if (ck(cudaMemsetAsync(b->cpos, 0xff, slots * 4, b->stream), err, "pool init")) return -1;
    if (b->scored && ck(cudaMemsetAsync(b->score, 0, slots * 4, b->stream), err, "pool init")) return -1;
    if (b->uses_acc && ck(cudaMemsetAsync(b->acc, 0, slots * 4, b->stream), err, "pool init")) return -1;
    if (ck(cudaMemsetAsync(b->next_slot, 0, (size_t)b->n_layers * E * 4, b->stream), err, "pool init")) return -1;
    if (launch_fill_i32(b, b->recent_e, 0, 1, E, b->pol.recent, err)) return -1;
    return 0;
}

int carve_workspace(lf_cuda_backend *b, const ws_layout *wl, lf_error *err) {
    const int E = b->E;
    if (dmalloc(b, &b->ws, wl->total, err, "the activations")) return -1;
    b->ws_bytes = wl->total;
    char *w = (char *)b->ws;
    b->x = (float *)(w + wl->x);
    b->h = (bf16 *)(w + wl->h);
    b->qkv = (float *)(w + wl->qkv);
    b->q = (bf16 *)(w + wl->q);
    b->att = (bf16 *)(w + wl->att);
    b->gu = (float *)(w + wl->gu);
    b->mlp = (bf16 *)(w + wl->mlp);
    b->logits = (float *)(w + wl->logits);
    b->logits_copy = (float *)(w + wl->logits_copy);
    b->q32 = (float *)(w + wl->q32);
    b->k32 = (float *)(w + wl->k32);
    b->pk = (bf16 *)(w + wl->pk);
    b->win_ws = w + wl->win;
    b->win_ws_bytes = wl->win_bytes;
    b->d_raw = (float *)(w + wl->wsum);
    b->d_win = b->d_raw + b->P;
    b->pv = (bf16 *)(w + wl->pv);
    b->pk8 = (uint8_t *)(w + wl->pk8);
    b->pv8 = (uint8_t *)(w + wl->pv8);
    b->pks = (float *)(w + wl->pks);
    b->pvs = (float *)(w + wl->pvs);
    b->pvn = (float *)(w + wl->pvn);
    b->in_bytes = wl->in_bytes;
    char *in = w + wl->in;
    b->d_seeds = (uint64_t *)in;
    b->d_tokens = (int32_t *)(in + (size_t)E * 8);
    b->d_pos = b->d_tokens + E;
    b->d_entries = b->d_pos + E;
    b->d_row_slot = b->d_entries + E;
    b->d_steps = b->d_row_slot + E;
    b->d_out = b->d_steps + E;
    b->d_ptok = (int32_t *)(w + wl->ptok);
    b->d_ppos = (int32_t *)(w + wl->ppos);
    b->d_kept = (int32_t *)(w + wl->kept);
    b->attn_ws = w + wl->attn;
    b->attn_ws_bytes = wl->attn_bytes;
    b->samp_ws = w + wl->samp;
    b->samp_ws_bytes = wl->samp_bytes;
    if (lf_cuda_attn_workspace_init(b->attn_ws, b->attn_ws_bytes, b->stream, err)) return -1;
    b->attn_ws_rows = INT_MAX;
    return 0;
}

int carve_host_mirror(lf_cuda_backend *b, const ws_layout *wl, lf_error *err) {
    const int E = b->E;
    /* pinned host mirror: decode inputs, then prefill tokens and kept positions */
    b->h_in_bytes = wl->in_bytes + (size_t)b->P * 4 + (size_t)b->cap * 4 + 64;
    if (ck(cudaMallocHost(&b->h_in, b->h_in_bytes), err, "pinned host buffer")) return -1;
    char *hi = (char *)b->h_in;
    b->h_seeds = (uint64_t *)hi;
    b->h_tokens = (int32_t *)(hi + (size_t)E * 8);
    b->h_pos = b->h_tokens + E;
    b->h_entries = b->h_pos + E;
    b->h_row_slot = b->h_entries + E;
    b->h_steps = b->h_row_slot + E;
    b->h_out = b->h_steps + E;
    b->h_ptok = b->h_out + E;
    b->h_kept = b->h_ptok + b->P;
    memset(b->h_in, 0, b->h_in_bytes);

    /* prefill positions 0..P-1 */
    for (int i = 0; i < b->P; i++) b->h_ptok[i] = i;
    if (ck(cudaMemcpyAsync(b->d_ppos, b->h_ptok, (size_t)b->P * 4, cudaMemcpyHostToDevice, b->stream), err,
           "prefill positions upload"))
        return -1;
    if (ck(cudaStreamSynchronize(b->stream), err, "pool initialisation")) return -1;
    return 0;
}
