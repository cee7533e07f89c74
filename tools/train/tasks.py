#!/usr/bin/env python3
"""Synthetic reasoning tasks for the tiny longflow model.

Every family writes a question, a chain of small explicit steps (the
reasoning that goes between <think> and </think>) and the answer. Each step
needs a token that lies far back: a number or a link given in the prompt, or
a value written early in the reasoning. A KV policy that evicts those tokens
makes the model fail, which is what the accuracy sweep measures.

Families:
  sum   running sum over a labelled list given in the prompt; each line copies
        the next number from the prompt and adds it to the previous total
        (the long family: about 1,100 output tokens on average).
  walk  follow the arrows of a cyclic permutation given as an edge list in the
        prompt, one hop a line (a graph traversal).
  prog  evaluate a straight-line program modulo 10; each line copies the
        definition from the prompt and looks up operand values computed many
        lines earlier (the nested-expression family, flattened).

Usage:
  tasks.py testsets OUTDIR [--n 200]   write OUTDIR/<family>.jsonl (fixed seeds)
  tasks.py sample FAMILY [--seed S]   print one rendered training example
"""
import argparse
import json
import os
import random
import sys

FAMILIES = ("sum", "walk", "prog")

# Ranges of the problem sizes (inclusive), shared by training and test data.
SUM_N = (45, 64)        # numbers in the list
SUM_V = (1, 99)         # value range of each number
WALK_M = (30, 50)       # nodes in the cycle (two-digit names 10..99)
WALK_K = (25, 50)       # hops to follow
PROG_N = (14, 24)       # variables
PROG_C = (2, 4)         # of which constants
PROG_OPS = ("+", "-", "*")
PROG_OP_WEIGHTS = (4, 4, 2)  # few products: they drive values to 0

TEST_SEED = {"sum": 9101, "walk": 9202, "prog": 9303}


def gen_sum(rng):
    n = rng.randint(*SUM_N)
    vals = [rng.randint(*SUM_V) for _ in range(n)]
    q = ["Add up these %d numbers." % n]
    q += ["#%d: %d" % (i + 1, v) for i, v in enumerate(vals)]
    q.append("What is their sum?")
    steps, s = [], 0
    for i, v in enumerate(vals):
        steps.append("#%d: %d, %d+%d=%d" % (i + 1, v, s, v, s + v))
        s += v
    return "\n".join(q), "\n".join(steps), str(s)


def gen_walk(rng):
    m = rng.randint(*WALK_M)
    k = rng.randint(*WALK_K)
    nodes = rng.sample(range(10, 100), m)  # order = the cycle
    nxt = {nodes[i]: nodes[(i + 1) % m] for i in range(m)}
    listed = nodes[:]
    rng.shuffle(listed)
    start = rng.choice(nodes)
    q = ["Each node points to one other node:"]
    q += ["%d->%d" % (a, nxt[a]) for a in listed]
    q.append("Start at %d and follow the arrows %d times. Where do you end up?" % (start, k))
    steps, cur = [], start
    for i in range(k):
        steps.append("%d: %d->%d" % (i + 1, cur, nxt[cur]))
        cur = nxt[cur]
    return "\n".join(q), "\n".join(steps), str(cur)


def _apply(op, a, b):
    if op == "+":
        return (a + b) % 10
    if op == "-":
        return (a - b) % 10
    return (a * b) % 10


def gen_prog(rng):
    n = rng.randint(*PROG_N)
    c = rng.randint(*PROG_C)
    defs, vals = [], []
    for i in range(n):
        if i < c:
            v = rng.randint(1, 9)
            defs.append((None, v, None))
            vals.append(v)
        else:
            a = rng.randint(0, i - 1)
            b = rng.randint(0, i - 1)
            op = rng.choices(PROG_OPS, PROG_OP_WEIGHTS)[0]
            defs.append((a, op, b))
            vals.append(_apply(op, vals[a], vals[b]))
    q = ["Every variable is a digit and all arithmetic is modulo 10."]
    for i, (a, op, b) in enumerate(defs):
        if a is None:
            q.append("x%d = %d" % (i + 1, op))
        else:
            q.append("x%d = x%d %s x%d" % (i + 1, a + 1, op, b + 1))
    q.append("What is x%d?" % n)
    steps = []
    for i, (a, op, b) in enumerate(defs):
        if a is None:
            steps.append("x%d is %d" % (i + 1, vals[i]))
        else:
            steps.append("x%d = x%d %s x%d = %d %s %d = %d; x%d is %d" %
                         (i + 1, a + 1, op, b + 1, vals[a], op, vals[b], vals[i], i + 1, vals[i]))
    return "\n".join(q), "\n".join(steps), str(vals[-1])


GENERATORS = {"sum": gen_sum, "walk": gen_walk, "prog": gen_prog}


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
    rng = random.Random(TEST_SEED[family])
    return [generate(family, rng) for _ in range(n)]


def write_testsets(outdir, n):
    os.makedirs(outdir, exist_ok=True)
    for fam in FAMILIES:
        path = os.path.join(outdir, fam + ".jsonl")
        with open(path, "w") as f:
            for i, (q, _, a) in enumerate(test_problems(fam, n)):
                f.write(json.dumps({"index": i, "question": q, "true_answer": a}) + "\n")
        print("wrote", path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("testsets")
    t.add_argument("outdir")
    t.add_argument("--n", type=int, default=200)
    s = sub.add_parser("sample")
    s.add_argument("family", choices=FAMILIES)
    s.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.cmd == "testsets":
        write_testsets(args.outdir, args.n)
    else:
        q, r, a = generate(args.family, random.Random(args.seed))
        sys.stdout.write(prompt_text(q) + response_text(r, a) + "\n")


if __name__ == "__main__":
    main()
