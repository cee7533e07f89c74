/* Tokenizer helpers: buffers, UTF-8, Unicode classes, hashing, patterns. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/error.h"
#include "tokenizer/tok_internal.h"

/* ---- buffers ------------------------------------------------------------- */
void *lf_grow(void *p, size_t *cap, size_t need, size_t size, size_t first) {
    size_t c = *cap ? *cap : first;
    while (c < need) {
        if (c > SIZE_MAX / 2) return NULL;
        c *= 2;
    }
    if (c > SIZE_MAX / size) return NULL;
    void *q = realloc(p, c * size);
    if (q) *cap = c;
    return q;
}

int lf_buf_reserve(lf_buf *b, size_t extra) {
    if (b->n + extra + 1 <= b->cap) return 0;
    char *p = lf_grow(b->p, &b->cap, b->n + extra + 1, 1, 64);
    if (!p) return -1;
    b->p = p;
    return 0;
}

int lf_buf_append(lf_buf *b, const void *s, size_t n) {
    if (lf_buf_reserve(b, n)) return -1;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

void lf_buf_free(lf_buf *b) {
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

int lf_ivec_reserve(lf_ivec *v, size_t extra) {
    if (v->n + extra <= v->cap) return 0;
    int *p = lf_grow(v->p, &v->cap, v->n + extra, sizeof *p, 16);
    if (!p) return -1;
    v->p = p;
    return 0;
}

int lf_ivec_push(lf_ivec *v, int x) {
    if (v->n == v->cap && lf_ivec_reserve(v, 1)) return -1;
    v->p[v->n++] = x;
    return 0;
}

void lf_pieces_clear(lf_pieces *p) {
    p->n = 0;
    p->text.n = 0;
}

void lf_pieces_free(lf_pieces *p) {
    lf_buf_free(&p->text);
    free(p->v);
    p->v = NULL;
    p->n = p->cap = 0;
}

static int pieces_grow(lf_pieces *p) {
    if (p->n < p->cap) return 0;
    lf_piece *v = lf_grow(p->v, &p->cap, p->n + 1, sizeof *v, 32);
    if (!v) return -1;
    p->v = v;
    return 0;
}

int lf_pieces_add(lf_pieces *p, const char *s, size_t n, bool at_start) {
    if (pieces_grow(p)) return -1;
    size_t off = p->text.n;
    if (lf_buf_append(&p->text, s, n)) return -1;
    p->v[p->n++] = (lf_piece){off, n, at_start};
    return 0;
}

size_t lf_pieces_begin(lf_pieces *p) { return p->text.n; }

int lf_pieces_end(lf_pieces *p, size_t begin, bool at_start) {
    if (pieces_grow(p)) return -1;
    p->v[p->n++] = (lf_piece){begin, p->text.n - begin, at_start};
    return 0;
}

/* ---- UTF-8 --------------------------------------------------------------- */
/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid; *bad gets
 * the length of the maximal invalid subpart when it is invalid. */
static int utf8_seq(const unsigned char *s, size_t n, size_t *bad) {
    unsigned char b = s[0];
    if (b < 0x80) return 1;
    int need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) need = 1;
    else if (b == 0xE0) need = 2, lo = 0xA0;
    else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) need = 2;
    else if (b == 0xED) need = 2, hi = 0x9F;
    else if (b == 0xF0) need = 3, lo = 0x90;
    else if (b >= 0xF1 && b <= 0xF3) need = 3;
    else if (b == 0xF4) need = 3, hi = 0x8F;
    else {
        *bad = 1;
        return 0;
    }
    for (int k = 1; k <= need; k++) {
        if ((size_t)k >= n) {
            *bad = (size_t)k;
            return 0;
        }
        unsigned char c = s[k];
        unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
        if (c < l || c > h) {
            *bad = (size_t)k;
            return 0;
        }
    }
    return need + 1;
}

size_t lf_utf8_valid_prefix(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        /* ASCII fast path, 8 bytes at a time */
        while (i + 8 <= n) {
            uint64_t x;
            memcpy(&x, u + i, 8);
            if (x & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t bad;
        int k = utf8_seq(u + i, n - i, &bad);
        if (!k) return i;
        i += (size_t)k;
    }
    return n;
}

bool lf_utf8_one_char(const char *s, size_t n, uint32_t *cp) {
    return n > 0 && lf_utf8_valid_prefix(s, n) == n && (size_t)lf_utf8_decode(s, n, cp) == n;
}

int lf_utf8_decode(const char *s, size_t n, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    unsigned char b = u[0];
    if (b < 0x80 || n < 2) {
        *cp = b;
        return 1;
    }
    if (b < 0xE0) {
        *cp = ((uint32_t)(b & 0x1F) << 6) | (u[1] & 0x3F);
        return 2;
    }
    if (b < 0xF0 || n < 4) {
        if (n < 3) {
            *cp = b;
            return 1;
        }
        *cp = ((uint32_t)(b & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
        return 3;
    }
    *cp = ((uint32_t)(b & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) | ((uint32_t)(u[2] & 0x3F) << 6) |
          (u[3] & 0x3F);
    return 4;
}

int lf_utf8_encode(uint32_t cp, char out[4]) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t lf_utf8_prev(const char *s, size_t n) {
    size_t i = n - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
    return i;
}

int lf_utf8_lossy_append(lf_buf *out, const char *s, size_t n) {
    static const char fffd[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t start = i;
        while (i < n) {
            if (u[i] < 0x80) {
                i++;
                continue;
            }
            size_t bad;
            int k = utf8_seq(u + i, n - i, &bad);
            if (!k) break;
            i += (size_t)k;
        }
        if (lf_buf_append(out, s + start, i - start)) return -1;
        if (i < n) {
            size_t bad = 1;
            utf8_seq(u + i, n - i, &bad);
            if (lf_buf_append(out, fffd, 3)) return -1;
            i += bad;
        }
    }
    if (lf_buf_reserve(out, 0)) return -1;
    out->p[out->n] = 0;
    return 0;
}

/* ---- Unicode classes ----------------------------------------------------- */
bool lf_uni_is_space(uint32_t c) {
    if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D);
    if (c < 0x85) return false;
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
           c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool lf_uni_is_word(uint32_t c) {
    if (c < 0x80)
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (c == 0x200C || c == 0x200D) return true; /* Join_Control */
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_PC:
        return true;
    default:
        return false;
    }
}

/* ---- hashing ------------------------------------------------------------- */
uint64_t lf_hash_bytes(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t x;
        memcpy(&x, s, 8);
        h = (h ^ x) * 0xBF58476D1CE4E5B9ull;
        h ^= h >> 31;
        s += 8;
        n -= 8;
    }
    uint64_t x = 0;
    memcpy(&x, s, n);
    h = (h ^ x) * 0x94D049BB133111EBull;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    return h;
}

/* ---- fields of tokenizer.json's components ------------------------------- */
int lf_one_char(const char *s, const char *what, char out[8], size_t *out_len, lf_error *err) {
    size_t n = strlen(s);
    uint32_t cp;
    if (!lf_utf8_one_char(s, n, &cp)) return lf_fail(err, "%s must be one character", what);
    memcpy(out, s, n);
    out[n] = 0;
    *out_len = n;
    return 0;
}

int lf_prepend_parse(const cJSON *j, const char *what, lf_prepend_scheme *out, lf_error *err) {
    const char *scheme = lf_json_str(j, "prepend_scheme");
    if (!scheme) *out = lf_json_bool(j, "add_prefix_space", true) ? LF_PREPEND_ALWAYS : LF_PREPEND_NEVER;
    else if (!strcmp(scheme, "always")) *out = LF_PREPEND_ALWAYS;
    else if (!strcmp(scheme, "first")) *out = LF_PREPEND_FIRST;
    else if (!strcmp(scheme, "never")) *out = LF_PREPEND_NEVER;
    else return lf_fail(err, "%s: unknown prepend_scheme '%s'", what, scheme);
    return 0;
}

int lf_replace_parse(const cJSON *j, const char *what, lf_pattern *pat, char **content, size_t *len,
                     lf_error *err) {
    const char *c = lf_json_str(j, "content");
    const cJSON *pj = cJSON_GetObjectItemCaseSensitive(j, "pattern");
    if (!c || !pj) return lf_fail(err, "%s needs \"pattern\" and \"content\"", what);
    if (lf_pattern_parse(pj, what, pat, err)) return -1;
    if (!(*content = strdup(c))) return lf_fail(err, "out of memory");
    *len = strlen(c);
    return 0;
}

void *lf_seq_alloc(const cJSON *j, const char *key, const char *what, size_t size, const cJSON **arr,
                   lf_error *err) {
    *arr = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsArray(*arr)) {
        lf_fail(err, "Sequence %s without \"%s\" array", what, key);
        return NULL;
    }
    int cnt = cJSON_GetArraySize(*arr);
    void *kids = calloc(cnt ? (size_t)cnt : 1, size);
    if (!kids) lf_fail(err, "out of memory");
    return kids;
}

/* ---- patterns ------------------------------------------------------------ */
int lf_pattern_from_literal(const char *s, size_t n, lf_pattern *p, lf_error *err) {
    memset(p, 0, sizeof *p);
    p->lit = malloc(n + 1);
    if (!p->lit) return lf_fail(err, "out of memory");
    memcpy(p->lit, s, n);
    p->lit[n] = 0;
    p->lit_len = n;
    return 0;
}

int lf_pattern_from_regex(const char *re, const char *what, lf_pattern *p, lf_error *err) {
    memset(p, 0, sizeof *p);
    int ec;
    PCRE2_SIZE eo;
    p->re = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    if (!p->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return lf_fail(err, "%s: bad regex at offset %zu: %s", what, (size_t)eo, (const char *)msg);
    }
    p->jit = pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE) == 0;
    return 0;
}

int lf_pattern_parse(const cJSON *j, const char *what, lf_pattern *p, lf_error *err) {
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "Regex");
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "String");
    if (cJSON_IsString(r)) return lf_pattern_from_regex(r->valuestring, what, p, err);
    if (cJSON_IsString(s)) return lf_pattern_from_literal(s->valuestring, strlen(s->valuestring), p, err);
    return lf_fail(err, "%s: pattern must be {\"Regex\": ...} or {\"String\": ...}", what);
}

void lf_pattern_free(lf_pattern *p) {
    if (p->re) pcre2_code_free(p->re);
    free(p->lit);
    memset(p, 0, sizeof *p);
}

int lf_pattern_next(const lf_pattern *p, pcre2_match_data *md, const char *s, size_t n, size_t from,
                    size_t *ms, size_t *me, lf_error *err) {
    if (!p->re) {
        if (p->lit_len == 0 || from >= n) return 0;
        const char *hit = NULL;
        if (p->lit_len == 1) {
            hit = memchr(s + from, p->lit[0], n - from);
        } else {
            const char *q = s + from, *end = s + n;
            while ((size_t)(end - q) >= p->lit_len) {
                const char *c = memchr(q, p->lit[0], (size_t)(end - q) - p->lit_len + 1);
                if (!c) break;
                if (!memcmp(c, p->lit, p->lit_len)) {
                    hit = c;
                    break;
                }
                q = c + 1;
            }
        }
        if (!hit) return 0;
        *ms = (size_t)(hit - s);
        *me = *ms + p->lit_len;
        return 1;
    }
    if (from == 0) { /* a subject's first call: the JIT matcher does no UTF-8 check of its own */
        size_t ok = lf_utf8_valid_prefix(s, n);
        if (ok != n)
            return lf_fail(err, "regex match: the text is not valid UTF-8 (byte 0x%02X at offset %zu)",
                           (unsigned char)s[ok], ok);
    }
    while (from <= n) {
        int rc;
        if (p->jit)
            rc = pcre2_jit_match(p->re, (PCRE2_SPTR)s, n, from, 0, md, NULL);
        else
            rc = pcre2_match(p->re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
            rc = pcre2_match(p->re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) return 0;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return lf_fail(err, "regex match failed: %s", (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (ov[1] > ov[0]) {
            *ms = ov[0];
            *me = ov[1];
            return 1;
        }
        /* empty match: try again one character further */
        if (ov[0] >= n) return 0;
        from = ov[0] + 1;
        while (from < n && ((unsigned char)s[from] & 0xC0) == 0x80) from++;
    }
    return 0;
}

/* ---- byte-level alphabet ------------------------------------------------- */
/* GPT-2's map: printable bytes stand for themselves, the others get 256, 257,
 * ... in byte order. */
static uint32_t bl_cp[256];
static int16_t bl_byte[256 + 68];
static pthread_once_t bl_once = PTHREAD_ONCE_INIT;

static void bl_init(void) {
    unsigned n = 0;
    for (unsigned i = 0; i < 256 + 68; i++) bl_byte[i] = -1;
    for (unsigned b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        bl_cp[b] = printable ? b : 256 + n++;
        bl_byte[bl_cp[b]] = (int16_t)b;
    }
}

uint32_t lf_bytelevel_cp(unsigned char b) {
    pthread_once(&bl_once, bl_init);
    return bl_cp[b];
}

int lf_bytelevel_byte(uint32_t cp) {
    pthread_once(&bl_once, bl_init);
    return cp < 256 + 68 ? bl_byte[cp] : -1;
}
