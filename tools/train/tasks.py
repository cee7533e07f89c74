#!/usr/bin/env python3
"""Synthetic reasoning tasks for the tiny longflow model.

Every family writes a question, a chain of small explicit steps (the
reasoning that goes between <think> and </think>) and the answer. Each step
needs a token that lies far back: a number or an arrow given in the prompt,
or a line written a lap earlier in the reasoning. A KV policy that evicts
those tokens makes the model fail, which is what the accuracy sweep measures.

The formats are built for a small model trained in minutes: every look-up is
keyed by ONE token that sits right before the value it points to (a bare
letter at the start of a line, e.g. "K7" or "K Q"), so a plain induction
head finds it; digits are single tokens (the tokenizer splits numbers into
digits), and each step does at most one small addition. The nodes of walk
and path are the first m labels and their edge lists are written in label
order, one arrow per source, like sum's list: every look-up from the
reasoning into the prompt is one into an ordered table (run 3 of the model
did not learn the look-up into a shuffled edge list in 24k steps).

Families:
  sum   running sum over a list of one-digit numbers labelled by letters in
        the prompt; each line copies the next number from the prompt and adds
        it to the previous total.
  walk  follow the arrows of a cycle given as an edge list in the prompt for
        k hops (several laps), one hop a line with its count (the long
        family: about 1,100 output tokens on average).
  path  a weighted cycle: follow the arrows from a start node to a target
        node, adding up the arrow lengths (graph search with arithmetic).

The second task set ("v2": fib, mul, gcd; tasks_v2.py, docs/tiny-reasoner-v2.md)
is shaped like reasoning instead: a short question, a long derivation whose
lines depend on the line before, and an answer that needs a number from the
question. select("v2") makes FAMILIES that set (train.py --tasks v2).

Usage:
  tasks.py testsets OUTDIR [--n 200] [--set v1|v2] [--long 100]
                                      write OUTDIR/<family>.jsonl (fixed seeds);
                                      v2 also OUTDIR/<family>-long.jsonl
  tasks.py sample FAMILY [--seed S]   print one rendered training example
"""
import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tasks_v2  # noqa: E402

TASK_SETS = {"v1": ("sum", "walk", "path"), "v2": tasks_v2.FAMILIES}
FAMILIES = TASK_SETS["v1"]  # the set trained and tested; select() changes it

LETTERS = [chr(c) for c in range(ord("A"), ord("Z") + 1)] + [chr(c) for c in range(ord("a"), ord("z") + 1)]

# Ranges of the problem sizes (inclusive), shared by training and test data.
SUM_N = (30, 52)        # numbers in the list (one label letter each)
SUM_V = (1, 9)          # value range of each number
WALK_M = (26, 52)       # nodes in the cycle
WALK_K = (140, 200)     # hops to follow
PATH_M = (20, 52)       # nodes in the cycle
PATH_W = (1, 9)         # arrow lengths

TEST_SEED = {"sum": 9101, "walk": 9202, "path": 9303}


def gen_sum(rng):
    n = rng.randint(*SUM_N)
    vals = [rng.randint(*SUM_V) for _ in range(n)]
    q = ["Add up these %d numbers." % n]
    q += ["%s%d" % (LETTERS[i], v) for i, v in enumerate(vals)]
    q.append("What is the total?")
    steps, s = [], 0
    for i, v in enumerate(vals):
        steps.append("%s%d %d+%d=%d" % (LETTERS[i], v, s, v, s + v))
        s += v
    return "\n".join(q), "\n".join(steps), str(s)


def _cycle(rng, m):
    """A random cycle through the first m labels (the labels of a sum list of
    m numbers). Returns the nodes in cycle order and the arrow map."""
    nodes = rng.sample(LETTERS[:m], m)  # order = the cycle
    return nodes, {nodes[i]: nodes[(i + 1) % m] for i in range(m)}


def _table(nodes):
    """The sources of the edge list in label order (A..Z a..z, as sum lists
    its numbers), so that every look-up is one into an ordered table."""
    return sorted(nodes, key=LETTERS.index)


def gen_walk(rng):
    m = rng.randint(*WALK_M)
    k = rng.randint(*WALK_K)
    nodes, nxt = _cycle(rng, m)
    listed = _table(nodes)
    start = rng.choice(nodes)
    q = ["Each line X Y is an arrow from node X to node Y."]
    q += ["%s %s" % (a, nxt[a]) for a in listed]
    q.append("Start at %s and follow %d arrows. Where do you end up?" % (start, k))
    steps, cur = [], start
    for i in range(k):
        steps.append("%s %s %d" % (cur, nxt[cur], i + 1))
        cur = nxt[cur]
    return "\n".join(q), "\n".join(steps), cur


def gen_path(rng):
    m = rng.randint(*PATH_M)
    nodes, nxt = _cycle(rng, m)
    w = {a: rng.randint(*PATH_W) for a in nodes}
    listed = _table(nodes)
    i0 = rng.randrange(m)
    hops = rng.randint(max(2, m // 2), m - 1)
    start, target = nodes[i0], nodes[(i0 + hops) % m]
    q = ["Each line X Yw is an arrow from node X to node Y of length w."]
    q += ["%s %s%d" % (a, nxt[a], w[a]) for a in listed]
    q.append("How long is the way from %s to %s along the arrows?" % (start, target))
    steps, cur, s = [], start, 0
    while cur != target:
        steps.append("%s %s%d %d+%d=%d" % (cur, nxt[cur], w[cur], s, w[cur], s + w[cur]))
        s += w[cur]
        cur = nxt[cur]
    return "\n".join(q), "\n".join(steps), str(s)


GENERATORS = {"sum": gen_sum, "walk": gen_walk, "path": gen_path}
GENERATORS.update({f: (lambda rng, f=f: tasks_v2.generate(f, rng)) for f in tasks_v2.FAMILIES})


def select(name):
    """Make FAMILIES the task set `name` (v1 or v2); worker processes forked
    afterwards inherit it."""
    global FAMILIES
    if name not in TASK_SETS:
        raise SystemExit("tasks: unknown task set %r (have %s)" % (name, ", ".join(TASK_SETS)))
    FAMILIES = TASK_SETS[name]


def generate(family, rng):
    """(question, reasoning, answer) for one problem of the family."""
    return GENERATORS[family](rng)


def prompt_text(question):
    """The ChatML prompt that tokenizer_config.json's template renders for one
    user message with add_generation_prompt=True (thinking on)."""
    return "<|im_start|>user\n" + question + "<|im_end|>\n<|im_start|>assistant\n"


def response_text(reasoning, answer):
    """What the model is trained to write after the prompt (eos included)."""
    return "<think>\n" + reasoning + "\n</think>\n\n\\boxed{" + answer + "}<|im_end|>"


def test_problems(family, n):
    if family in tasks_v2.FAMILIES:
        return tasks_v2.test_problems(family, n)
    rng = random.Random(TEST_SEED[family])
    return [generate(family, rng) for _ in range(n)]


def _write_jsonl(path, probs):
    with open(path, "w") as f:
        for i, (q, _, a) in enumerate(probs):
            f.write(json.dumps({"index": i, "question": q, "true_answer": a}) + "\n")
    print("wrote", path)


def write_testsets(outdir, n, n_long=0):
    """OUTDIR/<family>.jsonl for the families of FAMILIES; for v2 families
    also OUTDIR/<family>-long.jsonl (n_long problems 25% longer than any
    trained one)."""
    os.makedirs(outdir, exist_ok=True)
    for fam in FAMILIES:
        _write_jsonl(os.path.join(outdir, fam + ".jsonl"), test_problems(fam, n))
        if n_long and fam in tasks_v2.FAMILIES:
            _write_jsonl(os.path.join(outdir, fam + "-long.jsonl"), tasks_v2.test_problems(fam, n_long, long=True))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("testsets")
    t.add_argument("outdir")
    t.add_argument("--n", type=int, default=200)
    t.add_argument("--set", default="v1", choices=sorted(TASK_SETS))
    t.add_argument("--long", type=int, default=100, help="v2: problems per long test set")
    s = sub.add_parser("sample")
    s.add_argument("family", choices=sorted(GENERATORS))
    s.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.cmd == "testsets":
        select(args.set)
        write_testsets(args.outdir, args.n, args.long)
    else:
        q, r, a = generate(args.family, random.Random(args.seed))
        sys.stdout.write(prompt_text(q) + response_text(r, a) + "\n")


if __name__ == "__main__":
    main()
