/* longflow eval: accuracy of a model + KV policy on a math benchmark in the
 * {"index","question","true_answer"} JSONL format. Problems run batched
 * through the engine; each finished problem is appended to a results JSONL
 * file at once, so an interrupted run resumes where it stopped. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "core/error.h"
#include "core/file.h"
#include "core/timer.h"
#include "eval/answer.h"
#include "model/model.h"

#define LF_R1_INSTRUCTION "Please reason step by step, and put your final answer within \\boxed{}."

static void eval_usage(FILE *f) {
    fprintf(f,
            "usage: longflow eval [--model DIR] --data FILE.jsonl [--policy P --budget N|N%%] [options]\n"
            "\n"
            "  --data FILE            JSONL with {\"index\", \"question\", \"true_answer\"} per line\n"
            "  --limit N              first N problems only\n"
            "  --batch N|max          problems in flight at once (default 8; max = as many as fit, --device cuda)\n"
            "  --output FILE          per-problem results JSONL (default: <data>.<policy>[-<budget>].jsonl in .)\n"
            "  --fresh                overwrite the results file instead of resuming from it\n"
            "  --budget N             KV slots per sequence and layer\n"
            "  --budget P%%            P percent of each problem's full-cache output length, read from\n"
            "                         --reference FILE (the results of a --policy full run)\n"
            "  --instruction TEXT     appended to each question on a new line (default: the model's\n"
            "                         longflow.json \"eval_instruction\" if any, else the R1 eval\n"
            "                         instruction \"" LF_R1_INSTRUCTION "\"; \"\" for none)\n"
            "  --max-tokens N         per problem (default 8192)\n"
            "  --json                 print the summary as one JSON object\n"
            "  --device cpu|cuda      (default cpu); on cuda the entries are sized for the largest budget\n"
            "and the model, chat-template, sampling, policy, --threads and --gpu-mem-fraction flags of\n"
            "longflow generate.\n");
}

typedef struct problem {
    int index;
    char *question;
    char *truth;
    int budget;
    bool done; /* already in the results file */
} problem;

typedef struct eval_state {
    const lf_tokenizer *tok;
    const lf_config *cfg;
    problem *probs;
    int *req_to_prob;
    FILE *out;
    int n_total, n_done;
    long tokens;
    double t0;
    int n_correct;
    long out_tokens;
    bool ignore_eos;
    bool progress;
    int write_errors;
    int run_done; /* problems finished in this run (the ETA's basis) */
} eval_state;

static void free_problems(problem *p, int n) {
    for (int i = 0; i < n; i++) {
        free(p[i].question);
        free(p[i].truth);
    }
    free(p);
}

static int load_problems(const char *path, int limit, problem **out, int *n_out) {
    char *text = NULL;
    lf_error err;
    *out = NULL;
    *n_out = 0;
    if (lf_read_file(path, &text, NULL, &err)) {
        lf_cli_error("eval", "%s", err.msg);
        return -1;
    }
    int cap = 64, n = 0;
    problem *p = malloc((size_t)cap * sizeof *p);
    int line_no = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        line_no++;
        while (*line == ' ' || *line == '\t' || *line == '\r') line++;
        if (!*line) continue;
        if (limit > 0 && n >= limit) break;
        cJSON *j = cJSON_Parse(line);
        const cJSON *q = j ? cJSON_GetObjectItemCaseSensitive(j, "question") : NULL;
        const cJSON *a = j ? cJSON_GetObjectItemCaseSensitive(j, "true_answer") : NULL;
        const cJSON *ix = j ? cJSON_GetObjectItemCaseSensitive(j, "index") : NULL;
        if (!j || !cJSON_IsString(q) || !(cJSON_IsString(a) || cJSON_IsNumber(a))) {
            lf_cli_error("eval", "%s:%d: expected a JSON object with string \"question\" and \"true_answer\"", path,
                         line_no);
            cJSON_Delete(j);
            free_problems(p, n);
            free(text);
            return -1;
        }
        if (n == cap) {
            cap *= 2;
            p = realloc(p, (size_t)cap * sizeof *p);
        }
        p[n].index = cJSON_IsNumber(ix) ? ix->valueint : n;
        p[n].question = strdup(q->valuestring);
        if (cJSON_IsString(a)) {
            p[n].truth = strdup(a->valuestring);
        } else {
            char buf[64];
            snprintf(buf, sizeof buf, "%.17g", a->valuedouble);
            p[n].truth = strdup(buf);
        }
        p[n].budget = 0;
        p[n].done = false;
        n++;
        cJSON_Delete(j);
    }
    free(text);
    if (n == 0) {
        lf_cli_error("eval", "%s: no problems found", path);
        free(p);
        return -1;
    }
    *out = p;
    *n_out = n;
    return 0;
}

/* Indices already in the results file (and their tallies). */
static void read_existing(const char *path, problem *p, int n, eval_state *st) {
    char *text = NULL;
    lf_error err;
    if (!lf_file_exists(path) || lf_read_file(path, &text, NULL, &err)) return;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(line);
        if (!j) continue; /* a line cut by an interruption: redo that problem */
        const cJSON *ix = cJSON_GetObjectItemCaseSensitive(j, "index");
        const cJSON *ok = cJSON_GetObjectItemCaseSensitive(j, "correct");
        const cJSON *nt = cJSON_GetObjectItemCaseSensitive(j, "n_tokens");
        if (cJSON_IsNumber(ix))
            for (int i = 0; i < n; i++)
                if (p[i].index == ix->valueint && !p[i].done) {
                    p[i].done = true;
                    st->n_done++;
                    st->n_correct += cJSON_IsTrue(ok);
                    st->out_tokens += cJSON_IsNumber(nt) ? (long)nt->valuedouble : 0;
                    break;
                }
        cJSON_Delete(j);
    }
    free(text);
}

/* Per-problem budgets from a full-cache reference run. */
static int apply_percent_budget(const char *ref_path, double pct, problem *p, int n) {
    char *text = NULL;
    lf_error err;
    if (lf_read_file(ref_path, &text, NULL, &err)) {
        lf_cli_error("eval", "--reference: %s", err.msg);
        return -1;
    }
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(line);
        if (!j) continue;
        const cJSON *ix = cJSON_GetObjectItemCaseSensitive(j, "index");
        const cJSON *nt = cJSON_GetObjectItemCaseSensitive(j, "n_tokens");
        if (cJSON_IsNumber(ix) && cJSON_IsNumber(nt))
            for (int i = 0; i < n; i++)
                if (p[i].index == ix->valueint) p[i].budget = (int)ceil(nt->valuedouble * pct / 100.0);
        cJSON_Delete(j);
    }
    free(text);
    for (int i = 0; i < n; i++) {
        if (p[i].budget == 0) {
            lf_cli_error("eval", "--reference %s has no result for problem index %d", ref_path, p[i].index);
            return -1;
        }
        if (p[i].budget < 34) p[i].budget = 34; /* SnapKV keeps the last 32 prompt tokens: B > 33 */
    }
    return 0;
}

static void progress(eval_state *st) {
    if (!st->progress) return;
    double dt = (lf_now_ms() - st->t0) / 1e3;
    double tps = dt > 0 ? st->tokens / dt : 0;
    int left = st->n_total - st->n_done;
    double eta = 0;
    if (st->run_done > 0) eta = dt / st->run_done * left;
    fprintf(stderr, "\r[eval] %d/%d problems, %d correct, %.1f tok/s, elapsed %.0fs, ETA %.0fs   ", st->n_done,
            st->n_total, st->n_correct, tps, dt, eta);
    fflush(stderr);
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
    if (n_text > 0 && !st->ignore_eos && lf_config_is_eos(st->cfg, g->tokens[n_text - 1])) n_text--;
    char *text = NULL;
    lf_error err;
    if (lf_tokenizer_decode(st->tok, g->tokens, n_text, false, &text, NULL, &err)) text = strdup("");
    char *pred = lf_extract_boxed(text);
    bool ok = lf_answers_match(pred, p->truth);
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
    cJSON_AddNumberToObject(j, "kv_bytes", (double)g->kv_bytes);
    cJSON_AddNumberToObject(j, "kv_tokens_peak", (double)g->kv_tokens_peak);
    cJSON_AddStringToObject(j, "text", text);
    char *s = cJSON_PrintUnformatted(j);
    if (!s || fprintf(st->out, "%s\n", s) < 0 || fflush(st->out) != 0) st->write_errors++;
    free(s);
    cJSON_Delete(j);
    free(pred);
    free(text);
    st->n_done++;
    st->run_done++;
    st->n_correct += ok;
    st->out_tokens += g->n_tokens;
    progress(st);
}

static char *default_output(const char *data, const lf_policy_config *pc, const char *budget_str) {
    const char *base = strrchr(data, '/');
    base = base ? base + 1 : data;
    size_t n = strlen(base);
    if (n > 6 && !strcmp(base + n - 6, ".jsonl")) n -= 6;
    char buf[1024];
    if (pc->kind == LF_POLICY_FULL) snprintf(buf, sizeof buf, "%.*s.full.jsonl", (int)n, base);
    else {
        char b[64];
        snprintf(b, sizeof b, "%s", budget_str);
        for (char *c = b; *c; c++)
            if (*c == '%') *c = 'p';
        snprintf(buf, sizeof buf, "%.*s.%s-%s.jsonl", (int)n, base, lf_policy_name(pc->kind), b);
    }
    return strdup(buf);
}

/* A model directory may carry longflow.json with {"eval_instruction": "..."}:
 * the instruction its problems were trained with (the bundled tiny reasoner:
 * none). *out = NULL when there is no such file or key. */
static int model_eval_instruction(const char *dir, char **out, lf_error *err) {
    *out = NULL;
    char *path = lf_path_join(dir, "longflow.json");
    if (!path) return lf_fail(err, "eval: out of memory");
    if (!lf_file_exists(path)) {
        free(path);
        return 0;
    }
    char *text = NULL;
    size_t len = 0;
    if (lf_read_file(path, &text, &len, err)) {
        free(path);
        return -1;
    }
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    if (!j) {
        lf_fail(err, "%s: not valid JSON", path);
        free(path);
        return -1;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "eval_instruction");
    int rc = 0;
    if (v && !cJSON_IsString(v)) rc = lf_fail(err, "%s: \"eval_instruction\" must be a string", path);
    else if (v && !(*out = strdup(v->valuestring))) rc = lf_fail(err, "eval: out of memory");
    cJSON_Delete(j);
    free(path);
    return rc;
}

int lf_cmd_eval(int argc, char **argv) {
    const char *cmd = "eval";
    lf_gen_options o;
    lf_gen_options_default(&o);
    o.max_tokens = 8192;
    const char *data = NULL, *output = NULL, *reference = NULL, *instruction = NULL; /* NULL: model's or R1's */
    char *model_instruction = NULL;
    const char *budget_str = NULL;
    double budget_pct = 0;
    int limit = 0, batch = 8;
    bool fresh = false;
    lf_args a;
    lf_args_init(&a, cmd, argc, argv);
    const char *flag;
    while ((flag = lf_args_next(&a))) {
        if (!strcmp(flag, "--help") || !strcmp(flag, "-h")) {
            eval_usage(stdout);
            return 0;
        }
        if (!strcmp(flag, "--data")) {
            if (!(data = lf_arg_value(&a, flag))) return 2;
        } else if (!strcmp(flag, "--output")) {
            if (!(output = lf_arg_value(&a, flag))) return 2;
        } else if (!strcmp(flag, "--reference")) {
            if (!(reference = lf_arg_value(&a, flag))) return 2;
        } else if (!strcmp(flag, "--instruction")) {
            if (!(instruction = lf_arg_value(&a, flag))) return 2;
        } else if (!strcmp(flag, "--limit")) {
            if (!lf_arg_int(&a, flag, 1, 100000000, &limit)) return 2;
        } else if (!strcmp(flag, "--batch")) {
            if (!lf_gen_parse_batch(&a, flag, &batch)) return 2;
        } else if (!strcmp(flag, "--fresh")) {
            fresh = true;
        } else if (!strcmp(flag, "--budget")) {
            if (!(budget_str = lf_arg_value(&a, flag))) return 2;
            size_t n = strlen(budget_str);
            char *end;
            errno = 0;
            if (n > 1 && budget_str[n - 1] == '%') {
                budget_pct = strtod(budget_str, &end);
                if (errno || end != budget_str + n - 1 || !(budget_pct > 0 && budget_pct <= 1000)) {
                    lf_cli_error(cmd, "--budget: '%s' is not a percentage in (0, 1000]", budget_str);
                    return 2;
                }
                o.policy.budget = 1 << 30; /* per problem, set below */
            } else {
                long b = strtol(budget_str, &end, 10);
                if (errno || *end || end == budget_str || b < 1 || b > 100000000) {
                    lf_cli_error(cmd, "--budget: '%s' is not a positive number of slots or a percentage (20%%)",
                                 budget_str);
                    return 2;
                }
                o.policy.budget = (int)b;
            }
            o.budget_given = true;
        } else {
            int r = lf_gen_options_parse(&o, &a, flag);
            if (r < 0) return 2;
            if (r == 0) {
                lf_cli_error(cmd, "unknown option '%s' (see longflow eval --help)", flag);
                return 2;
            }
        }
    }
    if (!data) {
        lf_cli_error(cmd, "--data FILE.jsonl is required");
        return 2;
    }
    if (o.prompt || o.prompt_file || o.prompt_ids || o.messages_file) {
        lf_cli_error(cmd, "the prompts come from --data; --prompt, --prompt-file, --prompt-ids and --messages do not apply");
        return 2;
    }
    if (o.max_seqs >= 0) batch = o.max_seqs; /* --max-seqs, the generate spelling of --batch */
    o.max_seqs = batch;
    if (lf_gen_check_device(&o, cmd)) return 2;
    if (budget_pct > 0 && !reference) {
        lf_cli_error(cmd, "--budget %s needs --reference FILE: the results of a --policy full run on the same data",
                     budget_str);
        return 2;
    }

    int rc = 1;
    lf_error err = {{0}};
    problem *probs = NULL;
    int n_probs = 0;
    lf_model *model = NULL;
    lf_tokenizer *tok = NULL;
    lf_engine *eng = NULL;
    FILE *out = NULL;
    char *out_path = NULL;
    int *req_to_prob = NULL;
    eval_state st = {0};

    if (load_problems(data, limit, &probs, &n_probs)) goto done;
    if (budget_pct > 0 && apply_percent_budget(reference, budget_pct, probs, n_probs)) goto done;
    lf_engine_config ec;
    const char *dir = lf_gen_model_dir(&o);
    if (lf_model_load(dir, &model, &err) || lf_tokenizer_load(dir, &tok, &err)) {
        lf_cli_error(cmd, "%s", err.msg);
        goto done;
    }
    if (!instruction) {
        if (model_eval_instruction(dir, &model_instruction, &err)) {
            lf_cli_error(cmd, "%s", err.msg);
            goto done;
        }
        instruction = model_instruction ? model_instruction : LF_R1_INSTRUCTION;
    }
    if (lf_gen_engine_config(&o, cmd, model, &ec)) goto done; /* max_seqs = batch */
    lf_chat_family fam;
    if (lf_chat_select(tok, o.chat_template, &fam, &err)) {
        lf_cli_error(cmd, "%s", err.msg);
        goto done;
    }
    out_path = output ? strdup(output) : default_output(data, &o.policy, budget_str ? budget_str : "");
    st.tok = tok;
    st.cfg = lf_model_config(model);
    st.probs = probs;
    st.n_total = n_probs;
    st.ignore_eos = o.ignore_eos;
    st.progress = true;
    if (!fresh) read_existing(out_path, probs, n_probs, &st);
    if (st.n_done > 0) fprintf(stderr, "[eval] resuming: %d of %d problems already in %s\n", st.n_done, n_probs, out_path);
    out = fopen(out_path, fresh ? "w" : "a+");
    if (!out) {
        lf_cli_error(cmd, "%s: cannot open for writing: %s", out_path, strerror(errno));
        goto done;
    }
    if (!fresh && fseek(out, -1, SEEK_END) == 0 && fgetc(out) != '\n') {
        /* an interrupted run left half a line: start the next result on its own line */
        fseek(out, 0, SEEK_END);
        fputc('\n', out);
    }
    if (lf_engine_create(model, &ec, &eng, &err)) {
        lf_cli_error(cmd, "%s", err.msg);
        goto done;
    }
    req_to_prob = malloc((size_t)n_probs * sizeof(int));
    st.req_to_prob = req_to_prob;
    st.out = out;
    for (int i = 0; i < n_probs; i++) {
        if (probs[i].done) continue;
        size_t qn = strlen(probs[i].question) + strlen(instruction) + 2;
        char *user = malloc(qn);
        snprintf(user, qn, "%s%s%s", probs[i].question, *instruction ? "\n" : "", instruction);
        lf_chat_message m[2];
        int nm = 0;
        if (o.system) m[nm++] = (lf_chat_message){.role = "system", .content = (char *)o.system};
        m[nm++] = (lf_chat_message){.role = "user", .content = user};
        lf_chat_options copt = {.add_generation_prompt = true, .enable_thinking = !o.no_think};
        char *rendered = NULL;
        int *ids = NULL, n_ids = 0;
        int r = lf_chat_apply(fam, tok, m, nm, &copt, &rendered, &ids, &n_ids, &err);
        free(user);
        free(rendered);
        if (r) {
            lf_cli_error(cmd, "problem %d: %s", probs[i].index, err.msg);
            goto done;
        }
        int id = lf_engine_submit_budget(eng, ids, n_ids, probs[i].budget, &err);
        free(ids);
        if (id < 0) {
            lf_cli_error(cmd, "problem %d: %s", probs[i].index, err.msg);
            goto done;
        }
        req_to_prob[id] = i;
    }
    st.t0 = lf_now_ms();
    if (lf_engine_run(eng, on_token, &st, &err)) {
        fputc('\n', stderr);
        lf_cli_error(cmd, "%s", err.msg);
        goto done;
    }
    fputc('\n', stderr);
    if (st.write_errors) {
        lf_cli_error(cmd, "%s: %d results could not be written", out_path, st.write_errors);
        goto done;
    }
    lf_engine_stats es;
    lf_engine_stats_get(eng, &es);
    double secs = (lf_now_ms() - st.t0) / 1e3;
    double acc = st.n_done ? (double)st.n_correct / st.n_done : 0;
    double avg_len = st.n_done ? (double)st.out_tokens / st.n_done : 0;
    double tps = secs > 0 ? es.generated_tokens / secs : 0;
    if (o.json) {
        printf("{\"data\":\"%s\",\"policy\":\"%s\",\"budget\":\"%s\",\"problems\":%d,\"correct\":%d,"
               "\"accuracy\":%.6f,\"avg_output_tokens\":%.1f,\"tokens_per_s\":%.2f,\"kv_bytes_peak\":%zu,"
               "\"results\":\"%s\"}\n",
               data, lf_policy_name(o.policy.kind), budget_str ? budget_str : "", st.n_done, st.n_correct, acc,
               avg_len, tps, es.kv_bytes_peak, out_path);
    } else {
        printf("%s: policy %s%s%s: accuracy %.2f%% (%d/%d), average output %.0f tokens, %.1f tokens/s, "
               "peak KV memory %.2f MB; results in %s\n",
               data, lf_policy_name(o.policy.kind), budget_str ? " budget " : "", budget_str ? budget_str : "",
               100 * acc, st.n_correct, st.n_done, avg_len, tps, es.kv_bytes_peak / 1e6, out_path);
    }
    rc = 0;
done:
    free(model_instruction);
    if (out) fclose(out);
    free(out_path);
    free(req_to_prob);
    lf_engine_free(eng);
    lf_tokenizer_free(tok);
    lf_model_free(model);
    free_problems(probs, n_probs);
    return rc;
}
