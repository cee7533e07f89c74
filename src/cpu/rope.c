/* Rotary position embedding: inverse frequencies for the rope types
 * transformers implements (default, linear, llama3, yarn), computed as
 * transformers does in float32, and the rotation in the "rotate_half"
 * convention (element i pairs with element i + head_dim/2). */
#include <math.h>
#include <stdlib.h>

#include "core/error.h"
#include "cpu/kernels.h"

/* base ** (2i/dim) as torch computes it on float32 tensors, then 1/that. */
static float default_inv_freq(double theta, int i, int dim, float *pos_freq) {
    float e = (float)(2 * i) / (float)dim;
    float p = (float)pow((double)(float)theta, (double)e);
    if (pos_freq) *pos_freq = p;
    return 1.0f / p;
}

static double yarn_correction_dim(double rotations, int dim, double base, double max_pos) {
    return (dim * log(max_pos / (rotations * 2.0 * M_PI))) / (2.0 * log(base));
}

int lf_rope_init(lf_rope *r, const lf_config *cfg, lf_error *err) {
    r->inv_freq = NULL;
    r->head_dim = cfg->head_dim;
    r->attention_factor = 1.0f;
    int dim = cfg->head_dim, half = dim / 2;
    const lf_rope_config *rc = &cfg->rope;
    if (dim <= 0 || dim % 2)
        return lf_fail(err, "rope: head_dim must be positive and even (got %d)", dim);
    if (!(rc->theta > 1.0)) return lf_fail(err, "rope: rope_theta must be > 1 (got %g)", rc->theta);
    if (rc->type != LF_ROPE_DEFAULT && !(rc->factor > 0))
        return lf_fail(err, "rope: scaling factor must be positive (got %g)", rc->factor);
    r->inv_freq = malloc((size_t)half * sizeof(float));
    if (!r->inv_freq) return lf_fail(err, "rope: out of memory");

    switch (rc->type) {
    case LF_ROPE_DEFAULT:
        for (int i = 0; i < half; i++) r->inv_freq[i] = default_inv_freq(rc->theta, i, dim, NULL);
        break;
    case LF_ROPE_LINEAR:
        for (int i = 0; i < half; i++)
            r->inv_freq[i] = default_inv_freq(rc->theta, i, dim, NULL) / (float)rc->factor;
        break;
    case LF_ROPE_LLAMA3: {
        double factor = rc->factor, lo = rc->low_freq_factor, hi = rc->high_freq_factor;
        double old_ctx = rc->original_max_position > 0 ? rc->original_max_position : cfg->max_position;
        if (!(old_ctx > 0) || !(hi > lo) || !(lo > 0)) {
            lf_rope_free(r);
            return lf_fail(err,
                           "rope: llama3 scaling needs original_max_position_embeddings > 0 and "
                           "high_freq_factor > low_freq_factor > 0 (got %g, %g, %g)",
                           old_ctx, hi, lo);
        }
        double lo_wavelen = old_ctx / lo, hi_wavelen = old_ctx / hi;
        for (int i = 0; i < half; i++) {
            double f = default_inv_freq(rc->theta, i, dim, NULL);
            double wavelen = 2.0 * M_PI / f;
            double g;
            if (wavelen < hi_wavelen) {
                g = f; /* high frequency: unchanged */
            } else if (wavelen > lo_wavelen) {
                g = f / factor; /* low frequency: scaled */
            } else { /* in between: smooth interpolation */
                double smooth = (old_ctx / wavelen - lo) / (hi - lo);
                g = (1.0 - smooth) * f / factor + smooth * f;
            }
            r->inv_freq[i] = (float)g;
        }
        break;
    }
    case LF_ROPE_YARN: {
        double factor = rc->factor, base = rc->theta;
        double orig = rc->original_max_position > 0 ? rc->original_max_position : cfg->max_position;
        if (!(orig > 0)) {
            lf_rope_free(r);
            return lf_fail(err, "rope: yarn scaling needs original_max_position_embeddings > 0");
        }
        double beta_fast = rc->beta_fast != 0 ? rc->beta_fast : 32.0;
        double beta_slow = rc->beta_slow != 0 ? rc->beta_slow : 1.0;
        if (rc->attention_factor > 0)
            r->attention_factor = (float)rc->attention_factor;
        else
            r->attention_factor = factor <= 1.0 ? 1.0f : (float)(0.1 * log(factor) + 1.0);
        double low = floor(yarn_correction_dim(beta_fast, dim, base, orig));
        double high = ceil(yarn_correction_dim(beta_slow, dim, base, orig));
        if (low < 0) low = 0;
        if (high > dim - 1) high = dim - 1;
        if (low == high) high += 0.001;
        for (int i = 0; i < half; i++) {
            float pos_freq;
            float extra = default_inv_freq(base, i, dim, &pos_freq);
            float inter = 1.0f / ((float)factor * pos_freq);
            double ramp = ((double)i - low) / (high - low);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            double extra_factor = 1.0 - ramp;
            r->inv_freq[i] = (float)(inter * (1.0 - extra_factor) + extra * extra_factor);
        }
        break;
    }
    default:
        lf_rope_free(r);
        return lf_fail(err, "rope: unknown rope type %d", (int)rc->type);
    }
    return 0;
}

void lf_rope_free(lf_rope *r) {
    free(r->inv_freq);
    r->inv_freq = NULL;
}

void lf_rope_cos_sin(const lf_rope *r, int pos, float *cos_out, float *sin_out) {
    int half = r->head_dim / 2;
    for (int i = 0; i < half; i++) {
        float ang = (float)pos * r->inv_freq[i]; /* float32 product, as transformers */
        cos_out[i] = (float)cos((double)ang) * r->attention_factor;
        sin_out[i] = (float)sin((double)ang) * r->attention_factor;
    }
}

void lf_rope_apply(float *x, int n_heads, int head_dim, const float *cos_, const float *sin_) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *a = x + (size_t)h * head_dim, *b = a + half;
        for (int i = 0; i < half; i++) {
            float x1 = a[i], x2 = b[i];
            a[i] = x1 * cos_[i] - x2 * sin_[i];
            b[i] = x2 * cos_[i] + x1 * sin_[i];
        }
    }
}
