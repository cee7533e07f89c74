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

Usage: analyze_v2.py --data DIR --runs RUNS --out OUT.jsonl [--md OUT.md]
"""
import argparse
import glob
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tasks_v2  # noqa: E402


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


def load_questions(data_dir, family):
    with open(os.path.join(data_dir, family + ".jsonl")) as f:
        return {r["index"]: r["question"] for r in (json.loads(x) for x in f if x.strip())}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dir of the test sets <family>.jsonl")
    ap.add_argument("--runs", required=True, help="dir of the sweep's results files")
    ap.add_argument("--out", required=True)
    ap.add_argument("--md", default=None)
    args = ap.parse_args()
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
                             "pred": r.get("pred"), "true_answer": r.get("true_answer")})
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
