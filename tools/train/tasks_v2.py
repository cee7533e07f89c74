#!/usr/bin/env python3
"""Reasoning-shaped task families for the second tiny model (tiny-reasoner-v2).

Design: docs/tiny-reasoner-v2.md. Every problem is a short question (at most
100 tokens), a long derivation (about 1,000-3,000 tokens) in which each line
is computed from the line before it alone, and a final line that also needs a
number that only the question holds ("then add Q"), so a KV policy must keep
the question through the whole derivation to get the answer right.

Families (LENGTH is the size parameter that sets the derivation's length):
  fib  an additive recurrence mod 1000: each line "k a+b=c" (k counts down
       from N, c = (a+b) mod 1000, three digits); LENGTH = N lines.
  mul  a multiplicative recurrence mod 1000 shown digit by digit: each line
       "k x*m d0*m+c=.. d1*m+c=.. d2*m+c=.. =y" (y = x*m mod 1000);
       LENGTH = N lines.
  gcd  Euclid by subtraction, a program with a branch and a data-dependent
       stop: each line "a-b=c" (four digits each; a the larger of the two
       numbers left by the line before), until both numbers are equal;
       LENGTH = number of lines.
Each derivation is followed by "add Q: r+Q=s" and the answer \\boxed{s}.

The module holds no torch: the generators, a solver that recomputes the
answer from the question text alone (a separate parser, not the generator's
state), and a checker that finds the first wrong line of a derivation are
tested by tests/test_tasks_v2.py in CI.
"""
import random
import re

FAMILIES = ("fib", "mul", "gcd")

# Trained LENGTH ranges (inclusive); LONG = 1.25 x the largest trained one.
LENGTH = {"fib": (80, 170), "mul": (30, 64), "gcd": (90, 180)}
LONG_FACTOR = 1.25
Q_RANGE = (100, 999)            # the number added at the end
MUL_M = (2, 3, 4, 6, 7, 8, 9)   # multipliers (5 would collapse to multiples of 125)
GCD_A = (1000, 9999)
GCD_B = (11, 999)

TEST_SEED = {"fib": 9401, "mul": 9502, "gcd": 9603}
LONG_SEED = {"fib": 9411, "mul": 9512, "gcd": 9613}


def long_length(family):
    """The LENGTH of the long test problems: 25% above the largest trained."""
    return int(round(LENGTH[family][1] * LONG_FACTOR))


def finish_line(q, r, width):
    """The last line, "add Q: r+Q=s" (r in the derivation's width), and the answer s."""
    return "add %d: %0*d+%d=%d" % (q, width, r, q, r + q), str(r + q)


def gen_fib(rng, n=None):
    n = n or rng.randint(*LENGTH["fib"])
    a, b, q = rng.randint(0, 999), rng.randint(0, 999), rng.randint(*Q_RANGE)
    question = ("Start with %03d and %03d. Each step adds the last two numbers and keeps the last three "
                "digits. Take %d steps, then add %d to the last number." % (a, b, n, q))
    lines = []
    for k in range(n, 0, -1):
        c = (a + b) % 1000
        lines.append("%d %03d+%03d=%03d" % (k, a, b, c))
        a, b = b, c
    last, answer = finish_line(q, b, 3)
    return question, "\n".join(lines + [last]), answer


def mul_line(k, x, m):
    """One step of mul: x*m mod 1000 digit by digit from the units."""
    parts, carry, digits = [], 0, []
    for d in (x % 10, x // 10 % 10, x // 100):
        p = d * m + carry
        parts.append("%d*%d+%d=%d" % (d, m, carry, p))
        digits.append(p % 10)
        carry = p // 10
    y = digits[0] + 10 * digits[1] + 100 * digits[2]
    return "%d %03d*%d %s =%03d" % (k, x, m, " ".join(parts), y), y


def gen_mul(rng, n=None):
    n = n or rng.randint(*LENGTH["mul"])
    x = rng.choice([v for v in range(1, 1000) if v % 5])  # (never collapses to 0)
    m, q = rng.choice(MUL_M), rng.randint(*Q_RANGE)
    question = ("Start with %03d. Each step multiplies the number by %d and keeps the last three digits. "
                "Take %d steps, then add %d to the last number." % (x, m, n, q))
    lines = []
    for k in range(n, 0, -1):
        ln, x = mul_line(k, x, m)
        lines.append(ln)
    last, answer = finish_line(q, x, 3)
    return question, "\n".join(lines + [last]), answer


def gcd_steps(a, b):
    """Lines of Euclid by subtraction from (a, b) until both are equal, and
    that number. Numbers are written with four digits (zero-padded), so that
    digits of equal weight sit at equal offsets in every line."""
    lines = []
    while a != b:
        hi, lo = max(a, b), min(a, b)
        lines.append("%04d-%04d=%04d" % (hi, lo, hi - lo))
        a, b = hi - lo, lo
    return lines, a


def gen_gcd(rng, n=None):
    # the number of lines is data-dependent: draw until it is in range
    # (a given n: n to 5% more, so a long problem is at least n lines)
    lo, hi = (n, n + n // 20) if n else LENGTH["gcd"]
    return gcd_problem(rng, lo, hi)


def gcd_problem(rng, lo, hi):
    """A gcd problem whose derivation has lo..hi lines (a, b drawn until it has)."""
    while True:
        a, b = rng.randint(*GCD_A), rng.randint(*GCD_B)
        lines, g = gcd_steps(a, b)
        if lo <= len(lines) <= hi:
            break
    q = rng.randint(*Q_RANGE)
    question = ("Start with %d and %d. Each step subtracts the smaller number from the larger one, until "
                "both numbers are equal. Then add %d to that number." % (a, b, q))
    last, answer = finish_line(q, g, 4)
    return question, "\n".join(lines + [last]), answer


GENERATORS = {"fib": gen_fib, "mul": gen_mul, "gcd": gen_gcd}

# Training-only short problems (train.py --short-share): the same families and
# formats with fewer lines than the trained range, so that a batch holds many
# more final "add Q" lines, each with far fewer digits between it and Q.
# Never in a test set (those are drawn from LENGTH and long_length only).
SHORT = {"fib": (4, 40), "mul": (2, 16), "gcd": (8, 48)}


def generate_short(family, rng):
    """(question, reasoning, answer) of a problem shorter than the trained
    range: LENGTH drawn from SHORT[family] (gcd: lines in that range)."""
    lo, hi = SHORT[family]
    if family == "gcd":
        return gcd_problem(rng, lo, hi)
    return GENERATORS[family](rng, rng.randint(lo, hi))


def generate(family, rng, length=None):
    """(question, reasoning, answer); length: LENGTH parameter (None: drawn from the trained range)."""
    return GENERATORS[family](rng, length)


def test_problems(family, n, long=False):
    """The fixed held-out set: n problems of the trained range, or of long_length(family)."""
    rng = random.Random((LONG_SEED if long else TEST_SEED)[family])
    length = long_length(family) if long else None
    return [generate(family, rng, length) for _ in range(n)]


# ---- independent solver and checker (question text -> answer / wrong line) --

_Q_FIB = re.compile(r"Start with (\d{3}) and (\d{3})\. Each step adds the last two numbers and keeps the last "
                    r"three digits\. Take (\d+) steps, then add (\d+) to the last number\.")
_Q_MUL = re.compile(r"Start with (\d{3})\. Each step multiplies the number by (\d) and keeps the last three "
                    r"digits\. Take (\d+) steps, then add (\d+) to the last number\.")
_Q_GCD = re.compile(r"Start with (\d+) and (\d+)\. Each step subtracts the smaller number from the larger one, "
                    r"until both numbers are equal\. Then add (\d+) to that number\.")


def parse_question(family, question):
    """The question's numbers as a dict, or None when it is not of the family's form."""
    m = {"fib": _Q_FIB, "mul": _Q_MUL, "gcd": _Q_GCD}[family].fullmatch(question)
    if not m:
        return None
    v = [int(g) for g in m.groups()]
    if family == "fib":
        return {"a": v[0], "b": v[1], "n": v[2], "q": v[3]}
    if family == "mul":
        return {"x": v[0], "m": v[1], "n": v[2], "q": v[3]}
    return {"a": v[0], "b": v[1], "q": v[2]}


def solve(family, question):
    """The answer recomputed from the question text alone (arithmetic on
    integers, not the generator's line formats), or None if unparsable."""
    p = parse_question(family, question)
    if p is None:
        return None
    if family == "fib":
        a, b = p["a"], p["b"]
        for _ in range(p["n"]):
            a, b = b, (a + b) % 1000
        r = b
    elif family == "mul":
        r = p["x"] * pow(p["m"], p["n"], 1000) % 1000
    else:
        a, b = p["a"], p["b"]
        if a <= 0 or b <= 0:
            return None
        g = a
        while b:
            g, b = b, g % b  # Euclid by division ends at the same number
        r = g
    return str(r + p["q"])


def expected_lines(family, question):
    """The reference derivation's lines (the generator's format) for a question, or None."""
    p = parse_question(family, question)
    if p is None:
        return None
    if family == "fib":
        a, b, out = p["a"], p["b"], []
        for k in range(p["n"], 0, -1):
            c = (a + b) % 1000
            out.append("%d %03d+%03d=%03d" % (k, a, b, c))
            a, b = b, c
        r = b
    elif family == "mul":
        x, out = p["x"], []
        for k in range(p["n"], 0, -1):
            ln, x = mul_line(k, x, p["m"])
            out.append(ln)
        r = x
    else:
        out, r = gcd_steps(p["a"], p["b"])
    return out + [finish_line(p["q"], r, 4 if family == "gcd" else 3)[0]]


def first_wrong_line(family, question, output):
    """Index of the first derivation line of a model output (the text between
    <think> and </think>, or the whole output) that differs from the
    reference derivation; -1 when all lines agree; None if the question is
    not of the family's form. A missing or extra line counts as wrong."""
    ref = expected_lines(family, question)
    if ref is None:
        return None
    body = output
    if "<think>" in body:
        body = body.split("<think>", 1)[1]
    body = body.split("</think>", 1)[0].strip("\n")
    got = body.split("\n") if body else []
    for i in range(max(len(ref), len(got))):
        if i >= len(ref) or i >= len(got) or ref[i] != got[i]:
            return i
    return -1
