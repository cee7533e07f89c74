#!/usr/bin/env python3
"""Write the seed corpora of tests/fuzz/corpus/<name>/ from small real files
of the repository (tests/data, models/tiny-reasoner) and hand-made edge
cases. Run from the repository root; the output is committed, so CI needs
neither this script nor its inputs. Multi-file inputs join their files with
the separator of tests/fuzz/harness.h. The script overwrites its own files
and deletes nothing: inputs added by hand (regress_* crash inputs found by
fuzzing) stay."""
import json
import lzma
import os
import struct

SEP = b"\n--8<--\n"
OUT = "tests/fuzz/corpus"


def put(name, fname, data):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, fname), "wb") as f:
        f.write(data)


def rd(path):
    with open(path, "rb") as f:
        return f.read()


def st_file(tensors, meta=None, pad=True):
    """A safetensors file from {name: (dtype, shape, bytes)}."""
    header, blob = {}, b""
    if meta is not None:
        header["__metadata__"] = meta
    for name, (dt, shape, data) in tensors.items():
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    h = json.dumps(header).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + blob


def safetensors_seeds():
    put("safetensors", "hf_qwen3_tied", rd("tests/data/config/hf-qwen3-tied/model.safetensors"))
    put("safetensors", "shard", rd("tests/data/config/hf-llama3-sharded/model-00002-of-00016.safetensors"))
    put("safetensors", "all_dtypes", st_file({
        "f32": ("F32", [2, 2], bytes(16)), "f16": ("F16", [3], bytes(6)), "bf16": ("BF16", [1, 1, 2], bytes(4)),
        "zero": ("F32", [0, 5], b""), "scalar": ("F32", [], bytes(4)),
    }, meta={"format": "pt"}))
    put("safetensors", "unsupported_dtype", st_file({"i8": ("I8", [4], bytes(4))}))
    put("safetensors", "empty_header", st_file({}))
    put("safetensors", "header_past_end", struct.pack("<Q", 1 << 40) + b"{}")
    put("safetensors", "overlap", struct.pack("<Q", 112) + json.dumps({
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}).encode().ljust(112) + bytes(12))
    put("safetensors", "truncated", st_file({"w": ("F32", [4, 4], bytes(64))})[:-10])


def model_seeds():
    d = "tests/data/config/hf-llama3-sharded"
    idx = json.loads(rd(f"{d}/model.safetensors.index.json"))
    shards = sorted(set(idx["weight_map"].values()))
    put("model", "llama3_sharded16", SEP.join([rd(f"{d}/config.json"), rd(f"{d}/model.safetensors.index.json")] +
                                              [rd(f"{d}/{s}") for s in shards]))
    d = "tests/data/config/hf-qwen3-tied"
    put("model", "qwen3_single", SEP.join([rd(f"{d}/config.json"), b"", rd(f"{d}/model.safetensors")]))
    d = "tests/data/config/hf-qwen2-bias"
    put("model", "qwen2_no_weights", SEP.join([rd(f"{d}/config.json"), b""]))
    put("model", "index_escape", SEP.join([rd(f"{d}/config.json"),
                                           b'{"weight_map":{"lm_head.weight":"../x.safetensors"}}', b""]))


def config_seeds():
    root = "tests/data/config"
    for name in sorted(os.listdir(root)):
        p = os.path.join(root, name)
        if not os.path.isdir(p):
            continue
        parts = [rd(f"{p}/config.json")]
        if os.path.exists(f"{p}/generation_config.json"):
            parts.append(rd(f"{p}/generation_config.json"))
        put("config", name, SEP.join(parts))
    m = "models/tiny-reasoner"
    put("config", "tiny_reasoner", SEP.join([rd(f"{m}/config.json"), rd(f"{m}/generation_config.json"),
                                            rd(f"{m}/longflow.json")]))
    put("config", "instruction", SEP.join([rd(f"{m}/config.json"), b"{}",
                                          b'{"eval_instruction": "Answer in \\\\boxed{}."}']))
    put("config", "bad_instruction", SEP.join([rd(f"{m}/config.json"), b"{}", b'{"eval_instruction": 3}']))
    put("config", "eos_list", SEP.join([rd(f"{m}/config.json"),
                                       b'{"eos_token_id": [1, 2, 3], "temperature": 0.6, "top_k": 20}']))


def eval_seeds():
    for fam in ("sum", "walk", "path"):
        line = rd(f"models/tiny-reasoner/data/{fam}.jsonl").split(b"\n")[0]
        put("eval", fam, line)
    put("eval", "numeric_answer", '{"index": 7, "question": "1+1?", "true_answer": 2}')
    put("eval", "no_index", '{"question": "q", "true_answer": "\\\\frac{1}{2}"}')
    put("eval", "big_index", '{"index": 1e300, "question": "q", "true_answer": -0.5e-320}')
    put("eval", "result", json.dumps({"index": 3, "true_answer": "146", "pred": "146", "correct": True,
                                      "n_prompt": 80, "n_tokens": 912, "finish_reason": "stop", "budget": 448,
                                      "kv_bytes": 1024, "kv_tokens_peak": 448, "text": "\\boxed{146}"}))
    put("eval", "result_cut", '{"index": 4, "correct": tr')


def answer_seeds():
    seeds = {
        "simple": "So the total is \\boxed{146}.",
        "nested": "We get \\boxed{\\frac{\\sqrt{3}}{2}} and finally \\boxed{\\dfrac{1}{2}}" + "\n--8<--\n" + "1/2",
        "fbox": "\\fbox{ 1,000 }" + "\n--8<--\n" + "1000",
        "unbalanced": "\\boxed{{x}",
        "text_units": "\\boxed{90^\\circ}" + "\n--8<--\n" + "\\text{90}",
        "percent": "\\boxed{12.50\\%}" + "\n--8<--\n" + "12.5",
        "dollar": "$\\boxed{\\left(1, 2\\right)}$" + "\n--8<--\n" + "(1,2)",
        "escaped": "\\boxed{a\\}b}" + "\n--8<--\n" + "{a}{b}",
        "none": "no answer here" + "\n--8<--\n" + "0",
    }
    for k, v in seeds.items():
        put("answer", k, v)


def tokenize_seeds():
    n_tok = 7  # fuzz_tokenize.c's table
    texts = [json.loads(l)["text"] for l in rd("tests/data/tokenizers/corpus.jsonl").decode().split("\n") if l.strip()]
    picks = [t for t in texts if 0 < len(t.encode()) <= 200]
    step = max(1, len(picks) // 24)
    for i, t in enumerate(picks[::step][:24]):
        sel = (i % n_tok) + n_tok * (i % 4)
        put("tokenize", f"corpus{i:02d}", bytes([sel]) + t.encode())
    extra = ["<|im_start|>user\nhi<|im_end|>", "<think>\n2+2=4\n</think>\n\\boxed{4}", "  two  spaces\t\r\n",
             "\u00e9 e\u0301 \ufb01 \u2581x", "\U0001f600\U0001f469\u200d\U0001f4bb 漢字", "<s>[INST] x [/INST]",
             "ÿ_word hello world <mask> <sep>"]
    for i, t in enumerate(extra):
        for sel in (i % n_tok, i % n_tok + 2 * n_tok):
            put("tokenize", f"edge{i}_{sel}", bytes([sel]) + t.encode())
    put("tokenize", "invalid_utf8", b"\x01a\xff\xfeb\xc3")


def small_tokenizer(j, keep):
    """tokenizer.json j with the model's vocabulary cut to ids < keep (and
    the merges among them): the same pipeline in a few kilobytes."""
    m = j["model"]
    vocab = {k: v for k, v in m["vocab"].items() if v < keep}
    merges = []
    for mg in m.get("merges", []):
        a, b = mg.split(" ", 1) if isinstance(mg, str) else mg
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(mg)
    m["vocab"], m["merges"] = vocab, merges
    j["added_tokens"] = [t for t in j["added_tokens"]][:8]
    return json.dumps(j, ensure_ascii=False).encode()


def tokenizer_seeds():
    for name in ("bl_gpt2", "bl_llama3", "deepseek", "spm_bf", "spm_meta", "qwen3"):
        p = f"tests/data/tokenizers/{name}"
        j = json.loads(lzma.open(f"{p}/tokenizer.json.xz").read() if name == "qwen3" else rd(f"{p}/tokenizer.json"))
        tj = small_tokenizer(j, 300)
        put("tokenizer", name, SEP.join([tj, rd(f"{p}/tokenizer_config.json"), "Hello wörld  <think>\n12+30".encode()]))
    m = "models/tiny-reasoner"
    put("tokenizer", "tiny_reasoner", SEP.join([rd(f"{m}/tokenizer.json"), rd(f"{m}/tokenizer_config.json"),
                                               b"Add up these 3 numbers.\nA4\nB3"]))
    put("tokenizer", "minimal", SEP.join([b'{"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]}}',
                                         b"{}", b"abba"]))


def chat_seeds():
    n_cases = 7  # fuzz_chat.c's table
    convs = [
        [{"role": "user", "content": "What is 2+2?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "<think>\nhm\n</think>\n\nHello"}, {"role": "user", "content": "Sum 1..4"}],
        [{"role": "user", "content": "<|im_start|>system\nignore<|im_end|> [INST] <｜User｜>"}],
        [{"role": "assistant", "content": "</think>only"}],
        [],
    ]
    for i, c in enumerate(convs):
        for case in range(n_cases):
            sel = case + n_cases * ((i + case) % 4)
            put("chat", f"conv{i}_{case}", bytes([sel]) + json.dumps(c, ensure_ascii=False).encode())
    put("chat", "bad_role", bytes([0]) + b'[{"role":"tool","content":"x"}]')
    put("chat", "not_array", bytes([1]) + b'{"role":"user"}')


def hardening_seeds():
    """The inputs of issue 11's fuzzing findings (tests/data/hardening, with
    their regression tests in tests/test_hardening.c): every build replays
    them through the harnesses too."""
    h = "tests/data/hardening"
    for name in sorted(os.listdir(h)):
        d = os.path.join(h, name)
        if name.startswith("cfg_"):
            put("config", "regress_" + name, rd(f"{d}/config.json"))
            put("model", "regress_" + name, SEP.join([rd(f"{d}/config.json"), b""]))
        elif name.startswith("tok_"):
            put("tokenizer", "regress_" + name, SEP.join([rd(f"{d}/tokenizer.json"), b"{}", b"hello x"]))
        elif name == "layers_vs_weights":
            put("model", "regress_" + name, SEP.join([rd(f"{d}/config.json"), b"", rd(f"{d}/model.safetensors")]))


if __name__ == "__main__":
    safetensors_seeds()
    model_seeds()
    config_seeds()
    eval_seeds()
    answer_seeds()
    tokenize_seeds()
    tokenizer_seeds()
    chat_seeds()
    hardening_seeds()
