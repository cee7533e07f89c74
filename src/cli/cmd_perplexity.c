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
#include "core/timer.h"
#include "cpu/forward.h"
#include "eval/perplexity.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

static const char *CMD = "perplexity";

static void usage(FILE *f) {
    fprintf(f,
            "usage: longflow perplexity --model DIR --file TEXT [options]\n"
            "\n"
            "Teacher-forced NLL of a text on the CPU: each window's first token is prefilled,\n"
            "every later token goes through one decode step, so the KV policy evicts exactly as\n"
            "it does while generating. Reports mean NLL (nats/token), perplexity and the\n"
            "standard error of the mean NLL (docs/perplexity.md).\n"
            "\n"
            "  --model DIR            a Hugging Face model directory (with tokenizer.json)\n"
            "  --file TEXT            the UTF-8 text to score\n"
            "  --prompt-file P        a prompt the text follows: its tokens go through the cache\n"
            "                         first (BOS as generate adds it) and are never scored\n"
            "  --ctx N                window length in tokens (default: min(model context, 2048))\n"
            "  --stride S             a window starts every S tokens (1..ctx, default ctx); each\n"
            "                         scores only the tokens the previous one did not\n"
            "  --policy P --budget B  KV-cache policy and slots (default: full)\n"
            "  --sinks N --recent N --evict-every K  policy options as for generate\n"
            "  --kv-dtype fp32|bf16|fp8  how the cache stores K and V (default bf16)\n"
            "  --batch N              windows decoded together (default 4)\n"
            "  --limit-chunks K       score only the first K windows\n"
            "  --kl-base FILE         with --kl-write (and --policy full): store the full cache's top\n"
            "                         logits; otherwise read them and report KL(full || policy),\n"
            "                         top-1 agreement and the NLL difference\n"
            "  --kl-write             write --kl-base instead of reading it\n"
            "  --kl-top-k K           logits stored per position by --kl-write (default 32)\n"
            "  --json                 one JSON object on stdout\n"
            "  --per-token            with --json: the index and NLL of every scored token\n"
            "  --threads N            threads (default: all cores)\n");
}

typedef struct ppl_cli {
    lf_gen_options o;
    const char *file, *kl_base, *prompt_file;
    int ctx, stride, batch, limit, top_k;
    bool kl_write, per_token;
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
        else if (!strcmp(f, "--batch")) ok = lf_arg_int(&a, f, 1, 4096, &c->batch);
        else if (!strcmp(f, "--limit-chunks")) ok = lf_arg_int(&a, f, 1, 1 << 24, &c->limit);
        else if (!strcmp(f, "--kl-top-k")) ok = lf_arg_int(&a, f, 1, LF_PPL_TOPK_MAX, &c->top_k);
        else if (!strcmp(f, "--kl-write")) c->kl_write = true;
        else if (!strcmp(f, "--per-token")) c->per_token = true;
        else if (!strcmp(f, "--json")) c->o.json = true;
        else if (!strcmp(f, "--model") || !strcmp(f, "--threads") || !strcmp(f, "--policy") ||
                 !strcmp(f, "--budget") || !strcmp(f, "--sinks") || !strcmp(f, "--recent") ||
                 !strcmp(f, "--evict-every") || !strcmp(f, "--kv-dtype"))
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

/* Checks that need no model. */
static int check_flags(const ppl_cli *c) {
    bool budgeted = c->o.policy.kind != LF_POLICY_FULL;
    if (!c->file) lf_cli_error(CMD, "--file TEXT is required (the text to score)");
    else if (budgeted && !c->o.budget_given)
        lf_cli_error(CMD, "--policy %s needs --budget N (KV slots per window and layer)",
                     lf_policy_name(c->o.policy.kind));
    else if (!budgeted && c->o.budget_given)
        lf_cli_error(CMD, "--budget applies to budgeted policies; --policy full keeps every token");
    else if (c->kl_write && !c->kl_base) lf_cli_error(CMD, "--kl-write needs --kl-base FILE (where to write)");
    else if (c->kl_write && budgeted)
        lf_cli_error(CMD, "--kl-write stores the full cache's logits: use it with --policy full, not %s",
                     lf_policy_name(c->o.policy.kind));
    else if (c->top_k > 0 && !c->kl_write) lf_cli_error(CMD, "--kl-top-k applies with --kl-write");
    else if (c->per_token && !c->o.json) lf_cli_error(CMD, "--per-token applies with --json");
    else return 0;
    return -1;
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
    else if (nt > INT_MAX - np)
        lf_cli_error(CMD, "%s: too many tokens", c->file);
    else if (!(*ids = malloc(((size_t)np + nt) * sizeof **ids)))
        lf_cli_error(CMD, "out of memory for %d tokens", np + nt);
    else {
        if (np) memcpy(*ids, p, (size_t)np * sizeof *p);
        memcpy(*ids + np, t, (size_t)nt * sizeof *t);
        *n = np + nt;
        *n_prompt = np;
        rc = 0;
    }
    free(p);
    free(t);
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

static void print_text(const ppl_cli *c, const lf_ppl_summary *s, int windows, double secs) {
    const char *pol = lf_policy_name(c->o.policy.kind);
    printf("%s: %d tokens scored in %d windows (ctx %d, stride %d), policy %s", c->file, s->n, windows, c->ctx,
           c->stride, pol);
    if (c->o.policy.kind != LF_POLICY_FULL) printf(" budget %d", c->o.policy.budget);
    printf(", %.1f s\n", secs);
    printf("NLL %.6f +/- %.6f nats/token, perplexity %.4f\n", s->nll.mean, s->nll.se, exp(s->nll.mean));
    if (s->with_base)
        printf("KL(full || %s) %.6f +/- %.6f, top-1 agreement %.4f +/- %.4f, delta NLL %+.6f +/- %.6f\n", pol,
               s->kl.mean, s->kl.se, s->top1.mean, s->top1.se, s->delta_nll.mean, s->delta_nll.se);
}

static void print_json(const ppl_cli *c, const lf_ppl_summary *s, const lf_ppl_result *r, int windows,
                       int n_tokens, int n_prompt, double secs) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", lf_gen_model_dir(&c->o));
    cJSON_AddStringToObject(j, "file", c->file);
    if (c->prompt_file) {
        cJSON_AddStringToObject(j, "prompt_file", c->prompt_file);
        cJSON_AddNumberToObject(j, "prompt_tokens", n_prompt);
    }
    cJSON_AddStringToObject(j, "policy", lf_policy_name(c->o.policy.kind));
    cJSON_AddNumberToObject(j, "budget", c->o.policy.kind == LF_POLICY_FULL ? 0 : c->o.policy.budget);
    cJSON_AddNumberToObject(j, "ctx", c->ctx);
    cJSON_AddNumberToObject(j, "stride", c->stride);
    cJSON_AddNumberToObject(j, "windows", windows);
    cJSON_AddNumberToObject(j, "tokens", n_tokens);
    cJSON_AddNumberToObject(j, "tokens_scored", s->n);
    cJSON_AddNumberToObject(j, "nll", s->nll.mean);
    cJSON_AddNumberToObject(j, "se", s->nll.se);
    cJSON_AddNumberToObject(j, "ppl", exp(s->nll.mean));
    cJSON_AddNumberToObject(j, "seconds", secs);
    if (c->kl_base) cJSON_AddStringToObject(j, c->kl_write ? "kl_base_written" : "kl_base", c->kl_base);
    if (s->with_base) {
        cJSON_AddNumberToObject(j, "kl", s->kl.mean);
        cJSON_AddNumberToObject(j, "kl_se", s->kl.se);
        cJSON_AddNumberToObject(j, "top1", s->top1.mean);
        cJSON_AddNumberToObject(j, "top1_se", s->top1.se);
        cJSON_AddNumberToObject(j, "delta_nll", s->delta_nll.mean);
        cJSON_AddNumberToObject(j, "delta_nll_se", s->delta_nll.se);
    }
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
}

/* The header a base for this run has. */
static void run_header(const ppl_cli *c, const lf_model *m, const int *ids, int n, int n_prompt, int top_k,
                       lf_ppl_base_header *h) {
    memset(h, 0, sizeof *h);
    h->k = (uint32_t)top_k;
    h->ctx = (uint32_t)c->ctx;
    h->stride = (uint32_t)c->stride;
    h->vocab = (uint32_t)m->cfg.vocab_size;
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

/* Model loaded and text tokenized: run, write or compare, print. */
static int evaluate(ppl_cli *c, const lf_model *m, const int *ids, int n, int n_prompt) {
    lf_error err = {{0}};
    lf_ppl_base_header hdr;
    lf_ppl_result base = {0}, r = {0};
    int top_k = c->kl_write ? (c->top_k > 0 ? c->top_k : 32) : 0;
    if (top_k > m->cfg.vocab_size) top_k = m->cfg.vocab_size;
    run_header(c, m, ids, n, n_prompt, top_k, &hdr);
    int windows, scored;
    lf_ppl_plan(n, c->ctx, c->stride, c->limit, n_prompt, &windows, &scored);
    if (c->kl_base && !c->kl_write && load_base(c, &hdr, scored, &base)) return 1;
    ppl_progress prog = {lf_now_ms(), 0, false};
    lf_ppl_params p = {.policy = c->o.policy, .ctx = c->ctx, .stride = c->stride, .batch = c->batch,
                       .max_windows = c->limit, .top_k = top_k, .score_from = n_prompt, .base = c->kl_base && !c->kl_write ? &base : NULL,
                       .progress = on_progress, .progress_user = &prog};
    int rc = 1;
    if (lf_ppl_run(m, ids, n, &p, &r, &err)) {
        lf_cli_error(CMD, "%s", err.msg);
        goto out;
    }
    if (c->kl_write && lf_ppl_base_write(c->kl_base, &hdr, &r, &err)) {
        lf_cli_error(CMD, "--kl-base: %s", err.msg);
        goto out;
    }
    double secs = (lf_now_ms() - prog.t0) / 1e3;
    lf_ppl_summary s;
    lf_ppl_summarize(&r, p.base, &s);
    if (c->o.json) print_json(c, &s, &r, windows, n, n_prompt, secs);
    else print_text(c, &s, windows, secs);
    rc = 0;
out:
    lf_ppl_result_free(&r);
    lf_ppl_result_free(&base);
    return rc;
}

/* --ctx and --stride against the model (defaults filled in). */
static int resolve_window(ppl_cli *c, const lf_model *m) {
    const int mctx = m->cfg.max_position;
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
    ppl_cli c = {.batch = 4};
    lf_gen_options_default(&c.o);
    int pr = parse_flags(&c, argc, argv);
    if (pr != 0 || check_flags(&c)) {
        lf_gen_options_free(&c.o);
        return pr == 1 ? 0 : 2;
    }
    lf_cpu_set_threads(c.o.threads);
    lf_model *m = NULL;
    lf_tokenizer *tok = NULL;
    int *ids = NULL, n = 0, n_prompt = 0, rc = 1;
    lf_error err = {{0}};
    if (lf_gen_load_model(&c.o, CMD, &m)) goto out;
    if (lf_tokenizer_load(lf_gen_model_dir(&c.o), &tok, &err)) {
        lf_cli_error(CMD, "%s", err.msg);
        goto out;
    }
    if (resolve_window(&c, m)) {
        rc = 2;
        goto out;
    }
    if (read_tokens(&c, tok, &ids, &n, &n_prompt)) goto out;
    rc = evaluate(&c, m, ids, n, n_prompt);
out:
    free(ids);
    lf_tokenizer_free(tok);
    lf_model_free(m);
    lf_gen_options_free(&c.o);
    return rc;
}
