#!/usr/bin/env python3
"""The committed conformance fixtures (tests/data/models/*, made by
tools/make_fixtures.py) are what docs/conformance.md says they are.

Without torch (CI has none): the safetensors files are parsed with the
`safetensors` library, bf16 weights widened with numpy, the config.json
forms and the coverage of the fixture set are checked, and the recorded
reference (expected.json + logits.bin) is checked for internal consistency
(each greedy token is the argmax of its logits row, margins are top1-top2).
"""
import json
import os
import unittest

import numpy as np

try:
    from safetensors import deserialize
except ImportError:  # older safetensors keep it in the extension module
    from safetensors._safetensors_rust import deserialize
from tokenizers import Tokenizer

SRC = os.environ.get("LF_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.environ.get("LF_TEST_DATA", os.path.join(SRC, "tests", "data"))
MODELS = os.path.join(DATA, "models")

NEW_KEYS = ("rope_parameters", "dtype")
OLD_KEYS = ("rope_theta", "rope_scaling", "torch_dtype")


def fixtures():
    return sorted(d for d in os.listdir(MODELS) if os.path.isfile(os.path.join(MODELS, d, "expected.json")))


def load_json(*parts):
    with open(os.path.join(*parts)) as f:
        return json.load(f)


def weight_files(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        wm = load_json(idx)["weight_map"]
        return sorted(set(wm.values())), wm
    return ["model.safetensors"], None


def read_tensors(d):
    """name -> (dtype, shape, float32 array) over all shards."""
    files, wm = weight_files(d)
    out = {}
    for fn in files:
        with open(os.path.join(d, fn), "rb") as f:
            for name, t in deserialize(f.read()):
                assert name not in out, f"{fn}: {name} appears twice"
                if wm is not None:
                    assert wm[name] == fn, f"index.json puts {name} in {wm[name]}, found in {fn}"
                dtype = {"bfloat16": "BF16"}.get(t["dtype"], t["dtype"])  # name differs by version
                assert dtype == "BF16", f"{fn}: {name} is {t['dtype']}, fixtures are bf16"
                raw = np.frombuffer(bytes(t["data"]), dtype="<u2")
                arr = (raw.astype(np.uint32) << 16).view(np.float32).reshape(t["shape"])
                out[name] = (dtype, tuple(t["shape"]), arr)
    if wm is not None:
        assert set(wm) == set(out), "index.json weight_map and the shards disagree"
    return out


def rope(cfg):
    """(rope_type, theta, params) from either config.json form."""
    if "rope_parameters" in cfg:
        rp = dict(cfg["rope_parameters"])
        return rp.pop("rope_type", "default"), rp.pop("rope_theta"), rp
    rs = dict(cfg.get("rope_scaling") or {})
    return rs.pop("rope_type", rs.pop("type", "default")), cfg["rope_theta"], rs


class Fixtures(unittest.TestCase):
    def test_config_forms(self):
        """config.json is in the form expected.json and the docs name: old or new."""
        for name in fixtures():
            e = load_json(MODELS, name, "expected.json")
            cfg = load_json(MODELS, name, "config.json")
            with self.subTest(fixture=name):
                self.assertIn(e["config_form"], ("old", "new"))
                want, other = (NEW_KEYS, OLD_KEYS) if e["config_form"] == "new" else (OLD_KEYS, NEW_KEYS)
                for k in want:
                    self.assertIn(k, cfg)
                for k in other:
                    self.assertNotIn(k, cfg)
                self.assertEqual(cfg.get("dtype", cfg.get("torch_dtype")), "bfloat16")
                self.assertEqual(cfg["architectures"], [e["architecture"]])

    def test_weights_parse_and_match_config(self):
        """Every shard parses; tensor set and shapes follow the config; bf16 values are sane."""
        for name in fixtures():
            d = os.path.join(MODELS, name)
            cfg = load_json(d, "config.json")
            with self.subTest(fixture=name):
                t = read_tensors(d)
                H, V, I = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"]
                nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
                hd = cfg.get("head_dim") or H // nh
                arch = cfg["architectures"][0]
                want = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,)}
                if not cfg["tie_word_embeddings"]:
                    want["lm_head.weight"] = (V, H)
                for l in range(cfg["num_hidden_layers"]):
                    p = f"model.layers.{l}."
                    want.update({
                        p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,),
                        p + "self_attn.q_proj.weight": (nh * hd, H), p + "self_attn.k_proj.weight": (nkv * hd, H),
                        p + "self_attn.v_proj.weight": (nkv * hd, H), p + "self_attn.o_proj.weight": (H, nh * hd),
                        p + "mlp.gate_proj.weight": (I, H), p + "mlp.up_proj.weight": (I, H),
                        p + "mlp.down_proj.weight": (H, I)})
                    if arch == "Qwen3ForCausalLM":
                        want[p + "self_attn.q_norm.weight"] = (hd,)
                        want[p + "self_attn.k_norm.weight"] = (hd,)
                    if arch == "Qwen2ForCausalLM":
                        want[p + "self_attn.q_proj.bias"] = (nh * hd,)
                        want[p + "self_attn.k_proj.bias"] = (nkv * hd,)
                        want[p + "self_attn.v_proj.bias"] = (nkv * hd,)
                self.assertEqual(set(t), set(want))
                for k, shape in want.items():
                    dt, sh, arr = t[k]
                    self.assertEqual(dt, "BF16", k)
                    self.assertEqual(sh, shape, k)
                    self.assertTrue(np.all(np.isfinite(arr)), k)
                    self.assertGreater(float(np.abs(arr).max()), 0.0, k)

    def test_reference_is_consistent(self):
        """Greedy tokens are the argmax of their logits rows; margins are top1 - top2."""
        for name in fixtures():
            d = os.path.join(MODELS, name)
            e = load_json(d, "expected.json")
            cfg = load_json(d, "config.json")
            self.assertEqual(e["vocab_size"], cfg["vocab_size"])
            logits = np.fromfile(os.path.join(d, e["logits_file"]), dtype="<f4")
            V = e["vocab_size"]
            self.assertEqual(logits.size, sum(p["logits_rows"] * V for p in e["prompts"]))
            lens = [len(p["prompt"]) for p in e["prompts"]]
            self.assertIn(1, lens)
            self.assertGreaterEqual(max(lens), 90)
            for p in e["prompts"]:
                with self.subTest(fixture=name, prompt=p["name"]):
                    rows = logits[p["logits_offset"]:p["logits_offset"] + p["logits_rows"] * V].reshape(-1, V)
                    self.assertEqual(len(p["tokens"]), e["steps"])
                    self.assertEqual(rows.shape[0], len(p["tokens"]))
                    self.assertTrue(all(0 <= i < V for i in p["prompt"]))
                    self.assertEqual(rows.argmax(axis=1).tolist(), p["tokens"])
                    top2 = np.sort(rows, axis=1)[:, -2:]
                    np.testing.assert_allclose(top2[:, 1] - top2[:, 0], p["margins"], atol=2e-6)
                    self.assertGreater(p["min_margin"], 0.0)

    def test_tokenizer(self):
        """tokenizer.json loads with `tokenizers`; sizes, special ids and eos agree with config."""
        for name in fixtures():
            d = os.path.join(MODELS, name)
            cfg = load_json(d, "config.json")
            tc = load_json(d, "tokenizer_config.json")
            with self.subTest(fixture=name):
                tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
                self.assertLessEqual(tok.get_vocab_size(), cfg["vocab_size"])
                ids = {t: tok.token_to_id(t) for t in
                       ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")}
                self.assertTrue(all(i is not None for i in ids.values()), ids)
                eos = cfg["eos_token_id"]
                eos = eos if isinstance(eos, list) else [eos]
                gen = load_json(d, "generation_config.json").get("eos_token_id")
                gen = gen if isinstance(gen, list) else [gen] if gen is not None else []
                self.assertIn(ids[tc["eos_token"]], eos + gen)
                chat = next(p for p in load_json(d, "expected.json")["prompts"] if p["name"] == "chat")
                text = tok.decode(chat["prompt"], skip_special_tokens=False)
                self.assertTrue(text.startswith("<|im_start|>user\n"), text)
                self.assertEqual(tok.encode(text).ids, chat["prompt"])

    def test_coverage(self):
        """The set covers what the issue asks for."""
        seen = set()
        for name in fixtures():
            d = os.path.join(MODELS, name)
            cfg = load_json(d, "config.json")
            e = load_json(d, "expected.json")
            arch = cfg["architectures"][0]
            nh, nkv, H = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["hidden_size"]
            rtype, _, _ = rope(cfg)
            seen |= {arch, f"gqa{nh // nkv}", f"tied{cfg['tie_word_embeddings']}",
                     f"rope:{rtype}:{e['config_form']}", f"form:{e['config_form']}",
                     "eos:list" if isinstance(cfg["eos_token_id"], list) else "eos:int"}
            if cfg.get("head_dim") and cfg["head_dim"] != H // nh:
                seen.add(f"explicit_head_dim:{arch}")
            if os.path.exists(os.path.join(d, "model.safetensors.index.json")):
                self.assertGreater(len(weight_files(d)[0]), 1)
                seen.add("sharded")
        need = {"Qwen3ForCausalLM", "Qwen2ForCausalLM", "LlamaForCausalLM", "gqa1", "gqa2", "gqa4",
                "tiedTrue", "tiedFalse", "rope:llama3:old", "rope:llama3:new", "rope:yarn:new",
                "rope:linear:old", "form:old", "form:new", "eos:list", "eos:int",
                "explicit_head_dim:Qwen3ForCausalLM", "sharded"}
        self.assertEqual(need - seen, set())


if __name__ == "__main__":
    unittest.main(verbosity=2)
