#!/usr/bin/env python3
"""A bounded soak of `longflow serve` on loopback: 8 clients send a random
mix of valid requests (chat and completions, streaming or not, random
policies and budgets), invalid ones and streams they abandon mid-way, for
LF_SOAK_S seconds (default 60; 20 under the sanitizers), then stop.
Checks: the server never crashes, never refuses a valid request, its
resident memory is flat after warm-up, and /metrics agrees with what the
clients saw (requests by status, cancellations, nothing left running)."""
import json
import os
import random
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import SANITIZED, Server, problems, sse_events  # noqa: E402

CHAT = "/v1/chat/completions"
SOAK_S = float(os.environ.get("LF_SOAK_S", "20" if SANITIZED else "60"))
CLIENTS = 8
POLICIES = [("full", None), ("longflow", 64), ("streaming", 40), ("tova", 72), ("h2o", 64), ("vatp", 48)]
INVALID = [b"{oops", b'{"messages": []}', b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": -4}',
           b'{"messages": [{"role": "user", "content": "x"}], "kv_policy": "nope"}',
           b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', b"\xc3\x28",
           b'{"prompt": 3}', b"[" * 50 + b"]" * 50]


class Soak(unittest.TestCase):
    def test_soak(self):
        srv = Server("--max-seqs", "4", "--max-queue", "256")
        qs = problems(20, "sum") + problems(20, "walk")
        lock = threading.Lock()
        seen = {"200": 0, "400": 0, "cancelled": 0, "valid_failures": [], "tokens": 0}
        stop_at = time.time() + SOAK_S

        def count(key, n=1):
            with lock:
                seen[key] += n

        def valid(rng):
            q = rng.choice(qs)
            pol, budget = rng.choice(POLICIES)
            body = {"messages": [{"role": "user", "content": q}], "max_tokens": rng.randint(1, 24),
                    "kv_policy": pol, "temperature": rng.choice([0, 0.7]), "seed": rng.randint(0, 99)}
            if budget:
                body["kv_budget"] = budget
            if rng.random() < 0.3:
                body = {"prompt": q, "max_tokens": body["max_tokens"]}
            path = CHAT if "messages" in body else "/v1/completions"
            if rng.random() < 0.5:
                st, _, b = srv.post(path, body)
                if st != 200:
                    seen["valid_failures"].append((st, b))
                    return
                count("200")
                count("tokens", b["usage"]["completion_tokens"])
            else:
                body.update(stream=True, stream_options={"include_usage": True})
                c = srv.conn()
                c.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
                r = c.getresponse()
                if r.status != 200:
                    seen["valid_failures"].append((r.status, r.read()))
                    return
                events = list(sse_events(r))
                c.close()
                count("200")
                if events[-1] != "[DONE]":
                    seen["valid_failures"].append(("stream", events[-3:]))
                    return
                count("tokens", json.loads(events[-2])["usage"]["completion_tokens"])

        def abandon():
            """A stream that can only end by cancellation: read a few events, then hang up."""
            s = socket.create_connection(("127.0.0.1", srv.port))
            body = json.dumps({"messages": [{"role": "user", "content": "A1"}], "max_tokens": 3000,
                               "ignore_eos": True, "stream": True}).encode()
            s.sendall(b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            got = b""
            while got.count(b"data: ") < 3:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
            s.close()
            count("200")
            count("cancelled")

        def invalid(rng):
            st, _, b = srv.request("POST", CHAT, rng.choice(INVALID))
            if st != 400 or "error" not in json.loads(b):
                seen["valid_failures"].append(("invalid answered", st, b[:200]))
            count("400")

        def client(k):
            rng = random.Random(k)
            while time.time() < stop_at:
                x = rng.random()
                if x < 0.65:
                    valid(rng)
                elif x < 0.85:
                    invalid(rng)
                else:
                    abandon()

        threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
        for t in threads:
            t.start()
        time.sleep(SOAK_S * 0.3)
        rss_warm = srv.rss_kb()
        for t in threads:
            t.join()
        rss_end = srv.rss_kb()
        time.sleep(0.3)
        m = srv.metrics()
        alive = srv.proc.poll() is None
        rc, err = srv.stop()
        self.assertTrue(alive, err)
        self.assertEqual(rc, 0, err)
        self.assertEqual(seen["valid_failures"], [])
        self.assertGreater(seen["200"], 20)
        self.assertEqual(m['longflow_requests_total{status="200"}'], seen["200"])
        self.assertEqual(m['longflow_requests_total{status="400"}'], seen["400"])
        self.assertEqual(m['longflow_requests_total{status="500"}'], 0)
        self.assertEqual(m['longflow_requests_total{status="429_503"}'], 0)
        self.assertEqual(m["longflow_requests_cancelled_total"], seen["cancelled"])
        self.assertEqual(m["longflow_running_sequences"], 0)
        self.assertEqual(m["longflow_queued_sequences"], 0)
        self.assertEqual(m["longflow_kv_slots_allocated"], 0)
        self.assertGreaterEqual(m["longflow_generation_tokens_total"], seen["tokens"])
        self.assertGreaterEqual(m["longflow_time_to_first_token_seconds_count"], seen["200"] - seen["cancelled"])
        print(f"soak {SOAK_S:.0f}s: {seen['200']} answered, {seen['400']} refused, {seen['cancelled']} abandoned, "
              f"{int(m['longflow_generation_tokens_total'])} tokens; RSS {rss_warm} kB after warm-up, {rss_end} kB "
              f"at the end", file=sys.stderr)
        if not SANITIZED:  # ASan's quarantine holds freed memory
            self.assertLess(rss_end, rss_warm * 1.10 + 4096)


if __name__ == "__main__":
    unittest.main(verbosity=2)
