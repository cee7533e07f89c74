/* The prefill's selection, for a prompt that SnapKV compresses or whose
 * H2O/VATP accumulator starts from the prompt's window attention, all on the
 * GPU: the window sums (fp32 q/k from rope_store), SnapKV's kept positions
 * (lf_cuda_snapkv_select, the CPU's rule, kv/snapkv_rule.h), the entry's
 * slot positions and starting accumulators (as src/kv/cache.c's
 * lf_kv_prefill_layer lays them out), and the kept rows gathered into the
 * entry's slots. Nothing goes through the host. */
#include "cuda/forward_internal.h"

/* The entry's slots of one layer after its prefill: slot i < nk holds
 * position kept[i] (compress) or i, the slots up to the budget are empty,
 * the rest off; with acc, the H2O/VATP accumulator starts at the window
 * attention win of the position held (0 where empty). pos NULL: the
 * positions are already stored (rope_store's cache_pos). */
__global__ void prefill_slots_kernel(const int32_t *kept, const float *win, int nk, int bud, int cap, int compress,
                                     int32_t *pos, float *acc) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < cap; i += gridDim.x * blockDim.x) {
        const int p = i < nk ? (compress ? kept[i] : i) : -1;
        if (pos) pos[i] = i < nk ? p : i < bud ? -1 : LF_CUDA_SLOT_OFF;
        if (acc) acc[i] = i < nk ? win[p] : 0.f;
    }
}

/* SnapKV's kept rows (d_kept) of the prompt's FP8 scratch into the entry's
 * slots 0..nk-1: codes and scales are copied as they are (the row's bytes do
 * not depend on where it lives), with lf_cuda_gather_rows over 16-bit units
 * (a row of hd codes is hd/2 units, a scale 2). */
static int gather_fp8_rows(lf_cuda_backend *b, int n, void *Kl, float *KSl, void *Vl, float *VSl, float *VNl,
                           int nk, lf_error *err) {
    void *s = (void *)b->stream;
    const int cap = b->cap, hu = b->head_dim / 2;
    return lf_cuda_gather_rows(b->pk8, (int64_t)n * hu, Kl, (int64_t)cap * hu, b->n_kv_heads, hu, LF_DTYPE_BF16,
                               b->d_kept, nk, s, err) ||
           lf_cuda_gather_rows(b->pv8, (int64_t)n * hu, Vl, (int64_t)cap * hu, b->n_kv_heads, hu, LF_DTYPE_BF16,
                               b->d_kept, nk, s, err) ||
           lf_cuda_gather_rows(b->pks, (int64_t)n * 2, KSl, (int64_t)cap * 2, b->n_kv_heads, 2, LF_DTYPE_BF16,
                               b->d_kept, nk, s, err) ||
           lf_cuda_gather_rows(b->pvs, (int64_t)n * 2, VSl, (int64_t)cap * 2, b->n_kv_heads, 2, LF_DTYPE_BF16,
                               b->d_kept, nk, s, err) ||
           (VNl && lf_cuda_gather_rows(b->pvn, (int64_t)n * 2, VNl, (int64_t)cap * 2, b->n_kv_heads, 2, LF_DTYPE_BF16,
                                       b->d_kept, nk, s, err))
               ? -1
               : 0;
}

int prefill_select_layer(lf_cuda_backend *b, int l, int entry, int n, int bud, bool compress, void *Kl, float *KSl,
                         void *Vl, float *VSl, float *VNl, int32_t *pos_l, int *nk_out, lf_error *err) {
    cudaStream_t s = b->stream;
    void *vs = (void *)s;
    const int cap = b->cap;
    const bool acc = lf_score_writes_acc(b->mode);
    const int nk = compress ? bud - 1 : n;
    /* the window sums on the GPU (fp32 q/k from rope_store) */
    const int ww = n < LF_SNAPKV_WINDOW ? n : LF_SNAPKV_WINDOW;
    if (compress && lf_cuda_window_sums(b->q32, b->k32, n, b->n_heads, b->n_kv_heads, b->head_dim, LF_SNAPKV_WINDOW, 0,
                                        1.f, b->d_raw, b->win_ws, b->win_ws_bytes, vs, err))
        return -1;
    if (acc && lf_cuda_window_sums(b->q32, b->k32, n, b->n_heads, b->n_kv_heads, b->head_dim, ww, 1,
                                   1.f / (float)b->n_heads, b->d_win, b->win_ws, b->win_ws_bytes, vs, err))
        return -1;
    if (compress) {
        const int sinks = lf_snapkv_sinks(&b->pol, b->o.policy.sinks < 0, nk);
        if (lf_cuda_snapkv_select(b->d_raw, n, nk, sinks, b->d_kept, vs, err)) return -1;
        if (b->f8 ? gather_fp8_rows(b, n, Kl, KSl, Vl, VSl, VNl, nk, err)
                  : (lf_cuda_gather_rows(b->pk, (int64_t)n * b->head_dim, Kl, (int64_t)cap * b->head_dim, b->n_kv_heads,
                                         b->head_dim, LF_DTYPE_BF16, b->d_kept, nk, vs, err) ||
                     lf_cuda_gather_rows(b->pv, (int64_t)n * b->head_dim, Vl, (int64_t)cap * b->head_dim, b->n_kv_heads,
                                         b->head_dim, LF_DTYPE_BF16, b->d_kept, nk, vs, err)))
            return -1;
    }
    float *acc_l = acc ? b->acc + (size_t)l * b->slot_layer_stride + (size_t)entry * cap : NULL;
    const int blocks = (cap + 255) / 256 < 1024 ? (cap + 255) / 256 : 1024;
    prefill_slots_kernel<<<blocks, 256, 0, s>>>(b->d_kept, b->d_win, nk, bud, cap, compress ? 1 : 0,
                                                compress ? pos_l : NULL, acc_l);
    if (ck(cudaGetLastError(), err, "prefill slots kernel launch")) return -1;
    *nk_out = nk;
    return 0;
}
