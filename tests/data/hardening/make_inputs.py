#!/usr/bin/env python3
"""Write the small bad inputs of issue 11's fuzzing findings (each one the
shape of what the fuzzer found, cut down) and, where a reference exists,
what it does with them. tests/test_hardening.c loads each and checks the
one-line error (or the output) and that it comes in bounded time.

  tok_*/tokenizer.json   tokenizer files (invalid UTF-8 injected by a
                         normalizer, escalating added-token ids, a
                         vocabulary without unk)
  tok_no_unk/expected.json  the `tokenizers` library's encodings of a few
                         texts with that vocabulary (words with no token
                         encode to nothing)
  cfg_*/config.json      config.json files with dimensions out of bounds
  layers_vs_weights/     a config.json declaring 1000 layers next to a
                         safetensors file holding one layer

Run: python3 tests/data/hardening/make_inputs.py   (needs tokenizers)
"""
import json
import os
import struct

here = os.path.dirname(os.path.abspath(__file__))


def write(rel, data):
    path = os.path.join(here, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def bpe(vocab, merges=(), **extra):
    model = {"type": "BPE", "vocab": vocab, "merges": list(merges)}
    model.update(extra)
    return model


def tokenizer(model, normalizer=None, pre_tokenizer=None, added=()):
    return {"version": "1.0", "truncation": None, "padding": None,
            "added_tokens": list(added), "normalizer": normalizer,
            "pre_tokenizer": pre_tokenizer, "post_processor": None,
            "decoder": None, "model": model}


def with_ff(obj):
    """JSON text in which the marker string "@FF@" becomes a raw 0xFF byte
    (what a JSON writer never emits, and cJSON passes through)."""
    return json.dumps(obj).encode().replace(b"@FF@", b"\xff")


SPLIT = {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Isolated", "invert": False}
SMALL = bpe({"x": 0, "y": 1, " ": 2})


def tokenizers_with_bad_utf8():
    # 1. a Prepend normalizer adding a lone 0xFF before a Split (the crash)
    write("tok_prepend_ff/tokenizer.json",
          with_ff(tokenizer(SMALL, {"type": "Prepend", "prepend": "@FF@"}, SPLIT)))
    # the same through a Replace in a Sequence
    write("tok_replace_ff/tokenizer.json",
          with_ff(tokenizer(SMALL, {"type": "Sequence", "normalizers": [
              {"type": "NFC"},
              {"type": "Replace", "pattern": {"String": "x"}, "content": "@FF@"}]}, SPLIT)))
    # an added token holding the byte
    write("tok_added_ff/tokenizer.json",
          with_ff(tokenizer(SMALL, None, SPLIT, [
              {"id": 3, "content": "a@FF@", "single_word": False, "lstrip": False, "rstrip": False,
               "normalized": False, "special": True}])))


def tokenizer_escalating_ids():
    added = []
    for k, tid in enumerate([5, 40, 300, 2400, 19000, 150000, 1200000, 9600000, 76800000, 614400000]):
        added.append({"id": tid, "content": "<t%d>" % k, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True})
    write("tok_escalating_ids/tokenizer.json", json.dumps(tokenizer(SMALL, None, SPLIT, added)))


def tokenizer_no_unk():
    vocab = {"a": 0, "b": 1, "ab": 2, "ba": 3}
    tok = tokenizer(bpe(vocab, ["a b", "b a"]), None, {"type": "WhitespaceSplit"})
    text = json.dumps(tok)
    write("tok_no_unk/tokenizer.json", text)
    texts = ["ab c ab", "c", "cc dd", "ab ba zz a", "  ", "q ab"]
    try:
        from tokenizers import Tokenizer
    except ImportError:
        print("tokenizers is not installed: tok_no_unk/expected.json left as it is")
        return
    ref = Tokenizer.from_str(text)
    rows = [{"text": t, "ids": ref.encode(t, add_special_tokens=False).ids} for t in texts]
    write("tok_no_unk/expected.json", json.dumps(rows, indent=1) + "\n")


BASE_CONFIG = {
    "architectures": ["Qwen3ForCausalLM"], "vocab_size": 512, "hidden_size": 128,
    "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 32, "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": True,
}


def configs():
    # n_heads * head_dim overflowed an int in build_specs
    write("cfg_heads_overflow/config.json",
          json.dumps(dict(BASE_CONFIG, num_attention_heads=65536, num_key_value_heads=65536, head_dim=65536)))
    # every factor in bounds, the product too large for one weight matrix
    write("cfg_matrix_too_large/config.json",
          json.dumps(dict(BASE_CONFIG, num_attention_heads=1024, num_key_value_heads=8, head_dim=1024,
                          hidden_size=4096)))
    # 3,000,000 layers took 3.6 GB before any tensor was looked at
    write("cfg_many_layers/config.json", json.dumps(dict(BASE_CONFIG, num_hidden_layers=3000000)))
    # a dimension beyond an int
    write("cfg_huge_vocab/config.json", json.dumps(dict(BASE_CONFIG, vocab_size=1e12)))


def safetensors(tensors):
    """tensors: list of (name, shape) in F32, zero-filled."""
    header, off, data = {}, 0, b""
    for name, shape in tensors:
        n = 4
        for d in shape:
            n *= d
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
        data += b"\0" * n
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def layers_vs_weights():
    c = dict(BASE_CONFIG, vocab_size=8, hidden_size=8, intermediate_size=8, num_attention_heads=2,
             num_key_value_heads=1, head_dim=4, num_hidden_layers=1000)
    write("layers_vs_weights/config.json", json.dumps(c))
    write("layers_vs_weights/model.safetensors", safetensors([
        ("model.embed_tokens.weight", (8, 8)), ("model.norm.weight", (8,)),
        ("model.layers.0.input_layernorm.weight", (8,))]))


if __name__ == "__main__":
    tokenizers_with_bad_utf8()
    tokenizer_escalating_ids()
    tokenizer_no_unk()
    configs()
    layers_vs_weights()
