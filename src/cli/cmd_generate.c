/* longflow generate: load a model directory, run one prompt, stream the text
 * (or print one JSON object with --json). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "core/file.h"
#include "core/memstat.h"
#include "longflow.h"

static void generate_usage(FILE *f) {
    char policies[256];
    lf_policy_list(policies, sizeof policies);
    fprintf(f,
            "usage: longflow generate [--model DIR] (--prompt TEXT | --prompt-file F | --prompt-ids 1,2,3 |\n"
            "                          --messages FILE) [options]\n"
            "\n"
            "input:\n"
            "  --model DIR              Hugging Face model directory or GGUF file (default: $LONGFLOW_MODEL or the bundled model)\n"
            "  --prompt TEXT            prompt text (raw completion, or the user message with --chat)\n"
            "  --prompt-file F          read the prompt text from a file (UTF-8, read whole)\n"
            "  --prompt-ids 1,2,3       prompt as token ids (no tokenizer needed)\n"
            "  --chat                   apply the model's chat template to --prompt (and --system)\n"
            "  --system S               system message (with --chat)\n"
            "  --messages FILE          OpenAI-style JSON array of {\"role\",\"content\"} (implies --chat)\n"
            "  --no-think               the chat template with thinking disabled (enable_thinking=false)\n"
            "  --chat-template NAME     model, qwen3, qwq, chatml, deepseek-r1, llama3 or llama2 (default: the\n"
            "                           model's own template, else one matching its chat tokens)\n"
            "sampling (defaults: greedy):\n"
            "  --max-tokens N           tokens to generate at most (default: the model's longflow.json\n"
            "                           \"max_tokens\" or generation_config.json \"max_new_tokens\"/\"max_length\",\n"
            "                           else %d, within the model's context)\n"
            "  --temperature T          0 = greedy (default 0)\n"
            "  --top-k K  --top-p P  --min-p P  --repetition-penalty R  --seed S\n"
            "  --ignore-eos             generate exactly --max-tokens tokens\n"
            "KV cache:\n"
            "  --policy NAME            %s (default full)\n"
            "  --budget N               KV slots per sequence and layer (budgeted policies)\n"
            "  --sinks N  --recent N    tokens never evicted (first prompt tokens / newest tokens)\n"
            "  --evict-every K          LongFlow: evict K slots at once every K steps (default 1)\n"
            "  --protect-prompt S       never evict the prompt; it may take share S of the budget\n"
            "                           (SnapKV's selection of it when longer; CPU only)\n"
            "  --kv-dtype fp32|bf16|fp8 " LF_KV_DTYPE_HELP
            "output and machine:\n"
            "  --json                   print one JSON object on stdout\n"
            "  --split-think            with --json: add \"reasoning\" and \"answer\"\n"
            "  --threads N              CPU threads, at most the cores (default 0: all cores)\n"
            "  --device cpu|cuda        (default cpu; cuda needs a build with -DLF_CUDA=ON and a GPU)\n"
            "  --weights quant|bf16     GGUF block-quantized matrices computed on as\n"
            "                           blocks (quant, the CPU default) or dequantized to bf16 at\n"
            "                           load (bf16, cuda's)\n"
            "  --gpu-mem-fraction F     cuda: share of the free GPU memory to plan with (0 < F <= 0.98)\n",
            LF_DEFAULT_MAX_TOKENS, policies);
}

typedef struct stream_state {
    lf_detok_stream *detok;
    bool print;
    bool print_ids;
    const lf_config *cfg;
    bool ignore_eos;
    bool printed; /* some text went to stdout (an error then starts on a new line) */
} stream_state;

static void on_token(void *user, const lf_generation *g, int token) {
    stream_state *s = user;
    if (!s->print) return;
    if (!s->ignore_eos && lf_config_is_eos(s->cfg, token)) return; /* the stop token is not text */
    if (s->print_ids) {
        printf("%s%d", g->n_tokens > 1 ? " " : "", token);
        fflush(stdout);
        s->printed = true;
        return;
    }
    const char *text;
    size_t len;
    lf_error err;
    if (lf_detok_stream_push(s->detok, token, &text, &len, &err) == 0 && len) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
        s->printed = true;
    }
}

/* The --json object of one generation. */
static cJSON *generation_json(const lf_generation *g, const char *gen_text, const char *rendered, bool split_think,
                              bool think_open, const lf_engine_stats *st, const lf_engine_config *ec, double tps,
                              const lf_kv_report *kv) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    cJSON_AddItemToObject(root, "prompt_tokens", cJSON_CreateIntArray(g->prompt, g->n_prompt));
    cJSON_AddItemToObject(root, "tokens", cJSON_CreateIntArray(g->tokens, g->n_tokens));
    cJSON_AddStringToObject(root, "text", gen_text ? gen_text : "");
    if (rendered) cJSON_AddStringToObject(root, "prompt_text", rendered);
    if (split_think && gen_text) {
        char *reasoning = NULL, *answer = NULL;
        if (lf_chat_split_think_ex(gen_text, think_open, &reasoning, &answer) == 0) {
            cJSON_AddStringToObject(root, "reasoning", reasoning ? reasoning : "");
            cJSON_AddStringToObject(root, "answer", answer ? answer : "");
        }
        free(reasoning);
        free(answer);
    }
    cJSON_AddStringToObject(root, "finish_reason", g->finish_reason ? g->finish_reason : "");
    if (g->note) cJSON_AddStringToObject(root, "note", g->note);
    cJSON *js = cJSON_AddObjectToObject(root, "stats");
    cJSON_AddNumberToObject(js, "prefill_ms", st->prefill_ms);
    cJSON_AddNumberToObject(js, "decode_ms", st->decode_ms);
    cJSON_AddNumberToObject(js, "tokens_per_s", tps);
    lf_gen_kv_report_json(kv, js);
    cJSON_AddNumberToObject(js, "kv_aux_bytes", (double)g->kv_aux_bytes);
    cJSON_AddNumberToObject(js, "kv_tokens_peak", (double)g->kv_tokens_peak);
    cJSON_AddNumberToObject(js, "peak_rss_bytes", (double)lf_peak_rss_bytes());
    cJSON_AddStringToObject(js, "policy", lf_policy_name(ec->policy.kind));
    cJSON_AddNumberToObject(js, "budget", ec->policy.kind == LF_POLICY_FULL ? 0 : ec->policy.budget);
    cJSON_AddNumberToObject(js, "max_tokens", ec->max_tokens);
    cJSON_AddStringToObject(js, "device", ec->device == LF_DEVICE_CUDA ? "cuda" : "cpu");
    if (ec->device == LF_DEVICE_CUDA) {
        cJSON_AddStringToObject(js, "device_name", st->device_name);
        cJSON_AddNumberToObject(js, "gpu_peak_bytes", (double)st->gpu_peak_bytes);
        cJSON_AddNumberToObject(js, "gpu_weight_bytes", (double)st->gpu_weight_bytes);
        cJSON_AddNumberToObject(js, "capacity", st->capacity);
    }
    return root;
}

/* The statistics line(s) on stderr after streamed text. */
static void print_stats(const lf_generation *g, const lf_engine_stats *st, const lf_engine_config *ec, double tps,
                        const lf_kv_report *kv) {
    fprintf(stderr,
            "[longflow] prompt %d tokens, generated %d (%s); prefill %.1f ms (%.1f tok/s), decode %.1f ms "
            "(%.2f tok/s); peak RSS %.1f MB\n[longflow] ",
            g->n_prompt, g->n_tokens, g->finish_reason ? g->finish_reason : "?", st->prefill_ms,
            st->prefill_ms > 0 ? g->n_prompt / (st->prefill_ms / 1e3) : 0.0, st->decode_ms, tps,
            lf_peak_rss_bytes() / 1e6);
    char pol[64];
    if (ec->policy.kind == LF_POLICY_FULL) snprintf(pol, sizeof pol, "full");
    else snprintf(pol, sizeof pol, "%s (budget %d)", lf_policy_name(ec->policy.kind), ec->policy.budget);
    lf_gen_kv_report_print(kv, pol, stderr);
    fputc('\n', stderr);
    if (g->note) fprintf(stderr, "[longflow] %s\n", g->note);
    if (ec->device == LF_DEVICE_CUDA)
        fprintf(stderr, "[longflow] device %s: %d slots per layer, peak GPU memory %.1f MB\n", st->device_name,
                st->capacity, st->gpu_peak_bytes / 1e6);
}

int lf_cmd_generate(int argc, char **argv) {
    const char *cmd = "generate";
    lf_gen_options o;
    lf_gen_options_default(&o);
    lf_args a;
    lf_args_init(&a, cmd, argc, argv);
    const char *flag;
    while ((flag = lf_args_next(&a))) {
        int r = lf_gen_options_parse(&o, &a, flag);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (!strcmp(flag, "--help") || !strcmp(flag, "-h")) {
            generate_usage(stdout);
            return 0;
        }
        lf_cli_error(cmd, "unknown option '%s' (see longflow generate --help)", flag);
        return 2;
    }
    if (!a.cmd) return 2;
    if (o.split_think && !o.json) {
        lf_cli_error(cmd, "--split-think adds \"reasoning\" and \"answer\" to the JSON output: it needs --json");
        return 2;
    }

    int rc = 1;
    lf_error err = {{0}};
    lf_model *model = NULL;
    lf_tokenizer *tok = NULL;
    lf_engine *eng = NULL;
    int *prompt = NULL, n_prompt = 0;
    char *rendered = NULL;
    char *gen_text = NULL;
    stream_state ss = {0};
    cJSON *root = NULL;

    bool think_open = false;
    if (lf_gen_prepare_prompt(&o, cmd, &model, &tok, &prompt, &n_prompt, &rendered, &think_open)) goto done;

    lf_engine_config ec;
    if (lf_gen_resolve_max_tokens(&o, cmd, model, n_prompt) || lf_gen_engine_config(&o, cmd, model, &ec)) goto done;
    if (lf_engine_create(model, &ec, &eng, &err)) {
        lf_cli_error(cmd, "%s", err.msg);
        goto done;
    }
    int id = lf_engine_submit(eng, prompt, n_prompt, &err);
    if (id < 0) {
        lf_cli_error(cmd, "%s", err.msg);
        goto done;
    }
    ss.cfg = lf_model_config(model);
    ss.ignore_eos = ec.ignore_eos;
    ss.print = !o.json;
    ss.print_ids = tok == NULL;
    if (tok) ss.detok = lf_detok_stream_new(tok, false);
    if (lf_engine_run(eng, on_token, &ss, &err)) {
        if (ss.printed) fputc('\n', stdout);
        lf_cli_error(cmd, "%s", err.msg);
        goto done;
    }
    if (ss.print) {
        if (ss.detok) {
            const char *text;
            size_t len;
            lf_detok_stream_flush(ss.detok, &text, &len);
            fwrite(text, 1, len, stdout);
        }
        fputc('\n', stdout);
        fflush(stdout);
    }

    const lf_generation *g = lf_engine_result(eng, id);
    lf_engine_stats st;
    lf_engine_stats_get(eng, &st);
    int n_text = g->n_tokens;
    if (n_text > 0 && !ec.ignore_eos && lf_config_is_eos(ss.cfg, g->tokens[n_text - 1])) n_text--;
    if (o.json && tok && lf_tokenizer_decode(tok, g->tokens, n_text, false, &gen_text, NULL, &err)) {
        lf_cli_error(cmd, "%s", err.msg);
        goto done;
    }
    double tps = st.decode_ms > 0 ? (double)st.decode_tokens / (st.decode_ms / 1e3) : 0.0;
    lf_kv_report kv;
    lf_gen_kv_report_fill(&kv, model, &ec, g);
    if (o.json) {
        root = generation_json(g, gen_text, rendered, o.split_think, think_open, &st, &ec, tps, &kv);
        char *s = root ? cJSON_PrintUnformatted(root) : NULL;
        if (!s) {
            lf_cli_error(cmd, "out of memory writing JSON");
            goto done;
        }
        puts(s);
        free(s);
    } else {
        print_stats(g, &st, &ec, tps, &kv);
    }
    if (g->finish_reason && !strcmp(g->finish_reason, "length") && !g->note && !ec.ignore_eos)
        fprintf(stderr,
                "longflow %s: note: the output stopped at the --max-tokens limit (%d tokens) before the model "
                "finished; give a larger --max-tokens N to let it finish\n",
                cmd, ec.max_tokens);
    rc = 0;
done:
    cJSON_Delete(root);
    free(gen_text);
    if (ss.detok) lf_detok_stream_free(ss.detok);
    lf_engine_free(eng);
    free(prompt);
    free(rendered);
    lf_tokenizer_free(tok);
    lf_model_free(model);
    lf_gen_options_free(&o);
    return rc;
}
