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

The sweep at the issue's scale (`batched`, made for the GPU: bench/accuracy/run_smollm2_gpu.sh):
the committed texts of bench/accuracy/texts/ (made once by `texts`, see its
README.md) joined into one corpus whose 4,096-token windows are exactly the
texts (each text is a newline and its first 4,095 tokens), scored in one
`--fidelity` call per policy group with every window x budget of a policy in
one GPU pool; and the answers, one call per question (plus the LongFlow
variant that keeps the question, --sinks = the prompt), several at once; a
deadline kills what still runs, and every finished call's rows are in --out:

  tools/fidelity_sweep.py batched --bin B --model M.gguf --out RUNS.jsonl --device cuda --deadline-s 390
  tools/fidelity_sweep.py texts --bin build/longflow --model M.gguf     (rebuilds bench/accuracy/texts/)
"""
import argparse
import datetime
import json
import math
import os
import subprocess
import sys
import time

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

# ---- the committed texts (bench/accuracy/texts/) -----------------------------

TEXTS_DIR = "bench/accuracy/texts"
GNU_LICENCES = ["GPL-3", "GFDL-1.3", "LGPL-2.1", "LGPL-2", "GFDL-1.2"]
LONG_TOPICS = ["specialnames", "compound", "types", "formatstrings", "string-methods", "typesseq"]
GROUP_CHARS = 19000  # shorter pydoc topics are joined (in name order) until a group has this many characters


def tokenize(args, text):
    path = os.path.join(args.work, "tokenize.txt")
    with open(path, "w") as f:
        f.write(text)
    p = subprocess.run([args.bin, "tokenize", "--model", args.model, "--prompt-file", path],
                       capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


def detokenize(args, ids):
    p = subprocess.run([args.bin, "detokenize", "--model", args.model, "--json", "--ids", ",".join(map(str, ids))],
                       capture_output=True, text=True, check=True)
    return json.loads(p.stdout)["text"]


def window_of(args, text, ctx):
    """(offset, length): "\n" + text[offset:offset + length] is exactly ctx tokens, ends in a
    non-space character and is tokenized alone as it is inside a corpus of such pieces; the
    offset skips whole lines from the start until that holds. None when the text is shorter."""
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
    for off in starts[:40]:
        while off < len(text) and text[off] == "\n":
            off += 1
        ids = tokenize(args, "\n" + text[off:])
        if len(ids) < ctx:
            return None
        piece = detokenize(args, ids[:ctx])
        if piece[-1].isspace() or piece[1:] != text[off:off + len(piece) - 1] or tokenize(args, piece) != ids[:ctx]:
            continue
        return off, len(piece) - 1
    return None


def text_candidates():
    """(name, source, licence, text) of every long text the corpus may take."""
    from pydoc_data.topics import topics
    import pydoc
    py = "CPython %s" % sys.version.split()[0]
    psf = "PSF License 2 (Python's documentation; Copyright 2001 Python Software Foundation)"
    out = []
    for name in GNU_LICENCES:
        with open("/usr/share/common-licenses/" + name) as f:
            out.append((name, "Debian base-files /usr/share/common-licenses/" + name,
                        "verbatim copying permitted (the licence's own notice)", f.read()))
    for t in LONG_TOPICS:
        out.append(("pydoc-" + t, "%s pydoc_data.topics.topics['%s']" % (py, t), psf, topics[t]))
    out.append(("pydoc-str", "%s pydoc.plain(pydoc.render_doc(str))" % py, psf,
                pydoc.plain(pydoc.render_doc(str))))
    group, names = [], []
    for k in sorted(k for k in topics if k not in LONG_TOPICS):
        group.append(topics[k])
        names.append(k)
        if sum(len(g) for g in group) > GROUP_CHARS:
            out.append(("pydoc-" + (names[0] if len(names) == 1 else "%s..%s" % (names[0], names[-1])),
                        "%s pydoc_data.topics.topics[k] for k in %s, a blank line between" % (py, ", ".join(names)),
                        psf, "\n\n".join(group)))
            group, names = [], []
    return out


def build_texts(args):
    """Write --dir/index.json and one gzipped file per text (the GNU licences whole and
    verbatim, the Python texts as the corpus uses them)."""
    import gzip
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.dir, exist_ok=True)
    index = []
    for name, src, lic, text in text_candidates():
        w = window_of(args, text, args.ctx)
        if w is None:
            print(f"{name}: under {args.ctx} tokens (or no clean cut), left out", file=sys.stderr)
            continue
        off, n = w
        keep = text if name in GNU_LICENCES else text[off:off + n]
        fname = name + ".txt.gz"
        with gzip.open(os.path.join(args.dir, fname), "wt") as f:
            f.write(keep)
        index.append({"name": name, "file": fname, "source": src, "licence": lic,
                      "offset": off if name in GNU_LICENCES else 0, "chars": n, "tokens": args.ctx})
        print(f"{name}: {n} characters from offset {off}", file=sys.stderr)
    corpus = os.path.join(args.work, "corpus.txt")
    write_corpus(args.dir, corpus, index)
    with open(corpus) as f:
        ids = tokenize(args, f.read())
    if len(ids) != args.ctx * len(index):
        raise SystemExit(f"the corpus has {len(ids)} tokens, not {args.ctx} x {len(index)}: windows would not be texts")
    with open(os.path.join(args.dir, "index.json"), "w") as f:
        json.dump({"ctx": args.ctx, "model": os.path.basename(args.model), "texts": index}, f, indent=1)
        f.write("\n")
    print(f"{len(index)} texts, corpus {len(ids)} tokens = {len(index)} windows of {args.ctx}", file=sys.stderr)


def write_corpus(texts_dir, path, index=None):
    """The corpus file: for each text, a newline and its window's characters. Returns the index."""
    import gzip
    if index is None:
        with open(os.path.join(texts_dir, "index.json")) as f:
            index = json.load(f)["texts"]
    with open(path, "w") as out:
        for t in index:
            with gzip.open(os.path.join(texts_dir, t["file"]), "rt") as f:
                text = f.read()
            out.write("\n" + text[t["offset"]:t["offset"] + t["chars"]])
    return index


# ---- the batched sweep (one call per policy group over all texts; answers in parallel) ----

class Job:
    def __init__(self, kind, name, src, cmd, threads, rename=None, after=None):
        self.kind, self.name, self.src, self.cmd, self.threads = kind, name, src, cmd, threads
        self.rename, self.after = rename, after  # policy name for the rows; callback(rows) -> new jobs
        self.proc = self.t0 = None


def ppl_cmd(args, policies, budgets, extra, threads, windows=1):
    """--batch pool: the sequences of one policy's GPU pool (windows x budgets), so that every
    pool decodes all of its runs at once and plans no place it leaves empty (max would plan
    one for every run of the call)."""
    batch = str(windows * max(1, len(budgets))) if args.batch == "pool" else args.batch
    cmd = [args.bin, "perplexity", "--model", args.model, "--fidelity", "--json", "--device", args.device,
           "--batch", batch, "--threads", str(threads), "--policy", policies, *extra]
    return cmd + (["--budget", ",".join(str(b) for b in budgets)] if budgets else [])


def batched_jobs(args):
    """The text jobs (one per policy group) and the first job of every answer."""
    budgets = [int(b) for b in args.budgets.split(",")]
    corpus = os.path.join(args.work, "corpus.txt")
    index = write_corpus(args.texts, corpus)
    with open(os.path.join(args.texts, "index.json")) as f:
        windows = -(-len(index) * json.load(f)["ctx"] // args.ctx)
    windows = min(windows, args.limit_chunks or windows)
    src = "bench/accuracy/texts/: %d texts (%s)" % (len(index), ", ".join(t["name"] for t in index))
    text_extra = ["--file", corpus, "--ctx", str(args.ctx)] + (["--limit-chunks", str(args.limit_chunks)]
                                                                if args.limit_chunks else [])
    jobs = [Job("text", "texts", src, ppl_cmd(args, g, budgets, text_extra, args.text_threads, windows),
                args.text_threads)
            for g in args.text_groups.split(";")]
    with open(args.questions) as f:
        qs = [json.loads(line) for line in f if line.strip()]
    for q in qs[:args.questions_limit or None]:
        path = os.path.join(args.work, q["id"] + ".question.txt")
        with open(path, "w") as g:
            g.write(q["question"])
        extra = ["--prompt-file", path, "--chat", "--gen", str(args.gen), "--ctx", str(args.ctx_answer)]
        job = Job("answer", q["id"], q["source"] + f" #{q['index']}",
                  ppl_cmd(args, args.policies, budgets, extra, args.answer_threads), args.answer_threads)
        job.after = protect_job(args, job, extra, budgets)
        jobs.append(job)
    return jobs


def protect_job(args, first, extra, budgets):
    """After an answer's first call: LongFlow keeping the question (--sinks = its prompt tokens)."""
    def after(rows):
        n_prompt = rows[0]["prompt_tokens"]
        bs = [b for b in budgets if b > n_prompt + 1]
        if not bs:
            return []
        cmd = ppl_cmd(args, "longflow", bs, extra + ["--sinks", str(n_prompt)], args.answer_threads)
        return [Job("answer", first.name, first.src, cmd, args.answer_threads, rename="longflow+prompt")]
    return after


def finish(job, out, seen_full, log):
    """Rows of a finished job into out (the full cache once per sequence); follow-up jobs."""
    out_text, err_text = job.proc.communicate()
    secs = time.time() - job.t0
    if job.proc.returncode != 0:
        log(f"FAILED ({job.proc.returncode}, {secs:.0f} s) {job.name}: {' '.join(job.cmd)}\n    {err_text.strip()[-600:]}")
        return []
    rows = [json.loads(line) for line in out_text.splitlines() if line.strip()]
    for r in rows:
        r.update({"sequence": job.name, "kind": job.kind, "source": job.src, "model": os.path.basename(r["model"])})
        if r["policy"] == "full" and "kl" not in r:
            if job.name in seen_full:
                continue
            seen_full.add(job.name)
        elif job.rename:
            r["policy"] = job.rename
        out.write(json.dumps(r) + "\n")
    out.flush()
    log(f"done {job.kind} {job.name} ({job.rename or job.cmd[job.cmd.index('--policy') + 1]}): "
        f"{rows[0]['tokens']} tokens, {rows[0]['windows']} windows, {len(rows) - 1} runs, {secs:.0f} s")
    return job.after(rows) if job.after else []


def batched(args):
    t_start = time.time()
    os.makedirs(args.work, exist_ok=True)

    def log(msg):
        print(f"[{time.time() - t_start:6.1f} s] {msg}", file=sys.stderr, flush=True)

    queue, running, seen_full = batched_jobs(args), [], set()
    end, last_start = t_start + args.deadline_s, t_start + args.deadline_s - args.min_left_s
    with open(args.out, "a") as out:
        while queue or running:
            now = time.time()
            while queue and len(running) < args.jobs and now < last_start:
                job = queue.pop(0)
                job.t0 = now
                job.proc = subprocess.Popen(job.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                running.append(job)
                log(f"start {job.kind} {job.name}: {' '.join(job.cmd[2:])}")
            if queue and now >= last_start and not running:
                break
            for job in [j for j in running if j.proc.poll() is not None]:
                running.remove(job)
                queue[0:0] = finish(job, out, seen_full, log)  # follow-ups first
            if time.time() >= end:
                for job in running:
                    job.proc.kill()
                    job.proc.communicate()
                    log(f"deadline: killed {job.kind} {job.name} after {time.time() - job.t0:.0f} s (no rows)")
                running = []
                break
            time.sleep(0.2)
    for job in queue:
        log(f"deadline: not started {job.kind} {job.name} ({job.rename or 'policies'})")
    log(f"batched sweep done in {time.time() - t_start:.0f} s")


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
    order = ["longflow", "longflow+prompt", "tova", "h2o", "vatp", "streaming", "knorm", "rkv"]
    policies = []
    for r in rows:
        if r["policy"] != "full" and r["policy"] not in policies:
            policies.append(r["policy"])
    policies.sort(key=lambda p: order.index(p) if p in order else len(order))
    budgets = sorted({r["budget"] for r in rows if r["policy"] != "full" and "kl" in r})
    out = []
    plot = {}
    for kind in ("text", "answer"):
        full = [r for r in rows if r["kind"] == kind and "kl" not in r]
        if not full:
            continue
        n_seqs = sum(r.get("windows", 1) for r in full)
        scored = sum(r["tokens_scored"] for r in full)
        nll, nll_se = pooled(full, "nll", "se")
        out.append(f"\n### {TITLES[kind]}: {n_seqs} "
                   f"sequences, {scored} scored tokens; full cache NLL {nll:.3f} ± {nll_se:.3f}\n")
        out.append("Δ NLL (nats/token) / KL(full ‖ policy) / top-1 agreement, token-weighted over the sequences; "
                   "in brackets the sequences a budget evicts in (a budget at or above a sequence's length "
                   "evicts nothing there and is not counted; the windows of one call count one each).\n")
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
                cells.append(f"{d:+.3f} ± {d_se:.3f} / {k:.3f} / {t:.3f} [{sum(r.get('windows', 1) for r in sel)}]")
            out.append(f"| {pol} | " + " | ".join(cells) + " |")
    with open(args.md, "w") as f:
        f.write("\n".join(out) + "\n")
    if args.png and not plot:
        print(f"no run evicts: no plot written to {args.png}", file=sys.stderr)
    elif args.png:
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
    b = sub.add_parser("batched", help="the sweep at the issue's scale, one call per policy group (GPU)")
    b.add_argument("--model", required=True)
    b.add_argument("--bin", default="build/longflow")
    b.add_argument("--out", required=True)
    b.add_argument("--work", default="/tmp/fidelity_batched")
    b.add_argument("--texts", default=TEXTS_DIR)
    b.add_argument("--questions", default="bench/accuracy/fidelity/questions.jsonl")
    b.add_argument("--questions-limit", type=int, default=0, help="the first N questions only (0: all)")
    b.add_argument("--device", default="cuda")
    b.add_argument("--batch", default="max", help="max (what ran on the H200), pool (one GPU pool's runs: windows x budgets) or N")
    b.add_argument("--policies", default="longflow,tova,h2o,vatp,streaming,knorm", help="for the answers")
    b.add_argument("--text-groups", default="longflow,tova,streaming;h2o,vatp,knorm",
                   help="policy groups of the text calls, ';' between calls (each call runs the full cache too)")
    b.add_argument("--budgets", default="64,128,256,512,1024")
    b.add_argument("--ctx", type=int, default=4096, help="window of the texts (index.json's ctx: one text each)")
    b.add_argument("--limit-chunks", type=int, default=0, help="texts: the first K windows only (0: all)")
    b.add_argument("--gen", type=int, default=2048)
    b.add_argument("--ctx-answer", type=int, default=4096)
    b.add_argument("--jobs", type=int, default=4, help="calls at once")
    b.add_argument("--text-threads", type=int, default=6)
    b.add_argument("--answer-threads", type=int, default=2)
    b.add_argument("--deadline-s", type=float, default=390, help="kill what still runs this long after the start")
    b.add_argument("--min-left-s", type=float, default=40, help="start no call with less time than this left")
    x = sub.add_parser("texts", help="rebuild bench/accuracy/texts/ (needs Debian's common-licenses)")
    x.add_argument("--model", required=True)
    x.add_argument("--bin", default="build/longflow")
    x.add_argument("--dir", default=TEXTS_DIR)
    x.add_argument("--work", default="/tmp/fidelity_texts")
    x.add_argument("--ctx", type=int, default=4096)
    t = sub.add_parser("table")
    t.add_argument("--runs", required=True)
    t.add_argument("--md", required=True)
    t.add_argument("--png")
    a = ap.parse_args()
    {"run": run, "batched": batched, "texts": build_texts, "table": table}[a.cmd](a)


if __name__ == "__main__":
    main()
