/* The fused decode attention + LongFlow scoring kernel, timed three ways on
 * the same caches in the same run:
 *   unscored  lf_kv_attend(scores = false): attention only (the baseline)
 *   scored    lf_kv_attend(scores = true): the same kernel also leaving
 *             every slot's attention and |v|_1 for the score
 *   step      lf_kv_decode_layer with --policy longflow: store the new
 *             token, scored attention, the per-layer score reduction and the
 *             victim choice (everything LongFlow adds to a decode step)
 * against the bytes each call must read (K and V of every valid slot)
 * divided by this machine's read bandwidth, measured in the same run: in
 * every round a plain read pass streams exactly those bytes (the same
 * arrays, the same split over threads) and each mode's time is compared
 * with it; src/core/membw.h's probe is also reported, at the start and end.
 *
 *   bench_attention [--slots 2048,4096,8192] [--heads 16] [--kv-heads 8]
 *                   [--head-dim 128] [--batch 1] [--threads N] [--rounds 30]
 *                   [--working-set-mb 512] [--kv-dtype fp32|bf16|fp8]
 *
 * Each configuration cycles through enough layers that the K/V read per
 * round exceeds the last-level cache many times over (--working-set-mb),
 * and the read pass and the three modes alternate within each round so
 * that noise from other processes hits them alike; medians of the per-round
 * ratios and the best rounds are reported. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/membw.h"
#include "core/timer.h"
#include "kv/cache.h"
#include "kv/dtype.h"
#include "model/config.h"

/* The read roofline of the same bytes: stream every K and V row the kernel
 * reads (all layers, sequences and KV heads, split the same way over the
 * threads) and sum them. Timed in every round beside the kernel, so load
 * from other processes hits both alike. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
__attribute__((target("avx2"))) static float sum_avx2(const float *p, size_t n) {
    __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a = _mm256_add_ps(a, _mm256_loadu_ps(p + i));
        b = _mm256_add_ps(b, _mm256_loadu_ps(p + i + 8));
        c = _mm256_add_ps(c, _mm256_loadu_ps(p + i + 16));
        d = _mm256_add_ps(d, _mm256_loadu_ps(p + i + 24));
    }
    a = _mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d));
    float l[8];
    _mm256_storeu_ps(l, a);
    float s = l[0] + l[1] + l[2] + l[3] + l[4] + l[5] + l[6] + l[7];
    for (; i < n; i++) s += p[i];
    return s;
}
#define SUM sum_avx2
#else
static float sum_scalar(const float *p, size_t n) {
    float s = 0;
    for (size_t i = 0; i < n; i++) s += p[i];
    return s;
}
#define SUM sum_scalar
#endif

static double read_pass(lf_kv_cache *caches, int batch, int n_layers) {
    const int G = caches[0].n_kv_heads;
    const size_t per = (size_t)caches[0].capacity * caches[0].row_bytes / sizeof(float); /* the same bytes */
    float total = 0;
    double t0 = lf_now_ms();
    for (int l = 0; l < n_layers; l++) {
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : total)
        for (int sg = 0; sg < batch * G; sg++) {
            lf_kv_cache *c = &caches[sg / G];
            total += SUM((const float *)(const void *)lf_kv_k(c, l, sg % G), per) +
                     SUM((const float *)(const void *)lf_kv_v(c, l, sg % G), per);
        }
    }
    double t = lf_now_ms() - t0;
    if (total == 12345.0f) printf("#\n"); /* keep the sums alive */
    return t / n_layers;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static uint64_t rng = 42;
static float frand(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

static int parse_list(const char *s, int *out, int max) {
    int n = 0;
    while (*s && n < max) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v <= 0 || v > 1 << 24) return -1;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

/* The command line. */
typedef struct opts {
    int slots[16], n_slots;
    int H, G, hd, batch, threads, rounds, ws_mb;
    lf_kv_dtype dt;
} opts;

/* Reads the flags into *o: 0, or 2 on a bad flag (printed). */
static int parse_args(int argc, char **argv, opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!val) {
            fprintf(stderr, "bench_attention: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--slots")) {
            if ((o->n_slots = parse_list(val, o->slots, 16)) <= 0) {
                fprintf(stderr, "bench_attention: bad --slots '%s'\n", val);
                return 2;
            }
        } else if (!strcmp(a, "--heads")) o->H = atoi(val);
        else if (!strcmp(a, "--kv-heads")) o->G = atoi(val);
        else if (!strcmp(a, "--head-dim")) o->hd = atoi(val);
        else if (!strcmp(a, "--batch")) o->batch = atoi(val);
        else if (!strcmp(a, "--threads")) o->threads = atoi(val);
        else if (!strcmp(a, "--rounds")) o->rounds = atoi(val);
        else if (!strcmp(a, "--working-set-mb")) o->ws_mb = atoi(val);
        else if (!strcmp(a, "--kv-dtype")) {
            if (lf_kv_dtype_from_name(val, &o->dt)) {
                fprintf(stderr, "bench_attention: unknown --kv-dtype '%s' (fp32, bf16 or fp8)\n", val);
                return 2;
            }
        }
        else {
            fprintf(stderr, "bench_attention: unknown option %s\n", a);
            return 2;
        }
    }
    if (o->H <= 0 || o->G <= 0 || o->H % o->G || o->hd <= 0 || o->batch <= 0 || o->rounds <= 0 || o->ws_mb <= 0 ||
        o->threads < 0) {
        fprintf(stderr, "bench_attention: bad shape or counts\n");
        return 2;
    }
    return 0;
}

/* One configuration's caches (batch sequences of n_layers layers, every
 * slot valid) and the step's inputs and outputs. */
typedef struct bench_set {
    int n_layers;
    size_t per_layer; /* K+V bytes one call reads */
    lf_kv_cache *caches;
    lf_kv_cache **cp;
    float *q, *k, *v, *out;
    int *pos;
} bench_set;

/* Every slot of layer l of cache c valid, with random contents. */
static int fill_layer(lf_kv_cache *c, int l, int B, int G, int hd, lf_kv_dtype dt) {
    lf_kv_layer *L = &c->layers[l];
    for (int i = 0; i < B; i++) L->pos[i] = i;
    L->n_valid = L->hw = B;
    L->next_slot = 0;
    float *kr = malloc((size_t)hd * sizeof *kr), *vr = malloc((size_t)hd * sizeof *vr);
    if (!kr || !vr) {
        fprintf(stderr, "bench_attention: out of memory\n");
        free(kr);
        free(vr);
        return -1;
    }
    for (int g = 0; g < G; g++) {
        float *ks = lf_kv_kscale(c, l, g), *vs = lf_kv_vscale(c, l, g);
        for (int i = 0; i < B; i++) {
            for (int d = 0; d < hd; d++) {
                kr[d] = frand();
                vr[d] = frand();
            }
            size_t off = (size_t)i * c->row_bytes;
            lf_kv_row_store(dt, kr, hd, lf_kv_k(c, l, g) + off, ks ? ks + i : NULL);
            lf_kv_row_store(dt, vr, hd, lf_kv_v(c, l, g) + off, vs ? vs + i : NULL);
        }
    }
    free(kr);
    free(vr);
    return 0;
}

static void set_free(const opts *o, bench_set *s) {
    if (s->caches)
        for (int i = 0; i < o->batch; i++) lf_kv_cache_free(&s->caches[i]);
    free(s->caches);
    free(s->cp);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->out);
    free(s->pos);
}

/* The caches of B slots per layer, as many layers as the working set asks
 * for (first touched in order), and random q, k, v. 0 or -1 (printed). */
static int set_init(const opts *o, int B, bench_set *s) {
    const int H = o->H, G = o->G, hd = o->hd, batch = o->batch;
    memset(s, 0, sizeof *s);
    s->per_layer = 2 * (size_t)G * B * hd * lf_kv_dtype_elem(o->dt) * batch;
    s->n_layers = (int)(((size_t)o->ws_mb << 20) / s->per_layer) + 1;
    if (s->n_layers < 2) s->n_layers = 2;
    lf_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = s->n_layers;
    cfg.n_heads = H;
    cfg.n_kv_heads = G;
    cfg.head_dim = hd;
    lf_policy_config pc;
    lf_policy_config_default(&pc);
    pc.kind = LF_POLICY_LONGFLOW;
    pc.budget = B;
    pc.kv_dtype = o->dt;
    s->caches = calloc((size_t)batch, sizeof *s->caches);
    s->cp = calloc((size_t)batch, sizeof *s->cp);
    s->q = malloc((size_t)batch * H * hd * sizeof *s->q);
    s->k = malloc((size_t)batch * G * hd * sizeof *s->k);
    s->v = malloc((size_t)batch * G * hd * sizeof *s->v);
    s->out = malloc((size_t)batch * H * hd * sizeof *s->out);
    s->pos = malloc((size_t)batch * sizeof *s->pos);
    if (!s->caches || !s->cp || !s->q || !s->k || !s->v || !s->out || !s->pos) {
        fprintf(stderr, "bench_attention: out of memory\n");
        return -1;
    }
    lf_error err;
    for (int i = 0; i < batch; i++) {
        if (lf_kv_cache_init(&s->caches[i], &cfg, &pc, B, &err)) {
            fprintf(stderr, "bench_attention: %s\n", err.msg);
            return -1;
        }
        s->cp[i] = &s->caches[i];
        for (int l = 0; l < s->n_layers; l++)
            if (fill_layer(&s->caches[i], l, B, G, hd, o->dt)) return -1;
        s->caches[i].total_valid = (long)B * s->n_layers;
        s->pos[i] = B;
    }
    for (int i = 0; i < batch * H * hd; i++) s->q[i] = frand();
    for (int i = 0; i < batch * G * hd; i++) {
        s->k[i] = frand();
        s->v[i] = frand();
    }
    return 0;
}

/* The per-round times of the four modes (0 unscored, 1 scored, 2 step,
 * 3 read pass) in t[mode][round], and each kernel mode's fraction of the
 * read roofline in ratio[mode][round]. */
static void time_rounds(const opts *o, bench_set *s, double *t[4], double *ratio[3]) {
    const int batch = o->batch, n_layers = s->n_layers;
    /* warm-up round of each mode */
    for (int l = 0; l < n_layers; l++) {
        lf_kv_attend(s->cp, batch, l, s->q, s->out, false);
        lf_kv_attend(s->cp, batch, l, s->q, s->out, true);
    }
    for (int r = 0; r < o->rounds; r++) {
        for (int m = 0; m < 4; m++) {
            int mode = (m + r) % 4;
            if (mode == 3) {
                t[3][r] = read_pass(s->caches, batch, n_layers);
                continue;
            }
            double t0 = lf_now_ms();
            for (int l = 0; l < n_layers; l++) {
                if (mode == 2)
                    lf_kv_decode_layer(s->cp, batch, l, s->q, s->k, s->v, s->pos, s->out);
                else
                    lf_kv_attend(s->cp, batch, l, s->q, s->out, mode == 1);
            }
            t[mode][r] = (lf_now_ms() - t0) / n_layers;
        }
        for (int i = 0; i < batch; i++) s->pos[i]++;
        for (int m = 0; m < 3; m++) ratio[m][r] = t[3][r] / t[m][r]; /* fraction of the roofline */
    }
}

/* The median over the rounds of t[a] / t[b]. */
static double median_ratio(double *t[4], int a, int b, int rounds) {
    double *x = malloc((size_t)rounds * sizeof(double));
    for (int r = 0; r < rounds; r++) x[r] = t[a][r] / t[b][r];
    qsort(x, (size_t)rounds, sizeof(double), cmp_double);
    double m = x[rounds / 2];
    free(x);
    return m;
}

/* The row of one configuration: medians, median ratios and best rounds. */
static void print_row(int B, const bench_set *s, double *t[4], double *ratio[3], int rounds, double bwbest) {
    double med[4], best[4], rmed[3];
    double sc_un[2]; /* median of per-round scored/unscored, step/unscored */
    sc_un[0] = median_ratio(t, 1, 0, rounds);
    sc_un[1] = median_ratio(t, 2, 0, rounds);
    for (int m = 0; m < 4; m++) {
        qsort(t[m], (size_t)rounds, sizeof(double), cmp_double);
        med[m] = t[m][rounds / 2];
        best[m] = t[m][0];
    }
    for (int m = 0; m < 3; m++) {
        qsort(ratio[m], (size_t)rounds, sizeof(double), cmp_double);
        rmed[m] = ratio[m][rounds / 2];
    }
    size_t per_layer = s->per_layer;
    double mb = per_layer / 1e6;
    printf("%-6d %-7d %-8.1f %9.3fms %9.3fms %9.3fms %9.3fms %7.3f %7.3f %7.2f %6.0f%% %6.0f%% %6.0f%%\n", B,
           s->n_layers, mb, med[3], med[0], med[1], med[2], sc_un[0], sc_un[1], per_layer / (med[1] * 1e6),
           100 * rmed[0], 100 * rmed[1], 100 * rmed[2]);
    printf("#   best rounds: read %.3f ms (%.2f GB/s), unscored %.3f ms (%.2f GB/s), scored %.3f ms (%.2f GB/s), "
           "step %.3f ms (%.2f GB/s); scored GB/s over membw's best: %.0f%%\n",
           best[3], per_layer / (best[3] * 1e6), best[0], per_layer / (best[0] * 1e6), best[1],
           per_layer / (best[1] * 1e6), best[2], per_layer / (best[2] * 1e6),
           100.0 * per_layer / (best[1] * 1e6) / bwbest);
}

/* One configuration of B slots per layer, set up, timed and printed. */
static int run_config(const opts *o, int B, double bwbest) {
    bench_set s;
    if (set_init(o, B, &s)) {
        set_free(o, &s);
        return 1;
    }
    double *t[4], *ratio[3];
    for (int m = 0; m < 4; m++) t[m] = malloc((size_t)o->rounds * sizeof(double));
    for (int m = 0; m < 3; m++) ratio[m] = malloc((size_t)o->rounds * sizeof(double));
    time_rounds(o, &s, t, ratio);
    print_row(B, &s, t, ratio, o->rounds, bwbest);
    for (int m = 0; m < 4; m++) free(t[m]);
    for (int m = 0; m < 3; m++) free(ratio[m]);
    set_free(o, &s);
    return 0;
}

static void print_header(const opts *o, int nt, const lf_membw_result *bw0) {
    printf("# fused attention + LongFlow scoring, %d query heads / %d KV heads / head_dim %d, batch %d, "
           "%d threads, %s cache\n",
           o->H, o->G, o->hd, o->batch, nt, lf_kv_dtype_name(o->dt));
    printf("# read bandwidth (membw, %d MiB, %d threads): best %.2f GB/s, median %.2f GB/s\n", o->ws_mb, nt,
           bw0->gbps, bw0->gbps_median);
    printf("# per call (one layer), medians over rounds; sc/un and st/un are medians of the per-round ratios;\n"
           "# %%read = read time / kernel time in the same round (the fraction of the read roofline reached)\n");
    printf("%-6s %-7s %-8s %11s %11s %11s %11s %7s %7s %7s %7s %7s %7s\n", "slots", "layers", "MB/call", "read",
           "unscored", "scored", "step", "sc/un", "st/un", "GB/s", "%read", "%read", "%read");
    printf("%-6s %-7s %-8s %11s %11s %11s %11s %7s %7s %7s %7s %7s %7s\n", "", "", "", "", "", "", "", "", "",
           "scored", "unsc", "scored", "step");
}

int main(int argc, char **argv) {
    opts o = {.slots = {2048, 4096, 8192}, .n_slots = 3, .H = 16, .G = 8, .hd = 128, .batch = 1, .threads = 0,
              .rounds = 30, .ws_mb = 512, .dt = LF_KV_F32};
    if (parse_args(argc, argv, &o)) return 2;
    if (o.threads > 0) omp_set_num_threads(o.threads);
    int nt = omp_get_max_threads();

    lf_error err;
    lf_membw_result bw0, bw1;
    if (lf_membw_measure((size_t)o.ws_mb << 20, nt, 5, &bw0, &err)) {
        fprintf(stderr, "bench_attention: %s\n", err.msg);
        return 1;
    }
    print_header(&o, nt, &bw0);
    double bwbest = bw0.gbps;
    for (int si = 0; si < o.n_slots; si++)
        if (run_config(&o, o.slots[si], bwbest)) return 1;
    if (lf_membw_measure((size_t)o.ws_mb << 20, nt, 5, &bw1, &err) == 0) {
        printf("# read bandwidth again at the end: best %.2f GB/s, median %.2f GB/s\n", bw1.gbps,
               bw1.gbps_median);
        if (bw1.gbps > bwbest) printf("# (the %%bw column used the first measurement, %.2f GB/s)\n", bwbest);
    }
    return 0;
}
