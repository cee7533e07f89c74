/* A small JSON scanner for the two big parts of tokenizer.json, model.vocab
 * and model.merges (hundreds of thousands of strings), which it reads
 * straight into the tokenizer's tables; cJSON, with one allocation per value,
 * takes several times longer on them. Everything else is left to cJSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/tok_internal.h"

typedef struct scan {
    const char *p, *end;
} scan;

static void ws(scan *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t')) s->p++;
}

static bool eat(scan *s, char c) {
    ws(s);
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return true;
    }
    return false;
}

static int hex4(const char *p) {
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Decode the string at s->p (after whitespace) into out[0..*n); out must hold
 * as many bytes as the string's JSON text. */
static bool string_into(scan *s, char *out, size_t *n) {
    ws(s);
    if (s->p >= s->end || *s->p != '"') return false;
    const char *p = s->p + 1;
    size_t k = 0;
    for (;;) {
        const char *q = p;
        while (q < s->end && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20) q++;
        memcpy(out + k, p, (size_t)(q - p));
        k += (size_t)(q - p);
        if (q >= s->end || (unsigned char)*q < 0x20) return false;
        if (*q == '"') {
            s->p = q + 1;
            *n = k;
            return true;
        }
        /* escape */
        if (q + 1 >= s->end) return false;
        char e = q[1];
        p = q + 2;
        switch (e) {
        case '"': out[k++] = '"'; break;
        case '\\': out[k++] = '\\'; break;
        case '/': out[k++] = '/'; break;
        case 'b': out[k++] = '\b'; break;
        case 'f': out[k++] = '\f'; break;
        case 'n': out[k++] = '\n'; break;
        case 'r': out[k++] = '\r'; break;
        case 't': out[k++] = '\t'; break;
        case 'u': {
            if (s->end - p < 4) return false;
            int cp = hex4(p);
            if (cp < 0) return false;
            p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (s->end - p < 6 || p[0] != '\\' || p[1] != 'u') return false;
                int lo = hex4(p + 2);
                if (lo < 0xDC00 || lo > 0xDFFF) return false;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return false;
            }
            k += (size_t)lf_utf8_encode((uint32_t)cp, out + k);
            break;
        }
        default: return false;
        }
    }
}

/* Skip any JSON value. */
static bool skip_value(scan *s, int depth) {
    ws(s);
    if (s->p >= s->end || depth > 64) return false;
    char c = *s->p;
    if (c == '"') {
        const char *p = s->p + 1;
        for (;;) {
            const char *q = memchr(p, '"', (size_t)(s->end - p));
            if (!q) return false;
            /* escaped when preceded by an odd number of backslashes */
            size_t bs = 0;
            while (q - bs > p && q[-1 - (ptrdiff_t)bs] == '\\') bs++;
            if (bs % 2 == 0) {
                s->p = q + 1;
                return true;
            }
            p = q + 1;
        }
    }
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        s->p++;
        if (eat(s, close)) return true;
        for (;;) {
            if (c == '{') {
                if (!skip_value(s, depth + 1) || !eat(s, ':')) return false;
            }
            if (!skip_value(s, depth + 1)) return false;
            if (eat(s, ',')) continue;
            return eat(s, close);
        }
    }
    /* number, true, false, null */
    const char *p = s->p;
    while (p < s->end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' && *p != '\r' && *p != '\t')
        p++;
    if (p == s->p) return false;
    s->p = p;
    return true;
}

/* Is the key at s->p equal to `key` (a plain ASCII key)? Consumes it. */
static bool key_is(scan *s, const char *key, bool *ok) {
    ws(s);
    const char *start = s->p;
    *ok = skip_value(s, 0);
    size_t kl = strlen(key);
    return *ok && (size_t)(s->p - start) == kl + 2 && start[0] == '"' && !memcmp(start + 1, key, kl);
}

int lf_json_find_model_parts(const char *text, size_t len, lf_json_span *vocab, lf_json_span *merges) {
    scan s = {text, text + len};
    memset(vocab, 0, sizeof *vocab);
    memset(merges, 0, sizeof *merges);
    if (!eat(&s, '{')) return -1;
    bool ok;
    for (;;) {
        bool is_model = key_is(&s, "model", &ok);
        if (!ok || !eat(&s, ':')) return -1;
        if (is_model) {
            if (!eat(&s, '{')) return -1;
            if (!eat(&s, '}')) {
                for (;;) {
                    bool is_vocab = false, is_merges = false;
                    const char *kstart = s.p;
                    is_vocab = key_is(&s, "vocab", &ok);
                    if (!ok) return -1;
                    if (!is_vocab) {
                        scan k2 = {kstart, s.end};
                        is_merges = key_is(&k2, "merges", &ok);
                    }
                    if (!eat(&s, ':')) return -1;
                    ws(&s);
                    const char *vs = s.p;
                    if (!skip_value(&s, 0)) return -1;
                    if (is_vocab) *vocab = (lf_json_span){vs, (size_t)(s.p - vs)};
                    if (is_merges) *merges = (lf_json_span){vs, (size_t)(s.p - vs)};
                    if (eat(&s, ',')) continue;
                    if (!eat(&s, '}')) return -1;
                    break;
                }
            }
        } else if (!skip_value(&s, 0)) {
            return -1;
        }
        if (eat(&s, ',')) continue;
        if (!eat(&s, '}')) return -1;
        break;
    }
    return vocab->p && merges->p && vocab->p[0] == '{' && merges->p[0] == '[' ? 0 : -1;
}

int lf_json_scan_vocab(const lf_json_span *sp, char *arena, lf_vocab_cb cb, void *ctx) {
    scan s = {sp->p, sp->p + sp->n};
    size_t off = 0;
    if (!eat(&s, '{')) return -2;
    if (eat(&s, '}')) return 0;
    for (;;) {
        size_t n;
        if (!string_into(&s, arena + off, &n)) return -2;
        arena[off + n] = 0;
        if (!eat(&s, ':')) return -2;
        ws(&s);
        long v = 0;
        const char *p = s.p;
        while (p < s.end && *p >= '0' && *p <= '9' && v <= 0x7ffffffe) v = v * 10 + (*p++ - '0');
        if (p == s.p || v > 0x7ffffffe || (p < s.end && (*p == '.' || *p == 'e' || *p == 'E'))) return -2;
        s.p = p;
        if (cb(ctx, arena + off, n, (int)v)) return -1;
        off += n + 1;
        if (eat(&s, ',')) continue;
        return eat(&s, '}') ? 0 : -2;
    }
}

int lf_json_scan_merges(const lf_json_span *sp, lf_merge_cb cb, void *ctx, uint32_t *bad) {
    scan s = {sp->p, sp->p + sp->n};
    char *buf = malloc(sp->n + 2);
    if (!buf) return -1;
    int rc = -2;
    uint32_t rank = 0;
    *bad = 0;
    if (!eat(&s, '[')) goto out;
    if (eat(&s, ']')) {
        rc = 0;
        goto out;
    }
    for (;;) {
        ws(&s);
        size_t la, lb;
        const char *a = buf, *b;
        if (s.p < s.end && *s.p == '[') {
            s.p++;
            if (!string_into(&s, buf, &la) || !eat(&s, ',')) goto out;
            b = buf + la + 1;
            if (!string_into(&s, buf + la + 1, &lb) || !eat(&s, ']')) goto out;
        } else {
            size_t n;
            if (!string_into(&s, buf, &n)) goto out;
            const char *sp1 = memchr(buf, ' ', n);
            if (!sp1 || memchr(sp1 + 1, ' ', n - (size_t)(sp1 - buf) - 1)) goto out;
            la = (size_t)(sp1 - buf);
            b = sp1 + 1;
            lb = n - la - 1;
        }
        if (cb(ctx, a, la, b, lb, rank)) {
            rc = -1;
            goto out;
        }
        rank++;
        if (eat(&s, ',')) continue;
        rc = eat(&s, ']') ? 0 : -2;
        break;
    }
out:
    if (rc == -2) *bad = rank;
    free(buf);
    return rc;
}

/* ---- UTF-8 of everything else -------------------------------------------- */
/* cJSON keeps the raw bytes of a string, so a tokenizer file can carry
 * invalid UTF-8 into a normalizer's content, an added token, a pattern...,
 * and from there into text the regex engine (which trusts its subject) is
 * given. Every key and string value is checked once, here, at load. */
static int check_utf8_str(const char *s, const char *file, const char *where, lf_error *err) {
    size_t n = strlen(s), ok = lf_utf8_valid_prefix(s, n);
    if (ok == n) return 0;
    return lf_fail(err, "%s: %s is not valid UTF-8 (byte 0x%02X at offset %zu)", file, where,
                   (unsigned char)s[ok], ok);
}

/* where: the JSON path of j (e.g. normalizer.normalizers[1].prepend). */
static int check_utf8_tree(const cJSON *j, const char *file, char *where, size_t cap, lf_error *err) {
    if (cJSON_IsString(j) && j->valuestring) return check_utf8_str(j->valuestring, file, where, err);
    if (!cJSON_IsArray(j) && !cJSON_IsObject(j)) return 0;
    const size_t len = strlen(where);
    int i = 0;
    for (const cJSON *c = j->child; c; c = c->next, i++) {
        if (cJSON_IsObject(j)) {
            const char *key = c->string ? c->string : "";
            char kw[300];
            snprintf(kw, sizeof kw, "a key of %s", len ? where : "the top level");
            if (check_utf8_str(key, file, kw, err)) return -1;
            snprintf(where + len, cap - len, "%s%s", len ? "." : "", key);
        } else {
            snprintf(where + len, cap - len, "[%d]", i);
        }
        if (check_utf8_tree(c, file, where, cap, err)) return -1;
        where[len] = 0;
    }
    return 0;
}

int lf_json_check_utf8(const cJSON *root, const char *file, lf_error *err) {
    char where[256] = "";
    return check_utf8_tree(root, file, where, sizeof where, err);
}
