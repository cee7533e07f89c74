/* The fused decode attention + scoring kernel (lf_kv_decode_layer) on random
 * cache states, for every policy, against a straightforward double-precision
 * reference written here: the output of every query head, every slot's
 * score, the victim slot, and the store of the new token. Both the AVX2 and
 * the scalar path, GQA groups of 1 to 32 heads, head dims that are and are
 * not multiples of the vector width, caches spanning several chunks; with
 * fp32, bf16 and fp8 caches (the reference reads the values the cache holds:
 * rounded when stored, widened when read; tests/test_kv_dtype.c checks that
 * rounding against ml_dtypes). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv/attention.h"
#include "kv/cache.h"
#include "kv/dtype.h"
#include "kv/policy.h"
#include "kv/policies/common.h"
#include "model/config.h"

#include "test_util.h"

/* ---- random numbers ---------------------------------------------------------- */



/* ---- the reference ------------------------------------------------------------ */

typedef struct step_case {
    lf_policy_kind kind;
    int H, G, hd, cap;
    int n_seq;
    double empty_frac;  /* fraction of empty slots */
    int tail_empty;     /* slots at the end never written (hw = cap - tail) */
    int sinks, recent;  /* -1 = policy default */
    float qscale;       /* query magnitude (large: sharp softmax) */
    int scalar;         /* force the scalar kernel */
    lf_kv_dtype dt;     /* the cache's dtype (fp32 when not given) */
} step_case;

/* Store k, v [hd] in slot i of (layer, g) as the cache does. */
static void put_row(lf_kv_cache *c, int layer, int g, int i, const float *k, const float *v) {
    float *ks = lf_kv_kscale(c, layer, g), *vs = lf_kv_vscale(c, layer, g);
    size_t off = (size_t)i * c->row_bytes;
    lf_kv_row_store(c->dtype, k, c->head_dim, lf_kv_k(c, layer, g) + off, ks ? ks + i : NULL);
    lf_kv_row_store(c->dtype, v, c->head_dim, lf_kv_v(c, layer, g) + off, vs ? vs + i : NULL);
}

/* What slot i of (layer, g) holds, as floats. */
static void get_row(const lf_kv_cache *c, int layer, int g, int i, float *k, float *v) {
    const float *ks = lf_kv_kscale(c, layer, g), *vs = lf_kv_vscale(c, layer, g);
    size_t off = (size_t)i * c->row_bytes;
    lf_kv_row_load(c->dtype, lf_kv_k(c, layer, g) + off, ks ? ks[i] : 1.0f, c->head_dim, k);
    lf_kv_row_load(c->dtype, lf_kv_v(c, layer, g) + off, vs ? vs[i] : 1.0f, c->head_dim, v);
}

/* k, v [hd] as a cache of dtype dt would give them back (stored in a
 * one-slot cache of that dtype and read). */
static void round_trip(lf_kv_dtype dt, int hd, const float *k, const float *v, float *ko, float *vo) {
    uint8_t kb[4 * 1024], vb[4 * 1024];
    float ks = 1, vs = 1;
    lf_kv_row_store(dt, k, hd, kb, &ks);
    lf_kv_row_store(dt, v, hd, vb, &vs);
    lf_kv_row_load(dt, kb, ks, hd, ko);
    lf_kv_row_load(dt, vb, vs, hd, vo);
}

/* Snapshot of one sequence's layer before the step. */
typedef struct snap {
    float *K, *V; /* [G][cap][hd] */
    int *pos;
    float *acc;
    int next, hw;
} snap;

static bool ref_evictable(const lf_policy_config *P, int p, int pnow) {
    return p >= P->sinks && p <= pnow - P->recent;
}

/* The reference state of one sequence's layer after the step, in double. */
typedef struct ref_state {
    int slot;            /* where the new token was stored (-1: nowhere) */
    int *pos;            /* [cap] */
    double *K, *V;       /* [G][cap][hd] */
    double *alpha, *vn;  /* [H][cap] attention weights, [G][cap] |v|_1 */
    double *ref;         /* [cap] reference scores */
    double maxabs;       /* largest finite |ref| */
} ref_state;

static void ref_free(ref_state *R) {
    free(R->pos);
    free(R->K);
    free(R->V);
    free(R->alpha);
    free(R->vn);
    free(R->ref);
}

/* The store: the snapshot with the new token in slot S->next, checked
 * against the cache's positions, valid count and contents. */
static void check_store(const step_case *tc, const lf_kv_cache *c, int layer, const snap *S, const float *k,
                        const float *v, int pnow, ref_state *R) {
    const int G = tc->G, hd = tc->hd, cap = c->capacity;
    const lf_kv_layer *L = &c->layers[layer];
    int slot = R->slot = S->next;
    int *pos = R->pos = malloc((size_t)cap * sizeof *pos);
    memcpy(pos, S->pos, (size_t)cap * sizeof *pos);
    double *K = R->K = malloc((size_t)G * cap * hd * sizeof *K), *V = R->V = malloc((size_t)G * cap * hd * sizeof *V);
    for (size_t i = 0; i < (size_t)G * cap * hd; i++) {
        K[i] = S->K[i];
        V[i] = S->V[i];
    }
    float *kr = malloc((size_t)hd * sizeof *kr), *vr = malloc((size_t)hd * sizeof *vr);
    if (slot >= 0) {
        pos[slot] = pnow;
        for (int g = 0; g < G; g++) {
            round_trip(c->dtype, hd, k + g * hd, v + g * hd, kr, vr);
            for (int d = 0; d < hd; d++) {
                K[((size_t)g * cap + slot) * hd + d] = kr[d];
                V[((size_t)g * cap + slot) * hd + d] = vr[d];
            }
        }
        assert_int_equal(L->pos[slot], pnow);
    }
    for (int i = 0; i < cap; i++) assert_int_equal(L->pos[i], pos[i]);
    int nvalid = 0;
    for (int i = 0; i < cap; i++) nvalid += pos[i] >= 0;
    assert_int_equal(L->n_valid, nvalid);
    for (int g = 0; g < G; g++)
        for (int i = 0; i < cap; i++)
            if (pos[i] >= 0) {
                get_row(c, layer, g, i, kr, vr);
                for (int d = 0; d < hd; d++) {
                    assert_true(kr[d] == (float)K[((size_t)g * cap + i) * hd + d]);
                    assert_true(vr[d] == (float)V[((size_t)g * cap + i) * hd + d]);
                }
            }
    free(kr);
    free(vr);
}

/* Attention in double (alpha, vn), and every query head's output checked. */
static void check_attention(const step_case *tc, const lf_kv_cache *c, const float *q, const float *out,
                            ref_state *R) {
    const int H = tc->H, G = tc->G, hd = tc->hd, cap = c->capacity, rep = H / G;
    const int *pos = R->pos;
    const double *K = R->K, *V = R->V;
    double *alpha = R->alpha = calloc((size_t)H * cap, sizeof *alpha);
    double *vn = R->vn = calloc((size_t)G * cap, sizeof *vn);
    for (int g = 0; g < G; g++)
        for (int i = 0; i < cap; i++)
            if (pos[i] >= 0)
                for (int d = 0; d < hd; d++) vn[(size_t)g * cap + i] += fabs(V[((size_t)g * cap + i) * hd + d]);
    for (int h = 0; h < H; h++) {
        int g = h / rep;
        double mx = -INFINITY;
        double *a = alpha + (size_t)h * cap;
        for (int i = 0; i < cap; i++) {
            if (pos[i] < 0) continue;
            double s = 0;
            for (int d = 0; d < hd; d++) s += (double)q[h * hd + d] * K[((size_t)g * cap + i) * hd + d];
            a[i] = s / sqrt((double)hd);
            if (a[i] > mx) mx = a[i];
        }
        double sum = 0;
        for (int i = 0; i < cap; i++)
            if (pos[i] >= 0) sum += (a[i] = exp(a[i] - mx));
        for (int i = 0; i < cap; i++)
            if (pos[i] >= 0) a[i] /= sum;
        for (int d = 0; d < hd; d++) {
            double o = 0;
            for (int i = 0; i < cap; i++)
                if (pos[i] >= 0) o += a[i] * V[((size_t)g * cap + i) * hd + d];
            double got = out[h * hd + d];
            if (fabs(got - o) > 2e-5 + 1e-4 * fabs(o))
                fail_msg("output head %d dim %d: got %.9g, reference %.9g", h, d, got, o);
        }
    }
}

/* The policy's score of every slot in double (ref, maxabs), checked with
 * the H2O/VATP accumulators and, for the scored policies, the scores. */
static void check_scores(const step_case *tc, const lf_kv_cache *c, int layer, const snap *S, ref_state *R) {
    const int H = tc->H, G = tc->G, hd = tc->hd, cap = c->capacity, rep = H / G;
    const lf_scored_layer *SC = lf_scored(c, layer);
    const int *pos = R->pos;
    const double *alpha = R->alpha, *vn = R->vn;
    double *ref = R->ref = calloc((size_t)cap, sizeof *ref);
    bool scored = tc->kind == LF_POLICY_LONGFLOW || tc->kind == LF_POLICY_TOVA || tc->kind == LF_POLICY_H2O ||
                  tc->kind == LF_POLICY_VATP;
    for (int i = 0; i < cap; i++) {
        if (pos[i] < 0) {
            ref[i] = (tc->kind == LF_POLICY_H2O || tc->kind == LF_POLICY_VATP) ? -INFINITY : 0.0;
            continue;
        }
        double att = 0, lf = 0, vbar = 0;
        for (int h = 0; h < H; h++) {
            att += alpha[(size_t)h * cap + i];
            lf += alpha[(size_t)h * cap + i] * vn[(size_t)(h / rep) * cap + i];
        }
        for (int g = 0; g < G; g++) vbar += vn[(size_t)g * cap + i];
        att /= H;
        lf /= (double)H * hd;
        vbar /= G;
        double acc0 = (i == R->slot) ? 0.0 : (S->acc ? S->acc[i] : 0.0);
        switch (tc->kind) {
        case LF_POLICY_LONGFLOW: ref[i] = lf; break;
        case LF_POLICY_TOVA: ref[i] = att; break;
        case LF_POLICY_H2O: ref[i] = acc0 + att; break;
        case LF_POLICY_VATP: ref[i] = (acc0 + att) * vbar; break;
        default: break;
        }
        if (tc->kind == LF_POLICY_H2O || tc->kind == LF_POLICY_VATP) {
            double ga = SC->acc[i];
            if (fabs(ga - (acc0 + att)) > 1e-6 + 1e-4 * fabs(acc0 + att))
                fail_msg("accumulated attention of slot %d: got %.9g, reference %.9g", i, ga, acc0 + att);
        }
    }
    double maxabs = 0;
    for (int i = 0; i < cap; i++)
        if (isfinite(ref[i]) && fabs(ref[i]) > maxabs) maxabs = fabs(ref[i]);
    R->maxabs = maxabs;
    if (scored)
        for (int i = 0; i < cap; i++) {
            double got = SC->score[i];
            if (isinf(ref[i])) {
                assert_true(isinf(got) && got < 0);
                continue;
            }
            if (fabs(got - ref[i]) > 1e-4 * fabs(ref[i]) + 1e-7 * maxabs)
                fail_msg("score of slot %d: got %.9g, reference %.9g", i, got, ref[i]);
        }
}

/* A scored policy's victim: an evictable (or empty) slot whose reference
 * score is the smallest within tolerance; the lowest such index when the
 * smallest scores are exactly equal. */
static void check_scored_victim(const lf_kv_cache *c, const lf_kv_layer *L, int pnow, const ref_state *R) {
    const lf_policy_config *P = &c->policy;
    const int cap = c->capacity;
    const int *pos = R->pos;
    const double *ref = R->ref;
    double mn = INFINITY;
    for (int i = 0; i < cap; i++)
        if ((pos[i] < 0 || ref_evictable(P, pos[i], pnow)) && ref[i] < mn) mn = ref[i];
    double tol = 1e-5 * R->maxabs;
    int got = L->next_slot;
    assert_true(got >= 0 && got < cap);
    assert_true(pos[got] < 0 || ref_evictable(P, pos[got], pnow));
    bool all_equal = true;
    int lowest = -1;
    for (int i = 0; i < cap; i++) {
        if (!(pos[i] < 0 || ref_evictable(P, pos[i], pnow))) continue;
        if (ref[i] <= mn + tol) {
            if (lowest < 0) lowest = i;
            if (ref[i] != mn) all_equal = false;
        }
    }
    if (!(ref[got] <= mn + tol))
        fail_msg("victim %d has reference score %.9g, the smallest is %.9g", got, ref[got], mn);
    if (all_equal) assert_int_equal(got, lowest);
}

/* The next slot the cache chose, against the policy's rule. */
static void check_victim(const step_case *tc, const lf_kv_cache *c, int layer, const snap *S, int pnow,
                         const ref_state *R) {
    const lf_kv_layer *L = &c->layers[layer];
    const lf_policy_config *P = &c->policy;
    const int cap = c->capacity, slot = R->slot;
    const int *pos = R->pos;
    int want = -1;
    if (tc->kind == LF_POLICY_FULL) {
        int hw = S->hw > slot + 1 ? S->hw : slot + 1;
        want = hw < cap ? hw : -1;
        assert_int_equal(L->next_slot, want);
    } else if (tc->kind == LF_POLICY_STREAMING) {
        for (int i = 0; i < cap && want < 0; i++)
            if (pos[i] < 0) want = i;
        if (want < 0)
            for (int i = 0; i < cap; i++)
                if (ref_evictable(P, pos[i], pnow) && (want < 0 || pos[i] < pos[want])) want = i;
        assert_int_equal(L->next_slot, want);
    } else {
        check_scored_victim(c, L, pnow, R);
    }
}

/* Check one sequence after the step against the reference. */
static void check_seq(const step_case *tc, const lf_kv_cache *c, int layer, const snap *S, const float *q,
                      const float *k, const float *v, int pnow, const float *out) {
    ref_state R;
    memset(&R, 0, sizeof R);
    check_store(tc, c, layer, S, k, v, pnow, &R);
    check_attention(tc, c, q, out, &R);
    check_scores(tc, c, layer, S, &R);
    check_victim(tc, c, layer, S, pnow, &R);
    ref_free(&R);
}

static void run_case(const step_case *tc) {
    lf_att_force_scalar(tc->scalar);
    const int layer = 1;
    lf_config cfg = shape(2, tc->H, tc->G, tc->hd);
    lf_policy_config pc;
    lf_policy_config_default(&pc);
    pc.kv_dtype = tc->dt;
    pc.kind = tc->kind;
    pc.sinks = tc->sinks;
    pc.recent = tc->recent;
    const int n_seq = tc->n_seq, H = tc->H, G = tc->G, hd = tc->hd;
    lf_kv_cache *cs = calloc((size_t)n_seq, sizeof *cs);
    lf_kv_cache **cp = calloc((size_t)n_seq, sizeof *cp);
    snap *S = calloc((size_t)n_seq, sizeof *S);
    int *pnow = calloc((size_t)n_seq, sizeof *pnow);
    for (int s = 0; s < n_seq; s++) {
        lf_error err;
        pc.budget = tc->kind == LF_POLICY_FULL ? 0 : tc->cap;
        int rc = lf_kv_cache_init(&cs[s], &cfg, &pc, tc->cap, &err);
        if (rc) fail_msg("init: %s", err.msg);
        cp[s] = &cs[s];
        lf_kv_cache *c = &cs[s];
        lf_kv_layer *L = &c->layers[layer];
        lf_scored_layer *SC = lf_scored(c, layer);
        int cap = c->capacity;
        int hw = cap - tc->tail_empty;
        /* distinct positions in random order */
        int base = 0;
        for (int i = 0; i < cap; i++) {
            bool empty = i >= hw || (tc->kind != LF_POLICY_FULL && urand() < tc->empty_frac);
            L->pos[i] = empty ? -1 : 0;
        }
        for (int i = 0; i < cap; i++)
            if (L->pos[i] == 0) L->pos[i] = (base += 1 + irand(3));
        for (int i = 0; i < cap; i++) {
            int j = irand(hw > 0 ? hw : 1);
            if (tc->kind != LF_POLICY_FULL && i < hw && j < hw) {
                int32_t t = L->pos[i];
                L->pos[i] = L->pos[j];
                L->pos[j] = t;
            }
        }
        L->n_valid = 0;
        for (int i = 0; i < cap; i++) L->n_valid += L->pos[i] >= 0;
        c->total_valid = L->n_valid;
        L->hw = hw;
        S[s].K = malloc((size_t)G * cap * hd * sizeof(float));
        S[s].V = malloc((size_t)G * cap * hd * sizeof(float));
        for (int g = 0; g < G; g++)
            for (int i = 0; i < cap; i++) {
                float *kr = S[s].K + ((size_t)g * cap + i) * hd, *vr = S[s].V + ((size_t)g * cap + i) * hd;
                for (int d = 0; d < hd; d++) {
                    kr[d] = frand(-1, 1);
                    vr[d] = frand(-1, 1);
                }
                put_row(c, layer, g, i, kr, vr);
                get_row(c, layer, g, i, kr, vr); /* the snapshot: what the cache holds */
            }
        if (SC && SC->acc)
            for (int i = 0; i < cap; i++) SC->acc[i] = L->pos[i] >= 0 ? frand(0, 2) : 0;
        if (tc->kind == LF_POLICY_FULL)
            L->next_slot = hw < cap ? hw : -1;
        else
            L->next_slot = irand(cap);
        pnow[s] = base + 1 + irand(5);
        S[s].pos = malloc((size_t)cap * sizeof(int));
        for (int i = 0; i < cap; i++) S[s].pos[i] = L->pos[i];
        if (SC && SC->acc) {
            S[s].acc = malloc((size_t)cap * sizeof(float));
            memcpy(S[s].acc, SC->acc, (size_t)cap * sizeof(float));
        }
        S[s].next = L->next_slot;
        S[s].hw = hw;
    }
    float *q = malloc((size_t)n_seq * H * hd * sizeof *q);
    float *k = malloc((size_t)n_seq * G * hd * sizeof *k);
    float *v = malloc((size_t)n_seq * G * hd * sizeof *v);
    float *out = malloc((size_t)n_seq * H * hd * sizeof *out);
    rand_qkv(q, k, v, (size_t)n_seq * H * hd, (size_t)n_seq * G * hd, tc->qscale);
    lf_kv_decode_layer(cp, n_seq, layer, q, k, v, pnow, out);
    for (int s = 0; s < n_seq; s++)
        check_seq(tc, &cs[s], layer, &S[s], q + (size_t)s * H * hd, k + (size_t)s * G * hd,
                  v + (size_t)s * G * hd, pnow[s], out + (size_t)s * H * hd);

    /* scoring does not change the output: the same kernel without scores */
    float *out2 = malloc((size_t)n_seq * H * hd * sizeof *out2);
    lf_kv_attend(cp, n_seq, layer, q, out2, false);
    assert_memory_equal(out, out2, (size_t)n_seq * H * hd * sizeof *out);
    free(out2);

    for (int s = 0; s < n_seq; s++) {
        lf_kv_cache_free(&cs[s]);
        free(S[s].K);
        free(S[s].V);
        free(S[s].pos);
        free(S[s].acc);
    }
    free(cs);
    free(cp);
    free(S);
    free(pnow);
    free(q);
    free(k);
    free(v);
    free(out);
    lf_att_force_scalar(0);
}

static void run_both(step_case tc) {
    for (int sc = 0; sc < 2; sc++) {
        tc.scalar = sc;
        run_case(&tc);
    }
}

/* ---- tests ------------------------------------------------------------------------ */

static const lf_policy_kind scored_kinds[] = {LF_POLICY_LONGFLOW, LF_POLICY_TOVA, LF_POLICY_H2O, LF_POLICY_VATP};

static void test_qwen_shape_every_policy(void **state) {
    (void)state;
    rng = 11;
    lf_policy_kind kinds[] = {LF_POLICY_LONGFLOW, LF_POLICY_TOVA, LF_POLICY_H2O, LF_POLICY_VATP,
                              LF_POLICY_STREAMING, LF_POLICY_FULL};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        /* full cache, and one with holes and an unwritten tail */
        run_both((step_case){kinds[i], 16, 8, 128, 600, 2, 0.0, 0, -1, -1, 1.0f, 0, LF_KV_F32});
        run_both((step_case){kinds[i], 16, 8, 128, 300, 1, 0.1, 37, -1, -1, 1.0f, 0, LF_KV_F32});
    }
}

static void test_group_sizes_and_head_dims(void **state) {
    (void)state;
    rng = 12;
    const int shapes[][3] = {{6, 2, 24}, {3, 3, 20}, {8, 1, 64}, {32, 1, 16}, {4, 2, 8}, {5, 1, 40}, {2, 2, 136}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (size_t i = 0; i < 4; i++)
            run_both((step_case){scored_kinds[i], shapes[s][0], shapes[s][1], shapes[s][2], 77, 3, 0.2, 5, -1, -1,
                                 1.5f, 0, LF_KV_F32});
}

static void test_long_cache_many_chunks(void **state) {
    (void)state;
    rng = 13;
    run_both((step_case){LF_POLICY_LONGFLOW, 4, 2, 64, 3000, 1, 0.01, 3, -1, -1, 2.0f, 0, LF_KV_F32});
    run_both((step_case){LF_POLICY_H2O, 4, 2, 64, 1100, 2, 0.0, 0, -1, -1, 2.0f, 0, LF_KV_F32});
}

static void test_protected_slots(void **state) {
    (void)state;
    rng = 14;
    for (size_t i = 0; i < 4; i++) {
        run_both((step_case){scored_kinds[i], 8, 4, 32, 64, 2, 0.0, 0, 3, 5, 1.0f, 0, LF_KV_F32});
        run_both((step_case){scored_kinds[i], 8, 4, 32, 64, 2, 0.0, 0, 0, 20, 1.0f, 0, LF_KV_F32});
    }
    run_both((step_case){LF_POLICY_STREAMING, 8, 4, 32, 64, 2, 0.0, 0, 6, -1, 1.0f, 0, LF_KV_F32});
}

static void test_sharp_softmax_and_empty_cache(void **state) {
    (void)state;
    rng = 15;
    /* large logits: many weights underflow in fp32 */
    for (size_t i = 0; i < 4; i++) run_both((step_case){scored_kinds[i], 4, 2, 32, 200, 2, 0.05, 0, -1, -1, 40.0f, 0, LF_KV_F32});
    /* a fresh layer: only the new token, written into slot `next` */
    for (size_t i = 0; i < 4; i++) run_both((step_case){scored_kinds[i], 4, 2, 32, 50, 1, 1.0, 0, -1, -1, 1.0f, 0, LF_KV_F32});
}

/* bf16 and fp8 caches: every policy at Qwen3's shape, group sizes and head
 * dims (the scalar path where hd is not a multiple of 8), many chunks, a
 * sharp softmax. */
static void test_bf16_fp8_caches(void **state) {
    (void)state;
    rng = 17;
    const lf_kv_dtype dts[] = {LF_KV_BF16, LF_KV_FP8};
    lf_policy_kind kinds[] = {LF_POLICY_LONGFLOW, LF_POLICY_TOVA, LF_POLICY_H2O, LF_POLICY_VATP,
                              LF_POLICY_STREAMING, LF_POLICY_FULL};
    const int shapes[][3] = {{6, 2, 24}, {32, 1, 16}, {5, 1, 40}, {2, 2, 136}};
    for (int t = 0; t < 2; t++) {
        lf_kv_dtype dt = dts[t];
        for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
            run_both((step_case){kinds[i], 16, 8, 128, 300, 2, 0.1, 37, -1, -1, 1.0f, 0, dt});
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (size_t i = 0; i < 4; i++)
                run_both((step_case){scored_kinds[i], shapes[s][0], shapes[s][1], shapes[s][2], 77, 3, 0.2, 5, -1,
                                     -1, 1.5f, 0, dt});
        run_both((step_case){LF_POLICY_LONGFLOW, 4, 2, 64, 3000, 1, 0.01, 3, -1, -1, 2.0f, 0, dt});
        for (size_t i = 0; i < 4; i++)
            run_both((step_case){scored_kinds[i], 4, 2, 32, 200, 2, 0.05, 0, -1, -1, 40.0f, 0, dt});
    }
}

static void test_exp_block(void **state) {
    (void)state;
    enum { N = 4001 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    for (int sc = 0; sc < 2; sc++) {
        lf_att_force_scalar(sc);
        for (int i = 0; i < N; i++) x[i] = -90.0f * (float)i / (N - 1);
        x[N - 1] = -INFINITY;
        lf_att_exp_block(x, y, N);
        for (int i = 0; i < N - 1; i++) {
            double want = exp((double)x[i]);
            if (x[i] < -87.4f)
                assert_true(y[i] == 0.0f || fabs(y[i] - want) <= 1e-38);
            else if (x[i] > -87.0f && fabs(y[i] - want) > 4e-7 * want)
                fail_msg("exp(%.9g): got %.9g, want %.9g", x[i], y[i], want);
        }
        assert_true(y[N - 1] == 0.0f);
    }
    lf_att_force_scalar(0);
    free(x);
    free(y);
}

/* Results do not depend on the thread count (the slots are split in fixed
 * chunks, combined in a fixed order). */
static void test_thread_count_invariance(void **state) {
    (void)state;
    rng = 16;
    const int H = 8, G = 2, hd = 64, cap = 1100;
    lf_config cfg = shape(1, H, G, hd);
    /* against float32 references */
    lf_policy_config pc = policy_config(LF_POLICY_LONGFLOW, cap, LF_KV_F32);
    lf_kv_cache c;
    lf_error err;
    assert_int_equal(lf_kv_cache_init(&c, &cfg, &pc, cap, &err), 0);
    lf_kv_layer *L = &c.layers[0];
    for (int i = 0; i < cap; i++) L->pos[i] = urand() < 0.05 ? -1 : i;
    L->hw = cap;
    for (int g = 0; g < G; g++)
        for (int i = 0; i < cap; i++) {
            float kr[64], vr[64];
            for (int d = 0; d < hd; d++) {
                kr[d] = frand(-1, 1);
                vr[d] = frand(-1, 1);
            }
            put_row(&c, 0, g, i, kr, vr);
        }
    float *q = malloc((size_t)H * hd * sizeof *q), *o1 = malloc((size_t)H * hd * sizeof *o1);
    float *o2 = malloc((size_t)H * hd * sizeof *o2), *a1 = malloc((size_t)G * cap * sizeof *a1);
    for (int i = 0; i < H * hd; i++) q[i] = frand(-2, 2);
    lf_kv_cache *cp = &c;
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    lf_kv_attend(&cp, 1, 0, q, o1, true);
    for (int g = 0; g < G; g++) memcpy(a1 + (size_t)g * cap, lf_att_att(&c, g), (size_t)cap * sizeof(float));
    omp_set_num_threads(3);
    lf_kv_attend(&cp, 1, 0, q, o2, true);
    omp_set_num_threads(saved);
    assert_memory_equal(o1, o2, (size_t)H * hd * sizeof *o1);
    for (int g = 0; g < G; g++) assert_memory_equal(a1 + (size_t)g * cap, lf_att_att(&c, g), (size_t)cap * sizeof(float));
    free(q);
    free(o1);
    free(o2);
    free(a1);
    lf_kv_cache_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exp_block),
        cmocka_unit_test(test_qwen_shape_every_policy),
        cmocka_unit_test(test_group_sizes_and_head_dims),
        cmocka_unit_test(test_long_cache_many_chunks),
        cmocka_unit_test(test_protected_slots),
        cmocka_unit_test(test_sharp_softmax_and_empty_cache),
        cmocka_unit_test(test_thread_count_invariance),
        cmocka_unit_test(test_bf16_fp8_caches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
