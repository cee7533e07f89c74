#!/usr/bin/env python3
"""Fixtures for longflow's GGUF tests, made with the `gguf` Python package
(llama.cpp's own reader/writer; PyPI `gguf`) and numpy. No torch.

Writes:
  tests/data/gguf/quant/<TYPE>.blocks  random blocks of each ggml type
  tests/data/gguf/quant/<TYPE>.bf16    gguf.quants.dequantize of them, rounded
                                       to bf16 (round to nearest even)
  tests/data/gguf/models/<name>.gguf   tests/data/models/<name> converted as
                                       llama.cpp's convert_hf_to_gguf.py does
                                       (metadata keys, tensor names, the Llama
                                       Q/K row permutation; 1-D tensors F32,
                                       matrices BF16), and <name>-q8_0.gguf with
                                       the matrices quantized to Q8_0 (for
                                       llama_linear also -q8_0-reversed.gguf,
                                       its tensors in reverse order)
  tests/fuzz/corpus/gguf/*.gguf        small seeds: every metadata type,
                                       string arrays, a few tensor types; v2, v3

Run from the repository root: python3 tools/gen_gguf_fixtures.py
(`--gpu-shapes DIR`: only the head_dim-64 checkpoint, BF16 and Q8_0, into DIR.)
"""
import json
import os
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "gguf")

# the types longflow dequantizes, and how many blocks of each to test
QUANT_TYPES = {
    "F32": 64, "F16": 64, "BF16": 64,
    "Q4_0": 64, "Q4_1": 64, "Q5_0": 64, "Q5_1": 64, "Q8_0": 64,
    "Q4_K": 16, "Q5_K": 16, "Q6_K": 16,
}


def f32_to_bf16(x):
    """Round float32 to bf16 bits, nearest even (as torch and longflow do)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    r[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return r


def random_f16(rng, n, lo=-8, hi=2):
    """Finite fp16 values of random sign and magnitude 2^lo..2^hi."""
    mag = np.exp2(rng.uniform(lo, hi, n)) * rng.choice([-1.0, 1.0], n)
    return mag.astype(np.float16)


def random_blocks(rng, name, n_blocks):
    """Random bytes of n_blocks blocks with finite fp16 scale fields."""
    qt = T[name]
    block_size, type_size = gguf.GGML_QUANT_SIZES[qt]
    if name == "F32":
        return rng.standard_normal(n_blocks).astype(np.float32).view(np.uint8)
    if name == "F16":
        return random_f16(rng, n_blocks, -14, 4).view(np.uint8)
    if name == "BF16":
        return f32_to_bf16(rng.standard_normal(n_blocks).astype(np.float32)).view(np.uint8)
    b = rng.integers(0, 256, (n_blocks, type_size), dtype=np.uint8)
    # offsets of the fp16 fields in each block (ggml's block layouts)
    f16_fields = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
                  "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}[name]
    for off in f16_fields:
        b[:, off:off + 2] = random_f16(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    return b.reshape(-1)


def write_quant_refs(rng):
    d = os.path.join(OUT, "quant")
    os.makedirs(d, exist_ok=True)
    for name, n_blocks in QUANT_TYPES.items():
        raw = random_blocks(rng, name, n_blocks)
        ref = gguf.quants.dequantize(raw, T[name]).astype(np.float32).reshape(-1)
        with open(os.path.join(d, name + ".blocks"), "wb") as f:
            f.write(raw.tobytes())
        with open(os.path.join(d, name + ".bf16"), "wb") as f:
            f.write(f32_to_bf16(ref).tobytes())
        print(f"quant {name}: {ref.size} values")


# ---- tiny Hugging Face checkpoints -> GGUF --------------------------------

def read_safetensors(path):
    """name -> (dtype string, shape, raw bytes), without torch."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, en = e["data_offsets"]
        out[name] = (e["dtype"], e["shape"], data[b:en])
    return out


def as_f32(dtype, shape, raw):
    if dtype == "BF16":
        u = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
        return u.view(np.float32).reshape(shape)
    if dtype == "F16":
        return np.frombuffer(raw, dtype=np.float16).astype(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=np.float32).reshape(shape).copy()


def permute(w, n_head, n_head_kv):
    """convert_hf_to_gguf.py's LlamaModel.permute: each head's rows go from
    [first half | second half] to interleaved pairs."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias", "self_attn.o_proj.bias": "attn_output.bias",
    "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
TOP_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}


def gguf_name(hf):
    if hf in TOP_NAMES:
        return TOP_NAMES[hf]
    parts = hf.split(".")
    assert parts[0] == "model" and parts[1] == "layers", hf
    return f"blk.{parts[2]}." + LAYER_NAMES[".".join(parts[3:])]


def write_metadata(w, arch, cfg, gen):
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    rope = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    w.add_rope_freq_base(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    rtype = rope.get("rope_type", rope.get("type", "default"))
    if rtype == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope["factor"])
    elif rtype != "default":
        raise SystemExit(f"rope type {rtype}: not written by this script")
    if cfg.get("bos_token_id") is not None:
        w.add_bos_token_id(cfg["bos_token_id"])
    eos = gen.get("eos_token_id", cfg.get("eos_token_id"))
    if eos is not None:  # GGUF holds one eos id
        w.add_eos_token_id(eos[0] if isinstance(eos, list) else eos)


def convert_model(name, quant, out=None, reverse=False):
    """reverse: the tensors in reverse order (-reversed.gguf: files need not
    list them sorted; llama-quantize's output puts output_norm first)."""
    src = os.path.join(ROOT, "tests", "data", "models", name)
    cfg = json.load(open(os.path.join(src, "config.json")))
    arch = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
            "Qwen3ForCausalLM": "qwen3"}[cfg["architectures"][0]]
    tensors = read_safetensors(os.path.join(src, "model.safetensors"))
    suffix = ("-q8_0" if quant else "") + ("-reversed" if reverse else "")
    path = os.path.join(out or os.path.join(OUT, "models"), name + suffix + ".gguf")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    w = gguf.GGUFWriter(path, arch)
    w.add_name(name)
    gen_path = os.path.join(src, "generation_config.json")
    gen = json.load(open(gen_path)) if os.path.exists(gen_path) else {}
    write_metadata(w, arch, cfg, gen)
    for hf, (dt, shape, raw) in (reversed(tensors.items()) if reverse else tensors.items()):
        if cfg.get("tie_word_embeddings") and hf == "lm_head.weight":
            continue
        x = as_f32(dt, shape, raw)
        if arch == "llama" and (".q_proj." in hf or ".k_proj." in hf):
            kv = cfg["num_key_value_heads"] if ".k_proj." in hf else cfg["num_attention_heads"]
            x = permute(x, cfg["num_attention_heads"], kv)
        if x.ndim == 1:
            w.add_tensor(gguf_name(hf), x.astype(np.float32))
        elif quant:
            q = gguf.quants.quantize(x, T.Q8_0)
            w.add_tensor(gguf_name(hf), q, raw_shape=q.shape, raw_dtype=T.Q8_0)
        else:
            w.add_tensor(gguf_name(hf), f32_to_bf16(x), raw_shape=x.shape, raw_dtype=T.BF16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"model {path}: {os.path.getsize(path)} bytes")


# ---- fuzz seeds ------------------------------------------------------------

def write_seed(path, version, rng):
    w = gguf.GGUFWriter(path, "llama")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -5)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_float32("t.f32", 1.5)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo")
    w.add_uint64("t.u64", 2**63)
    w.add_int64("t.i64", -2**40)
    w.add_float64("t.f64", 2.25)
    w.add_array("t.strs", ["a", "", "bc"])
    w.add_array("t.ints", [1, 2, 3])
    w.add_block_count(1)
    w.add_tensor("a", rng.standard_normal((2, 4)).astype(np.float32))
    q = gguf.quants.quantize(rng.standard_normal((1, 32)).astype(np.float32), T.Q8_0)
    w.add_tensor("b", q, raw_shape=q.shape, raw_dtype=T.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if version == 2:  # v2 and v3 share the layout; only the number differs
        with open(path, "r+b") as f:
            f.seek(4)
            f.write(struct.pack("<I", 2))


GPU_SHAPES = ("qwen3_hd64",)  # head_dim 64, a shape the CUDA backend runs (llama_hd64_gqa4 has llama3 rope)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--gpu-shapes":
        # not committed: bench/cuda/check_gguf_gpu.sh converts these on the fly
        for name in GPU_SHAPES:
            convert_model(name, quant=False, out=sys.argv[2])
            convert_model(name, quant=True, out=sys.argv[2])
        return 0
    rng = np.random.default_rng(20261202)
    write_quant_refs(rng)
    for name in ("llama_linear", "qwen2_bias", "qwen3_tied_hd"):
        convert_model(name, quant=False)
    convert_model("llama_linear", quant=True)
    convert_model("llama_linear", quant=True, reverse=True)
    seeds = os.path.join(ROOT, "tests", "fuzz", "corpus", "gguf")
    os.makedirs(seeds, exist_ok=True)
    write_seed(os.path.join(seeds, "types_v3.gguf"), 3, rng)
    write_seed(os.path.join(seeds, "types_v2.gguf"), 2, rng)
    return 0


if __name__ == "__main__":
    sys.exit(main())
