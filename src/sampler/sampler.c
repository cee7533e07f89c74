#include "sampler/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

void lf_sampling_default(lf_sampling *s) {
    s->temperature = 0.0f;
    s->top_k = 0;
    s->top_p = 1.0f;
    s->min_p = 0.0f;
    s->repetition_penalty = 1.0f;
    s->seed = 0;
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(lf_sampler *s) {
    uint64_t *r = s->rng;
    uint64_t out = rotl(r[1] * 5, 7) * 9;
    uint64_t t = r[1] << 17;
    r[2] ^= r[0];
    r[3] ^= r[1];
    r[1] ^= r[2];
    r[0] ^= r[3];
    r[2] ^= t;
    r[3] = rotl(r[3], 45);
    return out;
}

double lf_sampler_uniform(lf_sampler *s) { return (double)(next_u64(s) >> 11) * 0x1.0p-53; }

int lf_sampler_init(lf_sampler *s, const lf_sampling *p, int vocab, uint64_t stream, lf_error *err) {
    memset(s, 0, sizeof *s);
    if (!(p->temperature >= 0.0f)) return lf_fail(err, "--temperature must be >= 0 (got %g)", p->temperature);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f)) return lf_fail(err, "--top-p must be in (0, 1] (got %g)", p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p < 1.0f)) return lf_fail(err, "--min-p must be in [0, 1) (got %g)", p->min_p);
    if (!(p->repetition_penalty > 0.0f))
        return lf_fail(err, "--repetition-penalty must be > 0 (got %g)", p->repetition_penalty);
    if (p->top_k < 0) return lf_fail(err, "--top-k must be >= 0 (got %d)", p->top_k);
    if (vocab <= 0) return lf_fail(err, "sampler: vocabulary size must be positive");
    s->params = *p;
    s->vocab = vocab;
    s->buf = malloc((size_t)vocab * sizeof *s->buf);
    if (!s->buf) return lf_fail(err, "sampler: out of memory");
    uint64_t x = p->seed ^ (stream * 0xd1b54a32d192ed03ull);
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
    return 0;
}

void lf_sampler_free(lf_sampler *s) {
    free(s->buf);
    s->buf = NULL;
}

bool lf_logits_usable(const float *x, int n) {
    bool any = false;
    for (int i = 0; i < n; i++) {
        if (isnan(x[i]) || x[i] == INFINITY) return false;
        any |= x[i] != -INFINITY;
    }
    return any;
}

int lf_argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int cmp_prob_desc(const void *a, const void *b) {
    const lf_prob *x = a, *y = b;
    if (x->p > y->p) return -1;
    if (x->p < y->p) return 1;
    return x->id - y->id;
}

/* Keep the k largest of buf[0..n) at the front, sorted descending. */
static int keep_top(lf_prob *buf, int n, int k) {
    if (k >= n) {
        qsort(buf, (size_t)n, sizeof *buf, cmp_prob_desc);
        return n;
    }
    /* quickselect-style partition so the k largest come first, then sort them */
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        float pivot = buf[(lo + hi) / 2].p;
        int i = lo, j = hi;
        while (i <= j) {
            while (buf[i].p > pivot) i++;
            while (buf[j].p < pivot) j--;
            if (i <= j) {
                lf_prob t = buf[i];
                buf[i] = buf[j];
                buf[j] = t;
                i++;
                j--;
            }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
    qsort(buf, (size_t)k, sizeof *buf, cmp_prob_desc);
    return k;
}

int lf_sampler_sample(lf_sampler *s, float *logits, const int *history, int n_history) {
    const lf_sampling *p = &s->params;
    int V = s->vocab;
    if (p->repetition_penalty != 1.0f) {
        /* as transformers: once per distinct token; divide positive logits,
         * multiply negative ones. Marking via NaN-free sign trick is unsafe,
         * so use the scratch buffer as a seen-set. */
        for (int i = 0; i < V; i++) s->buf[i].id = 0;
        for (int i = 0; i < n_history; i++) {
            int t = history[i];
            if (t < 0 || t >= V || s->buf[t].id) continue;
            s->buf[t].id = 1;
            logits[t] = logits[t] > 0 ? logits[t] / p->repetition_penalty : logits[t] * p->repetition_penalty;
        }
    }
    /* after the penalty (a penalty below 1 can overflow a large logit):
     * -inf masks a token, NaN or +inf means broken weights or activations */
    if (!lf_logits_usable(logits, V)) return LF_SAMPLE_NONFINITE;
    if (p->temperature == 0.0f) return lf_argmax(logits, V);

    float mx = logits[lf_argmax(logits, V)];
    double sum = 0;
    for (int i = 0; i < V; i++) {
        float e = expf((logits[i] - mx) / p->temperature);
        s->buf[i].p = e;
        s->buf[i].id = i;
        sum += e;
    }
    for (int i = 0; i < V; i++) s->buf[i].p = (float)(s->buf[i].p / sum);

    int n = V;
    bool sorted = false;
    if (p->top_k > 0 && p->top_k < n) {
        n = keep_top(s->buf, n, p->top_k);
        sorted = true;
    }
    if (p->top_p < 1.0f) {
        if (!sorted) {
            /* tokens below (1-top_p)/(n-1) cannot be in the nucleus unless
             * it is all of them: drop them before sorting */
            float cut = (1.0f - p->top_p) / (float)(n > 1 ? n - 1 : 1);
            int m = 0;
            for (int i = 0; i < n; i++)
                if (s->buf[i].p >= cut) s->buf[m++] = s->buf[i];
            n = m > 0 ? m : n;
            qsort(s->buf, (size_t)n, sizeof *s->buf, cmp_prob_desc);
            sorted = true;
        }
        /* renormalise over the current candidates, keep the smallest prefix
         * whose mass reaches top_p (at least one token) */
        double tot = 0;
        for (int i = 0; i < n; i++) tot += s->buf[i].p;
        double acc = 0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            acc += s->buf[i].p / tot;
            if (acc >= p->top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
    }
    if (p->min_p > 0.0f) {
        float top = 0;
        for (int i = 0; i < n; i++)
            if (s->buf[i].p > top) top = s->buf[i].p;
        float cut = p->min_p * top;
        int m = 0;
        for (int i = 0; i < n; i++)
            if (s->buf[i].p >= cut) s->buf[m++] = s->buf[i];
        n = m;
    }
    if (n < 1) return LF_SAMPLE_NONFINITE; /* not with usable logits: the top token always stays */
    double tot = 0;
    for (int i = 0; i < n; i++) tot += s->buf[i].p;
    double r = lf_sampler_uniform(s) * tot, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += s->buf[i].p;
        if (r < acc) return s->buf[i].id;
    }
    return s->buf[n - 1].id;
}
