/* Decoders of tokenizer.json: ByteLevel, Metaspace, Replace, ByteFallback,
 * Fuse, Strip and Sequence, each mapping a list of token strings to a list of
 * strings as the `tokenizers` library's decode_chain does. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/tok_internal.h"

int lf_decoder_parse(const cJSON *j, lf_decoder *d, lf_error *err) {
    memset(d, 0, sizeof *d);
    const char *type = lf_json_str(j, "type");
    if (!type) return lf_fail(err, "decoder without a \"type\"");
    if (!strcmp(type, "ByteLevel")) {
        d->type = LF_DEC_BYTELEVEL;
    } else if (!strcmp(type, "Metaspace")) {
        d->type = LF_DEC_METASPACE;
        const char *r = lf_json_str(j, "replacement"); /* default U+2581 */
        if (lf_one_char(r ? r : "\xe2\x96\x81", "Metaspace decoder \"replacement\"", d->repl, &d->repl_len, err) ||
            lf_prepend_parse(j, "Metaspace decoder", &d->prepend, err))
            return -1;
    } else if (!strcmp(type, "Replace")) {
        d->type = LF_DEC_REPLACE;
        if (lf_replace_parse(j, "Replace decoder", &d->pat, &d->str, &d->str_len, err)) return -1;
    } else if (!strcmp(type, "ByteFallback")) {
        d->type = LF_DEC_BYTEFALLBACK;
    } else if (!strcmp(type, "Fuse")) {
        d->type = LF_DEC_FUSE;
    } else if (!strcmp(type, "Strip")) {
        d->type = LF_DEC_STRIP;
        const char *c = lf_json_str(j, "content");
        if (lf_one_char(c ? c : " ", "Strip decoder \"content\"", d->repl, &d->repl_len, err)) return -1;
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "start");
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "stop");
        d->start = cJSON_IsNumber(a) && a->valuedouble > 0 ? (int)a->valuedouble : 0;
        d->stop = cJSON_IsNumber(b) && b->valuedouble > 0 ? (int)b->valuedouble : 0;
    } else if (!strcmp(type, "BPEDecoder")) {
        d->type = LF_DEC_BPE;
        const char *sfx = lf_json_str(j, "suffix");
        if (!sfx) sfx = "</w>";
        if (!(d->str = strdup(sfx))) return lf_fail(err, "out of memory");
        d->str_len = strlen(sfx);
    } else if (!strcmp(type, "Sequence")) {
        d->type = LF_DEC_SEQUENCE;
        const cJSON *arr, *c;
        if (!(d->kids = lf_seq_alloc(j, "decoders", "decoder", sizeof *d->kids, &arr, err))) return -1;
        cJSON_ArrayForEach(c, arr) /* a failed item counts: lf_decoder_free frees what it holds */
            if (lf_decoder_parse(c, &d->kids[d->n_kids++], err)) return -1;
    } else {
        return lf_fail(err, "unsupported decoder type '%s' (supported: ByteLevel, Metaspace, Replace, "
                            "ByteFallback, Fuse, Strip, BPEDecoder, Sequence)", type);
    }
    return 0;
}

void lf_decoder_free(lf_decoder *d) {
    if (!d) return;
    for (int i = 0; i < d->n_kids; i++) lf_decoder_free(&d->kids[i]);
    free(d->kids);
    free(d->str);
    lf_pattern_free(&d->pat);
    memset(d, 0, sizeof *d);
}

#define OOM() lf_fail(err, "out of memory")

static int dec_bytelevel(const lf_pieces *in, lf_pieces *out, lf_error *err) {
    lf_buf raw = {0};
    int rc = 0;
    for (size_t i = 0; i < in->n && !rc; i++) {
        const char *s = lf_piece_str(in, i);
        size_t n = in->v[i].len, start = raw.n;
        bool ok = true;
        size_t k = 0;
        if (lf_buf_reserve(&raw, n)) {
            rc = OOM();
            break;
        }
        while (k < n) {
            uint32_t cp;
            k += (size_t)lf_utf8_decode(s + k, n - k, &cp);
            int b = lf_bytelevel_byte(cp);
            if (b < 0) {
                ok = false;
                break;
            }
            raw.p[raw.n++] = (char)b;
        }
        if (!ok) {
            raw.n = start;
            if (lf_buf_append(&raw, s, n)) rc = OOM();
        }
    }
    if (!rc) {
        size_t begin = lf_pieces_begin(out);
        if (lf_utf8_lossy_append(&out->text, raw.p ? raw.p : "", raw.n) || lf_pieces_end(out, begin, false)) rc = OOM();
    }
    lf_buf_free(&raw);
    return rc;
}

/* Append s[0..n) to out with every occurrence of pat replaced by rep, as
 * one new piece. */
static int add_replaced(lf_pieces *out, const char *s, size_t n, const char *pat, size_t pl, const char *rep,
                        lf_error *err) {
    size_t begin = lf_pieces_begin(out), k = 0;
    while (k < n) {
        if (pl && n - k >= pl && !memcmp(s + k, pat, pl)) {
            if (lf_buf_append(&out->text, rep, strlen(rep))) return OOM();
            k += pl;
        } else {
            if (lf_buf_append(&out->text, s + k, 1)) return OOM();
            k++;
        }
    }
    return lf_pieces_end(out, begin, false) ? OOM() : 0;
}

static int dec_metaspace(const lf_decoder *d, const lf_pieces *in, lf_pieces *out, lf_error *err) {
    for (size_t i = 0; i < in->n; i++) {
        bool drop = i == 0 && d->prepend != LF_PREPEND_NEVER;
        if (add_replaced(out, lf_piece_str(in, i), in->v[i].len, d->repl, d->repl_len, drop ? "" : " ", err))
            return -1;
    }
    return 0;
}

static int dec_replace(const lf_decoder *d, lf_scratch *sc, const lf_pieces *in, lf_pieces *out, lf_error *err) {
    for (size_t i = 0; i < in->n; i++) {
        const char *s = lf_piece_str(in, i);
        size_t n = in->v[i].len, pos = 0, ms, me;
        size_t begin = lf_pieces_begin(out);
        int r;
        while ((r = lf_pattern_next(&d->pat, sc->md, s, n, pos, &ms, &me, err)) == 1) {
            if (lf_buf_append(&out->text, s + pos, ms - pos) || lf_buf_append(&out->text, d->str, d->str_len))
                return OOM();
            pos = me;
        }
        if (r < 0) return -1;
        if (lf_buf_append(&out->text, s + pos, n - pos) || lf_pieces_end(out, begin, false)) return OOM();
    }
    return 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* "<0xAB>" -> 0xAB; -1 otherwise (u8::from_str_radix also takes "+A") */
static int byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return -1;
    if (s[3] == '+') return hexval(s[4]);
    int a = hexval(s[3]), b = hexval(s[4]);
    return a < 0 || b < 0 ? -1 : a * 16 + b;
}

static int flush_bytes(lf_buf *bytes, lf_pieces *out, lf_error *err) {
    if (!bytes->n) return 0;
    if (lf_utf8_valid_prefix(bytes->p, bytes->n) == bytes->n) {
        if (lf_pieces_add(out, bytes->p, bytes->n, false)) return OOM();
    } else {
        for (size_t k = 0; k < bytes->n; k++)
            if (lf_pieces_add(out, "\xef\xbf\xbd", 3, false)) return OOM();
    }
    bytes->n = 0;
    return 0;
}

static int dec_bytefallback(const lf_pieces *in, lf_pieces *out, lf_error *err) {
    lf_buf bytes = {0};
    int rc = 0;
    for (size_t i = 0; i < in->n && !rc; i++) {
        const char *s = lf_piece_str(in, i);
        size_t n = in->v[i].len;
        int b = byte_token(s, n);
        if (b >= 0) {
            char c = (char)b;
            if (lf_buf_append(&bytes, &c, 1)) rc = OOM();
            continue;
        }
        rc = flush_bytes(&bytes, out, err);
        if (!rc && lf_pieces_add(out, s, n, false)) rc = OOM();
    }
    if (!rc) rc = flush_bytes(&bytes, out, err);
    lf_buf_free(&bytes);
    return rc;
}

static int dec_fuse(const lf_pieces *in, lf_pieces *out, lf_error *err) {
    size_t begin = lf_pieces_begin(out);
    for (size_t i = 0; i < in->n; i++)
        if (lf_buf_append(&out->text, lf_piece_str(in, i), in->v[i].len)) return OOM();
    return lf_pieces_end(out, begin, false) ? OOM() : 0;
}

static int dec_strip(const lf_decoder *d, const lf_pieces *in, lf_pieces *out, lf_error *err) {
    size_t cl = d->repl_len;
    for (size_t i = 0; i < in->n; i++) {
        const char *s = lf_piece_str(in, i);
        size_t a = 0, b = in->v[i].len;
        for (int k = 0; k < d->start && b - a >= cl && !memcmp(s + a, d->repl, cl); k++) a += cl;
        for (int k = 0; k < d->stop && b - a >= cl && !memcmp(s + b - cl, d->repl, cl); k++) b -= cl;
        if (lf_pieces_add(out, s + a, b - a, false)) return OOM();
    }
    return 0;
}

/* BPEDecoder: every suffix becomes a space, or nothing in the last token. */
static int dec_bpe(const lf_decoder *d, const lf_pieces *in, lf_pieces *out, lf_error *err) {
    for (size_t i = 0; i < in->n; i++)
        if (add_replaced(out, lf_piece_str(in, i), in->v[i].len, d->str, d->str_len, i + 1 == in->n ? "" : " ", err))
            return -1;
    return 0;
}

static int dec_apply(const lf_decoder *d, lf_scratch *sc, const lf_pieces *in, lf_pieces *out, lf_error *err) {
    lf_pieces_clear(out);
    switch (d->type) {
    case LF_DEC_BYTELEVEL: return dec_bytelevel(in, out, err);
    case LF_DEC_METASPACE: return dec_metaspace(d, in, out, err);
    case LF_DEC_REPLACE: return dec_replace(d, sc, in, out, err);
    case LF_DEC_BYTEFALLBACK: return dec_bytefallback(in, out, err);
    case LF_DEC_FUSE: return dec_fuse(in, out, err);
    case LF_DEC_STRIP: return dec_strip(d, in, out, err);
    case LF_DEC_BPE: return dec_bpe(d, in, out, err);
    case LF_DEC_SEQUENCE: {
        lf_pieces tmp[2];
    memset(tmp, 0, sizeof tmp);
        const lf_pieces *cur = in;
        int rc = 0;
        if (d->n_kids == 0) {
            for (size_t i = 0; i < in->n && !rc; i++)
                if (lf_pieces_add(out, lf_piece_str(in, i), in->v[i].len, false)) rc = OOM();
            return rc;
        }
        for (int k = 0; k < d->n_kids && !rc; k++) {
            lf_pieces *dst = k == d->n_kids - 1 ? out : &tmp[k % 2];
            rc = dec_apply(&d->kids[k], sc, cur, dst, err);
            cur = dst;
        }
        lf_pieces_free(&tmp[0]);
        lf_pieces_free(&tmp[1]);
        return rc;
    }
    }
    return lf_fail(err, "internal error: unknown decoder");
}

int lf_decoder_apply(const lf_decoder *d, const lf_pieces *in, lf_pieces *out, lf_error *err) {
    lf_scratch sc;
    if (lf_scratch_init(&sc)) return OOM();
    int rc = dec_apply(d, &sc, in, out, err);
    lf_scratch_free(&sc);
    return rc;
}
