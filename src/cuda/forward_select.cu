/* The prefill's selection, for a prompt that SnapKV compresses or whose
 * H2O/VATP accumulator starts from the prompt's window attention: the window
 * sums are computed on the GPU (fp32 q/k from rope_store) and copied to the
 * host, which picks the kept positions (lf_snapkv_select_from_sums) and the
 * starting accumulators as src/kv/cache.c's lf_kv_prefill_layer does; the
 * kept rows are then gathered into the entry's slots on the GPU. */
#include "cuda/forward_internal.h"

/* Host part of a compressed / accumulated prefill layer, as
 * lf_kv_prefill_layer, from the window sums the GPU computed (hraw, hwin):
 * kept positions (SnapKV) and the H2O/VATP starting accumulator. Returns nk. */
static int prefill_host_layer(lf_cuda_backend *b, int n, int bud, bool compress, int *nk_out, lf_error *err) {
    const int cap = b->cap;
    int nk = n;
    if (compress) {
        nk = bud - 1;
        const int sinks = lf_snapkv_sinks(&b->pol, b->o.policy.sinks < 0, nk);
        if (lf_snapkv_select_from_sums(b->hraw, n, nk, sinks, b->h_kept, err))
            return lf_fail_prefix(err, "cuda prefill: SnapKV");
    }
    if (lf_score_writes_acc(b->mode)) {
        for (int i = 0; i < cap; i++) b->h_slotacc[i] = i < nk ? b->hwin[compress ? b->h_kept[i] : i] : 0.f;
    }
    for (int i = 0; i < cap; i++)
        b->h_slotpos[i] = i < nk ? (compress ? b->h_kept[i] : i) : i < bud ? -1 : LF_CUDA_SLOT_OFF;
    *nk_out = nk;
    return 0;
}

/* SnapKV's kept rows (d_kept) of the prompt's FP8 scratch into the entry's
 * slots 0..nk-1: codes and scales are copied as they are (the row's bytes do
 * not depend on where it lives), with lf_cuda_gather_rows over 16-bit units
 * (a row of hd codes is hd/2 units, a scale 2). */
static int gather_fp8_rows(lf_cuda_backend *b, int n, void *Kl, float *KSl, void *Vl, float *VSl, float *VNl,
                           int nk, lf_error *err) {
    void *s = (void *)b->stream;
    const int cap = b->cap, hu = b->HD / 2;
    return lf_cuda_gather_rows(b->pk8, (int64_t)n * hu, Kl, (int64_t)cap * hu, b->KV, hu, LF_DTYPE_BF16, b->d_kept,
                               nk, s, err) ||
           lf_cuda_gather_rows(b->pv8, (int64_t)n * hu, Vl, (int64_t)cap * hu, b->KV, hu, LF_DTYPE_BF16, b->d_kept,
                               nk, s, err) ||
           lf_cuda_gather_rows(b->pks, (int64_t)n * 2, KSl, (int64_t)cap * 2, b->KV, 2, LF_DTYPE_BF16, b->d_kept, nk,
                               s, err) ||
           lf_cuda_gather_rows(b->pvs, (int64_t)n * 2, VSl, (int64_t)cap * 2, b->KV, 2, LF_DTYPE_BF16, b->d_kept, nk,
                               s, err) ||
           (VNl && lf_cuda_gather_rows(b->pvn, (int64_t)n * 2, VNl, (int64_t)cap * 2, b->KV, 2, LF_DTYPE_BF16,
                                       b->d_kept, nk, s, err))
               ? -1
               : 0;
}

int prefill_select_layer(lf_cuda_backend *b, int l, int entry, int n, int bud, bool compress, void *Kl, float *KSl,
                         void *Vl, float *VSl, float *VNl, int32_t *pos_l, int *nk_out, lf_error *err) {
    cudaStream_t s = b->stream;
    void *vs = (void *)s;
    const int cap = b->cap;
    int nk = *nk_out;
    /* the window sums on the GPU (fp32 q/k from rope_store), n floats each back to the host */
    const int ww = n < LF_SNAPKV_WINDOW ? n : LF_SNAPKV_WINDOW;
    if (compress &&
        (lf_cuda_window_sums(b->q32, b->k32, n, b->H, b->KV, b->HD, LF_SNAPKV_WINDOW, 0, 1.f, b->d_raw,
                             b->win_ws, b->win_ws_bytes, vs, err) ||
         ck(cudaMemcpyAsync(b->hraw, b->d_raw, (size_t)n * 4, cudaMemcpyDeviceToHost, s), err,
            "SnapKV window sums download")))
        return -1;
    if (lf_score_writes_acc(b->mode) &&
        (lf_cuda_window_sums(b->q32, b->k32, n, b->H, b->KV, b->HD, ww, 1, 1.f / (float)b->H, b->d_win,
                             b->win_ws, b->win_ws_bytes, vs, err) ||
         ck(cudaMemcpyAsync(b->hwin, b->d_win, (size_t)n * 4, cudaMemcpyDeviceToHost, s), err,
            "window attention download")))
        return -1;
    if (ck(cudaStreamSynchronize(s), err, "prefill layer")) return -1;
    if (prefill_host_layer(b, n, bud, compress, &nk, err)) return -1;
    if (compress) {
        if (ck(cudaMemcpyAsync(b->d_kept, b->h_kept, (size_t)nk * 4, cudaMemcpyHostToDevice, s), err,
               "SnapKV indices upload"))
            return -1;
        if (b->f8 ? gather_fp8_rows(b, n, Kl, KSl, Vl, VSl, VNl, nk, err)
                  : (lf_cuda_gather_rows(b->pk, (int64_t)n * b->HD, Kl, (int64_t)cap * b->HD, b->KV, b->HD,
                                         LF_DTYPE_BF16, b->d_kept, nk, vs, err) ||
                     lf_cuda_gather_rows(b->pv, (int64_t)n * b->HD, Vl, (int64_t)cap * b->HD, b->KV, b->HD,
                                         LF_DTYPE_BF16, b->d_kept, nk, vs, err)))
            return -1;
        if (ck(cudaMemcpyAsync(pos_l, b->h_slotpos, (size_t)cap * 4, cudaMemcpyHostToDevice, s), err,
               "slot positions upload"))
            return -1;
    }
    if (lf_score_writes_acc(b->mode)) {
        float *acc_l = b->acc + (size_t)l * b->slot_layer_stride + (size_t)entry * cap;
        if (ck(cudaMemcpyAsync(acc_l, b->h_slotacc, (size_t)cap * 4, cudaMemcpyHostToDevice, s), err,
               "accumulator upload"))
            return -1;
    }
    *nk_out = nk;
    return 0;
}
