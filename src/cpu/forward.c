/* The CPU forward pass of Qwen3 / Qwen2 / Llama decoder-only models.
 *
 *   x = embed[token]
 *   per layer: h = rmsnorm(x); q,k,v = h W^T (+b); [Qwen3: per-head rmsnorm
 *              of q and k]; rope(q, k); attention; x += attn Wo^T (+bo);
 *              h = rmsnorm(x); x += down(silu(gate(h)) * up(h))
 *   logits = rmsnorm(x) lm_head^T
 *
 * Prefill runs the whole prompt as matrices (one pass over the weights per
 * matrix product for all tokens) with exact causal attention, then hands
 * q/k/v of every layer to the KV cache. Decode advances a batch of
 * sequences by one token each; attention goes through lf_kv_decode_layer. */
#include "cpu/forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "cpu/kernels.h"

/* Prefill runs the MLP over at most this many tokens at a time, which bounds
 * the gate/up scratch for long prompts. */
#define LF_MLP_CHUNK 256

struct lf_cpu_ctx {
    lf_rope rope;
    int max_batch;
    int hidden, q_dim, kv_dim, inter, vocab, hd;
    int cap;            /* tokens the scratch holds */
    float *x, *h, *q, *k, *v, *att;  /* [cap][...] */
    float *gate, *up;   /* [min(cap, LF_MLP_CHUNK)][inter] */
    float *cos_, *sin_; /* [cap][hd/2] */
    float *pack;        /* matmul scratch */
    size_t pack_floats;
    float *attn_scratch;
    size_t attn_floats;
};

static void free_scratch(lf_cpu_ctx *c) {
    free(c->x);
    free(c->h);
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->att);
    free(c->gate);
    free(c->up);
    free(c->cos_);
    free(c->sin_);
    free(c->pack);
    free(c->attn_scratch);
    c->x = c->h = c->q = c->k = c->v = c->att = c->gate = c->up = NULL;
    c->cos_ = c->sin_ = c->pack = c->attn_scratch = NULL;
    c->cap = 0;
    c->pack_floats = c->attn_floats = 0;
}

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

/* Make the scratch hold n tokens (and the attention scratch n keys). */
static int ensure_cap(lf_cpu_ctx *c, int n, bool prefill, lf_error *err) {
    if (n > c->cap) {
        free_scratch(c);
        size_t N = (size_t)n, M = (size_t)(n < LF_MLP_CHUNK ? n : LF_MLP_CHUNK);
        c->x = malloc(N * c->hidden * sizeof(float));
        c->h = malloc(N * c->hidden * sizeof(float));
        c->q = malloc(N * c->q_dim * sizeof(float));
        c->k = malloc(N * c->kv_dim * sizeof(float));
        c->v = malloc(N * c->kv_dim * sizeof(float));
        c->att = malloc(N * c->q_dim * sizeof(float));
        c->gate = malloc(M * c->inter * sizeof(float));
        c->up = malloc(M * c->inter * sizeof(float));
        c->cos_ = malloc(N * (c->hd / 2) * sizeof(float));
        c->sin_ = malloc(N * (c->hd / 2) * sizeof(float));
        /* products over hidden or q_dim columns run on all n tokens, the
         * down projection (inter columns) on MLP chunks of at most M */
        int widest = c->hidden > c->q_dim ? c->hidden : c->q_dim;
        c->pack_floats = max_sz(lf_matmul_scratch_floats(n, widest),
                                lf_matmul_scratch_floats((int)M, c->inter));
        c->pack = malloc(c->pack_floats * sizeof(float));
        if (!c->x || !c->h || !c->q || !c->k || !c->v || !c->att || !c->gate || !c->up ||
            !c->cos_ || !c->sin_ || !c->pack) {
            free_scratch(c);
            return lf_fail(err, "forward: out of memory for the scratch of %d tokens", n);
        }
        c->cap = n;
    }
    if (prefill) {
        size_t need = lf_attention_scratch_floats(n, c->kv_dim / c->hd, c->hd);
        if (need > c->attn_floats) {
            free(c->attn_scratch);
            c->attn_scratch = malloc(need * sizeof(float));
            c->attn_floats = c->attn_scratch ? need : 0;
            if (!c->attn_scratch)
                return lf_fail(err, "forward: out of memory for the attention of %d tokens", n);
        }
    }
    return 0;
}

int lf_cpu_ctx_create(const lf_model *m, int max_batch, lf_cpu_ctx **out, lf_error *err) {
    *out = NULL;
    const lf_config *cfg = &m->cfg;
    if (max_batch <= 0) return lf_fail(err, "forward: max_batch must be positive (got %d)", max_batch);
    if (cfg->n_heads <= 0 || cfg->n_kv_heads <= 0 || cfg->n_heads % cfg->n_kv_heads)
        return lf_fail(err, "forward: %d attention heads are not a multiple of %d KV heads",
                       cfg->n_heads, cfg->n_kv_heads);
    if (cfg->hidden_size <= 0 || cfg->intermediate_size <= 0 || cfg->vocab_size <= 0 ||
        cfg->n_layers <= 0)
        return lf_fail(err, "forward: model has a zero or negative size");
    if (cfg->mlp_bias)
        return lf_fail(err, "forward: %s with mlp_bias is not supported", cfg->arch_name);
    lf_cpu_ctx *c = calloc(1, sizeof *c);
    if (!c) return lf_fail(err, "forward: out of memory");
    if (lf_rope_init(&c->rope, cfg, err) != 0) {
        free(c);
        return lf_fail_prefix(err, "forward");
    }
    c->max_batch = max_batch;
    c->hidden = cfg->hidden_size;
    c->hd = cfg->head_dim;
    c->q_dim = cfg->n_heads * cfg->head_dim;
    c->kv_dim = cfg->n_kv_heads * cfg->head_dim;
    c->inter = cfg->intermediate_size;
    c->vocab = cfg->vocab_size;
    if (ensure_cap(c, max_batch, false, err) != 0) {
        lf_cpu_ctx_free(c);
        return -1;
    }
    *out = c;
    return 0;
}

void lf_cpu_ctx_free(lf_cpu_ctx *ctx) {
    if (!ctx) return;
    free_scratch(ctx);
    lf_rope_free(&ctx->rope);
    free(ctx);
}

static int check_tokens(const lf_config *cfg, const int *tokens, int n, lf_error *err) {
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= cfg->vocab_size)
            return lf_fail(err, "forward: token id %d at index %d is outside the vocabulary [0, %d)",
                           tokens[i], i, cfg->vocab_size);
    return 0;
}

static int check_cache(const lf_config *cfg, const lf_kv_cache *c, lf_error *err) {
    if (!c) return lf_fail(err, "forward: no KV cache given");
    if (c->n_layers != cfg->n_layers || c->n_kv_heads != cfg->n_kv_heads ||
        c->head_dim != cfg->head_dim || c->n_heads != cfg->n_heads)
        return lf_fail(err,
                       "forward: KV cache shape (%d layers, %d/%d heads, head_dim %d) does not "
                       "match the model (%d layers, %d/%d heads, head_dim %d)",
                       c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, cfg->n_layers,
                       cfg->n_heads, cfg->n_kv_heads, cfg->head_dim);
    return 0;
}

static void embed_tokens(const lf_model *m, const int *tokens, int n, float *x) {
    for (int t = 0; t < n; t++) lf_weight_row_f32(&m->embed, tokens[t], x + (size_t)t * m->cfg.hidden_size);
}

/* q, k, v projections (+bias), Qwen3 q/k norms, rope at the given
 * positions (cos/sin rows per token). */
static void qkv_proj(lf_cpu_ctx *c, const lf_model *m, const lf_layer_weights *L, int n) {
    const lf_config *cfg = &m->cfg;
    lf_matmul_job jobs[3] = {{&L->wq, &L->bq, c->q}, {&L->wk, &L->bk, c->k}, {&L->wv, &L->bv, c->v}};
    lf_matmul_multi(c->h, n, c->hidden, jobs, 3, c->pack);
    int hd = c->hd, half = hd / 2;
    float eps = (float)cfg->rms_norm_eps;
    if (cfg->qk_norm) {
        lf_rmsnorm(c->q, c->q, &L->q_norm, n * cfg->n_heads, hd, eps);
        lf_rmsnorm(c->k, c->k, &L->k_norm, n * cfg->n_kv_heads, hd, eps);
    }
    for (int t = 0; t < n; t++) {
        const float *cs = c->cos_ + (size_t)t * half, *sn = c->sin_ + (size_t)t * half;
        lf_rope_apply(c->q + (size_t)t * c->q_dim, cfg->n_heads, hd, cs, sn);
        lf_rope_apply(c->k + (size_t)t * c->kv_dim, cfg->n_kv_heads, hd, cs, sn);
    }
}

/* x += attn Wo^T (+bo) */
static void out_proj(lf_cpu_ctx *c, const lf_layer_weights *L, int n) {
    lf_matmul(c->att, n, &L->wo, &L->bo, c->h, c->pack);
    lf_add(c->x, c->h, (size_t)n * c->hidden);
}

/* x += down(silu(gate(h)) * up(h)), h = rmsnorm(x), in chunks of tokens */
static void mlp(lf_cpu_ctx *c, const lf_model *m, const lf_layer_weights *L, int n) {
    float eps = (float)m->cfg.rms_norm_eps;
    for (int t0 = 0; t0 < n; t0 += LF_MLP_CHUNK) {
        int nt = n - t0 < LF_MLP_CHUNK ? n - t0 : LF_MLP_CHUNK;
        float *x = c->x + (size_t)t0 * c->hidden, *h = c->h + (size_t)t0 * c->hidden;
        lf_rmsnorm(h, x, &L->ffn_norm, nt, c->hidden, eps);
        /* no MLP biases: lf_cpu_ctx_create rejects mlp_bias models */
        lf_matmul_job jobs[2] = {{&L->w_gate, NULL, c->gate}, {&L->w_up, NULL, c->up}};
        lf_matmul_multi(h, nt, c->hidden, jobs, 2, c->pack);
        lf_silu_mul(c->gate, c->up, (size_t)nt * c->inter);
        lf_matmul(c->gate, nt, &L->w_down, NULL, h, c->pack);
        lf_add(x, h, (size_t)nt * c->hidden);
    }
}

int lf_cpu_prefill(lf_cpu_ctx *c, const lf_model *m, lf_kv_cache *cache, const int *tokens, int n,
                   float *logits, lf_error *err) {
    const lf_config *cfg = &m->cfg;
    if (n <= 0) return lf_fail(err, "prefill: the prompt is empty");
    if (check_tokens(cfg, tokens, n, err) || check_cache(cfg, cache, err)) return -1;
    if (ensure_cap(c, n, true, err) != 0) return -1;
    int half = c->hd / 2;
    for (int t = 0; t < n; t++)
        lf_rope_cos_sin(&c->rope, t, c->cos_ + (size_t)t * half, c->sin_ + (size_t)t * half);
    embed_tokens(m, tokens, n, c->x);
    float eps = (float)cfg->rms_norm_eps;
    for (int l = 0; l < cfg->n_layers; l++) {
        const lf_layer_weights *L = &m->layers[l];
        lf_rmsnorm(c->h, c->x, &L->attn_norm, n, c->hidden, eps);
        qkv_proj(c, m, L, n);
        lf_attention_causal(c->q, c->k, c->v, n, cfg->n_heads, cfg->n_kv_heads, c->hd, c->att,
                            c->attn_scratch);
        if (lf_kv_prefill_layer(cache, l, c->q, c->k, c->v, n, err) != 0)
            return lf_fail_prefix(err, "prefill: layer %d", l);
        out_proj(c, L, n);
        mlp(c, m, L, n);
    }
    /* logits of the last token only */
    float *xl = c->x + (size_t)(n - 1) * c->hidden;
    lf_rmsnorm(c->h, xl, &m->final_norm, 1, c->hidden, eps);
    lf_matmul(c->h, 1, &m->lm_head, NULL, logits, c->pack);
    return 0;
}

int lf_cpu_decode(lf_cpu_ctx *c, const lf_model *m, lf_kv_cache *const *caches, const int *tokens,
                  const int *pos, int n_seq, float *logits, lf_error *err) {
    const lf_config *cfg = &m->cfg;
    if (n_seq <= 0 || n_seq > c->max_batch)
        return lf_fail(err, "decode: %d sequences for a context made for 1..%d", n_seq, c->max_batch);
    if (check_tokens(cfg, tokens, n_seq, err)) return -1;
    for (int s = 0; s < n_seq; s++) {
        if (check_cache(cfg, caches[s], err)) return lf_fail_prefix(err, "decode: sequence %d", s);
        if (pos[s] < 0) return lf_fail(err, "decode: sequence %d has negative position %d", s, pos[s]);
        if (lf_kv_cache_room(caches[s]) <= 0)
            return lf_fail(err, "decode: sequence %d: its KV cache (policy full, %d slots) is full",
                           s, caches[s]->capacity);
    }
    int half = c->hd / 2;
    for (int s = 0; s < n_seq; s++)
        lf_rope_cos_sin(&c->rope, pos[s], c->cos_ + (size_t)s * half, c->sin_ + (size_t)s * half);
    embed_tokens(m, tokens, n_seq, c->x);
    float eps = (float)cfg->rms_norm_eps;
    for (int l = 0; l < cfg->n_layers; l++) {
        const lf_layer_weights *L = &m->layers[l];
        lf_rmsnorm(c->h, c->x, &L->attn_norm, n_seq, c->hidden, eps);
        qkv_proj(c, m, L, n_seq);
        lf_kv_decode_layer(caches, n_seq, l, c->q, c->k, c->v, pos, c->att);
        out_proj(c, L, n_seq);
        mlp(c, m, L, n_seq);
    }
    lf_rmsnorm(c->h, c->x, &m->final_norm, n_seq, c->hidden, eps);
    lf_matmul(c->h, n_seq, &m->lm_head, NULL, logits, c->pack);
    return 0;
}
