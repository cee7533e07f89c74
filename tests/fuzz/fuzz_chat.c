/* Chat messages and the chat templates (src/chat/chat.c):
 * lf_chat_messages_parse on an OpenAI-style JSON array, lf_chat_apply with
 * each built-in family on the tokenizer it belongs to and with Qwen3's own
 * Jinja template, and lf_chat_split_think on the
 * result. Input: one byte (which template, add_generation_prompt,
 * enable_thinking), then the JSON. Checked: on the byte-level tokenizers the
 * prompt ids decode back to the prompt text (when it is NFC, as those
 * tokenizers normalize), so a message cannot smuggle in a different token
 * sequence than its text. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat.h"
#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

typedef struct {
    const char *json, *config, *family;
    bool byte_level;
    lf_tokenizer *tok;
    lf_chat_family fam;
} chat_case;

static chat_case g_cases[] = {
    {"tests/data/tokenizers/qwen3/tokenizer.json.xz", "tests/data/tokenizers/qwen3/tokenizer_config.json", "qwen3",
     true, NULL, 0},
    {"tests/data/tokenizers/qwen3/tokenizer.json.xz", "tests/data/tokenizers/chat/qwen25_config.json", "chatml",
     true, NULL, 0},
    {"tests/data/tokenizers/qwen3/tokenizer.json.xz", "tests/data/tokenizers/chat/qwq_config.json", "qwq", true, NULL,
     0},
    {"tests/data/tokenizers/deepseek/tokenizer.json", "tests/data/tokenizers/deepseek/tokenizer_config.json",
     "deepseek-r1", true, NULL, 0},
    {"tests/data/tokenizers/bl_llama3/tokenizer.json", "tests/data/tokenizers/bl_llama3/tokenizer_config.json",
     "llama3", true, NULL, 0},
    {"tests/data/tokenizers/spm_bf/tokenizer.json", "tests/data/tokenizers/spm_bf/tokenizer_config.json", "llama2",
     false, NULL, 0},
    /* the model's own Jinja chat_template (Qwen3's) */
    {"tests/data/tokenizers/qwen3/tokenizer.json.xz", "tests/data/tokenizers/qwen3/tokenizer_config.json", "model",
     true, NULL, 0},
};
#define N_CASES ((int)(sizeof g_cases / sizeof g_cases[0]))

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    static const char *const dsts[2] = {"tokenizer.json", "tokenizer_config.json"};
    for (int i = 0; i < N_CASES; i++) {
        chat_case *c = &g_cases[i];
        char sub[16];
        snprintf(sub, sizeof sub, "chat%d", i);
        const char *srcs[2] = {c->json, c->config};
        char *dir = lf_fuzz_stage(sub, srcs, dsts, 2);
        lf_error err;
        if (lf_tokenizer_load(dir, &c->tok, &err) || lf_chat_select(c->tok, c->family, &c->fam, &err)) {
            fprintf(stderr, "fuzz_chat: %s\n", err.msg);
            abort();
        }
        free(dir);
    }
    return 0;
}

static void check_ids(const chat_case *c, const char *text, const int *ids, int n_ids) {
    char *back = NULL;
    lf_error err;
    if (lf_tokenizer_decode(c->tok, ids, n_ids, false, &back, NULL, &err)) {
        fprintf(stderr, "%s: prompt ids do not decode: %s\n", c->family, err.msg);
        abort();
    }
    if (c->byte_level && lf_fuzz_is_nfc((const uint8_t *)text, strlen(text)) && strcmp(back, text)) {
        fprintf(stderr, "%s: prompt ids decode to\n%s\nnot to the prompt\n%s\n", c->family, back, text);
        abort();
    }
    free(back);
}

static void split(const char *text) {
    for (int open = 0; open < 2; open++) {
        char *r = NULL, *a = NULL;
        if (lf_chat_split_think_ex(text, open, &r, &a) == 0) {
            free(r);
            free(a);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const chat_case *c = &g_cases[data[0] % N_CASES];
    lf_chat_options opt = {.add_generation_prompt = (data[0] / N_CASES) & 1,
                           .enable_thinking = (data[0] / N_CASES) & 2};
    char *json = lf_fuzz_cstr(data + 1, size - 1);
    lf_chat_message *msgs = NULL;
    int n = 0;
    lf_error err;
    if (lf_chat_messages_parse(json, "messages", &msgs, &n, &err) == 0) {
        char *text = NULL;
        int *ids = NULL, n_ids = 0;
        if (lf_chat_apply(c->fam, c->tok, msgs, n, &opt, &text, &ids, &n_ids, &err) == 0) {
            lf_fuzz_note(c->family, "rendered");
            check_ids(c, text, ids, n_ids);
            split(text);
            free(text);
            free(ids);
        } else {
            lf_fuzz_note(c->family, err.msg);
        }
        for (int i = 0; i < n; i++) split(msgs[i].content);
        lf_chat_messages_free(msgs, n);
    } else {
        lf_fuzz_note("messages", err.msg);
    }
    split(json);
    free(json);
    return 0;
}
