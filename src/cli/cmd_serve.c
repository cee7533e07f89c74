/* longflow serve: the OpenAI-compatible server (src/server/, docs/serve.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "longflow.h"
#include "server/server.h"

static void serve_usage(FILE *f) {
    fprintf(f,
            "usage: longflow serve [--model DIR] [options]\n"
            "\n"
            "An OpenAI-compatible HTTP server (POST /v1/chat/completions, /v1/completions; GET /v1/models,\n"
            "/health, /metrics) with continuous batching. docs/serve.md has every field and status code.\n"
            "\n"
            "server:\n"
            "  --host ADDR              address to bind (default 127.0.0.1)\n"
            "  --port N                 (default 8080)\n"
            "  --max-seqs N             sequences generating at once (default 8; cuda: max = as many as fit)\n"
            "  --max-queue N            requests waiting beyond those; more get 429 (default 64)\n"
            "  --api-key KEY            require Authorization: Bearer KEY (default: $LONGFLOW_API_KEY)\n"
            "  --timeout S              close connections idle for S seconds (default 600)\n"
            "  --shutdown-timeout S     on SIGINT/SIGTERM, let running requests finish for S seconds (default 30)\n"
            "  --max-body BYTES         largest request body (default 1048576)\n"
            "  --max-prompt N           cuda: the longest prompt the GPU pool is planned for (default 4096)\n"
            "request defaults (a request may override them):\n"
            "  --max-tokens N           (default: the model's, as generate; at most the context left)\n"
            "  --temperature T  --top-k K  --top-p P  --min-p P\n"
            "  --repetition-penalty R  --seed S  --ignore-eos\n"
            "  --policy NAME --budget N KV-cache policy and slots per layer (default full)\n"
            "  --sinks N  --recent N  --evict-every K\n"
            "  --kv-dtype fp32|bf16|fp8 " LF_KV_DTYPE_HELP
            "model and machine:\n"
            "  --model DIR              (default: $LONGFLOW_MODEL or the bundled model)\n"
            "  --random-weights NAME    benchmarks: random bf16 weights of a shape (qwen3-1.7b, ...; see bench)\n"
            "  --tokenizer DIR          the tokenizer's directory (default: the model directory)\n"
            "  --chat-template NAME     qwen3, qwq, chatml, deepseek-r1, llama3 or llama2 (default: detected)\n"
            "  --threads N  --device cpu|cuda  --gpu-mem-fraction F\n");
}

/* Flags of serve itself. Returns 1 if consumed, 0 if not ours, -1 on error. */
static int parse_serve_flag(lf_serve_options *so, lf_args *a, const char *f) {
    int v;
    if (!strcmp(f, "--host")) return (so->host = lf_arg_value(a, f)) ? 1 : -1;
    if (!strcmp(f, "--api-key")) return (so->api_key = lf_arg_value(a, f)) ? 1 : -1;
    if (!strcmp(f, "--random-weights")) return (so->random_preset = lf_arg_value(a, f)) ? 1 : -1;
    if (!strcmp(f, "--tokenizer")) return (so->tokenizer_dir = lf_arg_value(a, f)) ? 1 : -1;
    if (!strcmp(f, "--port")) return lf_arg_int(a, f, 1, 65535, &so->port) ? 1 : -1;
    if (!strcmp(f, "--max-queue")) return lf_arg_int(a, f, 0, 1000000, &so->max_queue) ? 1 : -1;
    if (!strcmp(f, "--timeout")) return lf_arg_int(a, f, 1, 86400, &so->timeout_s) ? 1 : -1;
    if (!strcmp(f, "--shutdown-timeout")) return lf_arg_int(a, f, 0, 86400, &so->shutdown_timeout_s) ? 1 : -1;
    if (!strcmp(f, "--max-prompt")) return lf_arg_int(a, f, 1, 10000000, &so->max_prompt) ? 1 : -1;
    if (!strcmp(f, "--max-body")) {
        if (!lf_arg_int(a, f, 1024, 1 << 30, &v)) return -1;
        so->max_body = (size_t)v;
        return 1;
    }
    return 0;
}

/* A request's max_tokens when it gives none, as generate's default: the
 * model directory's longflow.json "max_tokens", else generation_config.json
 * "max_new_tokens", else LF_DEFAULT_MAX_TOKENS; each request caps it at
 * what the context leaves after its prompt. */
static int serve_default_max_tokens(lf_gen_options *o, const char *random_preset, const char *cmd) {
    lf_model_defaults d;
    memset(&d, 0, sizeof d);
    lf_error err = {{0}};
    if (!random_preset && lf_gen_model_defaults(lf_gen_model_dir(o), &d, &err)) {
        lf_cli_error(cmd, "%s", err.msg);
        return -1;
    }
    o->max_tokens = d.max_tokens ? d.max_tokens : LF_DEFAULT_MAX_TOKENS;
    lf_gen_model_defaults_free(&d);
    return 0;
}

int lf_cmd_serve(int argc, char **argv) {
    const char *cmd = "serve";
    lf_gen_options o;
    lf_gen_options_default(&o);
    lf_serve_options so = {.host = "127.0.0.1", .port = 8080, .max_queue = 64, .timeout_s = 600,
                           .shutdown_timeout_s = 30, .max_body = 1 << 20, .max_prompt = 4096};
    lf_args a;
    lf_args_init(&a, cmd, argc, argv);
    const char *flag;
    while ((flag = lf_args_next(&a))) {
        int r = parse_serve_flag(&so, &a, flag);
        if (r == 0) r = lf_gen_options_parse(&o, &a, flag);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (!strcmp(flag, "--help") || !strcmp(flag, "-h")) {
            serve_usage(stdout);
            return 0;
        }
        lf_cli_error(cmd, "unknown option '%s' (see longflow serve --help)", flag);
        return 2;
    }
    if (!a.cmd) return 2;
    if (o.prompt || o.prompt_file || o.prompt_ids || o.messages_file || o.chat || o.json || o.split_think ||
        o.system || o.no_think) {
        lf_cli_error(cmd, "prompts come with each request: --prompt, --chat, --json and the like do not apply");
        return 2;
    }
    if (!so.api_key) {
        const char *env = getenv("LONGFLOW_API_KEY");
        if (env && *env) so.api_key = env;
    }
    if (so.api_key && !*so.api_key) {
        lf_cli_error(cmd, "--api-key is empty");
        return 2;
    }
    if (o.max_tokens == 0 && serve_default_max_tokens(&o, so.random_preset, cmd)) return 2;
    if (so.random_preset && (o.model_dir || !so.tokenizer_dir)) {
        lf_cli_error(cmd, "--random-weights NAME needs --tokenizer DIR and no --model");
        return 2;
    }
    if (o.max_seqs < 0) o.max_seqs = o.device == LF_DEVICE_CUDA ? 0 : 8;
    so.chat_template = o.chat_template;
    lf_engine_config ec;
    if (lf_gen_engine_config(&o, cmd, NULL, &ec)) return 2;
    lf_api_defaults d = {.max_tokens = o.max_tokens, .sampling = o.sampling, .ignore_eos = o.ignore_eos,
                         .policy = o.policy.kind, .budget = o.policy.kind == LF_POLICY_FULL ? 0 : o.policy.budget};
    return lf_serve_run(&so, lf_gen_model_dir(&o), &ec, &d);
}
