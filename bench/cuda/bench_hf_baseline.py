#!/usr/bin/env python3
"""What users run today: transformers' decode throughput on a Qwen3-1.7B-shaped
model (random bf16 weights, attn_implementation="sdpa", the default
DynamicCache, a greedy model.forward loop with past_key_values), the baseline
of `longflow bench --device cuda` (docs/cuda.md, "The CUDA engine and the
throughput benchmark").

For each batch size, the cache is grown by a chunked prefill of random tokens
to each sampled length L in turn; at each L, 3 warm-up decode steps, then 10
timed steps (torch.cuda.synchronize around each, wall clock), median. The
average over the paper's setting (prompt 512, 16384 generated tokens) is
integrated the same way as the engine's bench: the sum over the decode steps
(cache lengths 512 .. 512 + 16384 - 2) of the step time interpolated linearly
between the sampled L (flat outside them).

Batch sizes: 1, then 64, 48, 32, 24, 16 in that order until one reaches the
last length (16896 = 512 + 16384) without running out of memory: that is the
largest batch that fits the paper's setting (a batch that runs out of memory
keeps the points it measured).

The shape is read from src/model/config.c's preset table, so it is exactly the
engine's --config qwen3-1.7b. Needs torch with CUDA and transformers 5.x.

  python3 bench/cuda/bench_hf_baseline.py [--json OUT.json] [--batches 1] [--search 64,48,32,24,16]
"""
import argparse
import gc
import json
import os
import re
import statistics
import sys
import time

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_preset(name, path):
    """The fields of one preset row of config.c:
    {name, arch, vocab, hidden, inter, layers, heads, kv, hd, maxpos, eps, theta, tied, ...}"""
    text = open(path).read()
    m = re.search(r'\{\s*"' + re.escape(name) + r'"\s*,([^}]*)', text)
    if not m:
        raise SystemExit(f"{path}: no preset named {name!r}")
    f = [x.strip() for x in m.group(1).split(",")]
    arch = f[0]
    if arch != "LF_ARCH_QWEN3":
        raise SystemExit(f"{path}: preset {name} is {arch}, this baseline builds Qwen3ForCausalLM")
    return dict(vocab_size=int(f[1]), hidden_size=int(f[2]), intermediate_size=int(f[3]),
                num_hidden_layers=int(f[4]), num_attention_heads=int(f[5]), num_key_value_heads=int(f[6]),
                head_dim=int(f[7]), max_position_embeddings=int(f[8]), rms_norm_eps=float(f[9]),
                rope_theta=float(f[10]), tie_word_embeddings=(f[11] == "true"))


def build_model(shape, torch):
    from transformers import Qwen3Config, Qwen3ForCausalLM
    kw = dict(shape)
    theta = kw.pop("rope_theta")
    cfg = Qwen3Config(**kw, attn_implementation="sdpa")
    # transformers 5 keeps rope_theta in rope_parameters; older versions as a field
    if getattr(cfg, "rope_parameters", None) is not None:
        cfg.rope_parameters["rope_theta"] = theta
    else:
        cfg.rope_theta = theta
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = Qwen3ForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    model = model.to(torch.bfloat16).eval()
    return model, cfg


def integrate(points, prompt_len, gen_len):
    """Sum of step times (ms) over the decode steps at cache lengths P .. P+G-2."""
    pts = sorted((p["L"], p["step_ms"]) for p in points)

    def at(L):
        if L <= pts[0][0]:
            return pts[0][1]
        for (l0, t0), (l1, t1) in zip(pts, pts[1:]):
            if L <= l1:
                return t0 + (L - l0) / (l1 - l0) * (t1 - t0)
        return pts[-1][1]

    return sum(at(L) for L in range(prompt_len, prompt_len + gen_len - 1))


def run_batch(model, torch, B, lengths, chunk_tokens, vocab, warm, timed, deadline):
    """Grow a DynamicCache of B sequences to each L, time decode steps there."""
    from transformers import DynamicCache
    gen = torch.Generator(device="cuda").manual_seed(B)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    res = {"batch": B, "points": [], "oom_at": None, "stopped_by_time": False}
    cache = DynamicCache()
    cur = 0
    chunk = max(16, min(2048, chunk_tokens // B))
    tok = None
    try:
        with torch.inference_mode():
            for L in lengths:
                if time.time() > deadline:
                    res["stopped_by_time"] = True
                    break
                t0 = time.time()
                while cur < L:  # chunked prefill of random tokens, no logits
                    n = min(chunk, L - cur)
                    ids = torch.randint(0, vocab, (B, n), device="cuda", generator=gen)
                    model.model(input_ids=ids, past_key_values=cache, use_cache=True)
                    cur += n
                torch.cuda.synchronize()
                prefill_s = time.time() - t0
                if tok is None:
                    tok = torch.randint(0, vocab, (B, 1), device="cuda", generator=gen)
                times = []
                L_at = cur
                for s in range(warm + timed):
                    torch.cuda.synchronize()
                    t = time.perf_counter()
                    out = model(input_ids=tok, past_key_values=cache, use_cache=True)
                    tok = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
                    torch.cuda.synchronize()
                    dt = (time.perf_counter() - t) * 1e3
                    cur += 1
                    del out
                    if s >= warm:
                        times.append(dt)
                ms = statistics.median(times)
                res["points"].append({"L": L_at, "step_ms": ms, "step_ms_min": min(times),
                                      "tok_s": B / (ms / 1e3), "peak_bytes": torch.cuda.max_memory_allocated(),
                                      "prefill_s": prefill_s})
                print(f"  B={B} L={L_at}: {ms:.2f} ms/step, {B / (ms / 1e3):.1f} tok/s, "
                      f"peak {torch.cuda.max_memory_allocated() / 1e9:.1f} GB", file=sys.stderr, flush=True)
    except torch.OutOfMemoryError:
        res["oom_at"] = L
        print(f"  B={B}: out of memory growing the cache to L={L}", file=sys.stderr, flush=True)
    del cache
    gc.collect()
    torch.cuda.empty_cache()
    res["peak_bytes"] = torch.cuda.max_memory_allocated()
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="qwen3-1.7b")
    ap.add_argument("--config-source", default=os.path.join(SRC, "src", "model", "config.c"))
    ap.add_argument("--lengths", default="1024,4096,8192,12288,16896")
    ap.add_argument("--batches", default="1", help="batch sizes always measured")
    ap.add_argument("--search", default="64,48,32,24,16",
                    help="then these, in order, until one reaches the last length")
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--gen-len", type=int, default=16384)
    ap.add_argument("--chunk-tokens", type=int, default=16384, help="tokens per prefill forward (all sequences)")
    ap.add_argument("--warm", type=int, default=3)
    ap.add_argument("--timed", type=int, default=10)
    ap.add_argument("--time-limit", type=float, default=230, help="seconds; no new length is started after it")
    ap.add_argument("--json", help="also write the JSON here")
    a = ap.parse_args()

    import torch
    import transformers
    if not torch.cuda.is_available():
        raise SystemExit("bench_hf_baseline: no CUDA device")
    t_start = time.time()
    deadline = t_start + a.time_limit
    shape = read_preset(a.preset, a.config_source)
    model, cfg = build_model(shape, torch)
    lengths = sorted(int(x) for x in a.lengths.split(","))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{a.preset}: {n_params / 1e9:.2f} B parameters, {torch.cuda.get_device_name()}", file=sys.stderr)

    runs = []
    for B in [int(x) for x in a.batches.split(",") if x]:
        runs.append(run_batch(model, torch, B, lengths, a.chunk_tokens, shape["vocab_size"], a.warm, a.timed,
                              deadline))
    largest = None
    for B in [int(x) for x in a.search.split(",") if x]:
        r = run_batch(model, torch, B, lengths, a.chunk_tokens, shape["vocab_size"], a.warm, a.timed, deadline)
        runs.append(r)
        if r["oom_at"] is None and not r["stopped_by_time"] and len(r["points"]) == len(lengths):
            largest = B
            break
        if r["stopped_by_time"]:
            break
    paper_L = a.prompt_len + a.gen_len
    for r in runs:
        complete = r["oom_at"] is None and len(r["points"]) == len(lengths) and r["points"][-1]["L"] >= lengths[-1]
        r["fits_paper_setting"] = complete and lengths[-1] >= paper_L
        if complete:
            total_ms = integrate(r["points"], a.prompt_len, a.gen_len)
            r["integrated_decode_ms"] = total_ms
            r["avg_tokens_per_s"] = r["batch"] * (a.gen_len - 1) / (total_ms / 1e3)
            r["steady_tokens_per_s"] = r["points"][-1]["tok_s"]
        else:
            r["avg_tokens_per_s"] = None
    best = max((r for r in runs if r.get("avg_tokens_per_s")), key=lambda r: r["avg_tokens_per_s"], default=None)
    out = {
        "baseline": "transformers Qwen3ForCausalLM, sdpa, DynamicCache, greedy model.forward loop",
        "preset": a.preset, "shape": shape, "parameters": n_params,
        "device_name": torch.cuda.get_device_name(), "torch": torch.__version__,
        "transformers": transformers.__version__,
        "prompt_len": a.prompt_len, "gen_len": a.gen_len, "lengths": lengths,
        "method": "step time median of %d after %d warm-ups at each L (cache grown by chunked prefill); average "
                  "integrated over decode steps at L = prompt .. prompt+gen-2, linear between points" % (a.timed, a.warm),
        "runs": runs,
        "largest_batch_fitting": largest,
        "best_avg_tokens_per_s": best["avg_tokens_per_s"] if best else None,
        "best_batch": best["batch"] if best else None,
        "wall_s": time.time() - t_start,
    }
    s = json.dumps(out)
    print(s)
    if a.json:
        with open(a.json, "w") as f:
            f.write(s + "\n")


if __name__ == "__main__":
    main()
