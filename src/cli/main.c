/* longflow: the command-line entry point. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "longflow.h"

static void usage(FILE *f) {
    fprintf(f,
            "longflow %s: inference for long-output reasoning models with a LongFlow KV cache\n"
            "\n"
            "usage: longflow <command> [options]\n"
            "\n"
            "commands:\n"
            "  generate     generate text from a prompt (longflow generate --help)\n"
            "  tokenize     print the token ids of a text\n"
            "  detokenize   print the text of token ids\n"
            "  bench        measure prefill and decode speed\n"
            "  policies     list the KV-cache policies\n"
            "  eval         accuracy of a model and KV policy on a math benchmark (JSONL)\n"
            "  serve        an OpenAI-compatible HTTP server (longflow serve --help)\n"
            "  perplexity   teacher-forced NLL of a text through the KV cache, KL from full\n"
            "  help         this message\n",
            LF_VERSION);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {
        {"generate", lf_cmd_generate}, {"tokenize", lf_cmd_tokenize},
        {"detokenize", lf_cmd_detokenize}, {"bench", lf_cmd_bench},
        {"policies", lf_cmd_policies}, {"eval", lf_cmd_eval},
        {"serve", lf_cmd_serve},
        {"perplexity", lf_cmd_perplexity},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(cmd, cmds[i].name) == 0) return cmds[i].fn(argc - 2, argv + 2);
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("longflow %s\n", LF_VERSION);
        return 0;
    }
    fprintf(stderr, "longflow: unknown command '%s' (try 'longflow help')\n", cmd);
    return 2;
}
