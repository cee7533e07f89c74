/* longflow tokenize / detokenize: text to token ids and back, with the
 * model's tokenizer.json (and chat template). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/input.h"
#include "longflow.h"
#include "core/file.h"

#ifndef LF_DEFAULT_MODEL_DIR
#define LF_DEFAULT_MODEL_DIR "models/tiny-reasoner"
#endif

static const char *model_dir(const char *flag_value) {
    if (flag_value) return flag_value;
    const char *env = getenv("LONGFLOW_MODEL");
    return env && *env ? env : LF_DEFAULT_MODEL_DIR;
}

/* The tokenizer of --model DIR (or the default model), errors printed. */
static int load_tokenizer(const char *cmd, const char *flag_value, lf_tokenizer **t) {
    lf_error err = {{0}};
    const char *dir = model_dir(flag_value);
    if (lf_cli_check_model_path(cmd, dir, flag_value != NULL)) return -1;
    if (lf_model_tokenizer_load(dir, t, &err)) {
        lf_cli_error(cmd, "%s", err.msg);
        return -1;
    }
    return 0;
}

/* A JSON string (the text is valid UTF-8; control characters escaped). */
static void json_str(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        case '\b': fputs("\\b", f); break;
        case '\f': fputs("\\f", f); break;
        default:
            if (c < 0x20 || c == 0x7f) fprintf(f, "\\u%04x", c);
            else fputc(c, f);
        }
    }
    fputc('"', f);
}

static void json_ids(FILE *f, const int *ids, int n) {
    fputc('[', f);
    for (int i = 0; i < n; i++) fprintf(f, i ? ", %d" : "%d", ids[i]);
    fputc(']', f);
}

static void print_result(bool json, const char *text, size_t len, const int *ids, int n) {
    if (json) {
        fputs("{\"text\": ", stdout);
        json_str(stdout, text, len);
        fputs(", \"ids\": ", stdout);
        json_ids(stdout, ids, n);
        fputs("}\n", stdout);
    } else {
        json_ids(stdout, ids, n);
        fputc('\n', stdout);
    }
}

static void tokenize_usage(FILE *f) {
    fprintf(f,
            "usage: longflow tokenize [--model DIR] (--prompt TEXT | --prompt-file F) [options]\n"
            "\n"
            "Prints the token ids of the text as a JSON array (one array per line with --lines).\n"
            "Needs only tokenizer.json (and tokenizer_config.json) in DIR.\n"
            "\n"
            "  --model DIR            model directory or GGUF file (default: $LONGFLOW_MODEL, else the bundled model)\n"
            "  --prompt TEXT          the text\n"
            "  --prompt-file F        the text, read from a file\n"
            "  --lines                encode each line on its own, without its newline\n"
            "  --json                 print {\"text\": ..., \"ids\": [...]} objects\n"
            "  --add-special          add the post-processor's tokens (BOS/EOS)\n"
            "  --no-parse-special     take special tokens written in the text as plain text\n"
            "  --chat                 apply the chat template; the text is the user message\n"
            "  --system S             system message (with --chat)\n"
            "  --messages FILE        OpenAI-style JSON array of {\"role\", \"content\"} (implies --chat)\n"
            "  --no-think             the chat template with thinking disabled (enable_thinking=false)\n"
            "  --chat-template NAME   model, qwen3, qwq, chatml, deepseek-r1, llama3 or llama2 (default: the\n"
            "                         model's own template, else one matching its chat tokens)\n");
}

int lf_cmd_tokenize(int argc, char **argv) {
    const char *cmd = "tokenize";
    lf_args a;
    lf_args_init(&a, cmd, argc, argv);
    const char *dir = NULL, *prompt = NULL, *prompt_file = NULL, *system = NULL, *messages = NULL, *tmpl = NULL;
    bool lines = false, json = false, add_special = false, no_parse = false, chat = false, no_think = false;
    const char *flag;
    while ((flag = lf_args_next(&a))) {
        const char **sv = NULL;
        bool *bv = NULL;
        if (!strcmp(flag, "--model")) sv = &dir;
        else if (!strcmp(flag, "--prompt")) sv = &prompt;
        else if (!strcmp(flag, "--prompt-file")) sv = &prompt_file;
        else if (!strcmp(flag, "--system")) sv = &system;
        else if (!strcmp(flag, "--messages")) sv = &messages;
        else if (!strcmp(flag, "--chat-template")) sv = &tmpl;
        else if (!strcmp(flag, "--lines")) bv = &lines;
        else if (!strcmp(flag, "--json")) bv = &json;
        else if (!strcmp(flag, "--add-special")) bv = &add_special;
        else if (!strcmp(flag, "--no-parse-special")) bv = &no_parse;
        else if (!strcmp(flag, "--chat")) bv = &chat;
        else if (!strcmp(flag, "--no-think")) bv = &no_think;
        else if (!strcmp(flag, "--help") || !strcmp(flag, "-h")) {
            tokenize_usage(stdout);
            return 0;
        } else {
            lf_cli_error(cmd, "unknown option '%s' (see longflow tokenize --help)", flag);
            return 2;
        }
        if (sv && !(*sv = lf_arg_value(&a, flag))) return 2;
        if (bv) *bv = true;
    }
    if (a.inline_val) {
        lf_args_next(&a); /* reports the stray value */
        return 2;
    }
    if (messages) chat = true;
    if (prompt && prompt_file) {
        lf_cli_error(cmd, "give either --prompt or --prompt-file, not both");
        return 2;
    }
    if (chat) {
        if (messages && (prompt || prompt_file || system)) {
            lf_cli_error(cmd, "--messages gives the whole conversation: it excludes --prompt, --prompt-file and --system");
            return 2;
        }
        if (!messages && !prompt && !prompt_file) {
            lf_cli_error(cmd, "--chat needs --prompt, --prompt-file or --messages");
            return 2;
        }
        if (lines || add_special || no_parse) {
            lf_cli_error(cmd, "--lines, --add-special and --no-parse-special do not apply with --chat "
                              "(the template decides)");
            return 2;
        }
    } else {
        if (system || no_think || tmpl) {
            lf_cli_error(cmd, "--system, --no-think and --chat-template apply only with --chat or --messages");
            return 2;
        }
        if (!prompt && !prompt_file) {
            lf_cli_error(cmd, "no text: give --prompt TEXT or --prompt-file F");
            return 2;
        }
    }

    int rc = 1;
    lf_error err = {{0}};
    lf_tokenizer *t = NULL;
    char *file_text = NULL, *msg_json = NULL, *rendered = NULL;
    size_t text_len = 0;
    int *ids = NULL, n = 0;
    lf_chat_message *msgs = NULL;
    int nm = 0, n_free = 0;
    const char *text = prompt;
    if (prompt_file) {
        if (lf_cli_read_prompt_file(cmd, prompt_file, &file_text, &text_len)) goto done;
        text = file_text;
    } else if (prompt) {
        text_len = strlen(prompt);
        if (lf_cli_check_prompt_text(cmd, "--prompt", prompt, text_len)) goto done;
    }
    if (load_tokenizer(cmd, dir, &t)) goto done;
    if (chat) {
        if (messages) {
            if (lf_cli_read_prompt_file(cmd, messages, &msg_json, NULL)) goto done;
            if (lf_chat_messages_parse(msg_json, messages, &msgs, &nm, &err)) {
                lf_cli_error(cmd, "%s", err.msg);
                goto done;
            }
            n_free = nm;
        } else {
            msgs = calloc(2, sizeof *msgs);
            if (!msgs) goto oom;
            n_free = 2;
            if (system) {
                if (!(msgs[nm].role = strdup("system")) || !(msgs[nm].content = strdup(system))) goto oom;
                nm++;
            }
            if (!(msgs[nm].role = strdup("user")) || !(msgs[nm].content = strdup(text))) goto oom;
            nm++;
        }
        lf_chat_family fam;
        if (lf_chat_select(t, tmpl, &fam, &err)) {
            lf_cli_error(cmd, "%s", err.msg);
            goto done;
        }
        lf_chat_options opt = {.add_generation_prompt = true, .enable_thinking = !no_think};
        if (lf_chat_apply(fam, t, msgs, nm, &opt, &rendered, &ids, &n, &err)) {
            lf_cli_error(cmd, "%s", err.msg);
            goto done;
        }
        print_result(json, rendered, strlen(rendered), ids, n);
        rc = 0;
        goto done;
    }
    unsigned flags = (add_special ? LF_TOK_ADD_SPECIAL : 0) | (no_parse ? 0 : LF_TOK_PARSE_SPECIAL);
    if (!lines) {
        if (lf_tokenizer_encode(t, text, text_len, flags, &ids, &n, &err)) {
            lf_cli_error(cmd, "%s", err.msg);
            goto done;
        }
        print_result(json, text, text_len, ids, n);
        rc = 0;
        goto done;
    }
    size_t pos = 0, line_no = 1;
    while (pos < text_len) {
        const char *nl = memchr(text + pos, '\n', text_len - pos);
        size_t end = nl ? (size_t)(nl - text) : text_len;
        if (lf_tokenizer_encode(t, text + pos, end - pos, flags, &ids, &n, &err)) {
            lf_cli_error(cmd, "line %zu: %s", line_no, err.msg);
            goto done;
        }
        print_result(json, text + pos, end - pos, ids, n);
        free(ids);
        ids = NULL;
        pos = end + 1;
        line_no++;
    }
    rc = 0;
    goto done;
oom:
    lf_cli_error(cmd, "out of memory");
done:
    fflush(stdout);
    lf_chat_messages_free(msgs, n_free);
    free(ids);
    free(rendered);
    free(msg_json);
    free(file_text);
    lf_tokenizer_free(t);
    return rc;
}

static void detokenize_usage(FILE *f) {
    fprintf(f,
            "usage: longflow detokenize [--model DIR] --ids 1,2,3 [--skip-special] [--json]\n"
            "\n"
            "Prints the text of the token ids (followed by a newline; with --json as {\"text\": ...}).\n"
            "\n"
            "  --model DIR       model directory (default: $LONGFLOW_MODEL, else the bundled model)\n"
            "  --ids LIST        comma-separated token ids\n"
            "  --skip-special    leave out special tokens\n"
            "  --json            print {\"text\": ...}\n");
}

int lf_cmd_detokenize(int argc, char **argv) {
    const char *cmd = "detokenize";
    lf_args a;
    lf_args_init(&a, cmd, argc, argv);
    const char *dir = NULL, *ids_s = NULL;
    bool json = false, skip = false;
    const char *flag;
    while ((flag = lf_args_next(&a))) {
        if (!strcmp(flag, "--model")) {
            if (!(dir = lf_arg_value(&a, flag))) return 2;
        } else if (!strcmp(flag, "--ids")) {
            if (!(ids_s = lf_arg_value(&a, flag))) return 2;
        } else if (!strcmp(flag, "--json")) {
            json = true;
        } else if (!strcmp(flag, "--skip-special")) {
            skip = true;
        } else if (!strcmp(flag, "--help") || !strcmp(flag, "-h")) {
            detokenize_usage(stdout);
            return 0;
        } else {
            lf_cli_error(cmd, "unknown option '%s' (see longflow detokenize --help)", flag);
            return 2;
        }
    }
    if (a.inline_val) {
        lf_args_next(&a);
        return 2;
    }
    if (!ids_s) {
        lf_cli_error(cmd, "no ids: give --ids 1,2,3");
        return 2;
    }
    int *ids = NULL, n = 0;
    lf_error err = {{0}};
    lf_tokenizer *t = NULL;
    char *text = NULL;
    size_t len = 0;
    int rc = 1;
    if (load_tokenizer(cmd, dir, &t)) {
        rc = 1;
    } else if (!lf_parse_ids(cmd, "--ids", ids_s, lf_tokenizer_vocab_size(t), "the tokenizer's vocabulary", &ids, &n)) {
        rc = 2;
    } else if (lf_tokenizer_decode(t, ids, n, skip, &text, &len, &err)) {
        lf_cli_error(cmd, "%s", err.msg);
    } else {
        if (json) {
            fputs("{\"text\": ", stdout);
            json_str(stdout, text, len);
            fputs("}\n", stdout);
        } else {
            fwrite(text, 1, len, stdout);
            fputc('\n', stdout);
        }
        rc = 0;
    }
    fflush(stdout);
    free(text);
    free(ids);
    lf_tokenizer_free(t);
    return rc;
}
