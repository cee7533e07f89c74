/* The model's hyper-parameters, read from a Hugging Face config.json (both the
 * older form with top-level rope_theta/rope_scaling/torch_dtype and the newer
 * one with rope_parameters/dtype) and generation_config.json. */
#ifndef LF_MODEL_CONFIG_H
#define LF_MODEL_CONFIG_H

#include <stdbool.h>
#include "longflow.h"

typedef enum lf_arch {
    LF_ARCH_QWEN3 = 0, /* Qwen3ForCausalLM: q_norm/k_norm, explicit head_dim */
    LF_ARCH_QWEN2,     /* Qwen2ForCausalLM: q/k/v biases */
    LF_ARCH_LLAMA,     /* LlamaForCausalLM */
} lf_arch;

typedef enum lf_rope_type {
    LF_ROPE_DEFAULT = 0,
    LF_ROPE_LINEAR,
    LF_ROPE_LLAMA3,
    LF_ROPE_YARN,
} lf_rope_type;

typedef struct lf_rope_config {
    lf_rope_type type;
    double theta;
    double factor;                  /* linear, llama3, yarn */
    double low_freq_factor;         /* llama3 */
    double high_freq_factor;        /* llama3 */
    int original_max_position;      /* llama3, yarn */
    double beta_fast, beta_slow;    /* yarn */
    double attention_factor;        /* yarn mscale (0 = derived from factor) */
} lf_rope_config;

#define LF_MAX_EOS 8

/* Bounds on config.json's dimensions (checked by lf_config_parse, each
 * message naming the key and its value; docs/reliability.md lists them).
 * The largest supported checkpoints stay far inside them. */
#define LF_MAX_VOCAB (1 << 24)        /* vocab_size */
#define LF_MAX_HIDDEN (1 << 16)       /* hidden_size */
#define LF_MAX_INTERMEDIATE (1 << 20) /* intermediate_size */
#define LF_MAX_LAYERS 1024            /* num_hidden_layers */
#define LF_MAX_HEADS 1024             /* num_attention_heads, num_key_value_heads */
#define LF_MAX_HEAD_DIM 1024          /* head_dim */
#define LF_MAX_POSITION (1 << 24)     /* max_position_embeddings */
#define LF_MAX_MATRIX 2147483647LL    /* elements of one weight matrix (rows x cols) */

struct lf_config {
    lf_arch arch;
    char arch_name[64];        /* as in config.json "architectures" */
    int vocab_size;
    int hidden_size;
    int intermediate_size;
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int max_position;
    double rms_norm_eps;
    lf_rope_config rope;
    bool tie_word_embeddings;
    bool qk_norm;              /* Qwen3 */
    bool qkv_bias;             /* Qwen2 (and Llama with attention_bias) */
    bool o_bias;               /* Llama with attention_bias */
    bool mlp_bias;             /* Llama with mlp_bias */
    int bos_token_id;          /* -1 if none */
    int eos_token_ids[LF_MAX_EOS];
    int n_eos;
    lf_dtype dtype;            /* torch_dtype / dtype (informational) */
    /* generation_config.json defaults (NaN / -1 when absent) */
    float gen_temperature, gen_top_p, gen_min_p;
    int gen_top_k;
};

/* Read dir/config.json and, if present, dir/generation_config.json. */
int lf_config_load(const char *dir, lf_config *cfg, lf_error *err);
/* Parse config.json text (path is used in messages only). */
int lf_config_parse(const char *json, const char *path, lf_config *cfg, lf_error *err);
/* The shape rules on a filled config (every dimension within its bound
 * above, heads a multiple of KV heads, head_dim even, every weight matrix
 * under LF_MAX_MATRIX elements): lf_config_parse applies them, and any other
 * loader that fills an lf_config calls them before sizing anything by it.
 * path names the source in messages, which name the config.json key. */
int lf_config_check_shape(const lf_config *c, const char *path, lf_error *err);
/* Shapes of well-known models for --random-weights benchmarks. */
int lf_config_preset(const char *name, lf_config *cfg, lf_error *err);
/* Names accepted by lf_config_preset, NULL-terminated. */
extern const char *const lf_config_preset_names[];

/* lf_config_is_eos and the read-only accessors are public: include/longflow.h. */

#endif
