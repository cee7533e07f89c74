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

/* How a GGUF file's quantized matrices are held. QUANT (lf_model_load's
 * choice): Q8_0, Q4_0 and Q4_1 stay in their blocks, in the file mapping,
 * and the CPU computes on them (src/cpu/qmatmul.c); other block types are
 * dequantized to bf16. BF16: every block type is dequantized to bf16 (what
 * the CUDA backend needs, and the reference the quantized path is compared
 * with). Safetensors checkpoints are the same in both. */
typedef enum lf_weights_mode {
    LF_WEIGHTS_QUANT = 0,
    LF_WEIGHTS_BF16 = 1,
} lf_weights_mode;

int lf_model_load_mode(const char *path, lf_weights_mode mode, lf_model **out, lf_error *err);

/* Bytes of a weight's data (0 when absent); block types included. */
size_t lf_weight_nbytes(const lf_weight *w);

#endif
