/* Pieces of a transformer layer that the prefill and the decode step share:
 * the MLP over a range of rows, the common arguments of rope_store, and the
 * event marks of a profiled step. */
#include "cuda/forward_internal.h"

void prof_mark(prof *p, cudaStream_t s, int cat) {
    if (!p || p->n >= p->cap) return;
    cudaEventRecord(p->ev[p->n], s);
    p->cat[p->n] = cat;
    p->n++;
}

/* x += down(silu(gate(h)) * up(h)) with h = rmsnorm(x), rows r0..r0+n-1 */
int mlp_rows(lf_cuda_backend *b, const gpu_layer *g, int r0, int n, prof *pr, lf_error *err) {
    void *s = b->stream;
    float *x = b->x + (size_t)r0 * b->hidden;
    bf16 *h = b->h + (size_t)r0 * b->hidden;
    prof_mark(pr, b->stream, CAT_OTHER);
    if (lf_cuda_rmsnorm(x, g->ffn_norm, n, b->hidden, b->eps, h, s, err)) return -1;
    prof_mark(pr, b->stream, CAT_GEMM);
    if (lf_cuda_gemm(b->gemm, g->wgu, 2 * b->inter, b->hidden, h, n, b->gu, LF_DTYPE_F32, 0.f, s, err)) return -1;
    prof_mark(pr, b->stream, CAT_OTHER);
    if (lf_cuda_swiglu(b->gu, n, b->inter, b->mlp, s, err)) return -1;
    prof_mark(pr, b->stream, CAT_GEMM);
    if (lf_cuda_gemm(b->gemm, g->wdown, b->hidden, b->inter, b->mlp, n, x, LF_DTYPE_F32, 1.f, s, err)) return -1;
    return 0;
}

/* The fields of a rope_store call that prefill and decode share: the layer's
 * q/k/v from b->qkv, its bias and q/k norms, RoPE at positions pos. */
void rope_args(const lf_cuda_backend *b, const gpu_layer *g, int n, const int32_t *pos,
               lf_cuda_rope_store_args *a) {
    memset(a, 0, sizeof *a);
    a->n = n;
    a->n_heads = b->n_heads;
    a->n_kv_heads = b->n_kv_heads;
    a->head_dim = b->head_dim;
    a->dt = LF_DTYPE_BF16;
    a->qkv = b->qkv;
    a->bias = g->bqkv;
    a->q_norm = g->q_norm;
    a->k_norm = g->k_norm;
    a->eps = b->eps;
    a->inv_freq = b->inv_freq;
    a->attention_factor = b->attention_factor;
    a->pos = pos;
}
