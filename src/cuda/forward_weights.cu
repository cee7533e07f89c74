/* The weights on the GPU: bf16 in one allocation; wq|wk|wv and
 * w_gate|w_up concatenated, so a layer is 4 GEMMs (qkv, o, gate_up, down);
 * the lm_head padded to a multiple of 8 rows (the padded logits get -inf
 * through a bias); the RoPE frequencies. */
#include "cuda/forward_internal.h"

/* Copy weight w (any dtype) as bf16 into dst + row_off rows, or zeros when
 * absent (expected elements: `elems`). stage holds max elements. */
static int upload_weight(const lf_weight *w, size_t elems, bf16 *dst, uint16_t *stage, const char *what,
                         lf_error *err) {
    if (!w->data) {
        return ck(cudaMemset(dst, 0, elems * 2), err, what);
    }
    size_t n = (size_t)w->rows * (size_t)w->cols;
    if (n != elems)
        return lf_fail(err, "cuda: weight %s has %zu elements, %zu expected", what, n, elems);
    const void *src = w->data;
    if (w->dtype == LF_DTYPE_F32) {
        const float *f = (const float *)w->data;
        for (size_t i = 0; i < n; i++) stage[i] = lf_f32_to_bf16(f[i]);
        src = stage;
    } else if (w->dtype == LF_DTYPE_F16) {
        const uint16_t *h = (const uint16_t *)w->data;
        for (size_t i = 0; i < n; i++) stage[i] = lf_f32_to_bf16(lf_f16_to_f32(h[i]));
        src = stage;
    } else if (w->dtype != LF_DTYPE_BF16) {
        return lf_fail(err, "cuda: weight %s has unsupported dtype %d", what, (int)w->dtype);
    }
    return ck(cudaMemcpy(dst, src, n * 2, cudaMemcpyHostToDevice), err, what);
}

/* Element offset of the next weight in the one device block (each 256-byte
 * aligned). */
static size_t wtake(size_t *off, size_t elems) {
    size_t at = *off;
    *off += align256(elems * 2) / 2;
    return at;
}

/* Element offsets of every weight in the one device block (SIZE_MAX: not
 * present): nine per layer (attn_norm, wqkv, bqkv, q_norm, k_norm, wo,
 * ffn_norm, w_gate|w_up, w_down), then the model's ends. */
typedef struct weight_layout {
    size_t *lo; /* [L][9] */
    size_t o_embed, o_fnorm, o_head, o_vbias;
    bool tied;  /* lm_head is the embedding table */
    size_t total_bytes;
} weight_layout;

static int weight_layout_make(const lf_cuda_backend *b, const lf_model *m, weight_layout *wl, lf_error *err) {
    const lf_config *c = &m->cfg;
    const size_t hid = (size_t)b->hidden;
    /* layout */
    size_t off = 0;
    size_t *lo = (size_t *)calloc((size_t)b->n_layers * 9, sizeof(size_t));
    if (!lo) return lf_fail(err, "cuda: out of host memory");
    const bool has_qkv_bias = c->qkv_bias || m->layers[0].bq.data || m->layers[0].bk.data || m->layers[0].bv.data;
    for (int l = 0; l < b->n_layers; l++) {
        size_t *s = lo + (size_t)l * 9;
        s[0] = wtake(&off, hid);                              /* attn_norm */
        s[1] = wtake(&off, (size_t)b->qkv_dim * hid);          /* wqkv */
        s[2] = has_qkv_bias ? wtake(&off, (size_t)b->qkv_dim) : SIZE_MAX;
        s[3] = c->qk_norm ? wtake(&off, (size_t)b->head_dim) : SIZE_MAX;
        s[4] = c->qk_norm ? wtake(&off, (size_t)b->head_dim) : SIZE_MAX;
        s[5] = wtake(&off, hid * (size_t)b->q_dim);            /* wo */
        s[6] = wtake(&off, hid);                              /* ffn_norm */
        s[7] = wtake(&off, (size_t)2 * b->inter * hid);       /* w_gate | w_up */
        s[8] = wtake(&off, hid * (size_t)b->inter);           /* w_down */
    }
    wl->lo = lo;
    wl->o_embed = wtake(&off, (size_t)b->vocab_pad * hid);
    wl->o_fnorm = wtake(&off, hid);
    wl->tied = m->lm_head.data == m->embed.data;
    wl->o_head = wl->tied ? wl->o_embed : wtake(&off, (size_t)b->vocab_pad * hid);
    wl->o_vbias = b->vocab_pad != b->vocab ? wtake(&off, (size_t)b->vocab_pad) : SIZE_MAX;
    wl->total_bytes = off * 2;
    return 0;
}

/* Layer l's weights at their offsets s[0..8] of W, uploaded. */
static int upload_layer(lf_cuda_backend *b, const lf_model *m, int l, const size_t *s, bf16 *W, uint16_t *stage,
                        lf_error *err) {
    const size_t hid = (size_t)b->hidden;
    const size_t qr = (size_t)b->q_dim, kr = (size_t)b->kv_dim;
    int rc = 0;
    char what[96];
    const lf_layer_weights *w = &m->layers[l];
    gpu_layer *g = &b->layers[l];
    g->attn_norm = W + s[0];
    g->wqkv = W + s[1];
    g->bqkv = s[2] != SIZE_MAX ? W + s[2] : NULL;
    g->q_norm = s[3] != SIZE_MAX ? W + s[3] : NULL;
    g->k_norm = s[4] != SIZE_MAX ? W + s[4] : NULL;
    g->wo = W + s[5];
    g->ffn_norm = W + s[6];
    g->wgu = W + s[7];
    g->wdown = W + s[8];
    snprintf(what, sizeof what, "layer %d input_layernorm", l);
    rc = rc || upload_weight(&w->attn_norm, hid, g->attn_norm, stage, what, err);
    snprintf(what, sizeof what, "layer %d q_proj", l);
    rc = rc || upload_weight(&w->wq, qr * hid, g->wqkv, stage, what, err);
    snprintf(what, sizeof what, "layer %d k_proj", l);
    rc = rc || upload_weight(&w->wk, kr * hid, g->wqkv + qr * hid, stage, what, err);
    snprintf(what, sizeof what, "layer %d v_proj", l);
    rc = rc || upload_weight(&w->wv, kr * hid, g->wqkv + (qr + kr) * hid, stage, what, err);
    if (g->bqkv) {
        snprintf(what, sizeof what, "layer %d q/k/v biases", l);
        rc = rc || upload_weight(&w->bq, qr, g->bqkv, stage, what, err);
        rc = rc || upload_weight(&w->bk, kr, g->bqkv + qr, stage, what, err);
        rc = rc || upload_weight(&w->bv, kr, g->bqkv + qr + kr, stage, what, err);
    }
    if (g->q_norm) {
        snprintf(what, sizeof what, "layer %d q_norm/k_norm", l);
        rc = rc || upload_weight(&w->q_norm, (size_t)b->head_dim, g->q_norm, stage, what, err);
        rc = rc || upload_weight(&w->k_norm, (size_t)b->head_dim, g->k_norm, stage, what, err);
    }
    snprintf(what, sizeof what, "layer %d o_proj", l);
    rc = rc || upload_weight(&w->wo, hid * qr, g->wo, stage, what, err);
    snprintf(what, sizeof what, "layer %d post_attention_layernorm", l);
    rc = rc || upload_weight(&w->ffn_norm, hid, g->ffn_norm, stage, what, err);
    snprintf(what, sizeof what, "layer %d gate_proj", l);
    rc = rc || upload_weight(&w->w_gate, (size_t)b->inter * hid, g->wgu, stage, what, err);
    snprintf(what, sizeof what, "layer %d up_proj", l);
    rc = rc || upload_weight(&w->w_up, (size_t)b->inter * hid, g->wgu + (size_t)b->inter * hid, stage, what,
                             err);
    snprintf(what, sizeof what, "layer %d down_proj", l);
    rc = rc || upload_weight(&w->w_down, hid * (size_t)b->inter, g->wdown, stage, what, err);
    return rc;
}

/* The embedding table, final norm, lm_head (unless tied) with their padding
 * rows zero, and the vocabulary padding bias. */
static int upload_ends(lf_cuda_backend *b, const lf_model *m, const weight_layout *wl, bf16 *W, uint16_t *stage,
                       lf_error *err) {
    const size_t hid = (size_t)b->hidden;
    int rc = 0;
    b->embed = W + wl->o_embed;
    b->final_norm = W + wl->o_fnorm;
    b->lm_head = W + wl->o_head;
    b->vocab_bias = wl->o_vbias != SIZE_MAX ? W + wl->o_vbias : NULL;
    const size_t vh = (size_t)b->vocab * hid, pad = (size_t)(b->vocab_pad - b->vocab) * hid;
    rc = rc || upload_weight(&m->embed, vh, b->embed, stage, "embed_tokens", err);
    if (!rc && pad) rc = ck(cudaMemset(b->embed + vh, 0, pad * 2), err, "embedding padding");
    rc = rc || upload_weight(&m->final_norm, hid, b->final_norm, stage, "final norm", err);
    if (!wl->tied) {
        rc = rc || upload_weight(&m->lm_head, vh, b->lm_head, stage, "lm_head", err);
        if (!rc && pad) rc = ck(cudaMemset(b->lm_head + vh, 0, pad * 2), err, "lm_head padding");
    }
    if (!rc && b->vocab_bias) {
        /* 0 for real tokens, -inf for the padding rows: they are never sampled */
        for (int i = 0; i < b->vocab_pad; i++) stage[i] = i < b->vocab ? 0 : 0xff80u;
        rc = ck(cudaMemcpy(b->vocab_bias, stage, (size_t)b->vocab_pad * 2, cudaMemcpyHostToDevice), err,
                "vocabulary padding bias");
    }
    return rc;
}

/* Bytes one decode step's GEMMs read: every weight but the embedding table
 * (the lm_head counted even when tied). */
static size_t gemm_weight_bytes(const lf_cuda_backend *b) {
    const size_t hid = (size_t)b->hidden;
    const size_t qr = (size_t)b->q_dim;
    size_t gb = 0;
    for (int l = 0; l < b->n_layers; l++)
        gb += ((size_t)b->qkv_dim * hid + hid * qr + (size_t)2 * b->inter * hid + hid * (size_t)b->inter) * 2;
    gb += (size_t)b->vocab_pad * hid * 2;
    return gb;
}

/* RoPE tables (host code of the CPU path): the frequencies on the GPU. */
static int upload_rope(lf_cuda_backend *b, const lf_config *c, lf_error *err) {
    lf_rope rope;
    if (lf_rope_init(&rope, c, err)) return lf_fail_prefix(err, "cuda");
    b->attention_factor = rope.attention_factor;
    int r2 = dmalloc(b, (void **)&b->inv_freq, (size_t)(b->head_dim / 2) * sizeof(float), err, "RoPE frequencies");
    if (!r2)
        r2 = ck(cudaMemcpy(b->inv_freq, rope.inv_freq, (size_t)(b->head_dim / 2) * sizeof(float),
                           cudaMemcpyHostToDevice),
                err, "RoPE frequencies upload");
    lf_rope_free(&rope);
    return r2;
}

/* Host staging for conversions: as large as the largest weight. */
static uint16_t *alloc_stage(const lf_cuda_backend *b, lf_error *err) {
    const size_t hid = (size_t)b->hidden;
    size_t maxe = (size_t)b->vocab_pad * hid;
    size_t cand[] = {(size_t)b->q_dim * hid, (size_t)b->inter * hid};
    for (size_t i = 0; i < 2; i++)
        if (cand[i] > maxe) maxe = cand[i];
    uint16_t *stage = (uint16_t *)malloc(maxe * 2);
    if (!stage) lf_fail(err, "cuda: out of host memory for a %zu-element weight", maxe);
    return stage;
}

int upload_weights(lf_cuda_backend *b, const lf_model *m, lf_error *err) {
    weight_layout wl;
    if (weight_layout_make(b, m, &wl, err)) return -1;
    if (dmalloc(b, &b->wblock, wl.total_bytes, err, "the weights")) {
        free(wl.lo);
        return lf_fail_prefix(err, "cuda: %.2f GB of bf16 weights do not fit", (double)wl.total_bytes / 1e9);
    }
    b->weight_bytes = wl.total_bytes;
    bf16 *W = (bf16 *)b->wblock;
    b->layers = (gpu_layer *)calloc((size_t)b->n_layers, sizeof(gpu_layer));
    if (!b->layers) {
        free(wl.lo);
        return lf_fail(err, "cuda: out of host memory");
    }
    uint16_t *stage = alloc_stage(b, err);
    if (!stage) {
        free(wl.lo);
        return -1;
    }
    int rc = 0;
    for (int l = 0; l < b->n_layers && !rc; l++) rc = upload_layer(b, m, l, wl.lo + (size_t)l * 9, W, stage, err);
    rc = rc || upload_ends(b, m, &wl, W, stage, err);
    free(stage);
    free(wl.lo);
    /* cudaMemset on the legacy stream is asynchronous and the backend's stream
     * does not wait for it: finish the uploads here */
    if (!rc) rc = ck(cudaDeviceSynchronize(), err, "weight upload");
    if (rc) return -1;
    b->gemm_weight_bytes = gemm_weight_bytes(b);
    return upload_rope(b, &m->cfg, err);
}
