/* Fused decode attention + KV-cache policy score + argmin (see cuda_attention.h
 * and docs/cuda.md).
 *
 * One block = (sequence, KV head, slot block). Its 4 warps take 16 slots each
 * of a 64-slot tile; tiles stream through shared memory with cp.async
 * (STAGES deep). Per 16 slots a warp does, on tensor cores (m16n8k16, fp32
 * accumulation):
 *   S^T: rows = the G <= 8 query heads of the group (rows 8..15 zero),
 *        columns = slots, k = head_dim;
 *   O  += P V with P split into a hi and a lo 16-bit part: rows 0..7 carry
 *        P_hi, rows 8..15 P_lo of the same heads, so the product keeps ~16
 *        mantissa bits of the fp32 probabilities at no extra mma.
 * |v|_1 is summed in fp32 from the V fragments the P V product already loads.
 * The score needs the final softmax normalisers, which only exist after every
 * slot block of the (sequence, KV head) is done; so each warp stores, per slot
 * and query head, E = exp2(s - m_ref) * |v|_1 and, per 16 slots, m_ref (its
 * running max then). Once the normalisers are final (the block itself when
 * it covers all slots, else the last slot block to finish), each slot gets
 * g = sum_h E * exp2(m_ref - m_h) / l_h. The last KV head of a sequence to
 * finish sums g over KV heads, writes score and next_slot.
 */
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>

extern "C" {
#include "core/error.h"
}
#include "cuda/cuda_attention.h"
#include "cuda/cuda_pdl.h"

namespace {

constexpr int WARPS = 4;
constexpr int THREADS = WARPS * 32;
constexpr int TILE = 16 * WARPS; /* slots per pipeline stage */
#ifndef LF_ATTN_STAGES
#define LF_ATTN_STAGES 3
#endif
constexpr int STAGES = LF_ATTN_STAGES; /* pipeline depth (build knob for the benchmark) */
static_assert(STAGES >= 2 && STAGES <= 4, "2..4 stages");
constexpr int MAXG = 8;          /* query heads per KV head */
constexpr int MAX_SPLIT = 64;

enum Kind { K_NONE = 0, K_ATTN = 1, K_LF = 2, K_VATP = 3 };

struct Params {
    const void *q, *k, *v;
    long long kv_seq_stride;
    const int *pos;
    long long slot_seq_stride;
    const int *seq_index;
    void *out;
    float *score, *acc;
    int *next_slot;
    const int *cur_pos;
    int sinks, recent;
    const int *recent_e;            /* [pool entry] recent window, or NULL (= recent) */
    int B, H, Hkv, G, cap, cap_pad, n_split, split_len;
    int kvh_slots;                  /* slots between the KV heads of an entry (>= cap) */
    float scale_log2, inv_hd, inv_kvd; /* log2(e)*scale, 1/(H*D), 1/(Hkv*D) */
    int mode, out_f32, e_smem, l2_hints, discard;
    int defer;                      /* two launches: attn_kernel stops after writing partials */
    int n_chunks, chunk_len, sub_len; /* combine_kernel: slot chunks per sequence, staging rounds */
    unsigned *pair_cnt, *seq_cnt;
    float *part_ml, *part_o, *gE, *gmref, *g, *nb, *cpart;
    const float *kscale, *vscale;   /* FP8 cache: row scales, (p, kvh, slot) at p*sc_seq_stride + kvh*kvh_slots + slot */
    const float *vnorm;             /* FP8 cache: |v|_1 of each V row (same index), or NULL (summed here) */
    long long sc_seq_stride;        /* kv_seq_stride / head_dim */
};

/* ---- small PTX wrappers ------------------------------------------------ */
__device__ __forceinline__ uint32_t smem_u32(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, int bytes, uint64_t pol) {
    asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2, %3;\n" ::"r"(dst), "l"(src),
                 "r"(bytes), "l"(pol));
}
/* L2 policy for the K/V stream: read once, so first to go (keeps the scratch
 * this kernel re-reads in L2); evict_normal when hints are off. */
__device__ __forceinline__ uint64_t stream_policy(bool first) {
    uint64_t pol;
    if (first) asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(pol));
    else asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;\n" : "=l"(pol));
    return pol;
}
/* Drop a consumed 128-byte scratch line from L2 without writing it back. */
__device__ __forceinline__ void l2_discard(const void *p) {
    asm volatile("discard.global.L2 [%0], 128;\n" ::"l"(p) : "memory");
}
/* Discard the 128-byte lines of [p, p + bytes) (p 128-aligned), all threads. */
__device__ __forceinline__ void discard_range(const void *p, long bytes) {
    const char *c = static_cast<const char *>(p);
    for (long o = (long)threadIdx.x * 128; o + 128 <= bytes; o += (long)blockDim.x * 128) l2_discard(c + o);
}
__device__ __forceinline__ void cp_async4(uint32_t dst, const void *src, int bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
__device__ __forceinline__ void ldsm_x4(uint32_t r[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t r[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

template <typename T> struct TypeOps;
template <> struct TypeOps<__half> {
    __device__ static __forceinline__ void mma(float c[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                               uint32_t a3, uint32_t b0, uint32_t b1) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }
    /* hi = round(x), lo = round(x - hi), packed pairs (first element low) */
    __device__ static __forceinline__ void split2(float x, float y, uint32_t &hi, uint32_t &lo) {
        __half2 h = __floats2half2_rn(x, y);
        float2 hf = __half22float2(h);
        __half2 l = __floats2half2_rn(x - hf.x, y - hf.y);
        hi = *reinterpret_cast<uint32_t *>(&h);
        lo = *reinterpret_cast<uint32_t *>(&l);
    }
    __device__ static __forceinline__ float2 abs2(uint32_t r) {
        __half2 h = *reinterpret_cast<__half2 *>(&r);
        float2 f = __half22float2(h);
        return make_float2(fabsf(f.x), fabsf(f.y));
    }
    __device__ static __forceinline__ float to_f(const void *p, size_t i) {
        return __half2float(static_cast<const __half *>(p)[i]);
    }
    __device__ static __forceinline__ void store(void *p, size_t i, float x) {
        static_cast<__half *>(p)[i] = __float2half_rn(x);
    }
};
template <> struct TypeOps<__nv_bfloat16> {
    __device__ static __forceinline__ void mma(float c[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                               uint32_t a3, uint32_t b0, uint32_t b1) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }
    __device__ static __forceinline__ void split2(float x, float y, uint32_t &hi, uint32_t &lo) {
        __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
        float2 hf = __bfloat1622float2(h);
        __nv_bfloat162 l = __floats2bfloat162_rn(x - hf.x, y - hf.y);
        hi = *reinterpret_cast<uint32_t *>(&h);
        lo = *reinterpret_cast<uint32_t *>(&l);
    }
    __device__ static __forceinline__ float2 abs2(uint32_t r) {
        return make_float2(__uint_as_float((r << 16) & 0x7fffffffu), __uint_as_float(r & 0x7fff0000u));
    }
    __device__ static __forceinline__ float to_f(const void *p, size_t i) {
        return __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[i]);
    }
    __device__ static __forceinline__ void store(void *p, size_t i, float x) {
        static_cast<__nv_bfloat16 *>(p)[i] = __float2bfloat16_rn(x);
    }
};

__device__ __forceinline__ float ex2(float x) { return exp2f(x); }

/* ---- FP8 e4m3 -> bf16 in registers ----------------------------------------
 * prmt's sign mode puts a code c in the low byte of a 16-bit half and
 * replicates its sign bit through the high byte; (u << 4) & 0x87f0 per half
 * is then sign | (c & 0x7f) << 4: the bf16 whose exponent and mantissa
 * fields are e4m3's, i.e. the code's value times 2^-120 (the bias is 127
 * instead of 7; subnormal codes become bf16 subnormals, which bf16 FMA keeps).
 * One exact multiply by 2^120 gives the code's value: every e4m3 value is a
 * bf16. No code yields NaN or inf (0x7f gives 480), so stale codes of empty
 * slots stay finite. */
__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel) {
    uint32_t d;
    asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
    return d;
}
__device__ __forceinline__ uint32_t e4m3x2_to_bf16x2(uint32_t u) {
    const uint32_t r = (u << 4) & 0x87f087f0u;
    uint32_t d;
    /* r * 2^120 (0x7b80) + (-0): exact */
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(d) : "r"(r), "r"(0x7b807b80u), "r"(0x80008000u));
    return d;
}
/* The e4m3 pair in the low (hi = 0) or high 16 bits of w as f16x2: one
 * conversion instruction from sm_89 on; elsewhere the bf16 trick with f16's
 * bias (15: times 2^-8, then an exact multiply by 2^8; e4m3 subnormals are
 * f16 subnormals, which f16 FMA keeps). Every e4m3 value is an f16. */
template <int HI> __device__ __forceinline__ uint32_t e4m3x2_to_f16x2(uint32_t w) {
    uint32_t d;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    const uint16_t h = (uint16_t)(HI ? w >> 16 : w);
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;\n" : "=r"(d) : "h"(h));
#else
    const uint32_t u = prmt(w, w >> 8, HI ? 0xB3A2u : 0x9180u);
    const uint32_t r = (u << 7) & 0xbf80bf80u;
    asm("fma.rn.f16x2 %0, %1, %2, %3;\n" : "=r"(d) : "r"(r), "r"(0x5c005c00u), "r"(0x80008000u));
#endif
    return d;
}
/* The pair (byte k of a, byte k of b), as bf16x2 (a's in the low half). */
template <int K> __device__ __forceinline__ uint32_t e4m3_pair(uint32_t a, uint32_t b) {
    return e4m3x2_to_bf16x2(prmt(a, b, (uint32_t)(K | (8 | K) << 4 | (4 + K) << 8 | (12 + K) << 12)));
}
template <int N> __device__ __forceinline__ uint32_t word_of(const uint4 (&x)[N], int i) {
    const uint4 &c = x[i / 4];
    return (i & 3) == 0 ? c.x : (i & 3) == 1 ? c.y : (i & 3) == 2 ? c.z : c.w;
}

/* Byte offset of 16-byte chunk c of row r in a swizzled tile of rows of D
 * 16-bit elements: chunk c is stored at c ^ (r & 7), so the 8 rows an
 * ldmatrix reads at one logical chunk hit 8 different bank groups. */
template <int D> __device__ __forceinline__ uint32_t swz(int r, int c) {
    return (uint32_t)(r * D * 2 + ((c ^ (r & 7)) << 4));
}

/* The same for a tile of FP8 rows (D bytes each, 16-byte chunks c ^ (r mod
 * chunks per row)): the 8 rows of a quarter warp's loads hit 8 bank groups. */
template <int D> __device__ __forceinline__ uint32_t swz8(int r, int c) {
    return (uint32_t)(r * D + ((c ^ (r & (D / 16 - 1))) << 4));
}

template <int D, bool F8 = false> struct Smem {
    static constexpr int KV_BYTES = TILE * D * (F8 ? 1 : 2);      /* one of K or V */
    static constexpr int STAGE_BYTES = 2 * KV_BYTES + TILE * 4 * (F8 ? 4 : 1); /* + pos (+ K, V scales, |v|_1) */
    static constexpr int PIPE_BYTES = STAGES * STAGE_BYTES;
    static constexpr int OBUF_BYTES = WARPS * MAXG * D * 4;       /* warp O merge */
    static_assert(OBUF_BYTES + 3 * MAX_SPLIT * MAXG * 4 <= PIPE_BYTES, "scratch fits the pipeline");
};

/* Bytes of shared memory after the pipeline: stats + per-slot partials. */
__host__ __device__ inline int small_bytes() { return 1024; }
__host__ __device__ inline int e_smem_bytes(int G, int split_len) {
    return G * split_len * 4 + (split_len / 16) * MAXG * 4;
}

/* ---- epilogue helpers ------------------------------------------------------
 * The epilogues (g per KV head, then the per-sequence score and argmin) read
 * scratch written moments before (L2 hits). They were latency-bound loops
 * (one L2 round trip per iteration: bench/NOTES.md); now each round stages
 * up to the whole pipeline buffer with cp.async, waits once, and works from
 * shared memory. */
__device__ __forceinline__ void cp_async16_plain(uint32_t dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src));
}
/* rows x n floats (n % 4 == 0, 16-byte aligned rows) from global to shared */
__device__ __forceinline__ void stage_rows(float *dst, int dst_stride, const float *src, long src_stride,
                                           int rows, int n) {
    const int q = n / 4;
    for (int x = threadIdx.x; x < rows * q; x += THREADS) {
        const int r = x / q, c = x % q;
        cp_async16_plain(smem_u32(dst + (long)r * dst_stride + 4 * c), src + r * src_stride + 4 * c);
    }
}
/* n 32-bit words, any alignment */
__device__ __forceinline__ void stage_words(void *dst, const void *src, int n) {
    for (int x = threadIdx.x; x < n; x += THREADS)
        cp_async4(smem_u32(static_cast<uint32_t *>(dst) + x), static_cast<const uint32_t *>(src) + x, 4);
}

/* g[i] = sum_h E[h][i] * exp2(min(m_ref[i/16][h] - m_h, 0)) / l_h for i in
 * [lo, hi) (multiples of 64); E, m_ref and g_out indexed alike. E in global
 * memory is staged through `stage` (stage_bytes of shared memory). */
__device__ void compute_g(const float *E, long e_stride, const float *mref, bool from_global, int lo,
                          int hi, int G, const float *m_fin, const float *inv_l, float *g_out, bool discard,
                          float *stage, int stage_bytes) {
    const int tid = threadIdx.x;
    int ch = hi - lo;
    if (from_global) { /* E rows [G][ch] + m_ref [ch/2] + weights [ch/2] per round */
        ch = stage_bytes / (4 * (G + 1)) / 64 * 64;
        if (ch > hi - lo) ch = hi - lo;
    }
    for (int base = lo; base < hi; base += ch) {
        const int n = min(ch, hi - base);
        const float *Eb = E + base, *Mb = mref + (long)(base / 16) * MAXG;
        long es = e_stride;
        float *wt = stage; /* [n/16][MAXG] weights */
        if (from_global) {
            float *sm = stage + (long)G * ch;
            stage_rows(stage, ch, Eb, e_stride, G, n);
            stage_rows(sm, 0, Mb, 0, 1, n / 16 * MAXG);
            cp_commit();
            cp_wait<0>();
            __syncthreads();
            Eb = stage;
            es = ch;
            Mb = sm;
            wt = sm + ch / 2;
        }
        for (int x = tid; x < (n / 16) * MAXG; x += THREADS) {
            const int h = x % MAXG;
            wt[x] = (h < G && inv_l[h] > 0.f) ? ex2(fminf(Mb[x] - m_fin[h], 0.f)) * inv_l[h] : 0.f;
        }
        __syncthreads();
        for (int i = tid * 4; i < n; i += THREADS * 4) {
            const float *w = wt + (i / 16) * MAXG;
            float4 a = make_float4(0.f, 0.f, 0.f, 0.f);
            for (int h = 0; h < G; h++) {
                const float4 e = *reinterpret_cast<const float4 *>(Eb + (long)h * es + i);
                const float wh = w[h];
                a.x += e.x * wh; a.y += e.y * wh; a.z += e.z * wh; a.w += e.w * wh;
            }
            *reinterpret_cast<float4 *>(g_out + base + i) = a;
        }
        __syncthreads();
    }
    if (discard) { /* E and m_ref of [lo, hi) are consumed */
        for (int h = 0; h < G; h++) discard_range(E + (long)h * e_stride + lo, (long)(hi - lo) * 4);
        discard_range(mref + (long)(lo / 16) * MAXG, (long)(hi - lo) / 16 * MAXG * 4);
    }
}

/* ---- the last KV head of a sequence: score, argmin, next_slot ------------- */
__device__ __forceinline__ void argmin_upd(float &bv, int &bi, float v, int i) {
    if (v < bv) { bv = v; bi = i; } /* slots visited in increasing order: lowest index wins ties */
}

/* A thread's running argmin (value, lowest index on ties). */
struct Argmin2 {
    float v = INFINITY;
    int i = 0x7fffffff;
};

/* Take (v, i) into a when lower, or equal with a lower index. */
__device__ __forceinline__ void argmin_take(Argmin2 &a, float v, int i) {
    if (v < a.v || (v == a.v && i < a.i)) { a.v = v; a.i = i; }
}

/* Each warp's two argmins (best, then fb) into red_v / red_i [2][WARPS]. */
__device__ __forceinline__ void warp_argmins(const Argmin2 &best, const Argmin2 &fb, float *red_v, int *red_i) {
    const int tid = threadIdx.x;
    for (int pass = 0; pass < 2; pass++) {
        float v = pass == 0 ? best.v : fb.v;
        int ix = pass == 0 ? best.i : fb.i;
        for (int o = 16; o > 0; o >>= 1) {
            const float v2 = __shfl_xor_sync(0xffffffffu, v, o);
            const int i2 = __shfl_xor_sync(0xffffffffu, ix, o);
            if (v2 < v || (v2 == v && i2 < ix)) { v = v2; ix = i2; }
        }
        if ((tid & 31) == 0) { red_v[pass * WARPS + tid / 32] = v; red_i[pass * WARPS + tid / 32] = ix; }
    }
}

/* The block's two argmins from the warps' (red_v / red_i as warp_argmins left them). */
__device__ __forceinline__ void block_argmins(const float *red_v, const int *red_i, Argmin2 &best, Argmin2 &fb) {
    for (int w = 0; w < WARPS; w++) {
        argmin_take(best, red_v[w], red_i[w]);
        argmin_take(fb, red_v[WARPS + w], red_i[WARPS + w]);
    }
}

/* The victim slot: the unprotected argmin, else the overall one, else 0
 * (only with NaN scores everywhere). */
__device__ __forceinline__ int victim_of(int best_i, int fb_i) {
    const int ns = best_i != 0x7fffffff ? best_i : fb_i;
    return ns == 0x7fffffff ? 0 : ns;
}

/* The score of one slot in the policy's mode (src/kv/score_mode.h), written
 * once for both kernels: sv = the attention of the slot summed over query
 * heads, nsum = its |v|_1 summed over KV heads, stored = its acc entry (ACC
 * modes, STORED). Writes the slot's new accumulator (ACC modes) and score,
 * and takes it into the thread's argmin unless the slot is beyond the entry's
 * budget; protected slots (sinks, recent) only into the fallback argmin. */
__device__ __forceinline__ void score_slot(const Params &p, int slot, int ps, float sv, float nsum, float stored,
                                           float inv_h, float *acc, float *score, int cur, int rec, Argmin2 &best,
                                           Argmin2 &fb) {
    float sc;
    switch (p.mode) {
    case LF_SCORE_ATT_VNORM: sc = sv * p.inv_hd; break;
    case LF_SCORE_ATT: sc = sv * inv_h; break;
    case LF_SCORE_STORED: sc = stored; break;
    default: { /* ACC, ACC_VNORM */
        const float a = ps >= 0 ? stored + sv * inv_h : 0.f;
        acc[slot] = a;
        sc = p.mode == LF_SCORE_ACC_VNORM ? a * (nsum * p.inv_kvd) : a;
    }
    }
    if (ps < 0) sc = p.mode == LF_SCORE_STORED ? -INFINITY : 0.f;
    if (score) score[slot] = sc;
    if (ps <= LF_CUDA_SLOT_OFF) return; /* beyond the entry's budget: never a victim */
    const bool prot = ps >= 0 && (ps < p.sinks || (p.cur_pos && rec > 0 && ps > cur - rec));
    if (!prot) argmin_upd(best.v, best.i, sc, slot);
    argmin_upd(fb.v, fb.i, sc, slot);
}

__device__ void seq_finish(const Params &p, int seq, long pidx, float *red_v, int *red_i, float *stage,
                           int stage_bytes) {
    const int tid = threadIdx.x;
    const float *gs = p.g + (long)seq * p.Hkv * p.cap_pad;
    const float *nbs = p.nb ? p.nb + (long)seq * p.Hkv * p.cap_pad : nullptr;
    const int *pos = p.pos + pidx * p.slot_seq_stride;
    const bool accum = lf_score_reads_acc(p.mode);
    float *acc = accum ? p.acc + pidx * p.slot_seq_stride : nullptr;
    float *score = p.score ? p.score + pidx * p.slot_seq_stride : nullptr;
    const float inv_h = 1.f / (float)p.H;
    const int cur = p.cur_pos ? p.cur_pos[seq] : 0;
    const int rec = p.recent_e ? p.recent_e[pidx] : p.recent;
    const int per_slot = 4 * (p.Hkv * (nbs ? 2 : 1) + 1 + (accum ? 1 : 0));
    int ch = stage_bytes / per_slot / 64 * 64;
    if (ch > p.cap_pad) ch = p.cap_pad;
    float *sg = stage, *sn = stage + (long)p.Hkv * ch;
    int *sp = reinterpret_cast<int *>(sn + (nbs ? (long)p.Hkv * ch : 0));
    float *sa = reinterpret_cast<float *>(sp + ch);
    Argmin2 best, fb; /* over unprotected slots, and over all */
    for (int base = 0; base < p.cap; base += ch) {
        const int n = min(ch, p.cap_pad - base), nv = min(ch, p.cap - base);
        stage_rows(sg, ch, gs + base, p.cap_pad, p.Hkv, n);
        if (nbs) stage_rows(sn, ch, nbs + base, p.cap_pad, p.Hkv, n);
        stage_words(sp, pos + base, nv);
        if (accum) stage_words(sa, acc + base, nv);
        cp_commit();
        cp_wait<0>();
        __syncthreads();
        for (int i = tid; i < nv; i += THREADS) {
            float sv = 0.f, nsum = 0.f;
            for (int k = 0; k < p.Hkv; k++) sv += sg[(long)k * ch + i];
            if (nbs)
                for (int k = 0; k < p.Hkv; k++) nsum += sn[(long)k * ch + i];
            score_slot(p, base + i, sp[i], sv, nsum, accum ? sa[i] : 0.f, inv_h, acc, score, cur, rec, best, fb);
        }
        __syncthreads();
    }
    warp_argmins(best, fb, red_v, red_i); /* block argmin of (value, index), twice: unprotected, then all */
    __syncthreads();
    if (p.discard) { /* g (and |v|_1) of this sequence are consumed */
        discard_range(gs, (long)p.Hkv * p.cap_pad * 4);
        if (nbs) discard_range(nbs, (long)p.Hkv * p.cap_pad * 4);
    }
    if (tid == 0) {
        float bv = INFINITY, fv = INFINITY;
        int bi = 0x7fffffff, fi = 0x7fffffff;
        for (int w = 0; w < WARPS; w++) {
            if (red_v[w] < bv || (red_v[w] == bv && red_i[w] < bi)) { bv = red_v[w]; bi = red_i[w]; }
            if (red_v[WARPS + w] < fv || (red_v[WARPS + w] == fv && red_i[WARPS + w] < fi)) { fv = red_v[WARPS + w]; fi = red_i[WARPS + w]; }
        }
        const int ns = victim_of(bi, fi);
        p.next_slot[p.seq_index ? p.seq_index[seq] : seq] = ns;
        if (lf_score_writes_acc(p.mode)) acc[ns] = 0.f;
    }
}

/* ---- attn_kernel's parts ---------------------------------------------------
 * Each is inlined into the kernel (the code the kernel had inline, moved). */

/* Where one (sequence, KV head) pair's K, V, positions and FP8 scales start. */
struct TileSrc {
    const unsigned char *k, *v;       /* the K / V rows of the pair (bytes) */
    const float *ksc, *vsc, *vn;      /* FP8: row scales and stored |v|_1 (or NULL) */
    const int *pos;                   /* slot positions of the sequence */
    bool use_vn;                      /* FP8 with stored |v|_1 (LongFlow, VATP): read, not summed */
};

template <typename T, int D, int KIND, bool F8>
__device__ __forceinline__ TileSrc tile_src(const Params &p, long pidx, int kvh) {
    const long row0 = pidx * p.kv_seq_stride + (long)kvh * p.kvh_slots * D; /* elements */
    const long sc0 = pidx * p.sc_seq_stride + (long)kvh * p.kvh_slots;
    TileSrc s;
    s.k = static_cast<const unsigned char *>(p.k) + row0 * (F8 ? 1 : (long)sizeof(T));
    s.v = static_cast<const unsigned char *>(p.v) + row0 * (F8 ? 1 : (long)sizeof(T));
    s.ksc = F8 ? p.kscale + sc0 : nullptr;
    s.vsc = F8 ? p.vscale + sc0 : nullptr;
    s.use_vn = F8 && (KIND == K_LF || KIND == K_VATP) && p.vnorm != nullptr;
    s.vn = s.use_vn ? p.vnorm + sc0 : nullptr;
    s.pos = p.pos + pidx * p.slot_seq_stride;
    return s;
}

/* The producer: the cp.async of the tile of slots base .. base+TILE-1 into
 * the stage st (K, V, positions; FP8: codes, scales and stored |v|_1). */
template <typename T, int D, bool F8>
__device__ __forceinline__ void issue_tile(const Params &p, const TileSrc &src, unsigned char *st, int base,
                                           int tid, uint64_t pol) {
    using SM = Smem<D, F8>;
    const uint32_t ks = smem_u32(st), vs = ks + SM::KV_BYTES;
    if (F8) {
        constexpr int C8 = D / 16; /* 16-byte chunks per FP8 row */
#pragma unroll
        for (int it = 0; it < TILE * C8 / THREADS; it++) {
            const int idx = tid + it * THREADS;
            const int r = idx / C8, c = idx % C8;
            const int slot = base + r;
            const bool in = slot < p.cap;
            const long off = in ? (long)slot * D + c * 16 : 0;
            cp_async16(ks + swz8<D>(r, c), src.k + off, in ? 16 : 0, pol);
            cp_async16(vs + swz8<D>(r, c), src.v + off, in ? 16 : 0, pol);
        }
        if (tid < TILE) {
            const int slot = base + tid;
            const bool in = slot < p.cap;
            unsigned char *sc = st + 2 * SM::KV_BYTES + TILE * 4;
            cp_async4(smem_u32(st + 2 * SM::KV_BYTES + tid * 4), src.pos + (in ? slot : 0), in ? 4 : 0);
            cp_async4(smem_u32(sc + tid * 4), src.ksc + (in ? slot : 0), in ? 4 : 0);
            cp_async4(smem_u32(sc + TILE * 4 + tid * 4), src.vsc + (in ? slot : 0), in ? 4 : 0);
            if (src.use_vn) cp_async4(smem_u32(sc + TILE * 8 + tid * 4), src.vn + (in ? slot : 0), in ? 4 : 0);
        }
    } else {
        constexpr int CPR = D / 8; /* 16-byte chunks per row */
        const T *kb = reinterpret_cast<const T *>(src.k), *vb = reinterpret_cast<const T *>(src.v);
#pragma unroll
        for (int it = 0; it < TILE * CPR / THREADS; it++) {
            const int idx = tid + it * THREADS;
            const int r = idx / CPR, c = idx % CPR;
            const int slot = base + r;
            const bool in = slot < p.cap;
            const long off = in ? (long)slot * D + c * 8 : 0;
            cp_async16(ks + swz<D>(r, c), kb + off, in ? 16 : 0, pol);
            cp_async16(vs + swz<D>(r, c), vb + off, in ? 16 : 0, pol);
        }
        if (tid < TILE) {
            const int slot = base + tid;
            const bool in = slot < p.cap;
            cp_async4(smem_u32(st + 2 * SM::KV_BYTES + tid * 4), src.pos + (in ? slot : 0), in ? 4 : 0);
        }
    }
}

/* Q fragments of the group's heads (rows gid < G; rows 8..15 zero). F8: the
 * lane's k-elements are dims tig*D/4 + 4kc .. +3 (the permuted order). */
template <typename T, int D, bool F8>
__device__ __forceinline__ void load_q(const Params &p, int seq, int kvh, int G, int gid, int tig,
                                       uint32_t (&qa)[D / 16][2]) {
    const T *qh = static_cast<const T *>(p.q) + ((long)seq * p.H + (long)kvh * G + gid) * D;
#pragma unroll
    for (int kc = 0; kc < D / 16; kc++) {
        if (gid < G) {
            const int d0 = F8 ? tig * (D / 4) + 4 * kc : kc * 16 + 2 * tig;
            qa[kc][0] = *reinterpret_cast<const uint32_t *>(qh + d0);
            qa[kc][1] = *reinterpret_cast<const uint32_t *>(qh + d0 + (F8 ? 2 : 8));
        } else {
            qa[kc][0] = qa[kc][1] = 0u;
        }
    }
}

/* FP8: S = Q K^T runs on the f16 tensor cores (K codes convert to f16 in one
 * instruction). q (bf16 fragments) goes to f16 times 2^-qe, qe >= 0 the least
 * that brings the group's max |q| under 2^15 (0 for any real model; the same
 * in every warp), exact but for q elements below 2^-14 * 2^qe, whose f16
 * rounding is far under q's own bf16 rounding. Returns 2^qe, which multiplies
 * the K scale back. */
template <int D> __device__ __forceinline__ float q_to_f16(uint32_t (&qa)[D / 16][2]) {
    float qm = 0.f;
#pragma unroll
    for (int kc = 0; kc < D / 16; kc++)
#pragma unroll
        for (int j = 0; j < 2; j++) {
            const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&qa[kc][j]));
            qm = fmaxf(qm, fmaxf(fabsf(f.x), fabsf(f.y)));
        }
    for (int m = 16; m > 0; m >>= 1) qm = fmaxf(qm, __shfl_xor_sync(0xffffffffu, qm, m));
    int qe = 0;
    if (qm >= 32768.f) qe = qm < 3e38f ? min(ilogbf(qm) - 14, 120) : 120; /* inf/NaN: 120 (NaN stays NaN) */
    const float qs = exp2f((float)-qe);
#pragma unroll
    for (int kc = 0; kc < D / 16; kc++)
#pragma unroll
        for (int j = 0; j < 2; j++) {
            const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&qa[kc][j]));
            const __half2 h = __floats2half2_rn(f.x * qs, f.y * qs);
            qa[kc][j] = *reinterpret_cast<const uint32_t *>(&h);
        }
    return exp2f((float)qe);
}

/* Where the per-slot terms E (and the per-16-slot reference maxima) go:
 * shared memory, range-relative (base = lo), or global, cap-relative. */
struct EDest {
    float *E, *mref;
    long stride;
    int base;
    bool in_smem;
};

template <int KIND>
__device__ __forceinline__ EDest e_dest(const Params &p, int pair, int G, int lo, float *e_sm) {
    EDest d{nullptr, nullptr, 0, 0, false};
    if (KIND == K_NONE) return d;
    d.in_smem = p.e_smem != 0;
    if (d.in_smem) {
        d.E = e_sm;
        d.stride = p.split_len;
        d.mref = e_sm + (long)G * p.split_len;
        d.base = lo;
    } else {
        d.E = p.gE + (long)pair * G * p.cap_pad;
        d.stride = p.cap_pad;
        d.mref = p.gmref + (long)pair * (p.cap_pad / 16) * MAXG;
    }
    return d;
}

/* Validity of this lane's 4 slots of the warp's 16 (2tig, 2tig+1, 2tig+8,
 * 2tig+9): inside the cache and holding a token. */
__device__ __forceinline__ void slot_validity(const Params &p, const int *ps, int wrow, int slot0, int tig,
                                              bool (&val)[4]) {
    const int2 pa = *reinterpret_cast<const int2 *>(ps + wrow + 2 * tig);
    const int2 pb = *reinterpret_cast<const int2 *>(ps + wrow + 2 * tig + 8);
    const int s0 = slot0 + 2 * tig;
    val[0] = s0 < p.cap && pa.x >= 0;
    val[1] = s0 + 1 < p.cap && pa.y >= 0;
    val[2] = s0 + 8 < p.cap && pb.x >= 0;
    val[3] = s0 + 9 < p.cap && pb.y >= 0;
}

/* S^T = Q K^T for the warp's 16 slots (two n-tiles of 8) from the stage st. */
template <typename T, int D, bool F8>
__device__ __forceinline__ void qk_tile(const unsigned char *st, uint32_t ks, int wrow, int lane,
                                        const uint32_t (&qa)[D / 16][2], float (&sacc)[2][4]) {
    using Ops = TypeOps<T>;
    const int gid = lane >> 2, tig = lane & 3;
#pragma unroll
    for (int j = 0; j < 2; j++) sacc[j][0] = sacc[j][1] = sacc[j][2] = sacc[j][3] = 0.f;
    if (F8) { /* lane reads bytes tig*D/4 .. +D/4 of slots gid and gid + 8 */
        constexpr int NCH = D / 64;
        uint4 k0[NCH], k1[NCH];
#pragma unroll
        for (int i = 0; i < NCH; i++) {
            k0[i] = *reinterpret_cast<const uint4 *>(st + swz8<D>(wrow + gid, tig * NCH + i));
            k1[i] = *reinterpret_cast<const uint4 *>(st + swz8<D>(wrow + gid + 8, tig * NCH + i));
        }
#pragma unroll
        for (int kc = 0; kc < D / 16; kc++) {
            const uint32_t w0 = word_of(k0, kc), w1 = word_of(k1, kc);
            TypeOps<__half>::mma(sacc[0], qa[kc][0], 0u, qa[kc][1], 0u, e4m3x2_to_f16x2<0>(w0),
                                 e4m3x2_to_f16x2<1>(w0));
            TypeOps<__half>::mma(sacc[1], qa[kc][0], 0u, qa[kc][1], 0u, e4m3x2_to_f16x2<0>(w1),
                                 e4m3x2_to_f16x2<1>(w1));
        }
    } else {
        const int lr = (lane & 7) + ((lane >> 4) << 3);
        const int lc = (lane >> 3) & 1;
#pragma unroll
        for (int kc = 0; kc < D / 16; kc++) {
            uint32_t b[4];
            ldsm_x4(b, ks + swz<D>(wrow + lr, 2 * kc + lc));
            Ops::mma(sacc[0], qa[kc][0], 0u, qa[kc][1], 0u, b[0], b[1]);
            Ops::mma(sacc[1], qa[kc][0], 0u, qa[kc][1], 0u, b[2], b[3]);
        }
    }
}

/* FP8: the K and V scales of this lane's 4 slots, from the stage st. */
template <int D>
__device__ __forceinline__ void tile_scales(const unsigned char *st, int wrow, int tig, float (&ksc)[4],
                                            float (&vsc)[4]) {
    using SM = Smem<D, true>;
    const float *ksm = reinterpret_cast<const float *>(st + 2 * SM::KV_BYTES + TILE * 4) + wrow + 2 * tig;
    const float *vsm = ksm + TILE;
    const float2 ka = *reinterpret_cast<const float2 *>(ksm), kb2 = *reinterpret_cast<const float2 *>(ksm + 8);
    const float2 va = *reinterpret_cast<const float2 *>(vsm), vb2 = *reinterpret_cast<const float2 *>(vsm + 8);
    ksc[0] = ka.x; ksc[1] = ka.y; ksc[2] = kb2.x; ksc[3] = kb2.y;
    vsc[0] = va.x; vsc[1] = va.y; vsc[2] = vb2.x; vsc[3] = vb2.y;
}

/* One tile's step of the online softmax (row = head gid; lanes of a row: the
 * 4 tig): the lane's 4 probabilities pr (unnormalised, against the running
 * max), the running (m, l) and O rescaled. Returns the max pr is against. */
template <int D>
__device__ __forceinline__ float softmax_step(const float (&sacc)[2][4], const bool (&val)[4], const float (&ksc)[4],
                                              float slog2, bool row_ok, float &m_run, float &l_run,
                                              float (&o)[D / 8][4], float (&pr)[4]) {
    float sv[4] = {sacc[0][0], sacc[0][1], sacc[1][0], sacc[1][1]};
#pragma unroll
    for (int j = 0; j < 4; j++) sv[j] = (val[j] && row_ok) ? sv[j] * ksc[j] * slog2 : -INFINITY;
    float mx = fmaxf(fmaxf(sv[0], sv[1]), fmaxf(sv[2], sv[3]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m_run, mx);
    const float m_use = m_new == -INFINITY ? 0.f : m_new;
    const float alpha = row_ok ? ex2(m_run - m_use) : 1.f;
#pragma unroll
    for (int j = 0; j < 4; j++) pr[j] = ex2(sv[j] - m_use);
    l_run = l_run * alpha + ((pr[0] + pr[1]) + (pr[2] + pr[3]));
    m_run = m_new;
    if (__any_sync(0xffffffffu, alpha != 1.f)) {
#pragma unroll
        for (int i = 0; i < D / 8; i++) {
            o[i][0] *= alpha; o[i][1] *= alpha; o[i][2] *= alpha; o[i][3] *= alpha;
        }
    }
    return m_use;
}

/* O += P V for the tile's 16 slots (P as the A fragment: rows gid = hi part,
 * rows gid+8 = lo part; FP8: V's codes widened to bf16, the V scale folded
 * into P), with LongFlow's and VATP's |v|_1 partial sums in nacc (not with
 * use_vn: the stored norms are read later). */
template <typename T, int D, int KIND, bool F8>
__device__ __forceinline__ void pv_tile(const unsigned char *st, uint32_t vs, int wrow, int lane, bool all_valid,
                                        bool use_vn, const bool (&val)[4], const float (&pr)[4],
                                        const float (&vsc)[4], float (&o)[D / 8][4], float (&nacc)[4]) {
    using Ops = TypeOps<T>;
    using SM = Smem<D, F8>;
    const int gid = lane >> 2, tig = lane & 3;
    /* P as an A fragment: rows gid = hi part, rows gid+8 = lo part */
    uint32_t a0, a1, a2, a3;
    if (F8) { /* P times the V scale of each slot (0 for invalid slots: their scale may be anything) */
        float pv[4];
#pragma unroll
        for (int j = 0; j < 4; j++) pv[j] = val[j] ? pr[j] * vsc[j] : 0.f;
        Ops::split2(pv[0], pv[1], a0, a1);
        Ops::split2(pv[2], pv[3], a2, a3);
    } else {
        Ops::split2(pr[0], pr[1], a0, a1);
        Ops::split2(pr[2], pr[3], a2, a3);
    }

    const uint32_t m01 = (val[0] ? 0x0000ffffu : 0u) | (val[1] ? 0xffff0000u : 0u);
    const uint32_t m23 = (val[2] ? 0x0000ffffu : 0u) | (val[3] ? 0xffff0000u : 0u);
    if (F8) { /* lane reads bytes gid*D/8 .. +D/8 of slots 2tig, 2tig+1, 2tig+8, 2tig+9 */
        constexpr int NW = D / 32; /* words per lane and slot */
        const unsigned char *vt = st + SM::KV_BYTES;
        uint32_t w[4][NW];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int r = wrow + 2 * tig + (j & 1) + (j >> 1) * 8;
            if (NW == 4) {
                const uint4 x = *reinterpret_cast<const uint4 *>(vt + swz8<D>(r, gid));
                w[j][0] = x.x; w[j][1] = x.y; w[j][2 % NW] = x.z; w[j][3 % NW] = x.w;
            } else {
                const uint2 x = *reinterpret_cast<const uint2 *>(vt + swz8<D>(r, gid >> 1) + (gid & 1) * 8);
                w[j][0] = x.x; w[j][1 % NW] = x.y;
            }
        }
#pragma unroll
        for (int nt = 0; nt < (D / 8); nt++) {
            uint32_t b0, b1;
            switch (nt & 3) {
            case 0: b0 = e4m3_pair<0>(w[0][nt / 4], w[1][nt / 4]); b1 = e4m3_pair<0>(w[2][nt / 4], w[3][nt / 4]); break;
            case 1: b0 = e4m3_pair<1>(w[0][nt / 4], w[1][nt / 4]); b1 = e4m3_pair<1>(w[2][nt / 4], w[3][nt / 4]); break;
            case 2: b0 = e4m3_pair<2>(w[0][nt / 4], w[1][nt / 4]); b1 = e4m3_pair<2>(w[2][nt / 4], w[3][nt / 4]); break;
            default: b0 = e4m3_pair<3>(w[0][nt / 4], w[1][nt / 4]); b1 = e4m3_pair<3>(w[2][nt / 4], w[3][nt / 4]);
            }
            if ((KIND == K_LF || KIND == K_VATP) && !use_vn) {
                const float2 x0 = Ops::abs2(b0), x1 = Ops::abs2(b1);
                nacc[0] += x0.x;
                nacc[1] += x0.y;
                nacc[2] += x1.x;
                nacc[3] += x1.y;
            }
            Ops::mma(o[nt], a0, a1, a2, a3, b0, b1);
        }
    } else {
        const int lr = (lane & 7) + (((lane >> 3) & 1) << 3);
        const int lc = lane >> 4;
#pragma unroll
        for (int tp = 0; tp < (D / 16); tp++) {
            uint32_t b[4];
            ldsm_x4_t(b, vs + swz<D>(wrow + lr, 2 * tp + lc));
            if (!all_valid) {
                b[0] &= m01; b[1] &= m23; b[2] &= m01; b[3] &= m23;
            }
            if (KIND == K_LF || KIND == K_VATP) {
                const float2 x0 = Ops::abs2(b[0]), x1 = Ops::abs2(b[1]);
                const float2 x2 = Ops::abs2(b[2]), x3 = Ops::abs2(b[3]);
                nacc[0] += x0.x + x2.x;
                nacc[1] += x0.y + x2.y;
                nacc[2] += x1.x + x3.x;
                nacc[3] += x1.y + x3.y;
            }
            Ops::mma(o[2 * tp], a0, a1, a2, a3, b[0], b[1]);
            Ops::mma(o[2 * tp + 1], a0, a1, a2, a3, b[2], b[3]);
        }
    }
}

/* The tile's per-slot terms for the score: E = p (attention only) or
 * p * |v|_1 (LongFlow) per (head, slot), the reference max of each 16 slots,
 * and VATP's |v|_1 per slot. nacc: this lane's |v|_1 partial sums (or, with
 * use_vn, replaced by the stored norms). */
template <int D, int KIND, bool F8>
__device__ __forceinline__ void write_terms(const unsigned char *st, int wrow, int slot0, int gid, int tig,
                                            bool row_ok, const bool (&val)[4], const float (&pr)[4],
                                            const float (&vsc)[4], float m_use, bool use_vn, float (&nacc)[4],
                                            const EDest &ed, float *nbp) {
    using SM = Smem<D, F8>;
    if (use_vn) { /* the rows' stored |v|_1 */
        const float *vnm = reinterpret_cast<const float *>(st + 2 * SM::KV_BYTES + TILE * 12) + wrow + 2 * tig;
        const float2 na = *reinterpret_cast<const float2 *>(vnm), nb2 = *reinterpret_cast<const float2 *>(vnm + 8);
        nacc[0] = na.x; nacc[1] = na.y; nacc[2] = nb2.x; nacc[3] = nb2.y;
    } else if (KIND == K_LF || KIND == K_VATP) {
#pragma unroll
        for (int j = 0; j < 4; j++) {
            nacc[j] += __shfl_xor_sync(0xffffffffu, nacc[j], 4);
            nacc[j] += __shfl_xor_sync(0xffffffffu, nacc[j], 8);
            nacc[j] += __shfl_xor_sync(0xffffffffu, nacc[j], 16);
            if (F8) nacc[j] *= vsc[j];
        }
    }
    const int es = slot0 - ed.base + 2 * tig; /* E index of slot 2tig */
    if (row_ok) {
        float e[4];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            float x = pr[j];
            if (KIND == K_LF) x *= nacc[j];
            e[j] = val[j] ? x : 0.f;
        }
        float *ep = ed.E + (long)gid * ed.stride + es;
        *reinterpret_cast<float2 *>(ep) = make_float2(e[0], e[1]);
        *reinterpret_cast<float2 *>(ep + 8) = make_float2(e[2], e[3]);
        if (tig == 0) ed.mref[(long)((slot0 - ed.base) / 16) * MAXG + gid] = m_use;
    }
    if (KIND == K_VATP && gid == 0) {
        float *np = nbp + slot0 + 2 * tig;
        *reinterpret_cast<float2 *>(np) = make_float2(val[0] ? nacc[0] : 0.f, val[1] ? nacc[1] : 0.f);
        *reinterpret_cast<float2 *>(np + 8) = make_float2(val[2] ? nacc[2] : 0.f, val[3] ? nacc[3] : 0.f);
    }
}

/* The block's small shared scratch and its place, for the parts after the loop. */
struct BlockScratch {
    float *wm, *wl, *mfin, *invl; /* [WARPS][MAXG] x2, [MAXG] x2 */
    int *flag;
    int tid, warp, gid, tig, G;
};

/* Merge the 4 warps' running (m, l) and O: obuf [WARPS][G][D] holds each
 * warp's O rescaled to the block's max, mfin/invl the block's m and l (l, not
 * yet inverted). Ends with the block synchronised (the pipeline buffers are
 * free from the first barrier on). */
template <int D, bool F8>
__device__ __forceinline__ void merge_warps(const BlockScratch &b, const float (&o)[D / 8][4], float m_run,
                                            float l_run, float *obuf) {
    constexpr int NNT = D / 8;
    l_run += __shfl_xor_sync(0xffffffffu, l_run, 1);
    l_run += __shfl_xor_sync(0xffffffffu, l_run, 2);
    if (b.tig == 0) {
        b.wm[b.warp * MAXG + b.gid] = m_run;
        b.wl[b.warp * MAXG + b.gid] = l_run;
    }
    __syncthreads();
    float mb = -INFINITY;
    for (int w = 0; w < WARPS; w++) mb = fmaxf(mb, b.wm[w * MAXG + b.gid]);
    const float sc = m_run == -INFINITY ? 0.f : ex2(m_run - mb);
    if (b.gid < b.G) {
#pragma unroll
        for (int nt = 0; nt < NNT; nt++) {
            /* columns 2tig, 2tig+1 of n-tile nt (F8: dims 2tig*NNT + nt and + NNT) */
            const int d0 = F8 ? 2 * b.tig * NNT + nt : nt * 8 + 2 * b.tig, d1 = F8 ? d0 + NNT : d0 + 1;
            float *ob = obuf + ((long)b.warp * b.G + b.gid) * D;
            ob[d0] = (o[nt][0] + o[nt][2]) * sc;
            ob[d1] = (o[nt][1] + o[nt][3]) * sc;
        }
    }
    if (b.warp == 0 && b.tig == 0 && b.gid < b.G) {
        float lb = 0.f;
        for (int w = 0; w < WARPS; w++) {
            const float mw = b.wm[w * MAXG + b.gid];
            if (mw != -INFINITY) lb += b.wl[w * MAXG + b.gid] * ex2(mw - mb);
        }
        b.mfin[b.gid] = mb;
        b.invl[b.gid] = lb; /* l for now; inverted later */
    }
    __syncthreads();
}

/* One slot block covers the pair (n_split == 1): the output rows, then (unless
 * deferred to combine_kernel or no score) the pair's g. Returns whether the
 * block goes on to the sequence's finish. */
template <typename T, int D, int KIND>
__device__ __forceinline__ bool finish_whole(const Params &p, const BlockScratch &b, const float *obuf, long out_row,
                                             int pair, const EDest &ed, int lo, int hi, float *stage,
                                             int stage_bytes) {
    using Ops = TypeOps<T>;
    const int G = b.G, tid = b.tid;
    for (int idx = tid; idx < G * D; idx += THREADS) {
        float acc = 0.f;
#pragma unroll
        for (int w = 0; w < WARPS; w++) acc += obuf[w * G * D + idx];
        const float l = b.invl[idx / D];
        const float v = l > 0.f ? acc / l : 0.f;
        if (p.out_f32) static_cast<float *>(p.out)[out_row * D + idx] = v;
        else Ops::store(p.out, out_row * D + idx, v);
    }
    if (KIND != K_NONE && p.defer && tid < G) { /* (m, l) for combine_kernel */
        float *pm = p.part_ml + (long)pair * MAXG * 2;
        pm[2 * tid] = b.mfin[tid];
        pm[2 * tid + 1] = b.invl[tid];
    }
    __syncthreads();
    if (KIND == K_NONE || p.defer) return false;
    if (tid < MAXG) b.invl[tid] = (tid < G && b.invl[tid] > 0.f) ? 1.f / b.invl[tid] : 0.f;
    __syncthreads();
    /* smem E is range-relative: shift g_out by lo so that indices agree */
    compute_g(ed.E, ed.stride, ed.mref, !ed.in_smem, ed.in_smem ? 0 : lo, ed.in_smem ? hi - lo : hi, G, b.mfin,
              b.invl, p.g + (long)pair * p.cap_pad + (ed.in_smem ? lo : 0), !ed.in_smem && p.discard, stage,
              stage_bytes);
    return true;
}

/* Several slot blocks per pair: this block's partial O and (m, l); the last
 * block of the pair to finish merges them all into the output rows and g.
 * Returns whether this block goes on to the sequence's finish. */
template <typename T, int D, int KIND>
__device__ __forceinline__ bool finish_split(const Params &p, const BlockScratch &b, const float *obuf, float *wtab,
                                             long out_row, int pair, int split, const EDest &ed, float *stage,
                                             int stage_bytes) {
    using Ops = TypeOps<T>;
    const int G = b.G, tid = b.tid;
    float *po = p.part_o + ((long)pair * p.n_split + split) * G * D;
    for (int idx = tid; idx < G * D; idx += THREADS) {
        float acc = 0.f;
#pragma unroll
        for (int w = 0; w < WARPS; w++) acc += obuf[w * G * D + idx];
        po[idx] = acc;
    }
    if (tid < G) {
        float *pm = p.part_ml + ((long)pair * p.n_split + split) * MAXG * 2;
        pm[2 * tid] = b.mfin[tid];
        pm[2 * tid + 1] = b.invl[tid];
    }
    if (p.defer) return false; /* combine_kernel merges the splits */
    __threadfence();
    __syncthreads();
    if (tid == 0) {
        const unsigned prev = atomicAdd(&p.pair_cnt[pair], 1u);
        b.flag[0] = prev == (unsigned)(p.n_split - 1);
    }
    __syncthreads();
    if (!b.flag[0]) return false;
    __threadfence();
    /* last slot block of the pair: final normalisers, O, g */
    const int ns = p.n_split;
    float2 *ml = reinterpret_cast<float2 *>(wtab); /* [n_split][MAXG] (m, l) */
    float *facs = wtab + 2 * MAX_SPLIT * MAXG;     /* [n_split][MAXG] */
    {
        const float2 *pm = reinterpret_cast<const float2 *>(p.part_ml + (long)pair * ns * MAXG * 2);
        for (int x = tid; x < ns * MAXG; x += THREADS)
            ml[x] = (x % MAXG) < G ? __ldcg(pm + x) : make_float2(-INFINITY, 0.f);
    }
    __syncthreads();
    if (tid < G) {
        float m = -INFINITY;
        for (int s = 0; s < ns; s++) m = fmaxf(m, ml[s * MAXG + tid].x);
        float l = 0.f;
        for (int s = 0; s < ns; s++) {
            const float2 v = ml[s * MAXG + tid];
            const float f = v.x == -INFINITY ? 0.f : ex2(v.x - m);
            facs[s * MAXG + tid] = f;
            l += v.y * f;
        }
        b.mfin[tid] = m;
        b.invl[tid] = l > 0.f ? 1.f / l : 0.f;
    }
    if (tid == 0) p.pair_cnt[pair] = 0u;
    __syncthreads();
    const float *pob = p.part_o + (long)pair * ns * G * D;
    for (int i4 = tid * 4; i4 < G * D; i4 += THREADS * 4) {
        const int h = i4 / D;
        float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 16
        for (int s = 0; s < ns; s++) {
            const float4 x = __ldcg(reinterpret_cast<const float4 *>(pob + (long)s * G * D + i4));
            const float f = facs[s * MAXG + h];
            acc.x += x.x * f; acc.y += x.y * f; acc.z += x.z * f; acc.w += x.w * f;
        }
        const float il = b.invl[h];
        const float v[4] = {acc.x * il, acc.y * il, acc.z * il, acc.w * il};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            if (p.out_f32) static_cast<float *>(p.out)[out_row * D + i4 + j] = v[j];
            else Ops::store(p.out, out_row * D + i4 + j, v[j]);
        }
    }
    __syncthreads();
    if (KIND == K_NONE) return false;
    compute_g(ed.E, ed.stride, ed.mref, true, 0, p.cap_pad, G, b.mfin, b.invl, p.g + (long)pair * p.cap_pad,
              p.discard != 0, stage, stage_bytes);
    return true;
}

/* Whether this block is the sequence's last KV head to finish the step (then
 * it runs seq_finish). */
__device__ __forceinline__ bool last_head_of_seq(const Params &p, int seq, int tid, int *flag) {
    __threadfence();
    __syncthreads();
    if (tid == 0) {
        const unsigned prev = atomicAdd(&p.seq_cnt[seq], 1u);
        flag[1] = prev == (unsigned)(p.Hkv - 1);
        if (flag[1]) p.seq_cnt[seq] = 0u;
    }
    __syncthreads();
    if (!flag[1]) return false;
    __threadfence();
    return true;
}

/* F8: K and V are e4m3 codes with a scale per row (then T is bf16). The
 * head_dim order inside the tensor-core fragments is permuted so that each
 * lane reads contiguous bytes: for S, lane tig's k-elements of chunk kc are
 * dims tig*D/4 + 4kc .. +3 (q is loaded the same way); for O, n-tile nt's
 * column n is dim n*D/8 + nt. The K scale multiplies S per slot; the V scale
 * is folded into P (rows of P V are slots), and into |v|_1. */
template <typename T, int D, int KIND, bool F8>
__global__ void __launch_bounds__(THREADS) attn_kernel(const Params p) {
    /* First, before any global access (the workspace counters and the
     * last-block-combines protocol included): PDL wait, cuda_pdl.h. */
    lf_pdl_wait();
    using SM = Smem<D, F8>;
    constexpr int NKC = D / 16; /* k-chunks of 16 along head_dim */
    constexpr int NNT = D / 8;  /* n-tiles of 8 along head_dim */

    extern __shared__ __align__(16) unsigned char smem[];
    float *small = reinterpret_cast<float *>(smem + SM::PIPE_BYTES);
    float *wm = small;                /* [WARPS][MAXG] */
    float *wl = wm + WARPS * MAXG;    /* [WARPS][MAXG] */
    float *mfin = wl + WARPS * MAXG;  /* [MAXG] */
    float *invl = mfin + MAXG;        /* [MAXG] */
    float *red_v = invl + MAXG;       /* [2*WARPS] */
    int *red_i = reinterpret_cast<int *>(red_v + 2 * WARPS);
    int *flag = red_i + 2 * WARPS;
    float *e_sm = reinterpret_cast<float *>(smem + SM::PIPE_BYTES + small_bytes());

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int gid = lane >> 2, tig = lane & 3;
    const int split = blockIdx.x % p.n_split;
    const int pair = blockIdx.x / p.n_split;
    const int kvh = pair % p.Hkv, seq = pair / p.Hkv;
    const long pidx = p.seq_index ? p.seq_index[seq] : seq;
    const int G = p.G;
    const int lo = split * p.split_len;
    const int hi = min(lo + p.split_len, p.cap_pad);
    const int ntiles = (hi - lo) / TILE;

    const TileSrc src = tile_src<T, D, KIND, F8>(p, pidx, kvh);
    const bool use_vn = src.use_vn;

    const EDest ed = e_dest<KIND>(p, pair, G, lo, e_sm);
    float *nbp = (KIND == K_VATP) ? p.nb + (long)pair * p.cap_pad : nullptr;

    const uint64_t pol = stream_policy(p.l2_hints != 0);
    auto issue = [&](int t) {
        issue_tile<T, D, F8>(p, src, smem + (t % STAGES) * SM::STAGE_BYTES, lo + t * TILE, tid, pol);
    };

    uint32_t qa[NKC][2];
    load_q<T, D, F8>(p, seq, kvh, G, gid, tig, qa);
    float slog2 = p.scale_log2;
    if (F8) slog2 *= q_to_f16<D>(qa);

    float o[NNT][4];
#pragma unroll
    for (int i = 0; i < NNT; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m_run = -INFINITY, l_run = 0.f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < ntiles) issue(s);
        cp_commit();
    }

    for (int t = 0; t < ntiles; t++) {
        cp_wait<STAGES - 2>();
        __syncthreads();
        if (t + STAGES - 1 < ntiles) issue(t + STAGES - 1);
        cp_commit();

        const unsigned char *st = smem + (t % STAGES) * SM::STAGE_BYTES;
        const uint32_t ks = smem_u32(st), vs = ks + SM::KV_BYTES;
        const int *ps = reinterpret_cast<const int *>(st + 2 * SM::KV_BYTES);
        const int wrow = warp * 16;
        const int slot0 = lo + t * TILE + wrow; /* first slot of this warp */

        bool val[4];
        slot_validity(p, ps, wrow, slot0, tig, val);
        const bool all_valid = __all_sync(0xffffffffu, val[0] && val[1] && val[2] && val[3]);
        float sacc[2][4];
        qk_tile<T, D, F8>(st, ks, wrow, lane, qa, sacc);
        float ksc[4] = {1.f, 1.f, 1.f, 1.f}, vsc[4] = {1.f, 1.f, 1.f, 1.f};
        if (F8) tile_scales<D>(st, wrow, tig, ksc, vsc);

        const bool row_ok = gid < G;
        float pr[4];
        const float m_use = softmax_step<D>(sacc, val, ksc, slog2, row_ok, m_run, l_run, o, pr);

        float nacc[4] = {0.f, 0.f, 0.f, 0.f};
        pv_tile<T, D, KIND, F8>(st, vs, wrow, lane, all_valid, use_vn, val, pr, vsc, o, nacc);

        if (KIND != K_NONE)
            write_terms<D, KIND, F8>(st, wrow, slot0, gid, tig, row_ok, val, pr, vsc, m_use, use_vn, nacc, ed, nbp);
    }
    cp_wait<0>();

    const BlockScratch bs{wm, wl, mfin, invl, flag, tid, warp, gid, tig, G};
    float *obuf = reinterpret_cast<float *>(smem);                   /* [WARPS][G][D] */
    float *wtab = reinterpret_cast<float *>(smem + SM::OBUF_BYTES); /* split-combine scratch */
    merge_warps<D, F8>(bs, o, m_run, l_run, obuf);
    const long out_row = (long)seq * p.H + (long)kvh * G; /* first head of the group */
    float *stage = reinterpret_cast<float *>(smem);
    const bool more = p.n_split == 1
                          ? finish_whole<T, D, KIND>(p, bs, obuf, out_row, pair, ed, lo, hi, stage, SM::PIPE_BYTES)
                          : finish_split<T, D, KIND>(p, bs, obuf, wtab, out_row, pair, split, ed, stage,
                                                     SM::PIPE_BYTES);
    if (!more || !last_head_of_seq(p, seq, tid, flag)) return;
    seq_finish(p, seq, pidx, red_v, red_i, reinterpret_cast<float *>(smem), SM::PIPE_BYTES);
}


/* ---- second launch: the combine, spread over (slot chunk, sequence) -------
 * Used with defer: attn_kernel left, per (sequence, KV head, slot block), the
 * unnormalised O and (m, l), and per slot and query head E and per 16 slots
 * m_ref. Block (c, s): final (m, l) of every head of sequence s, its share of
 * the split merge of O, the scores of slot chunk c (all heads at once: the sum
 * over heads is done here, no g), the chunk's argmin; the last chunk of the
 * sequence to finish picks next_slot. Each step below is inlined into the
 * kernel (the code the kernel had inline, moved). */

/* 1. The final (m, l) of every head of the sequence into mf and il (= 1 / l):
 * 4 lanes per head, splits interleaved. pml: the sequence's part_ml. */
__device__ __forceinline__ void final_ml(const Params &p, const float2 *pml, float *mf, float *il) {
    const int tid = threadIdx.x;
    const int H = p.H, G = p.G, ns = p.n_split;
    for (int h0 = 0; h0 < H; h0 += THREADS / 4) {
        const int h = h0 + tid / 4, part = tid % 4;
        float m = -INFINITY, l = 0.f;
        if (h < H) {
            const float2 *pm = pml + (long)(h / G) * ns * MAXG + (h % G);
#pragma unroll 4
            for (int b = part; b < ns; b += 4) {
                const float2 v = __ldcg(pm + (long)b * MAXG);
                if (v.x != -INFINITY) {
                    const float mn = fmaxf(m, v.x);
                    l = l * ex2(m - mn) + v.y * ex2(v.x - mn);
                    m = mn;
                }
            }
        }
#pragma unroll
        for (int o = 1; o <= 2; o <<= 1) {
            const float m2 = __shfl_xor_sync(0xffffffffu, m, o), l2 = __shfl_xor_sync(0xffffffffu, l, o);
            const float mn = fmaxf(m, m2);
            if (mn != -INFINITY) {
                l = (m == -INFINITY ? 0.f : l * ex2(m - mn)) + (m2 == -INFINITY ? 0.f : l2 * ex2(m2 - mn));
                m = mn;
            }
        }
        if (h < H && part == 0) {
            mf[h] = m;
            il[h] = l > 0.f ? 1.f / l : 0.f;
        }
    }
}

/* 2. Block c's share of the merge of the split partial O of the sequence
 * into its output rows (n_split > 1; attn_kernel wrote O itself otherwise). */
template <typename T, int D>
__device__ __forceinline__ void merge_split_o(const Params &p, const float2 *pml, int c, int seq, const float *mf,
                                              const float *il) {
    using Ops = TypeOps<T>;
    const int tid = threadIdx.x;
    const int H = p.H, G = p.G, Hkv = p.Hkv, ns = p.n_split;
    const int total4 = H * D / 4;
    const int per = (total4 + p.n_chunks - 1) / p.n_chunks;
    const int q_end = min(total4, (c + 1) * per);
    for (int q = c * per + tid; q < q_end; q += THREADS) {
        const int h = q * 4 / D, d = q * 4 % D, kvh = h / G, g = h % G;
        const float *po = p.part_o + ((long)(seq * Hkv + kvh) * ns * G + g) * D + d;
        const float2 *pm = pml + (long)kvh * ns * MAXG + g;
        float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 8
        for (int b = 0; b < ns; b++) {
            const float4 x = __ldcg(reinterpret_cast<const float4 *>(po + (long)b * G * D));
            const float mb = __ldcg(pm + (long)b * MAXG).x;
            const float f = mb == -INFINITY ? 0.f : ex2(mb - mf[h]);
            acc.x += x.x * f; acc.y += x.y * f; acc.z += x.z * f; acc.w += x.w * f;
        }
        const float w = il[h];
        const float v[4] = {acc.x * w, acc.y * w, acc.z * w, acc.w * w};
        const long o = ((long)seq * H + h) * D + d;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            if (p.out_f32) static_cast<float *>(p.out)[o + j] = v[j];
            else Ops::store(p.out, o + j, v[j]);
        }
    }
}

/* Where the score step reads and writes for one sequence. */
struct SeqSlots {
    const int *pos;             /* the sequence's slot positions */
    float *acc, *score;         /* its accumulators (ACC modes) and scores, or NULL */
    const float *E, *mref, *nb; /* attn_kernel's E [Hkv*G][cap_pad], m_ref, |v|_1 [Hkv][cap_pad] (VATP) */
    int cur, rec;               /* current position, recent window */
    bool accum;                 /* the mode reads acc */
};

/* The sequence's SeqSlots. */
template <int KIND> __device__ __forceinline__ SeqSlots seq_slots(const Params &p, int seq) {
    const long pidx = p.seq_index ? p.seq_index[seq] : seq;
    const int Hkv = p.Hkv, HG = Hkv * p.G;
    SeqSlots s;
    s.pos = p.pos + pidx * p.slot_seq_stride;
    s.accum = lf_score_reads_acc(p.mode);
    s.acc = s.accum ? p.acc + pidx * p.slot_seq_stride : nullptr;
    s.score = p.score ? p.score + pidx * p.slot_seq_stride : nullptr;
    s.cur = p.cur_pos ? p.cur_pos[seq] : 0;
    s.rec = p.recent_e ? p.recent_e[pidx] : p.recent;
    s.E = p.gE + (long)seq * HG * p.cap_pad;
    s.mref = p.gmref + (long)seq * Hkv * (p.cap_pad / 16) * MAXG;
    s.nb = KIND == K_VATP ? p.nb + (long)seq * Hkv * p.cap_pad : nullptr;
    return s;
}

/* The staging of sub_len slots in shared memory (from `stage` on). */
struct SubStage {
    float *E; /* [Hkv*G][sub] */
    float *W; /* [Hkv][sub/16][MAXG]: m_ref, then weights */
    float *N; /* [Hkv][sub] (VATP) */
    int *P;   /* [sub] positions */
    float *A; /* [sub] accumulators */
};

/* Where SubStage's arrays lie in `stage`. */
template <int KIND> __device__ __forceinline__ SubStage sub_stage(const Params &p, float *stage) {
    const int sub = p.sub_len, Hkv = p.Hkv, HG = Hkv * p.G;
    SubStage st;
    st.E = stage;
    st.W = st.E + (long)HG * sub;
    st.N = st.W + (long)Hkv * (sub / 16) * MAXG;
    st.P = reinterpret_cast<int *>(st.N + (KIND == K_VATP ? (long)Hkv * sub : 0));
    st.A = reinterpret_cast<float *>(st.P + sub);
    return st;
}

/* Stage slots [base, base + n) (nv of them real) of E, m_ref, |v|_1,
 * positions and acc. Ends with the block synchronised. */
template <int KIND>
__device__ __forceinline__ void stage_sub(const Params &p, const SeqSlots &s, const SubStage &st, int base, int n,
                                          int nv) {
    const int sub = p.sub_len, Hkv = p.Hkv, HG = Hkv * p.G;
    stage_rows(st.E, sub, s.E + base, p.cap_pad, HG, n);
    stage_rows(st.W, (sub / 16) * MAXG, s.mref + (long)(base / 16) * MAXG, (long)(p.cap_pad / 16) * MAXG, Hkv,
               n / 16 * MAXG);
    if (KIND == K_VATP) stage_rows(st.N, sub, s.nb + base, p.cap_pad, Hkv, n);
    stage_words(st.P, s.pos + base, nv);
    if (s.accum) stage_words(st.A, s.acc + base, nv);
    cp_commit();
    cp_wait<0>();
    __syncthreads();
}

/* The staged m_ref -> weights exp2(min(m_ref - m_h, 0)) / l_h, in place.
 * Ends with the block synchronised. */
__device__ __forceinline__ void sub_weights(const Params &p, float *W, int n, const float *mf, const float *il) {
    const int H = p.H, G = p.G, sub = p.sub_len;
    for (int x = threadIdx.x; x < p.Hkv * (n / 16) * MAXG; x += THREADS) {
        const int g = x % MAXG, kvh = x / ((n / 16) * MAXG), r = x % ((n / 16) * MAXG);
        float *w = W + (long)kvh * (sub / 16) * MAXG + r;
        const int h = kvh * G + g;
        *w = (g < G && il[min(h, H - 1)] > 0.f) ? ex2(fminf(*w - mf[h], 0.f)) * il[h] : 0.f;
    }
    __syncthreads();
}

/* The scores of the staged slots [base, base + nv): weighted E summed over
 * every head of the sequence, then score_slot. */
template <int KIND>
__device__ __forceinline__ void score_sub(const Params &p, const SeqSlots &s, const SubStage &st, int base, int nv,
                                          float inv_h, Argmin2 &best, Argmin2 &fb) {
    const int G = p.G, Hkv = p.Hkv, sub = p.sub_len;
    for (int i = threadIdx.x; i < nv; i += THREADS) {
        float sv = 0.f, nsum = 0.f;
        for (int kvh = 0; kvh < Hkv; kvh++) {
            const float *w = st.W + ((long)kvh * (sub / 16) + i / 16) * MAXG;
            const float *e = st.E + (long)kvh * G * sub + i;
            for (int g = 0; g < G; g++) sv += e[(long)g * sub] * w[g];
            if (KIND == K_VATP) nsum += st.N[(long)kvh * sub + i];
        }
        score_slot(p, base + i, st.P[i], sv, nsum, s.accum ? st.A[i] : 0.f, inv_h, s.acc, s.score, s.cur, s.rec,
                   best, fb);
    }
}

/* 3. The scores of slot chunk c, staged sub_len slots at a time, into the
 * thread's argmins (best: unprotected slots, fb: all). */
template <int KIND>
__device__ __forceinline__ void score_chunk(const Params &p, const SeqSlots &s, float *stage, int c, const float *mf,
                                            const float *il, Argmin2 &best, Argmin2 &fb) {
    const int sub = p.sub_len;
    const SubStage st = sub_stage<KIND>(p, stage);
    const float inv_h = 1.f / (float)p.H;
    const int lo = c * p.chunk_len, hi = min(lo + p.chunk_len, p.cap_pad);
    for (int base = lo; base < hi; base += sub) {
        const int n = min(sub, hi - base), nv = min(n, p.cap - base);
        if (nv <= 0) break;
        stage_sub<KIND>(p, s, st, base, n, nv);
        sub_weights(p, st.W, n, mf, il);
        score_sub<KIND>(p, s, st, base, nv, inv_h, best, fb);
        __syncthreads();
    }
}

/* 4a. Thread 0: the chunk's two argmins (from the warps') into cpart; returns
 * whether this block is the sequence's last chunk to finish. */
__device__ __forceinline__ bool publish_chunk(const Params &p, int seq, int c, const float *red_v,
                                              const int *red_i) {
    Argmin2 best, fb;
    block_argmins(red_v, red_i, best, fb);
    float4 *cp = reinterpret_cast<float4 *>(p.cpart) + (long)seq * p.n_chunks + c;
    *cp = make_float4(best.v, __int_as_float(best.i), fb.v, __int_as_float(fb.i));
    __threadfence();
    const unsigned prev = atomicAdd(&p.seq_cnt[seq], 1u);
    return prev == (unsigned)(p.n_chunks - 1);
}

/* 4b. Warp 0 of the sequence's last chunk: the argmins over every chunk's,
 * next_slot (and its acc reset), the sequence counter reset. */
__device__ __forceinline__ void pick_next_slot(const Params &p, int seq, float *acc) {
    const int lane = threadIdx.x & 31;
    Argmin2 best, fb;
    for (int k = lane; k < p.n_chunks; k += 32) { /* chunks in slot order: ties keep the lower index */
        const float4 x = __ldcg(reinterpret_cast<const float4 *>(p.cpart) + (long)seq * p.n_chunks + k);
        argmin_take(best, x.x, __float_as_int(x.y));
        argmin_take(fb, x.z, __float_as_int(x.w));
    }
    for (int o = 16; o > 0; o >>= 1) {
        const float v2 = __shfl_xor_sync(0xffffffffu, best.v, o), f2 = __shfl_xor_sync(0xffffffffu, fb.v, o);
        const int i2 = __shfl_xor_sync(0xffffffffu, best.i, o), j2 = __shfl_xor_sync(0xffffffffu, fb.i, o);
        argmin_take(best, v2, i2);
        argmin_take(fb, f2, j2);
    }
    if (lane == 0) {
        const int nsl = victim_of(best.i, fb.i);
        p.next_slot[p.seq_index ? p.seq_index[seq] : seq] = nsl;
        if (lf_score_writes_acc(p.mode)) acc[nsl] = 0.f;
        p.seq_cnt[seq] = 0u;
    }
}

template <typename T, int D, int KIND>
__global__ void __launch_bounds__(THREADS) combine_kernel(const Params p) {
    lf_pdl_wait(); /* first, before any global access (cuda_pdl.h) */
    extern __shared__ __align__(16) unsigned char smem[];
    const int tid = threadIdx.x;
    const int c = blockIdx.x, seq = blockIdx.y;
    const int H = p.H;
    float *mf = reinterpret_cast<float *>(smem); /* [H] final max (log2 units) */
    float *il = mf + H;                          /* [H] 1 / final sum */
    float *red_v = il + H;                       /* [2 * WARPS] */
    int *red_i = reinterpret_cast<int *>(red_v + 2 * WARPS);
    int *flag = red_i + 2 * WARPS;
    float *stage = reinterpret_cast<float *>(smem + (((2 * H + 4 * WARPS + 4) * 4 + 15) / 16) * 16);
    const float2 *pml = reinterpret_cast<const float2 *>(p.part_ml) + (long)seq * p.Hkv * p.n_split * MAXG;

    final_ml(p, pml, mf, il); /* 1. */
    __syncthreads();
    if (p.n_split > 1) merge_split_o<T, D>(p, pml, c, seq, mf, il); /* 2. */
    if (KIND == K_NONE) return;

    const SeqSlots s = seq_slots<KIND>(p, seq); /* 3. */
    Argmin2 best, fb; /* over unprotected slots, and over all */
    score_chunk<KIND>(p, s, stage, c, mf, il, best, fb);

    /* 4. chunk argmin; the last chunk of the sequence picks next_slot (after
     * every thread's acc writes are visible: it may reset acc[next_slot]) */
    __threadfence();
    warp_argmins(best, fb, red_v, red_i);
    __syncthreads();
    if (tid == 0) flag[0] = publish_chunk(p, seq, c, red_v, red_i);
    __syncthreads();
    if (!flag[0]) return;
    __threadfence();
    if (tid < 32) pick_next_slot(p, seq, s.acc);
    if (p.discard) { /* the scratch of this sequence is consumed */
        __syncthreads();
        discard_range(s.E, (long)(p.Hkv * p.G) * p.cap_pad * 4);
        discard_range(s.mref, (long)p.Hkv * (p.cap_pad / 16) * MAXG * 4);
    }
}

/* ---- host side ------------------------------------------------------------ */
struct DevInfo {
    int sms = 0, smem_optin = 0;
    bool ok = false;
};

int dev_info(DevInfo *out, lf_error *err) {
    static DevInfo cache[16];
    int dev = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) return lf_fail(err, "cuda attention: cudaGetDevice: %s", cudaGetErrorString(e));
    if (dev < 0 || dev >= 16) return lf_fail(err, "cuda attention: device %d out of range", dev);
    if (!cache[dev].ok) {
        DevInfo d;
        e = cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev);
        if (e == cudaSuccess)
            e = cudaDeviceGetAttribute(&d.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
        if (e != cudaSuccess)
            return lf_fail(err, "cuda attention: device attributes: %s", cudaGetErrorString(e));
        d.ok = true;
        cache[dev] = d;
    }
    *out = cache[dev];
    return 0;
}

int kind_of(int mode) {
    switch (mode) {
    case LF_SCORE_NONE: return K_NONE;
    case LF_SCORE_ATT_VNORM: return K_LF;
    case LF_SCORE_ACC_VNORM: return K_VATP;
    default: return K_ATTN;
    }
}

using KernelFn = void (*)(Params);

template <typename T, int D, bool F8> KernelFn pick_kind(int kind, bool combine) {
    switch (kind) {
    case K_NONE: return combine ? combine_kernel<T, D, K_NONE> : attn_kernel<T, D, K_NONE, F8>;
    case K_ATTN: return combine ? combine_kernel<T, D, K_ATTN> : attn_kernel<T, D, K_ATTN, F8>;
    case K_LF: return combine ? combine_kernel<T, D, K_LF> : attn_kernel<T, D, K_LF, F8>;
    default: return combine ? combine_kernel<T, D, K_VATP> : attn_kernel<T, D, K_VATP, F8>;
    }
}

/* f8: the FP8-cache attention kernel (q and out bf16; combine_kernel reads no K/V) */
KernelFn pick(int dtype, int D, int kind, bool combine = false, bool f8 = false) {
    if (f8)
        return D == 64 ? pick_kind<__nv_bfloat16, 64, true>(kind, combine)
                       : pick_kind<__nv_bfloat16, 128, true>(kind, combine);
    if (dtype == LF_DTYPE_F16)
        return D == 64 ? pick_kind<__half, 64, false>(kind, combine) : pick_kind<__half, 128, false>(kind, combine);
    return D == 64 ? pick_kind<__nv_bfloat16, 64, false>(kind, combine)
                   : pick_kind<__nv_bfloat16, 128, false>(kind, combine);
}

int pipe_bytes(int D, bool f8) {
    if (f8) return D == 64 ? Smem<64, true>::PIPE_BYTES : Smem<128, true>::PIPE_BYTES;
    return D == 64 ? Smem<64>::PIPE_BYTES : Smem<128>::PIPE_BYTES;
}

struct Plan {
    int G, cap_pad, kind, n_split, split_len, e_smem, smem, blocks, bps;
    int two, n_chunks, chunk_len, sub_len, smem2; /* second launch (combine_kernel) */
};

constexpr int COMBINE_SMEM = 64 * 1024;

int combine_header_bytes(int H) { return ((2 * H + 4 * WARPS + 4) * 4 + 15) / 16 * 16; }

int round_up(int x, int m) { return (x + m - 1) / m * m; }

/* Raise the kernel's dynamic shared-memory cap to the device's opt-in limit
 * (once per kernel and device), then ask how many blocks fit on an SM. */
int occupancy(KernelFn fn, int smem, int optin, int *bps, lf_error *err) {
    static const void *done[64];
    static int n_done;
    int dev = 0;
    cudaGetDevice(&dev);
    const void *key = (const void *)((uintptr_t)fn + (uintptr_t)dev);
    bool seen = false;
    for (int i = 0; i < n_done; i++) seen = seen || done[i] == key;
    if (!seen) {
        cudaError_t e = cudaFuncSetAttribute((const void *)fn, cudaFuncAttributeMaxDynamicSharedMemorySize, optin);
        if (e != cudaSuccess)
            return lf_fail(err, "cuda attention: shared memory limit %d: %s", optin, cudaGetErrorString(e));
        if (n_done < 64) done[n_done++] = key;
    }
    int b = 0;
    cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, fn, THREADS, smem);
    if (e != cudaSuccess) return lf_fail(err, "cuda attention: occupancy: %s", cudaGetErrorString(e));
    if (b < 1) return lf_fail(err, "cuda attention: %d bytes of shared memory do not fit an SM", smem);
    *bps = b;
    return 0;
}

/* Which split length and where the per-slot partials live. */
int make_plan(const lf_cuda_attn_desc *d, Plan *pl, KernelFn *fn_out, lf_error *err) {
    if (lf_cuda_attn_check(d, err)) return -1;
    DevInfo di;
    if (dev_info(&di, err)) return -1;
    Plan P;
    P.G = d->n_heads / d->n_kv_heads;
    P.cap_pad = round_up(d->capacity, TILE);
    P.kind = kind_of(d->mode);
    KernelFn fn = pick(d->dtype, d->head_dim, P.kind, false, d->kv_fp8 != 0);
    const int base_smem = pipe_bytes(d->head_dim, d->kv_fp8 != 0) + small_bytes();
    const int pairs = d->n_seq * d->n_kv_heads;
    const int tiles = P.cap_pad / TILE;
    int bps = 1;
    if (occupancy(fn, base_smem, di.smem_optin, &bps, err)) return -1;
    const int slots = di.sms * bps;
    int ns = d->n_split;
    if (ns <= 0) {
        /* flash-decoding split: the smallest split count whose waves are at
         * least 85% as full as the best one's (blocks are uniform), with at
         * least 2 tiles per split (measured: 1-tile splits lose to 2-tile ones
         * at B=1, 17.5 vs 16.0 us; bench/NOTES.md v3) */
        int max_s = tiles / 2 < MAX_SPLIT ? tiles / 2 : MAX_SPLIT;
        if (max_s < 1) max_s = 1;
        double eff[MAX_SPLIT + 1], best = 0;
        for (int s = 1; s <= max_s; s++) {
            const int len = (tiles + s - 1) / s;
            const int real_s = (tiles + len - 1) / len;
            const double waves = (double)pairs * s / slots;
            eff[s] = real_s == s ? waves / ceil(waves) : 0.0;
            if (eff[s] > best) best = eff[s];
        }
        ns = 1;
        if (pairs < slots)
            for (int s = 1; s <= max_s; s++)
                if (eff[s] >= 0.85 * best) { ns = s; break; }
    }
    if (ns > tiles) ns = tiles;
    P.split_len = ((tiles + ns - 1) / ns) * TILE;
    P.n_split = (P.cap_pad + P.split_len - 1) / P.split_len;
    P.e_smem = 0;
    P.smem = base_smem;
    P.bps = bps;
    if (P.kind != K_NONE && P.n_split == 1 && d->e_smem >= 0) {
        const int need = base_smem + e_smem_bytes(P.G, P.split_len);
        int b2 = 0;
        if (need <= di.smem_optin && !occupancy(fn, need, di.smem_optin, &b2, nullptr) &&
            (d->e_smem > 0 || b2 >= bps)) { /* auto: only when no block per SM is lost */
            P.e_smem = 1;
            P.smem = need;
            P.bps = b2;
        }
    }
    /* one launch or two (attention + partials, then combine_kernel) */
    P.two = 0;
    P.n_chunks = P.chunk_len = P.sub_len = P.smem2 = 0;
    /* auto (measured, bench/NOTES.md v3): scored modes take two launches unless
     * the grid is >= 4 waves deep (there one launch + discard wins: B=256:
     * 531 vs 618 us); attention-only takes one launch */
    const bool want_two = d->launches == 2 || (d->launches == 0 && P.kind != K_NONE && pairs < 4 * slots);
    if (want_two && (P.kind != K_NONE || P.n_split > 1)) {
        const int HG = d->n_heads;
        const int per_slot = 4 * HG + 2 * d->n_kv_heads + (P.kind == K_VATP ? 4 * d->n_kv_heads : 0) + 8;
        const int sub = (COMBINE_SMEM - combine_header_bytes(d->n_heads)) / per_slot / 64 * 64;
        if (sub >= 64 || P.kind == K_NONE) {
            P.two = 1;
            P.e_smem = 0;
            P.smem = base_smem;
            P.bps = bps;
            int nc = (2 * di.sms + d->n_seq - 1) / d->n_seq;
            if (nc > tiles) nc = tiles;
            if (nc < 1) nc = 1;
            P.chunk_len = ((tiles + nc - 1) / nc) * TILE;
            P.n_chunks = (P.cap_pad + P.chunk_len - 1) / P.chunk_len;
            P.sub_len = sub < 64 ? 64 : sub;
            P.smem2 = COMBINE_SMEM;
            int b2 = 0;
            if (occupancy(pick(d->dtype, d->head_dim, P.kind, true), P.smem2, di.smem_optin, &b2, err)) return -1;
        }
    }
    P.blocks = pairs * P.n_split;
    *pl = P;
    if (fn_out) *fn_out = fn;
    return 0;
}

size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

struct WsLayout {
    size_t cnt, part_ml, part_o, gE, gmref, g, nb, cpart, total;
};

WsLayout ws_layout(const lf_cuda_attn_desc *d, const Plan &P) {
    WsLayout L;
    const size_t pairs = (size_t)d->n_seq * d->n_kv_heads;
    size_t off = 0;
    L.cnt = off;
    off = align256(off + (pairs + d->n_seq) * 4);
    L.part_ml = off;
    if (P.n_split > 1 || P.two) off = align256(off + pairs * P.n_split * MAXG * 2 * 4);
    L.part_o = off;
    if (P.n_split > 1) off = align256(off + pairs * P.n_split * P.G * d->head_dim * 4);
    L.gE = off;
    L.gmref = off;
    if (P.kind != K_NONE && !P.e_smem) {
        off = align256(off + pairs * P.G * P.cap_pad * 4);
        L.gmref = off;
        off = align256(off + pairs * (P.cap_pad / 16) * MAXG * 4);
    }
    L.g = off;
    if (P.kind != K_NONE && !P.two) off = align256(off + pairs * P.cap_pad * 4);
    L.nb = off;
    if (P.kind == K_VATP) off = align256(off + pairs * P.cap_pad * 4);
    L.cpart = off;
    if (P.two && P.kind != K_NONE) off = align256(off + (size_t)d->n_seq * P.n_chunks * 16);
    L.total = off;
    return L;
}

} // namespace

extern "C" int lf_cuda_attn_check(const lf_cuda_attn_desc *d, lf_error *err) {
    if (!d) return lf_fail(err, "cuda attention: no descriptor");
    if (d->n_seq < 1) return lf_fail(err, "cuda attention: n_seq %d must be >= 1", d->n_seq);
    if (d->head_dim != 64 && d->head_dim != 128)
        return lf_fail(err, "cuda attention: head_dim %d not supported (64 or 128)", d->head_dim);
    if (d->n_kv_heads < 1 || d->n_heads < 1 || d->n_heads % d->n_kv_heads)
        return lf_fail(err, "cuda attention: %d query heads not a multiple of %d KV heads", d->n_heads,
                       d->n_kv_heads);
    if (d->n_kv_heads > 64)
        return lf_fail(err, "cuda attention: %d KV heads, at most 64 supported", d->n_kv_heads);
    if (d->n_heads / d->n_kv_heads > MAXG)
        return lf_fail(err, "cuda attention: %d query heads per KV head, at most %d supported",
                       d->n_heads / d->n_kv_heads, MAXG);
    if (d->capacity < 1 || d->capacity > (1 << 24))
        return lf_fail(err, "cuda attention: capacity %d out of range", d->capacity);
    if (d->dtype != LF_DTYPE_F16 && d->dtype != LF_DTYPE_BF16)
        return lf_fail(err, "cuda attention: cache dtype must be f16 or bf16");
    if (d->kv_fp8 != 0 && (d->kv_fp8 != 1 || d->dtype != LF_DTYPE_BF16))
        return lf_fail(err, "cuda attention: kv_fp8 %d must be 0 or 1, and an FP8 cache needs bf16 q", d->kv_fp8);
    if (d->out_dtype != LF_DTYPE_F32 && d->out_dtype != d->dtype)
        return lf_fail(err, "cuda attention: output dtype must be f32 or the cache dtype");
    if (d->mode < 0 || d->mode >= LF_SCORE_MODE_COUNT)
        return lf_fail(err, "cuda attention: unknown score mode %d", d->mode);
    if (d->e_smem < -1 || d->e_smem > 1 || d->l2_hints < 0 || d->l2_hints > 3 || d->launches < 0 ||
        d->launches > 2)
        return lf_fail(err, "cuda attention: e_smem %d, l2_hints %d or launches %d out of range", d->e_smem,
                       d->l2_hints, d->launches);
    if (d->n_split < 0 || d->n_split > MAX_SPLIT)
        return lf_fail(err, "cuda attention: n_split %d out of range 0..%d", d->n_split, MAX_SPLIT);
    if ((long long)d->n_seq * d->n_kv_heads * MAX_SPLIT > 0x7fffffffLL)
        return lf_fail(err, "cuda attention: batch of %d sequences too large", d->n_seq);
    return 0;
}

extern "C" int lf_cuda_attn_get_plan(const lf_cuda_attn_desc *d, lf_cuda_attn_plan *plan, lf_error *err) {
    Plan P;
    if (make_plan(d, &P, nullptr, err)) return -1;
    plan->n_split = P.n_split;
    plan->split_len = P.split_len;
    plan->e_smem = P.e_smem;
    plan->smem_bytes = P.smem;
    plan->blocks = P.blocks;
    plan->blocks_per_sm = P.bps;
    plan->launches = P.two ? 2 : 1;
    plan->n_chunks = P.n_chunks;
    plan->chunk_len = P.chunk_len;
    return 0;
}

extern "C" int lf_cuda_attn_workspace_bytes(const lf_cuda_attn_desc *d, size_t *bytes, lf_error *err) {
    if (lf_cuda_attn_check(d, err)) return -1;
    size_t mx = 0;
    lf_cuda_attn_desc e = *d;
    for (int n = 1; n <= d->n_seq; n++) {
        e.n_seq = n;
        Plan P;
        if (make_plan(&e, &P, nullptr, err)) return -1;
        const size_t t = ws_layout(&e, P).total;
        if (t > mx) mx = t;
    }
    *bytes = mx;
    return 0;
}

extern "C" int lf_cuda_attn_workspace_init(void *ws, size_t bytes, void *stream, lf_error *err) {
    cudaError_t e = cudaMemsetAsync(ws, 0, bytes, (cudaStream_t)stream);
    if (e != cudaSuccess) return lf_fail(err, "cuda attention: workspace memset: %s", cudaGetErrorString(e));
    return 0;
}

extern "C" int64_t lf_cuda_attn_abi(void) {
    return (int64_t)sizeof(lf_cuda_attn_desc) * 65536 + (int64_t)sizeof(lf_cuda_attn_args);
}

extern "C" int lf_cuda_attn_decode(const lf_cuda_attn_desc *d, const lf_cuda_attn_args *a, lf_error *err) {
    Plan P;
    KernelFn fn = nullptr;
    if (make_plan(d, &P, &fn, err)) return -1;
    if (!a || !a->q || !a->k || !a->v || !a->pos || !a->out || !a->workspace)
        return lf_fail(err, "cuda attention: q, k, v, pos, out and workspace are required");
    if (d->mode != LF_SCORE_NONE && !a->next_slot)
        return lf_fail(err, "cuda attention: next_slot is required with a score mode");
    if (lf_score_reads_acc(d->mode) && !a->acc)
        return lf_fail(err, "cuda attention: score mode %d needs an acc array", d->mode);
    const int kvh_slots = a->kvh_slots > 0 ? a->kvh_slots : d->capacity;
    if (kvh_slots < d->capacity)
        return lf_fail(err, "cuda attention: kvh_slots %d smaller than capacity %d", kvh_slots, d->capacity);
    const long long kv_min = (long long)d->n_kv_heads * kvh_slots * d->head_dim;
    if (a->kv_seq_stride < kv_min && d->n_seq > 1)
        return lf_fail(err, "cuda attention: kv_seq_stride %lld smaller than one entry (%lld)",
                       (long long)a->kv_seq_stride, kv_min);
    if (a->slot_seq_stride < d->capacity && d->n_seq > 1)
        return lf_fail(err, "cuda attention: slot_seq_stride %lld smaller than capacity %d",
                       (long long)a->slot_seq_stride, d->capacity);
    const int elem = d->kv_fp8 ? 1 : 2;
    if (((uintptr_t)a->k | (uintptr_t)a->v) % 16 || (a->kv_seq_stride * elem) % 16 || ((uintptr_t)a->q) % 4)
        return lf_fail(err, "cuda attention: k and v must be 16-byte aligned (kv_seq_stride a multiple of %d)",
                       16 / elem);
    if (d->kv_fp8 && (!a->k_scale || !a->v_scale || a->kv_seq_stride % d->head_dim))
        return lf_fail(err, "cuda attention: an FP8 cache needs k_scale and v_scale, and kv_seq_stride a multiple "
                            "of head_dim");
    const WsLayout L = ws_layout(d, P);
    if (a->workspace_bytes < L.total)
        return lf_fail(err, "cuda attention: workspace of %zu bytes, %zu needed", a->workspace_bytes, L.total);

    Params p;
    p.q = a->q; p.k = a->k; p.v = a->v;
    p.kv_seq_stride = a->kv_seq_stride;
    p.pos = a->pos;
    p.slot_seq_stride = a->slot_seq_stride;
    p.seq_index = a->seq_index;
    p.out = a->out; p.score = a->score; p.acc = a->acc;
    p.next_slot = a->next_slot;
    p.cur_pos = a->cur_pos;
    p.sinks = a->sinks; p.recent = a->recent; p.recent_e = a->recent_by_entry;
    p.B = d->n_seq; p.H = d->n_heads; p.Hkv = d->n_kv_heads; p.G = P.G;
    p.cap = d->capacity; p.cap_pad = P.cap_pad;
    p.kvh_slots = kvh_slots;
    p.n_split = P.n_split; p.split_len = P.split_len;
    const float scale = a->scale > 0.f ? a->scale : 1.f / sqrtf((float)d->head_dim);
    p.scale_log2 = scale * 1.4426950408889634f;
    p.inv_hd = 1.f / ((float)d->n_heads * (float)d->head_dim);
    p.inv_kvd = 1.f / ((float)d->n_kv_heads * (float)d->head_dim);
    p.mode = d->mode;
    p.out_f32 = d->out_dtype == LF_DTYPE_F32;
    p.e_smem = P.e_smem;
    /* l2_hints: 0 = default, 1 = evict_first + discard, 2 = evict_first only, 3 = none */
    const int hints = d->l2_hints != 0 ? d->l2_hints : P.two ? 2 : 1; /* measured defaults (NOTES.md v3) */
    p.l2_hints = hints != 3;
    p.discard = hints == 1;
    p.defer = P.two;
    p.n_chunks = P.n_chunks;
    p.chunk_len = P.chunk_len;
    p.sub_len = P.sub_len;
    unsigned char *ws = static_cast<unsigned char *>(a->workspace);
    p.pair_cnt = reinterpret_cast<unsigned *>(ws + L.cnt);
    p.seq_cnt = p.pair_cnt + (size_t)d->n_seq * d->n_kv_heads;
    p.part_ml = reinterpret_cast<float *>(ws + L.part_ml);
    p.part_o = reinterpret_cast<float *>(ws + L.part_o);
    p.gE = reinterpret_cast<float *>(ws + L.gE);
    p.gmref = reinterpret_cast<float *>(ws + L.gmref);
    p.g = reinterpret_cast<float *>(ws + L.g);
    p.nb = P.kind == K_VATP ? reinterpret_cast<float *>(ws + L.nb) : nullptr;
    p.cpart = reinterpret_cast<float *>(ws + L.cpart);
    p.kscale = a->k_scale;
    p.vscale = a->v_scale;
    p.vnorm = d->kv_fp8 ? a->v_norm : nullptr;
    p.sc_seq_stride = d->kv_fp8 ? a->kv_seq_stride / d->head_dim : 0;

    cudaError_t e = lf_launch(fn, dim3((unsigned)P.blocks), dim3(THREADS), (size_t)P.smem, (cudaStream_t)a->stream, p);
    if (e != cudaSuccess) return lf_fail(err, "cuda attention: launch: %s", cudaGetErrorString(e));
    if (P.two) {
        KernelFn fn2 = pick(d->dtype, d->head_dim, P.kind, true);
        e = lf_launch(fn2, dim3((unsigned)P.n_chunks, (unsigned)d->n_seq), dim3(THREADS), (size_t)P.smem2,
                      (cudaStream_t)a->stream, p);
        if (e != cudaSuccess) return lf_fail(err, "cuda attention: combine launch: %s", cudaGetErrorString(e));
    }
    return 0;
}
