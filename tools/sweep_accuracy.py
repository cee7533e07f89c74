#!/usr/bin/env python3
"""Accuracy of every KV policy at several budgets, with the C engine.

For each task family (a JSONL file in the {"index","question","true_answer"}
format) it runs `longflow eval --policy full`, then every budgeted policy at
budgets given as a percentage of each problem's full-cache output length
(--budget P% --reference <full results>). It writes a Markdown table and a PNG
plot (accuracy vs budget, one line per policy, one panel per family).

    python3 tools/sweep_accuracy.py --model models/tiny-reasoner \
        --data models/tiny-reasoner/data/*.jsonl --limit 200 --out bench/accuracy

The policies are the binary's (`longflow policies --json`): every budgeted
one, in the registry's order; --device cuda leaves out those that run on the
CPU only (R-KV). Without matplotlib the plot is skipped; draw it later
from the sweep's accuracy.json with --plot DIR.

A --policies entry NAME=POLICY FLAGS... is a variant: `longflow eval --policy
POLICY FLAGS...` reported as NAME, e.g. "longflow+prompt=longflow --protect-prompt 0.5".

--jobs N runs N evals at once (after the full-cache runs, which the others
need as --reference), in the order policies x budgets are given, budgets
outermost; --deadline-s S starts no run after S seconds and stops the runs
still going then (their cells are left empty: "n/a" in the table).
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

BUDGETS = ["10%", "20%", "40%"]


def binary_policies(binary, device):
    """The budgeted policies the binary knows (on `device`), in registry order."""
    res = subprocess.run([binary, "policies", "--json"], capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{binary} policies --json failed ({res.returncode}): {res.stderr.strip()}")
    return [p["name"] for p in json.loads(res.stdout)
            if p["budgeted"] and (device != "cuda" or p["gpu"])]


def run_eval(args, data, policy, budget, ref, out_path):
    """The eval's summary (its --json line), or None when it failed or ran out of time (--deadline-s)."""
    flags = []
    if "=" in policy:  # a variant: NAME=POLICY FLAGS...
        policy, *flags = policy.split("=", 1)[1].split()
    cmd = [args.bin, "eval", "--model", args.model, "--data", data, "--policy", policy, *flags,
           "--batch", str(args.batch), "--max-tokens", str(args.max_tokens), "--output", out_path,
           "--instruction", args.instruction, "--json", "--device", args.device]
    if args.kv_dtype:
        cmd += ["--kv-dtype", args.kv_dtype]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if budget:
        cmd += ["--budget", budget, "--reference", ref]
    left = args.t_end - time.time() if args.deadline_s else None
    if left is not None and left <= 0:
        print(f"sweep: no time left for {data} {policy} {budget}", file=sys.stderr, flush=True)
        return None
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    try:
        res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True,
                             timeout=None if left is None else left + args.grace_s)
    except subprocess.TimeoutExpired:
        print(f"sweep: {data} {policy} {budget} stopped at the deadline", file=sys.stderr, flush=True)
        return None
    if res.returncode != 0:
        print(f"sweep: longflow eval failed ({res.returncode}) for {data} {policy} {budget}", file=sys.stderr,
              flush=True)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def acc_cell(summary):
    return "n/a" if summary is None else f"{100 * summary['accuracy']:.1f}%"


def plot_panels(panels, path, ylabel):
    """One panel per (title, full-cache value or None, {line: [(budget %, value)]}),
    each line against the budget; saved as a PNG at path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    for ax, (title, full, lines) in zip(axes[0], panels):
        if full is not None:
            ax.axhline(full, color="black", ls="--", label="full")
        for name, pts in lines.items():
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.set_title(title)
        ax.set_xlabel("budget (% of full-cache output length)")
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 105)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot(table, policies, budgets, path):
    """One panel per family: accuracy against the budget, one line per policy."""
    xs = [float(b.rstrip("%")) for b in budgets]
    panels = []
    for fam, rows in table.items():
        lines = {pol: [(x, 100 * rows[(pol, b)]["accuracy"]) for x, b in zip(xs, budgets) if rows.get((pol, b))]
                 for pol in policies}
        panels.append((fam, 100 * rows[("full", "100%")]["accuracy"], lines))
    plot_panels(panels, path, "accuracy (%)")


def replot(out):
    """--plot DIR: the PNG from DIR/accuracy.json (a sweep run where matplotlib was missing)."""
    with open(os.path.join(out, "accuracy.json")) as f:
        raw = json.load(f)
    table = {fam: {tuple(k.split("@", 1)): v for k, v in rows.items()} for fam, rows in raw.items()}
    keys = [k for rows in table.values() for k in rows if k[0] != "full"]
    policies = list(dict.fromkeys(p for p, _ in keys))
    budgets = sorted(dict.fromkeys(b for _, b in keys), key=lambda b: float(b.rstrip("%")))
    plot(table, policies, budgets, os.path.join(out, "accuracy.png"))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--plot":
        replot(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="build/longflow")
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--kv-dtype", choices=["fp32", "bf16", "fp8"], default=None,
                    help="how the cache stores K and V in every run, full cache included (default: eval's)")
    ap.add_argument("--batch", default="16", help="problems in flight (max: as many as fit, cuda)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--instruction", default="")
    ap.add_argument("--policies", nargs="+", default=None)
    ap.add_argument("--budgets", nargs="+", default=BUDGETS)
    ap.add_argument("--out", default="bench/accuracy")
    ap.add_argument("--jobs", type=int, default=1, help="evals run at once")
    ap.add_argument("--deadline-s", type=float, default=0, help="start no eval after this many seconds (0: none)")
    ap.add_argument("--grace-s", type=float, default=5, help="a running eval is stopped this long after the deadline")
    args = ap.parse_args()
    args.t_end = time.time() + args.deadline_s
    if args.policies is None:
        args.policies = binary_policies(args.bin, args.device)
    specs = {p.split("=", 1)[0]: p for p in args.policies}  # name -> policy or variant
    args.policies = list(specs)
    runs = os.path.join(args.out, "runs")
    os.makedirs(runs, exist_ok=True)

    fams = [(os.path.splitext(os.path.basename(d))[0], d) for d in args.data]
    refs = {fam: os.path.join(runs, f"{fam}.full.jsonl") for fam, _ in fams}
    table = {fam: {} for fam, _ in fams}  # family -> {(policy, budget): summary or None}
    with ThreadPoolExecutor(max(1, args.jobs)) as ex:
        full = {fam: ex.submit(run_eval, args, d, "full", None, None, refs[fam]) for fam, d in fams}
        for fam, _ in fams:
            table[fam][("full", "100%")] = full[fam].result()
        todo = {}
        for b in args.budgets:
            for pol in args.policies:
                for fam, d in fams:
                    if table[fam][("full", "100%")] is None:
                        continue
                    out_path = os.path.join(runs, f"{fam}.{pol}-{b.rstrip('%')}p.jsonl")
                    todo[(fam, pol, b)] = ex.submit(run_eval, args, d, specs[pol], b, refs[fam], out_path)
        for (fam, pol, b), fut in todo.items():
            table[fam][(pol, b)] = fut.result()
    table = {fam: rows for fam, rows in table.items() if rows[("full", "100%")] is not None}
    if not table:
        sys.exit("sweep: no full-cache run finished")
    shown = sorted(args.budgets, key=lambda b: float(b.rstrip("%")))
    lines = ["| family | policy | " + " | ".join(f"budget {b}" for b in shown) + " |",
             "|---|---|" + "---|" * len(shown)]
    for fam, rows in table.items():
        full = rows[("full", "100%")]
        lines.append(f"| {fam} | full (100%) | " + " | ".join([acc_cell(full)] * len(shown)) + " |")
        for pol in args.policies:
            lines.append(f"| {fam} | {pol} | " + " | ".join(acc_cell(rows.get((pol, b))) for b in shown) + " |")
    lens = {fam: rows[("full", "100%")]["avg_output_tokens"] for fam, rows in table.items()}
    md = ["# Accuracy by KV policy and budget", "",
          "Budgets are a percentage of each problem's full-cache output length. "
          "Greedy decoding. Command:", "",
          "    python3 " + shlex.join(sys.argv), "",
          "Average full-cache output length: " + ", ".join(f"{f} {n:.0f} tokens" for f, n in lens.items()), ""]
    md += lines
    with open(os.path.join(args.out, "accuracy.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.join(args.out, "accuracy.json"), "w") as f:
        json.dump({fam: {f"{p}@{b}": v for (p, b), v in rows.items() if v is not None} for fam, rows in table.items()},
                  f, indent=1)

    try:
        plot(table, args.policies, shown, os.path.join(args.out, "accuracy.png"))
    except ImportError:
        print(f"matplotlib is not installed: no plot; draw it with {sys.argv[0]} --plot {args.out}",
              file=sys.stderr)
    print("\n".join(md))


if __name__ == "__main__":
    main()
