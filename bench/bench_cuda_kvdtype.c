/* The fused decode kernel (src/cuda/attention.cu) with a bf16 and an FP8 KV
 * cache, same shapes, same run:
 *
 *   bench_cuda_kvdtype [--reps 20] [--batch 64,128,256] [--slots 3200,8192] [--mode longflow|none]
 *
 * Qwen3-1.7B's attention shape (16 query heads, 8 KV heads, head_dim 128).
 * For each (batch B, cached slots S): B sequences of S valid slots, random K/V
 * (bf16; fp8 = lf_kv_row_store's codes and scales of the same floats), one
 * layer's call of lf_cuda_attn_decode with the score mode (LongFlow by
 * default: attention + alpha*|v|_1 + next slot), timed as a CUDA graph of 10
 * back-to-back launches replayed --reps times after a warm-up (CUDA events;
 * median replay / 10). The caches of all (B, S) are far larger than L2 for
 * B >= 64, so every launch reads K/V from device memory. Reported: us per
 * launch, cached tokens per second (B*S / time), the K/V bytes read per second
 * (codes + scales for fp8), its share of a 1 GiB device-to-device copy's
 * (read + write) bandwidth measured in the same run (the bandwidth a kernel
 * can reach, as longflow bench's roofline), and fp8's tokens/s over bf16's. Prints a table,
 * then one JSON object per (B, S, dtype). */
#include <stdio.h>

#ifdef LF_HAVE_CUDA
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cuda_runtime_api.h>

#include "core/fp.h"
#include "cuda/cuda_attention.h"
#include "cuda/cuda_membw.h"
#include "kv/dtype.h"

#define CUDA_CHECK(x)                                                                                      \
    do {                                                                                                   \
        cudaError_t e_ = (x);                                                                              \
        if (e_ != cudaSuccess) {                                                                           \
            fprintf(stderr, "bench_cuda_kvdtype: %s: %s\n", #x, cudaGetErrorString(e_));                   \
            exit(1);                                                                                       \
        }                                                                                                  \
    } while (0)

enum { H = 16, HKV = 8, D = 128, LAUNCHES = 10, POOL_ROWS = 65536 };

static uint64_t g_rng = 0x243f6a8885a308d3ull;
static float frnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static int parse_list(const char *s, int *out, int max) {
    int n = 0;
    while (*s && n < max) {
        out[n++] = atoi(s);
        const char *c = strchr(s, ',');
        if (!c) break;
        s = c + 1;
    }
    return n;
}

static int cmp_f(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* One (B, S, dtype): median microseconds per launch. */
static double time_case(int B, int S, int fp8, int mode, int reps, const void *k, const void *v, const float *ks,
                        const float *vs, const void *q, void *out, int32_t *pos, float *score, int32_t *next,
                        cudaStream_t st) {
    lf_error err;
    lf_cuda_attn_desc d;
    memset(&d, 0, sizeof d);
    d.n_seq = B;
    d.n_heads = H;
    d.n_kv_heads = HKV;
    d.head_dim = D;
    d.capacity = S;
    d.dtype = LF_DTYPE_BF16;
    d.out_dtype = LF_DTYPE_BF16;
    d.mode = mode;
    d.kv_fp8 = fp8;
    size_t wsb = 0;
    if (lf_cuda_attn_workspace_bytes(&d, &wsb, &err)) {
        fprintf(stderr, "bench_cuda_kvdtype: %s\n", err.msg);
        exit(1);
    }
    void *ws = NULL;
    CUDA_CHECK(cudaMalloc(&ws, wsb));
    if (lf_cuda_attn_workspace_init(ws, wsb, st, &err)) exit(1);
    lf_cuda_attn_args a;
    memset(&a, 0, sizeof a);
    a.q = q;
    a.k = k;
    a.v = v;
    a.k_scale = ks;
    a.v_scale = vs;
    a.kv_seq_stride = (int64_t)HKV * S * D;
    a.pos = pos;
    a.slot_seq_stride = S;
    a.out = out;
    a.score = mode ? score : NULL;
    a.next_slot = next;
    a.workspace = ws;
    a.workspace_bytes = wsb;
    a.stream = st;
    /* warm-up (plan, attributes), then capture */
    if (lf_cuda_attn_decode(&d, &a, &err)) {
        fprintf(stderr, "bench_cuda_kvdtype: %s\n", err.msg);
        exit(1);
    }
    CUDA_CHECK(cudaStreamSynchronize(st));
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < LAUNCHES; i++)
        if (lf_cuda_attn_decode(&d, &a, &err)) {
            fprintf(stderr, "bench_cuda_kvdtype: %s\n", err.msg);
            exit(1);
        }
    CUDA_CHECK(cudaStreamEndCapture(st, &g));
    CUDA_CHECK(cudaGraphInstantiate(&ge, g, 0));
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    CUDA_CHECK(cudaGraphLaunch(ge, st));
    float *t = malloc(sizeof(float) * (size_t)reps);
    for (int r = 0; r < reps; r++) {
        CUDA_CHECK(cudaEventRecord(e0, st));
        CUDA_CHECK(cudaGraphLaunch(ge, st));
        CUDA_CHECK(cudaEventRecord(e1, st));
        CUDA_CHECK(cudaEventSynchronize(e1));
        CUDA_CHECK(cudaEventElapsedTime(&t[r], e0, e1));
    }
    qsort(t, (size_t)reps, sizeof(float), cmp_f);
    const double us = t[reps / 2] * 1000.0 / LAUNCHES;
    free(t);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);
    cudaFree(ws);
    return us;
}

int main(int argc, char **argv) {
    int reps = 20, bs[8] = {64, 128, 256}, ss[8] = {3200, 8192}, nb = 3, ns = 2, mode = LF_SCORE_ATT_VNORM;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) nb = parse_list(argv[++i], bs, 8);
        else if (!strcmp(argv[i], "--slots") && i + 1 < argc) ns = parse_list(argv[++i], ss, 8);
        else if (!strcmp(argv[i], "--mode") && i + 1 < argc) {
            i++;
            mode = !strcmp(argv[i], "none") ? LF_SCORE_NONE : LF_SCORE_ATT_VNORM;
        } else {
            fprintf(stderr, "usage: bench_cuda_kvdtype [--reps N] [--batch B,..] [--slots S,..] [--mode longflow|none]\n");
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    for (int i = 0; i < nb; i++)
        if (bs[i] < 1 || bs[i] * H > POOL_ROWS) { /* q is staged through the row pool */
            fprintf(stderr, "bench_cuda_kvdtype: batch %d out of range 1..%d\n", bs[i], POOL_ROWS / H);
            return 2;
        }
    for (int i = 0; i < ns; i++)
        if (ss[i] < 1 || ss[i] > (1 << 20)) {
            fprintf(stderr, "bench_cuda_kvdtype: slots %d out of range\n", ss[i]);
            return 2;
        }
    lf_error err;
    lf_cuda_membw_result bw;
    if (lf_cuda_membw_measure((size_t)1 << 30, 5, &bw, &err)) {
        fprintf(stderr, "bench_cuda_kvdtype: %s\n", err.msg);
        return 1;
    }
    printf("device %s, copy %.0f GB/s (read + write), mode %s, H %d / %d KV heads, head_dim %d\n", bw.device_name,
           bw.gbps_rw, mode ? "longflow" : "none", H, HKV, D);
    printf("%5s %6s | %10s %12s %8s %6s | %10s %12s %8s %6s | %6s\n", "B", "S", "bf16 us", "tok/s", "GB/s", "bw",
           "fp8 us", "tok/s", "GB/s", "bw", "ratio");
    cudaStream_t st;
    CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    for (int ib = 0; ib < nb; ib++)
        for (int is = 0; is < ns; is++) {
            const int B = bs[ib], S = ss[is];
            const size_t elems = (size_t)B * HKV * S * D, rows = elems / D;
            /* random rows, bf16 and fp8 of the same floats: a pool of POOL_ROWS rows made on the
             * host, tiled over the caches on the device (the kernel reads every byte anyway) */
            uint16_t *h16 = malloc((size_t)POOL_ROWS * D * 2);
            uint8_t *h8 = malloc((size_t)POOL_ROWS * D);
            float *hs = malloc((size_t)POOL_ROWS * 4), row[D];
            void *k16, *v16, *k8, *v8, *q, *out;
            float *ks, *vs, *score;
            int32_t *pos, *next;
            CUDA_CHECK(cudaMalloc(&k16, elems * 2));
            CUDA_CHECK(cudaMalloc(&v16, elems * 2));
            CUDA_CHECK(cudaMalloc(&k8, elems));
            CUDA_CHECK(cudaMalloc(&v8, elems));
            CUDA_CHECK(cudaMalloc((void **)&ks, rows * 4));
            CUDA_CHECK(cudaMalloc((void **)&vs, rows * 4));
            CUDA_CHECK(cudaMalloc(&q, (size_t)B * H * D * 2));
            CUDA_CHECK(cudaMalloc(&out, (size_t)B * H * D * 2));
            CUDA_CHECK(cudaMalloc((void **)&pos, (size_t)B * S * 4));
            CUDA_CHECK(cudaMalloc((void **)&score, (size_t)B * S * 4));
            CUDA_CHECK(cudaMalloc((void **)&next, (size_t)B * 4));
            for (int kv = 0; kv < 2; kv++) {
                for (size_t r = 0; r < POOL_ROWS; r++) {
                    for (int d = 0; d < D; d++) {
                        row[d] = frnd();
                        h16[r * D + d] = lf_f32_to_bf16(row[d]);
                    }
                    lf_kv_row_store(LF_KV_FP8, row, D, h8 + r * D, &hs[r]);
                }
                for (size_t r0 = 0; r0 < rows; r0 += POOL_ROWS) {
                    const size_t nr = rows - r0 < POOL_ROWS ? rows - r0 : POOL_ROWS;
                    CUDA_CHECK(cudaMemcpy((char *)(kv ? v16 : k16) + r0 * D * 2, h16, nr * D * 2, cudaMemcpyHostToDevice));
                    CUDA_CHECK(cudaMemcpy((char *)(kv ? v8 : k8) + r0 * D, h8, nr * D, cudaMemcpyHostToDevice));
                    CUDA_CHECK(cudaMemcpy((kv ? vs : ks) + r0, hs, nr * 4, cudaMemcpyHostToDevice));
                }
            }
            int32_t *hp = malloc((size_t)B * S * 4);
            for (size_t i = 0; i < (size_t)B * S; i++) hp[i] = (int32_t)(i % (size_t)S);
            CUDA_CHECK(cudaMemcpy(pos, hp, (size_t)B * S * 4, cudaMemcpyHostToDevice));
            for (size_t i = 0; i < (size_t)B * H * D; i++) h16[i] = lf_f32_to_bf16(frnd());
            CUDA_CHECK(cudaMemcpy(q, h16, (size_t)B * H * D * 2, cudaMemcpyHostToDevice));
            const double us16 = time_case(B, S, 0, mode, reps, k16, v16, NULL, NULL, q, out, pos, score, next, st);
            const double us8 = time_case(B, S, 1, mode, reps, k8, v8, ks, vs, q, out, pos, score, next, st);
            const double tok16 = (double)B * S / (us16 * 1e-6), tok8 = (double)B * S / (us8 * 1e-6);
            const double by16 = (double)elems * 2 * 2, by8 = (double)elems * 2 + (double)rows * 2 * 4;
            const double gb16 = by16 / (us16 * 1e3), gb8 = by8 / (us8 * 1e3);
            printf("%5d %6d | %10.1f %12.4g %8.0f %5.0f%% | %10.1f %12.4g %8.0f %5.0f%% | %5.2fx\n", B, S, us16, tok16,
                   gb16, 100 * gb16 / bw.gbps_rw, us8, tok8, gb8, 100 * gb8 / bw.gbps_rw, tok8 / tok16);
            for (int f = 0; f < 2; f++)
                printf("{\"bench\":\"cuda_kvdtype\",\"device\":\"%s\",\"mode\":\"%s\",\"B\":%d,\"S\":%d,\"kv_dtype\":\"%s\","
                       "\"us\":%.2f,\"tokens_per_s\":%.6g,\"kv_gbps\":%.1f,\"copy_gbps_rw\":%.1f,\"fp8_over_bf16\":%.4f}\n",
                       bw.device_name, mode ? "longflow" : "none", B, S, f ? "fp8" : "bf16", f ? us8 : us16,
                       f ? tok8 : tok16, f ? gb8 : gb16, bw.gbps_rw, tok8 / tok16);
            fflush(stdout);
            cudaFree(k16); cudaFree(v16); cudaFree(k8); cudaFree(v8); cudaFree(ks); cudaFree(vs);
            cudaFree(q); cudaFree(out); cudaFree(pos); cudaFree(score); cudaFree(next);
            free(h16); free(h8); free(hs); free(hp);
        }
    cudaStreamDestroy(st);
    return 0;
}

#else /* !LF_HAVE_CUDA */
int main(void) {
    printf("built without CUDA\n");
    return 0;
}
#endif
