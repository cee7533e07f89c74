/* The CUDA backend's lifecycle (cuda_forward.h: create, free, info) and the
 * helpers every file of it uses. forward_internal.h has the map of the files. */
#include "cuda/forward_internal.h"

/* ---- helpers ------------------------------------------------------------- */

int ck(cudaError_t e, lf_error *err, const char *what) {
    if (e == cudaSuccess) return 0;
    return lf_fail(err, "cuda: %s: %s", what, cudaGetErrorString(e));
}

void note_peak(lf_cuda_backend *b) {
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) == cudaSuccess && b->free_at_start > fr) {
        size_t used = b->free_at_start - fr;
        if (used > b->peak) b->peak = used;
    }
    if (b->tracked > b->peak) b->peak = b->tracked;
}

int dmalloc(lf_cuda_backend *b, void **p, size_t bytes, lf_error *err, const char *what) {
    *p = NULL;
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 256);
    if (e != cudaSuccess) {
        *p = NULL;
        return lf_fail(err, "cuda: cudaMalloc of %zu bytes for %s: %s", bytes, what, cudaGetErrorString(e));
    }
    b->tracked += bytes;
    note_peak(b);
    return 0;
}

/* base[l*layer_stride + i] = value for l < n_layers, i < count. */
template <typename T>
__global__ void fill_strided_kernel(T *base, long long layer_stride, int n_layers, int count, T value) {
    const long long total = (long long)n_layers * count;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const long long l = t / count, i = t % count;
        base[l * layer_stride + i] = value;
    }
}

/* fill_strided_kernel on b's stream: 256 threads a block, 1..1024 blocks. */
template <typename T>
static int launch_fill(lf_cuda_backend *b, T *base, long long layer_stride, int n_layers, int count, T value,
                       lf_error *err) {
    long long total = (long long)n_layers * count;
    int blocks = (int)((total + 255) / 256);
    if (blocks > 1024) blocks = 1024;
    if (blocks < 1) blocks = 1;
    fill_strided_kernel<T><<<blocks, 256, 0, b->stream>>>(base, layer_stride, n_layers, count, value);
    return ck(cudaGetLastError(), err, "fill kernel launch");
}

int launch_fill_i32(lf_cuda_backend *b, int32_t *base, long long layer_stride, int n_layers, int count,
                    int32_t value, lf_error *err) {
    return launch_fill<int32_t>(b, base, layer_stride, n_layers, count, value, err);
}

int launch_fill_f32(lf_cuda_backend *b, float *base, long long layer_stride, int n_layers, int count,
                    float value, lf_error *err) {
    return launch_fill<float>(b, base, layer_stride, n_layers, count, value, err);
}

/* ---- options ----------------------------------------------------------- */

static int check_options(const lf_model *m, const lf_cuda_options *o, lf_policy_config *pol, lf_error *err) {
    const lf_config *c = &m->cfg;
    if (lf_policy_check_gpu(&o->policy, err)) return -1;
    if (!(o->sampling.repetition_penalty > 0.0f) || !isfinite(o->sampling.repetition_penalty))
        return lf_fail(err, "--repetition-penalty must be finite and > 0 (got %g)",
                       (double)o->sampling.repetition_penalty);
    if (c->head_dim != 64 && c->head_dim != 128)
        return lf_fail(err, "cuda: head_dim %d is not supported on the GPU (64 or 128); use --device cpu",
                       c->head_dim);
    if (c->n_heads <= 0 || c->n_kv_heads <= 0 || c->n_heads % c->n_kv_heads)
        return lf_fail(err, "cuda: %d attention heads are not a multiple of %d KV heads", c->n_heads,
                       c->n_kv_heads);
    if (c->n_heads / c->n_kv_heads > 8)
        return lf_fail(err, "cuda: %d query heads per KV head; the GPU takes at most 8 (use --device cpu)",
                       c->n_heads / c->n_kv_heads);
    if (c->o_bias) return lf_fail(err, "cuda: %s with an o_proj bias (attention_bias) is not supported on the GPU",
                                  c->arch_name);
    if (c->mlp_bias) return lf_fail(err, "cuda: %s with mlp_bias is not supported on the GPU", c->arch_name);
    if (c->hidden_size <= 0 || c->hidden_size % 8 || c->intermediate_size <= 0 || c->intermediate_size % 8)
        return lf_fail(err, "cuda: hidden_size %d and intermediate_size %d must be positive multiples of 8",
                       c->hidden_size, c->intermediate_size);
    if (c->vocab_size <= 0 || c->n_layers <= 0) return lf_fail(err, "cuda: model has no layers or no vocabulary");
    if (o->capacity <= 0) return lf_fail(err, "cuda: capacity %d must be positive", o->capacity);
    if (o->max_prompt <= 0) return lf_fail(err, "cuda: max_prompt %d must be positive", o->max_prompt);
    if (o->max_seqs < 0) return lf_fail(err, "--max-seqs %d must be >= 0", o->max_seqs);
    if (o->mem_fraction < 0 || o->mem_fraction > 1)
        return lf_fail(err, "cuda: mem_fraction %g must be in (0, 1] (0 = default 0.92)", o->mem_fraction);
    if (o->capacity > (1 << 24)) return lf_fail(err, "cuda: capacity %d is too large", o->capacity);
    /* (a `full` prompt longer than the capacity is refused at prefill) */
    return lf_policy_resolve_slots(&o->policy, o->capacity, pol, err);
}

/* ---- create, free, info --------------------------------------------------- */

extern "C" void lf_cuda_backend_free(lf_cuda_backend *b) {
    if (!b) return;
    if (b->stream) cudaStreamSynchronize(b->stream);
    if (b->graphs) {
        for (int i = 0; i < 2 * (b->E + 1) * b->n_buckets; i++)
            if (b->graphs[i]) cudaGraphExecDestroy(b->graphs[i]);
        free(b->graphs);
    }
    if (b->pf) lf_cuda_prefill_free(b->pf);
    if (b->gemm) lf_cuda_gemm_free(b->gemm);
    cudaFree(b->wblock);
    cudaFree(b->inv_freq);
    cudaFree(b->pool);
    cudaFree(b->ws);
    if (b->h_in) cudaFreeHost(b->h_in);
    if (b->stream) cudaStreamDestroy(b->stream);
    free(b->layers);
    free(b->st);
    free(b->mark);
    free(b);
}

/* The backend's fields that follow from the options and the model's shape. */
static void init_fields(lf_cuda_backend *b, const lf_model *m, const lf_cuda_options *o,
                        const lf_policy_config *pol) {
    const lf_config *c = &m->cfg;
    b->o = *o;
    b->pol = *pol;
    b->desc = lf_policy_get(pol->kind);
    b->mode = b->desc->score;
    b->scored = b->mode != LF_SCORE_NONE;
    b->uses_acc = lf_score_reads_acc(b->mode);
    b->f8 = o->policy.kv_dtype == LF_KV_FP8;
    b->vnorm = b->f8 && (b->mode == LF_SCORE_ATT_VNORM || b->mode == LF_SCORE_ACC_VNORM);
    b->kv_elem = b->f8 ? 1 : 2;
    b->n_layers = c->n_layers;
    b->n_heads = c->n_heads;
    b->n_kv_heads = c->n_kv_heads;
    b->head_dim = c->head_dim;
    b->hidden = c->hidden_size;
    b->inter = c->intermediate_size;
    b->vocab = c->vocab_size;
    b->vocab_pad = (c->vocab_size + 7) / 8 * 8;
    b->q_dim = b->n_heads * b->head_dim;
    b->kv_dim = b->n_kv_heads * b->head_dim;
    b->qkv_dim = b->q_dim + 2 * b->kv_dim;
    b->eps = (float)c->rms_norm_eps;
    b->cap = o->capacity;
    b->P = o->max_prompt;
}

/* Device 0: its name and free memory. Allocates nothing. */
static int open_device(lf_cuda_backend *b, lf_error *err) {
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev < 1)
        return lf_fail(err, "cuda: no CUDA device (%s); use --device cpu",
                       e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    if (ck(cudaSetDevice(0), err, "cudaSetDevice(0)")) return -1;
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
        snprintf(b->device_name, sizeof b->device_name, "%.127s", prop.name);
    size_t fr = 0, tot = 0;
    if (ck(cudaMemGetInfo(&fr, &tot), err, "cudaMemGetInfo")) return -1;
    b->free_at_start = fr;
    b->gpu_total = tot;
    return 0;
}

/* The stream, the GEMM and prefill-attention handles, and the weights. */
static int open_compute(lf_cuda_backend *b, const lf_model *m, lf_error *err) {
    if (ck(cudaStreamCreateWithFlags(&b->stream, cudaStreamNonBlocking), err, "stream creation")) return -1;
    if (lf_cuda_gemm_create(&b->gemm, err)) return -1;
    if (lf_cuda_prefill_create(b->P, b->n_heads, b->n_kv_heads, b->head_dim, LF_DTYPE_BF16, &b->pf, err))
        return lf_fail_prefix(err, "cuda: prefill attention for --max-prompt %d", b->P);
    note_peak(b);
    return upload_weights(b, m, err);
}

/* Host state: the entries' states, the duplicate check, the scan buckets
 * and the graph table. */
static int init_host_state(lf_cuda_backend *b, lf_error *err) {
    const int E = b->E;
    b->st = (entry_state *)calloc((size_t)E, sizeof(entry_state));
    b->mark = (int *)calloc((size_t)E, sizeof(int));
    b->scan_bucket = 64;
    {
        const char *fs = getenv("LF_CUDA_FULL_SCAN"), *ng = getenv("LF_CUDA_NO_GRAPHS");
        b->full_scan = fs && strcmp(fs, "1") == 0;
        if (ng && strcmp(ng, "1") == 0) b->o.no_graphs = true; /* diagnostics */
    }
    b->n_buckets = (b->cap + b->scan_bucket - 1) / b->scan_bucket;
    b->cur_scan = b->cap;
    b->graphs = (cudaGraphExec_t *)calloc((size_t)2 * (E + 1) * b->n_buckets, sizeof(cudaGraphExec_t));
    if (!b->st || !b->mark || !b->graphs) return lf_fail(err, "cuda: out of host memory");
    return 0;
}

extern "C" int lf_cuda_backend_create(const lf_model *m, const lf_cuda_options *o, lf_cuda_backend **out,
                                      lf_error *err) {
    *out = NULL;
    if (!m || !o) return lf_fail(err, "cuda: no model or no options");
    lf_policy_config pol;
    if (check_options(m, o, &pol, err)) return -1;

    lf_cuda_backend *b = (lf_cuda_backend *)calloc(1, sizeof *b);
    if (!b) return lf_fail(err, "cuda: out of host memory");
    init_fields(b, m, o, &pol);
    if (open_device(b, err)) {
        free(b);
        return -1;
    }
    ws_layout wl;
    if (open_compute(b, m, err) || plan_memory(b, o, &wl, err) || carve_pool(b, err) ||
        carve_workspace(b, &wl, err) || carve_host_mirror(b, &wl, err) || init_host_state(b, err)) {
        if (b->stream) cudaStreamSynchronize(b->stream);
        lf_cuda_backend_free(b);
        return -1;
    }
    note_peak(b);
    *out = b;
    return 0;
}

extern "C" size_t lf_cuda_backend_peak_bytes(const lf_cuda_backend *b) {
    if (!b) return 0;
    return b->peak;
}

extern "C" void lf_cuda_backend_info(const lf_cuda_backend *b, lf_cuda_info *info) {
    memset(info, 0, sizeof *info);
    if (!b) return;
    snprintf(info->device_name, sizeof info->device_name, "%s", b->device_name);
    info->entries = b->E;
    info->capacity = b->cap;
    info->weight_bytes = b->weight_bytes;
    info->kv_bytes_per_entry = b->kv_per_entry;
    info->aux_bytes_per_entry = b->aux_per_entry;
    info->workspace_bytes = b->ws_bytes + (b->pf ? lf_cuda_prefill_bytes(b->pf) : 0);
    info->gpu_free_bytes = b->gpu_free_plan;
    info->gpu_total_bytes = b->gpu_total;
    snprintf(info->plan, sizeof info->plan, "%s", b->plan);
}
