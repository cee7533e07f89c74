/* R-KV on the slot cache, against a double-precision reference written here:
 * importance = softmax of each of the last 8 queries over the candidate keys
 * (every valid token but the 8 newest), averaged over the queries, max-pooled
 * (width 5) along position order, averaged over query heads; redundancy =
 * softmax over candidates of the mean cosine similarity of a key to the
 * other candidates' keys (the full n x n matrix here), averaged over KV
 * heads; score = 0.1 importance - 0.9 redundancy; keep the best budget-8
 * candidates and the 8 newest. Directly (lf_rkv_select) and through decode
 * steps that fill the 128-slot buffer and compress. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv/cache.h"
#include "kv/dtype.h"
#include "kv/policy.h"
#include "model/config.h"

#include "test_util.h"


/* A layer state as the reference sees it. */
typedef struct rstate {
    int cap, H, G, hd, B;
    const int32_t *pos;
    const float *K; /* [G][cap][hd] */
    const float *Q; /* [nq][H][hd] */
    int nq;
} rstate;

/* Reference scores of the candidates; fills cand (slots, position order) and
 * returns their number; win gets the window slots. */
static int ref_scores(const rstate *s, int *cand, double *score, int *win, int *nwin) {
    const int cap = s->cap, H = s->H, G = s->G, hd = s->hd, rep = H / G;
    int *order = malloc((size_t)cap * sizeof *order), n = 0;
    for (int i = 0; i < cap; i++)
        if (s->pos[i] >= 0) order[n++] = i;
    for (int a = 0; a < n; a++)
        for (int b = a + 1; b < n; b++)
            if (s->pos[order[b]] < s->pos[order[a]]) {
                int t = order[a];
                order[a] = order[b];
                order[b] = t;
            }
    int W = n < 8 ? n : 8, nc = n - W;
    for (int j = 0; j < nc; j++) cand[j] = order[j];
    for (int j = 0; j < W; j++) win[j] = order[nc + j];
    *nwin = W;
    double *I = calloc((size_t)nc + 1, sizeof *I), *a = malloc(((size_t)nc + 1) * sizeof *a);
    double *row = malloc(((size_t)nc + 1) * sizeof *row);
    for (int h = 0; h < H; h++) {
        const float *K = s->K + (size_t)(h / rep) * cap * hd;
        for (int j = 0; j < nc; j++) a[j] = 0;
        for (int t = 0; t < s->nq; t++) {
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j < nc; j++) {
                double d = 0;
                for (int e = 0; e < hd; e++) d += (double)s->Q[((size_t)t * H + h) * hd + e] * K[(size_t)cand[j] * hd + e];
                row[j] = d / sqrt((double)hd);
                mx = fmax(mx, row[j]);
            }
            for (int j = 0; j < nc; j++) sum += (row[j] = exp(row[j] - mx));
            for (int j = 0; j < nc; j++) a[j] += row[j] / sum / s->nq;
        }
        for (int j = 0; j < nc; j++) {
            double m = -INFINITY;
            for (int d = -2; d <= 2; d++)
                if (j + d >= 0 && j + d < nc) m = fmax(m, a[j + d]);
            I[j] += m / H;
        }
    }
    double *R = calloc((size_t)nc + 1, sizeof *R);
    for (int g = 0; g < G; g++) {
        const float *K = s->K + (size_t)g * cap * hd;
        double *nrm = malloc(((size_t)nc + 1) * sizeof *nrm);
        for (int j = 0; j < nc; j++) {
            double q = 0;
            for (int e = 0; e < hd; e++) q += (double)K[(size_t)cand[j] * hd + e] * K[(size_t)cand[j] * hd + e];
            nrm[j] = sqrt(q) + 1e-8;
        }
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j < nc; j++) {
            double r = 0;
            for (int i = 0; i < nc; i++) {
                if (i == j) continue;
                double d = 0;
                for (int e = 0; e < hd; e++) d += (double)K[(size_t)cand[i] * hd + e] * K[(size_t)cand[j] * hd + e];
                r += d / (nrm[i] * nrm[j]);
            }
            row[j] = r / nc;
            mx = fmax(mx, row[j]);
        }
        for (int j = 0; j < nc; j++) sum += (row[j] = exp(row[j] - mx));
        for (int j = 0; j < nc; j++) R[j] += row[j] / sum / G;
        free(nrm);
    }
    for (int j = 0; j < nc; j++) score[j] = 0.1 * I[j] - 0.9 * R[j];
    free(order);
    free(I);
    free(a);
    free(row);
    free(R);
    return nc;
}

/* keep[nk] (ascending slots) must be the window plus a best set of
 * candidates. */
static void check_keep(const rstate *s, const int32_t *keep, int nk) {
    int *cand = malloc((size_t)s->cap * sizeof *cand), win[8], nwin;
    double *score = malloc((size_t)s->cap * sizeof *score);
    int nc = ref_scores(s, cand, score, win, &nwin);
    int want = s->B - nwin < nc ? s->B - nwin : nc;
    assert_int_equal(nk, want + nwin);
    for (int i = 1; i < nk; i++) assert_true(keep[i] > keep[i - 1]);
    char *in = calloc((size_t)s->cap, 1);
    for (int i = 0; i < nk; i++) in[keep[i]] = 1;
    for (int j = 0; j < nwin; j++) assert_true(in[win[j]]);
    double lo = INFINITY, hi = -INFINITY, mx = 0;
    for (int j = 0; j < nc; j++) {
        mx = fmax(mx, fabs(score[j]));
        if (in[cand[j]]) lo = fmin(lo, score[j]);
        else hi = fmax(hi, score[j]);
    }
    if (lo < hi - 1e-6 * mx) fail_msg("R-KV kept a token scoring %.10g over a dropped one scoring %.10g", lo, hi);
    free(cand);
    free(score);
    free(in);
}

static void test_select_random_states(void **state) {
    (void)state;
    rng = 41;
    const int cases[][5] = {/* H, G, hd, B, nq */ {4, 2, 16, 40, 8}, {8, 8, 32, 64, 8}, {6, 2, 24, 20, 5},
                            {4, 1, 16, 9, 8}};
    /* each case with each cache dtype: the reference scores the keys as the
     * cache holds them (rounded when stored, widened when read) */
    for (size_t ci = 0; ci < 3 * sizeof cases / sizeof cases[0]; ci++) {
        const lf_kv_dtype dt = (lf_kv_dtype)(ci % 3);
        const int *cs = cases[ci / 3];
        const int H = cs[0], G = cs[1], hd = cs[2], B = cs[3], nq = cs[4];
        lf_kv_cache c;
        lf_error err;
        assert_int_equal(layer_cache(&c, H, G, hd, LF_POLICY_RKV, B, dt, &err), 0);
        const int cap = c.capacity;
        assert_int_equal(cap, B + 128);
        lf_kv_layer *L = &c.layers[0];
        /* every slot valid, positions shuffled; some keys made near copies of
         * others so that redundancy matters */
        for (int i = 0; i < cap; i++) L->pos[i] = 3 * i + 1;
        for (int i = cap - 1; i > 0; i--) {
            int j = (int)(urand() * (i + 1));
            int32_t t = L->pos[i];
            L->pos[i] = L->pos[j];
            L->pos[j] = t;
        }
        L->n_valid = L->hw = cap;
        float *Kall = malloc((size_t)G * cap * hd * sizeof *Kall);
        for (int g = 0; g < G; g++) {
            float *K = Kall + (size_t)g * cap * hd;
            for (size_t i = 0; i < (size_t)cap * hd; i++) K[i] = frand(-1, 1);
            for (int r = 0; r < cap / 4; r++) {
                int a = (int)(urand() * cap), b = (int)(urand() * cap);
                for (int e = 0; e < hd; e++) K[(size_t)a * hd + e] = K[(size_t)b * hd + e] * 1.5f + frand(-0.05f, 0.05f);
            }
            float *ks = lf_kv_kscale(&c, 0, g);
            for (int i = 0; i < cap; i++) { /* store, then read back what the cache holds */
                float *row = K + (size_t)i * hd;
                lf_kv_row_store(dt, row, hd, lf_kv_k(&c, 0, g) + (size_t)i * c.row_bytes, ks ? ks + i : NULL);
                lf_kv_row_load(dt, lf_kv_k(&c, 0, g) + (size_t)i * c.row_bytes, ks ? ks[i] : 1.0f, hd, row);
            }
        }
        int *qcount;
        float *rq = lf_rkv_queries(&c, 0, &qcount);
        for (size_t i = 0; i < (size_t)8 * H * hd; i++) rq[i] = frand(-2, 2);
        *qcount = nq;
        float *work = malloc(lf_rkv_work_floats(cap, H, G, hd) * sizeof *work);
        int32_t *keep = malloc((size_t)cap * sizeof *keep);
        int nk = lf_rkv_select(&c, 0, keep, work);
        rstate s = {cap, H, G, hd, B, L->pos, Kall, rq, nq};
        check_keep(&s, keep, nk);
        assert_int_equal(nk, B);
        free(Kall);
        free(work);
        free(keep);
        lf_kv_cache_free(&c);
    }
}

/* Through decode: the buffer fills, the layer is compressed to the budget,
 * and again; the reference scores the state the test recorded itself (the
 * last 8 queries it fed, the keys it stored). */
static void test_decode_compressions(void **state) {
    (void)state;
    rng = 42;
    const int H = 4, G = 2, hd = 16, B = 48, n = 100;
    lf_kv_cache c;
    lf_error err;
    /* fp32: the test copies the stored keys as floats */
    assert_int_equal(layer_cache(&c, H, G, hd, LF_POLICY_RKV, B, LF_KV_F32, &err), 0);
    const int cap = c.capacity;
    float *q = malloc((size_t)n * H * hd * sizeof *q), *k = malloc((size_t)n * G * hd * sizeof *k);
    float *v = malloc((size_t)n * G * hd * sizeof *v);
    rand_qkv(q, k, v, (size_t)n * H * hd, (size_t)n * G * hd, 1);
    assert_int_equal(lf_kv_prefill_layer(&c, 0, q, k, v, n, &err), 0); /* SnapKV to B-1 */
    lf_kv_layer *L = &c.layers[0];
    assert_int_equal(L->n_valid, B - 1);
    /* the test's own copy of the state */
    int32_t *pos = malloc((size_t)cap * sizeof *pos);
    float *K = malloc((size_t)G * cap * hd * sizeof *K);
    float Q[8 * 4 * 16];
    int nq = 0;
    memcpy(pos, L->pos, (size_t)cap * sizeof *pos);
    memcpy(K, c.k, (size_t)G * cap * hd * sizeof *K);
    float dq[4 * 16], dk[2 * 16], dv[2 * 16], out[4 * 16];
    lf_kv_cache *cp = &c;
    int compressions = 0;
    for (int t = 0; t < 3 * 128 + 10; t++) {
        rand_qkv(dq, dk, dv, (size_t)H * hd, (size_t)G * hd, 2);
        int slot = L->next_slot, p = n + t;
        /* the next slot is the lowest empty one */
        for (int i = 0; i < slot; i++) assert_true(pos[i] >= 0);
        assert_true(pos[slot] < 0);
        pos[slot] = p;
        for (int g = 0; g < G; g++) memcpy(K + ((size_t)g * cap + slot) * hd, dk + g * hd, hd * sizeof(float));
        if (nq == 8) memmove(Q, Q + H * hd, (size_t)7 * H * hd * sizeof(float));
        else nq++;
        memcpy(Q + (size_t)(nq - 1) * H * hd, dq, (size_t)H * hd * sizeof(float));
        int valid = 0;
        for (int i = 0; i < cap; i++) valid += pos[i] >= 0;
        lf_kv_decode_layer(&cp, 1, 0, dq, dk, dv, &p, out);
        if (valid == cap) {
            /* compressed in this step */
            rstate s = {cap, H, G, hd, B, pos, K, Q, nq};
            int32_t keep[256];
            int nk = 0;
            for (int i = 0; i < cap; i++)
                if (L->pos[i] >= 0) {
                    assert_int_equal(L->pos[i], pos[i]);
                    keep[nk++] = i;
                }
            check_keep(&s, keep, nk);
            assert_int_equal(L->n_valid, B);
            for (int i = 0; i < cap; i++)
                if (L->pos[i] < 0) pos[i] = -1;
            compressions++;
        } else {
            for (int i = 0; i < cap; i++) assert_int_equal(L->pos[i], pos[i]);
        }
        assert_true(L->n_valid <= cap);
    }
    assert_int_equal(compressions, 3);
    assert_int_equal(lf_rkv_compressions(&c, 0), 3);
    assert_int_equal(c.peak_valid, cap);
    free(pos);
    free(K);
    free(q);
    free(k);
    free(v);
    lf_kv_cache_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_select_random_states),
        cmocka_unit_test(test_decode_compressions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
