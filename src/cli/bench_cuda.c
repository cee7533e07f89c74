/* longflow bench --device cuda: throughput of the GPU engine at a batch of
 * as many sequences as fit (or --batch N).
 *
 * mode sampled: the backend is driven directly. Every entry is prefilled
 *   once with a random prompt (prefill throughput); then for each sampled
 *   cache length L every entry is put in the state it would have after L
 *   tokens (lf_cuda_bench_fill), 3 decode steps warm up (and capture the CUDA
 *   graph), >= 10 steps are timed one by one (wall clock; lf_cuda_decode
 *   returns with the tokens on the host), and one profiled step splits the
 *   time into GEMMs / attention / other. The average over the generation is
 *   integrated: sum over the decode steps (cache lengths prompt .. prompt +
 *   gen - 2) of the step time interpolated linearly between the sampled L
 *   (flat outside them).
 * mode real: the same requests really run through lf_engine (continuous
 *   batching path, greedy, ignore_eos); the step times are taken from the
 *   token callbacks of request 0 as it passes the sampled lengths.
 *
 * Roofline: bytes a step reads (weights + K/V of the valid slots) / step
 * time, as a fraction of the device-to-device copy bandwidth (read + write
 * bytes / time, src/cuda/membw.cu) measured in the same run. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/bench_cuda.h"
#include "core/error.h"
#include "core/timer.h"
#include "model/model.h"

#ifdef LF_HAVE_CUDA
#include "cuda/cuda_forward.h"
#include "cuda/cuda_membw.h"
#include "sampler/sampler.h"
#endif

static const char *CMD = "bench";

#ifndef LF_HAVE_CUDA
int lf_bench_cuda(const lf_bench_cuda_args *a) {
    (void)a;
    lf_cli_error(CMD, "--device cuda: this build has no CUDA backend (configure with -DLF_CUDA=ON on a machine "
                      "with nvcc)");
    return 1;
}
#else

enum { WARM_STEPS = 3, TIMED_STEPS = 10, MAX_POINTS = 64 };

typedef struct point {
    int L;           /* tokens in each cache before the step (the step's position) */
    double step_ms;  /* median wall time of one step at batch B */
    double min_ms;
    int n_steps;     /* steps the median is over */
    double bytes;    /* bytes one step reads */
    double gemm_ms, attention_ms, other_ms, profile_ms; /* sampled mode: one profiled step */
} point;

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Step time at cache length L: linear between the sampled points (sorted by
 * L), flat before the first and after the last. */
static double interp(const point *p, int n, double L) {
    if (L <= p[0].L) return p[0].step_ms;
    for (int i = 1; i < n; i++)
        if (L <= p[i].L) {
            double t = (L - p[i - 1].L) / (double)(p[i].L - p[i - 1].L);
            return p[i - 1].step_ms + t * (p[i].step_ms - p[i - 1].step_ms);
        }
    return p[n - 1].step_ms;
}

/* Sum of the step times of a generation: decode steps at cache lengths
 * P .. P + G - 2 (the first token comes from the prefill). */
static double integrate(const point *p, int n, int P, int G) {
    double sum = 0;
    for (int L = P; L <= P + G - 2; L++) sum += interp(p, n, L);
    return sum;
}

/* The cache lengths to sample: --lengths, or prompt+1, 8 points spread up
 * to prompt+gen, and the budget. Every point leaves room for the steps run
 * at it (positions L .. L + WARM + TIMED) inside the capacity of `full`. */
static int choose_points(const lf_bench_cuda_args *a, bool sampled, bool budgeted, int budget, int capacity,
                         point *pts, int *n_out) {
    int P = a->prompt_len, G = a->gen_len;
    int steps = sampled ? WARM_STEPS + TIMED_STEPS + 1 : 0;
    /* sampled: positions L .. L + steps - 1 are decoded; full has capacity
     * slots (the last position it can take is capacity - 1). real: the
     * decode steps of the run are at P .. P + G - 2. */
    int lmax = !sampled ? P + G - 2 : budgeted ? P + G - steps : capacity - steps;
    int Ls[MAX_POINTS], n = 0;
    if (a->lengths) {
        int *ids = NULL, k = 0;
        if (!lf_parse_ids(CMD, "--lengths", a->lengths, 0x7fffffffL, "the lengths", &ids, &k)) return -1;
        if (k > MAX_POINTS) {
            lf_cli_error(CMD, "--lengths: %d lengths, at most %d", k, MAX_POINTS);
            free(ids);
            return -1;
        }
        for (int i = 0; i < k; i++) {
            int lo = sampled ? 1 : P + 1, hi = sampled && budgeted ? 1 << 30 : lmax;
            if (ids[i] < lo || ids[i] > hi) {
                lf_cli_error(CMD, "--lengths: %d is out of range [%d, %d] (%s)", ids[i], lo, hi,
                             sampled ? "--policy full has prompt + gen slots and each length runs 14 steps"
                                     : "--mode real: the cache lengths of the run's decode steps");
                free(ids);
                return -1;
            }
            Ls[n++] = ids[i];
        }
        free(ids);
    } else {
        if (lmax < P + 1) {
            if (sampled)
                lf_cli_error(CMD, "--mode sampled needs --gen-len >= %d (each sampled length runs %d steps); use "
                                  "--mode real for shorter runs", steps + 1, steps);
            else
                lf_cli_error(CMD, "--mode real needs --gen-len >= 3");
            return -1;
        }
        Ls[n++] = P + 1;
        for (int i = 1; i <= 8; i++) {
            long L = P + (long)G * i / 8;
            Ls[n++] = (int)(L > lmax ? lmax : L);
        }
        if (budgeted && budget > P + 1 && budget < lmax) Ls[n++] = budget;
    }
    qsort(Ls, (size_t)n, sizeof *Ls, cmp_int);
    int m = 0;
    for (int i = 0; i < n; i++)
        if (m == 0 || Ls[i] != pts[m - 1].L) {
            memset(&pts[m], 0, sizeof pts[m]);
            pts[m++].L = Ls[i];
        }
    *n_out = m;
    return 0;
}

typedef struct real_timer {
    double *t;   /* [gen_len] time of request 0's token k */
    int n;
} real_timer;

static void on_token(void *user, const lf_generation *g, int token) {
    (void)token;
    real_timer *rt = user;
    if (g->id == 0 && g->n_tokens - 1 < rt->n) rt->t[g->n_tokens - 1] = lf_now_ms();
}

typedef struct result {
    char device_name[128];
    char plan[256];
    int entries, capacity;
    size_t weight_bytes, kv_bytes_per_seq, aux_bytes_per_seq, workspace_bytes, gpu_free, gpu_total, gpu_peak;
    double prefill_ms, prefill_tps;
    double measured_decode_ms; /* real mode: the engine's decode time */
    long measured_decode_tokens;
} result;

/* K+V bytes of one slot of one sequence, all layers (bf16) */
/* The backend answers LF_SAMPLE_NONFINITE for an entry whose logits are
 * NaN or Inf: a benchmark of broken weights stops there. */
static int check_sampled(const int *tok, int n, lf_error *err) {
    for (int e = 0; e < n; e++)
        if (tok[e] == LF_SAMPLE_NONFINITE)
            return lf_fail(err, "entry %d: logits are NaN or Inf (check the model's weights)", e);
    return 0;
}

static double slot_bytes(const lf_model *m) {
    const lf_config *c = &m->cfg;
    return 2.0 * c->n_layers * c->n_kv_heads * c->head_dim * 2.0;
}

static int run_sampled(const lf_bench_cuda_args *a, lf_model *m, int capacity, point *pts, int n_pts, result *r,
                       lf_error *err) {
    const lf_gen_options *o = a->o;
    int P = a->prompt_len, V = m->cfg.vocab_size;
    lf_cuda_options co;
    memset(&co, 0, sizeof co);
    co.policy = o->policy;
    co.capacity = capacity;
    co.max_prompt = P;
    co.max_seqs = a->batch;
    lf_sampling_default(&co.sampling);
    co.mem_fraction = o->gpu_mem_fraction;
    lf_cuda_backend *b = NULL;
    int *prompt = NULL, *entries = NULL, *tok = NULL, *pos = NULL, *out = NULL;
    double *ms = NULL;
    int rc = -1;
    if (lf_cuda_backend_create(m, &co, &b, err)) return -1;
    lf_cuda_info in;
    lf_cuda_backend_info(b, &in);
    snprintf(r->device_name, sizeof r->device_name, "%s", in.device_name);
    snprintf(r->plan, sizeof r->plan, "%s", in.plan);
    r->entries = in.entries;
    r->capacity = in.capacity;
    r->weight_bytes = in.weight_bytes;
    r->kv_bytes_per_seq = in.kv_bytes_per_entry;
    r->aux_bytes_per_seq = in.aux_bytes_per_entry;
    r->workspace_bytes = in.workspace_bytes;
    r->gpu_free = in.gpu_free_bytes;
    r->gpu_total = in.gpu_total_bytes;
    int B = in.entries;
    if (B < 1) {
        lf_fail(err, "the memory plan admits no sequence (%s)", in.plan);
        goto out;
    }
    prompt = malloc((size_t)P * sizeof *prompt);
    entries = malloc((size_t)B * sizeof *entries);
    tok = malloc((size_t)B * sizeof *tok);
    pos = malloc((size_t)B * sizeof *pos);
    out = malloc((size_t)B * sizeof *out);
    ms = malloc(TIMED_STEPS * sizeof *ms);
    if (!prompt || !entries || !tok || !pos || !out || !ms) {
        lf_fail(err, "out of memory for a batch of %d", B);
        goto out;
    }
    uint64_t rs = o->sampling.seed ^ 0x5eedull;
    /* prefill every entry with its own random prompt: the prefill throughput */
    double t0 = lf_now_ms();
    for (int e = 0; e < B; e++) {
        for (int i = 0; i < P; i++) prompt[i] = (int)(splitmix(&rs) % (uint64_t)V);
        if (lf_cuda_prefill(b, e, prompt, P, 0, (uint64_t)e, &tok[e], NULL, err) || check_sampled(tok, e + 1, err)) {
            lf_fail_prefix(err, "prefill of entry %d", e);
            goto out;
        }
        entries[e] = e;
    }
    r->prefill_ms = lf_now_ms() - t0;
    r->prefill_tps = (double)B * P / (r->prefill_ms / 1e3);

    for (int k = 0; k < n_pts; k++) {
        point *p = &pts[k];
        for (int e = 0; e < B; e++) {
            if (lf_cuda_bench_fill(b, e, p->L, err)) {
                lf_fail_prefix(err, "bench fill of entry %d to length %d", e, p->L);
                goto out;
            }
            pos[e] = p->L;
            tok[e] = (int)(splitmix(&rs) % (uint64_t)V);
        }
        for (int s = 0; s < WARM_STEPS + TIMED_STEPS; s++) {
            double ts = lf_now_ms();
            if (lf_cuda_decode(b, B, entries, tok, pos, out, NULL, err) || check_sampled(out, B, err)) {
                lf_fail_prefix(err, "decode at length %d", pos[0]);
                goto out;
            }
            double dt = lf_now_ms() - ts;
            if (s >= WARM_STEPS) ms[s - WARM_STEPS] = dt;
            for (int e = 0; e < B; e++) {
                tok[e] = out[e];
                pos[e]++;
            }
        }
        p->n_steps = TIMED_STEPS;
        p->step_ms = median(ms, TIMED_STEPS);
        p->min_ms = ms[0];
        lf_cuda_step_profile prof;
        memset(&prof, 0, sizeof prof);
        if (lf_cuda_profile_step(b, B, entries, tok, pos, &prof, err)) {
            lf_fail_prefix(err, "profiled step at length %d", pos[0]);
            goto out;
        }
        p->bytes = prof.bytes_read;
        p->gemm_ms = prof.gemm_ms;
        p->attention_ms = prof.attention_ms;
        p->other_ms = prof.other_ms;
        p->profile_ms = prof.total_ms;
    }
    r->gpu_peak = lf_cuda_backend_peak_bytes(b);
    rc = 0;
out:
    lf_cuda_backend_free(b);
    free(prompt);
    free(entries);
    free(tok);
    free(pos);
    free(out);
    free(ms);
    return rc;
}

static int run_real(const lf_bench_cuda_args *a, lf_model *m, point *pts, int n_pts, result *r, lf_error *err) {
    const lf_gen_options *o = a->o;
    int P = a->prompt_len, G = a->gen_len, V = m->cfg.vocab_size;
    lf_engine_config ec;
    lf_engine_config_default(&ec);
    ec.device = LF_DEVICE_CUDA;
    ec.max_seqs = a->batch;
    ec.max_tokens = G;
    ec.ignore_eos = true;
    ec.policy = o->policy;
    ec.gpu_mem_fraction = o->gpu_mem_fraction;
    lf_engine *eng = NULL;
    int *prompt = NULL;
    double *dt = NULL;
    real_timer rt = {0};
    int rc = -1;
    if (lf_engine_create(m, &ec, &eng, err) || lf_engine_reserve(eng, P, err)) goto out;
    lf_engine_stats st;
    lf_engine_stats_get(eng, &st);
    int B = st.max_batch;
    prompt = malloc((size_t)P * sizeof *prompt);
    rt.t = calloc((size_t)G, sizeof *rt.t);
    dt = malloc((size_t)G * sizeof *dt);
    if (!prompt || !rt.t || !dt) {
        lf_fail(err, "out of memory");
        goto out;
    }
    rt.n = G;
    uint64_t rs = o->sampling.seed ^ 0x5eedull;
    for (int s = 0; s < B; s++) {
        for (int i = 0; i < P; i++) prompt[i] = (int)(splitmix(&rs) % (uint64_t)V);
        if (lf_engine_submit(eng, prompt, P, err) < 0) goto out;
    }
    if (lf_engine_run(eng, on_token, &rt, err)) goto out;
    lf_engine_stats_get(eng, &st);
    snprintf(r->device_name, sizeof r->device_name, "%s", st.device_name);
    snprintf(r->plan, sizeof r->plan, "%s", st.gpu_plan);
    r->entries = st.max_batch;
    r->capacity = st.capacity;
    r->weight_bytes = st.gpu_weight_bytes;
    r->kv_bytes_per_seq = st.gpu_kv_bytes_per_seq;
    r->aux_bytes_per_seq = st.gpu_aux_bytes_per_seq;
    r->gpu_peak = st.gpu_peak_bytes;
    r->prefill_ms = st.prefill_ms;
    r->prefill_tps = st.prefill_ms > 0 ? st.prompt_tokens / (st.prefill_ms / 1e3) : 0;
    r->measured_decode_ms = st.decode_ms;
    r->measured_decode_tokens = st.decode_tokens;
    /* token k >= 1 of request 0 came from the decode step at cache length
     * P + k - 1; its time is the gap since token k - 1 (the whole step:
     * the GPU step, the host bookkeeping and the callbacks of the batch) */
    const lf_generation *g = lf_engine_result(eng, 0);
    if (!g || g->n_tokens != G) {
        lf_fail(err, "request 0 generated %d tokens, expected %d", g ? g->n_tokens : -1, G);
        goto out;
    }
    double wbytes = (double)(m->decode_bytes_per_token ? m->decode_bytes_per_token : r->weight_bytes);
    for (int k = 0; k < n_pts; k++) {
        point *p = &pts[k];
        int n = 0;
        for (int L = p->L - 4; L <= p->L + 4; L++) {
            int tk = L - P + 1; /* the token that step produced */
            if (tk >= 2 && tk < G) dt[n++] = rt.t[tk] - rt.t[tk - 1]; /* tk == 1 includes the graph capture */
        }
        if (n == 0) { /* choose_points keeps L in P + 1 .. P + G - 2, and G >= 3 */
            lf_fail(err, "no decode step of request 0 near cache length %d", p->L);
            goto out;
        }
        p->n_steps = n;
        p->step_ms = median(dt, n);
        p->min_ms = dt[0];
        int held = p->L + 1 < r->capacity ? p->L + 1 : r->capacity;
        p->bytes = wbytes + (double)B * held * slot_bytes(m);
    }
    rc = 0;
out:
    lf_engine_free(eng);
    free(prompt);
    free(rt.t);
    free(dt);
    return rc;
}

/* What one bench run measured, with the numbers derived from it: what the
 * JSON and the text report print. */
typedef struct report {
    const lf_bench_cuda_args *a;
    const lf_config *cfg;
    const result *r;
    const lf_cuda_membw_result *bw;
    const point *pts, *last;
    int n_pts, B, P, G, budget;
    bool sampled;
    double load_ms, run_ms, sum_ms, avg_tps, avg_tps_prefill, steady_tps, measured_tps, bw_gbps;
    const char *how;
} report;

static void report_derive(report *t) {
    const result *r = t->r;
    t->B = r->entries;
    t->sum_ms = integrate(t->pts, t->n_pts, t->P, t->G);
    t->avg_tps = (double)t->B * (t->G - 1) / (t->sum_ms / 1e3);
    t->avg_tps_prefill = (double)t->B * t->G / ((t->sum_ms + r->prefill_ms) / 1e3);
    t->last = &t->pts[t->n_pts - 1];
    t->steady_tps = t->B / (t->last->step_ms / 1e3);
    t->measured_tps = r->measured_decode_ms > 0 ? r->measured_decode_tokens / (r->measured_decode_ms / 1e3) : 0;
    t->bw_gbps = t->bw->gbps_rw;
    t->how = t->sampled ? "sampled: decode steps timed at the sampled cache lengths (lf_cuda_bench_fill), "
                          "the average integrated over the generation by linear interpolation"
                        : "real: every sequence generated gen_len tokens through the engine; the per-length "
                          "times are request 0's steps as it passed those lengths";
}

/* The run's setting and memory plan, as JSON fields. */
static void json_setting(cJSON *j, const report *t) {
    const lf_bench_cuda_args *a = t->a;
    const lf_gen_options *o = a->o;
    const result *r = t->r;
    int B = t->B;
    cJSON_AddStringToObject(j, "device", "cuda");
    cJSON_AddStringToObject(j, "device_name", r->device_name);
    cJSON_AddStringToObject(j, "config", a->preset ? a->preset : o->model_dir);
    cJSON_AddStringToObject(j, "arch", t->cfg->arch_name);
    cJSON_AddStringToObject(j, "policy", lf_policy_name(o->policy.kind));
    cJSON_AddStringToObject(j, "kv_dtype", lf_kv_dtype_name(o->policy.kv_dtype));
    cJSON_AddNumberToObject(j, "budget", t->budget);
    cJSON_AddNumberToObject(j, "capacity", r->capacity);
    cJSON_AddStringToObject(j, "mode", t->sampled ? "sampled" : "real");
    cJSON_AddStringToObject(j, "method", t->how);
    cJSON_AddNumberToObject(j, "prompt_len", t->P);
    cJSON_AddNumberToObject(j, "gen_len", t->G);
    cJSON_AddNumberToObject(j, "batch_requested", a->batch);
    cJSON_AddNumberToObject(j, "max_batch", B);
    cJSON_AddStringToObject(j, "plan", r->plan);
    cJSON_AddNumberToObject(j, "weight_bytes", (double)r->weight_bytes);
    cJSON_AddNumberToObject(j, "kv_bytes_per_seq", (double)r->kv_bytes_per_seq);
    cJSON_AddNumberToObject(j, "aux_bytes_per_seq", (double)r->aux_bytes_per_seq);
    cJSON_AddNumberToObject(j, "kv_bytes_all_seqs", (double)r->kv_bytes_per_seq * B);
    if (t->sampled) {
        cJSON_AddNumberToObject(j, "workspace_bytes", (double)r->workspace_bytes);
        cJSON_AddNumberToObject(j, "gpu_free_bytes", (double)r->gpu_free);
        cJSON_AddNumberToObject(j, "gpu_total_bytes", (double)r->gpu_total);
    }
    cJSON_AddNumberToObject(j, "gpu_peak_bytes", (double)r->gpu_peak);
    if (a->membw_mb > 0) {
        cJSON_AddNumberToObject(j, "membw_gbps", t->bw->gbps_rw);
        cJSON_AddNumberToObject(j, "membw_gbps_read", t->bw->gbps_read);
        cJSON_AddNumberToObject(j, "membw_gbps_best", t->bw->gbps_rw_best);
        cJSON_AddNumberToObject(j, "membw_bytes", (double)t->bw->bytes);
    } else {
        cJSON_AddNullToObject(j, "membw_gbps");
    }
}

/* One sampled cache length, as a JSON object. */
static cJSON *json_point(const report *t, const point *p) {
    cJSON *q = cJSON_CreateObject();
    cJSON_AddNumberToObject(q, "L", p->L);
    cJSON_AddNumberToObject(q, "step_ms", p->step_ms);
    cJSON_AddNumberToObject(q, "steps_timed", p->n_steps);
    cJSON_AddNumberToObject(q, "tokens_per_s", t->B / (p->step_ms / 1e3));
    cJSON_AddNumberToObject(q, "bytes_read", p->bytes);
    double gbps = p->bytes / (p->step_ms * 1e6);
    cJSON_AddNumberToObject(q, "gbps", gbps);
    if (t->bw_gbps > 0) cJSON_AddNumberToObject(q, "roofline_fraction", gbps / t->bw_gbps);
    else cJSON_AddNullToObject(q, "roofline_fraction");
    if (t->sampled) {
        cJSON_AddNumberToObject(q, "profile_total_ms", p->profile_ms);
        cJSON_AddNumberToObject(q, "gemm_ms", p->gemm_ms);
        cJSON_AddNumberToObject(q, "attention_ms", p->attention_ms);
        cJSON_AddNumberToObject(q, "other_ms", p->other_ms);
    }
    return q;
}

static void print_json(const report *t) {
    const result *r = t->r;
    cJSON *j = cJSON_CreateObject();
    json_setting(j, t);
    cJSON_AddNumberToObject(j, "load_ms", t->load_ms);
    cJSON_AddNumberToObject(j, "run_ms", t->run_ms);
    cJSON_AddNumberToObject(j, "prefill_ms", r->prefill_ms);
    cJSON_AddNumberToObject(j, "prefill_tokens_per_s", r->prefill_tps);
    cJSON *arr = cJSON_AddArrayToObject(j, "points");
    for (int i = 0; i < t->n_pts; i++) cJSON_AddItemToArray(arr, json_point(t, &t->pts[i]));
    cJSON_AddNumberToObject(j, "steady_L", t->last->L);
    cJSON_AddNumberToObject(j, "steady_step_ms", t->last->step_ms);
    cJSON_AddNumberToObject(j, "steady_tokens_per_s", t->steady_tps);
    cJSON_AddNumberToObject(j, "integrated_decode_ms", t->sum_ms);
    cJSON_AddNumberToObject(j, "avg_tokens_per_s", t->avg_tps);
    cJSON_AddNumberToObject(j, "avg_tokens_per_s_with_prefill", t->avg_tps_prefill);
    if (!t->sampled) {
        cJSON_AddNumberToObject(j, "measured_decode_ms", r->measured_decode_ms);
        cJSON_AddNumberToObject(j, "measured_avg_tokens_per_s", t->measured_tps);
        cJSON_AddNumberToObject(j, "measured_avg_tokens_per_s_with_prefill",
                                (double)t->B * t->G / ((r->measured_decode_ms + r->prefill_ms) / 1e3));
    }
    char *s = cJSON_PrintUnformatted(j);
    if (s) puts(s);
    free(s);
    cJSON_Delete(j);
}

static void print_text(const report *t) {
    const lf_bench_cuda_args *a = t->a;
    const lf_gen_options *o = a->o;
    const result *r = t->r;
    int B = t->B, P = t->P, G = t->G;
    printf("device      %s\n", r->device_name);
    printf("model       %s (%s), policy %s, budget %d, KV cache %s, capacity %d slots per layer\n",
           a->preset ? a->preset : o->model_dir, t->cfg->arch_name, lf_policy_name(o->policy.kind), t->budget,
           lf_kv_dtype_name(o->policy.kv_dtype),
           r->capacity);
    printf("batch       %d sequences at once (%s)\n", B, r->plan);
    printf("memory      weights %.2f GB, K+V %.1f MB per sequence (%.2f GB for %d), peak GPU %.2f GB\n",
           r->weight_bytes / 1e9, r->kv_bytes_per_seq / 1e6, (double)r->kv_bytes_per_seq * B / 1e9, B,
           r->gpu_peak / 1e9);
    if (a->membw_mb > 0)
        printf("bandwidth   %.0f GB/s device-to-device copy (read + write; %.0f GB/s read), the roofline\n",
               t->bw->gbps_rw, t->bw->gbps_read);
    printf("prefill     %d x %d tokens in %.1f ms: %.0f tokens/s\n", B, P, r->prefill_ms, r->prefill_tps);
    printf("mode        %s\n", t->how);
    printf("%8s %10s %12s %14s %9s %9s %9s %9s %9s\n", "L", "step ms", "tokens/s", "bytes/step", "GB/s",
           "roofline", "gemm ms", "attn ms", "other ms");
    for (int i = 0; i < t->n_pts; i++) {
        const point *p = &t->pts[i];
        double gbps = p->bytes / (p->step_ms * 1e6);
        printf("%8d %10.3f %12.1f %14.4g %9.1f %9.3f", p->L, p->step_ms, B / (p->step_ms / 1e3), p->bytes, gbps,
               t->bw_gbps > 0 ? gbps / t->bw_gbps : 0.0);
        if (t->sampled) printf(" %9.3f %9.3f %9.3f\n", p->gemm_ms, p->attention_ms, p->other_ms);
        else printf(" %9s %9s %9s\n", "-", "-", "-");
    }
    printf("steady      %.1f tokens/s at L = %d\n", t->steady_tps, t->last->L);
    printf("average     %.1f tokens/s over %d generated tokens per sequence (integrated from the points above; "
           "%.1f with the prefill)\n",
           t->avg_tps, G, t->avg_tps_prefill);
    if (!t->sampled) printf("measured    %.1f tokens/s (the engine's decode time)\n", t->measured_tps);
}

int lf_bench_cuda(const lf_bench_cuda_args *a) {
    const lf_gen_options *o = a->o;
    lf_error err = {{0}};
    int P = a->prompt_len, G = a->gen_len;
    bool sampled = a->mode ? !strcmp(a->mode, "sampled") : G > 2048;
    bool budgeted = o->policy.kind != LF_POLICY_FULL;
    int budget = budgeted ? o->policy.budget : 0;
    long need = (long)P + G;
    int capacity = (int)(budgeted && budget < need ? budget : need); /* as the engine sizes entries */
    point pts[MAX_POINTS];
    int n_pts = 0;
    if (choose_points(a, sampled, budgeted, budget, capacity, pts, &n_pts)) return 2;

    lf_cuda_membw_result bw;
    memset(&bw, 0, sizeof bw);
    if (a->membw_mb > 0 && lf_cuda_membw_measure((size_t)a->membw_mb << 20, 5, &bw, &err)) {
        lf_cli_error(CMD, "%s", err.msg);
        return 1;
    }
    lf_model *m = NULL;
    double t0 = lf_now_ms();
    if (a->preset ? lf_model_random(a->preset, a->dtype, o->sampling.seed, &m, &err)
                  : lf_model_load_mode(o->model_dir, LF_WEIGHTS_BF16, &m, &err)) {
        lf_cli_error(CMD, "%s", err.msg);
        return 1;
    }
    double load_ms = lf_now_ms() - t0;
    result r;
    memset(&r, 0, sizeof r);
    t0 = lf_now_ms();
    int fail = sampled ? run_sampled(a, m, capacity, pts, n_pts, &r, &err) : run_real(a, m, pts, n_pts, &r, &err);
    double run_ms = lf_now_ms() - t0;
    if (fail) {
        lf_cli_error(CMD, "--device cuda: %s", err.msg);
        lf_model_free(m);
        return 1;
    }
    report t = {.a = a, .cfg = lf_model_config(m), .r = &r, .bw = &bw, .pts = pts, .n_pts = n_pts, .P = P, .G = G,
                .budget = budget, .sampled = sampled, .load_ms = load_ms, .run_ms = run_ms};
    report_derive(&t);
    if (a->json) print_json(&t);
    else print_text(&t);
    lf_model_free(m);
    return 0;
}
#endif
