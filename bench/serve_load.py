#!/usr/bin/env python3
"""Load generator for `longflow serve`: N concurrent streaming requests with
fixed prompt and output lengths, reporting output tokens/s, time to first
token (TTFT) and inter-token latency (ITL) percentiles as one JSON object.

One command starts the server, runs the load and stops it:

  bench/serve_load.py --concurrency 32 --requests 64 --prompt-len 512 --gen-len 256 \\
      -- --model models/tiny-reasoner --max-seqs 32

Everything after `--` goes to `longflow serve` (a free loopback port is
added). With --url instead, it loads a server that is already running.
Prompts are random token ids (the OpenAI API's prompt-as-ids form of
/v1/completions), so their length is exact whatever the tokenizer; every
request sets ignore_eos, so it generates exactly --gen-len tokens. The client
runs in --procs processes (threads within each) so that it is not the
bottleneck; `--concurrency max` takes the number of sequences the server
runs at once (its `longflow_max_sequences` gauge: --max-seqs, or the GPU
pool's entries) and sends one wave of that many. Its soft open-file limit
is raised to the hard one (the server, its child, raises its own as well:
one descriptor per stream). While the load runs, /metrics is read every
half second: `peak_running` is the most sequences the server ran at once.
TTFT counts from the request's send to its first streamed token,
ITL is the gap between consecutive streamed chunks (one token each unless
the client fell behind; `tpot_ms` is each request's (last - first) / (tokens - 1)).
"""
import argparse
import http.client
import json
import multiprocessing
import os
import random
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_request(host, port, body, headers):
    """(ttft_s, [chunk gaps s], completion_tokens, total_s) of one streamed request."""
    c = http.client.HTTPConnection(host, port, timeout=3600)
    t0 = time.perf_counter()
    c.request("POST", "/v1/completions", body=body, headers=headers)
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:300]!r}")
    first, last, gaps, usage = None, None, [], None
    while True:
        line = r.readline()
        if not line:
            break
        if not line.startswith(b"data: "):
            continue
        if line.startswith(b"data: [DONE]"):
            break
        now = time.perf_counter()
        if b'"usage"' in line:  # the usage chunk; a token whose text is "usage" also matches
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
                continue
        if b'"text":""' in line:  # a chunk without text (the end, or bytes held for a whole character)
            continue
        if first is None:
            first = now
        else:
            gaps.append(now - last)
        last = now
    c.close()
    if usage is None or first is None:
        raise RuntimeError("stream ended without text or usage")
    return first - t0, gaps, usage["completion_tokens"], last - t0


def worker(args):
    """One client process: `threads` threads, each sending its share of requests back to back."""
    host, port, n_threads, n_requests, prompt_len, gen_len, id_lo, id_hi, extra, key, seed = args
    rng = random.Random(seed)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    bodies = []
    for _ in range(n_requests):
        b = {"prompt": [rng.randrange(id_lo, id_hi) for _ in range(prompt_len)], "max_tokens": gen_len,
             "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
        b.update(extra)
        bodies.append(json.dumps(b))
    out, lock, errors = [], threading.Lock(), []

    def run(idx):
        for i in range(idx, n_requests, n_threads):
            try:
                res = one_request(host, port, bodies[i], headers)
            except Exception as e:  # noqa: BLE001 (reported, not hidden)
                errors.append(str(e))
                continue
            with lock:
                out.append(res)

    ts = [threading.Thread(target=run, args=(k,)) for k in range(min(n_threads, n_requests))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out, errors


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(p / 100 * (len(xs) - 1)))))
    return xs[k]


def raise_fd_limit():
    """Soft open-file limit up to the hard one (one socket per stream, here and in the server)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def drain(stream, keep):
    """Read the server's stderr as it comes (a pipe nobody reads would block the server), keeping the tail."""
    for line in stream:
        keep.append(line)
        del keep[:-200]


def start_server(bin_path, serve_args):
    port = free_port()
    p = subprocess.Popen([bin_path, "serve", "--port", str(port), *serve_args], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    p.log = []
    threading.Thread(target=drain, args=(p.stderr, p.log), daemon=True).start()
    deadline = time.time() + 1800
    while time.time() < deadline:
        if p.poll() is not None:
            time.sleep(0.2)
            sys.exit(f"serve_load: longflow serve exited {p.returncode}: {''.join(p.log)}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return p, port
        except OSError:
            pass
        time.sleep(0.2)
    p.kill()
    sys.exit("serve_load: the server did not become ready")


def get_metrics(host, port, key):
    """/metrics as {name{labels}: value}, or None when it cannot be read."""
    try:
        c = http.client.HTTPConnection(host, port, timeout=10)
        c.request("GET", "/metrics", headers={"Authorization": f"Bearer {key}"} if key else {})
        text = c.getresponse().read().decode()
        c.close()
    except OSError:
        return None
    return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln and not ln.startswith("#")}


def watch_running(host, port, key, stop, peak):
    """The most sequences /metrics showed running at once, until stop is set."""
    while not stop.wait(0.5):
        m = get_metrics(host, port, key)
        if m:
            peak[0] = max(peak[0], int(m.get("longflow_running_sequences", 0)))


def main():
    argv = sys.argv[1:]
    serve_args = []
    if "--" in argv:
        k = argv.index("--")
        argv, serve_args = argv[:k], argv[k + 1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running server (http://host:port) instead of starting one")
    ap.add_argument("--bin", default=os.path.join(SRC, "build", "longflow"))
    ap.add_argument("--concurrency", default="8",
                    help="requests in flight at once, or `max`: as many as the server runs at once")
    ap.add_argument("--requests", type=int, default=0, help="requests in all (default: --concurrency)")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--gen-len", type=int, default=128)
    ap.add_argument("--id-range", default="10,400", help="token ids of the random prompts: LO,HI")
    ap.add_argument("--kv-policy", help="per-request kv_policy (default: the server's)")
    ap.add_argument("--kv-budget", type=int, help="per-request kv_budget")
    ap.add_argument("--procs", type=int, default=min(8, os.cpu_count() or 1), help="client processes")
    ap.add_argument("--api-key", default=os.environ.get("LONGFLOW_API_KEY"))
    ap.add_argument("--output", help="also write the JSON here")
    a = ap.parse_args(argv)
    fd_limit = raise_fd_limit()
    id_lo, id_hi = map(int, a.id_range.split(","))
    extra = {}
    if a.kv_policy:
        extra["kv_policy"] = a.kv_policy
    if a.kv_budget:
        extra["kv_budget"] = a.kv_budget

    proc = None
    if a.url:
        u = urllib.parse.urlparse(a.url)
        host, port = u.hostname, u.port or 80
    else:
        proc, port = start_server(a.bin, serve_args)
        host = "127.0.0.1"
    max_seqs = int((get_metrics(host, port, a.api_key) or {}).get("longflow_max_sequences", 0))
    if a.concurrency == "max":
        if max_seqs < 1:
            sys.exit("serve_load: --concurrency max: the server's /metrics has no longflow_max_sequences")
        a.concurrency = max_seqs
    a.concurrency = int(a.concurrency)
    n_req = a.requests or a.concurrency
    if a.concurrency // max(1, min(a.procs, a.concurrency)) + 16 > fd_limit:
        print(f"serve_load: warning: {a.concurrency} streams in {a.procs} processes exceed the open-file limit "
              f"{fd_limit}", file=sys.stderr)
    procs = max(1, min(a.procs, a.concurrency))
    jobs = []
    for k in range(procs):
        th = a.concurrency // procs + (k < a.concurrency % procs)
        nr = n_req // procs + (k < n_req % procs)
        jobs.append((host, port, th, nr, a.prompt_len, a.gen_len, id_lo, id_hi, extra, a.api_key, 1000 + k))
    stop, peak = threading.Event(), [0]
    # spawned, not forked: this process already runs threads (the server's log, the watcher)
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        watcher = threading.Thread(target=watch_running, args=(host, port, a.api_key, stop, peak), daemon=True)
        watcher.start()
        t0 = time.perf_counter()
        parts = pool.map(worker, jobs)
        wall = time.perf_counter() - t0
    stop.set()
    watcher.join()
    metrics = get_metrics(host, port, a.api_key)
    if proc:
        proc.terminate()
        proc.wait(timeout=120)
    res = [r for p in parts for r in p[0]]
    errors = [e for p in parts for e in p[1]]
    ttft = [r[0] * 1e3 for r in res]
    itl = [g * 1e3 for r in res for g in r[1]]
    tpot = [(r[3] - r[0]) * 1e3 / (r[2] - 1) for r in res if r[2] > 1]
    tokens = sum(r[2] for r in res)
    out = {
        "requests": n_req, "completed": len(res), "errors": len(errors), "first_errors": errors[:3],
        "concurrency": a.concurrency, "server_max_sequences": max_seqs, "peak_running": peak[0],
        "client_procs": procs, "fd_limit": fd_limit, "prompt_len": a.prompt_len, "gen_len": a.gen_len,
        "kv_policy": a.kv_policy, "kv_budget": a.kv_budget, "serve_args": serve_args,
        "wall_s": round(wall, 3), "output_tokens": tokens, "output_tok_s": round(tokens / wall, 1),
        "ttft_ms": {f"p{p}": round(pct(ttft, p), 2) for p in (50, 90, 99)} if ttft else None,
        "itl_ms": {f"p{p}": round(pct(itl, p), 3) for p in (50, 90, 99)} if itl else None,
        "tpot_ms": {f"p{p}": round(pct(tpot, p), 3) for p in (50, 90, 99)} if tpot else None,
        "server_generated_tokens": metrics and metrics.get("longflow_generation_tokens_total"),
    }
    # the server's own host time: the scheduler's (outside the engine's step) and the
    # delivery thread's (decode, append, stop scan, wake), per scheduler step
    m = metrics or {}
    steps = m.get("longflow_scheduler_steps_total")
    for name in ("scheduler", "delivery"):
        sec = m.get(f"longflow_{name}_host_seconds_total")
        out[f"{name}_host_s"] = sec
        out[f"{name}_host_ms_per_step"] = round(sec * 1e3 / steps, 4) if sec is not None and steps else None
    out["scheduler_steps"] = steps
    s = json.dumps(out, indent=1)
    print(s)
    if a.output:
        with open(a.output, "w") as f:
            f.write(s + "\n")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
