/* The tokenizer described by a GGUF file's metadata (tokenizer.ggml.*),
 * built as transformers builds it from the same metadata
 * (integrations/gguf/gguf_tokenizer_mapping.py), which is the reference:
 *
 * - "gpt2": byte-level BPE. A token that is not spelled in the byte-level
 *   alphabet is respelled byte by byte; the merges are the file's; the
 *   pre-tokenizer is chosen by tokenizer.ggml.pre; ByteLevel decoder.
 * - "llama": SentencePiece-style BPE with byte fallback. Without merges in
 *   the file they are recovered from the vocabulary, ranked by the tokens'
 *   scores; Metaspace pre-tokenizer (prepend_scheme "first", no split) and
 *   the Replace/ByteFallback/Fuse/Strip decoder.
 *
 * Control tokens (type 3) and the bos/eos/unk/pad tokens become special
 * added tokens, user-defined tokens (type 4) plain added tokens (see
 * load_added for where this departs from transformers); bos/eos are added as
 * add_bos/add_eos say (llama defaults to adding bos). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/tokenizer.h"

#define OOM() lf_fail(err, "out of memory")
#define MAX_TOKENS (1 << 24)

/* ---- pre-tokenizers by tokenizer.ggml.pre -------------------------------- */
/* The split regexes transformers attaches to these names (llama.cpp's
 * llama-vocab.cpp means the same by them). */
static const char LLAMA3_RE[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char QWEN2_RE[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char QWEN35_RE[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char TEKKEN_RE[] =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*"
    "|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char GPT4O_RE[] =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*"
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

typedef enum pre_kind {
    PRE_GPT2,        /* ByteLevel with the GPT-2 regex */
    PRE_DIGITS_GPT2, /* Digits(individual_digits) then ByteLevel with the GPT-2 regex */
    PRE_SPLIT,       /* Split(regex, Isolated) then ByteLevel without regex */
} pre_kind;

typedef struct pre_name {
    const char *name;
    pre_kind kind;
    const char *regex;
} pre_name;

static const pre_name PRE_NAMES[] = {
    {"default", PRE_GPT2, NULL},          {"gpt-2", PRE_GPT2, NULL},
    {"gpt2", PRE_GPT2, NULL},             {"mpt", PRE_GPT2, NULL},
    {"olmo", PRE_GPT2, NULL},             {"smollm", PRE_DIGITS_GPT2, NULL},
    {"starcoder", PRE_DIGITS_GPT2, NULL}, {"refact", PRE_DIGITS_GPT2, NULL},
    {"codeshell", PRE_DIGITS_GPT2, NULL}, {"llama-bpe", PRE_SPLIT, LLAMA3_RE},
    {"llama3", PRE_SPLIT, LLAMA3_RE},     {"llama-v3", PRE_SPLIT, LLAMA3_RE},
    {"falcon3", PRE_SPLIT, LLAMA3_RE},    {"dbrx", PRE_SPLIT, LLAMA3_RE},
    {"smaug-bpe", PRE_SPLIT, LLAMA3_RE},  {"pixtral", PRE_SPLIT, LLAMA3_RE},
    {"qwen2", PRE_SPLIT, QWEN2_RE},       {"deepseek-r1-qwen", PRE_SPLIT, QWEN2_RE},
    {"megrez", PRE_SPLIT, QWEN2_RE},      {"qwen35", PRE_SPLIT, QWEN35_RE},
    {"tekken", PRE_SPLIT, TEKKEN_RE},     {"gpt-4o", PRE_SPLIT, GPT4O_RE},
    {"llama4", PRE_SPLIT, GPT4O_RE},      {"minimax-m2", PRE_SPLIT, GPT4O_RE},
};

static const pre_name *find_pre(const char *name) {
    for (size_t i = 0; i < sizeof PRE_NAMES / sizeof PRE_NAMES[0]; i++)
        if (!strcmp(PRE_NAMES[i].name, name)) return &PRE_NAMES[i];
    return NULL;
}

static int unknown_pre(const char *name, lf_error *err) {
    char list[512];
    size_t k = 0;
    for (size_t i = 0; i < sizeof PRE_NAMES / sizeof PRE_NAMES[0] && k + 32 < sizeof list; i++)
        k += (size_t)snprintf(list + k, sizeof list - k, "%s%s", i ? ", " : "", PRE_NAMES[i].name);
    return lf_fail(err, "unsupported tokenizer.ggml.pre '%.80s' (supported: %s)", name, list);
}

static cJSON *bytelevel_json(bool use_regex) {
    cJSON *b = cJSON_CreateObject();
    if (!b) return NULL;
    cJSON_AddStringToObject(b, "type", "ByteLevel");
    cJSON_AddBoolToObject(b, "add_prefix_space", 0);
    cJSON_AddBoolToObject(b, "trim_offsets", 1);
    cJSON_AddBoolToObject(b, "use_regex", use_regex);
    return b;
}

/* The tokenizer.json form of the pre-tokenizer named by `pre`. */
static cJSON *pre_json(const pre_name *p) {
    if (p->kind == PRE_GPT2) return bytelevel_json(true);
    cJSON *seq = cJSON_CreateObject(), *arr = cJSON_CreateArray(), *first = cJSON_CreateObject();
    cJSON *second = bytelevel_json(p->kind == PRE_DIGITS_GPT2);
    if (!seq || !arr || !first || !second) {
        cJSON_Delete(seq);
        cJSON_Delete(arr);
        cJSON_Delete(first);
        cJSON_Delete(second);
        return NULL;
    }
    cJSON_AddStringToObject(seq, "type", "Sequence");
    cJSON_AddItemToObject(seq, "pretokenizers", arr);
    cJSON_AddItemToArray(arr, first);
    cJSON_AddItemToArray(arr, second);
    if (p->kind == PRE_DIGITS_GPT2) {
        cJSON_AddStringToObject(first, "type", "Digits");
        cJSON_AddBoolToObject(first, "individual_digits", 1);
    } else {
        cJSON_AddStringToObject(first, "type", "Split");
        cJSON *pat = cJSON_AddObjectToObject(first, "pattern");
        if (pat) cJSON_AddStringToObject(pat, "Regex", p->regex);
        cJSON_AddStringToObject(first, "behavior", "Isolated");
        cJSON_AddBoolToObject(first, "invert", 0);
    }
    return seq;
}

static const char SPM_PRETOK[] =
    "{\"type\":\"Metaspace\",\"replacement\":\"\xe2\x96\x81\",\"prepend_scheme\":\"first\",\"split\":false}";
static const char SPM_DECODER[] =
    "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\xe2\x96\x81\"},"
    "\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},"
    "{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]}";
static const char BL_DECODER[] = "{\"type\":\"ByteLevel\"}";

static int set_pretok(lf_tokenizer *t, cJSON *j, lf_error *err) {
    if (!j) return OOM();
    int rc = -1;
    if (!(t->pretok = calloc(1, sizeof *t->pretok))) OOM();
    else rc = lf_pretok_parse(j, t->pretok, err);
    cJSON_Delete(j);
    return rc;
}

static int set_decoder(lf_tokenizer *t, const char *json, lf_error *err) {
    cJSON *j = cJSON_Parse(json);
    if (!j) return OOM();
    int rc = -1;
    if (!(t->dec = calloc(1, sizeof *t->dec))) OOM();
    else rc = lf_decoder_parse(j, t->dec, err);
    cJSON_Delete(j);
    return rc;
}

/* ---- the vocabulary ------------------------------------------------------ */
static bool in_bytelevel_alphabet(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        i += (size_t)lf_utf8_decode(s + i, n - i, &cp);
        if (lf_bytelevel_byte(cp) < 0) return false;
    }
    return true;
}

/* Append the byte-level spelling of s[0..n) to *d. */
static char *bytelevel_spell(char *d, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) d += lf_utf8_encode(lf_bytelevel_cp((unsigned char)s[i]), d);
    return d;
}

static int check_spec(const lf_tokenizer_vocab_spec *sp, lf_error *err) {
    if (!sp->model) return lf_fail(err, "tokenizer.ggml.model is missing");
    if (strcmp(sp->model, "gpt2") && strcmp(sp->model, "llama"))
        return lf_fail(err, "unsupported tokenizer.ggml.model '%.80s' (supported: gpt2, llama)", sp->model);
    if (sp->n_tokens <= 0 || !sp->tokens) return lf_fail(err, "tokenizer.ggml.tokens is missing or empty");
    if (sp->n_tokens > MAX_TOKENS)
        return lf_fail(err, "tokenizer.ggml.tokens has %d tokens (at most %d are supported)", sp->n_tokens, MAX_TOKENS);
    if (sp->n_merges < 0 || (sp->n_merges > 0 && !sp->merges))
        return lf_fail(err, "tokenizer.ggml.merges: bad count %d", sp->n_merges);
    for (int i = 0; i < sp->n_tokens; i++) {
        if (!sp->tokens[i]) return lf_fail(err, "tokenizer.ggml.tokens[%d] is missing", i);
        size_t n = strlen(sp->tokens[i]);
        if (lf_utf8_valid_prefix(sp->tokens[i], n) != n)
            return lf_fail(err, "tokenizer.ggml.tokens[%d] is not valid UTF-8", i);
        if (sp->scores && isnan(sp->scores[i])) return lf_fail(err, "tokenizer.ggml.scores[%d] is NaN", i);
    }
    const struct {
        const char *name;
        int id;
    } ids[] = {{"bos_token_id", sp->bos_id}, {"eos_token_id", sp->eos_id}, {"unknown_token_id", sp->unk_id},
               {"padding_token_id", sp->pad_id}};
    for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++)
        if (ids[k].id < -1 || ids[k].id >= sp->n_tokens)
            return lf_fail(err, "tokenizer.ggml.%s %d is not a token id (%d tokens)", ids[k].name, ids[k].id,
                           sp->n_tokens);
    return 0;
}

/* The model vocabulary: entries in descending id order, so that among equal
 * strings the last id wins (as in transformers' {token: index} dict). */
static int load_tokens(lf_tokenizer *t, const lf_tokenizer_vocab_spec *sp, bool byte_level, lf_error *err) {
    int n = sp->n_tokens;
    size_t total = 0;
    for (int i = 0; i < n; i++) total += 2 * strlen(sp->tokens[i]) + 1;
    char *arena = malloc(total);
    if (!arena) return OOM();
    t->blocks = malloc(sizeof *t->blocks);
    if (!t->blocks) {
        free(arena);
        return OOM();
    }
    t->blocks[t->n_blocks++] = arena;
    t->e_str = malloc((size_t)n * sizeof *t->e_str);
    t->e_len = malloc((size_t)n * sizeof *t->e_len);
    t->e_id = malloc((size_t)n * sizeof *t->e_id);
    if (!t->e_str || !t->e_len || !t->e_id) return OOM();
    char *d = arena;
    for (int i = n - 1; i >= 0; i--) {
        const char *s = sp->tokens[i];
        size_t len = strlen(s);
        char *start = d;
        if (byte_level && !in_bytelevel_alphabet(s, len)) {
            d = bytelevel_spell(d, s, len);
        } else {
            memcpy(d, s, len);
            d += len;
        }
        *d++ = 0;
        int e = t->n_entries++;
        t->e_str[e] = start;
        t->e_len[e] = (uint32_t)(d - start - 1);
        t->e_id[e] = i;
    }
    if (lf_tok_vmap_build(t, err) || lf_tok_ids_grow(t, n, err)) return -1;
    for (int e = 0; e < t->n_entries; e++) {
        int id = t->e_id[e];
        if (lf_tok_vocab_find(t, t->e_str[e], t->e_len[e]) != id) continue; /* a later id has this string */
        t->id_str[id] = t->e_str[e];
        t->id_len[id] = t->e_len[e];
    }
    return 0;
}

/* ---- merges -------------------------------------------------------------- */
static int put_merge(lf_tokenizer *t, lf_buf *tmp, const char *a, size_t la, const char *b, size_t lb, uint32_t rank,
                     lf_error *err) {
    int ia = lf_tok_vocab_find(t, a, la), ib = lf_tok_vocab_find(t, b, lb);
    if (ia < 0 || ib < 0)
        return lf_fail(err, "tokenizer.ggml.merges[%u]: token '%.*s' is not in the vocabulary", rank,
                       (int)(ia < 0 ? la : lb), ia < 0 ? a : b);
    tmp->n = 0;
    if (lf_buf_append(tmp, a, la) || lf_buf_append(tmp, b, lb)) return OOM();
    int im = lf_tok_vocab_find(t, tmp->p, tmp->n);
    if (im < 0)
        return lf_fail(err, "tokenizer.ggml.merges[%u]: the merged token '%.*s' is not in the vocabulary", rank,
                       (int)tmp->n, tmp->p);
    return lf_tok_merge_put(t, ia, ib, rank, im) ? OOM() : 0;
}

static int load_merges(lf_tokenizer *t, const lf_tokenizer_vocab_spec *sp, lf_error *err) {
    lf_buf tmp = {0};
    int rc = 0;
    for (int i = 0; i < sp->n_merges && !rc; i++) {
        const char *m = sp->merges[i];
        const char *sp1 = m ? strchr(m, ' ') : NULL;
        if (!sp1 || strchr(sp1 + 1, ' ')) {
            rc = lf_fail(err, "tokenizer.ggml.merges[%d] '%.60s' is not two tokens separated by one space", i,
                         m ? m : "(null)");
            break;
        }
        rc = put_merge(t, &tmp, m, (size_t)(sp1 - m), sp1 + 1, strlen(sp1 + 1), (uint32_t)i, err);
    }
    lf_buf_free(&tmp);
    return rc;
}

/* Merges recovered from a vocabulary without them, as transformers'
 * generate_merges does: every split of a token into two tokens, ordered by
 * the token's score (highest first), then by the left part's and the right
 * part's length in characters (longest first), then by token order and,
 * within a token, by the parts' ids. */
typedef struct gen_merge {
    float score;
    uint32_t len_l, len_r;
    uint32_t seq;
    int32_t l, r, m;
} gen_merge;

static int gen_cmp(const void *pa, const void *pb) {
    const gen_merge *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    if (a->len_l != b->len_l) return a->len_l > b->len_l ? -1 : 1;
    if (a->len_r != b->len_r) return a->len_r > b->len_r ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static int pair_cmp(const void *pa, const void *pb) {
    const gen_merge *a = pa, *b = pb;
    if (a->l != b->l) return a->l < b->l ? -1 : 1;
    return a->r < b->r ? -1 : a->r > b->r;
}

static uint32_t utf8_chars(const char *s, size_t n) {
    uint32_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

typedef struct gen_list {
    gen_merge *v;
    size_t n, cap;
} gen_list;

/* The splits of token `id` (string s) whose halves are both tokens. */
static int token_splits(const lf_tokenizer *t, const char *s, size_t n, int id, float score, gen_list *g) {
    size_t first = g->n;
    uint32_t total = utf8_chars(s, n), left = 0;
    for (size_t i = 1; i < n; i++) {
        if (((unsigned char)s[i] & 0xC0) == 0x80) continue;
        left++;
        int l = lf_tok_vocab_find(t, s, i), r = l >= 0 ? lf_tok_vocab_find(t, s + i, n - i) : -1;
        if (l < 0 || r < 0) continue;
        if (g->n == g->cap) {
            gen_merge *v = lf_grow(g->v, &g->cap, g->n + 1, sizeof *v, 4096);
            if (!v) return -1;
            g->v = v;
        }
        g->v[g->n++] = (gen_merge){score, left, total - left, 0, l, r, id};
    }
    if (g->n - first > 1) qsort(g->v + first, g->n - first, sizeof *g->v, pair_cmp);
    return 0;
}

static int generate_merges(lf_tokenizer *t, const lf_tokenizer_vocab_spec *sp, lf_error *err) {
    if (!sp->scores)
        return lf_fail(err, "tokenizer.ggml.merges and tokenizer.ggml.scores are both missing (one is needed)");
    gen_list g = {0};
    bool *seen = calloc((size_t)sp->n_tokens, 1);
    int rc = seen ? 0 : OOM();
    /* each distinct token once, at its first position, with its last id's score */
    for (int i = 0; i < sp->n_tokens && !rc; i++) {
        int e = sp->n_tokens - 1 - i; /* load_tokens' entry for id i */
        const char *s = t->e_str[e];
        uint32_t n = t->e_len[e];
        int last = lf_tok_vocab_find(t, s, n);
        if (seen[last]) continue;
        seen[last] = true;
        if (token_splits(t, s, n, last, sp->scores[last], &g)) rc = OOM();
    }
    for (size_t k = 0; k < g.n; k++) g.v[k].seq = (uint32_t)k;
    if (!rc && g.n > 1) qsort(g.v, g.n, sizeof *g.v, gen_cmp);
    for (size_t k = 0; k < g.n && !rc; k++)
        if (lf_tok_merge_put(t, g.v[k].l, g.v[k].r, (uint32_t)k, g.v[k].m)) rc = OOM();
    free(g.v);
    free(seen);
    return rc;
}

/* ---- added tokens and post-processor ------------------------------------- */
static int add_token_id(lf_tokenizer *t, const char *s, int id, bool special, lf_error *err) {
    lf_added a = {.id = id, .content = (char *)s, .len = strlen(s), .special = special, .normalized = false};
    return lf_tok_add_token(t, "GGUF tokenizer", &a, err);
}

/* Control tokens (type 3) and the named bos/eos/unk/pad tokens are special
 * added tokens, user-defined ones (type 4) plain added tokens, each matched
 * in the text by its own string and standing for its own id. transformers
 * skips a byte-level vocabulary's control token that is not spelled in the
 * byte-level alphabet (taking it for a mislabel) and gives the named ones
 * new ids past the vocabulary; that breaks DeepSeek-R1's "<｜User｜>" (U+FF5C bars),
 * so here they are kept as llama.cpp keeps them. */
static int load_added(lf_tokenizer *t, const lf_tokenizer_vocab_spec *sp, bool byte_level, lf_error *err) {
    for (int i = 0; sp->token_types && i < sp->n_tokens; i++) {
        int ty = sp->token_types[i];
        if ((ty == 3 || ty == 4) && add_token_id(t, sp->tokens[i], i, ty == 3, err)) return -1;
    }
    const int named[] = {sp->bos_id, sp->eos_id, sp->unk_id, sp->pad_id};
    for (size_t k = 0; k < sizeof named / sizeof named[0]; k++)
        if (named[k] >= 0 && add_token_id(t, sp->tokens[named[k]], named[k], true, err)) return -1;
    /* transformers builds the vocabulary through GPT2Tokenizer / LlamaTokenizer,
     * whose default special tokens become special added tokens too (when they
     * are not in the vocabulary it gives them new ids past it; those are left
     * out here) */
    static const char *const gpt2_defaults[] = {"<|endoftext|>", NULL};
    static const char *const llama_defaults[] = {"<unk>", "<s>", "</s>", NULL};
    for (const char *const *d = byte_level ? gpt2_defaults : llama_defaults; *d; d++) {
        int id = lf_tok_vocab_find(t, *d, strlen(*d));
        if (id >= 0 && add_token_id(t, *d, id, true, err)) return -1;
    }
    return lf_tok_finish_added(t, err);
}

static int set_postproc(lf_tokenizer *t, const lf_tokenizer_vocab_spec *sp, bool spm, lf_error *err) {
    bool add_bos = sp->add_bos < 0 ? spm : sp->add_bos != 0;
    bool add_eos = sp->add_eos > 0;
    if (add_bos && sp->bos_id < 0) return lf_fail(err, "tokenizer.ggml.add_bos_token is set but there is no bos token");
    if (add_eos && sp->eos_id < 0) return lf_fail(err, "tokenizer.ggml.add_eos_token is set but there is no eos token");
    if (add_bos) {
        if (!(t->pp_prefix = malloc(sizeof *t->pp_prefix))) return OOM();
        t->pp_prefix[t->n_pp_prefix++] = sp->bos_id;
    }
    if (add_eos) {
        if (!(t->pp_suffix = malloc(sizeof *t->pp_suffix))) return OOM();
        t->pp_suffix[t->n_pp_suffix++] = sp->eos_id;
    }
    return 0;
}

static int set_names(lf_tokenizer *t, const lf_tokenizer_vocab_spec *sp, lf_error *err) {
    t->bos_id = sp->bos_id;
    t->eos_id = sp->eos_id;
    const char *bos = sp->bos_id >= 0 ? sp->tokens[sp->bos_id] : NULL;
    const char *eos = sp->eos_id >= 0 ? sp->tokens[sp->eos_id] : NULL;
    if (bos && !(t->bos_str = lf_tok_strdup(t, bos, strlen(bos)))) return OOM();
    if (eos && !(t->eos_str = lf_tok_strdup(t, eos, strlen(eos)))) return OOM();
    if (sp->chat_template && !(t->chat_template = lf_tok_strdup(t, sp->chat_template, strlen(sp->chat_template))))
        return OOM();
    return 0;
}

/* ---- the constructor ----------------------------------------------------- */
static int build(lf_tokenizer *t, const lf_tokenizer_vocab_spec *sp, lf_error *err) {
    if (check_spec(sp, err)) return -1;
    bool spm = !strcmp(sp->model, "llama");
    const char *pre = sp->pre ? sp->pre : "default";
    const pre_name *pn = find_pre(pre);
    if (!spm && !pn) return unknown_pre(pre, err);
    if (spm && strcmp(pre, "default")) {
        if (!pn) return unknown_pre(pre, err);
        if (pn->kind != PRE_SPLIT) pn = NULL; /* transformers keeps Metaspace then */
    } else if (spm) {
        pn = NULL;
    }
    if (load_tokens(t, sp, !spm, err)) return -1;
    if (sp->n_merges > 0 ? load_merges(t, sp, err) : generate_merges(t, sp, err)) return -1;
    t->byte_fallback = spm;
    t->fuse_unk = spm;
    if (lf_tok_model_tables(t, err)) return -1;
    if (pn ? set_pretok(t, pre_json(pn), err) : set_pretok(t, cJSON_Parse(SPM_PRETOK), err)) return -1;
    if (set_decoder(t, spm ? SPM_DECODER : BL_DECODER, err)) return -1;
    if (load_added(t, sp, !spm, err) || set_postproc(t, sp, spm, err)) return -1;
    return set_names(t, sp, err);
}

int lf_tokenizer_from_vocab(const lf_tokenizer_vocab_spec *spec, lf_tokenizer **out, lf_error *err) {
    *out = NULL;
    lf_tokenizer *t = lf_tok_alloc();
    if (!t) return OOM();
    if (build(t, spec, err)) {
        lf_tokenizer_free(t);
        return -1;
    }
    *out = t;
    return 0;
}
