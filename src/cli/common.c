#include "cli/common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat.h"
#include "core/file.h"
#include "kv/cache.h"
#include "model/model.h"

#ifndef LF_DEFAULT_MODEL_DIR
#define LF_DEFAULT_MODEL_DIR "models/tiny-reasoner"
#endif

void lf_gen_options_default(lf_gen_options *o) {
    memset(o, 0, sizeof *o);
    o->max_tokens = 256;
    o->device = LF_DEVICE_CPU;
    o->max_seqs = -1;
    lf_sampling_default(&o->sampling);
    lf_policy_config_default(&o->policy);
}

void lf_gen_options_free(lf_gen_options *o) { (void)o; }

bool lf_gen_parse_batch(lf_args *a, const char *flag, int *out) {
    const char *v = lf_arg_value(a, flag);
    if (!v) return false;
    if (!strcmp(v, "max")) {
        *out = 0;
        return true;
    }
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end) {
        lf_cli_error(a->cmd, "%s: '%s' is not a number of sequences or \"max\"", flag, v);
        return false;
    }
    if (x < 1 || x > 1 << 20) {
        lf_cli_error(a->cmd, "%s: %ld is out of range [1, %d] (or \"max\" with --device cuda)", flag, x, 1 << 20);
        return false;
    }
    *out = (int)x;
    return true;
}

int lf_gen_check_device(const lf_gen_options *o, const char *cmd) {
    if (o->device != LF_DEVICE_CUDA && o->max_seqs == 0) {
        lf_cli_error(cmd, "--batch/--max-seqs max (as many sequences as fit in GPU memory) needs --device cuda; "
                          "on the CPU give a number");
        return -1;
    }
    if (o->device != LF_DEVICE_CUDA && o->gpu_mem_fraction > 0) {
        lf_cli_error(cmd, "--gpu-mem-fraction applies to --device cuda only");
        return -1;
    }
    return 0;
}

int lf_gen_options_parse(lf_gen_options *o, lf_args *a, const char *f) {
#define STR(name, field)                                  \
    if (!strcmp(f, name)) {                               \
        return (o->field = lf_arg_value(a, f)) ? 1 : -1;  \
    }
#define BOOL(name, field)    \
    if (!strcmp(f, name)) {  \
        o->field = true;     \
        return 1;            \
    }
    STR("--model", model_dir)
    STR("--prompt", prompt)
    STR("--prompt-file", prompt_file)
    STR("--prompt-ids", prompt_ids)
    STR("--messages", messages_file)
    STR("--system", system)
    STR("--chat-template", chat_template)
    BOOL("--chat", chat)
    BOOL("--no-think", no_think)
    BOOL("--json", json)
    BOOL("--split-think", split_think)
    BOOL("--ignore-eos", ignore_eos)
#undef STR
#undef BOOL
    if (!strcmp(f, "--max-tokens")) return lf_arg_int(a, f, 1, 10000000, &o->max_tokens) ? 1 : -1;
    if (!strcmp(f, "--threads")) return lf_arg_int(a, f, 0, 4096, &o->threads) ? 1 : -1;
    if (!strcmp(f, "--temperature")) return lf_arg_float(a, f, 0, 100, &o->sampling.temperature) ? 1 : -1;
    if (!strcmp(f, "--top-k")) return lf_arg_int(a, f, 0, 100000000, &o->sampling.top_k) ? 1 : -1;
    if (!strcmp(f, "--top-p")) {
        if (!lf_arg_float(a, f, 0, 1, &o->sampling.top_p)) return -1;
        if (o->sampling.top_p <= 0) {
            lf_cli_error(a->cmd, "--top-p must be in (0, 1]");
            return -1;
        }
        return 1;
    }
    if (!strcmp(f, "--min-p")) {
        if (!lf_arg_float(a, f, 0, 1, &o->sampling.min_p)) return -1;
        if (o->sampling.min_p >= 1) {
            lf_cli_error(a->cmd, "--min-p must be in [0, 1)");
            return -1;
        }
        return 1;
    }
    if (!strcmp(f, "--repetition-penalty")) {
        if (!lf_arg_float(a, f, 0, 100, &o->sampling.repetition_penalty)) return -1;
        if (o->sampling.repetition_penalty <= 0) {
            lf_cli_error(a->cmd, "--repetition-penalty must be > 0");
            return -1;
        }
        return 1;
    }
    if (!strcmp(f, "--seed")) return lf_arg_u64(a, f, &o->sampling.seed) ? 1 : -1;
    if (!strcmp(f, "--policy")) {
        const char *v = lf_arg_value(a, f);
        if (!v) return -1;
        if (lf_policy_from_name(v, &o->policy.kind)) {
            lf_cli_error(a->cmd, "--policy: unknown policy '%s' (known: full, longflow, streaming, tova, h2o, vatp, rkv; "
                                 "see longflow policies)", v);
            return -1;
        }
        return 1;
    }
    if (!strcmp(f, "--budget")) {
        if (!lf_arg_int(a, f, 1, 100000000, &o->policy.budget)) return -1;
        o->budget_given = true;
        return 1;
    }
    if (!strcmp(f, "--sinks")) return lf_arg_int(a, f, 0, 100000000, &o->policy.sinks) ? 1 : -1;
    if (!strcmp(f, "--recent")) return lf_arg_int(a, f, 0, 100000000, &o->policy.recent) ? 1 : -1;
    if (!strcmp(f, "--evict-every")) return lf_arg_int(a, f, 1, 100000000, &o->policy.evict_every) ? 1 : -1;
    if (!strcmp(f, "--max-seqs")) return lf_gen_parse_batch(a, f, &o->max_seqs) ? 1 : -1;
    if (!strcmp(f, "--gpu-mem-fraction")) {
        if (!lf_arg_float(a, f, -1e30, 1e30, &o->gpu_mem_fraction)) return -1;
        if (!(o->gpu_mem_fraction > 0 && o->gpu_mem_fraction <= 0.98f)) {
            lf_cli_error(a->cmd, "--gpu-mem-fraction: %g is out of range (0, 0.98]", (double)o->gpu_mem_fraction);
            return -1;
        }
        return 1;
    }
    if (!strcmp(f, "--device")) {
        const char *v = lf_arg_value(a, f);
        if (!v) return -1;
        if (!strcmp(v, "cpu")) o->device = LF_DEVICE_CPU;
        else if (!strcmp(v, "cuda")) o->device = LF_DEVICE_CUDA;
        else {
            lf_cli_error(a->cmd, "--device: unknown device '%s' (cpu or cuda)", v);
            return -1;
        }
        return 1;
    }
    return 0;
}

const char *lf_gen_model_dir(const lf_gen_options *o) {
    if (o->model_dir) return o->model_dir;
    const char *env = getenv("LONGFLOW_MODEL");
    if (env && *env) return env;
    return LF_DEFAULT_MODEL_DIR;
}

static int build_chat_prompt(const lf_gen_options *o, const char *cmd, lf_tokenizer *tok, const char *user_text,
                             int **prompt, int *n_prompt, char **rendered, bool *think_open) {
    lf_error err = {{0}};
    lf_chat_message *msgs = NULL;
    int n = 0;
    int rc = -1;
    char *json = NULL;
    if (o->messages_file) {
        if (lf_read_file(o->messages_file, &json, NULL, &err) ||
            lf_chat_messages_parse(json, o->messages_file, &msgs, &n, &err)) {
            lf_cli_error(cmd, "%s", err.msg);
            goto out;
        }
    } else {
        msgs = calloc(2, sizeof *msgs);
        if (!msgs) goto out;
        if (o->system) {
            msgs[n].role = strdup("system");
            msgs[n++].content = strdup(o->system);
        }
        msgs[n].role = strdup("user");
        msgs[n++].content = strdup(user_text);
    }
    lf_chat_family fam;
    if (lf_chat_select(tok, o->chat_template, &fam, &err)) {
        lf_cli_error(cmd, "%s", err.msg);
        goto out;
    }
    lf_chat_options copt = {.add_generation_prompt = true, .enable_thinking = !o->no_think};
    *think_open = lf_chat_opens_think(fam, &copt);
    if (lf_chat_apply(fam, tok, msgs, n, &copt, rendered, prompt, n_prompt, &err)) {
        lf_cli_error(cmd, "%s", err.msg);
        goto out;
    }
    rc = 0;
out:
    lf_chat_messages_free(msgs, n);
    free(json);
    return rc;
}

int lf_gen_prepare_prompt(const lf_gen_options *o, const char *cmd, lf_model **model, lf_tokenizer **tok,
                          int **prompt, int *n_prompt, char **rendered, bool *think_open) {
    lf_error err = {{0}};
    *think_open = false;
    *model = NULL;
    *tok = NULL;
    *prompt = NULL;
    *n_prompt = 0;
    *rendered = NULL;
    int n_inputs = !!o->prompt + !!o->prompt_file + !!o->prompt_ids + !!o->messages_file;
    if (n_inputs == 0) {
        lf_cli_error(cmd, "no prompt: give --prompt TEXT, --prompt-file F, --prompt-ids 1,2,3 or --messages FILE");
        return -1;
    }
    if (n_inputs > 1) {
        lf_cli_error(cmd, "give only one of --prompt, --prompt-file, --prompt-ids and --messages");
        return -1;
    }
    bool chat = o->chat || o->messages_file;
    if (o->prompt_ids && chat) {
        lf_cli_error(cmd, "--chat needs a text prompt (--prompt, --prompt-file or --messages), not --prompt-ids");
        return -1;
    }
    if (!chat && (o->system || o->no_think || o->chat_template)) {
        lf_cli_error(cmd, "--system, --no-think and --chat-template apply only with --chat or --messages");
        return -1;
    }
    const char *dir = lf_gen_model_dir(o);
    if (lf_model_load(dir, model, &err)) {
        lf_cli_error(cmd, "%s", err.msg);
        if (!o->model_dir && !getenv("LONGFLOW_MODEL"))
            fprintf(stderr, "longflow %s: (no --model given; the bundled default is %s)\n", cmd, dir);
        return -1;
    }
    char *tj = lf_path_join(dir, "tokenizer.json");
    bool has_tok = tj && lf_file_exists(tj);
    free(tj);
    if (has_tok || !o->prompt_ids) {
        if (lf_tokenizer_load(dir, tok, &err)) {
            lf_cli_error(cmd, "%s", err.msg);
            goto fail;
        }
    }
    if (o->prompt_ids) {
        if (!lf_parse_ids("--prompt-ids", o->prompt_ids, prompt, n_prompt)) goto fail;
        return 0;
    }
    char *file_text = NULL;
    const char *text = o->prompt;
    if (o->prompt_file) {
        if (lf_read_file(o->prompt_file, &file_text, NULL, &err)) {
            lf_cli_error(cmd, "%s", err.msg);
            goto fail;
        }
        text = file_text;
    }
    int rc;
    if (chat) {
        rc = build_chat_prompt(o, cmd, *tok, text, prompt, n_prompt, rendered, think_open);
    } else {
        rc = lf_tokenizer_encode(*tok, text, strlen(text), LF_TOK_ADD_SPECIAL | LF_TOK_PARSE_SPECIAL, prompt, n_prompt,
                                 &err);
        if (rc) lf_cli_error(cmd, "--prompt: %s", err.msg);
    }
    free(file_text);
    if (rc) goto fail;
    if (*n_prompt == 0) {
        lf_cli_error(cmd, "the prompt encodes to no tokens");
        goto fail;
    }
    return 0;
fail:
    free(*prompt);
    *prompt = NULL;
    free(*rendered);
    *rendered = NULL;
    lf_tokenizer_free(*tok);
    *tok = NULL;
    lf_model_free(*model);
    *model = NULL;
    return -1;
}

int lf_gen_engine_config(const lf_gen_options *o, const char *cmd, const lf_model *m, lf_engine_config *ec) {
    (void)m;
    lf_engine_config_default(ec);
    ec->device = o->device;
    ec->threads = o->threads;
    if (lf_gen_check_device(o, cmd)) return -1;
    ec->max_seqs = o->max_seqs >= 0 ? o->max_seqs : 1;
    ec->gpu_mem_fraction = o->gpu_mem_fraction;
    ec->max_tokens = o->max_tokens;
    ec->ignore_eos = o->ignore_eos;
    ec->sampling = o->sampling;
    ec->policy = o->policy;
    if (o->policy.kind == LF_POLICY_FULL) {
        if (o->budget_given) {
            lf_cli_error(cmd, "--budget applies to budgeted policies; --policy full keeps every token "
                              "(use --policy longflow --budget N)");
            return -1;
        }
    } else if (!o->budget_given) {
        lf_cli_error(cmd, "--policy %s needs --budget N (KV slots per sequence and layer)",
                     lf_policy_name(o->policy.kind));
        return -1;
    }
    return 0;
}

size_t lf_gen_kv_bytes_full(const lf_model *m, int n_tokens) { return lf_kv_bytes_for(m, n_tokens); }
