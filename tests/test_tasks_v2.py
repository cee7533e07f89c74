#!/usr/bin/env python3
"""Tests of the v2 task families (tools/train/tasks_v2.py, docs/tiny-reasoner-v2.md).

The references are written here, independently of the generator:
- a step function per family that computes a derivation line from the line
  before it ALONE (parsing the text), which shows that each step is local and
  that the generator's lines follow the rule;
- the shape the design fixes: question <= 100 tokens, derivation 1,000-4,000
  tokens (the v1 tokenizer, the one v2 uses), Q used by the last line only;
- solve() (the answer from the question text) against the generated answer;
- first_wrong_line() on corrupted outputs;
- the committed test sets against regeneration with the fixed seeds.
No torch.
"""
import json
import os
import random
import re
import sys
import unittest

SRC = os.environ.get("LF_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(SRC, "tools", "train"))
import tasks  # noqa: E402
import tasks_v2  # noqa: E402

V2_DIR = os.path.join(SRC, "models", "tiny-reasoner-v2")
TOKENIZER = os.path.join(SRC, "models", "tiny-reasoner", "tokenizer.json")


def next_line(family, prev):
    """The derivation line after `prev`, from `prev` alone (None: the derivation ends)."""
    if family == "fib":
        k, a, b, c = re.fullmatch(r"(\d+) (\d{3})\+(\d{3})=(\d{3})", prev).groups()
        if int(k) == 1:
            return None
        return "%d %s+%s=%03d" % (int(k) - 1, b, c, (int(b) + int(c)) % 1000)
    if family == "mul":
        m = re.fullmatch(r"(\d+) (\d{3})\*(\d) .* =(\d{3})", prev)
        k, y, mult = int(m.group(1)), m.group(4), int(m.group(3))
        if k == 1:
            return None
        parts, carry = [], 0
        for d in reversed(y):  # units first
            p = int(d) * mult + carry
            parts.append("%s*%d+%d=%d" % (d, mult, carry, p))
            carry = p // 10
        res = (int(y) * mult) % 1000
        return "%d %s*%d %s =%03d" % (k - 1, y, mult, " ".join(parts), res)
    a, b, c = (int(x) for x in re.fullmatch(r"(\d{4})-(\d{4})=(\d{4})", prev).groups())
    if b == c:
        return None
    hi, lo = max(b, c), min(b, c)
    return "%04d-%04d=%04d" % (hi, lo, hi - lo)


def rendered(reasoning, answer):
    return tasks.response_text(reasoning, answer)


class TestFamilies(unittest.TestCase):
    N = 150

    def problems(self, fam, seed=7):
        rng = random.Random(seed)
        return [tasks_v2.generate(fam, rng) for _ in range(self.N)]

    def test_steps_are_local_and_answers_solve(self):
        for fam in tasks_v2.FAMILIES:
            self.check_steps_and_answers(fam, self.problems(fam))

    def test_short_training_problems(self):
        """train.py --short-share: the same rules, fewer lines than the trained range."""
        for fam in tasks_v2.FAMILIES:
            rng = random.Random(9)
            probs = [tasks_v2.generate_short(fam, rng) for _ in range(self.N)]
            self.check_steps_and_answers(fam, probs)
            lo, hi = tasks_v2.SHORT[fam]
            self.assertLess(hi, tasks_v2.LENGTH[fam][0])
            for q, r, _ in probs:
                self.assertTrue(lo <= len(r.split("\n")) - 1 <= hi, (fam, q))

    def check_steps_and_answers(self, fam, probs):
        for q, r, a in probs:
            lines = r.split("\n")
            body, last = lines[:-1], lines[-1]
            for prev, cur in zip(body, body[1:]):
                self.assertEqual(next_line(fam, prev), cur, (fam, q))
            self.assertIsNone(next_line(fam, body[-1]), (fam, q))
            # the last line: add Q (from the question) to the derivation's result
            m = re.fullmatch(r"add (\d+): (\d+)\+(\d+)=(\d+)", last)
            self.assertIsNotNone(m, last)
            qv = tasks_v2.parse_question(fam, q)["q"]
            self.assertEqual(int(m.group(1)), qv)
            self.assertEqual(int(m.group(3)), qv)
            self.assertEqual(int(m.group(2)) + qv, int(m.group(4)))
            self.assertEqual(m.group(4), a)
            self.assertEqual(tasks_v2.solve(fam, q), a)

    def test_first_line_from_question(self):
        for fam in tasks_v2.FAMILIES:
            for q, r, _ in self.problems(fam, seed=8)[:30]:
                first = r.split("\n")[0]
                nums = [int(x) for x in re.findall(r"\d+", q)]
                if fam == "fib":  # a, b, n, q
                    self.assertEqual(first, "%d %03d+%03d=%03d" % (nums[2], nums[0], nums[1], (nums[0] + nums[1]) % 1000))
                elif fam == "mul":  # x, m, n, q
                    self.assertTrue(first.startswith("%d %03d*%d " % (nums[2], nums[0], nums[1])), first)
                    self.assertTrue(first.endswith("=%03d" % (nums[0] * nums[1] % 1000)), first)
                else:
                    hi, lo = max(nums[0], nums[1]), min(nums[0], nums[1])
                    self.assertEqual(first, "%04d-%04d=%04d" % (hi, lo, hi - lo))

    def test_q_is_needed_only_at_the_end(self):
        """Changing Q in the question changes only the last line and the answer."""
        for fam in tasks_v2.FAMILIES:
            for q, r, a in self.problems(fam, seed=9)[:20]:
                qv = tasks_v2.parse_question(fam, q)["q"]
                q2 = q.replace("add %d " % qv, "add %d " % (qv + 1))
                self.assertNotEqual(q, q2)
                lines2 = tasks_v2.expected_lines(fam, q2)
                self.assertEqual(lines2[:-1], r.split("\n")[:-1])
                self.assertNotEqual(lines2[-1], r.split("\n")[-1])
                self.assertEqual(tasks_v2.solve(fam, q2), str(int(a) + 1))
                self.assertEqual(str(qv), q.split("add ")[1].split(" ")[0])
                # Q is not in any derivation line as a number of its own
                for ln in r.split("\n")[:-1]:
                    self.assertNotIn("add", ln)

    def test_lengths_with_the_tokenizer(self):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            self.skipTest("tokenizers not installed")
        tok = Tokenizer.from_file(TOKENIZER)
        for fam in tasks_v2.FAMILIES:
            for q, r, a in self.problems(fam, seed=10)[:60]:
                nq = len(tok.encode(q).ids)
                nr = len(tok.encode(rendered(r, a)).ids)
                self.assertLessEqual(nq, 100, (fam, q))
                self.assertTrue(1000 <= nr <= 4000, (fam, nr))
                # every character of a derivation line is one token (digits, signs, space)
                ln = r.split("\n")[1]
                self.assertEqual(len(tok.encode(ln).ids), len(ln), (fam, ln))

    def test_first_wrong_line(self):
        for fam in tasks_v2.FAMILIES:
            q, r, a = self.problems(fam, seed=11)[0]
            out = rendered(r, a)
            self.assertEqual(tasks_v2.first_wrong_line(fam, q, out), -1)
            lines = r.split("\n")
            # a digit changed in line 5
            bad = list(lines)
            bad[5] = bad[5][:-1] + str((int(bad[5][-1]) + 1) % 10)
            self.assertEqual(tasks_v2.first_wrong_line(fam, q, rendered("\n".join(bad), a)), 5)
            # a line dropped, the derivation cut short, the wrong Q at the end
            self.assertEqual(tasks_v2.first_wrong_line(fam, q, rendered("\n".join(lines[:3] + lines[4:]), a)), 3)
            self.assertEqual(tasks_v2.first_wrong_line(fam, q, "<think>\n" + "\n".join(lines[:10])), 10)
            wrong_q = lines[-1].replace("add ", "add 1", 1)
            self.assertEqual(tasks_v2.first_wrong_line(fam, q, rendered("\n".join(lines[:-1] + [wrong_q]), a)),
                             len(lines) - 1)
            self.assertIsNone(tasks_v2.first_wrong_line(fam, "What is 2+2?", out))
            self.assertIsNone(tasks_v2.solve(fam, "What is 2+2?"))

    def test_long_sets_are_longer(self):
        for fam in tasks_v2.FAMILIES:
            n_long = tasks_v2.long_length(fam)
            self.assertGreaterEqual(n_long, 1.25 * tasks_v2.LENGTH[fam][1] - 0.5)
            for q, r, a in tasks_v2.test_problems(fam, 5, long=True):
                self.assertGreaterEqual(len(r.split("\n")) - 1, n_long)
                self.assertEqual(tasks_v2.solve(fam, q), a)


class TestCommittedSets(unittest.TestCase):
    def test_sets_match_generator(self):
        data = os.path.join(V2_DIR, "data")
        if not os.path.isdir(data):
            self.skipTest("models/tiny-reasoner-v2/data not in the tree")
        for fam in tasks_v2.FAMILIES:
            for name, long_ in ((fam, False), (fam + "-long", True)):
                with open(os.path.join(data, name + ".jsonl")) as f:
                    rows = [json.loads(line) for line in f if line.strip()]
                probs = tasks_v2.test_problems(fam, len(rows), long=long_)
                self.assertEqual(len(rows), 200 if not long_ else 100)
                for i, (row, (q, _, a)) in enumerate(zip(rows, probs)):
                    self.assertEqual(row, {"index": i, "question": q, "true_answer": a})
                    self.assertEqual(tasks_v2.solve(fam, row["question"]), row["true_answer"])



if __name__ == "__main__":
    unittest.main()
