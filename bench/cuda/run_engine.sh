#!/usr/bin/env bash
# The GPU engine on the device machine, from prebuilt binaries:
#   tools/stage_devbin.sh BUILD_DIR        (here, after a -DLF_CUDA=ON build)
#   PARTS="tests gemm" bench/cuda/run_engine.sh      (on the GPU machine, carrying .devbin)
# Parts (PARTS, space-separated; default all, in this order, but serve):
#   tests    the GPU tests (test_cuda_attention/kernels/gemm/forward/knorm/nonfinite, each with a
#            timeout, continuing on failure) and compute-sanitizer memcheck on
#            test_cuda_kernels (LF_CUDA_TEST_SMALL=1)
#   gemm     bench_cuda_gemm
#   ppl      tests/cuda/test_cuda_perplexity.py: longflow perplexity --device cuda against the CPU
#            (fp32 cache) and transformers' float64 references on the head_dim-64 fixtures
#            (NLL, KL, top-1 of every GPU policy; its "measured" lines go to the summary), then
#            perplexity --gen 1500 --fidelity on the tiny reasoner's demo prompt, every GPU
#            policy at budgets 64/128/256, on cuda (--batch max) and on the CPU (ppl.jsonl)
#   kvdtype  the FP8 KV cache vs bf16: memcheck of the FP8 kernel, bench_cuda_kvdtype (both
#            skipped with LF_KVDTYPE_SKIP=1), and longflow bench --kv-dtype fp8 / bf16 at the
#            paper's setting (LF_KV_POLICIES, default longflow full; LF_KV_CONFIGS, default
#            qwen3-1.7b)
#   serve    longflow serve against longflow bench --mode real at one shape (LF_SERVE_N,
#            LF_SERVE_GEN, LF_SERVE_POLICIES: see the part below); serve_<policy>.json
#   bench    longflow bench --device cuda, qwen3-1.7b, prompt 512, gen 16384,
#            budget 3200, --batch max, sampled: longflow full h2o tova streaming
#   bench8b  the same for qwen3-8b and deepseek-r1-distill-llama-8b: longflow, full
#   bench1   batch 1, full, qwen3-1.7b and qwen3-8b (the weight-bandwidth target)
#   agree    --mode real vs --mode sampled at --gen-len 1024 (qwen3-1.7b; longflow
#            at budget 1024 so that it evicts, and full)
#   pdl      the GPU tests and the batch-1 benches again with LF_CUDA_PDL=1
#   eval     longflow eval --device cuda on the tiny reasoner's three test sets: full, and
#            LF_EVAL_POLICIES at --budget LF_EVAL_BUDGET (eval.jsonl, eval_results.tar.gz)
#   sweep    tools/sweep_accuracy.py --device cuda on all 200 problems per family (gpu_accuracy.md/.json)
#   prefill  prefill tokens/s of longflow, h2o, vatp at prompt 512 / 4096, with and without SnapKV
#   evalpct  the same with per-problem budgets (--budget P%, the CPU sweep's budgets and problems)
#   hf       bench/cuda/bench_hf_baseline.py (transformers, same shape, same H200)
# All parts in one call take more than one call's 10 minutes: split them, e.g.
#   PARTS="tests gemm", PARTS="bench", PARTS="bench8b agree", PARTS="hf".
# Every command has its own timeout, and no new command starts once
# LF_BUDGET_S seconds (default 540) have passed since the script started.
# Files under $OUT (at most 8): run_engine.log (everything, combined), ppl.jsonl (ppl),
# engine_bench.jsonl (one JSON object per throughput run: bench, bench8b),
# engine_agree.jsonl (agree), hf_baseline.json (hf), eval.jsonl and eval_results.tar.gz (eval),
# eval_pct.jsonl and eval_pct_results.tar.gz (evalpct), gpu_accuracy[-DTYPE].md/.json (sweep),
# summary.txt.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
OUTD=${OUT:-/tmp/lf-out}
mkdir -p "$OUTD"
BIN=${LF_DEVBIN:-$ROOT/.devbin}
PARTS=${PARTS:-"tests gemm bench bench8b agree hf"}
BUDGET_S=${LF_BUDGET_S:-540}
LOG="$OUTD/run_engine.log"
SUMMARY="$OUTD/summary.txt"
ORIG_LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
# our programs find the staged libraries first (python/torch keeps the original path, see hf)
export LD_LIBRARY_PATH="$BIN/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LF_SOURCE_DIR="$ROOT" LF_TEST_DATA="$ROOT/tests/data" LF_SHARED_DIR="$ROOT/../shared"
export PYTHONUNBUFFERED=1
T0=$(date +%s)
: > "$SUMMARY"
: > "$LOG"

log() { echo "$*" | tee -a "$LOG"; }
sum() { echo "$*" | tee -a "$SUMMARY" >> "$LOG"; }
left() { echo $((BUDGET_S - ($(date +%s) - T0))); }
# run NAME TIMEOUT CMD...: output appended to the log (stdout to $RUN_STDOUT
# instead when set, then copied to the log); the status line to the summary
run() {
  local name=$1 limit=$2; shift 2
  local l; l=$(left)
  if [ "$l" -le 10 ]; then sum "SKIP  $name (time budget of ${BUDGET_S}s spent)"; return 0; fi
  [ "$limit" -gt "$l" ] && limit=$l
  log "== $name (timeout ${limit}s): $*"
  local t=$(date +%s)
  local rc
  if [ -n "${RUN_STDOUT:-}" ]; then
    timeout --kill-after=10 "$limit" "$@" > "$RUN_STDOUT" 2>> "$LOG"; rc=$?
    cat "$RUN_STDOUT" >> "$LOG"
  else
    timeout --kill-after=10 "$limit" "$@" >> "$LOG" 2>&1; rc=$?
  fi
  local what=ok; [ $rc -ne 0 ] && what="FAIL rc=$rc"; [ $rc -eq 124 ] && what="TIMEOUT"
  sum "$(printf '%-7s %-58s %4ss' "$what" "$name" $(( $(date +%s) - t )))"
  return 0
}

# tools/stage_devbin.sh packs the programs (each embeds the CUDA fatbin)
PROG=$BIN
if [ -f "$BIN/bin.tar.gz" ]; then
  PROG=$(mktemp -d /tmp/lf-devbin.XXXXXX)
  trap 'rm -rf "$PROG"' EXIT
  tar xzf "$BIN/bin.tar.gz" -C "$PROG" || { echo "cannot unpack $BIN/bin.tar.gz" | tee -a "$SUMMARY"; exit 1; }
fi
export LF_BIN="$PROG/longflow"
export LD_LIBRARY_PATH="$PROG:$LD_LIBRARY_PATH" # the CUDA plugin, for the test programs linked to it
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1
  echo "PARTS=$PARTS"; ls -l "$PROG" "$BIN/lib" 2>&1; } >> "$LOG"
if [ ! -x "$PROG/longflow" ]; then
  sum "no $PROG/longflow: stage it with tools/stage_devbin.sh BUILD_DIR and carry .devbin"
  cat "$SUMMARY"; exit 1
fi
ldd "$PROG/longflow" 2>&1 | grep "not found" | sed 's/^/missing library: /' | tee -a "$SUMMARY" >> "$LOG"

BENCH_JSON="$OUTD/engine_bench.jsonl"
AGREE_JSON="$OUTD/engine_agree.jsonl"
# bench_json FILE TIMEOUT NAME ARGS...: one longflow bench --json run, its JSON line appended to FILE
bench_json() {
  local file=$1 limit=$2 name=$3; shift 3
  local tmp; tmp=$(mktemp)
  RUN_STDOUT=$tmp run "$name" "$limit" "$PROG/longflow" bench --device cuda --json "$@"
  # the JSON line (the bench prints exactly one on success), tagged with LF_JSON_TAG if set
  grep '^{' "$tmp" 2>/dev/null | tail -1 | sed "s/^{/{${LF_JSON_TAG:+\"tag\":\"$LF_JSON_TAG\",}/" >> "$file"
  rm -f "$tmp"
}

# the GPU test programs (parts tests and pdl)
GPU_TESTS=${LF_GPU_TESTS:-"test_cuda_attention test_cuda_kernels test_cuda_gemm test_cuda_forward test_cuda_knorm test_cuda_snapkv test_cuda_nonfinite test_cuda_fp8"}

for part in $PARTS; do
  case $part in
  tests)
    for t in $GPU_TESTS; do
      if [ -x "$PROG/$t" ]; then run "$t" 150 "$PROG/$t"; else sum "MISSING $t (not in $PROG)"; fi
    done
    if command -v compute-sanitizer > /dev/null && [ -x "$PROG/test_cuda_kernels" ] &&
       [[ " $GPU_TESTS " == *" test_cuda_kernels "* ]]; then
      run "memcheck test_cuda_kernels (LF_CUDA_TEST_SMALL=1)" 150 env LF_CUDA_TEST_SMALL=1 \
          compute-sanitizer --tool memcheck --leak-check no --error-exitcode 3 "$PROG/test_cuda_kernels"
    else
      sum "SKIP  memcheck (no compute-sanitizer or no test_cuda_kernels)"
    fi
    ;;
  serve)
    # the server against the engine's own loop at the same shape, in the same call:
    # qwen3-1.7b random weights + the Qwen3 tokenizer, prompt 512, output LF_SERVE_GEN
    # (4096), LF_SERVE_N sequences at once (bench --batch N --mode real; the server
    # with --max-seqs N and one wave of N concurrent streaming clients), longflow budget
    # 800 and full (LF_SERVE_POLICIES). LF_SERVE_N=max: as many as the GPU pool admits,
    # each side its own (bench --batch max; serve --max-seqs max and serve_load.py
    # --concurrency max, which reads the server's longflow_max_sequences). The summary
    # prints server / bench. Timeouts: LF_SERVE_TIMEOUT seconds for each side (default
    # 240, 300 at max)
    TOKD=$(mktemp -d /tmp/lf-qwen3tok.XXXXXX)
    python3 -c "import lzma,sys; open(sys.argv[2],'wb').write(lzma.open(sys.argv[1]).read())" \
      "$ROOT/tests/data/tokenizers/qwen3/tokenizer.json.xz" "$TOKD/tokenizer.json"
    cp "$ROOT/tests/data/tokenizers/qwen3/tokenizer_config.json" "$TOKD/"
    N=${LF_SERVE_N:-128}; GEN=${LF_SERVE_GEN:-4096}
    TS=${LF_SERVE_TIMEOUT:-240}; [ "$N" = max ] && TS=${LF_SERVE_TIMEOUT:-300}
    for pol in ${LF_SERVE_POLICIES:-longflow full}; do
      if [ $pol = full ]; then P=(--policy full); else P=(--policy $pol --budget 800); fi
      bench_json "$BENCH_JSON" "$TS" "bench real qwen3-1.7b $pol B=$N gen=$GEN" --random-weights --config qwen3-1.7b \
        --prompt-len 512 --gen-len $GEN --batch $N --mode real "${P[@]}"
      run "serve qwen3-1.7b $pol N=$N gen=$GEN" "$TS" python3 "$ROOT/bench/serve_load.py" --bin "$PROG/longflow" \
        --concurrency $N --prompt-len 512 --gen-len $GEN --procs 8 --id-range 1000,150000 \
        --output "$OUTD/serve_$pol.json" -- --random-weights qwen3-1.7b --tokenizer "$TOKD" --device cuda \
        --max-seqs $N --max-queue 1024 --max-prompt 512 --max-tokens $GEN "${P[@]}"
    done
    ;;
  ppl)
    run "test_cuda_perplexity.py" 400 python3 "$ROOT/tests/cuda/test_cuda_perplexity.py"
    grep -o 'measured .*' "$LOG" | sed 's/^/  /' >> "$SUMMARY"
    PPL=(perplexity --model models/tiny-reasoner --prompt-file models/tiny-reasoner/demo_prompt.txt --gen 1500
         --fidelity --policy full,longflow,tova,h2o,vatp,streaming,knorm --budget 64,128,256 --json)
    for dev in cuda cpu; do
      B=(--batch 64); [ $dev = cuda ] && B=(--batch max)
      RUN_STDOUT="$OUTD/ppl_$dev.out" run "perplexity --fidelity tiny-reasoner ($dev)" 150 "$PROG/longflow" \
          "${PPL[@]}" --device $dev "${B[@]}"
      grep '^{' "$OUTD/ppl_$dev.out" >> "$OUTD/ppl.jsonl"; rm -f "$OUTD/ppl_$dev.out"
    done
    python3 - "$OUTD/ppl.jsonl" >> "$SUMMARY" 2>> "$LOG" <<'PY'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    j = json.loads(line)
    rows.setdefault((j["policy"], j["budget"], "kl" in j), {})[j["device"]] = j
print("perplexity --fidelity, tiny reasoner (each device scores its own greedy continuation):")
for (pol, bud, vs), d in rows.items():
    g, c = d.get("cuda"), d.get("cpu")
    f = lambda j: ("scored %4d NLL %.4f" % (j["tokens_scored"], j["nll"]) +
                   (" KL %.4f top-1 %.4f" % (j["kl"], j["top1"]) if vs else "") + " %.1fs" % j["seconds"]) if j else "-"
    print("  %-9s %4s%s  cuda: %s | cpu: %s" % (pol, bud or "", "" if vs else " (base)", f(g), f(c)))
PY
    ;;
  kvdtype)
    # the FP8 KV cache against bf16 in the same run: compute-sanitizer memcheck of the FP8
    # kernel (small shapes, both launch modes), the fused kernel alone (bench_cuda_kvdtype:
    # B 64/128/256 x 3200/8192 slots), and the engine at the paper's setting with
    # LF_KV_POLICIES (default longflow, full) at budget 3200 in both dtypes
    if [ -n "${LF_KVDTYPE_SKIP:-}" ]; then :
    elif command -v compute-sanitizer > /dev/null; then
      run "memcheck bench_cuda_kvdtype (small)" 90 compute-sanitizer --tool memcheck --leak-check no \
          --error-exitcode 3 "$PROG/bench_cuda_kvdtype" --reps 1 --batch 2,40 --slots 200,700
    else
      sum "SKIP  memcheck (no compute-sanitizer)"
    fi
    [ -n "${LF_KVDTYPE_SKIP:-}" ] || run "bench_cuda_kvdtype" 150 "$PROG/bench_cuda_kvdtype" ${LF_KVDTYPE_ARGS:-}
    for cfg in ${LF_KV_CONFIGS:-qwen3-1.7b}; do
      COMMON=(--random-weights --config $cfg --prompt-len 512 --gen-len 16384 --batch max --mode sampled)
      for pol in ${LF_KV_POLICIES:-longflow full}; do
        if [ $pol = full ]; then P=(--policy full); else P=(--policy $pol --budget 3200); fi
        for kv in fp8 bf16; do
          bench_json "$BENCH_JSON" 200 "bench $cfg $pol kv $kv" "${COMMON[@]}" "${P[@]}" --kv-dtype $kv
        done
      done
    done
    ;;
  gemm)
    if [ -x "$PROG/bench_cuda_gemm" ]; then run "bench_cuda_gemm" 120 "$PROG/bench_cuda_gemm" ${LF_GEMM_ARGS:-}
    else sum "MISSING bench_cuda_gemm (not in $PROG)"; fi
    ;;
  bench)
    COMMON=(--random-weights --config qwen3-1.7b --prompt-len 512 --gen-len 16384 --batch max --mode sampled)
    for pol in ${LF_BENCH_POLICIES:-longflow full h2o tova streaming}; do
      if [ $pol = full ]; then P=(--policy full); else P=(--policy $pol --budget 3200); fi
      bench_json "$BENCH_JSON" 150 "bench qwen3-1.7b $pol" "${COMMON[@]}" "${P[@]}"
    done
    ;;
  bench8b)
    for cfg in qwen3-8b deepseek-r1-distill-llama-8b; do
      COMMON=(--random-weights --config $cfg --prompt-len 512 --gen-len 16384 --batch max --mode sampled)
      bench_json "$BENCH_JSON" 200 "bench $cfg longflow" "${COMMON[@]}" --policy longflow --budget 3200
      bench_json "$BENCH_JSON" 200 "bench $cfg full" "${COMMON[@]}" --policy full
    done
    ;;
  agree)
    COMMON=(--random-weights --config qwen3-1.7b --prompt-len 512 --gen-len 1024 --batch max)
    for P in "--policy longflow --budget 1024" "--policy full"; do
      # shellcheck disable=SC2086
      bench_json "$AGREE_JSON" 90 "agree sampled $P" "${COMMON[@]}" $P --mode sampled
      # shellcheck disable=SC2086
      bench_json "$AGREE_JSON" 200 "agree real $P" "${COMMON[@]}" $P --mode real
    done
    ;;
  bench1)
    # batch 1: decode is bound by reading the weights (issue target: >= 80% of the measured bandwidth)
    for cfg in qwen3-1.7b qwen3-8b; do
      bench_json "$BENCH_JSON" 120 "bench $cfg full batch 1" --random-weights --config $cfg --prompt-len 512 \
          --gen-len 1024 --batch 1 --mode sampled --policy full
    done
    ;;
  pdl)
    # the same GPU tests and batch-1 benches with programmatic dependent launch on
    for t in $GPU_TESTS; do
      if [ -x "$PROG/$t" ]; then run "PDL $t" 150 env LF_CUDA_PDL=1 "$PROG/$t"; else sum "MISSING $t"; fi
    done
    for cfg in qwen3-1.7b qwen3-8b; do
      LF_CUDA_PDL=1 bench_json "$BENCH_JSON" 120 "bench $cfg full batch 1 PDL" --random-weights --config $cfg \
          --prompt-len 512 --gen-len 1024 --batch 1 --mode sampled --policy full
    done
    ;;
  eval)
    # the tiny reasoner's test sets through the GPU engine (continuous batching, greedy): the full
    # cache, then each policy of LF_EVAL_POLICIES at the fixed budget LF_EVAL_BUDGET (default 448),
    # --max-tokens 1500; summaries to eval.jsonl, per-problem results packed in eval_results.tar.gz
    EV=$(mktemp -d /tmp/lf-eval.XXXXXX)
    for pol in full ${LF_EVAL_POLICIES:-longflow tova h2o vatp streaming}; do
      B=(); [ $pol = full ] || B=(--budget ${LF_EVAL_BUDGET:-448})
      for fam in sum walk path; do
        RUN_STDOUT=$EV/stdout run "eval tiny-reasoner $fam (cuda, $pol ${B[*]})" 120 "$PROG/longflow" eval \
            --device cuda --batch max --model models/tiny-reasoner --data models/tiny-reasoner/data/$fam.jsonl \
            --policy $pol "${B[@]}" --max-tokens 1500 --json --fresh --output $EV/$fam-$pol.jsonl
        grep '^{' $EV/stdout | tail -1 >> "$OUTD/eval.jsonl"
      done
    done
    tar czf "$OUTD/eval_results.tar.gz" -C "$EV" . 2>> "$LOG"
    ;;
  prefill)
    # prefill throughput of the policies whose prefill needs the window attention (H2O, VATP) or
    # SnapKV (a prompt longer than the budget), against the plain prefill, in one run (qwen3-1.7b)
    for P in "512 3200" "4096 8192" "4096 1024"; do
      set -- $P
      for pol in longflow h2o vatp; do
        LF_JSON_TAG="prefill P=$1 budget=$2" bench_json "$BENCH_JSON" 120 "prefill qwen3-1.7b $pol prompt $1 budget $2" \
            --random-weights --config qwen3-1.7b --prompt-len $1 --gen-len 64 --batch 8 --mode sampled \
            --policy $pol --budget $2
      done
    done
    ;;
  sweep)
    # the accuracy sweep of bench/accuracy on the GPU, every test problem (200 per family), every
    # GPU policy at budgets of 10-80% of the full-cache output length, once per KV cache dtype of
    # LF_SWEEP_DTYPES (default bf16); the summaries come back as gpu_accuracy[-DTYPE].md / .json
    # (no suffix for bf16; the per-problem results stay on the machine)
    for dt in ${LF_SWEEP_DTYPES:-bf16}; do
      SW=$(mktemp -d /tmp/lf-sweep.XXXXXX)
      sfx=$([ "$dt" = bf16 ] || echo "-$dt")
      run "accuracy sweep on the GPU, --kv-dtype $dt (tools/sweep_accuracy.py --device cuda, 200 problems per family)" 400 \
          python3 tools/sweep_accuracy.py --bin "$PROG/longflow" --device cuda --batch max --model models/tiny-reasoner \
          --data models/tiny-reasoner/data/sum.jsonl models/tiny-reasoner/data/walk.jsonl \
          models/tiny-reasoner/data/path.jsonl --limit 200 --max-tokens 1500 --out "$SW" \
          --budgets 10% 20% 40% 60% 80% --kv-dtype "$dt"
      cp "$SW/accuracy.md" "$OUTD/gpu_accuracy$sfx.md" 2>> "$LOG"
      cp "$SW/accuracy.json" "$OUTD/gpu_accuracy$sfx.json" 2>> "$LOG"
    done
    ;;
  evalpct)
    # per-problem budgets on the GPU (eval --budget P%): the first 40 problems of each family at the
    # budgets of the CPU sweep, with the CPU sweep's full-cache results as the reference (so every
    # problem gets the same budget as in bench/accuracy/runs); summaries to eval_pct.jsonl
    EV=$(mktemp -d /tmp/lf-evalpct.XXXXXX)
    for pol in ${LF_EVAL_POLICIES:-longflow tova h2o vatp streaming}; do
      for pct in ${LF_EVAL_PCTS:-10% 20% 40% 60% 80%}; do
        for fam in sum walk path; do
          RUN_STDOUT=$EV/stdout run "eval tiny-reasoner $fam (cuda, $pol --budget $pct)" 120 "$PROG/longflow" eval \
              --device cuda --batch max --model models/tiny-reasoner --data models/tiny-reasoner/data/$fam.jsonl \
              --limit 40 --policy $pol --budget $pct --reference bench/accuracy/runs/$fam.full.jsonl \
              --max-tokens 1500 --json --fresh --output $EV/$fam.$pol-${pct%\%}p.jsonl
          grep '^{' $EV/stdout | tail -1 >> "$OUTD/eval_pct.jsonl"
        done
      done
    done
    tar czf "$OUTD/eval_pct_results.tar.gz" -C "$EV" --exclude stdout . 2>> "$LOG"
    ;;
  hf)
    run "bench_hf_baseline.py" 280 env LD_LIBRARY_PATH="$ORIG_LD_LIBRARY_PATH" python3 bench/cuda/bench_hf_baseline.py --time-limit 240 \
        --json "$OUTD/hf_baseline.json"
    ;;
  *)
    sum "unknown part '$part' (tests ppl gemm bench bench1 bench8b agree pdl eval evalpct prefill sweep hf)"
    ;;
  esac
done

# the figures of this call, one line per run, and the ratios the issue asks for
LD_LIBRARY_PATH="$ORIG_LD_LIBRARY_PATH" python3 - "$BENCH_JSON" "$AGREE_JSON" "$OUTD/hf_baseline.json" "$OUTD" >> "$SUMMARY" 2>> "$LOG" <<'PY'
import glob, json, os, sys
def lines(p):
    if not os.path.exists(p): return []
    out = []
    for l in open(p):
        try: out.append(json.loads(l))
        except ValueError: pass
    return out
bench, agree = lines(sys.argv[1]), lines(sys.argv[2])
hf = json.load(open(sys.argv[3])) if os.path.exists(sys.argv[3]) else None
def row(r):
    last = r["points"][-1]
    return ("%-14s %-30s %-9s %-7s B=%-4d steady %9.1f tok/s  avg %9.1f tok/s  roofline@L=%d %.2f  peak %.1f GB  prefill %.0f tok/s"
            % (r.get("tag", ""), r["config"], r["policy"], r["mode"], r["max_batch"], r["steady_tokens_per_s"], r["avg_tokens_per_s"],
               last["L"], last.get("roofline_fraction") or 0, r["gpu_peak_bytes"] / 1e9, r.get("prefill_tokens_per_s") or 0))
for r in bench: print(row(r))
by = {(r["config"], r["policy"]): r for r in bench if r.get("batch_requested", 0) == 0}  # the --batch max runs
for cfg in sorted({r["config"] for r in bench}):
    lf, full = by.get((cfg, "longflow")), by.get((cfg, "full"))
    if lf and full:
        print("%s: longflow / full average tokens/s = %.2f x (issue target >= 2.5 x)"
              % (cfg, lf["avg_tokens_per_s"] / full["avg_tokens_per_s"]))
    for r in [x for x in bench if x["config"] == cfg]:
        rf = [p.get("roofline_fraction") or 0 for p in r["points"]]
        print("%s %s: roofline fraction %.2f .. %.2f over the sampled lengths (target >= 0.80)"
              % (cfg, r["policy"], min(rf), max(rf)))
if hf:
    print("transformers baseline: best average %s tok/s at batch %s; largest batch fitting 16896 tokens: %s"
          % (hf.get("best_avg_tokens_per_s"), hf.get("best_batch"), hf.get("largest_batch_fitting")))
    lf = by.get(("qwen3-1.7b", "longflow"))
    if lf and hf.get("best_avg_tokens_per_s"):
        print("qwen3-1.7b longflow / transformers average tokens/s = %.2f x (issue target >= 12 x)"
              % (lf["avg_tokens_per_s"] / hf["best_avg_tokens_per_s"]))
# part serve: each serve_<policy>.json against the bench --mode real run of its policy and length
for path in sorted(glob.glob(os.path.join(sys.argv[4], "serve_*.json"))):
    sv = json.load(open(path))
    args = sv["serve_args"]
    pol = args[args.index("--policy") + 1] if "--policy" in args else "full"
    bs = [r for r in bench if r["mode"] == "real" and r["policy"] == pol and r["gen_len"] == sv["gen_len"]]
    line = ("serve %s: %d/%d requests completed (%d errors), %d streams (server runs %d at once, peak seen %d), "
            "%.1f output tok/s, ITL p50/p90/p99 %s ms, TTFT p50/p90/p99 %s ms"
            % (pol, sv["completed"], sv["requests"], sv["errors"], sv["concurrency"], sv["server_max_sequences"],
               sv["peak_running"], sv["output_tok_s"], "/".join(str(v) for v in (sv["itl_ms"] or {}).values()),
               "/".join(str(v) for v in (sv["ttft_ms"] or {}).values())))
    if bs:
        b = bs[-1]
        bt = b["measured_avg_tokens_per_s_with_prefill"]
        line += ("; bench --mode real B=%d: %.1f tok/s measured with prefill (%.1f decode only): server / bench = "
                 "%.3f (issue target >= 0.95)" % (b["max_batch"], bt, b["measured_avg_tokens_per_s"], sv["output_tok_s"] / bt))
    print(line)
pairs = {}
for r in agree: pairs.setdefault(r["policy"], {})[r["mode"]] = r
for pol, d in pairs.items():
    if "real" in d and "sampled" in d:
        re_, sa = d["real"], d["sampled"]
        print("agree %s: real measured %.1f tok/s, real integrated %.1f, sampled integrated %.1f: sampled/real %.3f"
              % (pol, re_["measured_avg_tokens_per_s"], re_["avg_tokens_per_s"], sa["avg_tokens_per_s"],
                 sa["avg_tokens_per_s"] / re_["measured_avg_tokens_per_s"]))
PY
log "== summary ($(( $(date +%s) - T0 ))s)"
cat "$SUMMARY"
