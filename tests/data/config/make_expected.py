#!/usr/bin/env python3
"""Write expected.json next to every config.json under this folder: what
transformers itself reads from the directory (AutoConfig, GenerationConfig,
the rope init functions, and the module structure built on the meta device).
tests/test_config.c compares lf_config_load against these files.

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


def main():
    for name in sorted(os.listdir(here)):
        d = os.path.join(here, name)
        if not os.path.isfile(os.path.join(d, "config.json")):
            continue
        exp = expected(d)
        with open(os.path.join(d, "expected.json"), "w") as f:
            json.dump(exp, f, indent=2, sort_keys=True)
            f.write("\n")
        print(name, "ok", file=sys.stderr)


if __name__ == "__main__":
    main()
