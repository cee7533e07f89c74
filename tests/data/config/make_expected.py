#!/usr/bin/env python3
"""Write expected.json next to every config.json under this folder: what
transformers itself reads from the directory (AutoConfig, GenerationConfig,
the rope init functions, and the module structure built on the meta device).
tests/test_config.c compares lf_config_load against these files.

It also creates (once) a few tiny random-weight checkpoints with
transformers' save_pretrained (hf-*/): for those, expected.json also lists
every tensor (shape, dtype, sum, first and last element, as the safetensors
library reads them) and the weight byte counts; tests/test_model_load.c
loads them with lf_model_load and compares.

Run: python3 tests/data/config/make_expected.py   (needs transformers, torch)
"""
import json
import math
import os
import sys

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

here = os.path.dirname(os.path.abspath(__file__))


def expected(d):
    cfg = AutoConfig.from_pretrained(d)
    rp = dict(cfg.rope_parameters)
    rope_type = rp.get("rope_type", "default")
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    # Shrink to one layer and a tiny vocabulary to build the module tree
    # quickly; the attention/MLP structure does not depend on the sizes.
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    layer = model.model.layers[0]
    attn, mlp = layer.self_attn, layer.mlp
    if rope_type == "default":
        attention_factor = 1.0
    else:
        _, attention_factor = ROPE_INIT_FUNCTIONS[rope_type](cfg, "cpu")
    eos = cfg.eos_token_id
    bos = cfg.bos_token_id
    gen = {}
    if os.path.exists(os.path.join(d, "generation_config.json")):
        g = GenerationConfig.from_pretrained(d)
        if g.eos_token_id is not None:
            eos = g.eos_token_id
        if g.bos_token_id is not None:
            bos = g.bos_token_id
        raw = json.load(open(os.path.join(d, "generation_config.json")))
        for k in ("temperature", "top_p", "top_k", "min_p"):
            if k in raw:
                gen[k] = getattr(g, k)
    if isinstance(eos, int):
        eos = [eos]
    dtype = str(cfg.dtype).replace("torch.", "")
    return {
        "arch": cfg.architectures[0],
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "n_layers": cfg.num_hidden_layers,
        "n_heads": cfg.num_attention_heads,
        "n_kv_heads": cfg.num_key_value_heads,
        "head_dim": attn.q_proj.out_features // cfg.num_attention_heads,
        "config_head_dim": head_dim,
        "max_position": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_type": rope_type,
        "rope_theta": rp["rope_theta"],
        "rope_factor": rp.get("factor", 1.0),
        "rope_low_freq_factor": rp.get("low_freq_factor"),
        "rope_high_freq_factor": rp.get("high_freq_factor"),
        "rope_original_max_position": rp.get("original_max_position_embeddings"),
        "rope_beta_fast": rp.get("beta_fast") or 32.0,
        "rope_beta_slow": rp.get("beta_slow") or 1.0,
        "rope_attention_factor": float(attention_factor),
        "tie_word_embeddings": bool(cfg.tie_word_embeddings),
        "qk_norm": hasattr(attn, "q_norm"),
        "q_bias": attn.q_proj.bias is not None,
        "k_bias": attn.k_proj.bias is not None,
        "v_bias": attn.v_proj.bias is not None,
        "o_bias": attn.o_proj.bias is not None,
        "mlp_bias": mlp.gate_proj.bias is not None,
        "bos_token_id": -1 if bos is None else bos,
        "eos_token_ids": list(eos or []),
        "dtype": dtype,
        "generation": gen,
        "transformers_version": transformers.__version__,
    }


def make_checkpoints():
    import transformers as T
    torch.manual_seed(1234)
    small = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                 max_position_embeddings=256, rms_norm_eps=1e-6)
    specs = {
        # explicit head_dim (16) != hidden/heads (8), GQA 2, tied embeddings
        "hf-qwen3-tied": (T.Qwen3Config, T.Qwen3ForCausalLM,
                          dict(num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                               tie_word_embeddings=True, eos_token_id=[3, 4], bos_token_id=2), None),
        # q/k/v biases, GQA 4, untied
        "hf-qwen2-bias": (T.Qwen2Config, T.Qwen2ForCausalLM,
                          dict(num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=False,
                               eos_token_id=5), None),
        # llama3 rope, attention_bias, GQA 1, sharded, config.json rewritten in the older form
        "hf-llama3-sharded": (T.LlamaConfig, T.LlamaForCausalLM,
                              dict(num_attention_heads=2, num_key_value_heads=2, attention_bias=True,
                                   tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                                   rope_parameters={"rope_type": "llama3", "rope_theta": 50000.0,
                                                    "factor": 8.0, "low_freq_factor": 1.0,
                                                    "high_freq_factor": 4.0,
                                                    "original_max_position_embeddings": 64}), "4KB"),
    }
    for name, (C, M, kw, shard) in specs.items():
        d = os.path.join(here, name)
        if os.path.exists(d):
            continue
        model = M(C(**small, **kw)).to(torch.bfloat16)
        with torch.no_grad():  # make one norm per kind non-trivial
            for n, p in model.named_parameters():
                if "norm" in n:
                    p.add_(torch.randn_like(p) * 0.1)
        if shard:
            model.save_pretrained(d, max_shard_size=shard)
        else:
            model.save_pretrained(d)
        if name == "hf-llama3-sharded":  # older config.json form
            cp = os.path.join(d, "config.json")
            c = json.load(open(cp))
            rp = c.pop("rope_parameters")
            c["rope_theta"] = rp.pop("rope_theta")
            c["rope_scaling"] = rp
            c["torch_dtype"] = c.pop("dtype")
            with open(cp, "w") as f:
                json.dump(c, f, indent=2)
                f.write("\n")


def tensors_of(d):
    from safetensors import safe_open
    files = [f for f in sorted(os.listdir(d)) if f.endswith(".safetensors")]
    out = {}
    for fn in files:
        with safe_open(os.path.join(d, fn), "pt") as f:
            for k in f.keys():
                t = f.get_tensor(k)
                flat = t.double().flatten()
                out[k] = {"file": fn, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
                          "sum": float(flat.sum()), "first": float(flat[0]), "last": float(flat[-1])}
    return out


def main():
    make_checkpoints()
    for name in sorted(os.listdir(here)):
        d = os.path.join(here, name)
        if not os.path.isfile(os.path.join(d, "config.json")):
            continue
        exp = expected(d)
        if any(f.endswith(".safetensors") for f in os.listdir(d)):
            ts = tensors_of(d)
            exp["tensors"] = ts
            nb = {k: math.prod(v["shape"]) * 2 for k, v in ts.items()}
            tied = exp["tie_word_embeddings"]
            head = "model.embed_tokens.weight" if tied else "lm_head.weight"
            exp["weight_bytes"] = sum(v for k, v in nb.items() if not (tied and k == "lm_head.weight"))
            exp["decode_bytes_per_token"] = sum(v for k, v in nb.items()
                                                if k not in ("model.embed_tokens.weight", "lm_head.weight")) + nb[head]
        with open(os.path.join(d, "expected.json"), "w") as f:
            json.dump(exp, f, indent=2, sort_keys=True)
            f.write("\n")
        print(name, "ok", file=sys.stderr)


if __name__ == "__main__":
    main()
