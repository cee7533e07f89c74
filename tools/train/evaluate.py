#!/usr/bin/env python3
"""Greedy full-cache accuracy of a checkpoint with transformers (the
reference the C engine's `longflow eval` is checked against).

All problems of all files go through one batched, left-padded
model.generate() call (KV cache, greedy), so a few hundred problems take one
pass of the longest answer.

Usage:
  evaluate.py --model DIR --data a.jsonl [b.jsonl ...] [--limit N]
              [--device cpu|cuda] [--dtype float32|bfloat16] [--batch 0]
              [--max-new-tokens 2200] [--out results.jsonl]
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tasks  # noqa: E402


def last_boxed(text):
    """Content of the last \\boxed{...} (balanced braces), or None."""
    i = text.rfind("\\boxed{")
    while i >= 0:
        j, depth = i + len("\\boxed{"), 1
        k = j
        while k < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[k], 0)
            k += 1
        if depth == 0:
            return text[j:k - 1].strip()
        i = text.rfind("\\boxed{", 0, i)
    return None


def load_jsonl(path, limit=None):
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
            if limit and len(rows) >= limit:
                break
    return rows


@torch.no_grad()
def greedy_generate(model, tok, prompts, max_new_tokens, batch=0, max_time=None, log=print):
    """Greedy completions of prompt strings. Returns [(text, n_tokens, finished)].
    tok is a tokenizers.Tokenizer; n_tokens counts generated tokens up to and
    including <|im_end|>."""
    dev = next(model.parameters()).device
    eos = tok.token_to_id("<|im_end|>")
    pad = tok.token_to_id("<|endoftext|>")
    enc = [tok.encode(p).ids for p in prompts]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    batch = batch or len(enc)
    out = [None] * len(enc)
    t0 = time.time()
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        width = max(len(enc[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, width - len(enc[i]):] = torch.tensor(enc[i])
            mask[r, width - len(enc[i]):] = 1
        kw = {}
        if max_time:
            kw["max_time"] = max(1.0, max_time - (time.time() - t0))
        gen = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=eos, pad_token_id=pad, **kw)
        gen = gen[:, width:].tolist()
        for r, i in enumerate(idx):
            g = gen[r]
            finished = eos in g
            n = g.index(eos) + 1 if finished else len(g)
            out[i] = (tok.decode(g[:n], skip_special_tokens=False), n, finished)
        log("  generated %d/%d (%.0f s)" % (min(s + batch, len(order)), len(order), time.time() - t0))
    return out


def evaluate(model, tok, files, limit=None, max_new_tokens=2200, batch=0, max_time=None, out_path=None, log=print,
             gen_fn=None):
    """Accuracy per file; returns {name: {...}} and writes per-problem rows.
    gen_fn(model, tok, prompts, max_new_tokens, max_time=..., log=...) replaces
    transformers' generate (train.py passes fastqwen.greedy_generate)."""
    probs = []
    for path in files:
        name = os.path.splitext(os.path.basename(path))[0]
        for row in load_jsonl(path, limit):
            probs.append((name, row))
    t0 = time.time()
    prompts = [tasks.prompt_text(r["question"]) for _, r in probs]
    if gen_fn is not None:
        res = gen_fn(model, tok, prompts, max_new_tokens, max_time=max_time, log=log)
    else:
        res = greedy_generate(model, tok, prompts, max_new_tokens, batch=batch, max_time=max_time, log=log)
    secs = time.time() - t0
    summary, rows = {}, []
    for (name, row), (text, n, fin) in zip(probs, res):
        pred = last_boxed(text)
        ok = pred is not None and pred == str(row["true_answer"]).strip()
        s = summary.setdefault(name, {"n": 0, "correct": 0, "tokens": 0, "unfinished": 0})
        s["n"] += 1
        s["correct"] += int(ok)
        s["tokens"] += n
        s["unfinished"] += int(not fin)
        rows.append({"family": name, "index": row["index"], "true_answer": row["true_answer"], "pred": pred,
                     "correct": ok, "n_tokens": n, "finished": fin, "output": text})
    total_tokens = sum(s["tokens"] for s in summary.values())
    for name, s in summary.items():
        s["accuracy"] = s["correct"] / s["n"]
        s["avg_tokens"] = s["tokens"] / s["n"]
        log("%-6s accuracy %5.1f%% (%d/%d)  avg output %.0f tokens  unfinished %d" %
            (name, 100 * s["accuracy"], s["correct"], s["n"], s["avg_tokens"], s["unfinished"]))
    log("generated %d tokens in %.1f s (%.0f tokens/s)" % (total_tokens, secs, total_tokens / max(secs, 1e-9)))
    if out_path:
        with open(out_path, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--limit", type=int, default=None, help="first N problems of each file")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--batch", type=int, default=0, help="problems per generate call (0 = all)")
    ap.add_argument("--max-new-tokens", type=int, default=2200)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.dtype),
                                                 attn_implementation="sdpa").to(args.device).eval()
    summary = evaluate(model, tok, args.data, args.limit, args.max_new_tokens, args.batch, out_path=args.out)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
