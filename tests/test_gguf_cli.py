#!/usr/bin/env python3
"""`longflow generate --model FILE.gguf` end to end: the tiny conformance
checkpoints converted to GGUF the way llama.cpp's converter does
(tests/data/gguf/models/, made by tools/gen_gguf_fixtures.py) give
transformers' greedy tokens for every prompt (tests/data/models/*/expected.json,
recorded by transformers from the safetensors checkpoints). The BF16 GGUFs
hold exactly the checkpoints' weights, so the tokens must be equal; the same
for a directory holding one GGUF. Also the one-line errors for a GGUF that is
not one."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

SRC = os.environ.get("LF_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("LF_BIN", os.path.join(SRC, "build", "longflow"))
DATA = os.path.join(SRC, "tests", "data")
MODELS = ("llama_linear", "qwen2_bias", "qwen3_tied_hd")


def run(args):
    return subprocess.run([BIN] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)


def greedy(model, prompt, n):
    p = run(["generate", "--model", model, "--prompt-ids", ",".join(map(str, prompt)), "--max-tokens", str(n),
             "--ignore-eos", "--json", "--threads", "2"])
    if p.returncode != 0:
        raise AssertionError(p.stderr)
    return json.loads(p.stdout)["tokens"]


class GgufCli(unittest.TestCase):
    def test_tokens_equal_transformers(self):
        for name in MODELS:
            with open(os.path.join(DATA, "models", name, "expected.json")) as f:
                e = json.load(f)
            gguf = os.path.join(DATA, "gguf", "models", name + ".gguf")
            for pr in e["prompts"]:
                with self.subTest(model=name, prompt=pr["name"]):
                    self.assertEqual(greedy(gguf, pr["prompt"], len(pr["tokens"])), pr["tokens"])

    def test_directory_with_one_gguf(self):
        with tempfile.TemporaryDirectory() as d:
            shutil.copy(os.path.join(DATA, "gguf", "models", "qwen2_bias.gguf"), d)
            with open(os.path.join(DATA, "models", "qwen2_bias", "expected.json")) as f:
                pr = json.load(f)["prompts"][0]
            self.assertEqual(greedy(d, pr["prompt"], len(pr["tokens"])), pr["tokens"])

    def test_errors_are_one_line(self):
        with tempfile.TemporaryDirectory() as d:
            bad = os.path.join(d, "bad.gguf")
            with open(os.path.join(DATA, "gguf", "models", "llama_linear.gguf"), "rb") as f:
                data = f.read()
            with open(bad, "wb") as f:
                f.write(data[: len(data) // 2])  # tensor data cut off
            p = run(["generate", "--model", bad, "--prompt-ids", "1,2", "--max-tokens", "1"])
            self.assertNotEqual(p.returncode, 0)
            lines = [l for l in p.stderr.splitlines() if l.strip()]
            self.assertEqual(len(lines), 1, p.stderr)
            self.assertIn("bad.gguf", lines[0])
            self.assertIn("past the end of the file", lines[0])


if __name__ == "__main__":
    unittest.main(verbosity=2)
