/* A loaded model: the config and views of its weights, which stay in their
 * stored dtype (bf16 stays bf16) inside the memory-mapped safetensors files. */
#ifndef LF_MODEL_MODEL_H
#define LF_MODEL_MODEL_H

#include "longflow.h"
#include "model/config.h"
#include "model/safetensors.h"

/* A weight matrix [rows][cols] (rows = output features, cols = input
 * features, as PyTorch's nn.Linear stores it) or a vector (rows = 1).
 * data == NULL means absent (e.g. no bias). */
typedef struct lf_weight {
    const void *data;
    lf_dtype dtype;
    int rows, cols;
} lf_weight;

typedef struct lf_layer_weights {
    lf_weight attn_norm;          /* input_layernorm [hidden] */
    lf_weight wq, wk, wv, wo;     /* [n_heads*hd][hidden], [n_kv*hd][hidden] x2, [hidden][n_heads*hd] */
    lf_weight bq, bk, bv, bo;     /* biases (Qwen2: q/k/v) */
    lf_weight q_norm, k_norm;     /* Qwen3 [head_dim] */
    lf_weight ffn_norm;           /* post_attention_layernorm [hidden] */
    lf_weight w_gate, w_up;       /* [inter][hidden] */
    lf_weight w_down;             /* [hidden][inter] */
} lf_layer_weights;

struct lf_model {
    lf_config cfg;
    char *dir;                    /* NULL for random-weight models */
    lf_weight embed;              /* [vocab][hidden] */
    lf_weight final_norm;         /* [hidden] */
    lf_weight lm_head;            /* [vocab][hidden]; == embed when tied */
    lf_layer_weights *layers;     /* [n_layers] */
    lf_st_file *files;
    int n_files;
    void *owned;                  /* heap block for random weights */
    size_t weight_bytes;          /* bytes of all weights in memory */
    size_t decode_bytes_per_token;/* weight bytes one decode step reads (no embed table) */
};

/* lf_weights_mode and lf_model_load_mode are public: include/longflow.h. */

/* Bytes of a weight's data (0 when absent); block types included. */
size_t lf_weight_nbytes(const lf_weight *w);

#endif
