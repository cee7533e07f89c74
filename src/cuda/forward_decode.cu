/* The decode step of a batch of entries: the batch checked and its inputs
 * uploaded at once, then the kernels of every layer (and the logits and
 * sampling, forward_logits.cu), which a CUDA graph per (rows, slots
 * scanned) replays. The host's slot rules are in forward_slots.cu. */
#include "cuda/forward_internal.h"


int prepare_shapes(lf_cuda_backend *b, int n, lf_error *err) {
    const int hid = b->hidden;
    if (lf_cuda_gemm_prepare(b->gemm, b->qkv_dim, hid, n, LF_DTYPE_F32, 0.f, err) ||
        lf_cuda_gemm_prepare(b->gemm, hid, b->q_dim, n, LF_DTYPE_F32, 1.f, err) ||
        lf_cuda_gemm_prepare(b->gemm, 2 * b->inter, hid, n, LF_DTYPE_F32, 0.f, err) ||
        lf_cuda_gemm_prepare(b->gemm, hid, b->inter, n, LF_DTYPE_F32, 1.f, err) ||
        lf_cuda_gemm_prepare(b->gemm, b->vocab_pad, hid, n, LF_DTYPE_F32, 0.f, err))
        return lf_fail_prefix(err, "cuda decode: GEMM shapes for %d rows", n);
    return 0;
}

static void attn_desc(const lf_cuda_backend *b, int n, lf_cuda_attn_desc *d) {
    memset(d, 0, sizeof *d);
    d->n_seq = n;
    d->n_heads = b->n_heads;
    d->n_kv_heads = b->n_kv_heads;
    d->head_dim = b->head_dim;
    d->capacity = b->cur_scan > 0 ? b->cur_scan : b->cap;
    d->dtype = LF_DTYPE_BF16;
    d->out_dtype = LF_DTYPE_BF16;
    d->mode = b->mode;
    d->kv_fp8 = b->f8;
}

/* Where one decode layer reads and writes: the entries' K/V (and fp8
 * scales, |v|_1), slot positions and next slots of layer l. */
typedef struct layer_at {
    void *Kl, *Vl;
    float *KSl, *VSl, *VNl;
    int32_t *pos_l, *next_l;
    int l;
} layer_at;

/* q, and each row's K/V stored into its entry's slot (the GPU's next slot
 * for the scored policies, the host's row slot otherwise). */
static int decode_rope_store(lf_cuda_backend *b, const gpu_layer *g, int n, const layer_at *ld, lf_error *err) {
    void *vs = (void *)b->stream;
    const int cap = b->cap;
    void *Kl = ld->Kl, *Vl = ld->Vl;
    float *KSl = ld->KSl, *VSl = ld->VSl, *VNl = ld->VNl;
    int32_t *pos_l = ld->pos_l, *next_l = ld->next_l;
    lf_cuda_rope_store_args a;
    rope_args(b, g, n, b->d_pos, &a);
    a.q_out = b->q;
    a.q_head_major = 0;
    a.k_dst = b->f8 ? NULL : Kl;
    a.v_dst = b->f8 ? NULL : Vl;
    a.kv_entry_stride = b->kv_seq_stride;
    a.kvh_stride = (int64_t)cap * b->head_dim;
    if (b->f8) {
        a.k8_dst = Kl;
        a.v8_dst = Vl;
        a.k8_scale = KSl;
        a.v8_scale = VSl;
        a.v8_norm = VNl;
        a.f8_entry_stride = b->kv_seq_stride;
        a.f8_kvh_stride = (int64_t)cap * b->head_dim;
    }
    a.row_entry = b->d_entries;
    a.slot_by_entry = b->scored ? next_l : NULL;
    a.row_slot = b->scored ? NULL : b->d_row_slot;
    a.cache_pos = pos_l;
    a.slot_entry_stride = cap;
    return lf_cuda_rope_store(&a, vs, err);
}

/* The fused attention of the batch: output, the policy's scores and next
 * slots. */
static int decode_attention(lf_cuda_backend *b, const lf_cuda_attn_desc *d, const layer_at *ld, lf_error *err) {
    void *vs = (void *)b->stream;
    const int cap = b->cap;
    const int l = ld->l;
    void *Kl = ld->Kl, *Vl = ld->Vl;
    float *KSl = ld->KSl, *VSl = ld->VSl, *VNl = ld->VNl;
    int32_t *pos_l = ld->pos_l, *next_l = ld->next_l;
    lf_cuda_attn_args a;
    memset(&a, 0, sizeof a);
    a.q = b->q;
    a.k = Kl;
    a.v = Vl;
    a.k_scale = KSl;
    a.v_scale = VSl;
    a.v_norm = VNl;
    a.kv_seq_stride = b->kv_seq_stride;
    a.kvh_slots = cap;
    a.pos = pos_l;
    a.slot_seq_stride = cap;
    a.seq_index = b->d_entries;
    a.out = b->att;
    a.score = b->scored ? b->score + (size_t)l * b->slot_layer_stride : NULL;
    a.acc = b->uses_acc ? b->acc + (size_t)l * b->slot_layer_stride : NULL;
    a.next_slot = b->scored ? next_l : NULL;
    a.cur_pos = b->d_pos;
    a.sinks = b->pol.sinks;
    a.recent = b->pol.recent;
    a.recent_by_entry = b->recent_e;
    a.scale = 0.f;
    a.workspace = b->attn_ws;
    a.workspace_bytes = b->attn_ws_bytes;
    a.stream = vs;
    return lf_cuda_attn_decode(d, &a, err);
}

/* Layer l of the batch's n rows. */
static int decode_layer(lf_cuda_backend *b, int l, int n, const lf_cuda_attn_desc *d, prof *pr, lf_error *err) {
    cudaStream_t s = b->stream;
    void *vs = (void *)s;
    const int cap = b->cap;
    const gpu_layer *g = &b->layers[l];
    layer_at ld;
    ld.l = l;
    ld.Kl = kv_at(b, b->K, l, 0);
    ld.Vl = kv_at(b, b->V, l, 0);
    ld.KSl = kv_scale_at(b, b->KS, l, 0);
    ld.VSl = kv_scale_at(b, b->VS, l, 0);
    ld.VNl = kv_scale_at(b, b->VN, l, 0);
    ld.pos_l = b->cpos + (size_t)l * b->slot_layer_stride;
    ld.next_l = b->next_slot + (size_t)l * b->E;
    prof_mark(pr, s, CAT_OTHER);
    if (lf_cuda_rmsnorm(b->x, g->attn_norm, n, b->hidden, b->eps, b->h, vs, err)) return -1;
    prof_mark(pr, s, CAT_GEMM);
    if (lf_cuda_gemm(b->gemm, g->wqkv, b->qkv_dim, b->hidden, b->h, n, b->qkv, LF_DTYPE_F32, 0.f, vs, err))
        return -1;
    prof_mark(pr, s, CAT_OTHER);
    if (decode_rope_store(b, g, n, &ld, err)) return -1;
    if (b->desc->slot_stat && /* the stored score of the slot just written */
        lf_cuda_slot_stat(b->desc->slot_stat, ld.Kl, LF_DTYPE_BF16, b->kv_seq_stride, (int64_t)cap * b->head_dim,
                          b->n_kv_heads, b->head_dim, b->d_entries, ld.next_l, n,
                          b->acc + (size_t)l * b->slot_layer_stride, cap, vs, err))
        return -1;
    prof_mark(pr, s, CAT_ATTN);
    if (decode_attention(b, d, &ld, err)) return -1;
    prof_mark(pr, s, CAT_GEMM);
    if (lf_cuda_gemm(b->gemm, g->wo, b->hidden, b->q_dim, b->att, n, b->x, LF_DTYPE_F32, 1.f, vs, err))
        return -1;
    if (mlp_rows(b, g, 0, n, pr, err)) return -1;
    return 0;
}

/* The decode kernels of n rows, reading the inputs from the fixed device
 * arrays (d_tokens, d_pos, d_entries, d_row_slot, d_seeds, d_steps); the
 * sampled tokens go to d_out; with copy_logits the raw logits are copied to
 * logits_copy before sampling. Captured in a graph unless no_graphs/pr. */
int decode_kernels(lf_cuda_backend *b, int n, bool copy_logits, prof *pr, lf_error *err) {
    cudaStream_t s = b->stream;
    void *vs = (void *)s;
    prof_mark(pr, s, CAT_OTHER);
    if (lf_cuda_embed(b->embed, b->vocab, b->hidden, b->d_tokens, n, b->x, vs, err)) return -1;
    lf_cuda_attn_desc d;
    attn_desc(b, n, &d);
    for (int l = 0; l < b->n_layers; l++)
        if (decode_layer(b, l, n, &d, pr, err))
            return lf_fail_prefix(err, "cuda decode of %d sequences, layer %d", n, l);
    return decode_logits_sample(b, n, copy_logits, pr, err);
}

/* Check a batch and fill the pinned inputs (row slots from the host state
 * for full/streaming). */
int decode_inputs(lf_cuda_backend *b, int n, const int *entries, const int *tokens, const int *pos,
                  lf_error *err) {
    if (n < 1 || n > b->E)
        return lf_fail(err, "cuda decode: %d sequences for a pool of %d entries", n, b->E);
    if (!entries || !tokens || !pos) return lf_fail(err, "cuda decode: missing argument");
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        const int e = entries[i];
        if (e < 0 || e >= b->E) {
            rc = lf_fail(err, "cuda decode: row %d: entry %d out of range (the pool has %d)", i, e, b->E);
            break;
        }
        if (!b->st[e].live) {
            rc = lf_fail(err, "cuda decode: row %d: entry %d holds no sequence (prefill it first)", i, e);
            break;
        }
        if (b->mark[e]) {
            rc = lf_fail(err, "cuda decode: entry %d appears twice in one batch", e);
            break;
        }
        b->mark[e] = 1;
        if (tokens[i] < 0 || tokens[i] >= b->vocab) {
            rc = lf_fail(err, "cuda decode: row %d: token id %d is outside the vocabulary [0, %d)", i, tokens[i],
                         b->vocab);
            break;
        }
        if (pos[i] < 0) {
            rc = lf_fail(err, "cuda decode: row %d has negative position %d", i, pos[i]);
            break;
        }
        if (!b->desc->budgeted && b->st[e].filled >= b->cap) {
            rc = lf_fail(err, "cuda decode: entry %d: its KV cache (policy full, %d slots) is full", e, b->cap);
            break;
        }
        b->h_tokens[i] = tokens[i];
        b->h_pos[i] = pos[i];
        b->h_entries[i] = e;
        b->h_row_slot[i] = b->scored ? -1 : next_host_slot(b, &b->st[e]);
        b->h_seeds[i] = b->st[e].seed;
        b->h_steps[i] = b->st[e].step;
    }
    for (int i = 0; i < n; i++)
        if (entries[i] >= 0 && entries[i] < b->E) b->mark[entries[i]] = 0;
    if (!rc) {
        int need = 1;
        for (int i = 0; i < n; i++) {
            const int f = b->st[entries[i]].filled + 2;
            if (f > need) need = f;
        }
        if (b->full_scan) need = b->cap;
        int q = (need / 16 / b->scan_bucket) * b->scan_bucket;
        if (q < b->scan_bucket) q = b->scan_bucket;
        int scan = ((need + q - 1) / q) * q;
        b->cur_scan = scan < b->cap ? scan : b->cap;
    }
    return rc;
}

static int graph_for(lf_cuda_backend *b, int n, bool copy_logits, cudaGraphExec_t *out, lf_error *err) {
    const int bucket = (b->cur_scan + b->scan_bucket - 1) / b->scan_bucket - 1;
    cudaGraphExec_t *slot = &b->graphs[((size_t)(copy_logits ? 1 : 0) * (b->E + 1) + n) * b->n_buckets + bucket];
    if (*slot) {
        *out = *slot;
        return 0;
    }
    if (prepare_shapes(b, n, err)) return -1;
    /* resolve the attention kernel's launch plan (function attributes,
     * occupancy) outside the capture */
    lf_cuda_attn_desc d;
    attn_desc(b, n, &d);
    lf_cuda_attn_plan plan;
    if (lf_cuda_attn_get_plan(&d, &plan, err)) return lf_fail_prefix(err, "cuda decode");
    cudaGraph_t graph = NULL;
    if (ck(cudaStreamBeginCapture(b->stream, cudaStreamCaptureModeRelaxed), err, "graph capture begin")) return -1;
    int rc = decode_kernels(b, n, copy_logits, NULL, err);
    cudaError_t e = cudaStreamEndCapture(b->stream, &graph);
    if (rc) {
        if (graph) cudaGraphDestroy(graph);
        cudaGetLastError();
        return lf_fail_prefix(err, "cuda: capturing the decode graph of %d sequences", n);
    }
    if (e != cudaSuccess || !graph) {
        if (graph) cudaGraphDestroy(graph);
        return lf_fail(err, "cuda: capturing the decode graph of %d sequences: %s", n, cudaGetErrorString(e));
    }
    cudaGraphExec_t exec = NULL;
    e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    if (e != cudaSuccess)
        return lf_fail(err, "cuda: instantiating the decode graph of %d sequences: %s", n, cudaGetErrorString(e));
    *slot = exec;
    *out = exec;
    note_peak(b);
    return 0;
}

/* Zero the attention workspace when this step has more rows than the
 * fewest of any step since it was last zeroed (see attn_ws_rows).
 * Stream-ordered, outside any graph capture. */
int attn_ws_for_rows(lf_cuda_backend *b, int n, lf_error *err) {
    if (n > b->attn_ws_rows) {
        if (lf_cuda_attn_workspace_init(b->attn_ws, b->attn_ws_bytes, b->stream, err))
            return lf_fail_prefix(err, "cuda decode");
        b->attn_ws_rows = INT_MAX;
    }
    if (n < b->attn_ws_rows) b->attn_ws_rows = n;
    return 0;
}

/* After a failed step: drain the stream, clear a sticky launch error, reset
 * the attention workspace's counters. */
void decode_recover(lf_cuda_backend *b) {
    cudaStreamSynchronize(b->stream);
    cudaGetLastError();
    lf_error e2;
    if (lf_cuda_attn_workspace_init(b->attn_ws, b->attn_ws_bytes, b->stream, &e2) == 0)
        cudaStreamSynchronize(b->stream);
    b->attn_ws_rows = INT_MAX;
}

extern "C" int lf_cuda_decode(lf_cuda_backend *b, int n, const int *entries, const int *tokens, const int *pos,
                              int *out, float *logits, lf_error *err) {
    if (!b || !out) return lf_fail(err, "cuda decode: missing argument");
    if (decode_inputs(b, n, entries, tokens, pos, err)) return -1;
    cudaStream_t s = b->stream;
    const bool copy_logits = logits != NULL;
    if (ck(cudaMemcpyAsync(b->d_seeds, b->h_seeds, b->in_bytes - (size_t)b->E * 4, cudaMemcpyHostToDevice, s), err,
           "decode input upload"))
        return -1;
    if (attn_ws_for_rows(b, n, err)) return -1;
    int rc;
    if (b->o.no_graphs) {
        rc = prepare_shapes(b, n, err) || decode_kernels(b, n, copy_logits, NULL, err);
    } else {
        cudaGraphExec_t g = NULL;
        rc = graph_for(b, n, copy_logits, &g, err);
        if (!rc) rc = ck(cudaGraphLaunch(g, s), err, "decode graph launch");
    }
    if (!rc) rc = ck(cudaMemcpyAsync(b->h_out, b->d_out, (size_t)n * 4, cudaMemcpyDeviceToHost, s), err,
                     "token download");
    if (!rc && copy_logits)
        rc = ck(cudaMemcpy2DAsync(logits, (size_t)b->vocab * 4, b->logits_copy, (size_t)b->vocab_pad * 4,
                                  (size_t)b->vocab * 4, (size_t)n, cudaMemcpyDeviceToHost, s),
                err, "logits download");
    if (!rc) rc = ck(cudaStreamSynchronize(s), err, "decode step");
    if (rc) {
        decode_recover(b);
        return -1;
    }
    decode_advance(b, n, entries, pos); /* the K/V were stored */
    for (int i = 0; i < n; i++) {
        out[i] = b->h_out[i];
        if (out[i] != LF_SAMPLE_NONFINITE && (out[i] < 0 || out[i] >= b->vocab))
            return lf_fail(err, "cuda decode: row %d sampled token %d outside the vocabulary [0, %d)", i, out[i],
                           b->vocab);
    }
    return 0;
}
