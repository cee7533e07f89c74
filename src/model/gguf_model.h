/* A GGUF file as a model: its metadata as an lf_config and its tensors under
 * the Hugging Face names the safetensors path binds, with quantized blocks
 * dequantized to bf16 and llama.cpp's Q/K row order undone. */
#ifndef LF_MODEL_GGUF_MODEL_H
#define LF_MODEL_GGUF_MODEL_H

#include "longflow.h"
#include "model/config.h"
#include "model/gguf.h"
#include "model/safetensors.h"

/* Whether path names a GGUF model: a file ending in .gguf (or starting with
 * the GGUF magic), or a directory without config.json that holds exactly
 * one .gguf file. Returns 1 and sets *file (malloc'd) to the file, 0 when
 * path is something else (a Hugging Face directory), -1 with err when the
 * choice is ambiguous (several .gguf files and no config.json). */
int lf_gguf_model_path(const char *path, char **file, lf_error *err);

/* The config from the metadata (general.architecture llama, qwen2 or qwen3;
 * the {arch}.* keys mapped onto config.json's names and checked by the same
 * rules; tokenizer.ggml.bos/eos_token_id). */
int lf_gguf_config(const lf_gguf_file *f, lf_config *cfg, lf_error *err);

/* Open a GGUF model: fills cfg, and view with one tensor per GGUF tensor,
 * named as in a Hugging Face checkpoint. With keep_quant, the matrices of
 * every block type (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) keep
 * their blocks (dtype LF_DTYPE_Q8_0 ..., for the CPU's quantized kernels).
 * Tensors that need no reordering and no conversion point into the mapping
 * (which view owns: lf_st_close unmaps it); the others live, as bf16 (or
 * their stored type when only reordered), in *owned (malloc'd, freed by the
 * caller after the view). */
int lf_gguf_model_open(const char *path, bool keep_quant, lf_config *cfg, lf_st_file *view, void **owned,
                       lf_error *err);

#endif
