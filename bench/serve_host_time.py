#!/usr/bin/env python3
"""The scheduler's host time per step and per token of `longflow serve`:
start each given build on the bundled model, send N streaming completions
at once (prompt 64 ids, GEN tokens each, ignore_eos), then read
longflow_scheduler_host_seconds_total and longflow_scheduler_steps_total
from /metrics. Builds are run in the order given (alternate them to compare
two on a shared machine).

usage: bench/serve_host_time.py N GEN BINARY [BINARY ...]"""
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
import serve_util  # noqa: E402


def run(binary, n, gen):
    serve_util.BIN = binary
    srv = serve_util.Server("--max-seqs", str(n), "--max-queue", "64")

    def one(k):
        c = srv.conn()
        body = {"prompt": list(range(10 + k, 74 + k)), "max_tokens": gen, "ignore_eos": True, "stream": True}
        c.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
        c.getresponse().read()
        c.close()

    t = time.time()
    threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
    for x in threads:
        x.start()
    for x in threads:
        x.join()
    wall = time.time() - t
    m = srv.metrics()
    srv.stop()
    steps, host = m["longflow_scheduler_steps_total"], m["longflow_scheduler_host_seconds_total"]
    print(f"{binary}: {n} streams x {gen}: wall {wall:.2f} s, {int(steps)} steps, host {host * 1e3:.1f} ms, "
          f"{host / steps * 1e6:.1f} us/step, {host / steps / n * 1e6:.2f} us/token", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    for b in sys.argv[3:]:
        run(os.path.abspath(b), int(sys.argv[1]), int(sys.argv[2]))
