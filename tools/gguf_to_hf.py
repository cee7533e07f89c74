#!/usr/bin/env python3
"""Convert a GGUF model (llama, qwen2, qwen3) into a Hugging Face directory:
config.json, generation_config.json, tokenizer.json, tokenizer_config.json
(written by transformers from the GGUF: AutoConfig / AutoTokenizer with
gguf_file=, which need no torch) and model.safetensors (written here from the
gguf package's dequantization, with numpy: matrices as bf16 rounded to
nearest even, 1-D tensors as fp32, Llama Q/K rows put back in Hugging Face
order), which is exactly how longflow holds a GGUF's weights. So longflow
must produce the same tokens from the directory as from the GGUF, through
two independent loaders and dequantizers.

usage: python3 tools/gguf_to_hf.py FILE.gguf OUT_DIR
Needs: pip install gguf transformers tokenizers numpy (no torch).
"""
import json
import os
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

LAYER = {
    "attn_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias", "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias", "attn_output.bias": "self_attn.o_proj.bias",
    "attn_q_norm.weight": "self_attn.q_norm.weight", "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
TOP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
       "output.weight": "lm_head.weight"}


def hf_name(name):
    if name in TOP:
        return TOP[name]
    blk, n, leaf = name.split(".", 2)
    assert blk == "blk", name
    return f"model.layers.{n}.{LAYER[leaf]}"


def bf16_bits(x):
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def unpermute(w, n_head):
    """Inverse of convert_hf_to_gguf.py's permute: interleaved pairs back to
    [first half | second half] within each head."""
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def field(reader, key):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def write_safetensors(path, tensors):
    """tensors: name -> (dtype string, shape, bytes)."""
    header, offset = {}, 0
    for name, (dt, shape, raw) in tensors.items():
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, _, raw in tensors.values():
            f.write(raw)


def convert_weights(reader, out_dir):
    arch = field(reader, "general.architecture")
    n_head = field(reader, f"{arch}.attention.head_count")
    n_kv = field(reader, f"{arch}.attention.head_count_kv") or n_head
    tensors = {}
    for t in reader.tensors:
        x = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(d) for d in reversed(t.shape)]  # ggml's ne is innermost first
        x = x.reshape(shape)
        name = hf_name(t.name)
        if arch == "llama" and (".q_proj." in name or ".k_proj." in name):
            x = unpermute(x, n_head if ".q_proj." in name else n_kv)
        if x.ndim == 1:
            tensors[name] = ("F32", shape, x.astype(np.float32).tobytes())
        else:
            tensors[name] = ("BF16", shape, bf16_bits(x).tobytes())
    write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors)
    return len(tensors)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig
    d, name = os.path.dirname(os.path.abspath(src)), os.path.basename(src)
    cfg = AutoConfig.from_pretrained(d, gguf_file=name)
    # transformers leaves "architectures" out of a config read from GGUF
    cfg.architectures = [{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                          "qwen3": "Qwen3ForCausalLM"}[cfg.model_type]]
    cfg.save_pretrained(out_dir)
    try:
        GenerationConfig.from_model_config(cfg).save_pretrained(out_dir)
    except Exception as e:  # not every config carries generation fields
        print("no generation_config.json:", e)
    AutoTokenizer.from_pretrained(d, gguf_file=name).save_pretrained(out_dir)
    n = convert_weights(gguf.GGUFReader(src), out_dir)
    print(f"{out_dir}: config.json, tokenizer files and {n} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
