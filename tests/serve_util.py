"""Helpers for the `longflow serve` tests: start a server on a free loopback
port, wait until /health says ready, raw HTTP requests, /metrics parsing,
and the `longflow generate` reference runs."""
import http.client
import json
import os
import re
import socket
import subprocess
import tempfile
import time

SRC = os.environ.get("LF_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("LF_BIN", os.path.join(SRC, "build", "longflow"))
MODEL = os.path.join(SRC, "models", "tiny-reasoner")
SANITIZED = os.environ.get("LF_SANITIZED") == "1"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The server tests compare batched requests with `generate` alone token for
# token: with an fp32 KV cache, as the last-bit differences of batched matrix
# products can move a K or V element across a bf16 rounding boundary and,
# now and then, change a greedy token of the tiny model.
KV_DTYPE = ["--kv-dtype", "fp32"]


class Server:
    """A `longflow serve` process on 127.0.0.1:<free port>."""

    def __init__(self, *args, env=None):
        self.port = free_port()
        e = dict(os.environ)
        e.update(env or {})
        # stderr goes to a file: a pipe that nobody reads while the server runs
        # fills up and blocks whichever server thread writes to it next
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([BIN, "serve", "--model", MODEL, "--port", str(self.port), "--threads", "2",
                                      *KV_DTYPE, *args], stdout=subprocess.DEVNULL, stderr=self.log, text=True, env=e)
        deadline = time.time() + (120 if SANITIZED else 30)
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {self.stderr()}")
            try:
                st, _, _ = self.request("GET", "/health")
                if st == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        _, err = self.stop()
        raise AssertionError(f"serve did not become ready: {err}")

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}/v1"

    def conn(self, timeout=120):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=120):
        """(status, headers dict, body bytes) of one request on a new connection."""
        c = self.conn(timeout)
        try:
            h = {"Content-Type": "application/json"}
            h.update(headers or {})
            if body is not None and not isinstance(body, (bytes, str)):
                body = json.dumps(body)
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def post(self, path, body, **kw):
        st, h, b = self.request("POST", path, body, **kw)
        return st, h, (json.loads(b) if b and b[:1] in (b"{", b"[") else b)

    def metrics(self, headers=None):
        st, _, b = self.request("GET", "/metrics", headers=headers)
        assert st == 200, st
        out = {}
        for line in b.decode().splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

    def signal_stop(self, sig):
        self.proc.send_signal(sig)

    def stderr(self):
        """What the server wrote to stderr so far."""
        self.log.seek(0)
        return self.log.read()

    def stop(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if not self.log.closed:
            self.err = self.stderr()
            self.log.close()
        return self.proc.returncode, self.err


def sse_events(resp):
    """The data payloads of an SSE response (http.client response), in order."""
    buf = b""
    while True:
        line = resp.readline()
        if not line:
            return
        line = line.rstrip(b"\r\n")
        if line.startswith(b"data: "):
            yield line[6:].decode()


def generate(*args):
    """`longflow generate ... --json` (the CLI reference)."""
    p = subprocess.run([BIN, "generate", "--model", MODEL, "--json", "--threads", "2", *KV_DTYPE, *args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def problems(n, family="sum"):
    """The first n questions of one of the bundled model's test sets."""
    with open(os.path.join(MODEL, "data", f"{family}.jsonl")) as f:
        return [json.loads(next(f))["question"] for _ in range(n)]
