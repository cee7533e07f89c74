/* Token sampling from logits, in the order transformers applies its logits
 * processors: repetition penalty, temperature, top-k, top-p, min-p. */
#ifndef LF_SAMPLER_SAMPLER_H
#define LF_SAMPLER_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>
#include "longflow.h"

typedef struct lf_prob {
    float p;
    int id;
} lf_prob;

typedef struct lf_sampler {
    lf_sampling params;
    uint64_t rng[4]; /* xoshiro256** state */
    int vocab;
    lf_prob *buf;    /* [vocab] scratch */
} lf_sampler;

/* Validate params (temperature >= 0, 0 < top_p <= 1, 0 <= min_p < 1,
 * repetition_penalty > 0, top_k >= 0) and allocate scratch. stream picks an
 * independent random stream (e.g. the request id). */
int lf_sampler_init(lf_sampler *s, const lf_sampling *params, int vocab, uint64_t stream,
                    lf_error *err);
void lf_sampler_free(lf_sampler *s);

/* lf_sampler_sample's answer when no token can be chosen: a logit is NaN or
 * +inf (broken weights or activations), or every logit is -inf. */
#define LF_SAMPLE_NONFINITE (-1)

/* Choose the next token. logits [vocab] is modified. history holds the ids
 * the repetition penalty applies to (prompt + generated, as transformers).
 * Returns the token id, or LF_SAMPLE_NONFINITE (whatever the parameters:
 * greedy, temperature, top-k, top-p, min-p, penalty). */
int lf_sampler_sample(lf_sampler *s, float *logits, const int *history, int n_history);

/* No logit is NaN or +inf and at least one is not -inf. */
bool lf_logits_usable(const float *x, int n);

/* Index of the largest value (lowest index on ties). */
int lf_argmax(const float *x, int n);

/* Uniform double in [0, 1) from the sampler's stream. */
double lf_sampler_uniform(lf_sampler *s);

#endif
