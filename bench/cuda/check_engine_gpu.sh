#!/usr/bin/env bash
# The engine on the GPU, end to end (run on the device machine from the
# staged binaries, like run_engine.sh; carry .devbin). For each head_dim-64
# fixture of tests/data/models (the CUDA backend runs head_dim 64 or 128) and
# each of its prompts: `generate --device cuda --policy full` against the
# transformers greedy tokens in its expected.json (exact unless the reference
# top-2 margin at the first difference is a near-tie, <= 0.25), and LongFlow
# at a budget that evicts (prompt + 8 slots), cuda against the CPU engine with
# an fp32 cache (the count of equal leading tokens is reported, not
# asserted: bf16 against fp32 scores can pick different slots). One line per
# check; exits non-zero when an exact check fails.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
. bench/cuda/devbin_env.sh
python3 - "$PROG/longflow" ${LF_ENGINE_FIXTURES:-qwen3_hd64 llama_hd64_gqa4} <<'PY'
import json, subprocess, sys
binary, names = sys.argv[1], sys.argv[2:]
failed = False

def gen(model, ids, n, device, policy):
    extra = ["--kv-dtype", "fp32", "--threads", "4"] if device == "cpu" else []
    r = subprocess.run([binary, "generate", "--model", model, "--device", device, "--prompt-ids", ids,
                        "--max-tokens", str(n), "--ignore-eos", "--json", *policy, *extra],
                       capture_output=True, text=True)
    if r.returncode:
        print(f"FAIL {model} {device} {' '.join(policy)}: {r.stderr.strip()[-300:]}")
        return None
    return json.loads(r.stdout)["tokens"]

def lead(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))

for name in names:
    model = f"tests/data/models/{name}"
    ref = json.load(open(f"{model}/expected.json"))
    for p in ref["prompts"]:
        ids, n = ",".join(map(str, p["prompt"])), len(p["tokens"])
        got = gen(model, ids, n, "cuda", ["--policy", "full"])
        if got is None:
            failed = True
        else:
            k = lead(got, p["tokens"])
            ok = k == n or p["margins"][k] <= 0.25
            failed |= not ok
            print(f"{'PASS' if ok else 'FAIL'} {name} {p['name']}: cuda full = transformers for {k}/{n} tokens"
                  + ("" if k == n else f" (reference top-2 margin there {p['margins'][k]:.3f})"))
        lf = ["--policy", "longflow", "--budget", str(len(p["prompt"]) + 8)]
        a, b = gen(model, ids, n, "cuda", lf), gen(model, ids, n, "cpu", lf)
        if a is None or b is None:
            failed = True
        else:
            print(f"INFO {name} {p['name']}: longflow budget {len(p['prompt']) + 8}, cuda = cpu for {lead(a, b)}/{n} tokens")
sys.exit(1 if failed else 0)
PY
