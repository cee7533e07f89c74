#!/usr/bin/env python3
"""Benchmark of the fused CUDA decode kernel (src/cuda/attention.cu) against
torch's scaled_dot_product_attention on the same shapes, in one process.

  python3 bench/cuda/bench_attention.py --lib build-cuda-standalone/liblf_cuda_attention.so \
      [--json out.json] [--quick]

Shapes: fp16, 32 query heads, 8 KV heads, head_dim 128, one query per
sequence, B in {1,16,64,256} x S in {2048,8192}, every slot valid (the cache
is full, as SDPA sees it). Both sides are timed the same way: N calls captured
in one CUDA graph, cycling through enough K/V buffer sets that no call finds
its inputs in L2 (>= 3x the 50 MB L2), graph replayed R times between CUDA
events, median of R / N. Reports time, GB/s on K+V bytes, the ratio to the
fastest SDPA variant, and the victim agreement with a float64 reference
(torch on the GPU), excluding near-ties (reference's two smallest scores
within 1e-6 relative).
"""
import argparse
import ctypes
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F

L2_BYTES = 50 * 2**20
H, HKV, D = 32, 8, 128
MODES = {"none": 0, "longflow": 1, "tova": 2, "h2o": 3, "vatp": 4}
F16, BF16, F32 = 1, 2, 0


class Desc(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int32) for n in (
        "n_seq", "n_heads", "n_kv_heads", "head_dim", "capacity", "dtype", "out_dtype", "mode",
        "n_split", "e_smem", "l2_hints", "launches")]


class Args(ctypes.Structure):
    _fields_ = [
        ("q", ctypes.c_void_p), ("k", ctypes.c_void_p), ("v", ctypes.c_void_p),
        ("kv_seq_stride", ctypes.c_int64),
        ("pos", ctypes.c_void_p), ("slot_seq_stride", ctypes.c_int64),
        ("seq_index", ctypes.c_void_p),
        ("out", ctypes.c_void_p), ("score", ctypes.c_void_p), ("acc", ctypes.c_void_p),
        ("next_slot", ctypes.c_void_p), ("cur_pos", ctypes.c_void_p),
        ("sinks", ctypes.c_int32), ("recent", ctypes.c_int32), ("scale", ctypes.c_float),
        ("workspace", ctypes.c_void_p), ("workspace_bytes", ctypes.c_size_t),
        ("stream", ctypes.c_void_p),
        ("kvh_slots", ctypes.c_int32), ("recent_by_entry", ctypes.c_void_p)]


class Plan(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int32) for n in (
        "n_split", "split_len", "e_smem", "smem_bytes", "blocks", "blocks_per_sm", "launches", "n_chunks",
        "chunk_len")]


class Err(ctypes.Structure):
    _fields_ = [("msg", ctypes.c_char * 1024)]


class Kernel:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.lf_cuda_attn_abi.restype = ctypes.c_int64
        abi = self.lib.lf_cuda_attn_abi()
        want = ctypes.sizeof(Desc) * 65536 + ctypes.sizeof(Args)
        if abi != want:
            sys.exit(f"struct mirror mismatch: library {abi}, python {want}")
        for f in ("lf_cuda_attn_decode", "lf_cuda_attn_workspace_bytes", "lf_cuda_attn_workspace_init",
                  "lf_cuda_attn_get_plan"):
            getattr(self.lib, f).restype = ctypes.c_int

    def _check(self, rc, err):
        if rc != 0:
            raise RuntimeError(err.msg.decode())

    def workspace(self, desc):
        n = ctypes.c_size_t()
        err = Err()
        self._check(self.lib.lf_cuda_attn_workspace_bytes(ctypes.byref(desc), ctypes.byref(n), ctypes.byref(err)), err)
        ws = torch.empty(max(n.value, 256), dtype=torch.uint8, device="cuda")
        self._check(self.lib.lf_cuda_attn_workspace_init(
            ctypes.c_void_p(ws.data_ptr()), ctypes.c_size_t(ws.numel()),
            ctypes.c_void_p(torch.cuda.current_stream().cuda_stream), ctypes.byref(err)), err)
        return ws

    def plan(self, desc):
        p = Plan()
        err = Err()
        self._check(self.lib.lf_cuda_attn_get_plan(ctypes.byref(desc), ctypes.byref(p), ctypes.byref(err)), err)
        return {f: getattr(p, f) for f, _ in Plan._fields_}

    def call(self, desc, args):
        args.stream = torch.cuda.current_stream().cuda_stream
        err = Err()
        self._check(self.lib.lf_cuda_attn_decode(ctypes.byref(desc), ctypes.byref(args), ctypes.byref(err)), err)


def make_desc(B, S, dtype, mode="longflow", n_split=0, e_smem=0, out_dtype=None, hints=0, launches=0):
    return Desc(B, H, HKV, D, S, dtype, dtype if out_dtype is None else out_dtype, MODES[mode], n_split, e_smem,
                hints, launches)


def time_graph(calls, n_per_graph, reps=15):
    """Median time of one call (ms): n_per_graph calls (cycling through
    `calls`) captured in one graph, replayed `reps` times."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for c in calls[:3]:
            c()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(n_per_graph):
            calls[i % len(calls)]()
    g.replay()
    torch.cuda.synchronize()
    t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(reps):
        t0.record()
        g.replay()
        t1.record()
        t1.synchronize()
        ts.append(t0.elapsed_time(t1) / n_per_graph)
    del g
    return statistics.median(ts), (min(ts), max(ts))


def n_calls_for(bytes_kv, target_ms=3.0):
    est_ms = bytes_kv / 3.5e12 * 1e3 + 0.01
    return max(8, min(200, int(target_ms / est_ms)))


def reference_lf(q, k, v, scale):
    """float64 LongFlow scores and attention output for one chunk of sequences.
    q [b,H,D], k,v [b,Hkv,S,D] -> out [b,H,D], score [b,S]"""
    qd, kd, vd = q.double(), k.double(), v.double()
    G = H // HKV
    kr = kd.repeat_interleave(G, dim=1)
    vr = vd.repeat_interleave(G, dim=1)
    logits = torch.einsum("bhd,bhsd->bhs", qd, kr) * scale
    a = torch.softmax(logits, dim=-1)
    out = torch.einsum("bhs,bhsd->bhd", a, vr)
    vn = vd.abs().sum(-1)  # [b,Hkv,S]
    score = (a * vn.repeat_interleave(G, dim=1)).mean(1) / D
    return out, score


def victims_agree(score_ref, next_slot):
    """-> (agree, ties, total); ties: two smallest reference scores within 1e-6 relative."""
    two = torch.topk(score_ref, 2, dim=-1, largest=False)
    ref_idx = torch.argmin(score_ref, dim=-1)  # first index among equal minima
    s1, s2 = two.values[:, 0], two.values[:, 1]
    tie = (s2 - s1) <= 1e-6 * s1.abs()
    agree = (ref_idx == next_slot.long()) & ~tie
    return int(agree.sum()), int(tie.sum()), score_ref.shape[0]


def bench_shape(kern, B, S, dtype_id, args_cli, results):
    tdt = torch.float16 if dtype_id == F16 else torch.bfloat16
    bytes_kv = B * HKV * S * D * 2 * 2
    nbuf = max(2, min(64, math.ceil(3 * L2_BYTES / bytes_kv)))
    free = torch.cuda.mem_get_info()[0]
    while nbuf > 2 and nbuf * bytes_kv > 0.5 * free:
        nbuf -= 1
    torch.manual_seed(1234 + B * 7 + S)
    sets = []
    for _ in range(nbuf):
        q = torch.randn(B, H, D, device="cuda", dtype=tdt)
        k = torch.randn(B, HKV, S, D, device="cuda", dtype=tdt)
        v = torch.randn(B, HKV, S, D, device="cuda", dtype=tdt)
        sets.append((q, k, v))
    pos = torch.arange(S, device="cuda", dtype=torch.int32).repeat(B, 1).contiguous()
    scale = 1.0 / math.sqrt(D)
    ncall = n_calls_for(bytes_kv)
    row = {"B": B, "S": S, "dtype": "f16" if dtype_id == F16 else "bf16", "kv_bytes": bytes_kv, "nbuf": nbuf,
           "calls_per_graph": ncall}

    # ---- SDPA variants (the fastest is the baseline) ----
    sdpa = {}
    from torch.nn.attention import SDPBackend, sdpa_kernel
    variants = [("default_gqa", None, True), ("flash_gqa", SDPBackend.FLASH_ATTENTION, True),
                ("efficient_gqa", SDPBackend.EFFICIENT_ATTENTION, True), ("cudnn_gqa", SDPBackend.CUDNN_ATTENTION, True)]
    if not args_cli.quick and bytes_kv * 4 * 2 < 0.25 * free:
        variants.append(("default_repeated_kv", None, False))
    for name, backend, gqa in variants:
        try:
            if gqa:
                ins = [(q.unsqueeze(2), k, v) for q, k, v in sets]
            else:
                ins = [(q.unsqueeze(2), k.repeat_interleave(H // HKV, 1), v.repeat_interleave(H // HKV, 1))
                       for q, k, v in sets[:2]]

            def mk(t, backend=backend, gqa=gqa):
                def f():
                    if backend is None:
                        F.scaled_dot_product_attention(t[0], t[1], t[2], enable_gqa=gqa)
                    else:
                        with sdpa_kernel(backend):
                            F.scaled_dot_product_attention(t[0], t[1], t[2], enable_gqa=gqa)
                return f
            calls = [mk(t) for t in ins]
            ms, rng = time_graph(calls, ncall)
            sdpa[name] = ms
            del ins
        except Exception as e:  # backend not available for these shapes
            sdpa[name] = None
            row.setdefault("sdpa_errors", {})[name] = str(e).splitlines()[0][:160]
    torch.cuda.empty_cache()
    good = {k: t for k, t in sdpa.items() if t}
    base_name = min(good, key=good.get)
    row["sdpa_ms"] = sdpa
    row["sdpa_best"] = base_name
    base = good[base_name]

    # ---- the fused kernel, several configurations ----
    outs = [torch.empty(B, H, D, device="cuda", dtype=tdt) for _ in sets]
    nxt = torch.empty(B, device="cuda", dtype=torch.int32)
    score = torch.empty(B, S, device="cuda", dtype=torch.float32)
    acc = torch.zeros(B, S, device="cuda", dtype=torch.float32)
    # (name, mode, n_split, e_smem, l2_hints, launches); hints 1 evict_first+discard, 2 evict_first, 3 none
    configs = [("longflow", "longflow", 0, 0, 0, 0), ("attn_only", "none", 0, 0, 0, 0)]
    if not args_cli.quick:
        configs += [("longflow_1L", "longflow", 0, -1, 2, 1), ("longflow_1L_discard", "longflow", 0, -1, 1, 1),
                    ("longflow_2L", "longflow", 0, 0, 2, 2), ("longflow_2L_discard", "longflow", 0, 0, 1, 2),
                    ("longflow_2L_nohints", "longflow", 0, 0, 3, 2), ("attn_only_1L", "none", 0, 0, 2, 1),
                    ("attn_only_nohints", "none", 0, 0, 3, 0), ("tova", "tova", 0, 0, 0, 0), ("h2o", "h2o", 0, 0, 0, 0),
                    ("vatp", "vatp", 0, 0, 0, 0)]
        if B <= 16:
            for ns in (1, 2, 4, 8, 16, 32, 64):
                if ns * 64 <= S:
                    configs.append((f"longflow_2L_split{ns}", "longflow", ns, 0, 2, 2))
            for ns in (8, 16, 32):
                if ns * 64 <= S:
                    configs.append((f"longflow_1L_split{ns}", "longflow", ns, -1, 2, 1))
    fused = {}
    plans = {}
    for name, mode, ns, es, nh, nl in configs:
        desc = make_desc(B, S, dtype_id, mode, ns, es, hints=nh, launches=nl)
        try:
            plan = kern.plan(desc)
        except RuntimeError as e:
            fused[name] = None
            row.setdefault("fused_errors", {})[name] = str(e)
            continue
        if "_split" in name and plan["n_split"] != ns:
            continue
        ws = kern.workspace(desc)
        arglist = []
        for i, (q, k, v) in enumerate(sets):
            a = Args(q.data_ptr(), k.data_ptr(), v.data_ptr(), HKV * S * D, pos.data_ptr(), S, None,
                     outs[i].data_ptr(), score.data_ptr(), acc.data_ptr(), nxt.data_ptr(), None, 0, 0, 0.0,
                     ws.data_ptr(), ws.numel(), 0)
            arglist.append(a)
        calls = [(lambda d=desc, a=a: kern.call(d, a)) for a in arglist]
        ms, rng = time_graph(calls, ncall)
        fused[name] = ms
        plans[name] = plan
        if args_cli.alt is not None and name in ("longflow", "attn_only"):
            alt = args_cli.alt
            ws2 = alt.workspace(desc)
            args2 = []
            for a in arglist:
                a2 = Args.from_buffer_copy(a)
                a2.workspace, a2.workspace_bytes = ws2.data_ptr(), ws2.numel()
                args2.append(a2)
            calls2 = [(lambda d=desc, a=a: alt.call(d, a)) for a in args2]
            fused["alt_" + name], _ = time_graph(calls2, ncall)
            plans["alt_" + name] = alt.plan(desc)
            del ws2
        del ws
    row["fused_ms"] = fused
    row["plans"] = plans

    # ---- correctness of the default configuration on set 0 vs float64 ----
    desc = make_desc(B, S, dtype_id, "longflow")
    ws = kern.workspace(desc)
    q, k, v = sets[0]
    a = Args(q.data_ptr(), k.data_ptr(), v.data_ptr(), HKV * S * D, pos.data_ptr(), S, None,
             outs[0].data_ptr(), score.data_ptr(), acc.data_ptr(), nxt.data_ptr(), None, 0, 0, 0.0,
             ws.data_ptr(), ws.numel(), 0)
    outs[0].fill_(float("nan"))
    score.fill_(float("nan"))
    nxt.fill_(-5)
    kern.call(desc, a)
    torch.cuda.synchronize()
    num = den = 0.0
    agree = ties = tot = 0
    sc_err = 0.0
    chunk = max(1, min(B, int(2e9 // (HKV * S * D * 8 * 2 * 4))))
    for b0 in range(0, B, chunk):
        b1 = min(B, b0 + chunk)
        ro, rs = reference_lf(q[b0:b1], k[b0:b1], v[b0:b1], scale)
        got = outs[0][b0:b1].double()
        num += float(((got - ro) ** 2).sum())
        den += float((ro ** 2).sum())
        sc_err = max(sc_err, float(((score[b0:b1].double() - rs).abs() / rs.abs()).max()))
        ag, ti, n = victims_agree(rs, nxt[b0:b1])
        agree += ag
        ties += ti
        tot += n
        del ro, rs
    row["out_rel_l2"] = math.sqrt(num / den)
    row["score_max_rel_err"] = sc_err
    row["victims"] = {"agree": agree, "ties_excluded": ties, "total": tot}
    row["victim_agreement"] = agree / max(1, tot - ties)

    row["sdpa_GBs"] = bytes_kv / (base * 1e-3) / 1e9
    lf = fused["longflow"]
    row["fused_GBs"] = bytes_kv / (lf * 1e-3) / 1e9
    row["ratio_to_sdpa"] = lf / base
    best_lf = min((t, n) for n, t in fused.items() if t and "longflow" in n)
    row["best_longflow_config"] = best_lf[1]
    row["best_longflow_ms"] = best_lf[0]
    row["best_ratio_to_sdpa"] = best_lf[0] / base
    results.append(row)
    del sets, outs, ws
    torch.cuda.empty_cache()
    return row


def copy_bandwidth():
    x = torch.empty(2 * 2**30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(10):
        t0.record()
        y.copy_(x)
        t1.record()
        t1.synchronize()
        ts.append(t0.elapsed_time(t1))
    ms = statistics.median(ts)
    del x, y
    torch.cuda.empty_cache()
    return 2 * 2 * 2**30 / (ms * 1e-3) / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--json")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--B", default="1,16,64,256")
    ap.add_argument("--S", default="2048,8192")
    ap.add_argument("--bf16", action="store_true", help="also bf16 at B=16 and 64")
    ap.add_argument("--alt-lib", help="a second build (e.g. 2 stages): its default config is timed too")
    args = ap.parse_args()
    kern = Kernel(args.lib)
    args.alt = Kernel(args.alt_lib) if args.alt_lib else None
    dev = torch.cuda.get_device_properties(0)
    meta = {"device": dev.name, "sms": dev.multi_processor_count, "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "copy_GBs_read_plus_write": copy_bandwidth()}
    print(json.dumps(meta), flush=True)
    results = []
    shapes = [(int(b), int(s)) for s in args.S.split(",") for b in args.B.split(",")]
    for B, S in shapes:
        t = time.time()
        try:
            row = bench_shape(kern, B, S, F16, args, results)
        except Exception as e:  # keep the other shapes
            print(f"# B={B} S={S} failed: {e!r}", flush=True)
            torch.cuda.empty_cache()
            continue
        print(json.dumps(row), flush=True)
        print(f"# B={B} S={S} took {time.time() - t:.1f}s", flush=True)
    if args.bf16:
        for B, S in ((16, 2048), (64, 8192)):
            try:
                row = bench_shape(kern, B, S, BF16, args, results)
                print(json.dumps(row), flush=True)
            except Exception as e:
                print(f"# bf16 B={B} S={S} failed: {e!r}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": results}, f, indent=1)
    print(f"\n{meta['device']}  copy {meta['copy_GBs_read_plus_write']:.0f} GB/s (read+write)")
    hdr = ("dtype", "B", "S", "sdpa us", "fused us", "GB/s", "ratio", "1L us", "2L us", "attn us", "bestcfg",
           "ratio*", "victims", "out err")
    print("%-5s %4s %5s %8s %8s %6s %6s %8s %8s %8s %-22s %6s %12s %8s" % hdr)
    for r in results:
        v = r["victims"]
        fm = r["fused_ms"]
        g = lambda k: 1e3 * fm[k] if fm.get(k) else float("nan")
        print("%-5s %4d %5d %8.1f %8.1f %6.0f %6.3f %8.1f %8.1f %8.1f %-22s %6.3f %12s %8.1e" % (
            r["dtype"], r["B"], r["S"], 1e3 * r["sdpa_ms"][r["sdpa_best"]], g("longflow"), r["fused_GBs"],
            r["ratio_to_sdpa"], g("longflow_1L"), g("longflow_2L"), g("attn_only"), r["best_longflow_config"],
            r["best_ratio_to_sdpa"], f"{v['agree']}/{v['total'] - v['ties_excluded']}({v['ties_excluded']}t)",
            r["out_rel_l2"]))


if __name__ == "__main__":
    main()
