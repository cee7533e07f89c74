#!/usr/bin/env python3
"""Fidelity of the KV policies on a model's own outputs, with `longflow perplexity`.

1. For the first --per-family questions of each data/*.jsonl of the model,
   generate the full-cache greedy output once (`longflow generate`) and keep
   question and output as two files (skipped when they exist).
2. Score every output after its question (--prompt-file: the question goes
   through the cache first, unscored) with --policy full, writing a KL base,
   then under every policy and budget against that base.
3. Pool the positions of all texts (token-weighted means; the standard error
   of the pooled mean from the per-text ones, texts independent) and write a
   Markdown table and the raw JSON lines.

Usage:
  tools/perplexity_sweep.py --model models/tiny-reasoner --work /tmp/pplsweep \\
      --policies longflow,tova,h2o,streaming --budgets 64,128,256 \\
      [--per-family 2] [--threads 1] [--bin build/longflow] [--out bench/accuracy/perplexity.json]
"""
import argparse
import glob
import json
import math
import os
import subprocess


def generate(args, work):
    pairs = []
    for path in sorted(glob.glob(os.path.join(args.model, "data", "*.jsonl"))):
        fam = os.path.splitext(os.path.basename(path))[0]
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()][:args.per_family]
        for i, row in enumerate(rows):
            q = os.path.join(work, f"{fam}{i}.question.txt")
            o = os.path.join(work, f"{fam}{i}.output.txt")
            if not os.path.exists(o):
                with open(q, "w") as f:
                    f.write(row["question"])
                p = subprocess.run([args.bin, "generate", "--model", args.model, "--prompt-file", q, "--json",
                                    "--threads", str(args.threads)], capture_output=True, text=True, check=True)
                with open(o, "w") as f:
                    f.write(json.loads(p.stdout)["text"])
            pairs.append((f"{fam}{i}", q, o))
    return pairs


def score(args, q, o, base, *extra):
    cmd = [args.bin, "perplexity", "--model", args.model, "--prompt-file", q, "--file", o, "--json",
           "--threads", str(args.threads), "--kl-base", base, *extra]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: {p.stderr.strip()}")
    return json.loads(p.stdout)


def pool(runs, key):
    n = sum(r["tokens_scored"] for r in runs)
    mean = sum(r["tokens_scored"] * r[key] for r in runs) / n
    se = math.sqrt(sum((r["tokens_scored"] * r[key + "_se" if key != "nll" else "se"]) ** 2 for r in runs)) / n
    return mean, se


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--policies", default="longflow,tova,h2o,streaming")
    ap.add_argument("--budgets", default="64,128,256")
    ap.add_argument("--per-family", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bin", default="build/longflow")
    ap.add_argument("--out", default=None, help="JSON lines of every run")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    pairs = generate(args, args.work)
    runs = []
    for name, q, o in pairs:
        base = os.path.join(args.work, name + ".klb")
        r = score(args, q, o, base, "--kl-write")
        r.update(text=name, kl=0.0, kl_se=0.0, top1=1.0, top1_se=0.0, delta_nll=0.0, delta_nll_se=0.0)
        runs.append(r)
        for pol in args.policies.split(","):
            for b in args.budgets.split(","):
                r = score(args, q, o, base, "--policy", pol, "--budget", b)
                r["text"] = name
                runs.append(r)
    if args.out:
        with open(args.out, "w") as f:
            for r in runs:
                f.write(json.dumps(r) + "\n")
    tokens = sum(r["tokens_scored"] for r in runs if r["policy"] == "full")
    print(f"{len(pairs)} texts ({', '.join(p[0] for p in pairs)}), {tokens} scored tokens of the model's own "
          f"full-cache outputs, each after its question (--prompt-file)\n")
    print("| policy | budget | NLL (nats/token) | delta NLL vs full | KL(full \\|\\| policy) | top-1 agreement |")
    print("|---|---:|---:|---:|---:|---:|")
    keys = []
    for r in runs:
        k = (r["policy"], r["budget"])
        if k not in keys:
            keys.append(k)
    for pol, b in keys:
        sel = [r for r in runs if r["policy"] == pol and r["budget"] == b]
        cells = [f"{m:.4f} ± {s:.4f}" for m, s in (pool(sel, k) for k in ("nll", "delta_nll", "kl", "top1"))]
        print(f"| {pol} | {b if b else '-'} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
