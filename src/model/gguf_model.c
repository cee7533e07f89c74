/* GGUF models: llama.cpp's metadata keys and tensor names mapped onto what
 * the safetensors path reads, so that one set of rules (config.c's checks,
 * model.c's tensor binding) serves both formats.
 *
 * The metadata becomes a config.json-shaped JSON object that
 * lf_config_parse reads; the tensors become an lf_st_file view whose names
 * and shapes are those of a Hugging Face checkpoint. */
#include "model/gguf_model.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/file.h"

/* ---- finding the file ---------------------------------------------------- */

static bool has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static bool starts_with_magic(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return false;
    char magic[4];
    bool ok = fread(magic, 1, 4, fp) == 4 && memcmp(magic, "GGUF", 4) == 0;
    fclose(fp);
    return ok;
}

/* The one .gguf file in dir: 1 found, 0 none, -1 several. */
static int find_gguf_in_dir(const char *dir, char **file, lf_error *err) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    char *found = NULL;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || !has_suffix(e->d_name, ".gguf")) continue;
        if (++n == 1) found = lf_path_join(dir, e->d_name);
    }
    closedir(d);
    if (n > 1) {
        free(found);
        return lf_fail(err, "%s: the directory holds %d .gguf files and no config.json; name the file with --model",
                       dir, n);
    }
    if (n == 1 && !found) return lf_fail(err, "%s: out of memory", dir);
    *file = found;
    return n;
}

int lf_gguf_model_path(const char *path, char **file, lf_error *err) {
    *file = NULL;
    struct stat st;
    if (!path || stat(path, &st) != 0) return 0;
    if (S_ISREG(st.st_mode)) {
        if (!has_suffix(path, ".gguf") && !starts_with_magic(path)) return 0;
        *file = strdup(path);
        return *file ? 1 : lf_fail(err, "%s: out of memory", path);
    }
    if (!S_ISDIR(st.st_mode)) return 0;
    char *cfg = lf_path_join(path, "config.json");
    bool hf = cfg && lf_file_exists(cfg);
    free(cfg);
    if (hf) return 0;
    return find_gguf_in_dir(path, file, err);
}

/* ---- metadata -> config ------------------------------------------------- */

typedef struct {
    const char *gguf;   /* llama.cpp's general.architecture */
    const char *hf;     /* config.json's architectures[0] */
} arch_name;

static const arch_name arch_names[] = {
    {"llama", "LlamaForCausalLM"},
    {"qwen2", "Qwen2ForCausalLM"},
    {"qwen3", "Qwen3ForCausalLM"},
};

/* {arch}.<suffix> */
static void arch_key(char *buf, size_t n, const char *arch, const char *suffix) {
    snprintf(buf, n, "%s.%s", arch, suffix);
}

/* Copy an integer key into the JSON under name; absent keys are left out
 * (config.c then applies its default or names the missing key). */
static int put_int(cJSON *j, const lf_gguf_file *f, const char *key, const char *name, lf_error *err) {
    int64_t v;
    int r = lf_gguf_get_int(f, key, &v, err);
    if (r > 0 && !cJSON_AddNumberToObject(j, name, (double)v)) return lf_fail(err, "%s: out of memory", f->path);
    return r < 0 ? -1 : 0;
}

static int put_float(cJSON *j, const lf_gguf_file *f, const char *key, const char *name, lf_error *err) {
    double v;
    int r = lf_gguf_get_float(f, key, &v, err);
    if (r > 0 && !cJSON_AddNumberToObject(j, name, v)) return lf_fail(err, "%s: out of memory", f->path);
    return r < 0 ? -1 : 0;
}

/* The keys every architecture shares, in config.json's names. */
static int put_shapes(cJSON *j, const lf_gguf_file *f, const char *arch, lf_error *err) {
    static const char *const map[][2] = {
        {"embedding_length", "hidden_size"},
        {"feed_forward_length", "intermediate_size"},
        {"block_count", "num_hidden_layers"},
        {"attention.head_count", "num_attention_heads"},
        {"attention.key_length", "head_dim"},
        {"context_length", "max_position_embeddings"},
    };
    char key[128];
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        arch_key(key, sizeof key, arch, map[i][0]);
        if (put_int(j, f, key, map[i][1], err)) return -1;
    }
    /* llama.cpp: head_count_kv defaults to head_count (unlike the Qwen
     * config classes, whose default is 32), so it is always written. */
    arch_key(key, sizeof key, arch, "attention.head_count_kv");
    if (!lf_gguf_find_kv(f, key)) arch_key(key, sizeof key, arch, "attention.head_count");
    if (put_int(j, f, key, "num_key_value_heads", err)) return -1;
    arch_key(key, sizeof key, arch, "attention.layer_norm_rms_epsilon");
    if (put_float(j, f, key, "rms_norm_eps", err)) return -1;
    arch_key(key, sizeof key, arch, "rope.freq_base");
    return put_float(j, f, key, "rope_theta", err);
}

/* vocab_size: the embedding table's rows, else {arch}.vocab_size, else the
 * number of tokens in the tokenizer metadata. */
static int put_vocab(cJSON *j, const lf_gguf_file *f, const char *arch, lf_error *err) {
    const lf_gguf_tensor *t = lf_gguf_find_tensor(f, "token_embd.weight");
    if (t && t->ndim == 2)
        return cJSON_AddNumberToObject(j, "vocab_size", (double)t->ne[1]) ? 0 : lf_fail(err, "%s: out of memory", f->path);
    char key[128];
    arch_key(key, sizeof key, arch, "vocab_size");
    if (lf_gguf_find_kv(f, key)) return put_int(j, f, key, "vocab_size", err);
    const lf_gguf_kv *kv = lf_gguf_find_kv(f, "tokenizer.ggml.tokens");
    if (kv && kv->type == LF_GGUF_ARRAY) cJSON_AddNumberToObject(j, "vocab_size", (double)kv->count);
    return 0;
}

/* Rope scaling: {arch}.rope.scaling.type none/linear/yarn with .factor and
 * .original_context_length; Llama 3.1's per-frequency factors (a
 * rope_freqs tensor) are refused. A rotary dimension other than head_dim
 * becomes config.json's partial_rotary_factor, which config.c refuses. */
static int put_rope(cJSON *j, const lf_gguf_file *f, const char *arch, lf_error *err) {
    if (lf_gguf_find_tensor(f, "rope_freqs.weight"))
        return lf_fail(err, "%s: tensor 'rope_freqs.weight' (per-frequency rope factors, Llama 3.1 style) is not "
                       "supported", f->path);
    char key[128];
    int64_t rot, hd = 0;
    arch_key(key, sizeof key, arch, "rope.dimension_count");
    int r = lf_gguf_get_int(f, key, &rot, err);
    if (r < 0) return -1;
    const cJSON *jhd = cJSON_GetObjectItemCaseSensitive(j, "head_dim");
    const cJSON *jh = cJSON_GetObjectItemCaseSensitive(j, "hidden_size");
    const cJSON *jn = cJSON_GetObjectItemCaseSensitive(j, "num_attention_heads");
    if (jhd) hd = (int64_t)jhd->valuedouble;
    else if (jh && jn && jn->valuedouble > 0) hd = (int64_t)(jh->valuedouble / jn->valuedouble);
    if (r > 0 && hd > 0 && rot != hd) cJSON_AddNumberToObject(j, "partial_rotary_factor", (double)rot / (double)hd);

    char *type = NULL;
    arch_key(key, sizeof key, arch, "rope.scaling.type");
    if (lf_gguf_get_str(f, key, &type, err) < 0) return -1;
    if (!type || !strcmp(type, "none")) {
        free(type);
        return 0;
    }
    cJSON *rs = cJSON_AddObjectToObject(j, "rope_scaling");
    if (!rs || !cJSON_AddStringToObject(rs, "rope_type", type)) {
        free(type);
        return lf_fail(err, "%s: out of memory", f->path);
    }
    free(type);
    static const char *const map[][2] = {
        {"rope.scaling.factor", "factor"},
        {"rope.scaling.original_context_length", "original_max_position_embeddings"},
        {"rope.scaling.yarn_beta_fast", "beta_fast"},
        {"rope.scaling.yarn_beta_slow", "beta_slow"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        arch_key(key, sizeof key, arch, map[i][0]);
        if (put_float(rs, f, key, map[i][1], err)) return -1;
    }
    return 0;
}

/* Flags that config.json states and GGUF implies by which tensors exist. */
static int put_flags(cJSON *j, const lf_gguf_file *f, lf_error *err) {
    bool tied = lf_gguf_find_tensor(f, "output.weight") == NULL;
    bool bias = lf_gguf_find_tensor(f, "blk.0.attn_output.bias") != NULL;
    if (!cJSON_AddBoolToObject(j, "tie_word_embeddings", tied) || !cJSON_AddBoolToObject(j, "attention_bias", bias) ||
        !cJSON_AddStringToObject(j, "torch_dtype", "bfloat16"))
        return lf_fail(err, "%s: out of memory", f->path);
    if (put_int(j, f, "tokenizer.ggml.bos_token_id", "bos_token_id", err) ||
        put_int(j, f, "tokenizer.ggml.eos_token_id", "eos_token_id", err))
        return -1;
    return 0;
}

static int gguf_arch(const lf_gguf_file *f, char **arch, const char **hf, lf_error *err) {
    int r = lf_gguf_get_str(f, "general.architecture", arch, err);
    if (r < 0) return -1;
    if (r == 0) return lf_fail(err, "%s: missing key 'general.architecture'", f->path);
    for (size_t i = 0; i < sizeof arch_names / sizeof arch_names[0]; i++)
        if (!strcmp(*arch, arch_names[i].gguf)) {
            *hf = arch_names[i].hf;
            return 0;
        }
    lf_fail(err, "%s: unknown architecture '%s' (supported: llama, qwen2, qwen3)", f->path, *arch);
    free(*arch);
    *arch = NULL;
    return -1;
}

int lf_gguf_config(const lf_gguf_file *f, lf_config *cfg, lf_error *err) {
    char *arch = NULL;
    const char *hf = NULL;
    if (gguf_arch(f, &arch, &hf, err) != 0) return -1;
    int rc = -1;
    char *text = NULL;
    cJSON *j = cJSON_CreateObject();
    cJSON *archs = j ? cJSON_AddArrayToObject(j, "architectures") : NULL;
    if (!archs || !cJSON_AddItemToArray(archs, cJSON_CreateString(hf))) {
        lf_fail(err, "%s: out of memory", f->path);
        goto out;
    }
    if (put_vocab(j, f, arch, err) || put_shapes(j, f, arch, err) || put_rope(j, f, arch, err) ||
        put_flags(j, f, err))
        goto out;
    text = cJSON_PrintUnformatted(j);
    if (!text) {
        lf_fail(err, "%s: out of memory", f->path);
        goto out;
    }
    /* The messages name config.json's keys; docs/model-loading.md maps them
     * back to the GGUF keys. */
    char where[512];
    snprintf(where, sizeof where, "%s (metadata as config.json)", f->path);
    rc = lf_config_parse(text, where, cfg, err);
out:
    free(text);
    free(arch);
    cJSON_Delete(j);
    return rc;
}

/* ---- tensors ------------------------------------------------------------- */

/* llama.cpp's tensor names and the Hugging Face ones (per layer: after
 * "blk.N." and "model.layers.N."). */
static const char *const layer_names[][2] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"attn_q.bias", "self_attn.q_proj.bias"},
    {"attn_k.bias", "self_attn.k_proj.bias"},
    {"attn_v.bias", "self_attn.v_proj.bias"},
    {"attn_output.bias", "self_attn.o_proj.bias"},
    {"attn_q_norm.weight", "self_attn.q_norm.weight"},
    {"attn_k_norm.weight", "self_attn.k_norm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
};

static const char *const top_names[][2] = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
};

/* The Hugging Face name of a GGUF tensor (malloc'd); a name we do not know
 * stays as it is, so that model.c's check for unused tensors names it. */
static char *hf_name(const char *name) {
    for (size_t i = 0; i < sizeof top_names / sizeof top_names[0]; i++)
        if (!strcmp(name, top_names[i][0])) return strdup(top_names[i][1]);
    int layer, used = 0;
    if (sscanf(name, "blk.%d.%n", &layer, &used) == 1 && used > 0 && layer >= 0) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "blk.%d.", layer);
        if (!strncmp(name, prefix, strlen(prefix))) { /* the canonical spelling only */
            const char *leaf = name + used;
            for (size_t i = 0; i < sizeof layer_names / sizeof layer_names[0]; i++)
                if (!strcmp(leaf, layer_names[i][0])) {
                    char buf[128];
                    snprintf(buf, sizeof buf, "model.layers.%d.%s", layer, layer_names[i][1]);
                    return strdup(buf);
                }
        }
    }
    return strdup(name);
}

/* llama.cpp's converter reorders the rows of each Llama head of Q and K
 * (and their biases) from [first half | second half] to interleaved pairs:
 * GGUF row h*hd + 2i + s holds Hugging Face row h*hd + s*hd/2 + i. The
 * number of heads whose rows are reordered: 0 when none. */
static int permuted_heads(const lf_config *cfg, const char *hf) {
    if (cfg->arch != LF_ARCH_LLAMA) return 0;
    if (has_suffix(hf, "self_attn.q_proj.weight") || has_suffix(hf, "self_attn.q_proj.bias")) return cfg->n_heads;
    if (has_suffix(hf, "self_attn.k_proj.weight") || has_suffix(hf, "self_attn.k_proj.bias"))
        return cfg->n_kv_heads;
    return 0;
}

/* One tensor's plan: where its converted copy goes (or that none is needed). */
typedef struct {
    const lf_gguf_tensor *src;
    lf_tensor *dst;
    int heads;      /* > 0: rows to reorder in heads of this many */
    bool quant;     /* blocks kept as they are (a block dtype) */
    size_t offset;  /* into the owned block; SIZE_MAX = stays in the mapping */
} tensor_plan;

static lf_dtype float_dtype(uint32_t ggml) {
    return ggml == LF_GGML_F32 ? LF_DTYPE_F32 : ggml == LF_GGML_F16 ? LF_DTYPE_F16 : LF_DTYPE_BF16;
}

static bool is_float_type(uint32_t ggml) {
    return ggml == LF_GGML_F32 || ggml == LF_GGML_F16 || ggml == LF_GGML_BF16;
}

/* The block dtype the CPU kernels compute on for a matrix of this ggml
 * type, or LF_DTYPE_F32 (not a block dtype) when it is dequantized. */
static lf_dtype kept_block_dtype(uint32_t ggml) {
    switch (ggml) {
    case LF_GGML_Q8_0: return LF_DTYPE_Q8_0;
    case LF_GGML_Q4_0: return LF_DTYPE_Q4_0;
    case LF_GGML_Q4_1: return LF_DTYPE_Q4_1;
    case LF_GGML_Q5_0: return LF_DTYPE_Q5_0;
    case LF_GGML_Q5_1: return LF_DTYPE_Q5_1;
    case LF_GGML_Q4_K: return LF_DTYPE_Q4_K;
    case LF_GGML_Q5_K: return LF_DTYPE_Q5_K;
    case LF_GGML_Q6_K: return LF_DTYPE_Q6_K;
    default: return LF_DTYPE_F32;
    }
}

/* Shape (reversed ggml order), dtype, and whether a copy is needed.
 * keep_quant: every block type's matrices keep their blocks. */
static int plan_tensor(const lf_config *cfg, const lf_gguf_tensor *t, bool keep_quant, tensor_plan *p,
                       size_t *owned_bytes, const char *path, lf_error *err) {
    lf_tensor *d = p->dst;
    if (!(d->name = hf_name(t->name))) return lf_fail(err, "%s: out of memory", path);
    d->ndim = t->ndim;
    for (int k = 0; k < t->ndim; k++) d->shape[k] = t->ne[t->ndim - 1 - k];
    lf_dtype block = keep_quant && t->ndim == 2 ? kept_block_dtype(t->type->type) : LF_DTYPE_F32;
    p->quant = block != LF_DTYPE_F32;
    d->dtype = p->quant ? block : is_float_type(t->type->type) ? float_dtype(t->type->type) : LF_DTYPE_BF16;
    size_t elems = 1;
    for (int k = 0; k < t->ndim; k++) elems *= (size_t)t->ne[k];
    d->nbytes = p->quant ? t->nbytes : elems * lf_dtype_size(d->dtype);
    p->src = t;
    p->heads = permuted_heads(cfg, d->name);
    if (p->heads > 0) {
        int64_t rows = t->ndim == 1 ? t->ne[0] : t->ne[1];
        if (t->ndim > 2 || rows == 0 || rows % ((int64_t)p->heads * 2) != 0)
            return lf_fail(err, "%s: tensor '%s': %lld rows do not split into %d heads of even size", path, t->name,
                           (long long)rows, p->heads);
    }
    /* blocks are read bytewise: any alignment will do */
    bool aligned = p->quant || ((uintptr_t)t->data % lf_dtype_size(d->dtype)) == 0;
    if ((p->quant || is_float_type(t->type->type)) && p->heads == 0 && aligned) {
        p->offset = SIZE_MAX;
        d->data = t->data;
        return 0;
    }
    p->offset = *owned_bytes;
    *owned_bytes += (d->nbytes + 63) & ~(size_t)63;
    return 0;
}

/* Convert one tensor into dst: float types and kept blocks are copied as
 * they are, other block types dequantized to bf16; then Q/K rows are put
 * back in Hugging Face order (tmp: scratch of the tensor's size). */
static void convert_tensor(const tensor_plan *p, uint8_t *dst, uint8_t *tmp) {
    const lf_gguf_tensor *t = p->src;
    size_t n = p->dst->nbytes;
    uint8_t *first = p->heads ? tmp : dst;
    if (p->quant || is_float_type(t->type->type)) memcpy(first, t->data, n);
    else lf_quant_to_bf16(t->type, t->data, n / lf_dtype_size(p->dst->dtype), (uint16_t *)first);
    if (!p->heads) return;
    size_t rows = (size_t)(t->ndim == 1 ? t->ne[0] : t->ne[1]);
    size_t row_bytes = n / rows, hd = rows / (size_t)p->heads, half = hd / 2;
    for (size_t h = 0; h < (size_t)p->heads; h++)
        for (size_t s = 0; s < 2; s++)
            for (size_t i = 0; i < half; i++)
                memcpy(dst + (h * hd + s * half + i) * row_bytes, tmp + (h * hd + 2 * i + s) * row_bytes, row_bytes);
}

/* The file pages of a converted tensor are not read again: drop them from
 * the process's resident memory as soon as it is converted, so that the
 * peak stays near the converted weights' size (the mapping stays valid; the
 * kernel would read the pages back from the file if touched). */
static void release_pages(const lf_gguf_tensor *t) {
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0) return;
    uintptr_t b = (uintptr_t)t->data, e = b + t->nbytes, p = (uintptr_t)page;
    b = (b + p - 1) / p * p;
    e = e / p * p;
    if (e > b) (void)madvise((void *)b, e - b, MADV_DONTNEED);
}

/* release: the tensors live in a file mapping whose pages may be dropped. */
static int convert_all(tensor_plan *plans, int n, uint8_t *owned, bool release, const char *path, lf_error *err) {
    size_t max_tmp = 0;
    for (int i = 0; i < n; i++)
        if (plans[i].heads && plans[i].dst->nbytes > max_tmp) max_tmp = plans[i].dst->nbytes;
    int fail = 0;
#pragma omp parallel reduction(| : fail)
    {
        uint8_t *tmp = max_tmp ? malloc(max_tmp) : NULL;
        if (max_tmp && !tmp) fail = 1;
#pragma omp for schedule(dynamic)
        for (int i = 0; i < n; i++) {
            if (plans[i].offset == SIZE_MAX || (max_tmp && !tmp)) continue;
            convert_tensor(&plans[i], owned + plans[i].offset, tmp);
            plans[i].dst->data = owned + plans[i].offset;
            if (release) release_pages(plans[i].src);
        }
        free(tmp);
    }
    return fail ? lf_fail(err, "%s: out of memory", path) : 0;
}

/* The view's tensors and the owned block of converted ones. */
static int build_view(const lf_gguf_file *f, const lf_config *cfg, bool keep_quant, lf_st_file *view, void **owned,
                      lf_error *err) {
    int n = f->n_tensors;
    tensor_plan *plans = calloc(n ? (size_t)n : 1, sizeof *plans);
    view->tensors = calloc(n ? (size_t)n : 1, sizeof *view->tensors);
    if (!plans || !view->tensors) {
        free(plans);
        return lf_fail(err, "%s: out of memory", f->path);
    }
    view->n_tensors = n;
    size_t bytes = 0;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        plans[i].dst = &view->tensors[i];
        rc = plan_tensor(cfg, &f->tensors[i], keep_quant, &plans[i], &bytes, f->path, err);
    }
    if (rc == 0 && bytes) {
        *owned = aligned_alloc(64, bytes);
        if (!*owned) rc = lf_fail(err, "%s: cannot allocate %.2f GB for the dequantized weights", f->path, bytes / 1e9);
    }
    if (rc == 0) rc = convert_all(plans, n, *owned, f->map != NULL, f->path, err);
    free(plans);
    /* in name order, for lf_st_find's binary search (a GGUF file's tensors come
     * in any order: llama-quantize's output puts output_norm first) */
    if (rc == 0) lf_st_sort(view);
    return rc;
}

int lf_gguf_model_open(const char *path, bool keep_quant, lf_config *cfg, lf_st_file *view, void **owned,
                       lf_error *err) {
    memset(view, 0, sizeof *view);
    *owned = NULL;
    lf_gguf_file f;
    if (lf_gguf_open(path, &f, err) != 0) return -1;
    int rc = lf_gguf_config(&f, cfg, err);
    if (rc == 0) rc = build_view(&f, cfg, keep_quant, view, owned, err);
    if (rc == 0 && !(view->path = strdup(path))) rc = lf_fail(err, "%s: out of memory", path);
    if (rc == 0) { /* the view takes the mapping over */
        view->map = f.map;
        view->map_size = f.map_size;
        f.map = NULL;
    }
    lf_gguf_close(&f);
    if (rc != 0) {
        lf_st_close(view);
        free(*owned);
        *owned = NULL;
    }
    return rc;
}
