#!/usr/bin/env python3
"""Where the v2 tiny reasoner's answers go wrong, per run of an accuracy sweep.

For every results file RUNS/<set>.<policy>[-<P>p].jsonl of
tools/sweep_accuracy.py (set: a family of tasks_v2.FAMILIES, or <family>-long)
and every problem,
compares the output's derivation with the reference (tasks_v2.first_wrong_line)
and sorts each wrong answer into one kind:
  derivation  a derivation line before the last one is wrong (the state was lost)
  q           the derivation is right and the last line "add Q: ..." has another Q
              than the question's (the question was lost)
  last        the derivation is right, the last line has the right Q but is wrong otherwise
  answer      every line is right but the boxed answer is not (or is missing)
Writes OUT.jsonl (one compact record per problem: no output text) and prints a
Markdown table of the kinds per family and run.

With --survival MD [--plot PNG] it instead reads such an OUT.jsonl (plain or
.gz) and writes, per family, the share of problems whose derivation came
through intact (kinds right, q, last, answer: every line before the last
equals the reference) for each policy and budget, and a plot of it
(one panel per family, one line per policy). With --q-first-digit it counts
the problems whose derivation is intact and whose last line has the first
digit of the question's Q (the part of Q the shipped v2 checkpoint learned
to copy; an indicator, chosen after the results, of whether the question
survived).

Usage: analyze_v2.py --data DIR --runs RUNS --out OUT.jsonl [--md OUT.md]
       analyze_v2.py --kinds OUT.jsonl[.gz] --survival OUT.md [--plot OUT.png]
"""
import argparse
import glob
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tasks_v2  # noqa: E402


def q_written(text):
    """The Q of the output's last line "add Q: ...", or None."""
    m = re.findall(r"^add (\d+):", text.split("</think>", 1)[0], flags=re.M)
    return int(m[-1]) if m else None


def kind_of(family, question, text, correct):
    """(kind, first wrong line or -1) for one output."""
    wrong = tasks_v2.first_wrong_line(family, question, text)
    if correct:
        return "right", wrong
    ref = tasks_v2.expected_lines(family, question)
    if wrong == -1:
        return "answer", wrong
    if wrong < len(ref) - 1:
        return "derivation", wrong
    body = text.split("<think>", 1)[-1].split("</think>", 1)[0].strip("\n").split("\n")
    got = body[wrong] if wrong < len(body) else ""
    q = tasks_v2.parse_question(family, question)["q"]
    m = re.match(r"add (\d+):", got)
    if not m or int(m.group(1)) != q:
        return "q", wrong
    return "last", wrong


INTACT = ("right", "q", "last", "answer")


def first_digit_kept(r):
    """The derivation is intact and the Q written has the question's first digit."""
    return (r["kind"] in INTACT and r.get("q_written") is not None
            and str(r["q_written"])[0] == str(r["q"])[0])


def survival(rows, test=lambda r: r["kind"] in INTACT):
    """{family: {(policy, budget%): [count passing test, n]}} over records of
    the held-out sets (not the -long ones); the full cache under ("full", 100)."""
    out = {}
    for r in rows:
        if r["family"].endswith("-long"):
            continue
        m = re.fullmatch(r"(.+)-(\d+)p", r["run"])
        key = (m.group(1), int(m.group(2))) if m else (r["run"], 100)
        cell = out.setdefault(r["family"], {}).setdefault(key, [0, 0])
        cell[0] += bool(test(r))
        cell[1] += 1
    return out


def write_survival(kinds_path, md_path, png_path, first_digit=False):
    import gzip
    op = gzip.open if kinds_path.endswith(".gz") else open
    with op(kinds_path, "rt") as f:
        recs = [json.loads(x) for x in f if x.strip()]
    table = survival(recs, first_digit_kept if first_digit else (lambda r: r["kind"] in INTACT))
    n_full = {fam: rows[("full", 100)][1] for fam, rows in table.items() if ("full", 100) in rows}
    budgets = sorted({b for rows in table.values() for (p, b) in rows if p != "full"})
    policies = list(dict.fromkeys(p for rows in table.values() for (p, b) in rows if p != "full"))
    md = ["| family | policy | " + " | ".join("%d%%" % b for b in budgets) + " |",
          "|---|---|" + "---|" * len(budgets)]
    for fam in tasks_v2.FAMILIES:
        rows = table.get(fam, {})
        full = rows.get(("full", 100))
        if full:
            md.append("| %s | full | %s |" % (fam, " | ".join(["%.1f%%" % (100.0 * full[0] / full[1])] * len(budgets))))
        for pol in policies:
            cells = [("%.1f%%" % (100.0 * rows[(pol, b)][0] / rows[(pol, b)][1])
                      + ("" if rows[(pol, b)][1] == n_full.get(fam) else " (n=%d)" % rows[(pol, b)][1]))
                     if (pol, b) in rows else "n/a" for b in budgets]
            md.append("| %s | %s | %s |" % (fam, pol, " | ".join(cells)))
    with open(md_path, "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    if png_path:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
        from sweep_accuracy import plot_panels
        panels = []
        for fam in (f for f in tasks_v2.FAMILIES if f in table):
            rows = table[fam]
            full = rows.get(("full", 100))
            lines = {pol: [(b, 100.0 * rows[(pol, b)][0] / rows[(pol, b)][1]) for b in budgets if (pol, b) in rows]
                     for pol in policies}
            title = fam + (": derivation intact, Q's 1st digit" if first_digit else ": derivation intact")
            panels.append((title, 100.0 * full[0] / full[1] if full else None, lines))
        plot_panels(panels, png_path, "problems (%)")


def load_questions(data_dir, family):
    with open(os.path.join(data_dir, family + ".jsonl")) as f:
        return {r["index"]: r["question"] for r in (json.loads(x) for x in f if x.strip())}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="dir of the test sets <family>.jsonl")
    ap.add_argument("--runs", help="dir of the sweep's results files")
    ap.add_argument("--out")
    ap.add_argument("--md", default=None)
    ap.add_argument("--kinds", help="an --out file of an earlier call (with --survival)")
    ap.add_argument("--survival", help="write the derivation-survival table here")
    ap.add_argument("--plot", help="and its plot here (PNG)")
    ap.add_argument("--q-first-digit", action="store_true",
                    help="--survival counts problems whose derivation is intact AND whose last line has the "
                         "first digit of the question's Q")
    args = ap.parse_args()
    if args.survival:
        if not args.kinds:
            ap.error("--survival needs --kinds")
        return write_survival(args.kinds, args.survival, args.plot, args.q_first_digit)
    if not (args.data and args.runs and args.out):
        ap.error("give --data, --runs and --out (or --kinds and --survival)")
    kinds = ("right", "derivation", "q", "last", "answer")
    rows, table = [], []
    for path in sorted(glob.glob(os.path.join(args.runs, "*.jsonl"))):
        name = os.path.basename(path)[:-len(".jsonl")]
        test_set, run = name.split(".", 1)  # <family> or <family>-long
        family = test_set[:-len("-long")] if test_set.endswith("-long") else test_set
        if family not in tasks_v2.FAMILIES:
            continue
        questions = load_questions(args.data, test_set)
        counts = dict.fromkeys(kinds, 0)
        with open(path) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue  # a line cut by an interruption
                if "index" not in r or "text" not in r:
                    continue
                k, wrong = kind_of(family, questions[r["index"]], r["text"], r.get("correct"))
                counts[k] += 1
                rows.append({"family": test_set, "run": run, "index": r["index"], "correct": r.get("correct"),
                             "kind": k, "first_wrong_line": wrong, "n_tokens": r.get("n_tokens"),
                             "finish_reason": r.get("finish_reason"), "budget": r.get("budget"),
                             "pred": r.get("pred"), "true_answer": r.get("true_answer"),
                             "q": tasks_v2.parse_question(family, questions[r["index"]])["q"],
                             "q_written": q_written(r["text"])})
        table.append((test_set, run, counts))
    with open(args.out, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    md = ["| family | run | n | " + " | ".join(kinds) + " |", "|---|---|---|" + "---|" * len(kinds)]
    for family, run, c in table:
        md.append("| %s | %s | %d | " % (family, run, sum(c.values())) + " | ".join(str(c[k]) for k in kinds) + " |")
    text = "\n".join(md) + "\n"
    if args.md:
        with open(args.md, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
