/* The fused decode kernel (src/cuda/attention.cu) with a bf16 and an FP8 KV
 * cache, same shapes, same run:
 *
 *   bench_cuda_kvdtype [--reps 20] [--batch 64,128,256] [--slots 3200,8192] [--mode longflow|none]
 *                      [--vnorm stored|summed]
 *
 * Qwen3-1.7B's attention shape (16 query heads, 8 KV heads, head_dim 128).
 * For each (batch B, cached slots S): B sequences of S valid slots, random K/V
 * (bf16; fp8 = lf_kv_row_store's codes and scales of the same floats), one
 * layer's call of lf_cuda_attn_decode with the score mode (LongFlow by
 * default: attention + alpha*|v|_1 + next slot; with fp8 the V rows' |v|_1 are
 * read from a stored array as the engine does (rope_store writes them), or
 * with --vnorm summed recomputed by the kernel from the codes), timed as a CUDA graph of 10
 * back-to-back launches replayed --reps times after a warm-up (CUDA events;
 * median replay / 10). The caches of all (B, S) are far larger than L2 for
 * B >= 64, so every launch reads K/V from device memory. Reported: us per
 * launch, cached tokens per second (B*S / time), the K/V bytes read per second
 * (codes + scales for fp8), its share of a 1 GiB device-to-device copy's
 * (read + write) bandwidth measured in the same run (the bandwidth a kernel
 * can reach, as longflow bench's roofline), and fp8's tokens/s over bf16's. Prints a table,
 * then one JSON object per (B, S, dtype). */
#include <math.h>
#include <stdio.h>

#ifdef LF_HAVE_CUDA
#define BENCH_NAME "bench_cuda_kvdtype"
#include "bench_cuda_common.h"

#include "core/fp.h"
#include "cuda/cuda_attention.h"
#include "cuda/cuda_membw.h"
#include "kv/dtype.h"

enum { H = 16, HKV = 8, D = 128, LAUNCHES = 10, POOL_ROWS = 65536 };

static uint64_t g_rng = 0x243f6a8885a308d3ull;
static float frnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* The device buffers of one (B, S): the bf16 and fp8 caches of the same
 * floats, the queries, positions and outputs. */
typedef struct caches {
    void *k16, *v16, *k8, *v8, *q, *out;
    float *ks, *vs, *vn, *score;
    int32_t *pos, *next;
} caches;

/* One layer's kernel call of the case: the descriptor and arguments. */
static void make_call(int B, int S, int fp8, int mode, int vnorm, const caches *c, void *ws, size_t wsb, cudaStream_t st,
                      lf_cuda_attn_desc *d, lf_cuda_attn_args *a) {
    memset(d, 0, sizeof *d);
    d->n_seq = B;
    d->n_heads = H;
    d->n_kv_heads = HKV;
    d->head_dim = D;
    d->capacity = S;
    d->dtype = LF_DTYPE_BF16;
    d->out_dtype = LF_DTYPE_BF16;
    d->mode = mode;
    d->kv_fp8 = fp8;
    memset(a, 0, sizeof *a);
    a->q = c->q;
    a->k = fp8 ? c->k8 : c->k16;
    a->v = fp8 ? c->v8 : c->v16;
    a->k_scale = fp8 ? c->ks : NULL;
    a->v_scale = fp8 ? c->vs : NULL;
    a->v_norm = fp8 && vnorm ? c->vn : NULL;
    a->kv_seq_stride = (int64_t)HKV * S * D;
    a->pos = c->pos;
    a->slot_seq_stride = S;
    a->out = c->out;
    a->score = mode ? c->score : NULL;
    a->next_slot = c->next;
    a->workspace = ws;
    a->workspace_bytes = wsb;
    a->stream = st;
}

static void die(const lf_error *err) {
    fprintf(stderr, "bench_cuda_kvdtype: %s\n", err->msg);
    exit(1);
}

/* The command line. */
typedef struct opts {
    int reps, bs[8], ss[8], nb, ns, mode, vnorm; /* vnorm: fp8 |v|_1 read from a stored array */
} opts;

/* One (B, S, dtype): median microseconds per launch. */
static double time_case(int B, int S, int fp8, const opts *o, const caches *c, cudaStream_t st) {
    lf_error err;
    lf_cuda_attn_desc d;
    lf_cuda_attn_args a;
    make_call(B, S, fp8, o->mode, o->vnorm, c, NULL, 0, st, &d, &a);
    size_t wsb = 0;
    if (lf_cuda_attn_workspace_bytes(&d, &wsb, &err)) die(&err);
    void *ws = NULL;
    CUDA_CHECK(cudaMalloc(&ws, wsb));
    if (lf_cuda_attn_workspace_init(ws, wsb, st, &err)) exit(1);
    a.workspace = ws;
    a.workspace_bytes = wsb;
    /* warm-up (plan, attributes), then capture */
    if (lf_cuda_attn_decode(&d, &a, &err)) die(&err);
    CUDA_CHECK(cudaStreamSynchronize(st));
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < LAUNCHES; i++)
        if (lf_cuda_attn_decode(&d, &a, &err)) die(&err);
    CUDA_CHECK(cudaStreamEndCapture(st, &g));
    CUDA_CHECK(cudaGraphInstantiate(&ge, g, 0));
    const double us = bench_graph_ms(ge, st, o->reps) * 1000.0 / LAUNCHES;
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);
    cudaFree(ws);
    return us;
}

static void usage(void) {
    fprintf(stderr, "usage: bench_cuda_kvdtype [--reps N] [--batch B,..] [--slots S,..] [--mode longflow|none]\n"
                    "                          [--vnorm stored|summed]\n");
}

static int parse_args(int argc, char **argv, opts *o) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) o->reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) o->nb = bench_parse_list(argv[++i], o->bs, 8, 1, POOL_ROWS / H);
        else if (!strcmp(argv[i], "--slots") && i + 1 < argc) o->ns = bench_parse_list(argv[++i], o->ss, 8, 1, 1 << 20);
        else if (!strcmp(argv[i], "--mode") && i + 1 < argc) {
            i++;
            o->mode = !strcmp(argv[i], "none") ? LF_SCORE_NONE : LF_SCORE_ATT_VNORM;
        } else if (!strcmp(argv[i], "--vnorm") && i + 1 < argc && (!strcmp(argv[i + 1], "stored") || !strcmp(argv[i + 1], "summed"))) {
            o->vnorm = !strcmp(argv[++i], "stored");
        } else {
            usage();
            return 2;
        }
    }
    if (o->reps < 1) o->reps = 1;
    /* q is staged through the row pool: B * H <= POOL_ROWS */
    if (o->nb < 1) {
        fprintf(stderr, "bench_cuda_kvdtype: --batch wants a list of 1..%d\n", POOL_ROWS / H);
        return 2;
    }
    if (o->ns < 1) {
        fprintf(stderr, "bench_cuda_kvdtype: --slots wants a list of 1..%d\n", 1 << 20);
        return 2;
    }
    return 0;
}

/* The device buffers of B sequences of S valid slots: random rows, bf16 and
 * fp8 of the same floats (a pool of POOL_ROWS rows made on the host, tiled
 * over the caches on the device: the kernel reads every byte anyway),
 * random queries. */
static void caches_init(int B, int S, caches *c) {
    const size_t elems = (size_t)B * HKV * S * D, rows = elems / D;
    uint16_t *h16 = malloc((size_t)POOL_ROWS * D * 2);
    uint8_t *h8 = malloc((size_t)POOL_ROWS * D);
    float *hs = malloc((size_t)POOL_ROWS * 4), *hn = malloc((size_t)POOL_ROWS * 4), row[D];
    int32_t *hp = malloc((size_t)B * S * 4);
    if (!h16 || !h8 || !hs || !hn || !hp) {
        fprintf(stderr, "bench_cuda_kvdtype: out of host memory\n");
        exit(1);
    }
    CUDA_CHECK(cudaMalloc(&c->k16, elems * 2));
    CUDA_CHECK(cudaMalloc(&c->v16, elems * 2));
    CUDA_CHECK(cudaMalloc(&c->k8, elems));
    CUDA_CHECK(cudaMalloc(&c->v8, elems));
    CUDA_CHECK(cudaMalloc((void **)&c->ks, rows * 4));
    CUDA_CHECK(cudaMalloc((void **)&c->vs, rows * 4));
    CUDA_CHECK(cudaMalloc((void **)&c->vn, rows * 4));
    CUDA_CHECK(cudaMalloc(&c->q, (size_t)B * H * D * 2));
    CUDA_CHECK(cudaMalloc(&c->out, (size_t)B * H * D * 2));
    CUDA_CHECK(cudaMalloc((void **)&c->pos, (size_t)B * S * 4));
    CUDA_CHECK(cudaMalloc((void **)&c->score, (size_t)B * S * 4));
    CUDA_CHECK(cudaMalloc((void **)&c->next, (size_t)B * 4));
    for (int kv = 0; kv < 2; kv++) {
        for (size_t r = 0; r < POOL_ROWS; r++) {
            for (int d = 0; d < D; d++) {
                row[d] = frnd();
                h16[r * D + d] = lf_f32_to_bf16(row[d]);
            }
            lf_kv_row_store(LF_KV_FP8, row, D, h8 + r * D, &hs[r]);
            lf_kv_row_load(LF_KV_FP8, h8 + r * D, hs[r], D, row); /* |v|_1 of the stored row */
            hn[r] = 0.f;
            for (int d = 0; d < D; d++) hn[r] += fabsf(row[d]);
        }
        bench_tile_to_device(kv ? c->v16 : c->k16, elems * 2, h16, (size_t)POOL_ROWS * D * 2);
        bench_tile_to_device(kv ? c->v8 : c->k8, elems, h8, (size_t)POOL_ROWS * D);
        bench_tile_to_device(kv ? c->vs : c->ks, rows * 4, hs, (size_t)POOL_ROWS * 4);
        if (kv) bench_tile_to_device(c->vn, rows * 4, hn, (size_t)POOL_ROWS * 4);
    }
    for (size_t i = 0; i < (size_t)B * S; i++) hp[i] = (int32_t)(i % (size_t)S);
    CUDA_CHECK(cudaMemcpy(c->pos, hp, (size_t)B * S * 4, cudaMemcpyHostToDevice));
    for (size_t i = 0; i < (size_t)B * H * D; i++) h16[i] = lf_f32_to_bf16(frnd());
    CUDA_CHECK(cudaMemcpy(c->q, h16, (size_t)B * H * D * 2, cudaMemcpyHostToDevice));
    free(h16);
    free(h8);
    free(hs);
    free(hn);
    free(hp);
}

static void caches_free(caches *c) {
    cudaFree(c->k16); cudaFree(c->v16); cudaFree(c->k8); cudaFree(c->v8); cudaFree(c->ks); cudaFree(c->vs); cudaFree(c->vn);
    cudaFree(c->q); cudaFree(c->out); cudaFree(c->pos); cudaFree(c->score); cudaFree(c->next);
}

/* One (B, S): both dtypes timed, a table row and two JSON lines. */
static void bench_case(int B, int S, const opts *o, const lf_cuda_membw_result *bw, cudaStream_t st) {
    const int mode = o->mode;
    const size_t elems = (size_t)B * HKV * S * D, rows = elems / D;
    caches c;
    caches_init(B, S, &c);
    const double us16 = time_case(B, S, 0, o, &c, st);
    const double us8 = time_case(B, S, 1, o, &c, st);
    const double tok16 = (double)B * S / (us16 * 1e-6), tok8 = (double)B * S / (us8 * 1e-6);
    const double by16 = (double)elems * 2 * 2;
    const double by8 = (double)elems * 2 + (double)rows * (mode && o->vnorm ? 3 : 2) * 4; /* codes, scales, |v|_1 */
    const double gb16 = by16 / (us16 * 1e3), gb8 = by8 / (us8 * 1e3);
    printf("%5d %6d | %10.1f %12.4g %8.0f %5.0f%% | %10.1f %12.4g %8.0f %5.0f%% | %5.2fx\n", B, S, us16, tok16,
           gb16, 100 * gb16 / bw->gbps_rw, us8, tok8, gb8, 100 * gb8 / bw->gbps_rw, tok8 / tok16);
    for (int f = 0; f < 2; f++)
        printf("{\"bench\":\"cuda_kvdtype\",\"device\":\"%s\",\"mode\":\"%s\",\"B\":%d,\"S\":%d,\"kv_dtype\":\"%s\","
               "\"fp8_vnorm\":\"%s\",\"us\":%.2f,\"tokens_per_s\":%.6g,\"kv_gbps\":%.1f,\"copy_gbps_rw\":%.1f,"
               "\"fp8_over_bf16\":%.4f}\n",
               bw->device_name, mode ? "longflow" : "none", B, S, f ? "fp8" : "bf16", o->vnorm ? "stored" : "summed",
               f ? us8 : us16,
               f ? tok8 : tok16, f ? gb8 : gb16, bw->gbps_rw, tok8 / tok16);
    fflush(stdout);
    caches_free(&c);
}

int main(int argc, char **argv) {
    opts o = {.reps = 20, .bs = {64, 128, 256}, .ss = {3200, 8192}, .nb = 3, .ns = 2, .mode = LF_SCORE_ATT_VNORM,
              .vnorm = 1};
    if (parse_args(argc, argv, &o)) return 2;
    lf_error err;
    lf_cuda_membw_result bw;
    if (lf_cuda_membw_measure((size_t)1 << 30, 5, &bw, &err)) {
        fprintf(stderr, "bench_cuda_kvdtype: %s\n", err.msg);
        return 1;
    }
    printf("device %s, copy %.0f GB/s (read + write), mode %s, fp8 |v|_1 %s, H %d / %d KV heads, head_dim %d\n",
           bw.device_name, bw.gbps_rw, o.mode ? "longflow" : "none", o.vnorm ? "stored" : "summed", H, HKV, D);
    printf("%5s %6s | %10s %12s %8s %6s | %10s %12s %8s %6s | %6s\n", "B", "S", "bf16 us", "tok/s", "GB/s", "bw",
           "fp8 us", "tok/s", "GB/s", "bw", "ratio");
    cudaStream_t st;
    CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    for (int ib = 0; ib < o.nb; ib++)
        for (int is = 0; is < o.ns; is++) bench_case(o.bs[ib], o.ss[is], &o, &bw, st);
    cudaStreamDestroy(st);
    return 0;
}

#else /* !LF_HAVE_CUDA */
int main(void) {
    printf("built without CUDA\n");
    return 0;
}
#endif
