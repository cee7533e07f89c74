/* longflow eval: accuracy of a model + KV policy on a math benchmark in the
 * {"index","question","true_answer"} JSONL format. Problems run batched
 * through the engine; each finished problem is appended to a results JSONL
 * file at once, so an interrupted run resumes where it stopped. The file's
 * first line records the run's settings: a run with other settings refuses
 * to resume from it. The summary is computed from the file's records, so a
 * resumed run reports the whole of it. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/input.h"
#include "longflow.h"
#include "core/error.h"
#include "core/file.h"
#include "core/timer.h"
#include "eval/answer.h"
#include "eval/problems.h"

#define LF_R1_INSTRUCTION "Please reason step by step, and put your final answer within \\boxed{}."
#define CMD "eval"

static void eval_usage(FILE *f) {
    fprintf(f,
            "usage: longflow eval [--model DIR] --data FILE.jsonl --output FILE [--policy P --budget N|N%%] [options]\n"
            "\n"
            "  --data FILE            JSONL with {\"index\", \"question\", \"true_answer\"} per line (distinct indices)\n"
            "  --output FILE          per-problem results JSONL (required; its first line records the settings).\n"
            "                         Running again with the same settings resumes from it; other settings\n"
            "                         are refused (the message names the setting)\n"
            "  --fresh                overwrite the results file instead of resuming from it\n"
            "  --limit N              first N problems only\n"
            "  --batch N|max          problems in flight at once (default 8; max = as many as fit, --device cuda)\n"
            "  --budget N             KV slots per sequence and layer\n"
            "  --kv-dtype fp32|bf16|fp8  " LF_KV_DTYPE_HELP
            "  --budget P%%            P percent of each problem's full-cache output length, read from\n"
            "                         --reference FILE (the results of a --policy full run)\n"
            "  --instruction TEXT     appended to each question on a new line (default: the model's\n"
            "                         longflow.json \"eval_instruction\" if any, else the R1 eval\n"
            "                         instruction \"" LF_R1_INSTRUCTION "\"; \"\" for none)\n"
            "  --max-tokens N         per problem (default: the model's, as for generate, else %d)\n"
            "  --json                 print the summary as one JSON object\n"
            "  --device cpu|cuda      (default cpu); on cuda the entries are sized for the largest budget\n"
            "and the model, chat-template, sampling, policy, --threads and --gpu-mem-fraction flags of\n"
            "longflow generate.\n",
            LF_DEFAULT_MAX_TOKENS);
}

typedef struct problem {
    int index;
    char *question;
    char *truth;
    int budget;
    int *ids; /* the rendered prompt (problems still to run) */
    int n_ids;
    bool done; /* already in the results file */
} problem;

typedef struct eval_args {
    lf_gen_options o;
    const char *data, *output, *reference, *instruction; /* instruction NULL: the model's or R1's */
    const char *budget_str;
    double budget_pct;
    int limit, batch;
    bool fresh;
} eval_args;

typedef struct eval_state {
    const lf_tokenizer *tok;
    const lf_model *model;
    const lf_engine *eng;
    const lf_engine_config *ec;
    problem *probs;
    int *req_to_prob;
    FILE *out;
    int n_total, n_done, n_correct;
    long tokens;
    double t0;
    int run;         /* this run's number in the results file (1 = the first) */
    bool progress_shown;
    int write_errors;
    int run_done; /* problems finished in this run (the ETA's basis) */
} eval_state;

static void free_problems(problem *p, int n) {
    for (int i = 0; p && i < n; i++) {
        free(p[i].question);
        free(p[i].truth);
        free(p[i].ids);
    }
    free(p);
}

/* One data line into p; prints the error (naming file and line) on failure. */
static int parse_problem(const char *path, int line_no, const char *line, int n, problem *p) {
    lf_eval_problem ep;
    lf_error err;
    memset(p, 0, sizeof *p);
    if (lf_eval_problem_parse(line, strlen(line), n, &ep, &err)) {
        lf_cli_error(CMD, "%s:%d: %s", path, line_no, err.msg);
        return -1;
    }
    p->index = ep.index;
    p->question = ep.question;
    p->truth = ep.truth;
    return 0;
}

/* The problems of the data file (the first `limit`, 0 = all). Indices must
 * be distinct: a repeated one is an error naming both lines. */
static int load_problems(const char *path, int limit, problem **out, int *n_out) {
    char *text = NULL;
    *out = NULL;
    *n_out = 0;
    if (lf_cli_read_prompt_file(CMD, path, &text, NULL)) return -1;
    int cap = 0, n = 0, line_no = 0;
    problem *p = NULL;
    int *lines = NULL; /* data line of each problem, for the duplicate message */
    int rc = -1;
    for (char *line = text, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        line_no++;
        while (*line == ' ' || *line == '\t' || *line == '\r') line++;
        if (!*line) continue;
        if (limit > 0 && n >= limit) break;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            problem *np = realloc(p, (size_t)cap * sizeof *p);
            if (np) p = np;
            int *nl = realloc(lines, (size_t)cap * sizeof *lines);
            if (nl) lines = nl;
            if (!np || !nl) {
                lf_cli_error(CMD, "out of memory");
                goto out;
            }
        }
        int r = parse_problem(path, line_no, line, n, &p[n]);
        n++; /* p[n-1] holds what parse_problem allocated, freed on error */
        if (r) goto out;
        lines[n - 1] = line_no;
        for (int i = 0; i < n - 1; i++)
            if (p[i].index == p[n - 1].index) {
                lf_cli_error(CMD, "%s:%d: index %d repeats the index of line %d (indices must be distinct)", path,
                             line_no, p[n - 1].index, lines[i]);
                goto out;
            }
    }
    if (n == 0) lf_cli_error(CMD, "%s: no problems found", path);
    else rc = 0;
out:
    free(text);
    free(lines);
    if (rc) {
        free_problems(p, n);
        return -1;
    }
    *out = p;
    *n_out = n;
    return 0;
}

/* Per-problem budgets from a full-cache reference run. */
static int apply_percent_budget(const char *ref_path, double pct, problem *p, int n) {
    char *text = NULL;
    lf_error err;
    if (lf_read_file(ref_path, &text, NULL, &err)) {
        lf_cli_error(CMD, "--reference: %s", err.msg);
        return -1;
    }
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lf_eval_result r;
        if (lf_eval_result_parse(line, strlen(line), &r) || !r.has_index || !r.has_n_tokens) continue;
        for (int i = 0; i < n; i++)
            if (p[i].index == r.index) /* up to 10x INT_MAX tokens: clamp before the cast */
                p[i].budget = (int)fmin(ceil(r.n_tokens * pct / 100.0), (double)INT_MAX);
    }
    free(text);
    for (int i = 0; i < n; i++) {
        if (p[i].budget == 0) {
            lf_cli_error(CMD, "--reference %s has no result for problem index %d", ref_path, p[i].index);
            return -1;
        }
        if (p[i].budget < LF_SNAPKV_MIN_BUDGET) p[i].budget = LF_SNAPKV_MIN_BUDGET; /* SnapKV's minimum */
    }
    return 0;
}

/* ---- settings line and resuming ------------------------------------------ */

/* What decides a problem's output: a results file written with other
 * settings cannot be resumed. Paths as given resolved to absolute ones. */
static cJSON *settings_json(const eval_args *ea, const lf_engine_config *ec, const char *model_dir,
                            const char *instruction, lf_chat_family fam) {
    cJSON *s = cJSON_CreateObject();
    char buf[PATH_MAX];
    cJSON_AddStringToObject(s, "model", realpath(model_dir, buf) ? buf : model_dir);
    cJSON_AddStringToObject(s, "data", realpath(ea->data, buf) ? buf : ea->data);
    cJSON_AddStringToObject(s, "device", ec->device == LF_DEVICE_CUDA ? "cuda" : "cpu");
    cJSON_AddStringToObject(s, "policy", lf_policy_name(ec->policy.kind));
    cJSON_AddStringToObject(s, "budget", ea->budget_str ? ea->budget_str : "");
    if (ea->reference) cJSON_AddStringToObject(s, "reference", realpath(ea->reference, buf) ? buf : ea->reference);
    cJSON_AddNumberToObject(s, "sinks", ec->policy.sinks);
    cJSON_AddNumberToObject(s, "recent", ec->policy.recent);
    cJSON_AddNumberToObject(s, "evict_every", ec->policy.evict_every);
    if (ec->policy.protect_prompt > 0) /* (only when set: older results files resume) */
        cJSON_AddNumberToObject(s, "protect_prompt", ec->policy.protect_prompt);
    cJSON_AddStringToObject(s, "kv_dtype", lf_kv_dtype_name(ec->policy.kv_dtype));
    cJSON_AddNumberToObject(s, "max_tokens", ec->max_tokens);
    cJSON_AddBoolToObject(s, "ignore_eos", ec->ignore_eos);
    cJSON_AddNumberToObject(s, "temperature", ec->sampling.temperature);
    cJSON_AddNumberToObject(s, "top_k", ec->sampling.top_k);
    cJSON_AddNumberToObject(s, "top_p", ec->sampling.top_p);
    cJSON_AddNumberToObject(s, "min_p", ec->sampling.min_p);
    cJSON_AddNumberToObject(s, "repetition_penalty", ec->sampling.repetition_penalty);
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)ec->sampling.seed);
    cJSON_AddStringToObject(s, "seed", buf);
    cJSON_AddStringToObject(s, "chat_template", lf_chat_family_name(fam));
    cJSON_AddStringToObject(s, "system", ea->o.system ? ea->o.system : "");
    cJSON_AddBoolToObject(s, "no_think", ea->o.no_think);
    cJSON_AddStringToObject(s, "instruction", instruction);
    return s;
}

/* The first setting whose value differs, or NULL. */
static const char *settings_mismatch(const cJSON *stored, const cJSON *now, char **was, char **is) {
    const cJSON *it;
    cJSON_ArrayForEach(it, now) {
        const cJSON *old = cJSON_GetObjectItemCaseSensitive(stored, it->string);
        if (old && cJSON_Compare(old, it, true)) continue;
        *was = old ? cJSON_PrintUnformatted(old) : strdup("(none)");
        *is = cJSON_PrintUnformatted(it);
        return it->string;
    }
    return NULL;
}

/* Check the stored settings line against this run's. Prints; -1 to refuse. */
static int check_settings(const char *path, const char *first_line, const cJSON *now) {
    cJSON *j = first_line ? cJSON_Parse(first_line) : NULL;
    const cJSON *stored = j ? cJSON_GetObjectItemCaseSensitive(j, "settings") : NULL;
    int rc = 0;
    if (!cJSON_IsObject(stored)) {
        lf_cli_error(CMD, "%s: has results but no settings line (written by an older longflow?): cannot tell whether "
                          "they match this run; give --fresh to start over, or another --output", path);
        rc = -1;
    } else {
        char *was = NULL, *is = NULL;
        const char *key = settings_mismatch(stored, now, &was, &is);
        if (key) {
            lf_cli_error(CMD, "%s was written with %s %s, this run has %s %s: give the same settings to resume, "
                              "--fresh to start over, or another --output", path, key, was, key, is);
            rc = -1;
        }
        free(was);
        free(is);
    }
    cJSON_Delete(j);
    return rc;
}

/* Mark the problems the results file already holds (each index once) and
 * find this run's number. A file without results (a run that stopped before
 * its first) is started over: *restart = true. Returns -1 (printed) when the
 * file's results were written with other settings than this run's. */
static int read_existing(const char *path, const cJSON *settings, problem *p, int n, eval_state *st, bool *restart) {
    char *text = NULL;
    lf_error err;
    *restart = true;
    if (!lf_file_exists(path)) return 0;
    if (lf_read_file(path, &text, NULL, &err)) {
        lf_cli_error(CMD, "%s", err.msg);
        return -1;
    }
    char *save = NULL, *first = NULL;
    int rc = 0;
    for (char *line = strtok_r(text, "\n", &save); line && rc == 0; line = strtok_r(NULL, "\n", &save)) {
        lf_eval_result r;
        /* (a line cut by an interruption does not parse: that problem is redone) */
        bool ok = lf_eval_result_parse(line, strlen(line), &r) == 0 && r.has_index;
        if (!first) first = line;
        if (ok && *restart) { /* the first result: the settings must match */
            *restart = false;
            rc = check_settings(path, first, settings);
        }
        if (ok && r.run >= st->run) st->run = r.run + 1;
        for (int i = 0; rc == 0 && ok && i < n; i++)
            if (p[i].index == r.index && !p[i].done) {
                p[i].done = true;
                st->n_done++;
                st->n_correct += r.correct;
                break;
            }
    }
    free(text);
    return rc;
}

/* Open the results file: overwrite (--fresh, or a file without results) with
 * the settings line first, or append after a check of the stored settings. */
static FILE *open_results(const char *path, const cJSON *settings, bool fresh, problem *p, int n, eval_state *st) {
    st->run = 1;
    bool start = true;
    if (!fresh && read_existing(path, settings, p, n, st, &start)) return NULL;
    if (start) st->run = 1;
    FILE *out = fopen(path, start ? "w" : "a+");
    if (!out) {
        lf_cli_error(CMD, "%s: cannot open for writing: %s", path, strerror(errno));
        return NULL;
    }
    if (start) {
        cJSON *line = cJSON_CreateObject();
        cJSON_AddItemReferenceToObject(line, "settings", (cJSON *)settings);
        char *s = cJSON_PrintUnformatted(line);
        cJSON_Delete(line);
        if (!s || fprintf(out, "%s\n", s) < 0) st->write_errors++;
        free(s);
    } else if (fseek(out, -1, SEEK_END) == 0 && fgetc(out) != '\n') {
        /* an interrupted run left half a line: start the next result on its own line */
        fseek(out, 0, SEEK_END);
        fputc('\n', out);
    }
    if (st->n_done > 0)
        fprintf(stderr, "[eval] resuming: %d of %d problems already in %s\n", st->n_done, n, path);
    return out;
}

/* ---- running -------------------------------------------------------------- */

static void progress(eval_state *st) {
    double dt = (lf_now_ms() - st->t0) / 1e3;
    double tps = dt > 0 ? st->tokens / dt : 0;
    int left = st->n_total - st->n_done;
    double eta = st->run_done > 0 ? dt / st->run_done * left : 0;
    fprintf(stderr, "\r[eval] %d/%d problems, %d correct, %.1f tok/s, elapsed %.0fs, ETA %.0fs   ", st->n_done,
            st->n_total, st->n_correct, tps, dt, eta);
    fflush(stderr);
    st->progress_shown = true;
}

/* The results line of a finished problem. */
static cJSON *result_json(const eval_state *st, const problem *p, const lf_generation *g, const char *text,
                          const char *pred, bool ok) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "index", p->index);
    cJSON_AddStringToObject(j, "true_answer", p->truth);
    if (pred) cJSON_AddStringToObject(j, "pred", pred);
    else cJSON_AddNullToObject(j, "pred");
    cJSON_AddBoolToObject(j, "correct", ok);
    cJSON_AddNumberToObject(j, "n_prompt", g->n_prompt);
    cJSON_AddNumberToObject(j, "n_tokens", g->n_tokens);
    cJSON_AddStringToObject(j, "finish_reason", g->finish_reason ? g->finish_reason : "");
    cJSON_AddNumberToObject(j, "budget", p->budget);
    lf_kv_report kv;
    lf_gen_kv_report_fill(&kv, st->model, st->ec, g);
    lf_gen_kv_report_json(&kv, j);
    cJSON_AddNumberToObject(j, "kv_tokens_peak", (double)g->kv_tokens_peak);
    lf_engine_stats es;
    lf_engine_stats_get(st->eng, &es);
    cJSON_AddNumberToObject(j, "kv_bytes_all_peak", (double)es.kv_bytes_peak); /* all sequences, this run so far */
    cJSON_AddNumberToObject(j, "run", st->run);
    cJSON_AddNumberToObject(j, "elapsed_s", (lf_now_ms() - st->t0) / 1e3);
    cJSON_AddStringToObject(j, "text", text);
    return j;
}

static void on_token(void *user, const lf_generation *g, int token) {
    eval_state *st = user;
    (void)token;
    st->tokens++;
    if (!g->done) {
        if ((st->tokens & 255) == 0) progress(st);
        return;
    }
    problem *p = &st->probs[st->req_to_prob[g->id]];
    int n_text = g->n_tokens;
    if (n_text > 0 && !st->ec->ignore_eos && lf_config_is_eos(lf_model_config(st->model), g->tokens[n_text - 1]))
        n_text--;
    char *text = NULL;
    lf_error err;
    if (lf_tokenizer_decode(st->tok, g->tokens, n_text, false, &text, NULL, &err)) text = strdup("");
    char *pred = lf_extract_boxed(text);
    bool ok = lf_answers_match(pred, p->truth);
    cJSON *j = result_json(st, p, g, text ? text : "", pred, ok);
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    if (!s || fprintf(st->out, "%s\n", s) < 0 || fflush(st->out) != 0) st->write_errors++;
    free(s);
    cJSON_Delete(j);
    free(pred);
    free(text);
    st->n_done++;
    st->run_done++;
    st->n_correct += ok;
    progress(st);
}

/* Render the chat prompt of every problem; *longest = the longest prompt's
 * tokens. */
static int render_prompts(const eval_args *ea, const lf_tokenizer *tok, lf_chat_family fam, const char *instruction,
                          problem *probs, int n, int *longest) {
    lf_error err = {{0}};
    *longest = 0;
    for (int i = 0; i < n; i++) {
        size_t qn = strlen(probs[i].question) + strlen(instruction) + 2;
        char *user = malloc(qn);
        if (!user) {
            lf_cli_error(CMD, "out of memory");
            return -1;
        }
        snprintf(user, qn, "%s%s%s", probs[i].question, *instruction ? "\n" : "", instruction);
        lf_chat_message m[2];
        int nm = 0;
        if (ea->o.system) m[nm++] = (lf_chat_message){.role = "system", .content = (char *)ea->o.system};
        m[nm++] = (lf_chat_message){.role = "user", .content = user};
        lf_chat_options copt = {.add_generation_prompt = true, .enable_thinking = !ea->o.no_think};
        char *rendered = NULL;
        int r = lf_chat_apply(fam, tok, m, nm, &copt, &rendered, &probs[i].ids, &probs[i].n_ids, &err);
        free(user);
        free(rendered);
        if (r) {
            lf_cli_error(CMD, "problem %d: %s", probs[i].index, err.msg);
            return -1;
        }
        if (probs[i].n_ids > *longest) *longest = probs[i].n_ids;
    }
    return 0;
}

static int submit_all(lf_engine *eng, problem *probs, int n, int *req_to_prob) {
    lf_error err = {{0}};
    for (int i = 0; i < n; i++) {
        if (probs[i].done) continue;
        lf_request_params rp;
        lf_request_params_default(eng, probs[i].ids, probs[i].n_ids, &rp);
        if (probs[i].budget > 0) rp.budget = probs[i].budget; /* its own (--budget P%); else the engine's */
        int id = lf_engine_submit_params(eng, &rp, &err);
        if (id < 0) {
            lf_cli_error(CMD, "problem %d: %s", probs[i].index, err.msg);
            return -1;
        }
        req_to_prob[id] = i;
    }
    return 0;
}

/* ---- the summary, from the results file ------------------------------------ */

typedef struct summary {
    int problems, correct, truncated;
    long out_tokens;
    double seconds;          /* wall time of all runs that wrote the file */
    lf_kv_report kv;         /* per problem, the largest of each */
    double kv_all_peak;      /* all sequences at once, the largest run's */
} summary;

static void max_size(size_t *acc, double v) {
    if (v > (double)*acc) *acc = (size_t)v;
}

/* Tally one stored record (the first of each index of the problem set). */
static void tally(summary *s, const lf_eval_result *r, double *run_secs, int n_runs) {
    s->problems++;
    s->correct += r->correct;
    s->truncated += r->truncated;
    s->out_tokens += r->n_tokens;
    max_size(&s->kv.bytes, r->kv_bytes);
    max_size(&s->kv.in_use_peak, r->kv_in_use_peak);
    max_size(&s->kv.full_bytes, r->kv_full_bytes);
    max_size(&s->kv.full_in_use_peak, r->kv_full_in_use_peak);
    if (r->kv_all_peak > s->kv_all_peak) s->kv_all_peak = r->kv_all_peak;
    if (r->run >= 1 && r->run < n_runs && r->elapsed_s > run_secs[r->run]) run_secs[r->run] = r->elapsed_s;
}

static int summarize(const char *path, const problem *p, int n, int n_runs, summary *s) {
    char *text = NULL;
    lf_error err;
    memset(s, 0, sizeof *s);
    if (lf_read_file(path, &text, NULL, &err)) {
        lf_cli_error(CMD, "%s", err.msg);
        return -1;
    }
    bool *seen = calloc((size_t)n, sizeof *seen);
    double *run_secs = calloc((size_t)n_runs + 1, sizeof *run_secs);
    if (!seen || !run_secs) {
        lf_cli_error(CMD, "out of memory");
        free(seen);
        free(run_secs);
        free(text);
        return -1;
    }
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lf_eval_result r;
        if (lf_eval_result_parse(line, strlen(line), &r) || !r.has_index) continue;
        for (int i = 0; i < n; i++)
            if (p[i].index == r.index && !seen[i]) {
                seen[i] = true;
                tally(s, &r, run_secs, n_runs + 1);
                break;
            }
    }
    for (int r = 1; r <= n_runs; r++) s->seconds += run_secs[r];
    free(seen);
    free(run_secs);
    free(text);
    return 0;
}

static void print_summary(const eval_args *ea, const char *out_path, const summary *s) {
    double acc = s->problems ? (double)s->correct / s->problems : 0;
    double avg_len = s->problems ? (double)s->out_tokens / s->problems : 0;
    double tps = s->seconds > 0 ? s->out_tokens / s->seconds : 0;
    const char *pol = lf_policy_name(ea->o.policy.kind);
    if (ea->o.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "data", ea->data);
        cJSON_AddStringToObject(j, "policy", pol);
        cJSON_AddStringToObject(j, "kv_dtype", lf_kv_dtype_name(ea->o.policy.kv_dtype));
        if (ea->budget_pct > 0) {
            cJSON_AddNullToObject(j, "budget");
            cJSON_AddNumberToObject(j, "budget_percent", ea->budget_pct);
        } else {
            cJSON_AddNumberToObject(j, "budget", ea->o.policy.kind == LF_POLICY_FULL ? 0 : ea->o.policy.budget);
        }
        cJSON_AddNumberToObject(j, "problems", s->problems);
        cJSON_AddNumberToObject(j, "correct", s->correct);
        cJSON_AddNumberToObject(j, "accuracy", acc);
        cJSON_AddNumberToObject(j, "avg_output_tokens", avg_len);
        cJSON_AddNumberToObject(j, "truncated", s->truncated);
        cJSON_AddNumberToObject(j, "tokens_per_s", tps);
        cJSON_AddNumberToObject(j, "seconds", s->seconds);
        lf_gen_kv_report_json(&s->kv, j);
        cJSON_AddNumberToObject(j, "kv_bytes_peak", s->kv_all_peak);
        cJSON_AddStringToObject(j, "results", out_path);
        char *t = cJSON_PrintUnformatted(j);
        if (t) puts(t);
        free(t);
        cJSON_Delete(j);
        return;
    }
    printf("%s: policy %s%s%s: accuracy %.2f%% (%d/%d), average output %.0f tokens, %.1f tokens/s; "
           "peak KV memory of all sequences at once %.2f MB; results in %s\n",
           ea->data, pol, ea->budget_str ? " budget " : "", ea->budget_str ? ea->budget_str : "", 100 * acc,
           s->correct, s->problems, avg_len, tps, s->kv_all_peak / 1e6, out_path);
    printf("per problem (largest): ");
    lf_gen_kv_report_print(&s->kv, pol, stdout);
    putchar('\n');
    if (s->truncated)
        fprintf(stderr, "longflow eval: note: %d of %d outputs stopped at the --max-tokens limit before the model "
                        "finished; a larger --max-tokens N lets them finish\n", s->truncated, s->problems);
}

/* ---- flags ------------------------------------------------------------------ */

static int parse_budget(eval_args *ea, lf_args *a, const char *flag) {
    if (!(ea->budget_str = lf_arg_value(a, flag))) return -1;
    const char *b = ea->budget_str;
    size_t n = strlen(b);
    char *end;
    errno = 0;
    if (n > 1 && b[n - 1] == '%') {
        ea->budget_pct = strtod(b, &end);
        if (errno || end != b + n - 1 || !(ea->budget_pct > 0 && ea->budget_pct <= 1000)) {
            lf_cli_error(CMD, "--budget: '%s' is not a percentage in (0, 1000]", b);
            return -1;
        }
        ea->o.policy.budget = 1 << 30; /* per problem, set from --reference */
    } else {
        long v = strtol(b, &end, 10);
        if (errno || *end || end == b || v < 1 || v > 100000000) {
            lf_cli_error(CMD, "--budget: '%s' is not a positive number of slots or a percentage (20%%)", b);
            return -1;
        }
        ea->o.policy.budget = (int)v;
    }
    ea->o.budget_given = true;
    return 0;
}

/* Returns 0 to run, 1 after --help, 2 on a bad flag (printed). */
static int parse_flags(eval_args *ea, int argc, char **argv) {
    lf_args a;
    lf_args_init(&a, CMD, argc, argv);
    const char *flag;
    while ((flag = lf_args_next(&a))) {
        const char **sv = !strcmp(flag, "--data")          ? &ea->data
                          : !strcmp(flag, "--output")      ? &ea->output
                          : !strcmp(flag, "--reference")   ? &ea->reference
                          : !strcmp(flag, "--instruction") ? &ea->instruction
                                                           : NULL;
        if (!strcmp(flag, "--help") || !strcmp(flag, "-h")) {
            eval_usage(stdout);
            return 1;
        } else if (sv) {
            if (!(*sv = lf_arg_value(&a, flag))) return 2;
        } else if (!strcmp(flag, "--limit")) {
            if (!lf_arg_int(&a, flag, 1, 100000000, &ea->limit)) return 2;
        } else if (!strcmp(flag, "--batch")) {
            if (!lf_gen_parse_batch(&a, flag, &ea->batch)) return 2;
        } else if (!strcmp(flag, "--fresh")) {
            ea->fresh = true;
        } else if (!strcmp(flag, "--budget")) {
            if (parse_budget(ea, &a, flag)) return 2;
        } else {
            int r = lf_gen_options_parse(&ea->o, &a, flag);
            if (r < 0) return 2;
            if (r == 0) {
                lf_cli_error(CMD, "unknown option '%s' (see longflow eval --help)", flag);
                return 2;
            }
        }
    }
    if (a.inline_val) {
        lf_args_next(&a); /* reports the stray value */
        return 2;
    }
    return 0;
}

/* Checks of the flags that need no file. Prints; -1 on error. */
static int check_flags(eval_args *ea) {
    lf_gen_options *o = &ea->o;
    if (!ea->data) {
        lf_cli_error(CMD, "--data FILE.jsonl is required");
        return -1;
    }
    if (o->prompt || o->prompt_file || o->prompt_ids || o->messages_file) {
        lf_cli_error(CMD, "the prompts come from --data; --prompt, --prompt-file, --prompt-ids and --messages do not apply");
        return -1;
    }
    if (o->split_think || o->chat) {
        lf_cli_error(CMD, "%s does not apply: eval always uses the chat template and scores the \\boxed{} answer",
                     o->split_think ? "--split-think" : "--chat");
        return -1;
    }
    if (o->max_seqs >= 0) ea->batch = o->max_seqs; /* --max-seqs, the generate spelling of --batch */
    o->max_seqs = ea->batch;
    if (lf_gen_check_device(o, CMD)) return -1;
    if (ea->budget_pct > 0 && !ea->reference) {
        lf_cli_error(CMD, "--budget %s needs --reference FILE: the results of a --policy full run on the same data",
                     ea->budget_str);
        return -1;
    }
    if (!ea->output) {
        lf_cli_error(CMD, "--output FILE is required: the per-problem results go there, and a later run with the "
                          "same settings resumes from it (keep it outside the source tree)");
        return -1;
    }
    return 0;
}

/* ---- the command ------------------------------------------------------------ */

typedef struct eval_run {
    problem *probs;
    int n_probs;
    lf_model *model;
    lf_tokenizer *tok;
    lf_engine *eng;
    FILE *out;
    int *req_to_prob;
    cJSON *settings;
    lf_model_defaults defaults;
    lf_chat_family fam;
    const char *instruction;
} eval_run;

static void eval_run_free(eval_run *r) {
    lf_gen_model_defaults_free(&r->defaults);
    cJSON_Delete(r->settings);
    if (r->out) fclose(r->out);
    free(r->req_to_prob);
    lf_engine_free(r->eng);
    lf_tokenizer_free(r->tok);
    lf_model_free(r->model);
    free_problems(r->probs, r->n_probs);
}

/* Data, model, tokenizer, template, instruction and prompts. */
static int eval_prepare(eval_args *ea, eval_run *r, lf_engine_config *ec) {
    lf_error err = {{0}};
    if (load_problems(ea->data, ea->limit, &r->probs, &r->n_probs)) return -1;
    if (ea->budget_pct > 0 && apply_percent_budget(ea->reference, ea->budget_pct, r->probs, r->n_probs)) return -1;
    const char *dir = lf_gen_model_dir(&ea->o);
    if (lf_gen_load_model(&ea->o, CMD, &r->model)) return -1;
    if (lf_model_tokenizer_load(dir, &r->tok, &err) || lf_chat_select(r->tok, ea->o.chat_template, &r->fam, &err) ||
        lf_gen_model_defaults(dir, &r->defaults, &err)) {
        lf_cli_error(CMD, "%s", err.msg);
        return -1;
    }
    r->instruction = ea->instruction                ? ea->instruction
                     : r->defaults.eval_instruction ? r->defaults.eval_instruction
                                                    : LF_R1_INSTRUCTION;
    /* every problem's prompt (not only those still to run): the longest sets the
     * default --max-tokens, the same on every resumed run */
    int longest = 0;
    if (render_prompts(ea, r->tok, r->fam, r->instruction, r->probs, r->n_probs, &longest)) return -1;
    if (lf_gen_resolve_max_tokens(&ea->o, CMD, r->model, longest)) return -1;
    if (lf_gen_engine_config(&ea->o, CMD, r->model, ec)) return -1; /* max_seqs = batch */
    r->settings = settings_json(ea, ec, dir, r->instruction, r->fam);
    return r->settings ? 0 : -1;
}

int lf_cmd_eval(int argc, char **argv) {
    eval_args ea = {.batch = 8};
    lf_gen_options_default(&ea.o);
    int pr = parse_flags(&ea, argc, argv);
    if (pr) return pr == 1 ? 0 : 2;
    if (check_flags(&ea)) return 2;

    int rc = 1;
    lf_error err = {{0}};
    eval_run r = {0};
    eval_state st = {0};
    lf_engine_config ec;
    if (eval_prepare(&ea, &r, &ec)) goto done;
    st.n_total = r.n_probs;
    if (!(r.out = open_results(ea.output, r.settings, ea.fresh, r.probs, r.n_probs, &st))) goto done;
    if (lf_engine_create(r.model, &ec, &r.eng, &err)) {
        lf_cli_error(CMD, "%s", err.msg);
        goto done;
    }
    r.req_to_prob = malloc((size_t)r.n_probs * sizeof(int));
    if (!r.req_to_prob || submit_all(r.eng, r.probs, r.n_probs, r.req_to_prob)) goto done;
    st.tok = r.tok;
    st.model = r.model;
    st.eng = r.eng;
    st.ec = &ec;
    st.probs = r.probs;
    st.req_to_prob = r.req_to_prob;
    st.out = r.out;
    st.t0 = lf_now_ms();
    int run_rc = lf_engine_run(r.eng, on_token, &st, &err);
    if (st.progress_shown) fputc('\n', stderr); /* end the progress line */
    if (run_rc) {
        lf_cli_error(CMD, "%s", err.msg);
        goto done;
    }
    if (st.write_errors) {
        lf_cli_error(CMD, "%s: %d results could not be written", ea.output, st.write_errors);
        goto done;
    }
    fclose(r.out);
    r.out = NULL;
    summary s;
    if (summarize(ea.output, r.probs, r.n_probs, st.run, &s)) goto done;
    print_summary(&ea, ea.output, &s);
    rc = 0;
done:
    eval_run_free(&r);
    lf_gen_options_free(&ea.o);
    return rc;
}
