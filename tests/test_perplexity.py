#!/usr/bin/env python3
"""Tests of `longflow perplexity`.

References are independent of the engine: tests/data/perplexity/reference.json
holds the per-token NLL transformers computes in float64 on two conformance
fixtures (tools/perplexity_reference.py), with the full cache, with windows
and a stride, and under StreamingLLM through an attention mask of the
positions a sinks + recent cache keeps, and the text after an unscored
prompt (--prompt-file); and KL(full || StreamingLLM) and the top-1 agreement
from the same float64 logits. Also: the KL of full against its own
base is 0 with top-1 agreement 1, a policy's delta NLL against the base equals
the references' difference, bases made for something else are refused with a
message naming the mismatch, and bad input gives one-line errors.

--gen/--fidelity against tests/data/perplexity/fidelity.json (same script):
the greedy continuation transformers generates in float64, its NLL after the
prompt under full attention and the StreamingLLM mask, KL and agreement.
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

SRC = os.environ.get("LF_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("LF_BIN", os.path.join(SRC, "build", "longflow"))
MODELS = os.path.join(SRC, "tests", "data", "models")
DATA = os.path.join(SRC, "tests", "data", "perplexity")
TEXT = os.path.join(DATA, "text.txt")
TINY = os.path.join(SRC, "models", "tiny-reasoner")

# float32 compute over bf16 weights against float64: measured max 1.6e-5
# nats per token (transformers 5.24, NLL ~ 17-26 nats on these fixtures).
TOL_TOKEN = 2e-4
TOL_MEAN = 5e-5

with open(os.path.join(DATA, "reference.json")) as f:
    REF = json.load(f)
with open(os.path.join(DATA, "fidelity.json")) as f:
    FID = json.load(f)


def run(args, check=True):
    # an fp32 KV cache: the references are transformers' float32/float64
    p = subprocess.run([BIN, "perplexity", "--kv-dtype", "fp32"] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"longflow perplexity {' '.join(args)} failed ({p.returncode}): {p.stderr}")
    return p


def ppl(model, *extra, text=TEXT):
    p = run(["--model", os.path.join(MODELS, model) if not os.path.isabs(model) else model, "--file", text,
             "--json", "--threads", "2", *extra])
    return json.loads(p.stdout)


def case_flags(c):
    """The case's flags, --prompt-file's path made absolute."""
    return [os.path.join(DATA, a) if a.endswith(".txt") else a for a in c["flags"]]


def case(fixture, name):
    return next(c for c in REF["fixtures"][fixture]["cases"] if c["name"] == name)


class Reference(unittest.TestCase):
    def test_nll_matches_transformers(self):
        """Per-token and mean NLL equal transformers' float64 values (full,
        windows with a stride, StreamingLLM) on both fixtures."""
        for fixture, d in REF["fixtures"].items():
            for c in d["cases"]:
                with self.subTest(fixture=fixture, case=c["name"]):
                    j = ppl(fixture, "--per-token", *case_flags(c))
                    prompt = c["name"].startswith("prompt")
                    self.assertEqual(j["tokens"], len(d["tokens_with_prompt" if prompt else "tokens"]))
                    if prompt:
                        self.assertEqual(j["prompt_tokens"], len(d["tokens_with_prompt"]) - len(d["tokens"]))
                    self.assertEqual(j["scored_index"], c["scored_index"])
                    self.assertEqual(j["tokens_scored"], len(c["nll"]))
                    for i, (got, want) in enumerate(zip(j["nll_per_token"], c["nll"])):
                        self.assertAlmostEqual(got, want, delta=TOL_TOKEN, msg=f"token {c['scored_index'][i]}")
                    self.assertAlmostEqual(j["nll"], c["mean_nll"], delta=TOL_MEAN)
                    n = len(c["nll"])
                    mean = c["mean_nll"]
                    se = (sum((x - mean) ** 2 for x in c["nll"]) / (n - 1) / n) ** 0.5
                    self.assertAlmostEqual(j["se"], se, delta=1e-4)

    def test_streaming_costs_something(self):
        """Under a budget smaller than the window the NLL differs from full's,
        by much more than the tolerance (the references differ too)."""
        for fixture, name in (("qwen3_hd64", "streaming_b16"), ("llama_hd64_gqa4", "streaming_b20")):
            full, pol = case(fixture, "full"), case(fixture, name)
            self.assertGreater(abs(pol["mean_nll"] - full["mean_nll"]), 100 * TOL_MEAN)
            a = ppl(fixture, *full["flags"])
            b = ppl(fixture, *pol["flags"])
            self.assertGreater(abs(a["nll"] - b["nll"]), 100 * TOL_MEAN)

    def test_batch_and_limit(self):
        """Windows decoded together give what one at a time gives; --limit-chunks
        scores the reference's first windows."""
        c = case("qwen3_hd64", "full_windows")
        one = ppl("qwen3_hd64", "--per-token", "--batch", "1", *c["flags"])
        many = ppl("qwen3_hd64", "--per-token", "--batch", "5", *c["flags"])
        for x, y in zip(one["nll_per_token"], many["nll_per_token"]):
            self.assertAlmostEqual(x, y, delta=TOL_TOKEN)  # the batched matmul rounds differently
        lim = ppl("qwen3_hd64", "--per-token", "--limit-chunks", "2", *c["flags"])
        self.assertEqual(lim["windows"], 2)
        k = lim["tokens_scored"]
        self.assertEqual(k, 39 + 25)  # window 0 (0..39) scores 1..39, window 1 (25..64) 40..64
        self.assertEqual(lim["scored_index"], c["scored_index"][:k])
        for got, want in zip(lim["nll_per_token"], c["nll"][:k]):
            self.assertAlmostEqual(got, want, delta=TOL_TOKEN)


class KL(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.base = os.path.join(self.tmp.name, "full.klb")

    def tearDown(self):
        self.tmp.cleanup()

    def write_base(self, fixture="qwen3_hd64", *extra):
        return ppl(fixture, "--kl-base", self.base, "--kl-write", *extra)

    def test_full_against_itself(self):
        w = self.write_base("qwen3_hd64", "--kl-top-k", "16")
        self.assertEqual(os.path.getsize(self.base), 312 + w["tokens_scored"] * (12 + 8 * 16))
        j = ppl("qwen3_hd64", "--kl-base", self.base, "--batch", "1")
        self.assertEqual(j["tokens_scored"], w["tokens_scored"])
        self.assertLess(abs(j["kl"]), 1e-6)
        self.assertEqual(j["top1"], 1.0)
        self.assertEqual(j["top1_se"], 0.0)
        self.assertLess(abs(j["delta_nll"]), 1e-6)

    def test_policy_against_full(self):
        """StreamingLLM against the full base: delta NLL is the difference of
        the two references; KL > 0; agreement in [0, 1)."""
        full, pol = case("qwen3_hd64", "full"), case("qwen3_hd64", "streaming_b16")
        self.write_base("qwen3_hd64", *full["flags"][:4])
        j = ppl("qwen3_hd64", "--kl-base", self.base, *pol["flags"])
        self.assertAlmostEqual(j["delta_nll"], pol["mean_nll"] - full["mean_nll"], delta=2 * TOL_MEAN)
        self.assertGreater(j["kl"], 1e-3)
        self.assertGreater(j["kl_se"], 0)
        self.assertLess(j["top1"], 1.0)
        self.assertGreaterEqual(j["top1"], 0.0)

    def test_policy_run_as_base(self):
        """--kl-write stores any run's logits (a policy's, a cache dtype's):
        StreamingLLM against its own base has KL 0; the full cache against it
        has the delta NLL of the two transformers references; a bf16 cache's
        StreamingLLM against the fp32 one's base has a small KL > 0 and the
        difference of the two runs' NLL."""
        full, pol = case("qwen3_hd64", "full"), case("qwen3_hd64", "streaming_b16")
        w = self.write_base("qwen3_hd64", *pol["flags"])
        self.assertAlmostEqual(w["nll"], pol["mean_nll"], delta=TOL_MEAN)
        same = ppl("qwen3_hd64", "--kl-base", self.base, *pol["flags"])
        self.assertLess(abs(same["kl"]), 1e-6)
        self.assertEqual(same["top1"], 1.0)
        self.assertLess(abs(same["delta_nll"]), 1e-6)
        j = ppl("qwen3_hd64", "--kl-base", self.base, *full["flags"])
        self.assertAlmostEqual(j["delta_nll"], full["mean_nll"] - pol["mean_nll"], delta=2 * TOL_MEAN)
        self.assertGreater(j["kl"], 1e-3)
        b = ppl("qwen3_hd64", "--kl-base", self.base, *pol["flags"], "--kv-dtype", "bf16")
        self.assertGreater(b["kl"], 0)
        self.assertLess(b["kl"], 0.05)
        self.assertAlmostEqual(b["delta_nll"], b["nll"] - w["nll"], delta=1e-5)

    def test_kl_matches_transformers(self):
        """KL(full || streaming) and top-1 agreement equal transformers' float64
        values: over the top K plus a remainder bucket for K = 8 and 32, and
        the exact KL with K = the whole vocabulary (512)."""
        d = REF["fixtures"]["qwen3_hd64"]
        pol = case("qwen3_hd64", "streaming_b16")
        for want in d["kl_streaming_b16"] + [dict(d["kl_streaming_b16"][0], k=512)]:
            with self.subTest(k=want["k"]):
                self.write_base("qwen3_hd64", "--kl-top-k", str(want["k"]), *case("qwen3_hd64", "full")["flags"])
                j = ppl("qwen3_hd64", "--kl-base", self.base, *pol["flags"])
                kl = want["exact_mean"] if want["k"] == 512 else want["topk_mean"]
                self.assertAlmostEqual(j["kl"], kl, delta=1e-3)  # measured 9e-5 at KL 9.8
                self.assertAlmostEqual(j["top1"], want["top1"], delta=1.01 / j["tokens_scored"])
        # the bucket makes K = 8 and 32 lower bounds of the exact KL
        self.assertLess(d["kl_streaming_b16"][0]["topk_mean"], d["kl_streaming_b16"][1]["topk_mean"])
        self.assertLess(d["kl_streaming_b16"][1]["topk_mean"], d["kl_streaming_b16"][0]["exact_mean"])

    def test_mismatched_base_is_refused(self):
        self.write_base("qwen3_hd64", "--ctx", "64")
        other_text = os.path.join(self.tmp.name, "other.txt")
        with open(other_text, "w") as f:
            f.write("Another text, not the one the base was made for.\n")
        for args, phrase in (
                (["--model", os.path.join(MODELS, "llama_hd64_gqa4"), "--file", TEXT, "--ctx", "64"],
                 "another model"),
                (["--model", os.path.join(MODELS, "qwen3_hd64"), "--file", other_text, "--ctx", "64"],
                 "another text"),
                (["--model", os.path.join(MODELS, "qwen3_hd64"), "--file", TEXT, "--ctx", "32"], "--ctx 64"),
                (["--model", os.path.join(MODELS, "qwen3_hd64"), "--file", TEXT, "--ctx", "64", "--stride", "32"],
                 "--stride 64")):
            with self.subTest(phrase=phrase):
                p = run(args + ["--kl-base", self.base], check=False)
                self.assertNotEqual(p.returncode, 0)
                self.assertIn(phrase, p.stderr)
                self.assertIn(self.base, p.stderr)
                self.assertEqual(p.stdout, "")

    def test_limit_chunks_with_a_base(self):
        """A base of the first windows serves a run of fewer windows, and
        refuses one of more, naming --limit-chunks."""
        self.write_base("qwen3_hd64", "--ctx", "32", "--limit-chunks", "2")
        j = ppl("qwen3_hd64", "--ctx", "32", "--limit-chunks", "1", "--kl-base", self.base)
        self.assertEqual(j["tokens_scored"], 31)
        self.assertLess(j["kl"], 1e-6)
        p = run(["--model", os.path.join(MODELS, "qwen3_hd64"), "--file", TEXT, "--ctx", "32", "--kl-base", self.base],
                check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--limit-chunks", p.stderr)
        self.assertIn(self.base, p.stderr)

    def test_damaged_base_is_refused(self):
        self.write_base()
        with open(self.base, "rb") as f:
            data = f.read()
        cases = {"short": data[:100], "truncated": data[:-5], "magic": b"X" + data[1:],
                 "bad id": data[:312 + 12] + b"\xff\xff\xff\x7f" + data[312 + 16:]}
        for name, blob in cases.items():
            with self.subTest(case=name):
                bad = os.path.join(self.tmp.name, "bad.klb")
                with open(bad, "wb") as f:
                    f.write(blob)
                p = run(["--model", os.path.join(MODELS, "qwen3_hd64"), "--file", TEXT, "--kl-base", bad],
                        check=False)
                self.assertNotEqual(p.returncode, 0)
                self.assertIn(bad, p.stderr)
                self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)


def fidelity_runs(model, *extra):
    """The JSON lines of one --fidelity call, keyed (policy, budget); the
    full cache's own line (no "kl") under ("base", 0)."""
    p = run(["--model", model, "--fidelity", "--json", "--threads", "2", *extra])
    out = {}
    for line in p.stdout.splitlines():
        j = json.loads(line)
        out[("base", 0) if "kl" not in j else (j["policy"], j["budget"])] = j
    return out


class Fidelity(unittest.TestCase):
    def gen_runs(self):
        return fidelity_runs(os.path.join(MODELS, FID["fixture"]), "--prompt-file", os.path.join(DATA, FID["prompt"]),
                             "--gen", str(FID["gen"]), "--policy", "full,streaming", "--budget", "16", "--sinks", "4",
                             "--kl-top-k", "32", "--per-token", "--batch", "2")

    def test_gen_matches_transformers(self):
        """--gen: the continuation is transformers' greedy one; its NLL after
        the prompt under full and StreamingLLM, the KL between them, the top-1
        agreement and the delta NLL equal the float64 references."""
        r = self.gen_runs()
        base, pol = r[("base", 0)], r[("streaming", 16)]
        self.assertEqual(base["generated_ids"], FID["generated"])
        self.assertEqual(base["prompt_tokens"], len(FID["prompt_ids"]))
        self.assertEqual(base["gen_match"], 1.0)  # the teacher-forced argmax is the generated token
        for got, want in ((base, FID["full_nll"]), (pol, FID["streaming_b16_nll"])):
            self.assertEqual(len(got["nll_per_token"]), len(want))
            for i, (x, y) in enumerate(zip(got["nll_per_token"], want)):
                self.assertAlmostEqual(x, y, delta=TOL_TOKEN, msg=f"{got['policy']} token {i}")
        kl = FID["kl_streaming_b16"]
        self.assertGreater(pol["kl"], 1.0)
        self.assertAlmostEqual(pol["kl"], kl["topk_mean"], delta=1e-3)
        self.assertAlmostEqual(pol["top1"], kl["top1"], delta=1.01 / pol["tokens_scored"])
        self.assertAlmostEqual(pol["delta_nll"], FID["delta_nll_mean"], delta=2 * TOL_MEAN)

    def test_full_cache_fidelity_is_exact(self):
        """The full cache run again (batched with a policy) against its own
        logits: KL 0, agreement 1, delta NLL 0."""
        full = self.gen_runs()[("full", 0)]
        self.assertLess(full["kl"], 1e-6)
        self.assertEqual(full["top1"], 1.0)
        self.assertLess(abs(full["delta_nll"]), 1e-5)

    def test_same_as_separate_runs(self):
        """Several policies decoded in one batch give what one --kl-base run
        per policy gives (the single-policy path the reference tests cover)."""
        m = os.path.join(MODELS, "qwen3_hd64")
        r = fidelity_runs(m, "--file", TEXT, "--ctx", "48", "--policy", "streaming,tova,h2o", "--budget", "12,24",
                          "--batch", "8")
        self.assertEqual(len(r), 1 + 3 * 2)
        with tempfile.TemporaryDirectory() as tmp:
            kb = os.path.join(tmp, "b.klb")
            ppl("qwen3_hd64", "--ctx", "48", "--kl-base", kb, "--kl-write")
            for pol, b in (("streaming", 12), ("tova", 24), ("h2o", 12)):
                with self.subTest(policy=pol, budget=b):
                    one = ppl("qwen3_hd64", "--ctx", "48", "--kl-base", kb, "--policy", pol, "--budget", str(b))
                    got = r[(pol, b)]
                    self.assertGreater(got["kl"], 1e-3)
                    for key in ("kl", "delta_nll", "nll"):
                        self.assertAlmostEqual(got[key], one[key], delta=1e-4, msg=key)
                    self.assertAlmostEqual(got["top1"], one["top1"], delta=1.01 / one["tokens_scored"])


class Errors(unittest.TestCase):
    def test_bad_input(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)

        def f(name, data):
            path = os.path.join(tmp.name, name)
            with open(path, "wb") as fh:
                fh.write(data)
            return path

        empty, nul, utf = f("empty.txt", b""), f("nul.txt", b"ab\x00cd"), f("bad.txt", b"ab\xff\xfecd")
        one = f("one.txt", b"a")
        m = ["--model", os.path.join(MODELS, "qwen3_hd64")]
        cases = [
            (m + ["--file", empty], "empty"),
            (m + ["--file", nul], "NUL byte"),
            (m + ["--file", utf], "invalid UTF-8"),
            (m + ["--file", one], "at least 2"),
            (m + ["--file", TEXT, "--prompt-file", empty], "empty"),
            (m + ["--file", TEXT, "--prompt-file", nul], "NUL byte"),
            (m + ["--file", os.path.join(tmp.name, "missing.txt")], "missing.txt"),
            (m, "--file"),
            (m + ["--file", TEXT, "--ctx", "1"], "--ctx"),
            (m + ["--file", TEXT, "--ctx", "5000"], "--ctx 5000"),
            (m + ["--file", TEXT, "--stride", "0"], "--stride"),
            (m + ["--file", TEXT, "--ctx", "32", "--stride", "33"], "--stride 33"),
            (m + ["--file", TEXT, "--policy", "streaming"], "--budget"),
            (m + ["--file", TEXT, "--policy", "streaming", "--budget", "4"], "--budget 4"),
            (m + ["--file", TEXT, "--policy", "longflow", "--budget", "1"], "--budget 1"),
            (m + ["--file", TEXT, "--policy", "rkv", "--budget", "8"], "--budget 8"),
            (m + ["--file", TEXT, "--budget", "8"], "--budget"),
            (m + ["--file", TEXT, "--kl-write"], "--kl-base"),
            (m + ["--file", TEXT, "--kl-base", os.path.join(tmp.name, "none.klb")], "none.klb"),
            (m + ["--file", TEXT, "--per-token"], "--per-token"),
            (m + ["--file", TEXT, "--bogus"], "--bogus"),
            (["--model", os.path.join(tmp.name, "nomodel"), "--file", TEXT], "nomodel"),
            (m + ["--file", TEXT, "--policy", "tova,h2o", "--budget", "8"], "--fidelity"),
            (m + ["--file", TEXT, "--policy", "tova", "--budget", "8,16"], "--fidelity"),
            (m + ["--file", TEXT, "--fidelity", "--policy", "tova,nosuch", "--budget", "8"], "'nosuch'"),
            (m + ["--file", TEXT, "--fidelity", "--policy", "tova", "--budget", "8,x"], "--budget"),
            (m + ["--file", TEXT, "--fidelity", "--policy", "tova", "--budget", "8", "--kl-base", "x"], "--kl-base"),
            (m + ["--file", TEXT, "--policy", "longflow", "--budget", "8", "--protect-prompt", "0.5"], "--sinks"),
            (m + ["--gen", "8"], "--prompt-file"),
            (m + ["--file", TEXT, "--prompt-file", TEXT, "--gen", "8"], "--gen"),
            (m + ["--file", TEXT, "--chat"], "--chat"),
            (m + ["--prompt-file", TEXT, "--gen", "0"], "--gen"),
            # --device cuda: refused before the model loads, with or without a GPU
            (m + ["--file", TEXT, "--device", "cuda"], "bf16"),  # run() asks for an fp32 cache
            (m + ["--file", TEXT, "--device", "cuda", "--kv-dtype", "bf16", "--policy", "rkv", "--budget", "16"],
             "CPU only"),
            (m + ["--file", TEXT, "--device", "cuda", "--kv-dtype", "bf16", "--fidelity", "--policy", "tova,rkv",
                  "--budget", "16"], "CPU only"),
            (m + ["--file", TEXT, "--device", "cuda", "--kv-dtype", "bf16", "--policy", "longflow", "--budget", "16",
                  "--evict-every", "2"], "--evict-every 2"),
            (m + ["--file", TEXT, "--device", "cuda", "--kv-dtype", "bf16", "--weights", "quant"], "--weights quant"),
            (m + ["--file", TEXT, "--device", "tpu"], "tpu"),
            (m + ["--file", TEXT, "--batch", "max"], "--device cuda"),
            (m + ["--file", TEXT, "--batch", "0"], "--batch"),
            (m + ["--file", TEXT, "--gpu-mem-fraction", "0.5"], "--device cuda"),
        ]
        for args, phrase in cases:
            with self.subTest(args=args[2:]):
                p = run(args, check=False)
                self.assertNotEqual(p.returncode, 0)
                self.assertIn(phrase, p.stderr)
                lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
                self.assertEqual(len(lines), 1, p.stderr)
                self.assertTrue(lines[0].startswith("longflow perplexity:"), lines[0])
                self.assertEqual(p.stdout, "")


class Bundled(unittest.TestCase):
    def test_tiny_reasoner_smoke(self):
        """The bundled model: text output, a policy run, the KL round trip."""
        if not os.path.isdir(TINY):
            self.skipTest("models/tiny-reasoner not present")
        prompt = os.path.join(TINY, "demo_prompt.txt")
        p = run(["--model", TINY, "--file", prompt, "--threads", "2"])
        self.assertIn("perplexity", p.stdout)
        self.assertIn("tokens scored", p.stderr)
        with tempfile.TemporaryDirectory() as tmp:
            base = os.path.join(tmp, "b.klb")
            full = ppl(TINY, "--kl-base", base, "--kl-write", text=prompt)
            lf = ppl(TINY, "--kl-base", base, "--policy", "longflow", "--budget", "48", text=prompt)
        self.assertEqual(full["tokens_scored"], lf["tokens_scored"])
        self.assertGreater(full["tokens_scored"], 100)
        self.assertGreater(lf["kl"], 0)
        self.assertAlmostEqual(lf["delta_nll"], lf["nll"] - full["nll"], delta=1e-6)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
