#!/usr/bin/env python3
"""Fidelity sweep of the KV policies on a real model with `longflow perplexity --fidelity`.

Sequences, in the order they run (interleaved so that a sweep stopped early
still covers every source):
  - answers: the model's own greedy answer (full cache, chat template, at
    most --gen tokens) to each question of --questions (a JSON line with
    "id" and "question"); the question goes through the cache unscored;
  - texts: long texts that Debian and Python ship: the licences in
    /usr/share/common-licenses (Debian's base-files) and the reference
    topics of Python's pydoc (pydoc_data.topics, CPython's own docs) and
    pydoc's rendering of a few builtins' docstrings; the first --ctx tokens of
    each are scored (--limit-chunks 1).
Per sequence one `longflow perplexity --fidelity` call: the full cache, then
every policy x budget below the scored length, all against the full cache.
Budgets at or above the scored length evict nothing (identical to the full
cache) and are not run. Each JSON line goes to --out as it comes, with
"sequence" and "source" added; --deadline stops before a sequence that would
start after it (UTC HH:MM).

  tools/fidelity_sweep.py run --model M.gguf --out bench/accuracy/fidelity/runs.jsonl --ctx 512 --gen 512 \\
      --policies longflow,streaming,tova,h2o,vatp,rkv,knorm --budgets 64,128,256,512,1024 --threads 2
  tools/fidelity_sweep.py table --runs bench/accuracy/fidelity/runs.jsonl --md OUT.md [--png OUT.png]
"""
import argparse
import datetime
import json
import math
import os
import subprocess
import sys

LICENCES = ["GPL-3", "GFDL-1.3", "MPL-2.0", "LGPL-2.1", "GPL-2", "MPL-1.1", "LGPL-2", "GFDL-1.2"]
TOPICS = ["specialnames", "compound", "types", "formatstrings", "string-methods", "typesseq", "debugger"]
BUILTINS = ["str", "dict", "list", "bytes", "int"]


def text_sources(work):
    """(name, source, path) of every long text, written under work."""
    from pydoc_data.topics import topics
    import pydoc
    out = []
    for name in LICENCES:
        out.append((name, f"/usr/share/common-licenses/{name}", f"/usr/share/common-licenses/{name}"))
    for i, name in enumerate(TOPICS + BUILTINS):
        if name in topics:
            text, src = topics[name], f"pydoc_data.topics['{name}'] (Python {sys.version.split()[0]})"
        else:
            text = pydoc.plain(pydoc.render_doc(getattr(__builtins__, name)))
            src = f"pydoc.render_doc({name}) (Python {sys.version.split()[0]})"
        path = os.path.join(work, f"pydoc-{name}.txt")
        with open(path, "w") as f:
            f.write(text)
        out.append((f"pydoc-{name}", src, path))
    lic, py = out[:len(LICENCES)], out[len(LICENCES):]
    mixed = []
    for i in range(max(len(lic), len(py))):
        mixed += lic[i:i + 1] + py[i:i + 1]
    return mixed


def past_deadline(deadline):
    if not deadline:
        return False
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M")
    return now >= deadline


def fidelity(args, extra, n_scored_max, policies=None, min_budget=0):
    budgets = [b for b in args.budgets.split(",") if min_budget < int(b) < n_scored_max] if n_scored_max else []
    cmd = [args.bin, "perplexity", "--model", args.model, "--fidelity", "--json", "--threads", str(args.threads),
           "--batch", "64", "--policy", policies or args.policies, *extra]
    if budgets:
        cmd += ["--budget", ",".join(budgets)]
    else:
        cmd += ["--policy", "full"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: {p.stderr.strip()[-500:]}")
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()], cmd


def protect_prompt(args, name, extra, n_max):
    """LongFlow that keeps the question: --sinks = the prompt's tokens (never
    evicted), at the budgets above them; reported as policy longflow+prompt.
    The prompt's length comes from the sequence's earlier rows in --out."""
    n_prompt = None
    if os.path.exists(args.out):
        with open(args.out) as f:
            for line in f:
                r = json.loads(line)
                if r["sequence"] == name and "prompt_tokens" in r:
                    n_prompt = r["prompt_tokens"]
    if n_prompt is None:
        n_prompt = fidelity(args, extra, 0, "full")[0][0]["prompt_tokens"]
    rows, _ = fidelity(args, extra + ["--sinks", str(n_prompt)], n_max, "longflow", min_budget=n_prompt + 1)
    for r in rows[1:]:
        r["policy"] = "longflow+prompt"
    return rows[1:]


def run(args):
    os.makedirs(args.work, exist_ok=True)
    seqs = []
    with open(args.questions) as f:
        for line in f:
            q = json.loads(line)
            path = os.path.join(args.work, q["id"] + ".question.txt")
            with open(path, "w") as g:
                g.write(q["question"])
            seqs.append(("answer", q["id"], q["source"] + f" #{q['index']}",
                         ["--prompt-file", path, "--chat", "--gen", str(args.gen), "--ctx", str(args.ctx_answer)],
                         args.gen))
    for name, src, path in text_sources(args.work):
        seqs.append(("text", name, src, ["--file", path, "--ctx", str(args.ctx), "--limit-chunks", "1"], args.ctx - 1))
    # answers first, then texts, alternating so that an early stop keeps both
    answers, texts = [s for s in seqs if s[0] == "answer"], [s for s in seqs if s[0] == "text"]
    order = []
    for i in range(max(len(answers), len(texts))):
        order += answers[i:i + 1] + texts[i:i + 1]
    with open(args.out, "a") as out:
        for kind, name, src, extra, n_max in order:
            if past_deadline(args.deadline):
                print(f"deadline {args.deadline} UTC reached: {name} and later not run", file=sys.stderr)
                break
            t0 = datetime.datetime.now()
            if args.protect_prompt_only:
                if kind != "answer":
                    continue
                rows = protect_prompt(args, name, extra, n_max)
            else:
                rows, cmd = fidelity(args, extra, n_max)
            for r in rows:
                r.update({"sequence": name, "kind": kind, "source": src})
                r["model"] = os.path.basename(r["model"])
                out.write(json.dumps(r) + "\n")
            out.flush()
            print(f"{name}: {rows[0]['tokens']} tokens, {rows[0]['tokens_scored']} scored, "
                  f"{len(rows) - 1} runs, {(datetime.datetime.now() - t0).total_seconds():.0f} s", file=sys.stderr)


def pooled(rows, key, se_key):
    n = sum(r["tokens_scored"] for r in rows)
    mean = sum(r["tokens_scored"] * r[key] for r in rows) / n
    se = math.sqrt(sum((r["tokens_scored"] * r[se_key]) ** 2 for r in rows)) / n
    return mean, se


TITLES = {"text": "Long texts", "answer": "The model's own answers"}


def evicts(r):
    """Whether a run's budget is below what its window holds (else it equals the full cache)."""
    return r["policy"] == "full" or r["budget"] < min(r["tokens"], r["ctx"])


def table(args):
    rows = [json.loads(line) for line in open(args.runs) if line.strip()]
    rows = [r for r in rows if "kl" not in r or evicts(r)]
    policies = []
    for r in rows:
        if r["policy"] != "full" and r["policy"] not in policies:
            policies.append(r["policy"])
    budgets = sorted({r["budget"] for r in rows if r["policy"] != "full" and "kl" in r})
    out = []
    plot = {}
    for kind in ("text", "answer"):
        full = [r for r in rows if r["kind"] == kind and "kl" not in r]
        if not full:
            continue
        seqs = [r["sequence"] for r in full]
        scored = sum(r["tokens_scored"] for r in full)
        nll, nll_se = pooled(full, "nll", "se")
        out.append(f"\n### {TITLES[kind]}: {len(seqs)} "
                   f"sequences, {scored} scored tokens; full cache NLL {nll:.3f} ± {nll_se:.3f}\n")
        out.append("Δ NLL (nats/token) / KL(full ‖ policy) / top-1 agreement, token-weighted over the sequences; "
                   "in brackets the sequences a budget evicts in (a budget at or above a sequence's length "
                   "evicts nothing there and is not counted).\n")
        out.append("| policy | " + " | ".join(f"budget {b}" for b in budgets) + " |")
        out.append("|---|" + "---:|" * len(budgets))
        for pol in policies:
            if not any(r["kind"] == kind and r["policy"] == pol for r in rows):
                continue
            cells = []
            for b in budgets:
                sel = [r for r in rows if r["kind"] == kind and r["policy"] == pol and r["budget"] == b and "kl" in r]
                if not sel:
                    cells.append("no eviction")
                    continue
                d, d_se = pooled(sel, "delta_nll", "delta_nll_se")
                k, _ = pooled(sel, "kl", "kl_se")
                t, _ = pooled(sel, "top1", "top1_se")
                plot.setdefault((kind, pol), []).append((b, d, k))
                cells.append(f"{d:+.3f} ± {d_se:.3f} / {k:.3f} / {t:.3f} [{len(sel)}]")
            out.append(f"| {pol} | " + " | ".join(cells) + " |")
    with open(args.md, "w") as f:
        f.write("\n".join(out) + "\n")
    if args.png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        kinds = [k for k in ("text", "answer") if any(key[0] == k for key in plot)]
        fig, ax = plt.subplots(2, len(kinds), figsize=(6 * len(kinds), 8), squeeze=False)
        for c, kind in enumerate(kinds):
            for pol in policies:
                pts = plot.get((kind, pol), [])
                if not pts:
                    continue
                xs = [p[0] for p in pts]
                ax[0][c].plot(xs, [p[1] for p in pts], marker="o", label=pol)
                ax[1][c].plot(xs, [p[2] for p in pts], marker="o", label=pol)
            title = "long texts" if kind == "text" else "own answers"
            ax[0][c].set_title(f"Δ NLL vs full cache, {title}")
            ax[1][c].set_title(f"KL(full ‖ policy), {title}")
            for r in (0, 1):
                ax[r][c].set_xscale("log", base=2)
                ax[r][c].set_yscale("symlog", linthresh=1e-3)
                ax[r][c].set_xlabel("budget (KV slots per layer)")
                ax[r][c].legend(fontsize=8)
            ax[0][c].set_ylabel("nats/token")
            ax[1][c].set_ylabel("nats")
            ax[1][c].set_ylim(bottom=0)
        fig.tight_layout()
        fig.savefig(args.png, dpi=90)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--model", required=True)
    r.add_argument("--bin", default="build/longflow")
    r.add_argument("--out", required=True)
    r.add_argument("--work", default="/tmp/fidelity_sweep")
    r.add_argument("--questions", default="bench/accuracy/fidelity/questions.jsonl")
    r.add_argument("--policies", default="longflow,streaming,tova,h2o,vatp,rkv,knorm")
    r.add_argument("--budgets", default="64,128,256,512,1024")
    r.add_argument("--ctx", type=int, default=512, help="tokens of each long text scored (its first window)")
    r.add_argument("--gen", type=int, default=512, help="most tokens of each answer")
    r.add_argument("--ctx-answer", type=int, default=2048)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--deadline", help="UTC HH:MM: start no sequence after it")
    r.add_argument("--protect-prompt-only", action="store_true",
                   help="answers only: LongFlow with --sinks = the prompt's tokens (the question kept)")
    t = sub.add_parser("table")
    t.add_argument("--runs", required=True)
    t.add_argument("--md", required=True)
    t.add_argument("--png")
    a = ap.parse_args()
    run(a) if a.cmd == "run" else table(a)


if __name__ == "__main__":
    main()
