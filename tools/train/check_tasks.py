#!/usr/bin/env python3
"""Independent checks of the tiny model's data, tokenizer and checkpoint.

- Test sets and freshly generated training problems: the answer is recomputed
  from the QUESTION TEXT ALONE by a separate parser/solver written here (not
  the generator's code), and must equal true_answer / the boxed answer; the
  reasoning's last step must agree with it; walk/path graphs must be one cycle.
- Tokenizer: digits and look-up keys are single tokens in context; encoding
  prompt and answer separately equals encoding the whole text;
  transformers' AutoTokenizer gives the same ids as `tokenizers`, and its
  apply_chat_template renders exactly the prompt the model was trained on.
- Checkpoint (if model.safetensors is there): Qwen3ForCausalLM, GQA with at
  least 2 query heads per KV head, tied embeddings saved once, bf16 tensors,
  vocabulary = tokenizer's, directory under 40 MB, loads in transformers.
- --eval N: greedy full-cache accuracy on the first N test problems of each
  family (reported, not asserted: see docs/tiny-model.md for the status).

Usage: check_tasks.py [--model models/tiny-reasoner] [--train-samples 300] [--eval N]
Exit status 1 with a message on the first failed check.
"""
import argparse
import json
import os
import random
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tasks  # noqa: E402

FAILS = []


def check(cond, msg):
    if not cond:
        FAILS.append(msg)
        print("FAIL:", msg)
    return cond


# ---- independent solvers: question text -> answer --------------------------

def solve_sum(q):
    lines = q.split("\n")
    m = re.fullmatch(r"Add up these (\d+) numbers\.", lines[0])
    items = [re.fullmatch(r"([A-Za-z])([0-9])", ln) for ln in lines[1:-1]]
    if not m or not all(items) or int(m.group(1)) != len(items):
        return None
    labels = [it.group(1) for it in items]
    if len(set(labels)) != len(labels):
        return None
    return str(sum(int(it.group(2)) for it in items))


def _arrows(lines, with_len):
    pat = r"([A-Za-z]) ([A-Za-z])([0-9])" if with_len else r"([A-Za-z]) ([A-Za-z])"
    edges = {}
    for ln in lines:
        m = re.fullmatch(pat, ln)
        if not m or m.group(1) in edges:
            return None
        edges[m.group(1)] = (m.group(2), int(m.group(3)) if with_len else 0)
    # one cycle through every node: a permutation with a single orbit
    nodes = set(edges)
    if {v for v, _ in edges.values()} != nodes:
        return None
    a, seen = next(iter(nodes)), set()
    while a not in seen:
        seen.add(a)
        a = edges[a][0]
    return edges if seen == nodes else None


def solve_walk(q):
    lines = q.split("\n")
    m = re.fullmatch(r"Start at ([A-Za-z]) and follow (\d+) arrows\. Where do you end up\?", lines[-1])
    edges = _arrows(lines[1:-1], False)
    if not m or edges is None or m.group(1) not in edges:
        return None
    cur = m.group(1)
    for _ in range(int(m.group(2))):
        cur = edges[cur][0]
    return cur


def solve_path(q):
    lines = q.split("\n")
    m = re.fullmatch(r"How long is the way from ([A-Za-z]) to ([A-Za-z]) along the arrows\?", lines[-1])
    edges = _arrows(lines[1:-1], True)
    if not m or edges is None or m.group(1) not in edges or m.group(2) not in edges or m.group(1) == m.group(2):
        return None
    cur, total = m.group(1), 0
    while cur != m.group(2):
        nxt, w = edges[cur]
        total += w
        cur = nxt
    return str(total)


SOLVERS = {"sum": solve_sum, "walk": solve_walk, "path": solve_path}


def last_step_value(family, reasoning):
    last = reasoning.split("\n")[-1]
    if family == "walk":
        return last.split(" ")[1]
    return last.rsplit("=", 1)[1]


def check_data(model_dir, n_train):
    for fam in tasks.FAMILIES:
        path = os.path.join(model_dir, "data", fam + ".jsonl")
        if not check(os.path.exists(path), "%s missing" % path):
            continue
        rows = [json.loads(ln) for ln in open(path) if ln.strip()]
        check(len(rows) >= 200, "%s: %d problems, want >= 200" % (path, len(rows)))
        check([r["index"] for r in rows] == list(range(len(rows))), "%s: indices not 0..n-1" % path)
        bad = [r["index"] for r in rows if SOLVERS[fam](r["question"]) != r["true_answer"]]
        check(not bad, "%s: answers differ from the independent solver at %s" % (path, bad[:5]))
        check(len({r["question"] for r in rows}) == len(rows), "%s: duplicate questions" % path)
        # the committed file is what the generator writes for its fixed seed
        regen = tasks.test_problems(fam, len(rows))
        check([q for q, _, _ in regen] == [r["question"] for r in rows],
              "%s: not reproducible from tasks.py (seed %d)" % (path, tasks.TEST_SEED[fam]))
        rng = random.Random("check-%s" % fam)
        nbad = 0
        for _ in range(n_train):
            q, r, a = tasks.generate(fam, rng)
            want = SOLVERS[fam](q)
            resp = tasks.response_text(r, a)
            ok = (want == a and last_step_value(fam, r) == a and resp.endswith("\\boxed{%s}<|im_end|>" % want)
                  and resp.startswith("<think>\n") and "\n</think>\n\n" in resp)
            nbad += not ok
        check(nbad == 0, "%s: %d of %d generated training problems disagree with the solver" % (fam, nbad, n_train))
        print("data %-5s ok: %d test problems, %d generated problems checked" % (fam, len(rows), n_train))


def check_tokenizer(model_dir):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    for s in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"):
        check(tok.token_to_id(s) is not None, "tokenizer: %s missing" % s)
    for d in "0123456789":
        check(tok.encode("x " + d * 3 + "7").tokens[-4:] == [d, d, d, "7"], "tokenizer: digits of %s not split" % d)
    for L in tasks.LETTERS:
        e = tok.encode("\n%s %s7\n" % (L, L)).tokens
        check(e == ["Ċ", L, "Ġ" + L, "7", "Ċ"], "tokenizer: key %r not single tokens: %s" % (L, e))
    rng = random.Random("check-tok")
    for fam in tasks.FAMILIES:
        for _ in range(20):
            q, r, a = tasks.generate(fam, rng)
            p, resp = tasks.prompt_text(q), tasks.response_text(r, a)
            whole = tok.encode(p + resp).ids
            check(whole == tok.encode(p).ids + tok.encode(resp).ids, "tokenizer: %s prompt/answer split differs" % fam)
            check(tok.decode(whole, skip_special_tokens=False) == p + resp, "tokenizer: %s round trip" % fam)
    try:
        from transformers import AutoTokenizer
    except ImportError:
        print("tokenizer ok (transformers not installed: AutoTokenizer checks skipped)")
        return
    at = AutoTokenizer.from_pretrained(model_dir)
    check(at.eos_token == "<|im_end|>", "tokenizer_config: eos_token %r" % at.eos_token)
    rng = random.Random("check-chat")
    for fam in tasks.FAMILIES:
        q, r, a = tasks.generate(fam, rng)
        text = tasks.prompt_text(q) + tasks.response_text(r, a)
        check(at(text)["input_ids"] == tok.encode(text).ids, "AutoTokenizer ids differ from tokenizers (%s)" % fam)
        rendered = at.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        check(rendered == tasks.prompt_text(q), "chat template renders %r" % rendered[-60:])
    no_think = at.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                      add_generation_prompt=True, enable_thinking=False)
    check(no_think.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n"), "enable_thinking=False renders %r" % no_think)
    print("tokenizer ok: %d tokens" % tok.get_vocab_size())


def check_model(model_dir):
    st = os.path.join(model_dir, "model.safetensors")
    if not os.path.exists(st):
        print("no model.safetensors: checkpoint checks skipped")
        return None
    from safetensors import safe_open
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    gen = json.load(open(os.path.join(model_dir, "generation_config.json")))
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    check(cfg["architectures"] == ["Qwen3ForCausalLM"] and cfg["model_type"] == "qwen3", "config: not Qwen3")
    check(cfg["num_attention_heads"] % cfg["num_key_value_heads"] == 0
          and cfg["num_attention_heads"] // cfg["num_key_value_heads"] >= 2, "config: want GQA with >= 2 q heads per kv head")
    check(cfg["tie_word_embeddings"] is True, "config: embeddings not tied")
    check(cfg["vocab_size"] == tok.get_vocab_size(), "config vocab %d != tokenizer %d" % (cfg["vocab_size"], tok.get_vocab_size()))
    check(cfg["eos_token_id"] == tok.token_to_id("<|im_end|>"), "config: eos is not <|im_end|>")
    check(tok.token_to_id("<|im_end|>") in gen["eos_token_id"], "generation_config: eos lacks <|im_end|>")
    with safe_open(st, "pt") as f:
        keys = list(f.keys())
        check("lm_head.weight" not in keys, "safetensors: lm_head saved although tied")
        dts = {str(f.get_slice(k).get_dtype()) for k in keys}
        check(dts == {"BF16"}, "safetensors dtypes %s, want BF16" % dts)
        n_params = sum(f.get_slice(k).get_shape()[0] * (f.get_slice(k).get_shape() + [1])[1] for k in keys)
    need = {"model.embed_tokens.weight", "model.norm.weight"}
    for i in range(cfg["num_hidden_layers"]):
        for n in ("input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj",
                  "self_attn.v_proj", "self_attn.o_proj", "self_attn.q_norm", "self_attn.k_norm",
                  "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            need.add("model.layers.%d.%s.weight" % (i, n))
    check(set(keys) == need, "safetensors: tensors differ from Qwen3's: %s" % sorted(set(keys) ^ need)[:6])
    size = sum(os.path.getsize(os.path.join(model_dir, f)) for f in os.listdir(model_dir)
               if os.path.isfile(os.path.join(model_dir, f)))
    check(size < 40 * 2 ** 20, "model dir is %.1f MB, want < 40 MB" % (size / 2 ** 20))
    try:
        import torch  # noqa: F401
        from transformers import AutoModelForCausalLM
    except ImportError:
        print("checkpoint files ok (%.2fM parameters); torch not installed: load check skipped" % (n_params / 1e6))
        return None
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    check(type(model).__name__ == "Qwen3ForCausalLM", "loads as %s" % type(model).__name__)
    print("checkpoint ok: %.2fM parameters, %.1f MB" % (n_params / 1e6, size / 2 ** 20))
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(HERE, "..", "..", "models", "tiny-reasoner"))
    ap.add_argument("--train-samples", type=int, default=300)
    ap.add_argument("--eval", type=int, default=0, help="greedy accuracy on the first N problems per family")
    args = ap.parse_args()
    check_data(args.model, args.train_samples)
    check_tokenizer(args.model)
    model = check_model(args.model)
    if args.eval and model is not None:
        import evaluate
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
        files = [os.path.join(args.model, "data", f + ".jsonl") for f in tasks.FAMILIES]
        evaluate.evaluate(model.eval(), tok, files, args.eval, 1500)
    if FAILS:
        print("%d check(s) failed" % len(FAILS))
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
