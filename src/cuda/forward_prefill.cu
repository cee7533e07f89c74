/* Prefill of one prompt into an entry: the entry reset, every layer over
 * the whole prompt (the policy's selection in forward_select.cu), the first
 * token sampled from the last row (forward_logits.cu). */
#include "cuda/forward_internal.h"

/* The prompt's tokens uploaded; the entry's slots empty up to its budget,
 * off beyond; its scores and accumulators 0. */
static int prefill_reset_entry(lf_cuda_backend *b, int entry, const int *tokens, int n, int bud, lf_error *err) {
    cudaStream_t s = b->stream;
    const int cap = b->cap;
    for (int i = 0; i < n; i++) b->h_ptok[i] = tokens[i];
    if (ck(cudaMemcpyAsync(b->d_ptok, b->h_ptok, (size_t)n * 4, cudaMemcpyHostToDevice, s), err,
           "prefill token upload"))
        return -1;
    /* the entry's slots: empty up to its budget, off beyond; scores and accumulators 0 */
    int32_t *pos_e = b->cpos + (size_t)entry * cap;
    if (launch_fill_i32(b, pos_e, b->slot_layer_stride, b->n_layers, bud, -1, err)) return -1;
    if (bud < cap &&
        launch_fill_i32(b, pos_e + bud, b->slot_layer_stride, b->n_layers, cap - bud, LF_CUDA_SLOT_OFF, err))
        return -1;
    if (b->scored &&
        launch_fill_f32(b, b->score + (size_t)entry * cap, b->slot_layer_stride, b->n_layers, cap, 0.f, err))
        return -1;
    if (b->uses_acc &&
        launch_fill_f32(b, b->acc + (size_t)entry * cap, b->slot_layer_stride, b->n_layers, cap, 0.f, err))
        return -1;
    return 0;
}

/* Where one prefill layer writes: the entry's K/V (and fp8 scales, |v|_1)
 * and slot positions of layer l. */
typedef struct layer_dst {
    void *Kl, *Vl;
    float *KSl, *VSl, *VNl;
    int32_t *pos_l;
} layer_dst;

/* q (head-major), and K/V rows: into the prefill scratch [kvh][n][hd] when
 * the attention reads bf16 rows there (fp8 cache, or SnapKV picks later),
 * else straight into the entry's slots 0..n-1; with need_f32 the fp32 q/k
 * the window sums read. */
static int prefill_rope_store(lf_cuda_backend *b, const gpu_layer *g, int n, bool compress, bool need_f32,
                              bool scratch, const layer_dst *d, lf_error *err) {
    void *vs = (void *)b->stream;
    const int cap = b->cap;
    void *Kl = d->Kl, *Vl = d->Vl;
    float *KSl = d->KSl, *VSl = d->VSl, *VNl = d->VNl;
    int32_t *pos_l = d->pos_l;
    lf_cuda_rope_store_args a;
    rope_args(b, g, n, b->d_ppos, &a);
    a.q_out = b->q;
    a.q_head_major = 1;
    a.q_f32 = need_f32 ? b->q32 : NULL;
    a.k_f32 = need_f32 ? b->k32 : NULL;
    if (scratch) { /* into the prefill scratch [kvh][n][hd] */
        a.k_dst = b->pk;
        a.v_dst = b->pv;
        a.kvh_stride = (int64_t)n * b->head_dim;
    } else { /* straight into the entry's slots 0..n-1 */
        a.k_dst = Kl;
        a.v_dst = Vl;
        a.kvh_stride = (int64_t)cap * b->head_dim;
    }
    a.cache_pos = compress ? NULL : pos_l;
    if (b->f8) { /* FP8 rows from the fp32 values: the entry's slots 0..n-1, or a scratch SnapKV picks from */
        a.k8_dst = compress ? (void *)b->pk8 : Kl;
        a.v8_dst = compress ? (void *)b->pv8 : Vl;
        a.k8_scale = compress ? b->pks : KSl;
        a.v8_scale = compress ? b->pvs : VSl;
        a.v8_norm = b->vnorm ? (compress ? b->pvn : VNl) : NULL;
        a.f8_entry_stride = 0;
        a.f8_kvh_stride = (int64_t)(compress ? n : cap) * b->head_dim;
    }
    a.kv_entry_stride = 0;
    a.slot_entry_stride = 0;
    return lf_cuda_rope_store(&a, vs, err);
}

/* Layer l of the prompt: attention (the policy's selection when it
 * compresses or accumulates, *nk the tokens kept), o_proj and the MLP. */
static int prefill_layer(lf_cuda_backend *b, int l, int entry, int n, int bud, bool compress, bool need_f32, int *nk,
                         lf_error *err) {
    void *vs = (void *)b->stream;
    const int cap = b->cap;
    const gpu_layer *g = &b->layers[l];
    layer_dst d;
    d.Kl = kv_at(b, b->K, l, entry);
    d.Vl = kv_at(b, b->V, l, entry);
    d.KSl = kv_scale_at(b, b->KS, l, entry);
    d.VSl = kv_scale_at(b, b->VS, l, entry);
    d.VNl = kv_scale_at(b, b->VN, l, entry);
    d.pos_l = b->cpos + (size_t)l * b->slot_layer_stride + (size_t)entry * cap;
    void *Kl = d.Kl, *Vl = d.Vl;
    /* bf16 rows for the prefill attention in the scratch (fp8 cache, or SnapKV picks later) */
    const bool scratch = compress || b->f8;
    if (lf_cuda_rmsnorm(b->x, g->attn_norm, n, b->hidden, b->eps, b->h, vs, err)) return -1;
    if (lf_cuda_gemm(b->gemm, g->wqkv, b->qkv_dim, b->hidden, b->h, n, b->qkv, LF_DTYPE_F32, 0.f, vs, err))
        return -1;
    if (prefill_rope_store(b, g, n, compress, need_f32, scratch, &d, err)) return -1;
    {
        const void *kk = scratch ? (const void *)b->pk : (const void *)Kl;
        const void *vv = scratch ? (const void *)b->pv : (const void *)Vl;
        const int64_t kst = scratch ? (int64_t)n * b->head_dim : (int64_t)cap * b->head_dim;
        if (lf_cuda_prefill_attention(b->pf, b->q, kk, vv, kst, n, 0.f, b->att, vs, err)) return -1;
    }
    if (need_f32 &&
        prefill_select_layer(b, l, entry, n, bud, compress, Kl, d.KSl, Vl, d.VSl, d.VNl, d.pos_l, nk, err))
        return -1;
    if (b->desc->slot_stat &&
        lf_cuda_slot_stat(b->desc->slot_stat, Kl, LF_DTYPE_BF16, 0, (int64_t)cap * b->head_dim, b->n_kv_heads,
                          b->head_dim, NULL, NULL, *nk, b->acc + (size_t)l * b->slot_layer_stride + (size_t)entry * cap,
                          0, vs, err))
        return -1;
    if (lf_cuda_gemm(b->gemm, g->wo, b->hidden, b->q_dim, b->att, n, b->x, LF_DTYPE_F32, 1.f, vs, err)) return -1;
    for (int r0 = 0; r0 < n; r0 += b->mlp_rows) {
        int nt = n - r0 < b->mlp_rows ? n - r0 : b->mlp_rows;
        if (mlp_rows(b, g, r0, nt, NULL, err)) return -1;
    }
    return 0;
}

/* The entry's host state after its prefill: nk tokens stored (the kept
 * positions when compressed), s0 of them sinks. */
static void prefill_entry_state(lf_cuda_backend *b, int entry, uint64_t seed, int bud, int nk, bool compress) {
    entry_state *st = &b->st[entry];
    st->live = true;
    st->seed = seed;
    st->step = 1;
    st->budget = bud;
    st->filled = nk;
    st->ring = 0;
    st->s0 = 0;
    for (int i = 0; i < nk; i++) {
        int p = compress ? b->h_kept[i] : i;
        if (p < b->pol.sinks) st->s0++;
    }
}

static int prefill_run(lf_cuda_backend *b, int entry, const int *tokens, int n, int bud, uint64_t seed,
                       int *first_token, float *logits, lf_error *err) {
    void *vs = (void *)b->stream;
    const bool compress = b->desc->budgeted && n > bud - 1;
    const bool need_f32 = compress || lf_score_writes_acc(b->mode);
    int nk = compress ? bud - 1 : n;

    if (prefill_reset_entry(b, entry, tokens, n, bud, err)) return -1;
    if (lf_cuda_embed(b->embed, b->vocab, b->hidden, b->d_ptok, n, b->x, vs, err)) return -1;
    for (int l = 0; l < b->n_layers; l++)
        if (prefill_layer(b, l, entry, n, bud, compress, need_f32, &nk, err))
            return lf_fail_prefix(err, "cuda prefill of %d tokens into entry %d, layer %d", n, entry, l);
    if (b->scored && launch_fill_i32(b, b->next_slot + entry, b->E, b->n_layers, 1, nk, err)) return -1;
    /* the last layer's kept positions, for the entry's sink count (read
     * after prefill_first_token's synchronisation) */
    if (compress && ck(cudaMemcpyAsync(b->h_kept, b->d_kept, (size_t)nk * 4, cudaMemcpyDeviceToHost, b->stream), err,
                       "SnapKV positions download"))
        return -1;
    if (prefill_first_token(b, entry, n, seed, first_token, logits, err)) return -1;
    prefill_entry_state(b, entry, seed, bud, nk, compress);
    return 0;
}

extern "C" int lf_cuda_prefill(lf_cuda_backend *b, int entry, const int *tokens, int n, int budget, uint64_t seed,
                               int *first_token, float *logits, lf_error *err) {
    if (!b || !tokens || !first_token) return lf_fail(err, "cuda prefill: missing argument");
    if (entry < 0 || entry >= b->E)
        return lf_fail(err, "cuda prefill: entry %d out of range (the pool has %d)", entry, b->E);
    if (n <= 0) return lf_fail(err, "cuda prefill: the prompt is empty");
    if (n > b->P)
        return lf_fail(err, "cuda prefill: a prompt of %d tokens is longer than the %d the backend was sized for "
                            "(max_prompt)", n, b->P);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= b->vocab)
            return lf_fail(err, "cuda prefill: token id %d at index %d is outside the vocabulary [0, %d)",
                           tokens[i], i, b->vocab);
    if (budget < 0 || budget > b->cap)
        return lf_fail(err, "cuda prefill: budget %d for entry %d is outside 1..%d (the entries' slots; 0 = all)",
                       budget, entry, b->cap);
    if (!b->desc->budgeted && budget != 0 && budget != b->cap)
        return lf_fail(err, "cuda prefill: --policy full keeps every token; a budget of %d slots does not apply",
                       budget);
    const int bud = budget ? budget : b->cap;
    if (lf_policy_check_prompt(&b->pol, bud, b->cap, n, err)) return lf_fail_prefix(err, "cuda prefill");
    /* the recent window, and the check that something is left to evict, as
     * lf_kv_cache_init resolves them for a cache of `bud` slots and this budget */
    int recent = b->pol.recent;
    if (budget && b->desc->budgeted) {
        lf_policy_config in = b->o.policy, res;
        in.budget = bud;
        if (lf_policy_resolve_slots(&in, bud, &res, err))
            return lf_fail_prefix(err, "cuda prefill: entry %d's budget", entry);
        if (b->pol.sinks >= bud)
            return lf_fail(err, "cuda prefill: budget %d must exceed the %d sinks of --policy %s", bud, b->pol.sinks,
                           lf_policy_name(b->pol.kind));
        recent = res.recent;
        if (b->pol.sinks + recent >= bud) recent = bud - 1 - b->pol.sinks;
    }
    b->st[entry].live = false;
    if (launch_fill_i32(b, b->recent_e + entry, 0, 1, 1, recent, err)) return -1;
    if (prefill_run(b, entry, tokens, n, bud, seed, first_token, logits, err)) {
        cudaStreamSynchronize(b->stream);
        b->st[entry].live = false;
        return -1;
    }
    return 0;
}
