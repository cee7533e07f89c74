/* config.json / generation_config.json reader and the named shape presets.
 *
 * Both config.json forms are read: the older one (top-level rope_theta,
 * rope_scaling, torch_dtype) and the newer transformers 5 one
 * (rope_parameters holding rope_theta/rope_type/scaling fields, dtype).
 * Defaults follow transformers' configuration classes for the three
 * supported architectures. */
#include "model/config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/file.h"

/* ---- JSON helpers ------------------------------------------------------- */

static const cJSON *jget(const cJSON *o, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    return (j && !cJSON_IsNull(j)) ? j : NULL;
}

/* An integer-valued key. Missing: *out = def (or an error when required). */
static int get_int(const cJSON *o, const char *key, bool required, int def, int *out, const char *path,
                   lf_error *err) {
    const cJSON *j = jget(o, key);
    if (!j) {
        if (required) return lf_fail(err, "%s: missing key \"%s\"", path, key);
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(j) || j->valuedouble != floor(j->valuedouble) || j->valuedouble > 2147483647.0 ||
        j->valuedouble < -2147483648.0)
        return lf_fail(err, "%s: key \"%s\" is not an integer", path, key);
    *out = (int)j->valuedouble;
    return 0;
}

static int get_double(const cJSON *o, const char *key, bool required, double def, double *out, const char *path,
                      lf_error *err) {
    const cJSON *j = jget(o, key);
    if (!j) {
        if (required) return lf_fail(err, "%s: missing key \"%s\"", path, key);
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble))
        return lf_fail(err, "%s: key \"%s\" is not a finite number", path, key);
    *out = j->valuedouble;
    return 0;
}

static int get_bool(const cJSON *o, const char *key, bool def, bool *out, const char *path, lf_error *err) {
    const cJSON *j = jget(o, key);
    if (!j) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(j)) return lf_fail(err, "%s: key \"%s\" is not true or false", path, key);
    *out = cJSON_IsTrue(j);
    return 0;
}

/* The bounds of config.json's dimensions, written once: get_dim applies
 * them to the JSON values, lf_config_check_shape to a filled lf_config. */
static const struct dim_rule {
    const char *key;
    int hi;
} dim_rules[] = {
    {"vocab_size", LF_MAX_VOCAB},         {"hidden_size", LF_MAX_HIDDEN},
    {"intermediate_size", LF_MAX_INTERMEDIATE}, {"num_hidden_layers", LF_MAX_LAYERS},
    {"num_attention_heads", LF_MAX_HEADS}, {"num_key_value_heads", LF_MAX_HEADS},
    {"head_dim", LF_MAX_HEAD_DIM},         {"max_position_embeddings", LF_MAX_POSITION},
};
enum { N_DIMS = sizeof dim_rules / sizeof dim_rules[0] };

/* The fields of c in dim_rules' order. */
static void dim_values(const lf_config *c, long long v[N_DIMS]) {
    const long long x[N_DIMS] = {c->vocab_size, c->hidden_size, c->intermediate_size, c->n_layers,
                                 c->n_heads,    c->n_kv_heads,  c->head_dim,          c->max_position};
    memcpy(v, x, sizeof x);
}

static int check_dim(const struct dim_rule *r, double v, const char *path, lf_error *err) {
    if (v >= 1 && v <= r->hi) return 0;
    return lf_fail(err, "%s: key \"%s\" = %.0f is out of range [1, %d]", path, r->key, v, r->hi);
}

/* A dimension: an integer key within its rule (missing: def, or an error
 * when required). The message names the key and the value as written. */
static int get_dim(const cJSON *o, const char *key, bool required, int def, int *out, const char *path,
                   lf_error *err) {
    const struct dim_rule *r = NULL;
    for (int i = 0; i < N_DIMS && !r; i++)
        if (!strcmp(dim_rules[i].key, key)) r = &dim_rules[i];
    const cJSON *j = jget(o, key);
    if (!j && required) return lf_fail(err, "%s: missing key \"%s\"", path, key);
    double v = j ? j->valuedouble : def;
    if (j && (!cJSON_IsNumber(j) || v != floor(v)))
        return lf_fail(err, "%s: key \"%s\" is not an integer", path, key);
    if (!r) return lf_fail(err, "%s: internal error: no bound for key \"%s\"", path, key);
    if (check_dim(r, v, path, err)) return -1;
    *out = (int)v;
    return 0;
}

/* Every weight matrix has fewer than 2^31 elements (the largest supported
 * checkpoints have about 2.1e9), so a product of two dimensions fits an int
 * wherever the code forms one. Products in 64 bits. */
static int check_matrices(const lf_config *c, const char *path, lf_error *err) {
    const struct {
        const char *a, *b;
        long long x, y;
    } m[] = {
        {"vocab_size", "hidden_size", c->vocab_size, c->hidden_size},
        {"intermediate_size", "hidden_size", c->intermediate_size, c->hidden_size},
        {"num_attention_heads x head_dim", "hidden_size", (long long)c->n_heads * c->head_dim, c->hidden_size},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        const long long n = m[i].x * m[i].y;
        if (n > LF_MAX_MATRIX)
            return lf_fail(err, "%s: %s (%lld) x %s (%lld) = %lld elements in one weight matrix, more than %lld", path,
                           m[i].a, m[i].x, m[i].b, m[i].y, n, (long long)LF_MAX_MATRIX);
    }
    return 0;
}

int lf_config_check_shape(const lf_config *c, const char *path, lf_error *err) {
    long long v[N_DIMS];
    dim_values(c, v);
    for (int i = 0; i < N_DIMS; i++)
        if (check_dim(&dim_rules[i], (double)v[i], path, err)) return -1;
    if (c->n_heads % c->n_kv_heads != 0)
        return lf_fail(err, "%s: key \"num_attention_heads\" (%d) is not a multiple of \"num_key_value_heads\" (%d)",
                       path, c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2 != 0) return lf_fail(err, "%s: key \"head_dim\" (%d) must be even for RoPE", path, c->head_dim);
    return check_matrices(c, path, err);
}

/* eos_token_id: an int or a list of ints. Returns 1 when present and read,
 * 0 when absent, -1 on error. */
static int read_eos(const cJSON *o, int *ids, int *n, const char *path, lf_error *err) {
    const cJSON *j = jget(o, "eos_token_id");
    if (!j) return 0;
    if (cJSON_IsNumber(j)) {
        int v = 0;
        if (get_int(o, "eos_token_id", true, 0, &v, path, err) != 0) return -1;
        if (v < 0) return lf_fail(err, "%s: key \"eos_token_id\" is negative (%d)", path, v);
        ids[0] = v;
        *n = 1;
        return 1;
    }
    if (!cJSON_IsArray(j)) return lf_fail(err, "%s: key \"eos_token_id\" is neither an integer nor a list", path);
    int cnt = cJSON_GetArraySize(j);
    if (cnt > LF_MAX_EOS)
        return lf_fail(err, "%s: key \"eos_token_id\" lists %d ids, at most %d supported", path, cnt, LF_MAX_EOS);
    int k = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, j) {
        if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < 0 ||
            e->valuedouble > 2147483647.0)
            return lf_fail(err, "%s: key \"eos_token_id\" holds something that is not a token id", path);
        ids[k++] = (int)e->valuedouble;
    }
    *n = k;
    return 1;
}

static int read_bos(const cJSON *o, int *bos, const char *path, lf_error *err) {
    const cJSON *j = jget(o, "bos_token_id");
    if (!j) return 0;
    int v = 0;
    if (get_int(o, "bos_token_id", true, 0, &v, path, err) != 0) return -1;
    if (v < 0) return lf_fail(err, "%s: key \"bos_token_id\" is negative (%d)", path, v);
    *bos = v;
    return 1;
}

static int parse_dtype_name(const char *s, lf_dtype *out) {
    if (!strcmp(s, "bfloat16") || !strcmp(s, "bf16")) *out = LF_DTYPE_BF16;
    else if (!strcmp(s, "float16") || !strcmp(s, "half") || !strcmp(s, "fp16")) *out = LF_DTYPE_F16;
    else if (!strcmp(s, "float32") || !strcmp(s, "float") || !strcmp(s, "fp32")) *out = LF_DTYPE_F32;
    else return -1;
    return 0;
}

/* ---- rope --------------------------------------------------------------- */

/* rp: the rope dict (rope_parameters or rope_scaling), or NULL. top: the
 * whole config (for top-level rope_theta and max_position_embeddings).
 * kname: the name of the dict in messages. */
static int parse_rope(const cJSON *top, const cJSON *rp, const char *kname, int max_position, lf_rope_config *r,
                      const char *path, lf_error *err) {
    memset(r, 0, sizeof *r);
    r->type = LF_ROPE_DEFAULT;
    r->factor = 1.0;
    r->beta_fast = 32.0;
    r->beta_slow = 1.0;
    r->original_max_position = max_position;
    /* rope_theta: in the dict first, then top level, then 10000. */
    double top_theta = 10000.0;
    if (get_double(top, "rope_theta", false, 10000.0, &top_theta, path, err) != 0) return -1;
    r->theta = top_theta;
    double prf = 1.0;
    if (get_double(top, "partial_rotary_factor", false, 1.0, &prf, path, err) != 0) return -1;
    if (prf != 1.0) return lf_fail(err, "%s: key \"partial_rotary_factor\" = %g is not supported (only 1)", path, prf);
    if (!rp) goto check;
    if (!cJSON_IsObject(rp)) return lf_fail(err, "%s: key \"%s\" is not an object", path, kname);

    char key[96];
    const cJSON *jt = jget(rp, "rope_type");
    if (!jt) jt = jget(rp, "type");
    const char *type = "default";
    if (jt) {
        if (!cJSON_IsString(jt)) return lf_fail(err, "%s: key \"%s.rope_type\" is not a string", path, kname);
        type = jt->valuestring;
    }
    if (!strcmp(type, "default")) r->type = LF_ROPE_DEFAULT;
    else if (!strcmp(type, "linear")) r->type = LF_ROPE_LINEAR;
    else if (!strcmp(type, "llama3")) r->type = LF_ROPE_LLAMA3;
    else if (!strcmp(type, "yarn")) r->type = LF_ROPE_YARN;
    else
        return lf_fail(err, "%s: key \"%s.rope_type\": unsupported rope type \"%s\" (supported: default, linear, "
                       "llama3, yarn)", path, kname, type);

    snprintf(key, sizeof key, "%s.rope_theta", kname);
    const cJSON *jth = jget(rp, "rope_theta");
    if (jth) {
        if (!cJSON_IsNumber(jth) || !isfinite(jth->valuedouble))
            return lf_fail(err, "%s: key \"%s\" is not a finite number", path, key);
        r->theta = jth->valuedouble;
    }
    const cJSON *jprf = jget(rp, "partial_rotary_factor");
    if (jprf && (!cJSON_IsNumber(jprf) || jprf->valuedouble != 1.0))
        return lf_fail(err, "%s: key \"%s.partial_rotary_factor\" is not supported (only 1)", path, kname);

    /* factor: required for every scaled type */
    if (r->type != LF_ROPE_DEFAULT) {
        const cJSON *jf = jget(rp, "factor");
        if (!jf) return lf_fail(err, "%s: missing key \"%s.factor\" (needed by rope type %s)", path, kname, type);
        if (!cJSON_IsNumber(jf) || !isfinite(jf->valuedouble) || jf->valuedouble <= 0)
            return lf_fail(err, "%s: key \"%s.factor\" must be a positive number", path, kname);
        r->factor = jf->valuedouble;
    }
    if (r->type == LF_ROPE_LLAMA3 || r->type == LF_ROPE_YARN) {
        /* transformers falls back to max_position_embeddings */
        const cJSON *jo = jget(rp, "original_max_position_embeddings");
        if (jo) {
            if (!cJSON_IsNumber(jo) || jo->valuedouble != floor(jo->valuedouble) || jo->valuedouble <= 0 ||
                jo->valuedouble > 2147483647.0)
                return lf_fail(err, "%s: key \"%s.original_max_position_embeddings\" must be a positive integer",
                               path, kname);
            r->original_max_position = (int)jo->valuedouble;
        }
    }
    if (r->type == LF_ROPE_LLAMA3) {
        const char *names[2] = {"low_freq_factor", "high_freq_factor"};
        double *dst[2] = {&r->low_freq_factor, &r->high_freq_factor};
        for (int i = 0; i < 2; i++) {
            const cJSON *j = jget(rp, names[i]);
            if (!j) return lf_fail(err, "%s: missing key \"%s.%s\" (needed by rope type llama3)", path, kname, names[i]);
            if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble) || j->valuedouble <= 0)
                return lf_fail(err, "%s: key \"%s.%s\" must be a positive number", path, kname, names[i]);
            *dst[i] = j->valuedouble;
        }
        if (r->high_freq_factor <= r->low_freq_factor)
            return lf_fail(err, "%s: key \"%s.high_freq_factor\" must be larger than low_freq_factor", path, kname);
    }
    if (r->type == LF_ROPE_YARN) {
        const char *names[3] = {"beta_fast", "beta_slow", "attention_factor"};
        double *dst[3] = {&r->beta_fast, &r->beta_slow, &r->attention_factor};
        for (int i = 0; i < 3; i++) {
            const cJSON *j = jget(rp, names[i]);
            if (!j) continue;
            if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble) || j->valuedouble < 0)
                return lf_fail(err, "%s: key \"%s.%s\" must be a non-negative number", path, kname, names[i]);
            /* transformers: `get("beta_fast") or 32`, so 0 means default */
            if (j->valuedouble > 0 || i == 2) *dst[i] = j->valuedouble;
        }
        const cJSON *jtr = jget(rp, "truncate");
        if (jtr && !cJSON_IsTrue(jtr))
            return lf_fail(err, "%s: key \"%s.truncate\" = false is not supported", path, kname);
        /* mscale/mscale_all_dim (DeepSeek style): fold into attention_factor
         * the way transformers does when attention_factor is absent. */
        const cJSON *jm = jget(rp, "mscale"), *jma = jget(rp, "mscale_all_dim");
        if (!jget(rp, "attention_factor") && jm && jma && cJSON_IsNumber(jm) && cJSON_IsNumber(jma) &&
            jm->valuedouble != 0 && jma->valuedouble != 0) {
            double f = r->factor;
            double a = f <= 1 ? 1.0 : 0.1 * jm->valuedouble * log(f) + 1.0;
            double b = f <= 1 ? 1.0 : 0.1 * jma->valuedouble * log(f) + 1.0;
            r->attention_factor = a / b;
        }
    }
check:
    if (!(r->theta > 0)) return lf_fail(err, "%s: key \"rope_theta\" must be positive", path);
    if (r->original_max_position <= 0)
        return lf_fail(err, "%s: key \"original_max_position_embeddings\" must be positive", path);
    return 0;
}

/* ---- config.json -------------------------------------------------------- */

static void config_clear(lf_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->bos_token_id = -1;
    cfg->dtype = LF_DTYPE_F32;
    cfg->gen_temperature = NAN;
    cfg->gen_top_p = NAN;
    cfg->gen_min_p = NAN;
    cfg->gen_top_k = -1;
}

static int parse_root(const cJSON *root, const char *path, lf_config *cfg, lf_error *err) {
    if (!cJSON_IsObject(root)) return lf_fail(err, "%s: not a JSON object", path);

    /* architecture */
    const cJSON *ja = jget(root, "architectures");
    if (!ja) return lf_fail(err, "%s: missing key \"architectures\"", path);
    const cJSON *jname = cJSON_IsArray(ja) ? cJSON_GetArrayItem(ja, 0) : ja;
    if (!cJSON_IsString(jname))
        return lf_fail(err, "%s: key \"architectures\" is not a list of names", path);
    const char *an = jname->valuestring;
    if (!strcmp(an, "Qwen3ForCausalLM")) cfg->arch = LF_ARCH_QWEN3;
    else if (!strcmp(an, "Qwen2ForCausalLM")) cfg->arch = LF_ARCH_QWEN2;
    else if (!strcmp(an, "LlamaForCausalLM")) cfg->arch = LF_ARCH_LLAMA;
    else
        return lf_fail(err, "%s: unknown architecture \"%s\" (supported: Qwen3ForCausalLM, Qwen2ForCausalLM, "
                       "LlamaForCausalLM)", path, an);
    snprintf(cfg->arch_name, sizeof cfg->arch_name, "%s", an);

    /* sizes, each within its bound before anything is sized by it */
    if (get_dim(root, "vocab_size", true, 0, &cfg->vocab_size, path, err) ||
        get_dim(root, "hidden_size", true, 0, &cfg->hidden_size, path, err) ||
        get_dim(root, "intermediate_size", true, 0, &cfg->intermediate_size, path, err) ||
        get_dim(root, "num_hidden_layers", true, 0, &cfg->n_layers, path, err) ||
        get_dim(root, "num_attention_heads", true, 0, &cfg->n_heads, path, err))
        return -1;
    /* num_key_value_heads: Qwen2Config and Qwen3Config default to 32,
     * LlamaConfig to num_attention_heads. */
    int kv_default = cfg->arch == LF_ARCH_LLAMA ? cfg->n_heads : 32;
    if (get_dim(root, "num_key_value_heads", false, kv_default, &cfg->n_kv_heads, path, err))
        return -1;
    /* head_dim: Qwen3's config class defaults to 128; Qwen2 and Llama use
     * hidden_size / num_attention_heads. */
    int hd_default = cfg->arch == LF_ARCH_QWEN3 ? 128 : cfg->hidden_size / cfg->n_heads;
    if (cfg->arch != LF_ARCH_QWEN3 && !jget(root, "head_dim") && cfg->hidden_size % cfg->n_heads != 0)
        return lf_fail(err, "%s: key \"hidden_size\" (%d) is not a multiple of \"num_attention_heads\" (%d) and "
                       "\"head_dim\" is absent", path, cfg->hidden_size, cfg->n_heads);
    if (get_dim(root, "head_dim", false, hd_default, &cfg->head_dim, path, err)) return -1;
    int maxpos_default = cfg->arch == LF_ARCH_LLAMA ? 2048 : 32768;
    if (get_dim(root, "max_position_embeddings", false, maxpos_default, &cfg->max_position, path, err) ||
        lf_config_check_shape(cfg, path, err))
        return -1;
    if (get_double(root, "rms_norm_eps", false, 1e-6, &cfg->rms_norm_eps, path, err)) return -1;
    if (!(cfg->rms_norm_eps > 0 && cfg->rms_norm_eps < 1))
        return lf_fail(err, "%s: key \"rms_norm_eps\" must be in (0, 1), got %g", path, cfg->rms_norm_eps);

    /* activation */
    const cJSON *jact = jget(root, "hidden_act");
    if (jact && (!cJSON_IsString(jact) || strcmp(jact->valuestring, "silu") != 0))
        return lf_fail(err, "%s: key \"hidden_act\": only \"silu\" is supported", path);

    /* sliding window attention is not implemented: refuse rather than be wrong */
    bool sliding = false;
    if (get_bool(root, "use_sliding_window", false, &sliding, path, err)) return -1;
    if (sliding && cfg->arch != LF_ARCH_LLAMA)
        return lf_fail(err, "%s: key \"use_sliding_window\" = true is not supported", path);
    const cJSON *jlt = jget(root, "layer_types");
    if (jlt) {
        const cJSON *e;
        cJSON_ArrayForEach(e, jlt) {
            if (!cJSON_IsString(e) || strcmp(e->valuestring, "full_attention") != 0)
                return lf_fail(err, "%s: key \"layer_types\": only \"full_attention\" layers are supported", path);
        }
    }

    /* flags */
    bool attention_bias = false, mlp_bias = false;
    if (get_bool(root, "tie_word_embeddings", false, &cfg->tie_word_embeddings, path, err) ||
        get_bool(root, "attention_bias", false, &attention_bias, path, err) ||
        get_bool(root, "mlp_bias", false, &mlp_bias, path, err))
        return -1;
    cfg->qk_norm = cfg->arch == LF_ARCH_QWEN3;
    switch (cfg->arch) {
    case LF_ARCH_QWEN2: /* q/k/v always biased, o never */
        cfg->qkv_bias = true;
        cfg->o_bias = false;
        mlp_bias = false;
        break;
    case LF_ARCH_QWEN3: /* attention_bias biases q/k/v/o */
    case LF_ARCH_LLAMA:
        cfg->qkv_bias = attention_bias;
        cfg->o_bias = attention_bias;
        if (cfg->arch == LF_ARCH_QWEN3) mlp_bias = false;
        break;
    }
    if (mlp_bias)
        return lf_fail(err, "%s: key \"mlp_bias\" = true is not supported (no MLP bias in the forward pass)", path);
    cfg->mlp_bias = false;

    /* rope: "rope_scaling" (older form) wins over "rope_parameters", as in
     * transformers. */
    const cJSON *rp = jget(root, "rope_scaling");
    const char *kname = "rope_scaling";
    if (!rp) {
        rp = jget(root, "rope_parameters");
        kname = "rope_parameters";
    }
    if (parse_rope(root, rp, kname, cfg->max_position, &cfg->rope, path, err)) return -1;

    /* dtype */
    const cJSON *jd = jget(root, "dtype");
    const char *dkey = "dtype";
    if (!jd) {
        jd = jget(root, "torch_dtype");
        dkey = "torch_dtype";
    }
    if (jd) {
        if (!cJSON_IsString(jd) || parse_dtype_name(jd->valuestring, &cfg->dtype) != 0)
            return lf_fail(err, "%s: key \"%s\": unsupported dtype (supported: bfloat16, float16, float32)", path, dkey);
    }

    /* special tokens */
    if (read_bos(root, &cfg->bos_token_id, path, err) < 0) return -1;
    if (read_eos(root, cfg->eos_token_ids, &cfg->n_eos, path, err) < 0) return -1;
    return 0;
}

int lf_config_parse(const char *json, const char *path, lf_config *cfg, lf_error *err) {
    config_clear(cfg);
    cJSON *root = cJSON_Parse(json);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && at >= json ? (long)(at - json) : -1;
        return lf_fail(err, "%s: malformed JSON (parse error near byte %ld)", path, off);
    }
    int rc = parse_root(root, path, cfg, err);
    cJSON_Delete(root);
    return rc;
}

/* generation_config.json: eos/bos (they win over config.json) and the
 * sampling defaults. */
static int parse_generation(const char *json, const char *path, lf_config *cfg, lf_error *err) {
    cJSON *root = cJSON_Parse(json);
    if (!root) return lf_fail(err, "%s: malformed JSON", path);
    int rc = -1;
    if (!cJSON_IsObject(root)) {
        lf_fail(err, "%s: not a JSON object", path);
        goto out;
    }
    int ids[LF_MAX_EOS], n = 0;
    int r = read_eos(root, ids, &n, path, err);
    if (r < 0) goto out;
    if (r > 0) {
        memcpy(cfg->eos_token_ids, ids, sizeof ids);
        cfg->n_eos = n;
    }
    if (read_bos(root, &cfg->bos_token_id, path, err) < 0) goto out;
    double t = NAN, p = NAN, mp = NAN;
    int k = -1;
    if (get_double(root, "temperature", false, NAN, &t, path, err) ||
        get_double(root, "top_p", false, NAN, &p, path, err) ||
        get_double(root, "min_p", false, NAN, &mp, path, err) ||
        get_int(root, "top_k", false, -1, &k, path, err))
        goto out;
    cfg->gen_temperature = (float)t;
    cfg->gen_top_p = (float)p;
    cfg->gen_min_p = (float)mp;
    cfg->gen_top_k = k;
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}

int lf_config_load(const char *dir, lf_config *cfg, lf_error *err) {
    config_clear(cfg);
    char *path = lf_path_join(dir, "config.json");
    if (!path) return lf_fail(err, "%s: out of memory", dir);
    char *text = NULL;
    if (!lf_file_exists(path)) {
        lf_fail(err, "%s: missing config.json (not a Hugging Face model directory?)", path);
        free(path);
        return -1;
    }
    if (lf_read_file(path, &text, NULL, err) != 0) {
        free(path);
        return -1;
    }
    int rc = lf_config_parse(text, path, cfg, err);
    free(text);
    free(path);
    if (rc != 0) return -1;

    path = lf_path_join(dir, "generation_config.json");
    if (!path) return lf_fail(err, "%s: out of memory", dir);
    if (lf_file_exists(path)) {
        if (lf_read_file(path, &text, NULL, err) != 0) {
            free(path);
            return -1;
        }
        rc = parse_generation(text, path, cfg, err);
        free(text);
    }
    free(path);
    return rc;
}

bool lf_config_is_eos(const lf_config *cfg, int token) {
    for (int i = 0; i < cfg->n_eos; i++)
        if (cfg->eos_token_ids[i] == token) return true;
    return false;
}

/* ---- presets ------------------------------------------------------------ */

typedef struct {
    const char *name;
    lf_arch arch;
    int vocab, hidden, inter, layers, heads, kv, hd, maxpos;
    double eps, theta;
    bool tied;
    lf_rope_type rope;
    double factor, low, high;
    int orig;
    int bos;
    int eos[3];
    int n_eos;
} lf_preset;

/* Shapes as published in each model's config.json on the Hugging Face hub. */
static const lf_preset presets[] = {
    {"qwen3-0.6b", LF_ARCH_QWEN3, 151936, 1024, 3072, 28, 16, 8, 128, 40960, 1e-6, 1e6, true,
     LF_ROPE_DEFAULT, 1, 0, 0, 0, 151643, {151645}, 1},
    {"qwen3-1.7b", LF_ARCH_QWEN3, 151936, 2048, 6144, 28, 16, 8, 128, 40960, 1e-6, 1e6, true,
     LF_ROPE_DEFAULT, 1, 0, 0, 0, 151643, {151645}, 1},
    {"qwen3-4b", LF_ARCH_QWEN3, 151936, 2560, 9728, 36, 32, 8, 128, 40960, 1e-6, 1e6, true,
     LF_ROPE_DEFAULT, 1, 0, 0, 0, 151643, {151645}, 1},
    {"qwen3-8b", LF_ARCH_QWEN3, 151936, 4096, 12288, 36, 32, 8, 128, 40960, 1e-6, 1e6, false,
     LF_ROPE_DEFAULT, 1, 0, 0, 0, 151643, {151645}, 1},
    {"qwen2.5-7b", LF_ARCH_QWEN2, 152064, 3584, 18944, 28, 28, 4, 128, 32768, 1e-6, 1e6, false,
     LF_ROPE_DEFAULT, 1, 0, 0, 0, 151643, {151643}, 1},
    {"deepseek-r1-distill-qwen-7b", LF_ARCH_QWEN2, 152064, 3584, 18944, 28, 28, 4, 128, 131072, 1e-6, 1e4,
     false, LF_ROPE_DEFAULT, 1, 0, 0, 0, 151646, {151643}, 1},
    {"deepseek-r1-distill-qwen-1.5b", LF_ARCH_QWEN2, 151936, 1536, 8960, 28, 12, 2, 128, 131072, 1e-6, 1e4,
     false, LF_ROPE_DEFAULT, 1, 0, 0, 0, 151646, {151643}, 1},
    {"deepseek-r1-distill-llama-8b", LF_ARCH_LLAMA, 128256, 4096, 14336, 32, 32, 8, 128, 131072, 1e-5, 5e5,
     false, LF_ROPE_LLAMA3, 8, 1, 4, 8192, 128000, {128001}, 1},
    {"llama-3.2-1b", LF_ARCH_LLAMA, 128256, 2048, 8192, 16, 32, 8, 64, 131072, 1e-5, 5e5, true,
     LF_ROPE_LLAMA3, 32, 1, 4, 8192, 128000, {128001, 128008, 128009}, 3},
    /* small shape for tests: explicit head_dim (32) != hidden/heads (16), GQA 2 */
    {"test-tiny", LF_ARCH_QWEN3, 512, 64, 128, 2, 4, 2, 32, 4096, 1e-6, 1e4, false,
     LF_ROPE_DEFAULT, 1, 0, 0, 0, 1, {2}, 1},
};

const char *const lf_config_preset_names[] = {
    "qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen2.5-7b", "deepseek-r1-distill-qwen-7b",
    "deepseek-r1-distill-qwen-1.5b", "deepseek-r1-distill-llama-8b", "llama-3.2-1b", "test-tiny", NULL,
};

int lf_config_preset(const char *name, lf_config *cfg, lf_error *err) {
    config_clear(cfg);
    const lf_preset *p = NULL;
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (name && strcmp(presets[i].name, name) == 0) p = &presets[i];
    if (!p) {
        char list[512] = "";
        size_t len = 0;
        for (int i = 0; lf_config_preset_names[i]; i++)
            len += (size_t)snprintf(list + len, len < sizeof list ? sizeof list - len : 0, "%s%s", i ? ", " : "",
                                    lf_config_preset_names[i]);
        return lf_fail(err, "unknown model preset \"%s\" (known: %s)", name ? name : "(null)", list);
    }
    static const char *arch_names[] = {"Qwen3ForCausalLM", "Qwen2ForCausalLM", "LlamaForCausalLM"};
    cfg->arch = p->arch;
    snprintf(cfg->arch_name, sizeof cfg->arch_name, "%s", arch_names[p->arch]);
    cfg->vocab_size = p->vocab;
    cfg->hidden_size = p->hidden;
    cfg->intermediate_size = p->inter;
    cfg->n_layers = p->layers;
    cfg->n_heads = p->heads;
    cfg->n_kv_heads = p->kv;
    cfg->head_dim = p->hd;
    cfg->max_position = p->maxpos;
    cfg->rms_norm_eps = p->eps;
    cfg->rope.type = p->rope;
    cfg->rope.theta = p->theta;
    cfg->rope.factor = p->factor;
    cfg->rope.low_freq_factor = p->low;
    cfg->rope.high_freq_factor = p->high;
    cfg->rope.original_max_position = p->orig ? p->orig : p->maxpos;
    cfg->rope.beta_fast = 32;
    cfg->rope.beta_slow = 1;
    cfg->tie_word_embeddings = p->tied;
    cfg->qk_norm = p->arch == LF_ARCH_QWEN3;
    cfg->qkv_bias = p->arch == LF_ARCH_QWEN2;
    cfg->bos_token_id = p->bos;
    for (int i = 0; i < p->n_eos; i++) cfg->eos_token_ids[i] = p->eos[i];
    cfg->n_eos = p->n_eos;
    cfg->dtype = LF_DTYPE_BF16;
    return 0;
}
