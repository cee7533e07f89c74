/* Model loading: a Hugging Face model directory (config.json, optional
 * generation_config.json, model.safetensors or a sharded set listed in
 * model.safetensors.index.json), and random-weight models of named shapes
 * for benchmarks. Loaded weights stay inside the read-only mappings. */
#include "model/model.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/error.h"
#include "core/file.h"
#include "core/fp.h"
#include "model/gguf_model.h"

const lf_config *lf_model_config(const lf_model *m) { return m ? &m->cfg : NULL; }

void lf_model_free(lf_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_files; i++) lf_st_close(&m->files[i]);
    free(m->files);
    free(m->layers);
    free(m->owned);
    free(m->dir);
    free(m);
}

/* ---- the list of weights an architecture needs ------------------------- */

typedef struct {
    char name[96];
    lf_weight *dst;
    int rows, cols; /* rows == 0: a vector of cols elements */
} lf_wspec;

typedef struct {
    lf_wspec *v;
    int n, cap;
} lf_wlist;

/* layer < 0: a top-level tensor named leaf; else model.layers.<layer>.<leaf> */
static int wl_add(lf_wlist *l, lf_weight *dst, int rows, int cols, int layer, const char *leaf) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        lf_wspec *v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v) return -1;
        l->v = v;
        l->cap = cap;
    }
    lf_wspec *s = &l->v[l->n++];
    if (layer < 0) snprintf(s->name, sizeof s->name, "%s", leaf);
    else snprintf(s->name, sizeof s->name, "model.layers.%d.%s", layer, leaf);
    s->dst = dst;
    s->rows = rows;
    s->cols = cols;
    return 0;
}

/* Every tensor the config implies, in file order-independent form. The
 * lm_head is listed only when untied. */
static int build_specs(lf_model *m, lf_wlist *l) {
    const lf_config *c = &m->cfg;
    int H = c->hidden_size, I = c->intermediate_size, hd = c->head_dim;
    int q = c->n_heads * hd, kv = c->n_kv_heads * hd;
    int rc = 0;
    rc |= wl_add(l, &m->embed, c->vocab_size, H, -1, "model.embed_tokens.weight");
    rc |= wl_add(l, &m->final_norm, 0, H, -1, "model.norm.weight");
    if (!c->tie_word_embeddings) rc |= wl_add(l, &m->lm_head, c->vocab_size, H, -1, "lm_head.weight");
    for (int i = 0; i < c->n_layers && rc == 0; i++) {
        lf_layer_weights *w = &m->layers[i];
        rc |= wl_add(l, &w->attn_norm, 0, H, i, "input_layernorm.weight");
        rc |= wl_add(l, &w->ffn_norm, 0, H, i, "post_attention_layernorm.weight");
        rc |= wl_add(l, &w->wq, q, H, i, "self_attn.q_proj.weight");
        rc |= wl_add(l, &w->wk, kv, H, i, "self_attn.k_proj.weight");
        rc |= wl_add(l, &w->wv, kv, H, i, "self_attn.v_proj.weight");
        rc |= wl_add(l, &w->wo, H, q, i, "self_attn.o_proj.weight");
        if (c->qkv_bias) {
            rc |= wl_add(l, &w->bq, 0, q, i, "self_attn.q_proj.bias");
            rc |= wl_add(l, &w->bk, 0, kv, i, "self_attn.k_proj.bias");
            rc |= wl_add(l, &w->bv, 0, kv, i, "self_attn.v_proj.bias");
        }
        if (c->o_bias) rc |= wl_add(l, &w->bo, 0, H, i, "self_attn.o_proj.bias");
        if (c->qk_norm) {
            rc |= wl_add(l, &w->q_norm, 0, hd, i, "self_attn.q_norm.weight");
            rc |= wl_add(l, &w->k_norm, 0, hd, i, "self_attn.k_norm.weight");
        }
        rc |= wl_add(l, &w->w_gate, I, H, i, "mlp.gate_proj.weight");
        rc |= wl_add(l, &w->w_up, I, H, i, "mlp.up_proj.weight");
        rc |= wl_add(l, &w->w_down, H, I, i, "mlp.down_proj.weight");
    }
    return rc ? -1 : 0;
}

size_t lf_weight_nbytes(const lf_weight *w) {
    return w->data ? (size_t)w->rows * lf_dtype_row_bytes(w->dtype, (size_t)w->cols) : 0;
}

/* weight_bytes: every distinct weight; decode bytes: everything a decode
 * step reads (all layers, final norm, lm_head; the embedding table only as
 * the lm_head when tied). */
static void compute_sizes(lf_model *m) {
    size_t layers = 0;
    for (int i = 0; i < m->cfg.n_layers; i++) {
        const lf_layer_weights *w = &m->layers[i];
        const lf_weight *all[] = {&w->attn_norm, &w->wq, &w->wk, &w->wv, &w->wo, &w->bq, &w->bk,
                                  &w->bv, &w->bo, &w->q_norm, &w->k_norm, &w->ffn_norm, &w->w_gate,
                                  &w->w_up, &w->w_down};
        for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) layers += lf_weight_nbytes(all[k]);
    }
    size_t norm = lf_weight_nbytes(&m->final_norm);
    size_t head = lf_weight_nbytes(&m->lm_head);
    size_t embed = lf_weight_nbytes(&m->embed);
    m->weight_bytes = layers + norm + embed + (m->cfg.tie_word_embeddings ? 0 : head);
    m->decode_bytes_per_token = layers + norm + head;
}

static void shape_str(const lf_tensor *t, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < t->ndim && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

static void spec_shape_str(const lf_wspec *s, char *buf, size_t n) {
    if (s->rows) snprintf(buf, n, "[%d, %d]", s->rows, s->cols);
    else snprintf(buf, n, "[%d]", s->cols);
}

static int bind_tensor(const lf_wspec *s, const lf_tensor *t, const char *file, lf_error *err) {
    bool ok = s->rows ? (t->ndim == 2 && t->shape[0] == s->rows && t->shape[1] == s->cols)
                      : (t->ndim == 1 && t->shape[0] == s->cols);
    if (!ok) {
        char have[96], want[64];
        shape_str(t, have, sizeof have);
        spec_shape_str(s, want, sizeof want);
        return lf_fail(err, "%s: tensor '%s' has shape %s, config.json implies %s", file, s->name, have, want);
    }
    s->dst->data = t->data;
    s->dst->dtype = t->dtype;
    s->dst->rows = s->rows ? s->rows : 1;
    s->dst->cols = s->cols;
    return 0;
}

/* Tensors that appear in some checkpoints and carry nothing we need. */
static bool ignorable(const char *name) {
    size_t n = strlen(name);
    const char *suffix = "rotary_emb.inv_freq";
    size_t k = strlen(suffix);
    return n >= k && strcmp(name + n - k, suffix) == 0;
}

/* ---- loading ------------------------------------------------------------ */

/* Sharded: read the index, open every file it names once, and return for
 * each file index the list. */
static int open_sharded(lf_model *m, const char *dir, const char *index_path, cJSON **map_out, lf_error *err) {
    char *text = NULL;
    if (lf_read_file(index_path, &text, NULL, err) != 0) return -1;
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root) return lf_fail(err, "%s: malformed JSON", index_path);
    int rc = -1;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) {
        lf_fail(err, "%s: missing or non-object key \"weight_map\"", index_path);
        goto out;
    }
    int n = cJSON_GetArraySize(wm);
    m->files = calloc(n ? (size_t)n : 1, sizeof *m->files);
    if (!m->files) {
        lf_fail(err, "%s: out of memory", index_path);
        goto out;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, wm) {
        if (!cJSON_IsString(e)) {
            lf_fail(err, "%s: weight_map entry '%s' is not a file name", index_path, e->string);
            goto out;
        }
        const char *fn = e->valuestring;
        if (strchr(fn, '/') || !strcmp(fn, "..") || !strcmp(fn, ".") || !*fn) {
            lf_fail(err, "%s: weight_map entry '%s' names '%s', not a file in the model directory", index_path,
                    e->string, fn);
            goto out;
        }
        bool seen = false;
        for (int i = 0; i < m->n_files && !seen; i++) {
            const char *p = m->files[i].path;
            const char *base = strrchr(p, '/');
            seen = strcmp(base ? base + 1 : p, fn) == 0;
        }
        if (seen) continue;
        char *path = lf_path_join(dir, fn);
        if (!path) {
            lf_fail(err, "%s: out of memory", index_path);
            goto out;
        }
        if (!lf_file_exists(path)) {
            lf_fail(err, "%s: tensor '%s' is in '%s', which is missing (%s)", index_path, e->string, fn, path);
            free(path);
            goto out;
        }
        int orc = lf_st_open(path, &m->files[m->n_files], err);
        free(path);
        if (orc != 0) goto out;
        m->n_files++;
    }
    rc = 0;
out:
    if (rc != 0) {
        cJSON_Delete(root);
        return -1;
    }
    *map_out = root;
    return 0;
}

/* Find a tensor: through the index when sharded, else in the single file. */
static const lf_tensor *find_tensor(const lf_model *m, const cJSON *index, const char *name, const char **file) {
    if (index) {
        const cJSON *wm = cJSON_GetObjectItemCaseSensitive(index, "weight_map");
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(wm, name);
        if (!cJSON_IsString(e)) return NULL;
        for (int i = 0; i < m->n_files; i++) {
            const char *p = m->files[i].path;
            const char *base = strrchr(p, '/');
            if (strcmp(base ? base + 1 : p, e->valuestring) == 0) {
                *file = p;
                return lf_st_find(&m->files[i], name);
            }
        }
        return NULL;
    }
    *file = m->files[0].path;
    return lf_st_find(&m->files[0], name);
}

/* The weights hold (1 + the largest N of a model.layers.N.* tensor) at
 * least the layers config.json declares: checked before anything is sized
 * by num_hidden_layers. (A layer too many is check_unused's
 * "unexpected tensor".) */
static int check_layer_count(const lf_model *m, lf_error *err) {
    static const char prefix[] = "model.layers.";
    long held = 0;
    const char *file = m->n_files ? m->files[0].path : m->dir;
    for (int f = 0; f < m->n_files; f++)
        for (int t = 0; t < m->files[f].n_tensors; t++) {
            const char *name = m->files[f].tensors[t].name;
            if (strncmp(name, prefix, sizeof prefix - 1) != 0) continue;
            char *end;
            long i = strtol(name + sizeof prefix - 1, &end, 10);
            if (end != name + sizeof prefix - 1 && *end == '.' && i >= 0 && i < LF_MAX_LAYERS && i + 1 > held) {
                held = i + 1;
                file = m->files[f].path;
            }
        }
    if (held >= m->cfg.n_layers) return 0;
    if (held == 0)
        return lf_fail(err, "%s: config.json has num_hidden_layers = %d but the weights hold no model.layers.N tensor",
                       file, m->cfg.n_layers);
    return lf_fail(err, "%s: config.json has num_hidden_layers = %d but the weights hold layers 0..%ld only", file,
                   m->cfg.n_layers, held - 1);
}

static int spec_name_cmp(const void *a, const void *b) {
    return strcmp(((const lf_wspec *)a)->name, ((const lf_wspec *)b)->name);
}

/* Every tensor in the files must be one we bound (or one known to be
 * harmless): a stray bias or an extra layer means the config and the
 * weights disagree, and ignoring it would give wrong output silently. */
static int check_unused(const lf_model *m, lf_wlist *l, lf_error *err) {
    qsort(l->v, (size_t)l->n, sizeof *l->v, spec_name_cmp); /* (all bound by now) */
    for (int f = 0; f < m->n_files; f++) {
        const lf_st_file *sf = &m->files[f];
        for (int t = 0; t < sf->n_tensors; t++) {
            const char *name = sf->tensors[t].name;
            lf_wspec key;
            snprintf(key.name, sizeof key.name, "%s", name);
            bool used = strlen(name) < sizeof key.name &&
                        bsearch(&key, l->v, (size_t)l->n, sizeof *l->v, spec_name_cmp) != NULL;
            if (!used && m->cfg.tie_word_embeddings && strcmp(name, "lm_head.weight") == 0) used = true;
            if (!used && !ignorable(name))
                return lf_fail(err, "%s: unexpected tensor '%s' (not used by %s with this config.json)", sf->path,
                               name, m->cfg.arch_name);
        }
    }
    return 0;
}

/* Bind every tensor the config implies (where: the file named in messages
 * when the model is sharded), check that none is left over, and count the
 * bytes. Shared by the safetensors and GGUF paths. */
static int bind_weights(lf_model *m, const cJSON *index, const char *where, const char *dir, lf_error *err) {
    lf_wlist specs = {0};
    int rc = -1;
    if (check_layer_count(m, err) != 0) return -1;
    m->layers = calloc((size_t)m->cfg.n_layers, sizeof *m->layers);
    if (!m->layers || build_specs(m, &specs) != 0) {
        lf_fail(err, "%s: out of memory", dir);
        goto done;
    }
    for (int i = 0; i < specs.n; i++) {
        const char *file = where;
        const lf_tensor *t = find_tensor(m, index, specs.v[i].name, &file);
        if (!t) {
            if (!strcmp(specs.v[i].name, "lm_head.weight"))
                lf_fail(err, "%s: missing tensor 'lm_head.weight' and config.json has tie_word_embeddings false",
                        file);
            else
                lf_fail(err, "%s: missing tensor '%s' (needed by %s)", file, specs.v[i].name, m->cfg.arch_name);
            goto done;
        }
        if (bind_tensor(&specs.v[i], t, file, err) != 0) goto done;
    }
    if (check_unused(m, &specs, err) != 0) goto done;
    if (m->cfg.tie_word_embeddings) m->lm_head = m->embed;
    compute_sizes(m);
    rc = 0;
done:
    free(specs.v);
    return rc;
}

/* A GGUF file: its metadata is the config, its tensors (dequantized where
 * needed, into m->owned) one view bound like a safetensors file. */
static int load_gguf(lf_model *m, const char *file, lf_weights_mode mode, lf_error *err) {
    m->files = calloc(1, sizeof *m->files);
    if (!m->files) return lf_fail(err, "%s: out of memory", file);
    if (lf_gguf_model_open(file, mode == LF_WEIGHTS_QUANT, &m->cfg, &m->files[0], &m->owned, err) != 0) return -1;
    m->n_files = 1;
    return bind_weights(m, NULL, file, file, err);
}

int lf_model_load(const char *dir, lf_model **out, lf_error *err) {
    return lf_model_load_mode(dir, LF_WEIGHTS_QUANT, out, err);
}

int lf_model_load_mode(const char *dir, lf_weights_mode mode, lf_model **out, lf_error *err) {
    *out = NULL;
    lf_model *m = calloc(1, sizeof *m);
    if (!m) return lf_fail(err, "%s: out of memory", dir);
    cJSON *index = NULL;
    char *path = NULL;
    int rc = -1;

    m->dir = strdup(dir);
    if (!m->dir) {
        lf_fail(err, "%s: out of memory", dir);
        goto done;
    }
    int gguf = lf_gguf_model_path(dir, &path, err);
    if (gguf < 0) goto done;
    if (gguf > 0) {
        rc = load_gguf(m, path, mode, err);
        goto done;
    }
    if (lf_config_load(dir, &m->cfg, err) != 0) goto done;

    path = lf_path_join(dir, "model.safetensors.index.json");
    if (!path) {
        lf_fail(err, "%s: out of memory", dir);
        goto done;
    }
    if (lf_file_exists(path)) {
        if (open_sharded(m, dir, path, &index, err) != 0) goto done;
    } else {
        free(path);
        path = lf_path_join(dir, "model.safetensors");
        if (!path) {
            lf_fail(err, "%s: out of memory", dir);
            goto done;
        }
        if (!lf_file_exists(path)) {
            lf_fail(err, "%s: no model.safetensors or model.safetensors.index.json in the model directory", dir);
            goto done;
        }
        m->files = calloc(1, sizeof *m->files);
        if (!m->files) {
            lf_fail(err, "%s: out of memory", path);
            goto done;
        }
        if (lf_st_open(path, &m->files[0], err) != 0) goto done;
        m->n_files = 1;
    }

    rc = bind_weights(m, index, index ? path : m->files[0].path, dir, err);
done:
    free(path);
    cJSON_Delete(index);
    if (rc != 0) {
        lf_model_free(m);
        return -1;
    }
    *out = m;
    return 0;
}

/* ---- random weights ----------------------------------------------------- */

static inline uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Fill n elements with center + U(-scale, scale) (65536 levels), deterministic
 * in (seed, stream, index) whatever the thread count: element i takes 16
 * bits of splitmix64(key + i/4). */
static void fill_uniform(void *dst, lf_dtype dt, size_t n, float center, float scale, uint64_t seed,
                         uint64_t stream) {
    const uint64_t key = splitmix64(seed ^ splitmix64(stream));
    const long long chunks = (long long)((n + 4095) / 4096);
    const float mul = 2.0f * scale / 65536.0f, add = center - scale + 0.5f * mul;
#pragma omp parallel for schedule(static)
    for (long long c = 0; c < chunks; c++) {
        size_t begin = (size_t)c * 4096, end = begin + 4096 < n ? begin + 4096 : n;
        for (size_t i = begin; i < end; i += 4) {
            uint64_t r = splitmix64(key + i / 4);
            size_t m = end - i < 4 ? end - i : 4;
            float v[4];
            for (size_t k = 0; k < 4; k++) v[k] = add + mul * (float)(uint16_t)(r >> (16 * k));
            if (dt == LF_DTYPE_BF16)
                for (size_t k = 0; k < m; k++) ((uint16_t *)dst)[i + k] = lf_f32_to_bf16(v[k]);
            else if (dt == LF_DTYPE_F16)
                for (size_t k = 0; k < m; k++) ((uint16_t *)dst)[i + k] = lf_f32_to_f16(v[k]);
            else
                for (size_t k = 0; k < m; k++) ((float *)dst)[i + k] = v[k];
        }
    }
}

int lf_model_random(const char *preset, lf_dtype dtype, uint64_t seed, lf_model **out, lf_error *err) {
    *out = NULL;
    if (lf_dtype_size(dtype) == 0) return lf_fail(err, "lf_model_random: unknown dtype %d", (int)dtype);
    lf_model *m = calloc(1, sizeof *m);
    if (!m) return lf_fail(err, "lf_model_random: out of memory");
    lf_wlist specs = {0};
    int rc = -1;
    if (lf_config_preset(preset, &m->cfg, err) != 0) goto done;
    m->cfg.dtype = dtype;
    m->layers = calloc((size_t)m->cfg.n_layers, sizeof *m->layers);
    if (!m->layers || build_specs(m, &specs) != 0) {
        lf_fail(err, "lf_model_random: out of memory");
        goto done;
    }
    /* one block, every weight 64-byte aligned */
    size_t es = lf_dtype_size(dtype), total = 0;
    for (int i = 0; i < specs.n; i++) {
        size_t n = (size_t)(specs.v[i].rows ? specs.v[i].rows : 1) * (size_t)specs.v[i].cols;
        total += (n * es + 63) & ~(size_t)63;
    }
    /* 2 MB aligned and marked for transparent huge pages: fewer page faults
     * while filling and fewer TLB misses while decoding. */
    const size_t huge = (size_t)2 << 20;
    size_t alloc = (total + huge - 1) / huge * huge;
    m->owned = aligned_alloc(huge, alloc ? alloc : huge);
    if (!m->owned) {
        lf_fail(err, "lf_model_random: %s: cannot allocate %.2f GB of weights", preset, (double)total / 1e9);
        goto done;
    }
#ifdef MADV_HUGEPAGE
    if (alloc) (void)madvise(m->owned, alloc, MADV_HUGEPAGE);
#endif
    size_t off = 0;
    for (int i = 0; i < specs.n; i++) {
        const lf_wspec *s = &specs.v[i];
        size_t n = (size_t)(s->rows ? s->rows : 1) * (size_t)s->cols;
        void *p = (char *)m->owned + off;
        off += (n * es + 63) & ~(size_t)63;
        float center = 0.0f, scale;
        if (!s->rows && strstr(s->name, "bias") == NULL) {
            center = 1.0f; /* norm weights around 1 */
            scale = 0.1f;
        } else if (!s->rows) {
            scale = 0.02f; /* biases */
        } else {
            /* std 1/sqrt(fan_in): uniform half-width sqrt(3/fan_in) */
            scale = sqrtf(3.0f / (float)s->cols);
        }
        fill_uniform(p, dtype, n, center, scale, seed, (uint64_t)i);
        s->dst->data = p;
        s->dst->dtype = dtype;
        s->dst->rows = s->rows ? s->rows : 1;
        s->dst->cols = s->cols;
    }
    if (m->cfg.tie_word_embeddings) m->lm_head = m->embed;
    compute_sizes(m);
    rc = 0;
done:
    free(specs.v);
    if (rc != 0) {
        lf_model_free(m);
        return -1;
    }
    *out = m;
    return 0;
}
