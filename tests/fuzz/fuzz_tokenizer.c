/* tokenizer.json + tokenizer_config.json loading (src/tokenizer/) and the
 * chat-template recognition that reads them (src/chat/chat.c). Input parts,
 * separated by LF_FUZZ_SEP: tokenizer.json, tokenizer_config.json (missing
 * part = missing file), and a text that an accepted tokenizer encodes and
 * decodes. */
#include <stdint.h>
#include <stdlib.h>

#include "chat/chat.h"
#include "harness.h"
#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void exercise(const lf_tokenizer *t, const uint8_t *text, size_t n) {
    lf_error err;
    int *ids = NULL, n_ids = 0;
    for (unsigned flags = 0; flags < 4; flags++) {
        if (lf_tokenizer_encode(t, (const char *)(text ? text : (const uint8_t *)""), n, flags, &ids, &n_ids, &err))
            continue;
        char *out = NULL;
        if (lf_tokenizer_decode(t, ids, n_ids, flags & 1, &out, NULL, &err) == 0) free(out);
        free(ids);
    }
    int vocab = lf_tokenizer_vocab_size(t);
    int probe[4] = {0, vocab - 1, vocab, -1};
    char *out = NULL;
    if (lf_tokenizer_decode(t, probe, 2, false, &out, NULL, &err) == 0) free(out);
    for (int i = 0; i < 4; i++) {
        const char *s = lf_tokenizer_id_to_token(t, probe[i]);
        if (s) (void)lf_tokenizer_token_to_id(t, s);
        (void)lf_tokenizer_is_special(t, probe[i]);
    }
    lf_chat_family fam;
    (void)lf_chat_select(t, NULL, &fam, &err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lf_fuzz_part parts[3];
    int n = lf_fuzz_split(data, size, parts, 3);
    lf_fuzz_put("tokenizer.json", parts[0].data ? parts[0].data : (const uint8_t *)"", parts[0].size);
    lf_fuzz_put("tokenizer_config.json", n > 1 ? (parts[1].data ? parts[1].data : (const uint8_t *)"") : NULL,
                parts[1].size);
    lf_tokenizer *t = NULL;
    lf_error err;
    if (lf_tokenizer_load(lf_fuzz_dir(), &t, &err)) {
        lf_fuzz_note("tokenizer", err.msg);
        return 0;
    }
    lf_fuzz_note("tokenizer", "loaded");
    exercise(t, parts[2].data, parts[2].size);
    lf_tokenizer_free(t);
    return 0;
}
