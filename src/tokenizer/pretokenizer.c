/* Pre-tokenizers of tokenizer.json: Split (regex or string, every
 * SplitDelimiterBehavior, invert), ByteLevel (with and without the GPT-2
 * regex), Metaspace, Whitespace, WhitespaceSplit and Sequence. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/error.h"
#include "tokenizer/tok_internal.h"

static const char GPT2_REGEX[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* UTF-8 of the byte-level character standing for each byte. */
static char bl_utf8[256][2];
static unsigned char bl_utf8_len[256];
static pthread_once_t bl_once = PTHREAD_ONCE_INIT;

static void bl_init(void) {
    for (unsigned b = 0; b < 256; b++) {
        char enc[4];
        int k = lf_utf8_encode(lf_bytelevel_cp((unsigned char)b), enc);
        memcpy(bl_utf8[b], enc, 2);
        bl_utf8_len[b] = (unsigned char)k;
    }
}

/* "behavior" (a SplitDelimiterBehavior; Isolated when absent). */
static int parse_behavior(const cJSON *j, const char *what, lf_split_behavior *out, lf_error *err) {
    const char *b = lf_json_str(j, "behavior");
    if (!b) b = "Isolated";
    if (!strcmp(b, "Removed")) *out = LF_SPLIT_REMOVED;
    else if (!strcmp(b, "Isolated")) *out = LF_SPLIT_ISOLATED;
    else if (!strcmp(b, "MergedWithPrevious")) *out = LF_SPLIT_MERGED_PREV;
    else if (!strcmp(b, "MergedWithNext")) *out = LF_SPLIT_MERGED_NEXT;
    else if (!strcmp(b, "Contiguous")) *out = LF_SPLIT_CONTIGUOUS;
    else return lf_fail(err, "%s pre_tokenizer: unknown behavior '%s'", what, b);
    return 0;
}

static int parse_delimiter(const cJSON *j, lf_pretok *p, lf_error *err) {
    const char *d = lf_json_str(j, "delimiter");
    if (!d || !lf_utf8_one_char(d, strlen(d), &p->delimiter))
        return lf_fail(err, "CharDelimiterSplit pre_tokenizer: \"delimiter\" must be one character");
    return 0;
}

int lf_pretok_parse(const cJSON *j, lf_pretok *p, lf_error *err) {
    memset(p, 0, sizeof *p);
    const char *type = lf_json_str(j, "type");
    if (!type) return lf_fail(err, "pre_tokenizer without a \"type\"");
    if (!strcmp(type, "Split")) {
        p->type = LF_PRETOK_SPLIT;
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(j, "pattern");
        if (!pat) return lf_fail(err, "Split pre_tokenizer without \"pattern\"");
        if (lf_pattern_parse(pat, "Split pre_tokenizer", &p->pat, err)) return -1;
        p->has_pat = true;
        if (parse_behavior(j, "Split", &p->behavior, err)) return -1;
        p->invert = lf_json_bool(j, "invert", false);
    } else if (!strcmp(type, "ByteLevel")) {
        p->type = LF_PRETOK_BYTELEVEL;
        p->add_prefix_space = lf_json_bool(j, "add_prefix_space", true);
        if (lf_json_bool(j, "use_regex", true)) {
            if (lf_pattern_from_regex(GPT2_REGEX, "ByteLevel pre_tokenizer", &p->pat, err)) return -1;
            p->has_pat = true;
        }
    } else if (!strcmp(type, "Metaspace")) {
        p->type = LF_PRETOK_METASPACE;
        const char *r = lf_json_str(j, "replacement"); /* default U+2581 */
        if (lf_one_char(r ? r : "\xe2\x96\x81", "Metaspace pre_tokenizer: \"replacement\"", p->repl, &p->repl_len,
                        err) ||
            lf_prepend_parse(j, "Metaspace pre_tokenizer", &p->prepend, err))
            return -1;
        p->split = lf_json_bool(j, "split", true);
    } else if (!strcmp(type, "Whitespace")) {
        p->type = LF_PRETOK_WHITESPACE;
    } else if (!strcmp(type, "WhitespaceSplit")) {
        p->type = LF_PRETOK_WHITESPACE_SPLIT;
    } else if (!strcmp(type, "Punctuation")) {
        p->type = LF_PRETOK_PUNCTUATION;
        if (parse_behavior(j, "Punctuation", &p->behavior, err)) return -1;
    } else if (!strcmp(type, "CharDelimiterSplit")) {
        p->type = LF_PRETOK_CHAR_DELIMITER;
        if (parse_delimiter(j, p, err)) return -1;
    } else if (!strcmp(type, "BertPreTokenizer")) {
        p->type = LF_PRETOK_BERT;
    } else if (!strcmp(type, "UnicodeScripts")) {
        p->type = LF_PRETOK_UNICODE_SCRIPTS;
    } else if (!strcmp(type, "FixedLength")) {
        p->type = LF_PRETOK_FIXED_LENGTH;
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(j, "length");
        double v = cJSON_IsNumber(l) ? l->valuedouble : l ? -1 : 5; /* the reference's default is 5 */
        if (!(v >= 1 && v <= 1e9) || v != (double)(size_t)v)
            return lf_fail(err, "FixedLength pre_tokenizer: \"length\" must be a positive integer");
        p->length = (size_t)v;
    } else if (!strcmp(type, "Digits")) {
        p->type = LF_PRETOK_DIGITS;
        p->individual = lf_json_bool(j, "individual_digits", false);
    } else if (!strcmp(type, "Sequence")) {
        p->type = LF_PRETOK_SEQUENCE;
        const cJSON *arr, *c;
        if (!(p->kids = lf_seq_alloc(j, "pretokenizers", "pre_tokenizer", sizeof *p->kids, &arr, err))) return -1;
        cJSON_ArrayForEach(c, arr) /* a failed item counts: lf_pretok_free frees what it holds */
            if (lf_pretok_parse(c, &p->kids[p->n_kids++], err)) return -1;
    } else {
        return lf_fail(err, "unsupported pre_tokenizer type '%s' (supported: Split, ByteLevel, Metaspace, "
                            "Whitespace, WhitespaceSplit, Digits, Punctuation, CharDelimiterSplit, "
                            "BertPreTokenizer, UnicodeScripts, FixedLength, Sequence)", type);
    }
    return 0;
}

void lf_pretok_free(lf_pretok *p) {
    if (!p) return;
    for (int i = 0; i < p->n_kids; i++) lf_pretok_free(&p->kids[i]);
    free(p->kids);
    lf_pattern_free(&p->pat);
    memset(p, 0, sizeof *p);
}

/* ---- splitting ----------------------------------------------------------- */
typedef struct seg {
    size_t a, b;
    bool match;
} seg;

typedef struct segs {
    seg *v;
    size_t n, cap;
} segs;

static int segs_push(segs *s, size_t a, size_t b, bool match) {
    if (s->n == s->cap) {
        seg *v = lf_grow(s->v, &s->cap, s->n + 1, sizeof *v, 64);
        if (!v) return -1;
        s->v = v;
    }
    s->v[s->n++] = (seg){a, b, match};
    return 0;
}

/* Cover s[0..n) with matches and gaps (as tokenizers' Pattern::find_matches). */
static int find_segments(const lf_pattern *pat, lf_scratch *sc, const char *s, size_t n, segs *out, lf_error *err) {
    out->n = 0;
    if (n == 0) return segs_push(out, 0, 0, false) ? lf_fail(err, "out of memory") : 0;
    size_t prev = 0, ms, me;
    int r;
    while ((r = lf_pattern_next(pat, sc->md, s, n, prev, &ms, &me, err)) == 1) {
        if (ms > prev && segs_push(out, prev, ms, false)) return lf_fail(err, "out of memory");
        if (segs_push(out, ms, me, true)) return lf_fail(err, "out of memory");
        prev = me;
    }
    if (r < 0) return -1;
    if (prev < n && segs_push(out, prev, n, false)) return lf_fail(err, "out of memory");
    return 0;
}

/* Cover s[0..n) with segments where every character for which pred is true
 * is a match of its own and the runs between them are gaps (as tokenizers'
 * Pattern for Fn(char) -> bool). */
typedef bool (*char_pred)(const lf_pretok *p, uint32_t cp);

static int find_char_segments(const lf_pretok *p, char_pred pred, const char *s, size_t n, segs *out,
                              lf_error *err) {
    out->n = 0;
    if (n == 0) return segs_push(out, 0, 0, false) ? lf_fail(err, "out of memory") : 0;
    size_t i = 0, gap = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = (size_t)lf_utf8_decode(s + i, n - i, &cp);
        if (pred(p, cp)) {
            if (gap < i && segs_push(out, gap, i, false)) return lf_fail(err, "out of memory");
            if (segs_push(out, i, i + k, true)) return lf_fail(err, "out of memory");
            gap = i + k;
        }
        i += k;
    }
    if (gap < n && segs_push(out, gap, n, false)) return lf_fail(err, "out of memory");
    return 0;
}

/* Rust char::is_numeric: general categories Nd, Nl and No. */
static bool is_numeric(const lf_pretok *p, uint32_t cp) {
    (void)p;
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

/* Rust char::is_ascii_punctuation || General_Category P* (tokenizers'
 * is_punc, used by Punctuation and BertPreTokenizer). */
static bool is_punc(const lf_pretok *p, uint32_t cp) {
    (void)p;
    if (cp < 0x80) return (cp >= 0x21 && cp <= 0x2F) || (cp >= 0x3A && cp <= 0x40) || (cp >= 0x5B && cp <= 0x60) ||
                          (cp >= 0x7B && cp <= 0x7E);
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_PC: case UTF8PROC_CATEGORY_PD: case UTF8PROC_CATEGORY_PS: case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI: case UTF8PROC_CATEGORY_PF: case UTF8PROC_CATEGORY_PO:
        return true;
    default:
        return false;
    }
}

static bool is_delimiter(const lf_pretok *p, uint32_t cp) { return cp == p->delimiter; }

static bool is_space_char(const lf_pretok *p, uint32_t cp) {
    (void)p;
    return lf_uni_is_space(cp);
}

/* Apply a SplitDelimiterBehavior to segments (in place). */
static void apply_behavior(segs *s, lf_split_behavior b) {
    size_t w = 0;
    switch (b) {
    case LF_SPLIT_ISOLATED:
        return;
    case LF_SPLIT_REMOVED:
        for (size_t i = 0; i < s->n; i++)
            if (!s->v[i].match) s->v[w++] = s->v[i];
        s->n = w;
        return;
    case LF_SPLIT_MERGED_PREV:
    case LF_SPLIT_CONTIGUOUS: {
        /* a segment joins the one kept before it: MergedWithPrevious, a
         * delimiter after a non-delimiter; Contiguous, one of the same kind */
        bool prev_match = false;
        for (size_t i = 0; i < s->n; i++) {
            seg g = s->v[i];
            bool join = b == LF_SPLIT_CONTIGUOUS ? g.match == prev_match : g.match && !prev_match;
            if (join && w > 0) {
                s->v[w - 1].b = g.b;
            } else {
                s->v[w++] = g;
            }
            prev_match = g.match;
        }
        s->n = w;
        return;
    }
    case LF_SPLIT_MERGED_NEXT: {
        /* walk backwards, merging a delimiter into the piece after it */
        bool prev_match = false;
        size_t r = s->n;
        w = s->n;
        while (r > 0) {
            seg g = s->v[--r];
            if (g.match && !prev_match && w < s->n) {
                s->v[w].a = g.a;
            } else {
                s->v[--w] = g;
            }
            prev_match = g.match;
        }
        memmove(s->v, s->v + w, (s->n - w) * sizeof *s->v);
        s->n -= w;
        return;
    }
    }
}

static int emit_segments(const segs *sg, const char *s, bool at_start, lf_pieces *out, lf_error *err) {
    for (size_t i = 0; i < sg->n; i++) {
        const seg *g = &sg->v[i];
        if (g->b <= g->a) continue;
        if (lf_pieces_add(out, s + g->a, g->b - g->a, at_start && g->a == 0)) return lf_fail(err, "out of memory");
    }
    return 0;
}

/* ---- the pre-tokenizers -------------------------------------------------- */
static int bytelevel_map(const char *s, size_t n, bool at_start, lf_pieces *out, lf_error *err) {
    pthread_once(&bl_once, bl_init);
    if (lf_buf_reserve(&out->text, 2 * n)) return lf_fail(err, "out of memory");
    size_t begin = lf_pieces_begin(out);
    char *d = out->text.p + out->text.n;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        d[0] = bl_utf8[b][0];
        if (bl_utf8_len[b] == 2) {
            d[1] = bl_utf8[b][1];
            d += 2;
        } else {
            d += 1;
        }
    }
    out->text.n = (size_t)(d - out->text.p);
    out->text.p[out->text.n] = 0;
    return lf_pieces_end(out, begin, at_start) ? lf_fail(err, "out of memory") : 0;
}

/* Split on the characters pred picks, with a behavior. */
static int char_split(const lf_pretok *p, char_pred pred, lf_split_behavior b, const char *s, size_t n, bool at_start,
                      lf_pieces *out, segs *sg, lf_error *err) {
    if (find_char_segments(p, pred, s, n, sg, err)) return -1;
    apply_behavior(sg, b);
    return emit_segments(sg, s, at_start, out, err);
}

/* Whitespace: the matches of Rust's \\w+|[^\\w\\s]+ (word characters as
 * Rust's regex has them: alphabetic, marks, decimal digits, connector
 * punctuation, join controls); whitespace is dropped. */
static int whitespace_split(const char *s, size_t n, bool at_start, lf_pieces *out, lf_error *err) {
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = (size_t)lf_utf8_decode(s + i, n - i, &cp);
        if (lf_uni_is_space(cp)) {
            i += k;
            continue;
        }
        bool word = lf_uni_is_word(cp);
        size_t start = i;
        i += k;
        while (i < n) {
            k = (size_t)lf_utf8_decode(s + i, n - i, &cp);
            if (lf_uni_is_space(cp) || lf_uni_is_word(cp) != word) break;
            i += k;
        }
        if (lf_pieces_add(out, s + start, i - start, at_start && start == 0)) return lf_fail(err, "out of memory");
    }
    return 0;
}

/* FixedLength: consecutive pieces of p->length characters (the last one
 * shorter). */
static int fixed_length_split(const lf_pretok *p, const char *s, size_t n, bool at_start, lf_pieces *out,
                              lf_error *err) {
    size_t i = 0;
    while (i < n) {
        size_t start = i;
        for (size_t c = 0; c < p->length && i < n; c++) {
            uint32_t cp;
            i += (size_t)lf_utf8_decode(s + i, n - i, &cp);
        }
        if (lf_pieces_add(out, s + start, i - start, at_start && start == 0)) return lf_fail(err, "out of memory");
    }
    return 0;
}

/* BertPreTokenizer: whitespace removed, then punctuation isolated. */
static int bert_split(const lf_pretok *p, const char *s, size_t n, bool at_start, lf_pieces *out, segs *sg,
                      lf_error *err) {
    lf_pieces words = {0};
    int rc = char_split(p, is_space_char, LF_SPLIT_REMOVED, s, n, at_start, &words, sg, err);
    for (size_t i = 0; i < words.n && !rc; i++)
        rc = char_split(p, is_punc, LF_SPLIT_ISOLATED, lf_piece_str(&words, i), words.v[i].len, words.v[i].at_start,
                        out, sg, err);
    lf_pieces_free(&words);
    return rc;
}

/* UnicodeScripts: a piece ends where the script changes, as tokenizers'
 * fixed_script sees it: a space belongs to any script (and text before the
 * first character that has one is dropped, as the reference drops it), so
 * does a code point without a script, and Hiragana, Katakana and U+30FC count
 * as Han. Script data are PCRE2's (Unicode 14 for PCRE2 10.42): characters
 * assigned after the reference's tables (e.g. U+9FFF) may differ. */
#define SCRIPT_ANY (-3)
#define SCRIPT_NONE (-4)

static int fixed_script(uint32_t cp, int han, int hira, int kata, int unknown) {
    if (cp == 0x30FC) return han;
    if (cp == ' ') return SCRIPT_ANY;
    int s = lf_uni_script(cp);
    if (s == -1 || s == unknown) return SCRIPT_ANY; /* the reference's table has no script for it */
    return s == hira || s == kata ? han : s;
}

static int scripts_split(const char *s, size_t n, bool at_start, lf_pieces *out, lf_error *err) {
    int han = lf_uni_script_id("han"), hira = lf_uni_script_id("hiragana"), kata = lf_uni_script_id("katakana");
    int unknown = lf_uni_script_id("unknown");
    int last = SCRIPT_NONE;
    size_t i = 0, start = n; /* start: where the current piece began (n: none yet) */
    while (i < n) {
        uint32_t cp;
        size_t k = (size_t)lf_utf8_decode(s + i, n - i, &cp);
        int sc = fixed_script(cp, han, hira, kata, unknown);
        if (sc == -2) return lf_fail(err, "UnicodeScripts pre_tokenizer: the Unicode script table is unavailable");
        if (sc != SCRIPT_ANY && last != sc) {
            if (start < i && lf_pieces_add(out, s + start, i - start, at_start && start == 0))
                return lf_fail(err, "out of memory");
            start = i;
        }
        if (sc != SCRIPT_ANY) last = sc;
        i += k;
    }
    if (start < n && lf_pieces_add(out, s + start, n - start, at_start && start == 0)) return lf_fail(err, "out of memory");
    return 0;
}

static int apply_one(const lf_pretok *p, lf_scratch *sc, const char *s, size_t n, bool at_start, lf_pieces *out,
                     segs *sg, lf_error *err) {
    switch (p->type) {
    case LF_PRETOK_SPLIT:
        if (find_segments(&p->pat, sc, s, n, sg, err)) return -1;
        if (p->invert)
            for (size_t i = 0; i < sg->n; i++) sg->v[i].match = !sg->v[i].match;
        apply_behavior(sg, p->behavior);
        return emit_segments(sg, s, at_start, out, err);
    case LF_PRETOK_WHITESPACE:
        return whitespace_split(s, n, at_start, out, err);
    case LF_PRETOK_WHITESPACE_SPLIT:
        return char_split(p, is_space_char, LF_SPLIT_REMOVED, s, n, at_start, out, sg, err);
    case LF_PRETOK_BYTELEVEL: {
        const char *src = s;
        size_t len = n;
        if (p->add_prefix_space && n > 0 && s[0] != ' ') {
            sc->tmp.n = 0;
            if (lf_buf_append(&sc->tmp, " ", 1) || lf_buf_append(&sc->tmp, s, n)) return lf_fail(err, "out of memory");
            src = sc->tmp.p;
            len = sc->tmp.n;
        }
        if (!p->has_pat) return bytelevel_map(src, len, at_start, out, err);
        if (find_segments(&p->pat, sc, src, len, sg, err)) return -1;
        for (size_t i = 0; i < sg->n; i++) {
            const seg *g = &sg->v[i];
            if (g->b <= g->a) continue;
            if (bytelevel_map(src + g->a, g->b - g->a, at_start && g->a == 0, out, err)) return -1;
        }
        return 0;
    }
    case LF_PRETOK_METASPACE: {
        /* spaces become the replacement, which may be prepended */
        lf_buf *t = &sc->tmp;
        t->n = 0;
        if (lf_buf_reserve(t, n * p->repl_len + p->repl_len)) return lf_fail(err, "out of memory");
        bool starts = n >= p->repl_len && !memcmp(s, p->repl, p->repl_len);
        if (n > 0 && !starts && s[0] == ' ') starts = true; /* the space becomes the replacement */
        bool prepend = n > 0 && !starts &&
                       (p->prepend == LF_PREPEND_ALWAYS || (p->prepend == LF_PREPEND_FIRST && at_start));
        if (prepend) lf_buf_append(t, p->repl, p->repl_len);
        for (size_t i = 0; i < n; i++) {
            if (s[i] == ' ') lf_buf_append(t, p->repl, p->repl_len);
            else lf_buf_append(t, s + i, 1);
        }
        if (!p->split) return lf_pieces_add(out, t->p, t->n, at_start) ? lf_fail(err, "out of memory") : 0;
        lf_pattern lit = {.lit = (char *)p->repl, .lit_len = p->repl_len};
        if (find_segments(&lit, sc, t->p, t->n, sg, err)) return -1;
        apply_behavior(sg, LF_SPLIT_MERGED_NEXT);
        return emit_segments(sg, t->p, at_start, out, err);
    }
    case LF_PRETOK_DIGITS:
        return char_split(p, is_numeric, p->individual ? LF_SPLIT_ISOLATED : LF_SPLIT_CONTIGUOUS, s, n, at_start,
                          out, sg, err);
    case LF_PRETOK_PUNCTUATION:
        return char_split(p, is_punc, p->behavior, s, n, at_start, out, sg, err);
    case LF_PRETOK_CHAR_DELIMITER:
        return char_split(p, is_delimiter, LF_SPLIT_REMOVED, s, n, at_start, out, sg, err);
    case LF_PRETOK_BERT:
        return bert_split(p, s, n, at_start, out, sg, err);
    case LF_PRETOK_UNICODE_SCRIPTS:
        return scripts_split(s, n, at_start, out, err);
    case LF_PRETOK_FIXED_LENGTH:
        return fixed_length_split(p, s, n, at_start, out, err);
    case LF_PRETOK_SEQUENCE:
        break;
    }
    return lf_fail(err, "internal error: unexpected pre_tokenizer");
}

static int apply_step(const lf_pretok *p, lf_scratch *sc, const lf_pieces *in, lf_pieces *out, lf_error *err) {
    lf_pieces_clear(out);
    segs sg = {0};
    int rc = 0;
    for (size_t i = 0; i < in->n && !rc; i++)
        rc = apply_one(p, sc, lf_piece_str(in, i), in->v[i].len, in->v[i].at_start, out, &sg, err);
    free(sg.v);
    return rc;
}

int lf_pretok_apply(const lf_pretok *p, lf_scratch *sc, const lf_pieces *in, lf_pieces *out, lf_error *err) {
    if (p->type != LF_PRETOK_SEQUENCE) return apply_step(p, sc, in, out, err);
    if (p->n_kids == 0) {
        lf_pieces_clear(out);
        for (size_t i = 0; i < in->n; i++)
            if (lf_pieces_add(out, lf_piece_str(in, i), in->v[i].len, in->v[i].at_start))
                return lf_fail(err, "out of memory");
        return 0;
    }
    /* ping-pong through two temporaries, the last step writes `out` */
    lf_pieces tmp[2];
    memset(tmp, 0, sizeof tmp);
    const lf_pieces *cur = in;
    int rc = 0;
    for (int k = 0; k < p->n_kids && !rc; k++) {
        lf_pieces *dst = k == p->n_kids - 1 ? out : &tmp[k % 2];
        rc = lf_pretok_apply(&p->kids[k], sc, cur, dst, err);
        cur = dst;
    }
    lf_pieces_free(&tmp[0]);
    lf_pieces_free(&tmp[1]);
    return rc;
}
