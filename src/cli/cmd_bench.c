/* longflow bench: prefill and decode speed of the CPU forward, driven
 * through the engine's CPU backend (backend/backend.h: the same open,
 * prefill and step the engine calls, greedy sampling included in the times),
 * with the machine's read bandwidth measured in the same run, printed as one
 * JSON object on stdout. --device cuda: the throughput benchmark of the GPU
 * engine (src/cli/bench_cuda.c).
 *
 *   longflow bench (--model DIR | --random-weights --config NAME)
 *                  [--dtype bf16|f16|f32] [--prompt-len 128] [--gen-len 32]
 *                  [--batch 1] [--threads N] [--policy P --budget B]
 *                  [--device cpu] [--seed S] [--membw-mb 1024]
 *
 * Prefill: each of the `batch` sequences gets a prompt of random token ids,
 * prefilled one sequence at a time (timed together). Decode: gen-len steps,
 * each advancing all sequences by one greedy token in one batched call.
 * Decode is memory-bound: "decode_weight_gbps" is the weight bytes one step
 * reads divided by the step time, next to "membw_gbps", the best of several
 * multi-threaded streaming passes over a buffer much larger than the LLC. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/bench_cuda.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "backend/backend.h"
#include "core/error.h"
#include "core/membw.h"
#include "core/timer.h"
#include "cpu/qmatmul.h"
#include "cpu/simd.h"
#include "model/model.h"

static const char *CMD = "bench";

static void usage(FILE *f) {
    fprintf(f,
            "usage: longflow bench (--model DIR | --random-weights --config NAME) [options]\n"
            "\n"
            "Measures prefill and decode speed of the CPU forward and prints one JSON object;\n"
            "with --device cuda, the throughput of the GPU engine (see below).\n"
            "\n"
            "  --model DIR          a Hugging Face model directory or a GGUF file\n"
            "  --random-weights     generate weights for a named shape instead (with --config)\n"
            "  --config NAME        shape: qwen3-0.6b, qwen3-1.7b, qwen3-8b, llama-3.2-1b, ...\n"
            "  --dtype T            weight dtype for --random-weights: bf16 (default), f16, f32\n"
            "  --prompt-len N       prompt tokens per sequence (default 128)\n"
            "  --gen-len N          decode steps (default 32)\n"
            "  --batch N            sequences decoded together (default 1)\n"
            "  --threads N          threads (default: all cores)\n"
            "  --policy P --budget B  KV-cache policy and slots (default: full)\n"
            "  --kv-dtype fp32|bf16|fp8  how the cache stores K and V (default bf16; cuda: bf16 only)\n"
            "  --device cpu|cuda    the device (default cpu)\n"
            "  --weights quant|bf16 GGUF Q8_0/Q4_0/Q4_1 matrices: computed on as blocks (quant, the\n"
            "                       CPU default) or dequantized to bf16 at load (bf16, cuda's)\n"
            "  --seed S             seed of the random weights and prompts (default 1)\n"
            "  --membw-mb N         buffer of the bandwidth probe in MiB (default 1024 on the CPU,\n"
            "                       2048 copied device-to-device on cuda; 0 = skip)\n"
            "  --json               (cpu: always JSON) cuda: one JSON object instead of text\n"
            "--device cuda only:\n"
            "  --batch N|max        sequences at once; max = as many as fit in GPU memory (default max)\n"
            "  --mode sampled|real  sampled: time decode steps at sampled cache lengths (lf_cuda_bench_fill)\n"
            "                       and integrate over the generation; real: generate --gen-len tokens\n"
            "                       through the engine (default: sampled when --gen-len > 2048)\n"
            "  --lengths L1,L2,..   cache lengths to sample (default: prompt+1, 8 points up to\n"
            "                       prompt+gen, and the budget)\n"
            "  --gpu-mem-fraction F share of the free GPU memory to plan with (0 < F <= 0.98)\n");
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}


/* Weight bytes one decode step reads: every layer matrix, vector and bias,
 * the final norm and lm_head (the embedding rows looked up are negligible). */
static size_t decode_weight_bytes(const lf_model *m) {
    size_t b = lf_weight_nbytes(&m->final_norm) + lf_weight_nbytes(&m->lm_head);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const lf_layer_weights *L = &m->layers[l];
        const lf_weight *ws[] = {&L->attn_norm, &L->wq, &L->wk, &L->wv, &L->wo, &L->bq, &L->bk,
                                 &L->bv, &L->bo, &L->q_norm, &L->k_norm, &L->ffn_norm,
                                 &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) b += lf_weight_nbytes(ws[i]);
    }
    return b;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* a JSON string (config names and paths: escape quotes, backslashes and
 * control characters) */
static void json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

int lf_cmd_bench(int argc, char **argv) {
    lf_gen_options o;
    lf_gen_options_default(&o);
    o.sampling.seed = 1;
    bool random_weights = false;
    const char *preset = NULL, *dtype_name = "bf16", *mode = NULL, *lengths = NULL;
    int prompt_len = 128, gen_len = 32, batch = -1, membw_mb = -1;
    bool json = false;
    lf_args a;
    lf_args_init(&a, CMD, argc, argv);
    const char *f;
    while ((f = lf_args_next(&a))) {
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(f, "--random-weights")) {
            random_weights = true;
        } else if (!strcmp(f, "--config")) {
            if (!(preset = lf_arg_value(&a, f))) return 2;
        } else if (!strcmp(f, "--dtype")) {
            if (!(dtype_name = lf_arg_value(&a, f))) return 2;
        } else if (!strcmp(f, "--prompt-len")) {
            if (!lf_arg_int(&a, f, 1, 1 << 20, &prompt_len)) return 2;
        } else if (!strcmp(f, "--gen-len")) {
            if (!lf_arg_int(&a, f, 1, 1 << 20, &gen_len)) return 2;
        } else if (!strcmp(f, "--batch")) {
            if (!lf_gen_parse_batch(&a, f, &batch)) return 2;
        } else if (!strcmp(f, "--membw-mb")) {
            if (!lf_arg_int(&a, f, 0, 1 << 20, &membw_mb)) return 2;
        } else if (!strcmp(f, "--json")) {
            json = true;
        } else if (!strcmp(f, "--mode")) {
            if (!(mode = lf_arg_value(&a, f))) return 2;
            if (strcmp(mode, "sampled") && strcmp(mode, "real")) {
                lf_cli_error(CMD, "--mode: unknown mode '%s' (sampled or real)", mode);
                return 2;
            }
        } else if (!strcmp(f, "--lengths")) {
            if (!(lengths = lf_arg_value(&a, f))) return 2;
        } else if (!strcmp(f, "--model") || !strcmp(f, "--threads") || !strcmp(f, "--policy") ||
                   !strcmp(f, "--budget") || !strcmp(f, "--sinks") || !strcmp(f, "--recent") ||
                   !strcmp(f, "--evict-every") || !strcmp(f, "--kv-dtype") || !strcmp(f, "--device") || !strcmp(f, "--seed") ||
                   !strcmp(f, "--weights") ||
                   !strcmp(f, "--gpu-mem-fraction")) {
            if (lf_gen_options_parse(&o, &a, f) != 1) return 2;
        } else {
            lf_cli_error(CMD, "unknown option '%s' (try longflow bench --help)", f);
            return 2;
        }
    }
    if (a.inline_val) { /* "--random-weights=x" */
        lf_cli_error(CMD, "a flag that takes no value was given one");
        return 2;
    }
    if (!!o.model_dir == random_weights) {
        lf_cli_error(CMD, "give either --model DIR or --random-weights --config NAME");
        return 2;
    }
    if (random_weights && !preset) {
        lf_cli_error(CMD, "--random-weights needs --config NAME (one of: %s, ...)", lf_config_preset_names[0]);
        return 2;
    }
    if (preset && !random_weights) {
        lf_cli_error(CMD, "--config goes with --random-weights (a --model directory has its own config)");
        return 2;
    }
    lf_dtype dtype;
    if (!strcmp(dtype_name, "bf16")) dtype = LF_DTYPE_BF16;
    else if (!strcmp(dtype_name, "f16")) dtype = LF_DTYPE_F16;
    else if (!strcmp(dtype_name, "f32")) dtype = LF_DTYPE_F32;
    else {
        lf_cli_error(CMD, "--dtype: unknown dtype '%s' (bf16, f16 or f32)", dtype_name);
        return 2;
    }
    o.max_seqs = batch;
    if (lf_gen_check_device(&o, CMD)) return 2;
    if (o.device == LF_DEVICE_CPU && (mode || lengths)) {
        lf_cli_error(CMD, "--mode and --lengths apply to --device cuda only");
        return 2;
    }
    if (lf_gen_check_budget(&o, CMD)) return 2;
    bool budgeted = o.policy.kind != LF_POLICY_FULL;
    if (o.device == LF_DEVICE_CUDA) {
        lf_bench_cuda_args ca;
        memset(&ca, 0, sizeof ca);
        ca.o = &o;
        ca.preset = random_weights ? preset : NULL;
        ca.dtype = dtype;
        ca.prompt_len = prompt_len;
        ca.gen_len = gen_len;
        ca.batch = batch < 0 ? 0 : batch;
        ca.json = json;
        ca.mode = mode;
        ca.lengths = lengths;
        ca.membw_mb = membw_mb < 0 ? 2048 : membw_mb;
        return lf_bench_cuda(&ca);
    }
    if (batch < 0) batch = 1;
    if (membw_mb < 0) membw_mb = 1024;

    lf_threads_set(o.threads);
    int threads = lf_threads_get();
    lf_error err = {{0}};
    int rc = 1;
    lf_model *m = NULL;
    lf_backend be = {.ops = NULL};
    int *prompts = NULL, *tok = NULL, *next = NULL, *pos = NULL, *places = NULL;
    double *step_ms = NULL;
    int n_open = 0;
    size_t kv_bytes = 0;

    lf_membw_result bw = {0};
    if (membw_mb > 0 && lf_membw_measure((size_t)membw_mb << 20, threads, 6, &bw, &err)) {
        lf_cli_error(CMD, "%s", err.msg);
        return 1;
    }

    double t0 = lf_now_ms();
    if (random_weights ? lf_model_random(preset, dtype, o.sampling.seed, &m, &err)
                       : lf_model_load_mode(o.model_dir, lf_gen_weights(&o), &m, &err)) {
        lf_cli_error(CMD, "%s", err.msg);
        return 1;
    }
    double load_ms = lf_now_ms() - t0;
    const lf_config *cfg = lf_model_config(m);
    int V = cfg->vocab_size;
    int budget = budgeted ? o.policy.budget : prompt_len + gen_len;
    /* the engine's context rule, which this direct loop would otherwise skip */
    const int room = lf_context_check(m, prompt_len, &err);
    if (room < 0) goto fail;
    if (room < gen_len) {
        lf_cli_error(CMD, "--prompt-len %d + --gen-len %d run past the model's context (max_position_embeddings %d)",
                     prompt_len, gen_len, cfg->max_position);
        goto out;
    }

    prompts = malloc((size_t)batch * prompt_len * sizeof(int));
    tok = malloc((size_t)batch * sizeof(int));
    next = malloc((size_t)batch * sizeof(int));
    pos = malloc((size_t)batch * sizeof(int));
    places = malloc((size_t)batch * sizeof(int));
    step_ms = malloc((size_t)gen_len * sizeof(double));
    if (!prompts || !tok || !next || !pos || !places || !step_ms) {
        lf_cli_error(CMD, "out of memory for %d sequences", batch);
        goto out;
    }
    /* the engine's CPU backend, one place per sequence, greedy */
    lf_engine_config ec;
    lf_engine_config_default(&ec);
    ec.threads = o.threads;
    ec.max_seqs = batch;
    if (lf_backend_cpu_create(m, &ec, &be, &err)) goto fail;
    uint64_t rs = o.sampling.seed ^ 0x5eedull;
    for (size_t i = 0; i < (size_t)batch * prompt_len; i++) prompts[i] = (int)(splitmix(&rs) % (uint64_t)V);
    lf_backend_seq seq = {.n_prompt = prompt_len, .max_new = gen_len, .slots = budget, .policy = o.policy};
    seq.sampling = ec.sampling;
    seq.sampling.temperature = 0; /* greedy */

    /* warm-up (page in mapped weights, grow scratch): a short prefill and one
     * decode step in place 0 with a `full` cache of its own */
    {
        lf_backend_seq w = seq;
        lf_backend_mem wm;
        w.prompt = prompts;
        w.n_prompt = prompt_len < 8 ? prompt_len : 8;
        w.max_new = 1;
        w.slots = w.n_prompt + 1;
        lf_policy_config_default(&w.policy);
        int p0 = 0, wt = 0, wpos = w.n_prompt, wout;
        int r = be.ops->open(be.self, 0, &w, &wm, &err);
        if (!r) r = be.ops->prefill(be.self, 0, &wt, &err);
        if (!r) r = be.ops->step(be.self, 1, &p0, &wt, &wpos, &wout, &err);
        be.ops->close(be.self, 0);
        if (r) goto fail;
    }

    for (; n_open < batch; n_open++) {
        lf_backend_mem mem;
        seq.prompt = prompts + (size_t)n_open * prompt_len;
        seq.stream = (uint64_t)n_open;
        places[n_open] = n_open;
        if (be.ops->open(be.self, n_open, &seq, &mem, &err)) {
            n_open++; /* (closed below) */
            goto fail;
        }
        kv_bytes += mem.kv_bytes + mem.aux_bytes;
    }
    t0 = lf_now_ms();
    for (int s = 0; s < batch; s++) {
        if (be.ops->prefill(be.self, s, &tok[s], &err)) goto fail;
        pos[s] = prompt_len;
    }
    double prefill_ms = lf_now_ms() - t0;

    double decode_ms = 0, kv_read = 0;
    size_t kv_row = lf_kv_bytes_for(m, 1, LF_DEVICE_CPU, o.policy.kv_dtype) / (size_t)cfg->n_layers; /* K + V of a slot */
    for (int k = 0; k < gen_len; k++) {
        /* K and V this step's attention reads: the valid slots of every layer
         * plus the token being added */
        for (int s = 0; s < batch; s++)
            kv_read += (double)(be.ops->valid_slots(be.self, s) + cfg->n_layers) * kv_row;
        t0 = lf_now_ms();
        if (be.ops->step(be.self, batch, places, tok, pos, next, &err)) goto fail;
        step_ms[k] = lf_now_ms() - t0;
        decode_ms += step_ms[k];
        for (int s = 0; s < batch; s++) {
            tok[s] = next[s];
            pos[s]++;
        }
    }
    qsort(step_ms, (size_t)gen_len, sizeof *step_ms, cmp_double);

    size_t wbytes = m->decode_bytes_per_token ? m->decode_bytes_per_token : decode_weight_bytes(m);
    size_t kv_used = 0;
    for (int s = 0; s < batch; s++) kv_used += (size_t)be.ops->valid_slots(be.self, s) * kv_row;
    double ms_step = decode_ms / gen_len;
    double prefill_tps = (double)batch * prompt_len / (prefill_ms / 1e3);
    double decode_tps = (double)batch * gen_len / (decode_ms / 1e3);
    double gbps = (double)wbytes / (ms_step * 1e6);

    printf("{\"config\":");
    json_str(random_weights ? preset : o.model_dir);
    printf(",\"arch\":");
    json_str(cfg->arch_name);
    printf(",\"random_weights\":%s,\"dtype\":", random_weights ? "true" : "false");
    json_str(random_weights ? lf_dtype_name(dtype) : lf_dtype_name(m->lm_head.dtype));
    printf(",\"matrix_dtype\":");
    json_str(lf_dtype_name(m->layers[0].w_up.dtype));
    printf(",\"device\":\"cpu\",\"simd\":\"%s\",\"qdot\":\"%s\",\"threads\":%d",
           lf_simd_level_name(lf_cpu_simd_level()), lf_qdot_level_name(lf_qdot_level_get()), threads);
    printf(",\"policy\":\"%s\",\"budget\":%d,\"batch\":%d,\"prompt_len\":%d,\"gen_len\":%d",
           lf_policy_name(o.policy.kind), budgeted ? budget : 0, batch, prompt_len, gen_len); /* full: 0, as generate */
    printf(",\"kv_dtype\":\"%s\",\"kv_bytes_per_token\":%zu", lf_kv_dtype_name(o.policy.kv_dtype),
           (size_t)cfg->n_layers * kv_row);
    printf(",\"load_ms\":%.1f,\"prefill_ms\":%.2f,\"prefill_tokens_per_s\":%.2f", load_ms, prefill_ms,
           prefill_tps);
    printf(",\"decode_ms\":%.2f,\"decode_tokens_per_s\":%.3f,\"decode_ms_per_step\":%.3f", decode_ms,
           decode_tps, ms_step);
    printf(",\"decode_ms_per_step_median\":%.3f,\"decode_ms_per_step_min\":%.3f",
           step_ms[gen_len / 2], step_ms[0]);
    printf(",\"prefill_vs_decode_per_token\":%.3f", prefill_tps / decode_tps);
    printf(",\"weight_bytes_per_step\":%zu,\"decode_weight_gbps\":%.3f", wbytes, gbps);
    printf(",\"kv_bytes_read_per_step\":%.0f,\"decode_total_gbps\":%.3f", kv_read / gen_len,
           ((double)wbytes + kv_read / gen_len) / (ms_step * 1e6));
    if (membw_mb > 0)
        printf(",\"membw_gbps\":%.3f,\"membw_gbps_median\":%.3f,\"membw_gbps_plain\":%.3f,"
               "\"membw_gbps_prefetch\":%.3f,\"membw_buffer_mb\":%d,"
               "\"decode_bw_ratio\":%.3f,\"decode_bw_ratio_best\":%.3f",
               bw.gbps, bw.gbps_median, bw.gbps_plain, bw.gbps_prefetch, membw_mb, gbps / bw.gbps,
               (double)wbytes / (step_ms[0] * 1e6) / bw.gbps);
    else
        printf(",\"membw_gbps\":null,\"decode_bw_ratio\":null");
    printf(",\"kv_bytes\":%zu,\"kv_bytes_in_use\":%zu}\n", kv_bytes, kv_used);
    rc = 0;
    goto out;
fail:
    lf_cli_error(CMD, "%s", err.msg);
out:
    if (be.ops) {
        for (int s = 0; s < n_open; s++) be.ops->close(be.self, s);
        be.ops->destroy(be.self);
    }
    free(prompts);
    free(tok);
    free(next);
    free(pos);
    free(places);
    free(step_ms);
    lf_model_free(m);
    lf_gen_options_free(&o);
    return rc;
}
