#include "cli/common.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/input.h"
#include "longflow.h"
#include "core/error.h"
#include "core/file.h"

#ifndef LF_DEFAULT_MODEL_DIR
#define LF_DEFAULT_MODEL_DIR "models/tiny-reasoner"
#endif

void lf_gen_options_default(lf_gen_options *o) {
    memset(o, 0, sizeof *o);
    o->max_tokens = 0; /* the model's default (lf_gen_resolve_max_tokens) */
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

int lf_gen_check_budget(const lf_gen_options *o, const char *cmd) {
    lf_error err = {{0}};
    if (lf_policy_check_budget(o->policy.kind, o->budget_given, "--policy", "--budget", &err) == 0) return 0;
    lf_cli_error(cmd, "%s", err.msg);
    return -1;
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
    lf_error kerr;
    if (lf_kv_dtype_check_device(o->policy.kv_dtype, o->device, &kerr)) {
        lf_cli_error(cmd, "%s", kerr.msg);
        return -1;
    }
    if (o->device == LF_DEVICE_CUDA && o->weights_given && o->weights == LF_WEIGHTS_QUANT) {
        lf_cli_error(cmd, "--weights quant applies to --device cpu only (cuda dequantizes GGUF blocks to bf16)");
        return -1;
    }
    return 0;
}

lf_weights_mode lf_gen_weights(const lf_gen_options *o) {
    if (o->weights_given) return o->weights;
    return o->device == LF_DEVICE_CUDA ? LF_WEIGHTS_BF16 : LF_WEIGHTS_QUANT;
}

bool lf_gen_parse_threads(lf_args *a, const char *flag, int *out) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1) cores = 1;
    if (!lf_arg_int(a, flag, 0, 4096, out)) return false;
    if (*out > cores) {
        fprintf(stderr, "longflow %s: warning: %s %d is more than the %ld cores of this machine; using %ld\n", a->cmd,
                flag, *out, cores, cores);
        *out = (int)cores;
    }
    return true;
}

/* A flag's value that is one of two names: *out = 0 for the first, 1 for
 * the second; prints "FLAG: unknown WHAT 'v' (a or b)" otherwise. */
static bool two_way_choice(lf_args *a, const char *flag, const char *what, const char *first, const char *second,
                           int *out) {
    const char *v = lf_arg_value(a, flag);
    if (!v) return false;
    if (strcmp(v, first) && strcmp(v, second)) {
        lf_cli_error(a->cmd, "%s: unknown %s '%s' (%s or %s)", flag, what, v, first, second);
        return false;
    }
    *out = strcmp(v, first) != 0;
    return true;
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
    if (!strcmp(f, "--threads")) return lf_gen_parse_threads(a, f, &o->threads) ? 1 : -1;
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
        lf_error err = {{0}};
        if (lf_policy_parse("--policy", v, &o->policy.kind, &err)) {
            lf_cli_error(a->cmd, "%s", err.msg);
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
    if (!strcmp(f, "--protect-prompt")) {
        if (!lf_arg_float(a, f, -1e30, 1e30, &o->policy.protect_prompt)) return -1;
        if (!(o->policy.protect_prompt > 0 && o->policy.protect_prompt < 1)) {
            lf_cli_error(a->cmd, "--protect-prompt: %g is not a share of the budget in (0, 1)",
                         (double)o->policy.protect_prompt);
            return -1;
        }
        return 1;
    }
    if (!strcmp(f, "--kv-dtype")) {
        const char *v = lf_arg_value(a, f);
        if (!v) return -1;
        if (lf_kv_dtype_from_name(v, &o->policy.kv_dtype)) {
            lf_cli_error(a->cmd, "--kv-dtype: unknown KV-cache dtype '%s' (fp32, bf16 or fp8)", v);
            return -1;
        }
        return 1;
    }
    if (!strcmp(f, "--max-seqs")) return lf_gen_parse_batch(a, f, &o->max_seqs) ? 1 : -1;
    if (!strcmp(f, "--gpu-mem-fraction")) {
        if (!lf_arg_float(a, f, -1e30, 1e30, &o->gpu_mem_fraction)) return -1;
        if (!(o->gpu_mem_fraction > 0 && o->gpu_mem_fraction <= 0.98f)) {
            lf_cli_error(a->cmd, "--gpu-mem-fraction: %g is out of range (0, 0.98]", (double)o->gpu_mem_fraction);
            return -1;
        }
        return 1;
    }
    if (!strcmp(f, "--weights")) {
        int v;
        if (!two_way_choice(a, f, "mode", "quant", "bf16", &v)) return -1;
        o->weights = v ? LF_WEIGHTS_BF16 : LF_WEIGHTS_QUANT;
        o->weights_given = true;
        return 1;
    }
    if (!strcmp(f, "--device")) {
        int v;
        if (!two_way_choice(a, f, "device", "cpu", "cuda", &v)) return -1;
        o->device = v ? LF_DEVICE_CUDA : LF_DEVICE_CPU;
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
        if (lf_cli_read_prompt_file(cmd, o->messages_file, &json, NULL)) goto out;
        if (lf_chat_messages_parse(json, o->messages_file, &msgs, &n, &err)) {
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
    lf_chat_prompt p;
    if (lf_chat_render_messages(fam, tok, msgs, n, &copt, &p, &err)) {
        lf_cli_error(cmd, "%s", err.msg);
        goto out;
    }
    *rendered = p.text;
    *prompt = p.ids;
    *n_prompt = p.n_ids;
    *think_open = p.think_open;
    rc = 0;
out:
    lf_chat_messages_free(msgs, n);
    free(json);
    return rc;
}

int lf_gen_load_model(const lf_gen_options *o, const char *cmd, lf_model **model) {
    lf_error err = {{0}};
    const char *dir = lf_gen_model_dir(o);
    *model = NULL;
    if (lf_cli_check_model_path(cmd, dir, o->model_dir != NULL)) return -1;
    if (lf_model_load_mode(dir, lf_gen_weights(o), model, &err)) {
        lf_cli_error(cmd, "%s", err.msg);
        return -1;
    }
    return 0;
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
    if (lf_gen_load_model(o, cmd, model)) return -1;
    if (lf_model_has_tokenizer(dir) || !o->prompt_ids) {
        if (lf_model_tokenizer_load(dir, tok, &err)) {
            if (!o->prompt_ids) {
                lf_cli_error(cmd, "%s", err.msg);
                goto fail;
            }
            /* ids in, ids out: the tokenizer only turns the output into text */
            fprintf(stderr, "longflow %s: no text output: %s\n", cmd, err.msg);
        }
    }
    if (o->prompt_ids) {
        if (!lf_parse_ids(cmd, "--prompt-ids", o->prompt_ids, lf_config_vocab_size(lf_model_config(*model)),
                          "the model's vocabulary", prompt, n_prompt))
            goto fail;
        return 0;
    }
    char *file_text = NULL;
    const char *text = o->prompt;
    size_t text_len = 0;
    int rc;
    if (o->prompt_file) rc = lf_cli_read_prompt_file(cmd, o->prompt_file, &file_text, &text_len);
    else if (o->prompt) rc = lf_cli_check_prompt_text(cmd, "--prompt", text, text_len = strlen(text));
    else rc = 0; /* --messages */
    if (o->prompt_file) text = file_text;
    if (rc) {
        /* printed */
    } else if (chat) {
        rc = build_chat_prompt(o, cmd, *tok, text, prompt, n_prompt, rendered, think_open);
    } else {
        rc = lf_tokenizer_encode(*tok, text, text_len, LF_TOK_ADD_SPECIAL | LF_TOK_PARSE_SPECIAL, prompt, n_prompt,
                                 &err);
        if (rc) lf_cli_error(cmd, "%s: %s", o->prompt_file ? o->prompt_file : "--prompt", err.msg);
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
    return lf_gen_check_budget(o, cmd);
}


/* A JSON object file of the model directory, or NULL (no error) when there
 * is none. */
static int read_json_file(const char *dir, const char *name, cJSON **out, lf_error *err) {
    *out = NULL;
    char *path = lf_path_join(dir, name);
    if (!path) return lf_fail(err, "%s: out of memory", dir);
    int rc = 0;
    char *text = NULL;
    size_t len = 0;
    if (lf_file_exists(path)) {
        if (lf_read_file(path, &text, &len, err)) rc = -1;
        else if (!(*out = cJSON_ParseWithLength(text, len)) || !cJSON_IsObject(*out))
            rc = lf_fail(err, "%s: not valid JSON (a JSON object is expected)", path);
    }
    if (rc) {
        cJSON_Delete(*out);
        *out = NULL;
    }
    free(text);
    free(path);
    return rc;
}

/* A positive integer key of a JSON object: 1 when present, 0 when absent,
 * -1 (err filled) when it is not a positive integer. */
static int positive_int(const cJSON *j, const char *key, const char *file, int *out, lf_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 1e8 || v->valuedouble != (double)(int)v->valuedouble)
        return lf_fail(err, "%s: \"%s\" must be a positive integer", file, key);
    *out = v->valueint;
    return 1;
}

static int read_longflow_json(const char *dir, lf_model_defaults *d, lf_error *err) {
    cJSON *j = NULL;
    if (read_json_file(dir, "longflow.json", &j, err)) return -1;
    if (!j) return 0;
    int rc = 0;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "eval_instruction");
    if (v && !cJSON_IsString(v)) rc = lf_fail(err, "%s/longflow.json: \"eval_instruction\" must be a string", dir);
    else if (v && !(d->eval_instruction = strdup(v->valuestring))) rc = lf_fail(err, "out of memory");
    int r = rc ? 0 : positive_int(j, "max_tokens", "longflow.json", &d->max_tokens, err);
    if (r < 0) rc = -1;
    else if (r > 0) d->max_tokens_source = "longflow.json \"max_tokens\"";
    cJSON_Delete(j);
    return rc;
}

static int read_generation_config(const char *dir, lf_model_defaults *d, lf_error *err) {
    cJSON *j = NULL;
    if (read_json_file(dir, "generation_config.json", &j, err)) return -1;
    if (!j) return 0;
    int rc = 0, r = positive_int(j, "max_new_tokens", "generation_config.json", &d->max_tokens, err);
    if (r < 0) rc = -1;
    else if (r > 0) d->max_tokens_source = "generation_config.json \"max_new_tokens\"";
    else if (positive_int(j, "max_length", "generation_config.json", &d->max_length, err) < 0) rc = -1;
    cJSON_Delete(j);
    return rc;
}

int lf_gen_model_defaults(const char *dir, lf_model_defaults *d, lf_error *err) {
    memset(d, 0, sizeof *d);
    if (read_longflow_json(dir, d, err) || (!d->max_tokens && read_generation_config(dir, d, err))) {
        lf_gen_model_defaults_free(d);
        return -1;
    }
    return 0;
}

void lf_gen_model_defaults_free(lf_model_defaults *d) {
    free(d->eval_instruction);
    d->eval_instruction = NULL;
}

int lf_gen_resolve_max_tokens(lf_gen_options *o, const char *cmd, const lf_model *m, int n_prompt) {
    if (o->max_tokens > 0) return 0; /* --max-tokens */
    lf_model_defaults d;
    lf_error err = {{0}};
    if (lf_gen_model_defaults(lf_gen_model_dir(o), &d, &err)) {
        lf_cli_error(cmd, "%s", err.msg);
        return -1;
    }
    lf_error ctx_err;
    int room = lf_context_check(m, n_prompt, &ctx_err); /* what the context leaves (-1: nothing; submit says so) */
    if (d.max_tokens) o->max_tokens = d.max_tokens;
    else if (d.max_length > n_prompt) o->max_tokens = d.max_length - n_prompt;
    else o->max_tokens = room < LF_DEFAULT_MAX_TOKENS && room > 0 ? room : LF_DEFAULT_MAX_TOKENS;
    lf_gen_model_defaults_free(&d);
    return 0;
}

void lf_gen_kv_report_fill(lf_kv_report *r, const lf_model *m, const lf_engine_config *ec, const lf_generation *g) {
    const lf_device device = ec->device;
    const int max_tokens = ec->max_tokens;
    r->bytes = g->kv_bytes;
    r->in_use_peak = g->kv_bytes_in_use_peak;
    const lf_kv_dtype dt = ec->policy.kv_dtype;
    r->full_bytes = lf_kv_bytes_for(m, g->n_prompt + max_tokens, device, dt);
    /* full holds the prompt and every generated token but the last (which no step reads) */
    int held = g->n_prompt + (g->n_tokens > 0 ? g->n_tokens - 1 : 0);
    r->full_in_use_peak = lf_kv_bytes_for(m, held, device, dt);
}

void lf_gen_kv_report_json(const lf_kv_report *r, cJSON *obj) {
    cJSON_AddNumberToObject(obj, "kv_bytes", (double)r->bytes);
    cJSON_AddNumberToObject(obj, "kv_bytes_in_use_peak", (double)r->in_use_peak);
    cJSON_AddNumberToObject(obj, "kv_bytes_full", (double)r->full_bytes);
    cJSON_AddNumberToObject(obj, "kv_bytes_full_in_use_peak", (double)r->full_in_use_peak);
}

void lf_gen_kv_report_print(const lf_kv_report *r, const char *policy, FILE *f) {
    fprintf(f, "KV cache %s: %.2f MB allocated, %.2f MB in use at peak; full would allocate %.2f MB and hold %.2f MB at its peak",
            policy, r->bytes / 1e6, r->in_use_peak / 1e6, r->full_bytes / 1e6, r->full_in_use_peak / 1e6);
    if (r->full_in_use_peak > 0 && r->in_use_peak < r->full_in_use_peak)
        fprintf(f, " (%.0f%% saved)", 100.0 * (1.0 - (double)r->in_use_peak / (double)r->full_in_use_peak));
}
