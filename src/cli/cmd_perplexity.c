/* longflow perplexity: teacher-forced NLL of a text through the KV cache
 * under a policy, and its KL divergence from the full cache
 * (src/eval/perplexity.h, docs/perplexity.md). */
#include <cjson/cJSON.h>
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
#include "core/timer.h"
#include "eval/perplexity.h"

static const char *CMD = "perplexity";

static void usage(FILE *f) {
    fprintf(f,
            "usage: longflow perplexity --model DIR --file TEXT [options]\n"
            "       longflow perplexity --model DIR --prompt-file P --gen N [--chat] [options]\n"
            "       longflow perplexity --fidelity ... --policy P1,P2 --budget B1,B2 [options]\n"
            "\n"
            "Teacher-forced NLL of a text on the CPU or the GPU: each window's first token is prefilled,\n"
            "every later token goes through one decode step, so the KV policy evicts exactly as\n"
            "it does while generating. Reports mean NLL (nats/token), perplexity and the\n"
            "standard error of the mean NLL (docs/perplexity.md).\n"
            "\n"
            "  --model DIR            a Hugging Face model directory (with tokenizer.json) or GGUF file\n"
            "  --file TEXT            the UTF-8 text to score\n"
            "  --prompt-file P        a prompt the text follows: its tokens go through the cache\n"
            "                         first (BOS as generate adds it) and are never scored\n"
            "  --ctx N                window length in tokens (default: min(model context, 2048))\n"
            "  --stride S             a window starts every S tokens (1..ctx, default ctx); each\n"
            "                         scores only the tokens the previous one did not\n"
            "  --gen N                score the model's own greedy continuation of --prompt-file (full\n"
            "                         cache, N tokens at most, the stop token included) instead of --file\n"
            "  --chat --system S --no-think --chat-template NAME  with --gen: the prompt as a chat\n"
            "                         message, as for generate\n"
            "  --policy P --budget B  KV-cache policy and slots (default: full)\n"
            "  --fidelity             run the full cache first and keep its top logits in memory, then\n"
            "                         every --policy x --budget of the comma-separated lists against it\n"
            "                         (KL, top-1 agreement, delta NLL); one result per run\n"
            "  --sinks N --recent N --evict-every K  policy options as for generate\n"
            "  --kv-dtype fp32|bf16|fp8  " LF_KV_DTYPE_HELP
            "  --weights quant|bf16   GGUF block-quantized matrices computed on as\n"
            "                         blocks (default) or dequantized to bf16 at load\n"
            "  --batch N|max          windows (x policies with --fidelity) decoded together (default 4 on\n"
            "                         the CPU; 64 on cuda, fewer when the GPU pool holds fewer; max: as\n"
            "                         many as fit, cuda only)\n"
            "  --device cpu|cuda      where the model runs (default cpu, the reference; cuda: bf16 weights\n"
            "                         and KV cache, one GPU pool per policy)\n"
            "  --gpu-mem-fraction F   cuda: share of the free GPU memory a pool may use (default 0.92)\n"
            "  --limit-chunks K       score only the first K windows\n"
            "  --kl-base FILE         with --kl-write: store this run's top logits (usually the full\n"
            "                         cache's); otherwise read them and report KL(base || this run),\n"
            "                         top-1 agreement and the NLL difference\n"
            "  --kl-write             write --kl-base instead of reading it (any policy and --kv-dtype:\n"
            "                         e.g. a bf16 cache's run as the base of the same policy with fp8)\n"
            "  --kl-top-k K           logits kept per position by --kl-write or --fidelity (default 32)\n"
            "  --json                 one JSON object on stdout (a line per run with --fidelity)\n"
            "  --per-token            with --json: the index and NLL of every scored token\n"
            "  --threads N            threads (default: all cores; on cuda they score the logits)\n");
}

typedef struct ppl_cli {
    lf_gen_options o;
    const char *file, *kl_base, *prompt_file;
    const char *policy_arg, *budget_arg; /* --policy / --budget as given (lists with --fidelity) */
    int ctx, stride, batch, limit, top_k, gen;
    bool kl_write, per_token, fidelity;
    lf_policy_config *runs; /* what --policy x --budget asks for */
    int n_runs;
} ppl_cli;

/* Parse argv into c; returns 0, 1 for --help, or -1 (printed). */
static int parse_flags(ppl_cli *c, int argc, char **argv) {
    lf_args a;
    lf_args_init(&a, CMD, argc, argv);
    const char *f;
    while ((f = lf_args_next(&a))) {
        bool ok = true;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(f, "--file")) ok = (c->file = lf_arg_value(&a, f)) != NULL;
        else if (!strcmp(f, "--prompt-file")) ok = (c->prompt_file = lf_arg_value(&a, f)) != NULL;
        else if (!strcmp(f, "--kl-base")) ok = (c->kl_base = lf_arg_value(&a, f)) != NULL;
        else if (!strcmp(f, "--ctx")) ok = lf_arg_int(&a, f, 1, 1 << 24, &c->ctx);
        else if (!strcmp(f, "--stride")) ok = lf_arg_int(&a, f, 1, 1 << 24, &c->stride);
        else if (!strcmp(f, "--batch")) ok = lf_gen_parse_batch(&a, f, &c->o.max_seqs);
        else if (!strcmp(f, "--limit-chunks")) ok = lf_arg_int(&a, f, 1, 1 << 24, &c->limit);
        else if (!strcmp(f, "--kl-top-k")) ok = lf_arg_int(&a, f, 1, LF_PPL_TOPK_MAX, &c->top_k);
        else if (!strcmp(f, "--gen")) ok = lf_arg_int(&a, f, 1, 1 << 24, &c->gen);
        else if (!strcmp(f, "--policy")) ok = (c->policy_arg = lf_arg_value(&a, f)) != NULL;
        else if (!strcmp(f, "--budget")) ok = (c->budget_arg = lf_arg_value(&a, f)) != NULL;
        else if (!strcmp(f, "--fidelity")) c->fidelity = true;
        else if (!strcmp(f, "--kl-write")) c->kl_write = true;
        else if (!strcmp(f, "--per-token")) c->per_token = true;
        else if (!strcmp(f, "--json")) c->o.json = true;
        else if (!strcmp(f, "--model") || !strcmp(f, "--threads") || !strcmp(f, "--sinks") ||
                 !strcmp(f, "--recent") || !strcmp(f, "--evict-every") || !strcmp(f, "--chat") ||
                 !strcmp(f, "--system") || !strcmp(f, "--no-think") || !strcmp(f, "--chat-template") ||
                 !strcmp(f, "--kv-dtype") || !strcmp(f, "--weights") || !strcmp(f, "--device") ||
                 !strcmp(f, "--gpu-mem-fraction") || !strcmp(f, "--protect-prompt")) /* (refused below) */
            ok = lf_gen_options_parse(&c->o, &a, f) == 1;
        else {
            lf_cli_error(CMD, "unknown option '%s' (try longflow perplexity --help)", f);
            return -1;
        }
        if (!ok) return -1;
    }
    if (a.inline_val) {
        lf_cli_error(CMD, "a flag that takes no value was given one");
        return -1;
    }
    return 0;
}

/* --policy's comma-separated names into kinds (*n of them). */
static int parse_policies(const char *arg, lf_policy_kind **kinds, int *n) {
    size_t len = strlen(arg);
    char *buf = malloc(len + 1);
    *kinds = malloc((len / 2 + 1) * sizeof **kinds);
    *n = 0;
    int rc = buf && *kinds ? 0 : -1;
    if (rc) lf_cli_error(CMD, "--policy: out of memory");
    else memcpy(buf, arg, len + 1);
    lf_error err = {{0}};
    for (char *save = NULL, *tok = rc ? NULL : strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (lf_policy_parse("--policy", tok, &(*kinds)[(*n)++], &err)) {
            lf_cli_error(CMD, "%s", err.msg);
            rc = -1;
            break;
        }
    }
    if (rc == 0 && *n == 0) rc = -1, lf_cli_error(CMD, "--policy: no policy named");
    free(buf);
    if (rc) free(*kinds), *kinds = NULL;
    return rc;
}

/* The full cache's run: no policy options, the cache's dtype as given. */
static lf_policy_config full_run(const ppl_cli *c) {
    lf_policy_config f;
    lf_policy_config_default(&f);
    f.kv_dtype = c->o.policy.kv_dtype;
    return f;
}

/* c->runs: every policy with every budget (full once, with no budget). */
static int build_runs(ppl_cli *c, const lf_policy_kind *kinds, int nk, const int *budgets, int nb) {
    c->runs = malloc(((size_t)nk * (nb > 0 ? nb : 1)) * sizeof *c->runs);
    if (!c->runs) {
        lf_cli_error(CMD, "out of memory for %d policies x %d budgets", nk, nb);
        return -1;
    }
    for (int i = 0; i < nk; i++) {
        lf_policy_config pc = c->o.policy; /* --sinks, --recent, --evict-every */
        pc.kind = kinds[i];
        pc.budget = 0;
        if (kinds[i] == LF_POLICY_FULL) {
            c->runs[c->n_runs++] = full_run(c); /* --sinks etc. are for the others */
            continue;
        }
        if (nb == 0) {
            lf_cli_error(CMD, "--policy %s needs --budget N (KV slots per window and layer)", lf_policy_name(kinds[i]));
            return -1;
        }
        for (int j = 0; j < nb; j++) {
            pc.budget = budgets[j];
            c->runs[c->n_runs++] = pc;
        }
    }
    return 0;
}

/* --policy and --budget: one each, or lists with --fidelity. c->o.policy
 * holds the single run's. */
static int resolve_policies(ppl_cli *c) {
    lf_policy_kind *kinds = NULL, one = LF_POLICY_FULL;
    int *budgets = NULL, nk = 1, nb = 0, rc = -1;
    if (c->policy_arg && parse_policies(c->policy_arg, &kinds, &nk)) return -1;
    if (c->budget_arg && !lf_parse_ids(CMD, "--budget", c->budget_arg, 100000001, "1..100000000", &budgets, &nb))
        goto out;
    bool budgeted = false;
    for (int i = 0; i < nk; i++) budgeted |= (kinds ? kinds[i] : one) != LF_POLICY_FULL;
    if (!c->fidelity && (nk > 1 || nb > 1))
        lf_cli_error(CMD, "lists in --policy or --budget need --fidelity (one run per policy and budget)");
    else if (!budgeted && nb > 0)
        lf_cli_error(CMD, "--budget applies to budgeted policies; --policy full keeps every token");
    else
        rc = build_runs(c, kinds ? kinds : &one, nk, budgets, nb);
    if (rc == 0) c->o.policy = c->runs[0];
out:
    free(kinds);
    free(budgets);
    return rc;
}

/* --batch (default by device), --device and its companions, and every run
 * against the device. */
static int check_device(ppl_cli *c) {
    const bool cuda = c->o.device == LF_DEVICE_CUDA;
    c->batch = c->o.max_seqs >= 0 ? c->o.max_seqs : cuda ? 64 : 4;
    if (lf_gen_check_device(&c->o, CMD)) return -1;
    lf_ppl_params p = {.device = c->o.device, .batch = c->batch};
    lf_error err = {{0}};
    if (lf_ppl_check_runs(&p, c->runs, c->n_runs, &err) == 0) return 0;
    lf_cli_error(CMD, "%s", err.msg);
    return -1;
}

/* Checks that need no model. */
static int check_flags(ppl_cli *c) {
    bool chat = c->o.chat || c->o.system || c->o.no_think || c->o.chat_template;
    if (resolve_policies(c) || check_device(c)) return -1;
    if (!c->file && !c->gen)
        lf_cli_error(CMD, "--file TEXT is required (the text to score), or --prompt-file P --gen N");
    else if (c->gen && c->file)
        lf_cli_error(CMD, "--gen scores the model's own continuation of --prompt-file: give it instead of --file");
    else if (c->gen && !c->prompt_file) lf_cli_error(CMD, "--gen N needs --prompt-file P (the prompt to continue)");
    else if (chat && !c->gen) lf_cli_error(CMD, "--chat, --system, --no-think and --chat-template apply with --gen");
    else if (c->kl_write && !c->kl_base) lf_cli_error(CMD, "--kl-write needs --kl-base FILE (where to write)");
    else if (c->fidelity && c->kl_base)
        lf_cli_error(CMD, "--fidelity keeps the full cache's logits in memory: give it without --kl-base");
    else if (c->top_k > 0 && !c->kl_write && !c->fidelity)
        lf_cli_error(CMD, "--kl-top-k applies with --kl-write or --fidelity");
    else if (c->per_token && !c->o.json) lf_cli_error(CMD, "--per-token applies with --json");
    else if (c->o.policy.protect_prompt > 0)
        lf_cli_error(CMD, "--protect-prompt protects a prefilled prompt, and perplexity passes the prompt through "
                          "the cache one token at a time: keep it with --sinks N (N = the prompt's tokens)");
    else return 0;
    return -1;
}

/* Concatenate a and b into *out (the token ids to run). */
static int join_ids(const int *a, int na, const int *b, int nb, int **out) {
    if (nb > INT_MAX - na) {
        lf_cli_error(CMD, "too many tokens");
        return -1;
    }
    if (!(*out = malloc(((size_t)na + nb) * sizeof **out))) {
        lf_cli_error(CMD, "out of memory for %d tokens", na + nb);
        return -1;
    }
    if (na) memcpy(*out, a, (size_t)na * sizeof *a);
    if (nb) memcpy(*out + na, b, (size_t)nb * sizeof *b);
    return 0;
}

/* One file's token ids: read whole (UTF-8, no NUL, not empty) and encoded
 * with the added special tokens parsed; add_special: the tokenizer's BOS
 * (as generate encodes a prompt file). */
static int encode_file(const char *path, const lf_tokenizer *tok, bool add_special, int **ids, int *n) {
    char *text;
    size_t len;
    *ids = NULL;
    if (lf_cli_read_prompt_file(CMD, path, &text, &len)) return -1;
    if (len == 0) {
        free(text);
        lf_cli_error(CMD, "%s: the file is empty", path);
        return -1;
    }
    lf_error err = {{0}};
    unsigned flags = LF_TOK_PARSE_SPECIAL | (add_special ? LF_TOK_ADD_SPECIAL : 0);
    int rc = lf_tokenizer_encode(tok, text, len, flags, ids, n, &err);
    free(text);
    if (rc) lf_cli_error(CMD, "%s: %s", path, err.msg);
    return rc;
}

/* The token ids to run: the prompt's (*n_prompt of them, never scored), then
 * the text's. */
static int read_tokens(const ppl_cli *c, const lf_tokenizer *tok, int **ids, int *n, int *n_prompt) {
    int *p = NULL, *t = NULL, np = 0, nt = 0;
    *ids = NULL;
    if ((c->prompt_file && encode_file(c->prompt_file, tok, true, &p, &np)) ||
        encode_file(c->file, tok, !c->prompt_file, &t, &nt)) {
        free(p);
        return -1;
    }
    int rc = -1;
    if (nt < (c->prompt_file ? 1 : 2))
        lf_cli_error(CMD, "%s: the text has %d token%s; at least %s needed to score one", c->file, nt,
                     nt == 1 ? "" : "s", c->prompt_file ? "1 is" : "2 are");
    else if (join_ids(p, np, t, nt, ids) == 0) {
        *n = np + nt;
        *n_prompt = np;
        rc = 0;
    }
    free(p);
    free(t);
    return rc;
}

/* The model's greedy continuation of the prompt with the full cache, at most
 * c->gen tokens (the stop token included: it is what the model chose). */
static int generate(const ppl_cli *c, lf_model *m, const int *prompt, int n_prompt, int **gen, int *n_gen) {
    lf_gen_options o = c->o;
    lf_policy_config_default(&o.policy);
    o.budget_given = false;
    o.max_tokens = c->gen;
    o.max_seqs = -1; /* one sequence (--batch is the windows') */
    lf_engine_config ec;
    lf_engine *eng = NULL;
    lf_error err = {{0}};
    *gen = NULL;
    int rc = -1;
    if (lf_gen_engine_config(&o, CMD, m, &ec)) return -1;
    if (lf_engine_create(m, &ec, &eng, &err)) {
        lf_cli_error(CMD, "--gen: %s", err.msg);
        return -1;
    }
    int id = lf_engine_submit(eng, prompt, n_prompt, &err);
    if (id < 0 || lf_engine_run(eng, NULL, NULL, &err)) {
        lf_cli_error(CMD, "--gen: %s", err.msg);
    } else {
        const lf_generation *g = lf_engine_result(eng, id);
        *n_gen = g->n_tokens;
        if (!(*gen = malloc(((size_t)g->n_tokens + 1) * sizeof **gen))) lf_cli_error(CMD, "--gen: out of memory");
        else {
            memcpy(*gen, g->tokens, (size_t)g->n_tokens * sizeof **gen);
            rc = 0;
        }
    }
    lf_engine_free(eng);
    return rc;
}

/* --gen: load the model and the prompt as generate does, generate, and run
 * prompt + continuation with the prompt unscored. */
static int load_generated(ppl_cli *c, lf_model **m, lf_tokenizer **tok, int **ids, int *n, int *n_prompt) {
    lf_gen_options o = c->o;
    o.prompt_file = c->prompt_file;
    int *prompt = NULL, np = 0, *gen = NULL, ng = 0;
    char *rendered = NULL;
    bool think_open;
    if (lf_gen_prepare_prompt(&o, CMD, m, tok, &prompt, &np, &rendered, &think_open)) return -1;
    free(rendered);
    int rc = -1;
    if (np + c->gen > lf_config_context_length(lf_model_config(*m)))
        lf_cli_error(CMD, "--gen %d after a prompt of %d tokens is more than the model's context (%d)", c->gen, np,
                     lf_config_context_length(lf_model_config(*m)));
    else if (generate(c, *m, prompt, np, &gen, &ng) == 0 && join_ids(prompt, np, gen, ng, ids) == 0) {
        *n = np + ng;
        *n_prompt = np;
        c->gen = ng;
        rc = 0;
    }
    free(prompt);
    free(gen);
    return rc;
}

typedef struct ppl_progress {
    double t0, last;
    bool finished;
} ppl_progress;

static void on_progress(void *user, long done, long total) {
    ppl_progress *p = user;
    double now = lf_now_ms();
    if (p->finished || (done < total && now - p->last < 250)) return;
    p->finished = done >= total;
    p->last = now;
    double s = (now - p->t0) / 1e3;
    fprintf(stderr, "\rperplexity: %ld/%ld tokens scored (%.0f%%), %.1f tokens/s", done, total,
            total ? 100.0 * done / total : 100.0, s > 0 ? done / s : 0.0);
    if (done >= total) fputc('\n', stderr);
    fflush(stderr);
}

/* What a run's report says besides its summary. */
typedef struct ppl_report {
    const lf_policy_config *pc;
    const int *ids; /* the sequence run (n_tokens) */
    int windows, n_tokens, n_prompt;
    double secs;
    double gen_match; /* --gen, full cache: share of positions whose argmax is the generated token; < 0: none */
} ppl_report;

/* What was scored: the text file, or the continuation of the prompt file. */
static const char *scored_name(const ppl_cli *c) {
    return c->file ? c->file : c->prompt_file;
}

static void print_text(const ppl_cli *c, const lf_ppl_summary *s, const ppl_report *rep) {
    const char *pol = lf_policy_name(rep->pc->kind);
    printf("%s%s: %d tokens scored in %d windows (ctx %d, stride %d), policy %s", scored_name(c),
           c->gen ? " (generated continuation)" : "", s->n, rep->windows, c->ctx, c->stride, pol);
    if (rep->pc->kind != LF_POLICY_FULL) printf(" budget %d", rep->pc->budget);
    printf(", %s, %.1f s\n", c->o.device == LF_DEVICE_CUDA ? "cuda" : "cpu", rep->secs);
    printf("NLL %.6f +/- %.6f nats/token, perplexity %.4f\n", s->nll.mean, s->nll.se, exp(s->nll.mean));
    if (s->with_base)
        printf("KL(%s || %s) %.6f +/- %.6f, top-1 agreement %.4f +/- %.4f, delta NLL %+.6f +/- %.6f\n",
               c->fidelity ? "full" : "base", pol, s->kl.mean, s->kl.se, s->top1.mean, s->top1.se,
               s->delta_nll.mean, s->delta_nll.se);
}

static void json_add_stat(cJSON *j, const char *key, const char *se_key, lf_ppl_stat st) {
    cJSON_AddNumberToObject(j, key, st.mean);
    cJSON_AddNumberToObject(j, se_key, st.se);
}

static void print_json(const ppl_cli *c, const lf_ppl_summary *s, const lf_ppl_result *r, const ppl_report *rep) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", lf_gen_model_dir(&c->o));
    if (c->file) cJSON_AddStringToObject(j, "file", c->file);
    if (c->prompt_file) {
        cJSON_AddStringToObject(j, "prompt_file", c->prompt_file);
        cJSON_AddNumberToObject(j, "prompt_tokens", rep->n_prompt);
    }
    if (c->gen) cJSON_AddNumberToObject(j, "generated", rep->n_tokens - rep->n_prompt);
    if (rep->gen_match >= 0) cJSON_AddNumberToObject(j, "gen_match", rep->gen_match);
    cJSON_AddStringToObject(j, "device", c->o.device == LF_DEVICE_CUDA ? "cuda" : "cpu");
    cJSON_AddStringToObject(j, "policy", lf_policy_name(rep->pc->kind));
    cJSON_AddNumberToObject(j, "budget", rep->pc->kind == LF_POLICY_FULL ? 0 : rep->pc->budget);
    cJSON_AddNumberToObject(j, "ctx", c->ctx);
    cJSON_AddNumberToObject(j, "stride", c->stride);
    cJSON_AddNumberToObject(j, "windows", rep->windows);
    cJSON_AddNumberToObject(j, "tokens", rep->n_tokens);
    cJSON_AddNumberToObject(j, "tokens_scored", s->n);
    json_add_stat(j, "nll", "se", s->nll);
    cJSON_AddNumberToObject(j, "ppl", exp(s->nll.mean));
    cJSON_AddNumberToObject(j, "seconds", rep->secs);
    if (c->kl_base) cJSON_AddStringToObject(j, c->kl_write ? "kl_base_written" : "kl_base", c->kl_base);
    if (s->with_base) {
        json_add_stat(j, "kl", "kl_se", s->kl);
        json_add_stat(j, "top1", "top1_se", s->top1);
        json_add_stat(j, "delta_nll", "delta_nll_se", s->delta_nll);
    }
    if (c->per_token && c->gen && rep->ids)
        cJSON_AddItemToObject(j, "generated_ids", cJSON_CreateIntArray(rep->ids + rep->n_prompt,
                                                                        rep->n_tokens - rep->n_prompt));
    if (c->per_token) {
        cJSON *idx = cJSON_AddArrayToObject(j, "scored_index"), *nll = cJSON_AddArrayToObject(j, "nll_per_token");
        for (int i = 0; i < r->n; i++) {
            cJSON_AddItemToArray(idx, cJSON_CreateNumber(r->pos[i].index));
            cJSON_AddItemToArray(nll, cJSON_CreateNumber(r->pos[i].nll));
        }
    }
    char *out = cJSON_PrintUnformatted(j);
    if (out) puts(out);
    free(out);
    cJSON_Delete(j);
    fflush(stdout);
}

/* Summarize r (against base, may be NULL) and print it. */
static void report(const ppl_cli *c, const lf_ppl_result *r, const lf_ppl_result *base, const ppl_report *rep) {
    lf_ppl_summary s;
    lf_ppl_summarize(r, base, &s);
    if (c->o.json) print_json(c, &s, r, rep);
    else print_text(c, &s, rep);
}

/* Share of r's positions whose argmax is the token the sequence has there. */
static double argmax_match(const lf_ppl_result *r, const int *ids) {
    long hit = 0;
    for (int i = 0; i < r->n; i++) hit += r->pos[i].argmax == ids[r->pos[i].index];
    return r->n ? (double)hit / r->n : 0.0;
}

/* The header a base for this run has. */
static void run_header(const ppl_cli *c, const lf_model *m, const int *ids, int n, int n_prompt, int top_k,
                       lf_ppl_base_header *h) {
    memset(h, 0, sizeof *h);
    h->k = (uint32_t)top_k;
    h->ctx = (uint32_t)c->ctx;
    h->stride = (uint32_t)c->stride;
    h->vocab = (uint32_t)lf_config_vocab_size(lf_model_config(m));
    h->n_tokens = (uint64_t)n;
    h->text_hash = lf_ppl_hash_tokens(ids, n, n_prompt);
    h->model_hash = lf_ppl_model_fingerprint(m);
    snprintf(h->model_name, sizeof h->model_name, "%s", lf_gen_model_dir(&c->o));
}

/* Load a base to compare against (not with --kl-write); it must hold the
 * n_scored positions of this run. */
static int load_base(const ppl_cli *c, const lf_ppl_base_header *want, int n_scored, lf_ppl_result *base) {
    lf_error err = {{0}};
    lf_ppl_base_header h;
    if (lf_ppl_base_read(c->kl_base, &h, base, &err) || lf_ppl_base_check(c->kl_base, &h, want, &err)) {
        lf_ppl_result_free(base);
        lf_cli_error(CMD, "--kl-base: %s", err.msg);
        return -1;
    }
    if (base->n < n_scored) {
        lf_cli_error(CMD, "--kl-base: %s holds %d positions, this run scores %d (the base was made with a smaller "
                          "--limit-chunks)", c->kl_base, base->n, n_scored);
        lf_ppl_result_free(base);
        return -1;
    }
    return 0;
}

static lf_ppl_params run_params(const ppl_cli *c, int top_k, int n_prompt, const lf_ppl_result *base,
                                 ppl_progress *prog) {
    return (lf_ppl_params){.policy = c->o.policy, .ctx = c->ctx, .stride = c->stride, .batch = c->batch,
                           .max_windows = c->limit, .top_k = top_k, .score_from = n_prompt, .base = base,
                           .progress = on_progress, .progress_user = prog, .device = c->o.device,
                           .gpu_mem_fraction = c->o.gpu_mem_fraction};
}

/* Model loaded and text tokenized: run, write or compare, print. */
static int evaluate(ppl_cli *c, const lf_model *m, const int *ids, int n, int n_prompt) {
    lf_error err = {{0}};
    lf_ppl_base_header hdr;
    lf_ppl_result base = {0}, r = {0};
    int top_k = c->kl_write ? (c->top_k > 0 ? c->top_k : 32) : 0;
    if (top_k > lf_config_vocab_size(lf_model_config(m))) top_k = lf_config_vocab_size(lf_model_config(m));
    run_header(c, m, ids, n, n_prompt, top_k, &hdr);
    ppl_report rep = {.pc = &c->o.policy, .ids = ids, .n_tokens = n, .n_prompt = n_prompt, .gen_match = -1};
    int scored;
    lf_ppl_plan(n, c->ctx, c->stride, c->limit, n_prompt, &rep.windows, &scored);
    if (c->kl_base && !c->kl_write && load_base(c, &hdr, scored, &base)) return 1;
    ppl_progress prog = {lf_now_ms(), 0, false};
    lf_ppl_params p = run_params(c, top_k, n_prompt, c->kl_base && !c->kl_write ? &base : NULL, &prog);
    int rc = 1;
    if (lf_ppl_run(m, ids, n, &p, &r, &err)) {
        lf_cli_error(CMD, "%s", err.msg);
        goto out;
    }
    if (c->kl_write && lf_ppl_base_write(c->kl_base, &hdr, &r, &err)) {
        lf_cli_error(CMD, "--kl-base: %s", err.msg);
        goto out;
    }
    rep.secs = (lf_now_ms() - prog.t0) / 1e3;
    if (c->gen && c->o.policy.kind == LF_POLICY_FULL) rep.gen_match = argmax_match(&r, ids);
    report(c, &r, p.base, &rep);
    rc = 0;
out:
    lf_ppl_result_free(&r);
    lf_ppl_result_free(&base);
    return rc;
}

/* --fidelity: the full cache (its top logits kept), then every run against
 * it, all runs decoded together. */
static int evaluate_fidelity(ppl_cli *c, const lf_model *m, const int *ids, int n, int n_prompt) {
    lf_error err = {{0}};
    lf_policy_config full = full_run(c);
    int top_k = c->top_k > 0 ? c->top_k : 32;
    if (top_k > lf_config_vocab_size(lf_model_config(m))) top_k = lf_config_vocab_size(lf_model_config(m));
    ppl_report rep = {.pc = &full, .ids = ids, .n_tokens = n, .n_prompt = n_prompt, .gen_match = -1};
    int scored;
    lf_ppl_plan(n, c->ctx, c->stride, c->limit, n_prompt, &rep.windows, &scored);
    ppl_progress prog = {lf_now_ms(), 0, false};
    lf_ppl_params p = run_params(c, top_k, n_prompt, NULL, &prog);
    p.policy = full;
    lf_ppl_result base = {0}, *outs = calloc((size_t)c->n_runs, sizeof *outs);
    int rc = 1;
    if (!outs) lf_cli_error(CMD, "out of memory for %d runs", c->n_runs);
    else if (lf_ppl_run(m, ids, n, &p, &base, &err)) lf_cli_error(CMD, "%s", err.msg);
    else {
        rep.secs = (lf_now_ms() - prog.t0) / 1e3;
        if (c->gen) rep.gen_match = argmax_match(&base, ids);
        report(c, &base, NULL, &rep);
        prog = (ppl_progress){lf_now_ms(), 0, false};
        p.top_k = 0;
        p.base = &base;
        if (lf_ppl_run_policies(m, ids, n, &p, c->runs, c->n_runs, outs, &err)) lf_cli_error(CMD, "%s", err.msg);
        else rc = 0;
    }
    rep.secs = (lf_now_ms() - prog.t0) / 1e3; /* all runs together */
    rep.gen_match = -1;
    for (int j = 0; rc == 0 && j < c->n_runs; j++) {
        rep.pc = &c->runs[j];
        report(c, &outs[j], &base, &rep);
    }
    for (int j = 0; outs && j < c->n_runs; j++) lf_ppl_result_free(&outs[j]);
    free(outs);
    lf_ppl_result_free(&base);
    return rc;
}

/* --ctx and --stride against the model (defaults filled in). */
static int resolve_window(ppl_cli *c, const lf_model *m) {
    const int mctx = lf_config_context_length(lf_model_config(m));
    if (c->ctx == 0) c->ctx = mctx < 2048 ? mctx : 2048;
    if (c->ctx < 2) lf_cli_error(CMD, "--ctx must be at least 2 (got %d)", c->ctx);
    else if (c->ctx > mctx)
        lf_cli_error(CMD, "--ctx %d is larger than the model's context (max_position_embeddings %d)", c->ctx, mctx);
    else if (c->stride > c->ctx) lf_cli_error(CMD, "--stride %d is larger than --ctx %d", c->stride, c->ctx);
    else {
        if (c->stride == 0) c->stride = c->ctx;
        return 0;
    }
    return -1;
}

int lf_cmd_perplexity(int argc, char **argv) {
    ppl_cli c = {.batch = 0}; /* (--batch's default comes with --device) */
    lf_gen_options_default(&c.o);
    int pr = parse_flags(&c, argc, argv);
    if (pr != 0 || check_flags(&c)) {
        free(c.runs);
        lf_gen_options_free(&c.o);
        return pr == 1 ? 0 : 2;
    }
    lf_threads_set(c.o.threads);
    lf_model *m = NULL;
    lf_tokenizer *tok = NULL;
    int *ids = NULL, n = 0, n_prompt = 0, rc = 1;
    lf_error err = {{0}};
    if (c.gen) {
        if (load_generated(&c, &m, &tok, &ids, &n, &n_prompt)) goto out;
    } else if (lf_gen_load_model(&c.o, CMD, &m)) {
        goto out;
    } else if (lf_model_tokenizer_load(lf_gen_model_dir(&c.o), &tok, &err)) {
        lf_cli_error(CMD, "%s", err.msg);
        goto out;
    }
    if (resolve_window(&c, m)) {
        rc = 2;
        goto out;
    }
    if (!c.gen && read_tokens(&c, tok, &ids, &n, &n_prompt)) goto out;
    rc = c.fidelity ? evaluate_fidelity(&c, m, ids, n, n_prompt) : evaluate(&c, m, ids, n, n_prompt);
out:
    free(ids);
    free(c.runs);
    lf_tokenizer_free(tok);
    lf_model_free(m);
    lf_gen_options_free(&c.o);
    return rc;
}
