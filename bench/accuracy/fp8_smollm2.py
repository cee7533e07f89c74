#!/usr/bin/env python3
"""What the KV cache's storage costs on the real model, on the CPU
(bench/accuracy/fp8-smollm2.md says what it measures).

For every (policy, budget) three `longflow perplexity` runs over the same
texts: the bf16 cache writes its top logits (--kl-write), then the fp8 cache
and the fp32 cache each read them (--kl-base), so that both report KL(bf16 ||
run), top-1 agreement with bf16 and the NLL difference against bf16, paired
per position. One JSON line per run goes to --out (resumable: (policy,
budget, dtype) already there are skipped).

  bench/accuracy/fp8_smollm2.py run --bin build/longflow --model M.gguf --out R.jsonl [--texts 0,2,5,8]
  bench/accuracy/fp8_smollm2.py table --runs R.jsonl [--md T.md]

No torch: the texts are bench/accuracy/texts/ joined as tools/fidelity_sweep.py
joins them (each a 4,096-token window).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import fidelity_sweep  # noqa: E402  (write_corpus: the corpus of the GPU sweep)

DTYPES = ("bf16", "fp8", "fp32")  # bf16 first: it is the others' base


def configs(policies, budgets):
    out = [("full", 0)] if "full" in policies else []
    return out + [(p, b) for p in policies if p != "full" for b in budgets]


def corpus_of(texts_dir, picks, path):
    with open(os.path.join(texts_dir, "index.json")) as f:
        meta = json.load(f)
    index = [meta["texts"][i] for i in picks]
    fidelity_sweep.write_corpus(texts_dir, path, index)
    return index, meta["ctx"]


def one_run(args, corpus, ctx, n, policy, budget, dtype, base):
    cmd = [args.bin, "perplexity", "--model", args.model, "--file", corpus, "--ctx", str(ctx),
           "--batch", str(n), "--threads", str(args.threads), "--kv-dtype", dtype, "--json",
           "--kl-base", base, "--policy", policy]
    cmd += ["--budget", str(budget)] if budget else []
    cmd += ["--kl-write"] if dtype == "bf16" else []
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if p.returncode:
        raise SystemExit(f"run failed ({p.returncode}): {' '.join(cmd)}")
    return json.loads(p.stdout)


def run(args):
    picks = [int(i) for i in args.texts.split(",")]
    dtypes = args.dtypes.split(",")
    if dtypes[0] != "bf16" or not set(dtypes) <= set(DTYPES):
        raise SystemExit("--dtypes: bf16 first (the base), then fp8 and/or fp32")
    done = set()
    if os.path.exists(args.out):
        with open(args.out) as f:
            done = {(r["policy"], r["budget"], r["kv_dtype"]) for r in map(json.loads, f)}
    with tempfile.TemporaryDirectory() as work:
        corpus = os.path.join(work, "corpus.txt")
        index, ctx = corpus_of(args.texts_dir, picks, corpus)
        names = [t["name"] for t in index]
        for policy, budget in configs(args.policies.split(","), [int(b) for b in args.budgets.split(",")]):
            if all((policy, budget, d) in done for d in dtypes):
                continue
            base = os.path.join(work, f"{policy}-{budget}.klb")
            for dtype in dtypes:
                j = one_run(args, corpus, ctx, len(picks), policy, budget, dtype, base)
                if j["tokens"] != ctx * len(picks):
                    raise SystemExit(f"the corpus has {j['tokens']} tokens, not {ctx} x {len(picks)}")
                j.update(kv_dtype=dtype, base_kv_dtype="bf16", texts=names,
                         threads=args.threads)
                j.pop("file", None)
                j.pop("kl_base", None)
                j.pop("kl_base_written", None)
                if (policy, budget, dtype) not in done:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(j) + "\n")
                print(f"{policy} {budget} {dtype}: nll {j['nll']:.4f} "
                      + (f"kl {j['kl']:.3g} top1 {j['top1']:.4f} dnll {j['delta_nll']:+.5f} "
                         f"+- {j['delta_nll_se']:.5f} " if "kl" in j else "")
                      + f"{j['seconds']:.0f} s", file=sys.stderr, flush=True)


def table(args):
    with open(args.runs) as f:
        rows = [json.loads(line) for line in f]
    by = {(r["policy"], r["budget"], r["kv_dtype"]): r for r in rows}
    keys = list(dict.fromkeys((r["policy"], r["budget"]) for r in rows))
    full = by.get(("full", 0, "bf16"))
    lines = ["| policy | budget | NLL bf16 | eviction: NLL − full's (bf16) | ΔNLL fp8 − bf16 (± se) "
             "| KL(bf16 ‖ fp8) (± se) | top-1 fp8 = bf16 | ΔNLL bf16 − fp32 (± se) | KL(bf16 ‖ fp32) (± se) "
             "| top-1 fp32 = bf16 | tokens |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for pol, b in keys:
        base, f8, f32 = (by.get((pol, b, d)) for d in DTYPES)
        if not base:
            continue

        def cells(r, sign):
            if not r:
                return ["–"] * 3
            return [f"{sign * r['delta_nll']:+.4f} ± {r['delta_nll_se']:.4f}",
                    f"{r['kl']:.4f} ± {r['kl_se']:.5f}", f"{r['top1']:.3f} ± {r['top1_se']:.3f}"]
        evict = f"{base['nll'] - full['nll']:+.4f}" if full and pol != "full" else "–"
        lines.append("| " + " | ".join([pol, str(b) if b else "–", f"{base['nll']:.4f}", evict, *cells(f8, 1),
                                        *cells(f32, -1), str(base["tokens_scored"])]) + " |")
    text = "\n".join(lines) + "\n"
    if args.md:
        with open(args.md, "w") as f:
            f.write(text)
    print(text, end="")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--bin", default=os.path.join(ROOT, "build", "longflow"))
    r.add_argument("--model", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--texts-dir", default=os.path.join(HERE, "texts"))
    r.add_argument("--texts", default="0,2,5,8", help="indices into texts/index.json (one window each)")
    r.add_argument("--policies", default="full,longflow,tova,streaming")
    r.add_argument("--budgets", default="128,256,512")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--dtypes", default=",".join(DTYPES), help="bf16 first (it writes the others' base)")
    t = sub.add_parser("table")
    t.add_argument("--runs", required=True)
    t.add_argument("--md")
    args = ap.parse_args()
    run(args) if args.cmd == "run" else table(args)


if __name__ == "__main__":
    main()
