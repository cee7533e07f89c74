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
#include "cpu/gemm_bf16.h"
#include "cpu/qgemm.h"
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
            "  --kv-dtype fp32|bf16|fp8  " LF_KV_DTYPE_HELP
            "  --device cpu|cuda    the device (default cpu)\n"
            "  --weights quant|bf16 GGUF block-quantized matrices: computed on as\n"
            "                       blocks (quant, the CPU default) or dequantized to bf16 at load\n"
            "                       (bf16, cuda's)\n"
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

/* The command line. */
typedef struct bench_cli {
    lf_gen_options o;
    bool random_weights, json;
    const char *preset, *dtype_name, *mode, *lengths;
    int prompt_len, gen_len, batch, membw_mb;
    lf_dtype dtype;
} bench_cli;

/* Returns 0 to go on, 1 after --help, 2 on a bad flag (printed). */
static int parse_flags(bench_cli *c, int argc, char **argv) {
    lf_args a;
    lf_args_init(&a, CMD, argc, argv);
    const char *f;
    while ((f = lf_args_next(&a))) {
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            return 1;
        }
        bool ok = true;
        if (!strcmp(f, "--random-weights")) c->random_weights = true;
        else if (!strcmp(f, "--json")) c->json = true;
        else if (!strcmp(f, "--config")) ok = (c->preset = lf_arg_value(&a, f)) != NULL;
        else if (!strcmp(f, "--dtype")) ok = (c->dtype_name = lf_arg_value(&a, f)) != NULL;
        else if (!strcmp(f, "--mode")) ok = (c->mode = lf_arg_value(&a, f)) != NULL;
        else if (!strcmp(f, "--lengths")) ok = (c->lengths = lf_arg_value(&a, f)) != NULL;
        else if (!strcmp(f, "--prompt-len")) ok = lf_arg_int(&a, f, 1, 1 << 20, &c->prompt_len);
        else if (!strcmp(f, "--gen-len")) ok = lf_arg_int(&a, f, 1, 1 << 20, &c->gen_len);
        else if (!strcmp(f, "--membw-mb")) ok = lf_arg_int(&a, f, 0, 1 << 20, &c->membw_mb);
        else if (!strcmp(f, "--batch")) ok = lf_gen_parse_batch(&a, f, &c->batch);
        else if (!strcmp(f, "--model") || !strcmp(f, "--threads") || !strcmp(f, "--policy") ||
                 !strcmp(f, "--budget") || !strcmp(f, "--sinks") || !strcmp(f, "--recent") ||
                 !strcmp(f, "--evict-every") || !strcmp(f, "--kv-dtype") || !strcmp(f, "--device") ||
                 !strcmp(f, "--seed") || !strcmp(f, "--weights") || !strcmp(f, "--gpu-mem-fraction"))
            ok = lf_gen_options_parse(&c->o, &a, f) == 1;
        else {
            lf_cli_error(CMD, "unknown option '%s' (try longflow bench --help)", f);
            return 2;
        }
        if (!ok) return 2;
    }
    if (a.inline_val) { /* "--random-weights=x" */
        lf_cli_error(CMD, "a flag that takes no value was given one");
        return 2;
    }
    return 0;
}

/* Checks that need no model; fills c->dtype. Returns 0 or 2 (printed). */
static int check_flags(bench_cli *c) {
    const lf_gen_options *o = &c->o;
    if (c->mode && strcmp(c->mode, "sampled") && strcmp(c->mode, "real"))
        lf_cli_error(CMD, "--mode: unknown mode '%s' (sampled or real)", c->mode);
    else if (!!o->model_dir == c->random_weights)
        lf_cli_error(CMD, "give either --model DIR or --random-weights --config NAME");
    else if (c->random_weights && !c->preset)
        lf_cli_error(CMD, "--random-weights needs --config NAME (one of: %s, ...)", lf_config_preset_names[0]);
    else if (c->preset && !c->random_weights)
        lf_cli_error(CMD, "--config goes with --random-weights (a --model directory has its own config)");
    else if (strcmp(c->dtype_name, "bf16") && strcmp(c->dtype_name, "f16") && strcmp(c->dtype_name, "f32"))
        lf_cli_error(CMD, "--dtype: unknown dtype '%s' (bf16, f16 or f32)", c->dtype_name);
    else if (lf_gen_check_device(o, CMD)) return 2;
    else if (o->device == LF_DEVICE_CPU && (c->mode || c->lengths))
        lf_cli_error(CMD, "--mode and --lengths apply to --device cuda only");
    else if (lf_gen_check_budget(o, CMD)) return 2;
    else {
        c->dtype = !strcmp(c->dtype_name, "bf16") ? LF_DTYPE_BF16 : !strcmp(c->dtype_name, "f16") ? LF_DTYPE_F16
                                                                                                  : LF_DTYPE_F32;
        return 0;
    }
    return 2;
}

static int run_cuda(const bench_cli *c) {
    lf_bench_cuda_args ca;
    memset(&ca, 0, sizeof ca);
    ca.o = &c->o;
    ca.preset = c->random_weights ? c->preset : NULL;
    ca.dtype = c->dtype;
    ca.prompt_len = c->prompt_len;
    ca.gen_len = c->gen_len;
    ca.batch = c->batch < 0 ? 0 : c->batch;
    ca.json = c->json;
    ca.mode = c->mode;
    ca.lengths = c->lengths;
    ca.membw_mb = c->membw_mb < 0 ? 2048 : c->membw_mb;
    return lf_bench_cuda(&ca);
}

/* One CPU run: the backend with `batch` places, the sequences' state and
 * what was measured. */
typedef struct cpu_run {
    const bench_cli *c;
    lf_model *m;
    const lf_config *cfg;
    lf_backend be;
    int batch, budget, n_open, threads;
    int *prompts, *tok, *next, *pos, *places;
    double *step_ms; /* [gen_len], sorted after the run */
    double load_ms, prefill_ms, decode_ms, kv_read;
    size_t kv_bytes, kv_row;
    lf_membw_result bw;
} cpu_run;

/* The model (and the engine's context rule, which this direct loop would
 * otherwise skip). Returns 0, or 1 (printed). */
static int cpu_load(cpu_run *r, lf_error *err) {
    const bench_cli *c = r->c;
    double t0 = lf_now_ms();
    if (c->random_weights ? lf_model_random(c->preset, c->dtype, c->o.sampling.seed, &r->m, err)
                          : lf_model_load_mode(c->o.model_dir, lf_gen_weights(&c->o), &r->m, err)) {
        lf_cli_error(CMD, "%s", err->msg);
        return 1;
    }
    r->load_ms = lf_now_ms() - t0;
    r->cfg = lf_model_config(r->m);
    const int room = lf_context_check(r->m, c->prompt_len, err);
    if (room < 0) {
        lf_cli_error(CMD, "%s", err->msg);
        return 1;
    }
    if (room < c->gen_len) {
        lf_cli_error(CMD, "--prompt-len %d + --gen-len %d run past the model's context (max_position_embeddings %d)",
                     c->prompt_len, c->gen_len, r->cfg->max_position);
        return 1;
    }
    return 0;
}

static int cpu_alloc(cpu_run *r) {
    const size_t b = (size_t)r->batch;
    r->prompts = malloc(b * (size_t)r->c->prompt_len * sizeof(int));
    r->tok = malloc(b * sizeof(int));
    r->next = malloc(b * sizeof(int));
    r->pos = malloc(b * sizeof(int));
    r->places = malloc(b * sizeof(int));
    r->step_ms = malloc((size_t)r->c->gen_len * sizeof(double));
    if (r->prompts && r->tok && r->next && r->pos && r->places && r->step_ms) return 0;
    lf_cli_error(CMD, "out of memory for %d sequences", r->batch);
    return 1;
}

/* Warm-up (page in mapped weights, grow scratch): a short prefill and one
 * decode step in place 0 with a `full` cache of its own. */
static int cpu_warmup(cpu_run *r, const lf_backend_seq *seq, lf_error *err) {
    lf_backend_seq w = *seq;
    lf_backend_mem wm;
    w.prompt = r->prompts;
    w.n_prompt = r->c->prompt_len < 8 ? r->c->prompt_len : 8;
    w.max_new = 1;
    w.slots = w.n_prompt + 1;
    lf_policy_config_default(&w.policy);
    int p0 = 0, wt = 0, wpos = w.n_prompt, wout;
    int rc = r->be.ops->open(r->be.self, 0, &w, &wm, err);
    if (!rc) rc = r->be.ops->prefill(r->be.self, 0, &wt, err);
    if (!rc) rc = r->be.ops->step(r->be.self, 1, &p0, &wt, &wpos, &wout, err);
    r->be.ops->close(r->be.self, 0);
    return rc;
}

/* The engine's CPU backend, one place per sequence (random prompts, greedy),
 * warmed up, every sequence opened and prefilled (timed). */
static int cpu_prefill(cpu_run *r, lf_error *err) {
    const bench_cli *c = r->c;
    lf_engine_config ec;
    lf_engine_config_default(&ec);
    ec.threads = c->o.threads;
    ec.max_seqs = r->batch;
    if (lf_backend_cpu_create(r->m, &ec, &r->be, err)) return -1;
    uint64_t rs = c->o.sampling.seed ^ 0x5eedull;
    for (size_t i = 0; i < (size_t)r->batch * c->prompt_len; i++)
        r->prompts[i] = (int)(splitmix(&rs) % (uint64_t)r->cfg->vocab_size);
    lf_backend_seq seq = {.n_prompt = c->prompt_len, .max_new = c->gen_len, .slots = r->budget, .policy = c->o.policy};
    seq.sampling = ec.sampling;
    seq.sampling.temperature = 0; /* greedy */
    if (cpu_warmup(r, &seq, err)) return -1;
    for (; r->n_open < r->batch; r->n_open++) {
        lf_backend_mem mem;
        seq.prompt = r->prompts + (size_t)r->n_open * c->prompt_len;
        seq.stream = (uint64_t)r->n_open;
        r->places[r->n_open] = r->n_open;
        if (r->be.ops->open(r->be.self, r->n_open, &seq, &mem, err)) {
            r->n_open++; /* (closed by cpu_free) */
            return -1;
        }
        r->kv_bytes += mem.kv_bytes + mem.aux_bytes;
    }
    double t0 = lf_now_ms();
    for (int s = 0; s < r->batch; s++) {
        if (r->be.ops->prefill(r->be.self, s, &r->tok[s], err)) return -1;
        r->pos[s] = c->prompt_len;
    }
    r->prefill_ms = lf_now_ms() - t0;
    return 0;
}

/* gen_len decode steps of all sequences together; each step's time, and the
 * K and V it reads (the valid slots of every layer plus the token added). */
static int cpu_decode(cpu_run *r, lf_error *err) {
    r->kv_row = lf_kv_bytes_for(r->m, 1, LF_DEVICE_CPU, r->c->o.policy.kv_dtype) / (size_t)r->cfg->n_layers;
    for (int k = 0; k < r->c->gen_len; k++) {
        for (int s = 0; s < r->batch; s++)
            r->kv_read += (double)(r->be.ops->valid_slots(r->be.self, s) + r->cfg->n_layers) * r->kv_row;
        double t0 = lf_now_ms();
        if (r->be.ops->step(r->be.self, r->batch, r->places, r->tok, r->pos, r->next, err)) return -1;
        r->step_ms[k] = lf_now_ms() - t0;
        r->decode_ms += r->step_ms[k];
        for (int s = 0; s < r->batch; s++) {
            r->tok[s] = r->next[s];
            r->pos[s]++;
        }
    }
    qsort(r->step_ms, (size_t)r->c->gen_len, sizeof *r->step_ms, cmp_double);
    return 0;
}

/* The run's JSON object on stdout. */
static void cpu_report(const cpu_run *r) {
    const bench_cli *c = r->c;
    const lf_model *m = r->m;
    const int gen_len = c->gen_len;
    size_t wbytes = m->decode_bytes_per_token ? m->decode_bytes_per_token : decode_weight_bytes(m);
    size_t kv_used = 0;
    for (int s = 0; s < r->batch; s++) kv_used += (size_t)r->be.ops->valid_slots(r->be.self, s) * r->kv_row;
    double ms_step = r->decode_ms / gen_len;
    double prefill_tps = (double)r->batch * c->prompt_len / (r->prefill_ms / 1e3);
    double decode_tps = (double)r->batch * gen_len / (r->decode_ms / 1e3);
    double gbps = (double)wbytes / (ms_step * 1e6);
    bool budgeted = c->o.policy.kind != LF_POLICY_FULL;
    printf("{\"config\":");
    json_str(c->random_weights ? c->preset : c->o.model_dir);
    printf(",\"arch\":");
    json_str(r->cfg->arch_name);
    printf(",\"random_weights\":%s,\"dtype\":", c->random_weights ? "true" : "false");
    json_str(c->random_weights ? lf_dtype_name(c->dtype) : lf_dtype_name(m->lm_head.dtype));
    printf(",\"matrix_dtype\":");
    json_str(lf_dtype_name(m->layers[0].w_up.dtype));
    printf(",\"device\":\"cpu\",\"simd\":\"%s\",\"qdot\":\"%s\",\"qgemm\":\"%s\",\"bf16gemm\":\"%s\",\"threads\":%d",
           lf_simd_level_name(lf_cpu_simd_level()), lf_qdot_level_name(lf_qdot_level_get()),
           lf_qdot_level_name(lf_qgemm_level_get()), lf_bgemm_level_name(lf_bgemm_level_get()), r->threads);
    printf(",\"policy\":\"%s\",\"budget\":%d,\"batch\":%d,\"prompt_len\":%d,\"gen_len\":%d",
           lf_policy_name(c->o.policy.kind), budgeted ? r->budget : 0, r->batch, c->prompt_len,
           gen_len); /* full: 0, as generate */
    printf(",\"kv_dtype\":\"%s\",\"kv_bytes_per_token\":%zu", lf_kv_dtype_name(c->o.policy.kv_dtype),
           (size_t)r->cfg->n_layers * r->kv_row);
    printf(",\"load_ms\":%.1f,\"prefill_ms\":%.2f,\"prefill_tokens_per_s\":%.2f", r->load_ms, r->prefill_ms,
           prefill_tps);
    printf(",\"decode_ms\":%.2f,\"decode_tokens_per_s\":%.3f,\"decode_ms_per_step\":%.3f", r->decode_ms,
           decode_tps, ms_step);
    printf(",\"decode_ms_per_step_median\":%.3f,\"decode_ms_per_step_min\":%.3f", r->step_ms[gen_len / 2],
           r->step_ms[0]);
    printf(",\"prefill_vs_decode_per_token\":%.3f", prefill_tps / decode_tps);
    printf(",\"weight_bytes_per_step\":%zu,\"decode_weight_gbps\":%.3f", wbytes, gbps);
    printf(",\"kv_bytes_read_per_step\":%.0f,\"decode_total_gbps\":%.3f", r->kv_read / gen_len,
           ((double)wbytes + r->kv_read / gen_len) / (ms_step * 1e6));
    if (c->membw_mb > 0)
        printf(",\"membw_gbps\":%.3f,\"membw_gbps_median\":%.3f,\"membw_gbps_plain\":%.3f,"
               "\"membw_gbps_prefetch\":%.3f,\"membw_buffer_mb\":%d,"
               "\"decode_bw_ratio\":%.3f,\"decode_bw_ratio_best\":%.3f",
               r->bw.gbps, r->bw.gbps_median, r->bw.gbps_plain, r->bw.gbps_prefetch, c->membw_mb, gbps / r->bw.gbps,
               (double)wbytes / (r->step_ms[0] * 1e6) / r->bw.gbps);
    else
        printf(",\"membw_gbps\":null,\"decode_bw_ratio\":null");
    printf(",\"kv_bytes\":%zu,\"kv_bytes_in_use\":%zu}\n", r->kv_bytes, kv_used);
}

static void cpu_free(cpu_run *r) {
    if (r->be.ops) {
        for (int s = 0; s < r->n_open; s++) r->be.ops->close(r->be.self, s);
        r->be.ops->destroy(r->be.self);
    }
    free(r->prompts);
    free(r->tok);
    free(r->next);
    free(r->pos);
    free(r->places);
    free(r->step_ms);
    lf_model_free(r->m);
}

/* The CPU benchmark: bandwidth probe, load, prefill, decode, report. */
static int run_cpu(bench_cli *c) {
    if (c->membw_mb < 0) c->membw_mb = 1024;
    lf_threads_set(c->o.threads);
    cpu_run r = {.c = c, .batch = c->batch < 0 ? 1 : c->batch, .threads = lf_threads_get()};
    lf_error err = {{0}};
    if (c->membw_mb > 0 && lf_membw_measure((size_t)c->membw_mb << 20, r.threads, 6, &r.bw, &err)) {
        lf_cli_error(CMD, "%s", err.msg);
        return 1;
    }
    r.budget = c->o.policy.kind != LF_POLICY_FULL ? c->o.policy.budget : c->prompt_len + c->gen_len;
    int rc = cpu_load(&r, &err) || cpu_alloc(&r);
    if (rc == 0 && (cpu_prefill(&r, &err) || cpu_decode(&r, &err))) {
        lf_cli_error(CMD, "%s", err.msg);
        rc = 1;
    }
    if (rc == 0) cpu_report(&r);
    cpu_free(&r);
    return rc;
}

int lf_cmd_bench(int argc, char **argv) {
    bench_cli c = {.dtype_name = "bf16", .prompt_len = 128, .gen_len = 32, .batch = -1, .membw_mb = -1};
    lf_gen_options_default(&c.o);
    c.o.sampling.seed = 1;
    int rc = parse_flags(&c, argc, argv);
    if (rc == 0) {
        c.o.max_seqs = c.batch;
        rc = check_flags(&c);
    }
    if (rc == 0) rc = c.o.device == LF_DEVICE_CUDA ? run_cuda(&c) : run_cpu(&c);
    else if (rc == 1) rc = 0; /* --help */
    lf_gen_options_free(&c.o);
    return rc;
}
