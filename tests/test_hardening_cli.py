#!/usr/bin/env python3
"""What fuzzing broke (issue 11), seen from the command line: the bad inputs
of tests/data/hardening end in one line on stderr naming the file, the field
and the problem, and a non-zero exit (never a signal); the model's context
bounds a prompt and a generation.

Environment: LF_BIN (the longflow binary), LF_TEST_DATA (tests/data),
LF_SOURCE_DIR (the repository, for the bundled model)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_util import BIN, DATA, require_bin  # noqa: E402

HARD = os.path.join(DATA, "hardening")
MODEL = os.path.join(os.environ.get("LF_SOURCE_DIR", "."), "models", "tiny-reasoner")


def run(*args, timeout=60):
    p = subprocess.run([BIN, *args], capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


class HardeningCli(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_bin()

    def assert_one_line_error(self, rc, err, *want):
        self.assertGreater(rc, 0, f"exit status {rc} (a negative one is a signal): {err}")
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        for w in want:
            self.assertIn(w, err)

    def test_tokenizer_with_invalid_utf8_content(self):
        """The 316-byte crash of the fuzzer: a Prepend of 0xFF before a Split."""
        for name, field in (("tok_prepend_ff", "normalizer.prepend"),
                            ("tok_replace_ff", "normalizer.normalizers[1].content"),
                            ("tok_added_ff", "added_tokens[0].content")):
            with self.subTest(name=name):
                rc, _, err = run("tokenize", "--model", os.path.join(HARD, name), "--prompt", "x y")
                self.assert_one_line_error(rc, err, "tokenizer.json", field, "not valid UTF-8")

    def test_escalating_added_token_ids(self):
        rc, _, err = run("tokenize", "--model", os.path.join(HARD, "tok_escalating_ids"), "--prompt", "x")
        self.assert_one_line_error(rc, err, "added token '<t5>' has id 150000")

    def test_prompt_longer_than_the_context(self):
        """The bundled model has 4096 positions: 4097 prompt ids are refused at once."""
        ids = ",".join(["7"] * 4097)
        rc, _, err = run("generate", "--model", MODEL, "--prompt-ids", ids, "--max-tokens", "4")
        self.assert_one_line_error(rc, err, "the prompt has 4097 tokens", "is 4096")

    def test_bench_inside_the_context(self):
        """bench's own prefill/decode loop applies the same rule (test-tiny: 4096 positions)."""
        rc, _, err = run("bench", "--random-weights", "--config", "test-tiny", "--prompt-len", "4000",
                         "--gen-len", "200", "--threads", "1")
        self.assert_one_line_error(rc, err, "--prompt-len 4000 + --gen-len 200", "max_position_embeddings 4096")
        rc, _, err = run("bench", "--random-weights", "--config", "test-tiny", "--prompt-len", "5000",
                         "--gen-len", "2", "--threads", "1")
        self.assert_one_line_error(rc, err, "the prompt has 5000 tokens", "is 4096")

    def test_generation_stops_at_the_context(self):
        """A copy of the bundled model with 64 positions: 60 prompt tokens leave 4."""
        tmp = tempfile.mkdtemp(prefix="lf_hardcli_")
        try:
            for f in os.listdir(MODEL):
                if os.path.isfile(os.path.join(MODEL, f)):
                    os.symlink(os.path.join(os.path.abspath(MODEL), f), os.path.join(tmp, f))
            with open(os.path.join(MODEL, "config.json")) as f:
                cfg = json.load(f)
            cfg["max_position_embeddings"] = 64
            os.unlink(os.path.join(tmp, "config.json"))
            with open(os.path.join(tmp, "config.json"), "w") as f:
                json.dump(cfg, f)
            ids = ",".join(str(5 + i % 50) for i in range(60))
            rc, out, err = run("generate", "--model", tmp, "--prompt-ids", ids, "--max-tokens", "50",
                               "--ignore-eos", "--json")
            self.assertEqual(rc, 0, err)
            res = json.loads(out)
            self.assertEqual(len(res["tokens"]), 4)
            self.assertEqual(res["finish_reason"], "length")
            self.assertIn("context", res["note"])
        finally:
            shutil.rmtree(tmp)


if __name__ == "__main__":
    unittest.main(verbosity=2)
