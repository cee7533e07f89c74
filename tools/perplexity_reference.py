#!/usr/bin/env python3
"""Reference per-token NLL for tests/test_perplexity.py, computed with
transformers in float64, independently of longflow.

For each case: the text (tests/data/perplexity/text.txt) is encoded with the
`tokenizers` library (the fixture's tokenizer.json, special tokens added as
its post-processor says), cut into windows as the transformers perplexity
guide does (a window of `ctx` tokens starts every `stride` tokens until one
reaches the end; each scores the tokens the previous window did not, never
its own first token), and each window goes through one forward pass over the
whole window (positions restart at 0 in every window) with an explicit 4-D
attention mask:

* full: causal.
* streaming (StreamingLLM with S sinks and a budget of B slots): token t
  attends to every j <= t while t < B, afterwards to the S sinks and the
  B - S newest tokens t-B+S+1 .. t. That is what a StreamingLLM cache holds
  when each new token is written before the attention and the oldest
  non-sink token is evicted after it; the positions kept are known in
  advance, so no cache is simulated here.

The checkpoint's bf16 weights are loaded as float64 (exact), eager attention.
Output: tests/data/perplexity/reference.json with the token ids, and per case
the longflow flags, the scored token indices and their NLL (nats); for
qwen3_hd64, KL(full || streaming_b16) per position averaged, exactly and over
the full cache's top K plus a remainder bucket (K = 8, 32), and the share of
positions where the two argmaxes agree.

Also tests/data/perplexity/fidelity.json for `--gen --fidelity`: the
greedy continuation of prompt.txt that qwen3_hd64 generates in float64, and
that continuation's per-token NLL after the prompt under full attention and
the StreamingLLM mask (budget 16, 4 sinks), with KL and top-1 agreement as
above (K = 32).

Usage: python3 tools/perplexity_reference.py [--out tests/data/perplexity]
(needs torch, transformers>=5, tokenizers; CPU, a few seconds)
"""
import argparse
import json
import os

import torch
import transformers
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "tests", "data", "models")

# (fixture, case name, ctx, stride, policy, budget, sinks); a name starting
# with "prompt" runs the text after prompt.txt (--prompt-file: the prompt's
# tokens, special tokens added, then the text's, none added; only the text's
# are scored)
CASES = [
    ("qwen3_hd64", "prompt_full", 4096, 4096, "full", 0, 0),
    ("qwen3_hd64", "prompt_streaming_b16_windows", 48, 32, "streaming", 16, 4),
    ("qwen3_hd64", "full", 4096, 4096, "full", 0, 0),
    ("qwen3_hd64", "full_windows", 40, 25, "full", 0, 0),
    ("qwen3_hd64", "streaming_b16", 4096, 4096, "streaming", 16, 4),
    ("qwen3_hd64", "streaming_b24_s2_windows", 60, 60, "streaming", 24, 2),
    ("llama_hd64_gqa4", "full", 4096, 4096, "full", 0, 0),
    ("llama_hd64_gqa4", "streaming_b20", 4096, 4096, "streaming", 20, 4),
]


def windows(n, ctx, stride):
    """(begin, end, first scored index) as the transformers guide loops."""
    out, prev_end = [], 0
    for begin in range(0, n, stride):
        end = min(begin + ctx, n)
        out.append((begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == n:
            break
    return out


def mask(L, policy, budget, sinks):
    t = torch.arange(L).unsqueeze(1)
    j = torch.arange(L).unsqueeze(0)
    allowed = j <= t
    if policy == "streaming":
        allowed &= (t < budget) | (j < sinks) | (j > t - (budget - sinks))
    m = torch.zeros(L, L, dtype=torch.float64)
    m[~allowed] = float("-inf")
    return m.view(1, 1, L, L)


@torch.no_grad()
def case_nll(model, ids, ctx, stride, policy, budget, sinks, score_from=0):
    """Scored indices, their NLL, and the log-probabilities of every scored
    position [n][vocab]."""
    index, nll, rows = [], [], []
    for begin, end, first in windows(len(ids), ctx, stride):
        first = max(first, score_from)
        if first >= end:
            continue
        w = torch.tensor([ids[begin:end]])
        L = end - begin
        logits = model(input_ids=w, attention_mask=mask(L, policy, budget, sinks),
                       position_ids=torch.arange(L).unsqueeze(0), use_cache=False).logits[0]
        logp = torch.log_softmax(logits.double(), dim=-1)
        for k in range(first, end):
            index.append(k)
            nll.append(float(-logp[k - 1 - begin, ids[k]]))
            rows.append(logp[k - 1 - begin])
    return index, nll, torch.stack(rows)


def kl_stats(base, run, k):
    """Per position KL(P || Q) exactly and over P's top k plus one bucket for
    the rest of the vocabulary; the share of positions with the same argmax."""
    p = base.exp()
    exact = (p * (base - run)).sum(-1)
    top = torch.topk(base, k, dim=-1).indices
    lp, lq = base.gather(-1, top), run.gather(-1, top)
    pk = lp.exp()
    p_rest = (1 - pk.sum(-1)).clamp_min(0)
    q_rest = (1 - lq.exp().sum(-1)).clamp_min(1e-300)
    approx = (pk * (lp - lq)).sum(-1) + torch.where(p_rest > 1e-12, p_rest * (p_rest.clamp_min(1e-300).log() - q_rest.log()),
                                                    torch.zeros_like(p_rest))
    agree = (base.argmax(-1) == run.argmax(-1)).double()
    return {"k": k, "exact_mean": float(exact.mean()), "topk_mean": float(approx.mean()),
            "top1": float(agree.mean())}


def flags(ctx, stride, policy, budget, sinks):
    f = ["--ctx", str(ctx), "--stride", str(stride), "--policy", policy]
    if policy != "full":
        f += ["--budget", str(budget), "--sinks", str(sinks)]
    return f


# --fidelity (tests/data/perplexity/fidelity.json): the greedy continuation of
# prompt.txt on qwen3_hd64 (full attention, float64, FIDELITY_GEN tokens at
# most, stopping after an end-of-sequence id), then that continuation scored
# after the prompt under the full cache and StreamingLLM (budget 16, 4 sinks).
FIDELITY_GEN = 40


@torch.no_grad()
def greedy(model, prompt_ids, n, eos):
    ids = list(prompt_ids)
    for _ in range(n):
        L = len(ids)
        logits = model(input_ids=torch.tensor([ids]), attention_mask=mask(L, "full", 0, 0),
                       position_ids=torch.arange(L).unsqueeze(0), use_cache=False).logits[0, -1]
        nxt = int(torch.argmax(logits.double()))
        ids.append(nxt)
        if nxt in eos:
            break
    return ids[len(prompt_ids):]


def fidelity_reference(prompt):
    d = os.path.join(MODELS, "qwen3_hd64")
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float64, attn_implementation="eager")
    model.eval()
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    p = tok.encode(prompt).ids
    eos = model.config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    gen = greedy(model, p, FIDELITY_GEN, eos)
    seq = p + gen
    _, full_nll, full_logp = case_nll(model, seq, 4096, 4096, "full", 0, 0, len(p))
    _, pol_nll, pol_logp = case_nll(model, seq, 4096, 4096, "streaming", 16, 4, len(p))
    return {"fixture": "qwen3_hd64", "prompt": "prompt.txt", "gen": FIDELITY_GEN, "prompt_ids": p,
            "generated": gen, "full_nll": [round(x, 9) for x in full_nll],
            "streaming_b16_nll": [round(x, 9) for x in pol_nll],
            "delta_nll_mean": (sum(pol_nll) - sum(full_nll)) / len(full_nll),
            "kl_streaming_b16": kl_stats(full_logp, pol_logp, 32)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "perplexity"))
    args = ap.parse_args()
    with open(os.path.join(args.out, "text.txt"), encoding="utf-8") as f:
        text = f.read()
    with open(os.path.join(args.out, "prompt.txt"), encoding="utf-8") as f:
        prompt = f.read()
    out = {"text": "text.txt", "transformers": transformers.__version__, "torch": torch.__version__,
           "fixtures": {}}
    loaded = {}
    full_logp = None
    for fixture, name, ctx, stride, policy, budget, sinks in CASES:
        d = os.path.join(MODELS, fixture)
        if fixture not in loaded:
            model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float64, attn_implementation="eager")
            model.eval()
            tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
            ids = tok.encode(text).ids
            with_prompt = tok.encode(prompt).ids + tok.encode(text, add_special_tokens=False).ids
            loaded[fixture] = (model, ids, with_prompt, len(tok.encode(prompt).ids))
            out["fixtures"][fixture] = {"tokens": ids, "tokens_with_prompt": with_prompt, "cases": []}
        model, ids, with_prompt, n_prompt = loaded[fixture]
        f = flags(ctx, stride, policy, budget, sinks)
        if name.startswith("prompt"):
            ids = with_prompt
            f += ["--prompt-file", "prompt.txt"]
        index, nll, logp = case_nll(model, ids, ctx, stride, policy, budget, sinks,
                                    n_prompt if name.startswith("prompt") else 0)
        if name == "full":
            full_logp = logp
        elif name == "streaming_b16":  # KL from the full cache (same windows: one)
            out["fixtures"][fixture]["kl_streaming_b16"] = [kl_stats(full_logp, logp, k) for k in (8, 32)]
        out["fixtures"][fixture]["cases"].append({
            "name": name, "flags": f, "scored_index": index,
            "nll": [round(x, 9) for x in nll], "mean_nll": sum(nll) / len(nll)})
        print(f"{fixture} {name}: {len(ids)} tokens, {len(nll)} scored, mean NLL {sum(nll) / len(nll):.6f}")
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    fid = fidelity_reference(prompt)
    fid.update({"transformers": transformers.__version__, "torch": torch.__version__})
    print(f"fidelity: {len(fid['generated'])} tokens generated, KL(full || streaming b16) "
          f"{fid['kl_streaming_b16']['topk_mean']:.6f}")
    with open(os.path.join(args.out, "fidelity.json"), "w") as f:
        json.dump(fid, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
