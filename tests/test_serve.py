#!/usr/bin/env python3
"""`longflow serve` end to end, on the bundled model, through the official
`openai` client and raw HTTP (http.client). The reference for every answer
is `longflow generate` run on the same request (a separate process, the
CLI's own prompt rendering and loop)."""
import concurrent.futures
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import BIN, MODEL, SANITIZED, Server, generate, problems, sse_events  # noqa: E402

CANCELLED = 'longflow_requests_finished_total{reason="cancelled"}'

import openai  # noqa: E402

CHAT = "/v1/chat/completions"
CMPL = "/v1/completions"


def chat_body(question, n, **extra):
    b = {"model": "tiny-reasoner", "messages": [{"role": "user", "content": question}], "max_tokens": n}
    b.update(extra)
    return b


class Serve(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server("--max-seqs", "4", "--max-queue", "64")
        cls.client = openai.OpenAI(base_url=cls.srv.base_url, api_key="unused", max_retries=0)

    @classmethod
    def tearDownClass(cls):
        rc, err = cls.srv.stop()
        assert rc == 0, err

    def assert_serving(self):
        st, _, b = self.srv.post(CHAT, chat_body("Add up these 2 numbers.\nA1\nB2", 4))
        self.assertEqual(st, 200, b)

    def test_models_and_health(self):
        st, _, b = self.srv.request("GET", "/health")
        self.assertEqual((st, json.loads(b)), (200, {"status": "ok"}))
        models = self.client.models.list()
        self.assertEqual([m.id for m in models.data], ["tiny-reasoner"])

    def test_chat_greedy_equals_generate(self):
        """Greedy chat through the openai client: the same tokens, text, split and usage as generate --chat."""
        for q in problems(3, "sum"):
            ref = generate("--chat", "--prompt", q, "--max-tokens", "80", "--split-think")
            r = self.client.chat.completions.create(model="tiny-reasoner", messages=[{"role": "user", "content": q}],
                                                    max_tokens=80, extra_body={"return_token_ids": True})
            ch = r.choices[0]
            self.assertEqual(ch.model_extra["token_ids"], ref["tokens"])
            self.assertEqual(ch.message.content, ref["answer"])
            self.assertEqual(ch.message.model_extra.get("reasoning_content") or "", ref["reasoning"])
            self.assertEqual(ch.finish_reason, "length")
            self.assertEqual(r.usage.prompt_tokens, len(ref["prompt_tokens"]))
            self.assertEqual(r.usage.completion_tokens, len(ref["tokens"]))
            self.assertEqual(r.usage.total_tokens, len(ref["prompt_tokens"]) + len(ref["tokens"]))
            kv = r.usage.model_extra["kv"]
            self.assertEqual(kv["policy"], "full")
            self.assertEqual(kv["peak_slots"], ref["stats"]["kv_tokens_peak"])
            self.assertEqual(kv["bytes"], ref["stats"]["kv_bytes"])

    def test_seed_reproducible_across_runs(self):
        """A sampled request with its own seed gets generate --seed's tokens, whatever the server ran before and
        on a second server; without a seed, the first request of a server started with --seed S samples as
        generate --seed S (its number is 0) and a later one differs from it. (A completion of an odd prompt at
        temperature 1: the bundled model is too sure of itself on its chat problems for seeds to matter.)"""
        prompt, n = "zebra quantum 7", 24
        opts = ["--prompt", prompt, "--temperature", "1", "--max-tokens", str(n), "--ignore-eos"]
        ref = generate("--seed", "4242", *opts)["tokens"]
        ref77 = generate("--seed", "77", *opts)["tokens"]
        self.assertNotEqual(ref77, ref)
        body = {"prompt": prompt, "max_tokens": n, "temperature": 1, "seed": 4242, "ignore_eos": True,
                "return_token_ids": True}
        unseeded = {k: v for k, v in body.items() if k != "seed"}

        def ids(srv, b):
            st, _, r = srv.post(CMPL, b)
            self.assertEqual(st, 200, r)
            return r["choices"][0]["token_ids"]

        self.assert_serving()  # this server has answered other requests before
        self.assertEqual(ids(self.srv, body), ref)
        other = Server("--seed", "77", "--temperature", "1")
        try:
            first, again, second = ids(other, unseeded), ids(other, body), ids(other, unseeded)
        finally:
            rc, err = other.stop()
            self.assertEqual(rc, 0, err)
        self.assertEqual(again, ref)
        self.assertEqual(first, ref77)
        self.assertNotEqual(second, ref77)

    def test_reasoning_split_whole_answer(self):
        """A problem solved to the end: reasoning_content and content as generate --split-think, finish 'stop'."""
        q = problems(1, "sum")[0]
        ref = generate("--chat", "--prompt", q, "--max-tokens", "600", "--split-think")
        self.assertEqual(ref["finish_reason"], "eos")
        self.assertIn("boxed", ref["answer"])
        r = self.client.chat.completions.create(model="tiny-reasoner", messages=[{"role": "user", "content": q}],
                                                max_tokens=600)
        self.assertEqual(r.choices[0].finish_reason, "stop")
        self.assertEqual(r.choices[0].message.content, ref["answer"])
        self.assertEqual(r.choices[0].message.model_extra["reasoning_content"], ref["reasoning"])
        self.assertEqual(r.usage.completion_tokens, len(ref["tokens"]))
        # streamed: the deltas add up to the same two parts
        stream = self.client.chat.completions.create(model="tiny-reasoner", messages=[{"role": "user", "content": q}],
                                                     max_tokens=600, stream=True,
                                                     stream_options={"include_usage": True})
        parts = {"reasoning_content": "", "content": ""}
        finish, usage, n_chunks = None, None, 0
        for chunk in stream:
            n_chunks += 1
            if chunk.usage:
                usage = chunk.usage
            for c in chunk.choices:
                parts["content"] += c.delta.content or ""
                parts["reasoning_content"] += (c.delta.model_extra or {}).get("reasoning_content") or ""
                finish = c.finish_reason or finish
        self.assertEqual(parts["content"], ref["answer"])
        self.assertEqual(parts["reasoning_content"], ref["reasoning"])
        self.assertEqual(finish, "stop")
        self.assertEqual(usage.completion_tokens, len(ref["tokens"]))
        self.assertGreater(n_chunks, 50)  # streamed token by token, not at the end

    def test_completions_equal_generate(self):
        """/v1/completions, streaming and not, equals generate --prompt (no chat template)."""
        prompt = "A4\nB3\nC4\n"
        ref = generate("--prompt", prompt, "--max-tokens", "40", "--ignore-eos")
        r = self.client.completions.create(model="tiny-reasoner", prompt=prompt, max_tokens=40,
                                           extra_body={"ignore_eos": True, "return_token_ids": True})
        self.assertEqual(r.choices[0].text, ref["text"])
        self.assertEqual(r.choices[0].model_extra["token_ids"], ref["tokens"])
        self.assertEqual(r.usage.prompt_tokens, len(ref["prompt_tokens"]))
        text = "".join(c.choices[0].text for c in self.client.completions.create(
            model="tiny-reasoner", prompt=prompt, max_tokens=40, stream=True, extra_body={"ignore_eos": True}))
        self.assertEqual(text, ref["text"])
        # a prompt of token ids, as generate --prompt-ids
        ids = ref["prompt_tokens"]
        r = self.client.completions.create(model="tiny-reasoner", prompt=ids, max_tokens=40,
                                           extra_body={"ignore_eos": True, "return_token_ids": True})
        self.assertEqual(r.choices[0].model_extra["token_ids"], ref["tokens"])

    def test_raw_http_stream(self):
        """Raw SSE: every event is JSON, first has role, then a finish chunk, usage, and [DONE] last."""
        q = problems(1, "walk")[0]
        ref = generate("--chat", "--prompt", q, "--max-tokens", "30")
        c = self.srv.conn()
        c.request("POST", CHAT, body=json.dumps(chat_body(q, 30, stream=True, stream_options={"include_usage": True})),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        self.assertTrue(r.getheader("Content-Type").startswith("text/event-stream"))
        events = list(sse_events(r))
        c.close()
        self.assertEqual(events[-1], "[DONE]")
        objs = [json.loads(e) for e in events[:-1]]
        self.assertEqual(objs[0]["choices"][0]["delta"]["role"], "assistant")
        self.assertEqual(objs[-2]["choices"][0]["finish_reason"], "length")
        self.assertEqual(objs[-1]["choices"], [])
        self.assertEqual(objs[-1]["usage"]["completion_tokens"], 30)
        text = "".join(o["choices"][0]["delta"].get("reasoning_content", "") + o["choices"][0]["delta"].get("content", "")
                       for o in objs if o["choices"])
        # the split drops the <think> tag and newlines around it
        self.assertEqual(text.replace("\n", ""), ref["text"].replace("<think>", "").replace("\n", ""))

    def test_stop_strings(self):
        q = problems(1, "sum")[0]
        ref = generate("--chat", "--prompt", q, "--max-tokens", "60")["text"]
        stop = ref[20:24]
        cut = ref[:ref.index(stop)]
        for stream in (False, True):
            with self.subTest(stream=stream):
                body = chat_body(q, 60, stop=[stop, "zzzz"], stream=stream)
                if not stream:
                    st, _, b = self.srv.post(CHAT, body)
                    self.assertEqual(st, 200, b)
                    m = b["choices"][0]["message"]
                    got = (m.get("reasoning_content") or "") + m["content"]
                    self.assertEqual(b["choices"][0]["finish_reason"], "stop")
                else:
                    got = ""
                    for ch in self.client.chat.completions.create(model="tiny-reasoner", messages=body["messages"],
                                                                  max_tokens=60, stop=[stop, "zzzz"], stream=True):
                        d = ch.choices[0].delta
                        got += ((d.model_extra or {}).get("reasoning_content") or "") + (d.content or "")
                self.assertEqual(got.replace("\n", ""), cut.replace("<think>", "").replace("\n", ""))

    def test_stop_and_end_order_under_concurrency(self):
        """The text, the end and the usage of a request reach the client in order, also while other requests
        run: a stop string that ends exactly at max_tokens (the engine ends it by length in the same step),
        one that ends mid-way (the engine makes one more token before it is cancelled: not delivered), and
        none; each streamed answer equals the whole answer of the same request and the reference."""
        n = 24
        cases = []  # (prompt, stop or None, expected text, expected finish, expected completion tokens)
        for p in problems(4, "walk") + problems(4, "sum"):
            full = generate("--prompt", p, "--max-tokens", str(n), "--ignore-eos")["text"]
            cases.append((p, None, full, "length", n))
            for k in (n, n // 2):
                text = generate("--prompt", p, "--max-tokens", str(k), "--ignore-eos")["text"] if k < n else full
                self.assertTrue(full.startswith(text))
                # the shortest suffix of the first k tokens' text that occurs nowhere before: the stop string
                # is complete at token k and not earlier
                suffix = next((text[-m:] for m in range(2, 9) if text.find(text[-m:]) == len(text) - m), None)
                if suffix:
                    cases.append((p, suffix, text[:-len(suffix)], "stop", k))
        self.assertGreaterEqual(sum(c[1] is not None for c in cases), 8)

        def one(case, stream):
            p, stop, _, _, _ = case
            body = {"model": "tiny-reasoner", "prompt": p, "max_tokens": n, "ignore_eos": True}
            if stop:
                body["stop"] = [stop]
            if not stream:
                st, _, b = self.srv.post(CMPL, body)
                assert st == 200, b
                return b["choices"][0]["text"], b["choices"][0]["finish_reason"], b["usage"]["completion_tokens"]
            body.update(stream=True, stream_options={"include_usage": True})
            c = self.srv.conn()
            c.request("POST", CMPL, body=json.dumps(body), headers={"Content-Type": "application/json"})
            objs = [json.loads(e) for e in sse_events(c.getresponse()) if e != "[DONE]"]
            c.close()
            text = "".join(o["choices"][0]["text"] for o in objs if o["choices"])
            finish = [o["choices"][0]["finish_reason"] for o in objs if o["choices"] and o["choices"][0]["finish_reason"]]
            return text, finish, objs[-1]["usage"]["completion_tokens"]

        work = [(c, stream) for c in cases for stream in (False, True)]
        with concurrent.futures.ThreadPoolExecutor(len(work)) as ex:
            got = list(ex.map(lambda w: one(*w), work))
        for (case, stream), (text, finish, tokens) in zip(work, got):
            with self.subTest(prompt=case[0][:20], stop=case[1], stream=stream):
                self.assertEqual(text, case[2])
                self.assertEqual(finish, [case[3]] if stream else case[3])  # one finish chunk, after all the text
                self.assertEqual(tokens, case[4])

    def test_concurrent_clients(self):
        """32 clients at once, different prompts, policies, budgets, lengths: each as generate alone."""
        qs = problems(11, "sum") + problems(11, "walk") + problems(10, "path")
        policies = [("full", None), ("longflow", 64), ("streaming", 48), ("tova", 80), ("h2o", 64), ("vatp", 96)]
        jobs = []
        for i, q in enumerate(qs):
            pol, budget = policies[i % len(policies)]
            n = 12 + (i * 7) % 20
            jobs.append((q, pol, budget, n, i % 3 == 0))
        refs = []
        for q, pol, budget, n, _ in jobs:
            extra = ["--policy", pol] + (["--budget", str(budget)] if budget else [])
            refs.append(generate("--chat", "--prompt", q, "--max-tokens", str(n), "--ignore-eos", *extra))

        def one(job):
            q, pol, budget, n, stream = job
            body = chat_body(q, n, ignore_eos=True, kv_policy=pol, return_token_ids=True)
            if budget:
                body["kv_budget"] = budget
            if not stream:
                st, _, b = self.srv.post(CHAT, body)
                assert st == 200, b
                return b["choices"][0]["token_ids"], b["usage"]
            body.update(stream=True, stream_options={"include_usage": True})
            c = self.srv.conn()
            c.request("POST", CHAT, body=json.dumps(body), headers={"Content-Type": "application/json"})
            r = c.getresponse()
            objs = [json.loads(e) for e in sse_events(r) if e != "[DONE]"]
            c.close()
            return None, objs[-1]["usage"]

        with concurrent.futures.ThreadPoolExecutor(32) as ex:
            results = list(ex.map(one, jobs))
        for (ids, usage), ref, job in zip(results, refs, jobs):
            with self.subTest(policy=job[1], budget=job[2]):
                if ids is not None:
                    self.assertEqual(ids, ref["tokens"])
                self.assertEqual(usage["completion_tokens"], len(ref["tokens"]))
                self.assertEqual(usage["kv"]["policy"], job[1])
                self.assertEqual(usage["kv"]["peak_slots"], ref["stats"]["kv_tokens_peak"])
                if job[2]:
                    self.assertLessEqual(usage["kv"]["peak_slots"], job[2])

    def test_bad_requests(self):
        """Every bad request: its status, an OpenAI error body naming the field, and the server still serves."""
        ok = chat_body("hi", 4)
        long_q = "A1\n" * 1500  # about 4,500 tokens: longer than the context (4,096)
        mid_q = "A1\n" * 1000  # about 3,000 tokens
        cases = [
            (CHAT, b"{not json", 400, None),
            (CHAT, b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', 400, "temperature"),
            (CHAT, b"\xff\xfe{}", 400, None),
            (CHAT, ("[" * 100 + "]" * 100).encode(), 400, None),
            (CHAT, b"[]", 400, None),
            (CHAT, {"max_tokens": 4}, 400, "messages"),
            (CHAT, {"messages": []}, 400, "messages"),
            (CHAT, {"messages": "hello"}, 400, "messages"),
            (CHAT, {"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages"),
            (CHAT, {"messages": [{"role": "user", "content": 5}]}, 400, "messages"),
            (CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "messages"),
            (CHAT, dict(ok, max_tokens=-1), 400, "max_tokens"),
            (CHAT, dict(ok, max_tokens=10**9), 400, "max_tokens"),
            (CHAT, dict(ok, max_tokens="ten"), 400, "max_tokens"),
            (CHAT, dict(ok, max_tokens=1.5), 400, "max_tokens"),
            (CHAT, dict(ok, max_completion_tokens=0), 400, "max_completion_tokens"),
            (CHAT, dict(ok, max_tokens=4095), 400, "max_tokens"),
            (CHAT, chat_body(mid_q, 1500), 400, "max_tokens"),
            (CHAT, chat_body(long_q, 10), 400, "messages"),
            (CHAT, dict(ok, temperature=-1), 400, "temperature"),
            (CHAT, dict(ok, temperature="hot"), 400, "temperature"),
            (CHAT, dict(ok, top_p=0), 400, "top_p"),
            (CHAT, dict(ok, top_p=1e-83), 400, "top_p"),  # > 0 as a double, 0.0f as the sampler keeps it
            (CHAT, dict(ok, min_p=0.99999999999), 400, "min_p"),  # rounds to 1.0f
            (CHAT, dict(ok, repetition_penalty=1e-50), 400, "repetition_penalty"),
            (CHAT, dict(ok, top_k=1.5), 400, "top_k"),
            (CHAT, dict(ok, min_p=1), 400, "min_p"),
            (CHAT, dict(ok, repetition_penalty=0), 400, "repetition_penalty"),
            (CHAT, dict(ok, presence_penalty=0.5), 400, "presence_penalty"),
            (CHAT, dict(ok, frequency_penalty=1), 400, "frequency_penalty"),
            (CHAT, dict(ok, n=2), 400, "n"),
            (CHAT, dict(ok, stream="yes"), 400, "stream"),
            (CHAT, dict(ok, stop=5), 400, "stop"),
            (CHAT, dict(ok, stop=["a", "b", "c", "d", "e"]), 400, "stop"),
            (CHAT, dict(ok, stop=[""]), 400, "stop"),
            (CHAT, dict(ok, logprobs=True), 400, "logprobs"),
            (CHAT, dict(ok, kv_policy="magic"), 400, "kv_policy"),
            (CHAT, dict(ok, kv_policy=3), 400, "kv_policy"),
            (CHAT, dict(ok, kv_policy="longflow"), 400, "kv_budget"),
            (CHAT, dict(ok, kv_budget=64), 400, "kv_budget"),
            (CHAT, dict(ok, kv_policy="longflow", kv_budget=0), 400, "kv_budget"),
            (CHAT, dict(chat_body("A1\n" * 20, 4), kv_policy="longflow", kv_budget=20), 400, "kv_budget"),
            (CHAT, dict(ok, chat_template_kwargs={"enable_thinking": "no"}), 400, "chat_template_kwargs.enable_thinking"),
            (CHAT, dict(ok, chat_template_kwargs=[]), 400, "chat_template_kwargs"),
            (CHAT, dict(ok, stream_options={"include_usage": 1}), 400, "stream_options.include_usage"),
            (CHAT, dict(ok, stream_options=True), 400, "stream_options"),
            (CHAT, dict(ok, model="gpt-4"), 404, "model"),
            (CMPL, {"prompt": 5}, 400, "prompt"),
            (CMPL, {"prompt": ""}, 400, "prompt"),
            (CMPL, {"prompt": [1, -2]}, 400, "prompt"),
            (CMPL, {"prompt": [1, 2.5]}, 400, "prompt"),
            (CMPL, {"prompt": [1, 100000]}, 400, "prompt"),
            (CMPL, {"max_tokens": 3}, 400, "prompt"),
            (CHAT, b"{}" + b" " * (1 << 20), 413, None),
        ]
        for path, body, status, param in cases:
            with self.subTest(body=str(body)[:120]):
                st, _, b = self.srv.request("POST", path, body)
                self.assertEqual(st, status, b[:300])
                err = json.loads(b)["error"]
                self.assertIsInstance(err["message"], str)
                self.assertTrue(err["message"])
                self.assertIn("type", err)
                self.assertIn("code", err)
                self.assertEqual(err["param"], param, err["message"])
                self.assert_serving()
        st, _, _ = self.srv.request("GET", "/v1/nothing")
        self.assertEqual(st, 404)
        st, _, _ = self.srv.request("GET", CHAT)
        self.assertEqual(st, 405)
        # the openai client raises its typed errors
        with self.assertRaises(openai.BadRequestError) as cm:
            self.client.chat.completions.create(model="tiny-reasoner", messages=[], max_tokens=4)
        self.assertEqual(cm.exception.body["param"], "messages")

    def test_policy_rules_as_cli(self):
        """kv_policy/kv_budget are refused with the CLI's --policy/--budget rules and words (every policy of
        `longflow policies` is known; the setting's name is the request field's)."""
        names = [p["name"] for p in json.loads(subprocess.run([BIN, "policies", "--json"], capture_output=True,
                                                              text=True, check=True).stdout)]
        cases = [(["--policy", "magic"], {"kv_policy": "magic"}), (["--policy", "tova"], {"kv_policy": "tova"}),
                 (["--budget", "64"], {"kv_budget": 64})]
        for flags, fields in cases:
            with self.subTest(flags=flags):
                cli = subprocess.run([BIN, "generate", "--model", MODEL, "--prompt", "x", *flags],
                                     capture_output=True, text=True)
                self.assertNotEqual(cli.returncode, 0)
                want = cli.stderr.strip().split(": ", 1)[1]
                want = want.replace("--policy", "kv_policy").replace("--budget", "kv_budget")
                st, _, b = self.srv.post(CHAT, dict(chat_body("A1", 4), **fields))
                self.assertEqual(st, 400, b)
                self.assertEqual(b["error"]["message"], want)
        for name in names:
            fields = {"kv_policy": name} if name == "full" else {"kv_policy": name, "kv_budget": 64}
            st, _, b = self.srv.post(CHAT, dict(chat_body("A1", 4), **fields))
            self.assertEqual(st, 200, (name, b))

    def test_disconnect_frees_slot(self):
        """A client that goes away mid-stream: its sequence is cancelled, its slots freed (/metrics)."""
        before = self.srv.metrics()
        s = socket.create_connection(("127.0.0.1", self.srv.port))
        body = json.dumps(chat_body("A1\nB2", 3000, stream=True, ignore_eos=True)).encode()
        s.sendall(b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        got = b""
        while got.count(b"data: ") < 5:
            got += s.recv(4096)
        m = self.srv.metrics()
        self.assertEqual(m["longflow_running_sequences"], 1)
        self.assertGreater(m["longflow_kv_slots_allocated"], 0)
        s.close()
        t0 = time.time()
        while time.time() - t0 < 10:
            m = self.srv.metrics()
            if m["longflow_running_sequences"] == 0:
                break
            time.sleep(0.02)
        self.assertEqual(m["longflow_running_sequences"], 0)
        self.assertEqual(m["longflow_kv_slots_allocated"], 0)
        self.assertEqual(m[CANCELLED], before[CANCELLED] + 1)
        self.assertLess(m["longflow_generation_tokens_total"] - before["longflow_generation_tokens_total"], 3000)
        self.assert_serving()

    def test_disconnect_whole_answer(self):
        """A client that leaves before its (non-streamed) answer: cancelled as well."""
        before = self.srv.metrics()
        s = socket.create_connection(("127.0.0.1", self.srv.port))
        body = json.dumps(chat_body("A1\nB2", 3000, ignore_eos=True)).encode()
        s.sendall(b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        ttft = "longflow_time_to_first_token_seconds_count"
        t0 = time.time()  # generating: its first token is out (the gauges may still show the last request)
        while time.time() - t0 < 30 and self.srv.metrics()[ttft] == before[ttft]:
            time.sleep(0.01)
        s.close()
        t0 = time.time()
        while time.time() - t0 < 30:
            m = self.srv.metrics()
            if m[CANCELLED] > before[CANCELLED]:
                break
            time.sleep(0.02)
        self.assertEqual(m[CANCELLED], before[CANCELLED] + 1)
        self.assertEqual(m["longflow_kv_slots_allocated"], 0)
        self.assertLess(m["longflow_generation_tokens_total"] - before["longflow_generation_tokens_total"], 3000)
        self.assert_serving()


class Overload(unittest.TestCase):
    def test_queue_full_429_fast(self):
        """1 running + 1 queued: the third request gets 429 with Retry-After at once; the others complete."""
        srv = Server("--max-seqs", "1", "--max-queue", "1")
        try:
            n = 800 if not SANITIZED else 300
            results = []

            def long_req():
                results.append(srv.post(CHAT, chat_body("A1\nB2", n, ignore_eos=True)))

            ts = [threading.Thread(target=long_req) for _ in range(2)]
            for t in ts:
                t.start()
            t0 = time.time()
            while time.time() - t0 < 10:  # both arrived: one running, one queued
                m = srv.metrics()
                if m["longflow_queued_sequences"] == 1:
                    break
                time.sleep(0.01)
            self.assertEqual((m["longflow_running_sequences"], m["longflow_queued_sequences"]), (1, 1))
            t0 = time.time()
            st, h, b = srv.post(CHAT, chat_body("A1", 4))
            dt = time.time() - t0
            self.assertEqual(st, 429)
            self.assertEqual(h.get("retry-after"), "1")
            self.assertEqual(b["error"]["type"], "rate_limit_error")
            self.assertLess(dt, 0.1)
            for t in ts:
                t.join()
            self.assertEqual([r[0] for r in results], [200, 200])
            self.assertEqual([r[2]["usage"]["completion_tokens"] for r in results], [n, n])
            self.assertEqual(srv.metrics()['longflow_requests_total{status="429_503"}'], 1)
        finally:
            rc, err = srv.stop()
        self.assertEqual(rc, 0, err)


class KvBuffers(unittest.TestCase):
    def test_short_requests_reuse_kv_buffers(self):
        """Many short requests, two at a time on 2 places: after the first ones, every request's KV cache takes a
        finished request's buffer (the engine's free list, at most --max-seqs buffers), and the answers are
        still those of `longflow generate`."""
        srv = Server("--max-seqs", "2")
        try:
            qs = [f"Add up these 2 numbers.\nA{k % 9 + 1}\nB{(3 * k) % 9 + 1}" for k in range(24)]
            with concurrent.futures.ThreadPoolExecutor(2) as ex:
                got = list(ex.map(lambda q: srv.post(CHAT, chat_body(q, 6, return_token_ids=True)), qs))
            self.assertEqual([g[0] for g in got], [200] * len(qs))
            for q, g in list(zip(qs, got))[::6]:
                ref = generate("--chat", "--prompt", q, "--max-tokens", "6")
                self.assertEqual(g[2]["choices"][0]["token_ids"], ref["tokens"], q)
            m = srv.metrics()
            self.assertEqual(m["longflow_max_sequences"], 2)
            alloc, reused = m["longflow_kv_buffers_allocated_total"], m["longflow_kv_buffers_reused_total"]
            self.assertGreaterEqual(alloc, 1)
            self.assertLessEqual(alloc, 2)
            self.assertEqual(alloc + reused, len(qs))
        finally:
            rc, err = srv.stop()
        self.assertEqual(rc, 0, err)


class ManyConnections(unittest.TestCase):
    def test_more_connections_than_select_takes(self):
        """1,100 clients connected at once (more than select(2)'s 1,024 descriptors and the old fixed limit):
        every one is answered."""
        n = 1100
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < n + 200:
            self.skipTest(f"the open-file limit ({hard}) is below {n + 200}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        srv = Server("--max-seqs", "32", "--max-queue", str(n))
        socks = []
        try:
            body = json.dumps({"prompt": "A1", "max_tokens": 2, "ignore_eos": True}).encode()
            req = (b"POST " + CMPL.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: "
                   b"application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=300)
                s.sendall(req)
                socks.append(s)
            answers = []
            for s in socks:
                got = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                answers.append(got)
            ok = [a for a in answers if a.startswith(b"HTTP/1.1 200") and b'"completion_tokens":2' in a]
            self.assertEqual(len(ok), n, [a[:120] for a in answers if a not in ok][:3])
            m = srv.metrics()
            self.assertEqual(m['longflow_requests_total{status="200"}'], n)
        finally:
            for s in socks:
                s.close()
            rc, err = srv.stop()
        self.assertEqual(rc, 0, err)


class ApiKey(unittest.TestCase):
    def test_api_key(self):
        srv = Server("--api-key", "s3cret-key")
        try:
            st, h, b = srv.post(CHAT, chat_body("A1", 4))
            self.assertEqual(st, 401)
            self.assertEqual(b["error"]["type"], "authentication_error")
            for bad in ("Bearer s3cret-kez", "Bearer s3cret-key2", "Bearer ", "s3cret-key", "Basic s3cret-key"):
                st, _, _ = srv.post(CHAT, chat_body("A1", 4), headers={"Authorization": bad})
                self.assertEqual(st, 401, bad)
            st, _, _ = srv.request("GET", "/metrics")
            self.assertEqual(st, 401)
            st, _, _ = srv.request("GET", "/v1/models")
            self.assertEqual(st, 401)
            st, _, _ = srv.request("GET", "/health")
            self.assertEqual(st, 200)
            good = openai.OpenAI(base_url=srv.base_url, api_key="s3cret-key", max_retries=0)
            self.assertEqual(good.chat.completions.create(model="tiny-reasoner", max_tokens=4,
                                                          messages=[{"role": "user", "content": "A1"}]
                                                          ).usage.completion_tokens, 4)
            with self.assertRaises(openai.AuthenticationError):
                openai.OpenAI(base_url=srv.base_url, api_key="nope", max_retries=0).models.list()
        finally:
            srv.stop()
        # the key from the environment
        srv = Server(env={"LONGFLOW_API_KEY": "from-env"})
        try:
            self.assertEqual(srv.request("GET", "/v1/models")[0], 401)
            self.assertEqual(srv.request("GET", "/v1/models", headers={"Authorization": "Bearer from-env"})[0], 200)
        finally:
            srv.stop()


class Shutdown(unittest.TestCase):
    def test_sigterm_with_requests_in_flight(self):
        """SIGTERM: a short request finishes normally, a long one is cut at the deadline with an error event,
        new connections are refused, the process exits 0."""
        srv = Server("--max-seqs", "2", "--shutdown-timeout", "2")
        out = {}

        def short():
            out["short"] = srv.post(CHAT, chat_body("A1\nB2", 60 if not SANITIZED else 20, ignore_eos=True))

        def long_stream():
            c = srv.conn()
            c.request("POST", CHAT, body=json.dumps(chat_body("A1", 4000, stream=True, ignore_eos=True)),
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            out["long"] = list(sse_events(r))
            c.close()

        tl = threading.Thread(target=long_stream)
        tl.start()
        time.sleep(0.3)
        ts = threading.Thread(target=short)
        ts.start()
        time.sleep(0.05)
        srv.signal_stop(signal.SIGTERM)
        ts.join()
        tl.join()
        rc, err = srv.stop()
        self.assertEqual(rc, 0, err)
        self.assertEqual(out["short"][0], 200)
        self.assertEqual(out["short"][2]["choices"][0]["finish_reason"], "length")
        events = out["long"]
        self.assertEqual(events[-1], "[DONE]")
        last = json.loads(events[-2])
        self.assertEqual(last["error"]["code"], "shutting_down")
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
