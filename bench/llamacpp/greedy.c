/* Greedy decoding with llama.cpp as a reference for longflow's (built by
 * bench/greedy_vs_llamacpp.sh against the llama.cpp of the llama-cpp-python
 * sdist; not part of the longflow build). Takes the prompt as token ids,
 * decodes N tokens one at a time, argmax each step, and prints one JSON
 * line: the tokens and, per step, the top-2 logit margin.
 *
 * (In bench/llamacpp/, outside the bench/*.c glob of CMakeLists.txt.)
 *
 * usage: greedy MODEL.gguf THREADS N ID,ID,... */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

static int parse_ids(const char *s, llama_token *ids, int max) {
    int n = 0;
    while (*s && n < max) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) return -1;
        ids[n++] = (llama_token)v;
        s = *end == ',' ? end + 1 : end;
    }
    return n;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s MODEL.gguf THREADS N ID,ID,...\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[2]), n_gen = atoi(argv[3]);
    static llama_token prompt[8192];
    int n_prompt = parse_ids(argv[4], prompt, 8192);
    if (n_prompt <= 0 || n_gen <= 0) {
        fprintf(stderr, "bad prompt ids or N\n");
        return 2;
    }
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    /* no repacked/AMX buffer types (llama-bench --repack 0): on the AMX Xeon
     * this was written on, their kernels die with SIGILL/SIGSEGV */
    mp.use_extra_bufts = false;
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        fprintf(stderr, "%s: cannot load\n", argv[1]);
        return 1;
    }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(n_prompt + n_gen + 8);
    cp.n_batch = (uint32_t)(n_prompt > 512 ? n_prompt : 512);
    cp.n_threads = cp.n_threads_batch = threads;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    printf("{\"tokens\":[");
    llama_token tok;
    struct llama_batch batch = llama_batch_get_one(prompt, n_prompt);
    char margins[65536] = "";
    size_t ml = 0;
    for (int s = 0; s < n_gen; s++) {
        if (llama_decode(ctx, batch) != 0) {
            fprintf(stderr, "decode failed at step %d\n", s);
            return 1;
        }
        const float *lg = llama_get_logits_ith(ctx, -1);
        int best = 0, second = -1;
        for (int i = 1; i < n_vocab; i++) {
            if (lg[i] > lg[best]) {
                second = best;
                best = i;
            } else if (second < 0 || lg[i] > lg[second]) {
                second = i;
            }
        }
        tok = best;
        printf("%s%d", s ? "," : "", tok);
        if (ml < sizeof margins - 32)
            ml += (size_t)snprintf(margins + ml, sizeof margins - ml, "%s%.4f", s ? "," : "", lg[best] - lg[second]);
        batch = llama_batch_get_one(&tok, 1);
    }
    printf("],\"margins\":[%s]}\n", margins);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
