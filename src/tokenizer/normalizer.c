/* Normalizers of tokenizer.json: NFC/NFD/NFKC/NFKD (utf8proc), Lowercase,
 * Prepend, Replace, Strip and Sequence. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/error.h"
#include "tokenizer/tok_internal.h"

int lf_normalizer_parse(const cJSON *j, lf_normalizer *n, lf_error *err) {
    memset(n, 0, sizeof *n);
    const char *type = lf_json_str(j, "type");
    if (!type) return lf_fail(err, "normalizer without a \"type\"");
    if (!strcmp(type, "NFC")) n->type = LF_NORM_NFC;
    else if (!strcmp(type, "NFD")) n->type = LF_NORM_NFD;
    else if (!strcmp(type, "NFKC")) n->type = LF_NORM_NFKC;
    else if (!strcmp(type, "NFKD")) n->type = LF_NORM_NFKD;
    else if (!strcmp(type, "Lowercase")) n->type = LF_NORM_LOWERCASE;
    else if (!strcmp(type, "Prepend")) {
        n->type = LF_NORM_PREPEND;
        const char *p = lf_json_str(j, "prepend");
        if (!p) return lf_fail(err, "Prepend normalizer without \"prepend\"");
        n->str = strdup(p);
        if (!n->str) return lf_fail(err, "out of memory");
        n->str_len = strlen(p);
    } else if (!strcmp(type, "Replace")) {
        n->type = LF_NORM_REPLACE;
        if (lf_replace_parse(j, "Replace normalizer", &n->pat, &n->str, &n->str_len, err)) return -1;
    } else if (!strcmp(type, "Strip")) {
        n->type = LF_NORM_STRIP;
        n->left = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "strip_left"));
        n->right = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "strip_right"));
    } else if (!strcmp(type, "StripAccents")) {
        n->type = LF_NORM_STRIP_ACCENTS;
    } else if (!strcmp(type, "Nmt")) {
        n->type = LF_NORM_NMT;
    } else if (!strcmp(type, "ByteLevel")) {
        n->type = LF_NORM_BYTELEVEL;
    } else if (!strcmp(type, "BertNormalizer")) {
        n->type = LF_NORM_BERT;
        n->clean_text = lf_json_bool(j, "clean_text", true);
        n->chinese_chars = lf_json_bool(j, "handle_chinese_chars", true);
        n->lowercase = lf_json_bool(j, "lowercase", true);
        n->strip_accents = lf_json_bool(j, "strip_accents", n->lowercase); /* null: as lowercase */
    } else if (!strcmp(type, "Sequence")) {
        n->type = LF_NORM_SEQUENCE;
        const cJSON *arr, *c;
        if (!(n->kids = lf_seq_alloc(j, "normalizers", "normalizer", sizeof *n->kids, &arr, err))) return -1;
        cJSON_ArrayForEach(c, arr) /* a failed item counts: lf_normalizer_free frees what it holds */
            if (lf_normalizer_parse(c, &n->kids[n->n_kids++], err)) return -1;
    } else {
        return lf_fail(err, "unsupported normalizer type '%s' (supported: NFC, NFD, NFKC, NFKD, Lowercase, "
                            "Prepend, Replace, Strip, StripAccents, BertNormalizer, Nmt, ByteLevel, Sequence)", type);
    }
    return 0;
}

void lf_normalizer_free(lf_normalizer *n) {
    if (!n) return;
    for (int i = 0; i < n->n_kids; i++) lf_normalizer_free(&n->kids[i]);
    free(n->kids);
    free(n->str);
    lf_pattern_free(&n->pat);
    memset(n, 0, sizeof *n);
}

static int unicode_norm(lf_norm_type type, const char *s, size_t len, lf_buf *out, lf_error *err) {
    /* Fast paths: ASCII is invariant under every form; code points below
     * U+0300 (lead bytes below 0xCC) are already NFC. */
    bool ascii = true, below300 = true;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) ascii = false;
        if (c >= 0xCC) {
            below300 = false;
            break;
        }
    }
    if (ascii || (type == LF_NORM_NFC && below300)) return lf_buf_append(out, s, len) ? lf_fail(err, "out of memory") : 0;
    utf8proc_option_t opt = UTF8PROC_STABLE;
    switch (type) {
    case LF_NORM_NFC: opt |= UTF8PROC_COMPOSE; break;
    case LF_NORM_NFD: opt |= UTF8PROC_DECOMPOSE; break;
    case LF_NORM_NFKC: opt |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
    default: opt |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
    }
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &dst, opt);
    if (r < 0) return lf_fail(err, "Unicode normalization failed: %s", utf8proc_errmsg(r));
    int rc = lf_buf_append(out, dst, (size_t)r);
    free(dst);
    return rc ? lf_fail(err, "out of memory") : 0;
}

static int lowercase(const char *s, size_t len, lf_buf *out, lf_error *err) {
    if (lf_buf_reserve(out, len)) return lf_fail(err, "out of memory");
    size_t i = 0;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            char l = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
            if (lf_buf_append(out, &l, 1)) return lf_fail(err, "out of memory");
            i++;
            continue;
        }
        uint32_t cp;
        int k = lf_utf8_decode(s + i, len - i, &cp);
        i += (size_t)k;
        if (cp == 0x130) { /* the one unconditional multi-character lowercase mapping (Rust to_lowercase) */
            if (lf_buf_append(out, "i\xcc\x87", 3)) return lf_fail(err, "out of memory");
            continue;
        }
        char enc[4];
        int m = lf_utf8_encode((uint32_t)utf8proc_tolower((utf8proc_int32_t)cp), enc);
        if (lf_buf_append(out, enc, (size_t)m)) return lf_fail(err, "out of memory");
    }
    return 0;
}

static int replace(const lf_normalizer *n, lf_scratch *sc, const char *s, size_t len, lf_buf *out, lf_error *err) {
    size_t pos = 0, ms, me;
    int r;
    while ((r = lf_pattern_next(&n->pat, sc->md, s, len, pos, &ms, &me, err)) == 1) {
        if (lf_buf_append(out, s + pos, ms - pos) || lf_buf_append(out, n->str, n->str_len))
            return lf_fail(err, "out of memory");
        pos = me;
    }
    if (r < 0) return -1;
    return lf_buf_append(out, s + pos, len - pos) ? lf_fail(err, "out of memory") : 0;
}

static int strip(const lf_normalizer *n, const char *s, size_t len, lf_buf *out, lf_error *err) {
    size_t a = 0, b = len;
    if (n->left) {
        while (a < b) {
            uint32_t cp;
            int k = lf_utf8_decode(s + a, b - a, &cp);
            if (!lf_uni_is_space(cp)) break;
            a += (size_t)k;
        }
    }
    if (n->right) {
        while (b > a) {
            size_t p = lf_utf8_prev(s, b);
            uint32_t cp;
            lf_utf8_decode(s + p, b - p, &cp);
            if (!lf_uni_is_space(cp)) break;
            b = p;
        }
    }
    return lf_buf_append(out, s + a, b - a) ? lf_fail(err, "out of memory") : 0;
}

/* General_Category Mark (Mn, Mc, Me): what StripAccents removes;
 * BertNormalizer's strip_accents removes only Mn. */
static bool is_mark(uint32_t cp, bool nonspacing_only) {
    if (cp < 0x300) return false;
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_MN || (!nonspacing_only && (c == UTF8PROC_CATEGORY_MC || c == UTF8PROC_CATEGORY_ME));
}

/* BertNormalizer's classes: Rust's whitespace plus \t \n \r; controls
 * (Cc, Cf, Co, Cs; unassigned code points are kept, as the reference keeps
 * them) but \t \n \r; the CJK ideograph blocks. */
static bool bert_space(uint32_t cp) { return cp == '\t' || cp == '\n' || cp == '\r' || lf_uni_is_space(cp); }

static bool bert_control(uint32_t cp) {
    if (cp == '\t' || cp == '\n' || cp == '\r') return false;
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_CC || c == UTF8PROC_CATEGORY_CF || c == UTF8PROC_CATEGORY_CO ||
           c == UTF8PROC_CATEGORY_CS;
}

static bool bert_cjk(uint32_t cp) {
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) ||
           (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

/* Character by character: drop marks (StripAccents), Nmt's mapping, or
 * BertNormalizer's clean_text (drop NUL, U+FFFD and controls; whitespace
 * becomes a space) and handle_chinese_chars (spaces around CJK ideographs). */
typedef enum { CHARS_STRIP_MARKS, CHARS_STRIP_MN, CHARS_BERT_CLEAN, CHARS_NMT } chars_mode;

/* Nmt: these controls are dropped ... */
static bool nmt_drop(uint32_t c) {
    return (c >= 0x1 && c <= 0x8) || c == 0xB || (c >= 0xE && c <= 0x1F) || c == 0x7F || c == 0x8F || c == 0x9F;
}

/* ... and these become a space. */
static bool nmt_space(uint32_t c) {
    return c == 0x9 || c == 0xA || c == 0xC || c == 0xD || c == 0x1680 || (c >= 0x200B && c <= 0x200F) ||
           c == 0x2028 || c == 0x2029 || c == 0x2581 || c == 0xFEFF || c == 0xFFFD;
}

static int map_chars(const lf_normalizer *n, chars_mode mode, const char *s, size_t len, lf_buf *out, lf_error *err) {
    size_t i = 0;
    while (i < len) {
        uint32_t cp;
        size_t k = (size_t)lf_utf8_decode(s + i, len - i, &cp);
        const char *src = s + i;
        i += k;
        int rc = 0;
        if (mode == CHARS_NMT) {
            if (nmt_space(cp)) rc = lf_buf_append(out, " ", 1);
            else if (!nmt_drop(cp)) rc = lf_buf_append(out, src, k);
        } else if (mode != CHARS_BERT_CLEAN) {
            if (!is_mark(cp, mode == CHARS_STRIP_MN)) rc = lf_buf_append(out, src, k);
        } else if (n->clean_text && (cp == 0 || cp == 0xFFFD || bert_control(cp))) {
            continue;
        } else if (n->clean_text && bert_space(cp)) {
            rc = lf_buf_append(out, " ", 1);
        } else if (n->chinese_chars && bert_cjk(cp)) {
            rc = lf_buf_append(out, " ", 1) || lf_buf_append(out, src, k) || lf_buf_append(out, " ", 1);
        } else {
            rc = lf_buf_append(out, src, k);
        }
        if (rc) return lf_fail(err, "out of memory");
    }
    return 0;
}

/* BertNormalizer: clean text / CJK spacing, then NFD and marks dropped
 * (strip_accents), then lowercase. */
static int bert_normalize(const lf_normalizer *n, const char *s, size_t len, lf_buf *out, lf_error *err) {
    lf_buf a = {0}, b = {0};
    int rc = map_chars(n, CHARS_BERT_CLEAN, s, len, &a, err);
    const lf_buf *cur = &a;
    if (!rc && n->strip_accents) {
        rc = unicode_norm(LF_NORM_NFD, a.p ? a.p : "", a.n, &b, err);
        a.n = 0;
        if (!rc) rc = map_chars(n, CHARS_STRIP_MN, b.p ? b.p : "", b.n, &a, err);
    }
    if (!rc) rc = n->lowercase ? lowercase(cur->p ? cur->p : "", cur->n, out, err)
                               : (lf_buf_append(out, cur->p ? cur->p : "", cur->n) ? lf_fail(err, "out of memory") : 0);
    lf_buf_free(&a);
    lf_buf_free(&b);
    return rc;
}

int lf_normalizer_apply(const lf_normalizer *n, lf_scratch *sc, const char *s, size_t len, lf_buf *out,
                        lf_error *err) {
    out->n = 0;
    if (lf_buf_reserve(out, len)) return lf_fail(err, "out of memory");
    out->p[0] = 0;
    switch (n->type) {
    case LF_NORM_NFC:
    case LF_NORM_NFD:
    case LF_NORM_NFKC:
    case LF_NORM_NFKD:
        return unicode_norm(n->type, s, len, out, err);
    case LF_NORM_LOWERCASE:
        return lowercase(s, len, out, err);
    case LF_NORM_PREPEND:
        if (len && lf_buf_append(out, n->str, n->str_len)) return lf_fail(err, "out of memory");
        return lf_buf_append(out, s, len) ? lf_fail(err, "out of memory") : 0;
    case LF_NORM_REPLACE:
        return replace(n, sc, s, len, out, err);
    case LF_NORM_STRIP:
        return strip(n, s, len, out, err);
    case LF_NORM_STRIP_ACCENTS:
        return map_chars(n, CHARS_STRIP_MARKS, s, len, out, err);
    case LF_NORM_BERT:
        return bert_normalize(n, s, len, out, err);
    case LF_NORM_NMT:
        return map_chars(n, CHARS_NMT, s, len, out, err);
    case LF_NORM_BYTELEVEL:
        for (size_t i = 0; i < len; i++) {
            char enc[4];
            int k = lf_utf8_encode(lf_bytelevel_cp((unsigned char)s[i]), enc);
            if (lf_buf_append(out, enc, (size_t)k)) return lf_fail(err, "out of memory");
        }
        return 0;
    case LF_NORM_SEQUENCE: {
        if (n->n_kids == 0) return lf_buf_append(out, s, len) ? lf_fail(err, "out of memory") : 0;
        lf_buf a = {0}, b = {0};
        const char *cur = s;
        size_t cur_len = len;
        int rc = 0;
        for (int i = 0; i < n->n_kids && !rc; i++) {
            lf_buf *dst = i == n->n_kids - 1 ? out : (i % 2 ? &b : &a);
            rc = lf_normalizer_apply(&n->kids[i], sc, cur, cur_len, dst, err);
            cur = dst->p;
            cur_len = dst->n;
        }
        lf_buf_free(&a);
        lf_buf_free(&b);
        return rc;
    }
    }
    return lf_fail(err, "internal error: unknown normalizer");
}
