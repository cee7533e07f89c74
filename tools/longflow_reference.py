#!/usr/bin/env python3
"""Independent numpy (float64) reference of LongFlow's slot cache, used to
write the worked examples in tests/data/policies/ that tests/test_policies.c
replays through the C cache (lf_kv_prefill_layer / lf_kv_decode_layer).

The algorithm, from the LongFlow paper (arXiv 2603.11504) and the issue text:

* budget B slots per layer; a prompt of P <= B-1 tokens fills slots 0..P-1;
  a longer one is compressed SnapKV-style: the last w=32 queries attend
  (softmax over the first P-w keys, KV heads repeated for GQA), the weights
  are summed over heads and queries, average-pooled (width 5, zero padding
  counted), and the best B-1-w positions (ties: lower position; the first
  `sinks` positions forced in) are kept in position order, then the window.
* each decode step writes the new K, V into the chosen slot, attends over
  the valid slots, scores every slot by mean_h(alpha_h * |v|_1)/head_dim
  (empty slots 0), and the next slot is the smallest score among the slots
  that may be evicted (lowest index on ties). With --sinks / --recent the
  first N prompt positions / the N newest positions are never evicted; with
  --evict-every K the K smallest are queued every K steps and refilled in
  slot order.

Inputs are random multiples of 1/128 (stored in the JSON as integers with
their "scale", exact in float32, so the C side uses the same numbers); a case is regenerated with the next seed until every victim
choice wins by a relative margin of at least 1e-4, so that the float32
kernel cannot legitimately choose differently.

Usage: tools/longflow_reference.py [--out tests/data/policies]
"""
import argparse
import json
import os

import numpy as np

W = 32      # SnapKV window
POOL = 5    # SnapKV average pool width
MARGIN = 1e-4


SCALE = 1.0 / 128  # inputs are integers times SCALE: exact in float32, short in JSON


def qrand(rng, shape, hi):
    """Random integers in [-hi, hi] (the stored form) and their values."""
    ints = rng.integers(-hi, hi + 1, size=shape)
    return ints, (ints * SCALE).astype(np.float32)


def g9(x):
    return float(f"{x:.9g}")


def snapkv_keep(q, k, keep, sinks, H, G):
    """q [P][H][d], k [P][G][d] -> kept positions (ascending)."""
    P, _, d = q.shape
    m = P - W
    rep = H // G
    raw = np.zeros(m)
    for h in range(H):
        g = h // rep
        for t in range(P - W, P):
            logits = k[:m, g, :] @ q[t, h, :] / np.sqrt(d)
            e = np.exp(logits - logits.max())
            raw += e / e.sum()
    padded = np.concatenate([np.zeros(POOL // 2), raw, np.zeros(POOL // 2)])
    pooled = np.array([padded[i:i + POOL].sum() / POOL for i in range(m)])
    cand = list(range(sinks, m))
    cand.sort(key=lambda i: (-pooled[i], i))
    top = keep - W - sinks
    chosen = sorted(list(range(sinks)) + cand[:top])
    margin = (pooled[cand[top - 1]] - pooled[cand[top]]) / pooled[cand[top - 1]] if len(cand) > top else 1.0
    return chosen + list(range(m, P)), margin


def run_case(seed, H, G, d, B, P, steps, sinks=0, recent=0, every=1):
    rng = np.random.default_rng(seed)
    ipq, pq = qrand(rng, (P, H, d), 128)
    ipk, pk = qrand(rng, (P, G, d), 128)
    ipv, pv = qrand(rng, (P, G, d), 128)
    idq, dq = qrand(rng, (steps, H, d), 256)
    idk, dk = qrand(rng, (steps, G, d), 128)
    idv, dv = qrand(rng, (steps, G, d), 128)
    rep = H // G

    K = np.zeros((G, B, d))
    V = np.zeros((G, B, d))
    pos = np.full(B, -1)
    margins = []
    if P <= B - 1:
        kept = list(range(P))
    else:
        kept, mg = snapkv_keep(pq.astype(np.float64), pk.astype(np.float64), B - 1, sinks, H, G)
        margins.append(mg)
    for s, t in enumerate(kept):
        K[:, s, :] = pk[t]
        V[:, s, :] = pv[t]
        pos[s] = t
    nxt = len(kept)
    slots, outputs, queue = [], [], []
    for step in range(steps):
        pnow = P + step
        slot = nxt
        slots.append(int(slot))
        K[:, slot, :] = dk[step]
        V[:, slot, :] = dv[step]
        pos[slot] = pnow
        valid = pos >= 0
        score = np.zeros(B)
        out = np.zeros((H, d))
        vn = np.abs(V).sum(axis=2)  # [G][B]
        for h in range(H):
            g = h // rep
            logits = K[g] @ dq[step, h].astype(np.float64) / np.sqrt(d)
            logits[~valid] = -np.inf
            e = np.exp(logits - logits[valid].max())
            e[~valid] = 0
            a = e / e.sum()
            out[h] = a @ V[g]
            score += a * vn[g]
        score /= H * d
        outputs.append([g9(x) for x in out.reshape(-1)])
        ok = [(pos[i] < 0) or (pos[i] >= sinks and pos[i] <= pnow - recent) for i in range(B)]
        cand = sorted([i for i in range(B) if ok[i]], key=lambda i: (score[i], i))
        if every == 1:
            nxt = cand[0]
            need = 1
        elif queue:
            nxt = queue.pop(0)
            need = 0
        else:
            queue = sorted(cand[:every])
            nxt = queue.pop(0)
            need = min(every, len(cand))
        # margin: the chosen set must be separated from the rest
        if need and len(cand) > need:
            a, b = score[cand[need - 1]], score[cand[need]]
            if a == b == 0 and pos[cand[need - 1]] < 0:
                margins.append(1.0)  # empty slots: exact zeros, index order decides
            else:
                margins.append((b - a) / max(abs(b), 1e-30))
    case = {
        "n_heads": H, "n_kv_heads": G, "head_dim": d, "budget": B, "prompt_len": P, "steps": steps,
        "sinks": sinks, "recent": recent, "evict_every": every, "seed": seed,
        "scale": SCALE,
        "prompt_q": ipq.reshape(-1).tolist(), "prompt_k": ipk.reshape(-1).tolist(),
        "prompt_v": ipv.reshape(-1).tolist(),
        "decode_q": idq.reshape(-1).tolist(), "decode_k": idk.reshape(-1).tolist(),
        "decode_v": idv.reshape(-1).tolist(),
        "expected_kept_positions": [int(t) for t in kept],
        "expected_slots": slots,
        "expected_next_slot": int(nxt),
        "expected_outputs": outputs,
        "expected_last_scores": [g9(x) for x in score],
    }
    return case, min(margins) if margins else 1.0


CASES = [
    # name, description, kwargs
    ("longflow_short_prompt", "prompt of 10 tokens < B-1: slots fill in order, then eviction starts",
     dict(H=4, G=2, d=8, B=40, P=10, steps=45)),
    ("longflow_exact_budget", "prompt of B-1 = 39 tokens: the first decode token fills the last slot",
     dict(H=4, G=2, d=8, B=40, P=39, steps=30)),
    ("longflow_long_prompt", "prompt of 70 tokens > B-1: SnapKV keeps 7 + the last 32",
     dict(H=4, G=2, d=8, B=40, P=70, steps=30)),
    ("longflow_extensions", "--sinks 3 --recent 4 --evict-every 3 on a compressed prompt",
     dict(H=4, G=1, d=8, B=40, P=60, steps=30, sinks=3, recent=4, every=3)),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "policies"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, desc, kw in CASES:
        seed = 1
        while True:
            case, margin = run_case(seed, **kw)
            if margin >= MARGIN:
                break
            seed += 1
        case["name"] = name
        case["description"] = desc + " (generated by tools/longflow_reference.py)"
        path = os.path.join(args.out, name + ".json")
        with open(path, "w") as f:
            json.dump(case, f, separators=(",", ":"))
            f.write("\n")
        print(f"{path}: seed {seed}, slots {case['expected_slots']}, min margin {margin:.2e}")


if __name__ == "__main__":
    main()
