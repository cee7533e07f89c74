/* The CUDA backend for tests and benchmarks: an entry's slots read back,
 * an entry put in the state it would have after `length` tokens (bench
 * fill, with its kernels), and one decode step profiled with CUDA events. */
#include "cuda/forward_internal.h"


__device__ __forceinline__ unsigned long long mix64(unsigned long long x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Benchmark state of one entry: K/V of slots < n_valid of every layer hold
 * uniform values in [-0.5, 0.5) from a hash of (seed, element), positions as
 * bench_position() says, empty slots -1. kbase/vbase/pbase point at the
 * entry in layer 0. */
/* FP8 cache (ks, vs given): the same values stored as codes with the scale
 * 0.5 / 448 of every row (the scale the rows' |max| gives up to rounding). */
__global__ void bench_fill_kernel(void *kbase, void *vbase, float *ks, float *vs, int32_t *pbase, int n_layers,
                                  int nkv, int cap, int hd, long long kv_layer_stride, long long slot_layer_stride,
                                  int n_valid, int sinks, int length, unsigned long long seed) {
    const float f8s = 0.5f / LF_FP8_MAX;
    const long long per_layer = (long long)nkv * n_valid * hd;
    const long long total = (long long)n_layers * per_layer;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total; t += stride) {
        const long long l = t / per_layer;
        long long r = t % per_layer;
        const long long kvh = r / ((long long)n_valid * hd);
        r %= (long long)n_valid * hd;
        const long long s = r / hd, d = r % hd;
        const long long off = l * kv_layer_stride + (kvh * cap + s) * hd + d;
        const unsigned long long h = mix64(seed ^ mix64((unsigned long long)t));
        const float a = (float)(h & 0xffffu) * (1.0f / 65536.0f) - 0.5f;
        const float b = (float)((h >> 16) & 0xffffu) * (1.0f / 65536.0f) - 0.5f;
        if (ks) {
            static_cast<uint8_t *>(kbase)[off] = lf_fp8_row_code(a, f8s);
            static_cast<uint8_t *>(vbase)[off] = lf_fp8_row_code(b, f8s);
            if (d == 0) ks[off / hd] = vs[off / hd] = f8s;
        } else {
            static_cast<bf16 *>(kbase)[off] = __float2bfloat16(a);
            static_cast<bf16 *>(vbase)[off] = __float2bfloat16(b);
        }
    }
    const long long ptotal = (long long)n_layers * cap;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < ptotal; t += stride) {
        const long long l = t / cap;
        const int s = (int)(t % cap);
        int p = -1;
        if (s < n_valid) p = (length <= cap || s < sinks) ? s : length - cap + s;
        pbase[l * slot_layer_stride + s] = p;
    }
}

/* |v|_1 of the first n_valid rows of every (layer, KV head) of an entry's FP8
 * V cache (bench fill): scale * sum |code value|, as rope_store stores it. */
__global__ void bench_vnorm_kernel(const uint8_t *vbase, const float *vs, float *vn, int n_layers, int nkv, int cap,
                                   int hd, long long kv_layer_stride, int n_valid) {
    const long long rows = (long long)n_layers * nkv * n_valid;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < rows; t += (long long)gridDim.x * blockDim.x) {
        const long long l = t / ((long long)nkv * n_valid), r = t % ((long long)nkv * n_valid);
        const long long off = l * kv_layer_stride + (r / n_valid * cap + r % n_valid) * hd;
        float s = 0.f;
        for (int d = 0; d < hd; d++) s += fabsf(lf_fp8_value(vbase[off + d]));
        vn[off / hd] = vs[off / hd] * s;
    }
}

extern "C" int lf_cuda_entry_slots(lf_cuda_backend *b, int entry, int layer, int32_t *pos, int32_t *next_slot,
                                   lf_error *err) {
    if (!b) return lf_fail(err, "cuda: no backend");
    if (entry < 0 || entry >= b->E) return lf_fail(err, "cuda: entry %d out of range (pool of %d)", entry, b->E);
    if (layer < 0 || layer >= b->n_layers)
        return lf_fail(err, "cuda: layer %d out of range (%d layers)", layer, b->n_layers);
    cudaStream_t s = b->stream;
    if (pos && ck(cudaMemcpyAsync(pos, b->cpos + (size_t)layer * b->slot_layer_stride + (size_t)entry * b->cap,
                                  (size_t)b->cap * 4, cudaMemcpyDeviceToHost, s),
                  err, "slot positions download"))
        return -1;
    int32_t ns = -1;
    if (b->scored) {
        if (ck(cudaMemcpyAsync(b->h_out, b->next_slot + (size_t)layer * b->E + entry, 4, cudaMemcpyDeviceToHost, s),
               err, "next slot download"))
            return -1;
    } else {
        ns = next_host_slot(b, &b->st[entry]);
    }
    if (ck(cudaStreamSynchronize(s), err, "slot download")) return -1;
    if (b->scored) ns = b->h_out[0];
    if (next_slot) *next_slot = ns;
    return 0;
}

/* The state after `length` tokens. Positions held (see bench_fill_kernel):
 * length <= capacity: 0..length-1 in slots 0..length-1 (nothing evicted yet);
 * length > capacity (budgeted): the first `sinks` positions in slots
 * 0..sinks-1 and the newest capacity-sinks positions (length-capacity+sinks
 * .. length-1) in the other slots, ascending: exactly what streaming holds,
 * and a plausible state for the score policies. The next slot: the first
 * empty one, else slot `sinks` (the oldest non-sink token: streaming's
 * choice, and as good a guess as any for the others). */
extern "C" int lf_cuda_bench_fill(lf_cuda_backend *b, int entry, int length, lf_error *err) {
    if (!b) return lf_fail(err, "cuda: no backend");
    if (entry < 0 || entry >= b->E) return lf_fail(err, "cuda bench fill: entry %d out of range (pool of %d)",
                                                   entry, b->E);
    if (length < 0) return lf_fail(err, "cuda bench fill: negative length %d", length);
    if (!b->desc->budgeted && length >= b->cap)
        return lf_fail(err, "cuda bench fill: %d tokens leave no free slot in the %d slots of --policy full", length,
                       b->cap);
    const int cap = b->cap;
    const int nv = length < cap ? length : cap;
    const int sinks = b->pol.sinks;
    long long total = (long long)b->n_layers * b->n_kv_heads * nv * b->head_dim;
    int blocks = (int)((total + 255) / 256);
    if (blocks > 4096) blocks = 4096;
    if (blocks < 1) blocks = 1;
    bench_fill_kernel<<<blocks, 256, 0, b->stream>>>(kv_at(b, b->K, 0, entry), kv_at(b, b->V, 0, entry),
                                                     kv_scale_at(b, b->KS, 0, entry), kv_scale_at(b, b->VS, 0, entry),
                                                     b->cpos + (size_t)entry * cap, b->n_layers, b->n_kv_heads, cap,
                                                     b->head_dim, b->kv_layer_stride, b->slot_layer_stride, nv, sinks,
                                                     length, 0x5eedull + (unsigned long long)entry);
    if (ck(cudaGetLastError(), err, "bench fill kernel launch")) return -1;
    if (b->vnorm) {
        bench_vnorm_kernel<<<1024, 256, 0, b->stream>>>(
                (const uint8_t *)kv_at(b, b->V, 0, entry), kv_scale_at(b, b->VS, 0, entry),
                kv_scale_at(b, b->VN, 0, entry), b->n_layers, b->n_kv_heads, cap, b->head_dim, b->kv_layer_stride, nv);
        if (ck(cudaGetLastError(), err, "bench |v|_1 kernel launch")) return -1;
    }
    const int next = length < cap ? length : sinks;
    if (b->scored) {
        if (launch_fill_f32(b, b->score + (size_t)entry * cap, b->slot_layer_stride, b->n_layers, cap, 0.f, err) ||
            launch_fill_i32(b, b->next_slot + entry, b->E, b->n_layers, 1, next, err))
            return -1;
    }
    if (b->uses_acc &&
        launch_fill_f32(b, b->acc + (size_t)entry * cap, b->slot_layer_stride, b->n_layers, cap, 0.f, err))
        return -1;
    for (int l = 0; b->desc->slot_stat && l < b->n_layers; l++)
        if (lf_cuda_slot_stat(b->desc->slot_stat, kv_at(b, b->K, l, entry),
                              LF_DTYPE_BF16, 0, (int64_t)cap * b->head_dim, b->n_kv_heads, b->head_dim, NULL, NULL, nv,
                              b->acc + (size_t)l * b->slot_layer_stride + (size_t)entry * cap, 0, b->stream, err))
            return -1;
    if (ck(cudaStreamSynchronize(b->stream), err, "bench fill")) return -1;
    if (launch_fill_i32(b, b->recent_e + entry, 0, 1, 1, b->pol.recent, err)) return -1;
    if (b->seen && lf_cuda_history_reset(b->seen + (size_t)entry * b->seen_words, b->seen_words, NULL, 0, b->stream,
                                         err))
        return -1;
    entry_state *st = &b->st[entry];
    st->live = true;
    st->seed = b->o.sampling.seed + (uint64_t)entry;
    st->step = 1;
    st->budget = cap;
    st->filled = nv;
    st->s0 = length <= cap ? (nv < sinks ? nv : sinks) : sinks;
    st->ring = 0;
    return 0;
}

extern "C" int lf_cuda_profile_step(lf_cuda_backend *b, int n, const int *entries, const int *tokens,
                                    const int *pos, lf_cuda_step_profile *p, lf_error *err) {
    if (!b || !p) return lf_fail(err, "cuda profile: missing argument");
    memset(p, 0, sizeof *p);
    if (decode_inputs(b, n, entries, tokens, pos, err)) return -1;
    /* K/V bytes of the valid slots this step reads (after storing the token) */
    double kvb = 0;
    for (int i = 0; i < n; i++) {
        const entry_state *st = &b->st[entries[i]];
        int valid = st->filled < st->budget ? st->filled + 1 : st->budget;
        kvb += (double)valid * b->n_layers *
               ((double)lf_kv_token_bytes(b->o.policy.kv_dtype, b->n_kv_heads, b->head_dim) +
                (b->vnorm ? 4.0 * b->n_kv_heads : 0.0));
    }
    cudaStream_t s = b->stream;
    prof pr;
    pr.cap = b->n_layers * 16 + 32;
    pr.n = 0;
    pr.ev = (cudaEvent_t *)calloc((size_t)pr.cap, sizeof(cudaEvent_t));
    pr.cat = (int *)calloc((size_t)pr.cap, sizeof(int));
    int rc = 0, made = 0;
    if (!pr.ev || !pr.cat) rc = lf_fail(err, "cuda profile: out of host memory");
    for (; !rc && made < pr.cap; made++) rc = ck(cudaEventCreate(&pr.ev[made]), err, "event creation");
    if (!rc) rc = prepare_shapes(b, n, err);
    if (!rc) rc = attn_ws_for_rows(b, n, err);
    if (!rc)
        rc = ck(cudaMemcpyAsync(b->d_seeds, b->h_seeds, b->in_bytes - (size_t)b->E * 4, cudaMemcpyHostToDevice, s),
                err, "decode input upload");
    if (!rc) rc = decode_kernels(b, n, false, &pr, err);
    if (!rc) rc = ck(cudaStreamSynchronize(s), err, "profiled step");
    if (!rc) {
        for (int i = 0; i + 1 < pr.n; i++) {
            float ms = 0;
            if (cudaEventElapsedTime(&ms, pr.ev[i], pr.ev[i + 1]) != cudaSuccess) continue;
            if (pr.cat[i] == CAT_GEMM) p->gemm_ms += ms;
            else if (pr.cat[i] == CAT_ATTN) p->attention_ms += ms;
            else p->other_ms += ms;
        }
        float tot = 0;
        if (pr.n >= 2 && cudaEventElapsedTime(&tot, pr.ev[0], pr.ev[pr.n - 1]) == cudaSuccess) p->total_ms = tot;
        p->bytes_read = (double)b->gemm_weight_bytes + kvb;
    }
    if (rc) decode_recover(b);
    else decode_advance(b, n, entries, pos);
    for (int i = 0; i < made; i++)
        if (pr.ev[i]) cudaEventDestroy(pr.ev[i]);
    free(pr.ev);
    free(pr.cat);
    return rc ? -1 : 0;
}
