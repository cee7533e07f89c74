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

/* The flags of `longflow tokenize`. */
typedef struct {
    const char *dir, *prompt, *prompt_file, *system, *messages, *tmpl;
    bool lines, json, add_special, no_parse, chat, no_think;
} tokenize_opts;

/* Reads the flags into *o: 0 to go on, 1 for --help (printed), 2 on a bad flag. */
static int tokenize_parse(int argc, char **argv, tokenize_opts *o) {
    const char *cmd = "tokenize";
    lf_args a;
    lf_args_init(&a, cmd, argc, argv);
    const char *flag;
    while ((flag = lf_args_next(&a))) {
        const char **sv = NULL;
        bool *bv = NULL;
        if (!strcmp(flag, "--model")) sv = &o->dir;
        else if (!strcmp(flag, "--prompt")) sv = &o->prompt;
        else if (!strcmp(flag, "--prompt-file")) sv = &o->prompt_file;
        else if (!strcmp(flag, "--system")) sv = &o->system;
        else if (!strcmp(flag, "--messages")) sv = &o->messages;
        else if (!strcmp(flag, "--chat-template")) sv = &o->tmpl;
        else if (!strcmp(flag, "--lines")) bv = &o->lines;
        else if (!strcmp(flag, "--json")) bv = &o->json;
        else if (!strcmp(flag, "--add-special")) bv = &o->add_special;
        else if (!strcmp(flag, "--no-parse-special")) bv = &o->no_parse;
        else if (!strcmp(flag, "--chat")) bv = &o->chat;
        else if (!strcmp(flag, "--no-think")) bv = &o->no_think;
        else if (!strcmp(flag, "--help") || !strcmp(flag, "-h")) {
            tokenize_usage(stdout);
            return 1;
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
    if (o->messages) o->chat = true;
    return 0;
}

/* The flags that exclude or need each other: 0 when they fit, else 2 (printed). */
static int tokenize_check(const tokenize_opts *o) {
    const char *cmd = "tokenize";
    if (o->prompt && o->prompt_file) {
        lf_cli_error(cmd, "give either --prompt or --prompt-file, not both");
        return 2;
    }
    if (o->chat) {
        if (o->messages && (o->prompt || o->prompt_file || o->system)) {
            lf_cli_error(cmd, "--messages gives the whole conversation: it excludes --prompt, --prompt-file and --system");
            return 2;
        }
        if (!o->messages && !o->prompt && !o->prompt_file) {
            lf_cli_error(cmd, "--chat needs --prompt, --prompt-file or --messages");
            return 2;
        }
        if (o->lines || o->add_special || o->no_parse) {
            lf_cli_error(cmd, "--lines, --add-special and --no-parse-special do not apply with --chat "
                              "(the template decides)");
            return 2;
        }
    } else {
        if (o->system || o->no_think || o->tmpl) {
            lf_cli_error(cmd, "--system, --no-think and --chat-template apply only with --chat or --messages");
            return 2;
        }
        if (!o->prompt && !o->prompt_file) {
            lf_cli_error(cmd, "no text: give --prompt TEXT or --prompt-file F");
            return 2;
        }
    }
    return 0;
}

/* The conversation of --messages FILE, or of --system and the text, into *msgs
 * (*n_free entries to free, *nm used). 0 or -1 (printed). */
static int tokenize_messages(const tokenize_opts *o, const char *text, char **msg_json,
                             lf_chat_message **msgs, int *nm, int *n_free) {
    const char *cmd = "tokenize";
    lf_error err = {{0}};
    if (o->messages) {
        if (lf_cli_read_prompt_file(cmd, o->messages, msg_json, NULL)) return -1;
        if (lf_chat_messages_parse(*msg_json, o->messages, msgs, nm, &err)) {
            lf_cli_error(cmd, "%s", err.msg);
            return -1;
        }
        *n_free = *nm;
        return 0;
    }
    *msgs = calloc(2, sizeof **msgs);
    if (!*msgs) goto oom;
    *n_free = 2;
    lf_chat_message *m = *msgs;
    if (o->system) {
        if (!(m[*nm].role = strdup("system")) || !(m[*nm].content = strdup(o->system))) goto oom;
        (*nm)++;
    }
    if (!(m[*nm].role = strdup("user")) || !(m[*nm].content = strdup(text))) goto oom;
    (*nm)++;
    return 0;
oom:
    lf_cli_error(cmd, "out of memory");
    return -1;
}

/* --chat: renders the conversation with the chat template and prints its ids. */
static int tokenize_chat(const tokenize_opts *o, const lf_tokenizer *t, const char *text) {
    const char *cmd = "tokenize";
    lf_error err = {{0}};
    char *msg_json = NULL, *rendered = NULL;
    int *ids = NULL, n = 0;
    lf_chat_message *msgs = NULL;
    int nm = 0, n_free = 0, rc = 1;
    if (tokenize_messages(o, text, &msg_json, &msgs, &nm, &n_free)) goto done;
    lf_chat_family fam;
    if (lf_chat_select(t, o->tmpl, &fam, &err)) {
        lf_cli_error(cmd, "%s", err.msg);
        goto done;
    }
    lf_chat_options opt = {.add_generation_prompt = true, .enable_thinking = !o->no_think};
    if (lf_chat_apply(fam, t, msgs, nm, &opt, &rendered, &ids, &n, &err)) {
        lf_cli_error(cmd, "%s", err.msg);
        goto done;
    }
    print_result(o->json, rendered, strlen(rendered), ids, n);
    rc = 0;
done:
    lf_chat_messages_free(msgs, n_free);
    free(ids);
    free(rendered);
    free(msg_json);
    return rc;
}

/* Without --chat: the whole text, or with --lines each line, to ids. */
static int tokenize_plain(const tokenize_opts *o, const lf_tokenizer *t, const char *text, size_t text_len) {
    const char *cmd = "tokenize";
    lf_error err = {{0}};
    unsigned flags = (o->add_special ? LF_TOK_ADD_SPECIAL : 0) | (o->no_parse ? 0 : LF_TOK_PARSE_SPECIAL);
    int *ids = NULL, n = 0;
    if (!o->lines) {
        if (lf_tokenizer_encode(t, text, text_len, flags, &ids, &n, &err)) {
            lf_cli_error(cmd, "%s", err.msg);
            free(ids);
            return 1;
        }
        print_result(o->json, text, text_len, ids, n);
        free(ids);
        return 0;
    }
    size_t pos = 0, line_no = 1;
    while (pos < text_len) {
        const char *nl = memchr(text + pos, '\n', text_len - pos);
        size_t end = nl ? (size_t)(nl - text) : text_len;
        if (lf_tokenizer_encode(t, text + pos, end - pos, flags, &ids, &n, &err)) {
            lf_cli_error(cmd, "line %zu: %s", line_no, err.msg);
            free(ids);
            return 1;
        }
        print_result(o->json, text + pos, end - pos, ids, n);
        free(ids);
        ids = NULL;
        pos = end + 1;
        line_no++;
    }
    return 0;
}

int lf_cmd_tokenize(int argc, char **argv) {
    const char *cmd = "tokenize";
    tokenize_opts o = {0};
    int prc = tokenize_parse(argc, argv, &o);
    if (prc) return prc == 1 ? 0 : prc;
    if (tokenize_check(&o)) return 2;

    int rc = 1;
    lf_tokenizer *t = NULL;
    char *file_text = NULL;
    size_t text_len = 0;
    const char *text = o.prompt;
    if (o.prompt_file) {
        if (lf_cli_read_prompt_file(cmd, o.prompt_file, &file_text, &text_len)) goto done;
        text = file_text;
    } else if (o.prompt) {
        text_len = strlen(o.prompt);
        if (lf_cli_check_prompt_text(cmd, "--prompt", o.prompt, text_len)) goto done;
    }
    if (load_tokenizer(cmd, o.dir, &t)) goto done;
    rc = o.chat ? tokenize_chat(&o, t, text) : tokenize_plain(&o, t, text, text_len);
done:
    fflush(stdout);
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
