#!/usr/bin/env python3
"""`longflow tokenize` / `detokenize` against the reference: the committed
fixtures of tools/gen_tokenizer_fixtures.py (ids from the `tokenizers` and
`transformers` libraries, chat goldens from apply_chat_template), and, when
the `tokenizers` library is installed, live comparisons on random text.

Environment: LF_BIN (the longflow binary), LF_TEST_DATA (tests/data)."""
import json
import os
import random
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cli_util  # noqa: E402
from cli_util import QWEN3_TOKENIZER, require_bin, run, unpack_qwen3_tokenizer  # noqa: E402

DATA = os.path.join(cli_util.DATA, "tokenizers")


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class TokenizeCli(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_bin()
        cls.tmp = tempfile.mkdtemp(prefix="lf_tokcli_")
        cls.qwen = os.path.join(cls.tmp, "qwen3")
        os.makedirs(cls.qwen)
        unpack_qwen3_tokenizer(cls.qwen)
        shutil.copy(os.path.join(QWEN3_TOKENIZER, "tokenizer_config.json"), cls.qwen)
        cls.expected = {name: read_jsonl(os.path.join(DATA, name, "expected.jsonl"))
                        for name in ("qwen3", "spm_bf", "bl_llama3")}
        cls.dirs = {"qwen3": cls.qwen, "spm_bf": os.path.join(DATA, "spm_bf"),
                    "bl_llama3": os.path.join(DATA, "bl_llama3")}

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def file(self, name, data):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode("utf-8"))
        return path

    def test_lines(self):
        # every fixture text without a newline, one per line: each line alone
        for name in ("qwen3", "spm_bf", "bl_llama3"):
            recs = [r for r in self.expected[name] if "\n" not in r["text"] and "\r" not in r["text"]
                    and "\u2028" not in r["text"] and "\x85" not in r["text"]]
            self.assertGreater(len(recs), 20)
            path = self.file(f"{name}_lines.txt", "".join(r["text"] + "\n" for r in recs))
            rc, out, err = run("tokenize", "--model", self.dirs[name], "--prompt-file", path, "--lines", "--json")
            self.assertEqual(rc, 0, err)
            got = [json.loads(line) for line in out.splitlines()]
            self.assertEqual(len(got), len(recs))
            for r, g in zip(recs, got):
                self.assertEqual(g["text"], r["text"])
                self.assertEqual(g["ids"], r["ids"], f"{name}: {r['text'][:60]!r}")
            # plain output: one JSON array per line
            rc, out, err = run("tokenize", "--model", self.dirs[name], "--prompt-file", path, "--lines")
            self.assertEqual(rc, 0, err)
            self.assertEqual([json.loads(line) for line in out.splitlines()], [r["ids"] for r in recs])

    def test_whole_texts_and_flags(self):
        # one process per text: a few for the big Qwen3 file, more for the small ones
        for name, count in (("qwen3", 6), ("spm_bf", 30), ("bl_llama3", 30)):
            for r in self.expected[name][-count:]:
                path = self.file("text.txt", r["text"])
                rc, out, err = run("tokenize", "--model", self.dirs[name], "--prompt-file", path)
                self.assertEqual(rc, 0, err)
                self.assertEqual(json.loads(out), r["ids"], r["text"][:60])
                rc, out, err = run("tokenize", "--model", self.dirs[name], "--prompt-file", path,
                                   "--no-parse-special")
                self.assertEqual(rc, 0, err)
                self.assertEqual(json.loads(out), r.get("ids_nosplit", r["ids"]))
                if r.get("ids_add", 0) is not None:
                    rc, out, err = run("tokenize", "--model", self.dirs[name], "--prompt-file", path,
                                       "--add-special")
                    self.assertEqual(rc, 0, err)
                    self.assertEqual(json.loads(out), r.get("ids_add", r["ids"]))
        # --prompt gives the same as --prompt-file
        r = self.expected["qwen3"][0]
        rc, out, err = run("tokenize", "--model", self.qwen, "--prompt", r["text"], "--json")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out), {"text": r["text"], "ids": r["ids"]})

    def test_detokenize(self):
        for name, count in (("qwen3", 6), ("spm_bf", 30)):
            for r in self.expected[name][-count:]:
                if not r["ids"]:
                    continue
                ids = ",".join(map(str, r["ids"]))
                rc, out, err = run("detokenize", "--model", self.dirs[name], "--ids", ids, "--json")
                self.assertEqual(rc, 0, err)
                self.assertEqual(json.loads(out)["text"], r.get("decoded", r["text"]))
                rc, out, err = run("detokenize", "--model", self.dirs[name], "--ids", ids, "--skip-special",
                                   "--json")
                self.assertEqual(json.loads(out)["text"], r.get("decoded_skip", r.get("decoded", r["text"])))
        rc, out, err = run("detokenize", "--model", self.qwen, "--ids", "9707,1879")
        self.assertEqual((rc, out), (0, "Hello world\n"))

    def test_chat_goldens(self):
        with open(os.path.join(DATA, "chat", "goldens.json"), encoding="utf-8") as f:
            goldens = json.load(f)
        n = 0
        for c in goldens:
            if c["tokenizer_json"] != "qwen3/tokenizer.json.xz" or c["config"] != "qwen3/tokenizer_config.json":
                continue
            msgs = c["messages"]
            args = ["tokenize", "--model", self.qwen, "--chat", "--json"]
            if len(msgs) <= 2 and msgs[-1]["role"] == "user" and all(m["role"] != "assistant" for m in msgs):
                if msgs[0]["role"] == "system":
                    args += ["--system", msgs[0]["content"]]
                args += ["--prompt", msgs[-1]["content"]]
            else:
                args += ["--messages", self.file("msgs.json", json.dumps(msgs))]
            if not c["enable_thinking"]:
                args.append("--no-think")
            rc, out, err = run(*args)
            self.assertEqual(rc, 0, err)
            got = json.loads(out)
            self.assertEqual(got["text"], c["text"], c["name"])
            self.assertEqual(got["ids"], c["ids"], c["name"])
            n += 1
        self.assertGreaterEqual(n, 6)

    def test_errors(self):
        bad = self.file("bad.txt", b"valid then \xff invalid")
        rc, out, err = run("tokenize", "--model", self.qwen, "--prompt-file", bad)
        self.assertEqual(rc, 1)
        self.assertIn("UTF-8", err)
        rc, out, err = run("tokenize", "--model", os.path.join(self.tmp, "nowhere"), "--prompt", "x")
        self.assertEqual(rc, 1)
        self.assertIn("nowhere: no such directory", err)
        empty = os.path.join(self.tmp, "empty-model")
        os.makedirs(empty, exist_ok=True)
        rc, out, err = run("tokenize", "--model", empty, "--prompt", "x")
        self.assertEqual(rc, 1)
        self.assertIn("tokenizer.json", err)
        broken = os.path.join(self.tmp, "broken")
        os.makedirs(broken, exist_ok=True)
        self.file("broken/tokenizer.json", '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, '
                                           '"normalizer": {"type": "Precompiled"}}')
        rc, out, err = run("tokenize", "--model", broken, "--prompt", "x")
        self.assertEqual(rc, 1)
        self.assertIn("unsupported normalizer type 'Precompiled'", err)
        self.file("broken/tokenizer.json", '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [')
        rc, out, err = run("tokenize", "--model", broken, "--prompt", "x")
        self.assertEqual(rc, 1)
        self.assertIn("invalid JSON", err)
        rc, out, err = run("tokenize", "--model", self.qwen, "--prompt", "x", "--frobnicate")
        self.assertEqual(rc, 2)
        self.assertIn("--frobnicate", err)
        rc, out, err = run("tokenize", "--model", self.qwen)
        self.assertEqual(rc, 2)
        rc, out, err = run("tokenize", "--model", self.qwen, "--prompt", "x", "--system", "s")
        self.assertEqual(rc, 2)
        rc, out, err = run("tokenize", "--model", self.qwen, "--chat", "--prompt", "x", "--chat-template", "nope")
        self.assertEqual(rc, 1)
        self.assertIn("nope", err)
        rc, out, err = run("tokenize", "--model", self.qwen, "--chat", "--prompt", "x", "--chat-template", "llama3")
        self.assertEqual(rc, 1)
        self.assertIn("<|start_header_id|>", err)
        msgs = self.file("bad_msgs.json", '[{"role": "user", "content": "x"}, {"role": "robot", "content": "y"}]')
        rc, out, err = run("tokenize", "--model", self.qwen, "--messages", msgs)
        self.assertEqual(rc, 1)
        self.assertIn("robot", err)
        rc, out, err = run("detokenize", "--model", self.qwen, "--ids", "1,999999999")
        self.assertEqual(rc, 2)  # a bad flag value, like "1,x"
        self.assertIn("--ids: element 2 (999999999) is outside the tokenizer's vocabulary", err)
        rc, out, err = run("detokenize", "--model", self.qwen, "--ids", "5,-1")
        self.assertEqual(rc, 2)
        self.assertIn("element 2 (-1)", err)
        rc, out, err = run("detokenize", "--model", self.qwen, "--ids", "1,x")
        self.assertEqual(rc, 2)

    def test_live_random_text(self):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            self.skipTest("the tokenizers library is not installed")
        rng = random.Random(1234)
        # no "\n": the texts go through --lines, one per line
        alphabet = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                    " \t\r  ,.;:!?'\"()[]{}<>|/\\-_=+*&^%$#@~`"
                    "éèàüößçñÅ∑∫√≤≥πθ中文字日本語한국어عربيةहिन्दी😀👍🏽👨‍👩‍👧\u200d\u00a0\u3000")
        specials = ["<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|endoftext|>", "'s", "'LL"]
        texts = []
        for _ in range(200):
            parts = []
            for _ in range(rng.randint(1, 40)):
                if rng.random() < 0.08:
                    parts.append(rng.choice(specials))
                else:
                    parts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))))
            texts.append("".join(parts))
        path = self.file("rand.txt", "".join(t + "\n" for t in texts))
        for name in ("qwen3", "spm_bf", "bl_llama3"):
            ref = Tokenizer.from_file(os.path.join(self.dirs[name], "tokenizer.json"))
            rc, out, err = run("tokenize", "--model", self.dirs[name], "--prompt-file", path, "--lines")
            self.assertEqual(rc, 0, err)
            got = [json.loads(line) for line in out.splitlines()]
            self.assertEqual(len(got), len(texts))
            for text, ids in zip(texts, got):
                self.assertEqual(ids, ref.encode(text, add_special_tokens=False).ids, f"{name}: {text!r}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
