#!/usr/bin/env python3
"""Tokenizer speed, longflow against the Python `tokenizers` library, in one
run on the same text: load time of tokenizer.json and single-thread encoding
throughput (MB of UTF-8 per second).

usage: python3 bench/bench_tokenizer.py --bin BUILD/bench_tokenizer
           [--model DIR] [--corpus FILE ...] [--reps N] [--rounds N]

Defaults: the Qwen3 tokenizer (../shared/tokenizers/qwen3, else the committed
tests/data/tokenizers/qwen3/tokenizer.json.xz) and, as corpus, the questions
of ../shared/datasets/*.jsonl plus tests/data/tokenizers/corpus.jsonl.
The two sides run alternately (--rounds times); each side's best round counts.
"""
import argparse
import glob
import json
import lzma
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_texts(paths):
    texts = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                r = json.loads(line)
                t = r.get("text", r.get("question"))
                if isinstance(t, str):
                    texts.append(t)
    return texts


def bench_python(model_dir, texts, loads, reps):
    from tokenizers import Tokenizer
    path = os.path.join(model_dir, "tokenizer.json")
    lt = []
    tok = None
    for _ in range(loads):
        t0 = time.perf_counter()
        tok = Tokenizer.from_file(path)
        lt.append((time.perf_counter() - t0) * 1e3)
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for t in texts:
            tok.encode(t, add_special_tokens=False)
        times.append(time.perf_counter() - t0)
    return {"load_ms": statistics.median(lt), "encode_first_mb_s": nbytes / 1e6 / times[0],
            "encode_mb_s": nbytes / 1e6 / min(times)}


def bench_c(binary, model_dir, corpora, loads, reps):
    cmd = [binary, "--model", model_dir, "--loads", str(loads), "--reps", str(reps), "--json"]
    for c in corpora:
        cmd += ["--corpus", c]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the bench_tokenizer executable")
    ap.add_argument("--model", help="directory with tokenizer.json")
    ap.add_argument("--corpus", action="append", help="JSON lines with \"text\" or \"question\"")
    ap.add_argument("--loads", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    tmp = None
    model = args.model
    if not model:
        shared = os.path.join(ROOT, "..", "shared", "tokenizers", "qwen3")
        if os.path.exists(os.path.join(shared, "tokenizer.json")):
            model = shared
        else:
            tmp = tempfile.mkdtemp(prefix="lf_tokbench_")
            with lzma.open(os.path.join(ROOT, "tests/data/tokenizers/qwen3/tokenizer.json.xz"), "rb") as f, \
                    open(os.path.join(tmp, "tokenizer.json"), "wb") as g:
                shutil.copyfileobj(f, g)
            model = tmp
    corpora = args.corpus or (sorted(glob.glob(os.path.join(ROOT, "..", "shared", "datasets", "*.jsonl"))) +
                              [os.path.join(ROOT, "tests/data/tokenizers/corpus.jsonl")])
    texts = read_texts(corpora)
    nbytes = sum(len(t.encode("utf-8")) for t in texts)

    best = {"longflow": None, "tokenizers": None}
    for _ in range(args.rounds):
        for name in best:
            r = (bench_c(args.bin, model, corpora, args.loads, args.reps) if name == "longflow"
                 else bench_python(model, texts, args.loads, args.reps))
            b = best[name]
            if b is None:
                best[name] = r
            else:
                b["load_ms"] = min(b["load_ms"], r["load_ms"])
                b["encode_mb_s"] = max(b["encode_mb_s"], r["encode_mb_s"])
                b["encode_first_mb_s"] = max(b["encode_first_mb_s"], r["encode_first_mb_s"])
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)

    import tokenizers
    c, p = best["longflow"], best["tokenizers"]
    print(f"model: {model}")
    print(f"corpus: {len(texts)} texts, {nbytes / 1e6:.2f} MB ({len(corpora)} files); "
          f"tokenizers {tokenizers.__version__}, single thread")
    print()
    print("| | longflow (C) | tokenizers (Python) | ratio |")
    print("|---|---|---|---|")
    print(f"| load tokenizer.json (ms, median) | {c['load_ms']:.1f} | {p['load_ms']:.1f} | "
          f"{p['load_ms'] / c['load_ms']:.2f}x faster |")
    print(f"| encode, first pass (MB/s) | {c['encode_first_mb_s']:.2f} | {p['encode_first_mb_s']:.2f} | "
          f"{c['encode_first_mb_s'] / p['encode_first_mb_s']:.2f}x |")
    print(f"| encode, best of {args.reps} passes (MB/s) | {c['encode_mb_s']:.2f} | {p['encode_mb_s']:.2f} | "
          f"{c['encode_mb_s'] / p['encode_mb_s']:.2f}x |")
    print()
    print(json.dumps({"longflow": c, "tokenizers": p, "bytes": nbytes, "texts": len(texts)}))


if __name__ == "__main__":
    sys.exit(main())
