#define _GNU_SOURCE /* memmem */
#include "server/think.h"

#include <string.h>

#define OPEN_TAG "<think>"
#define CLOSE_TAG "</think>"

void lf_think_init(lf_think_split *t, bool think_open) {
    memset(t, 0, sizeof *t);
    t->state = think_open ? 1 : 0;
}

/* Emit text of part `reasoning`, dropping leading newlines of the part;
 * trailing newlines are held (they are dropped if the part ends there). */
static void out(lf_think_split *t, bool reasoning, const char *s, size_t n, lf_think_emit emit, void *user) {
    bool *started = &t->started[reasoning ? 0 : 1];
    if (!*started) {
        while (n > 0 && (*s == '\n' || *s == '\r')) s++, n--;
        if (n == 0) return;
        *started = true;
    }
    emit(user, reasoning, s, n);
}

/* Is s[0..n) a proper prefix of tag? */
static bool tag_prefix(const char *s, size_t n, const char *tag) {
    size_t tl = strlen(tag);
    return n < tl && memcmp(s, tag, n) == 0;
}

/* Newlines at the end of buf[0..n): how many. */
static size_t trailing_newlines(const char *buf, size_t n) {
    size_t k = 0;
    while (k < n && (buf[n - 1 - k] == '\n' || buf[n - 1 - k] == '\r')) k++;
    return k;
}

/* Process text of the current part (state 1 or 2) from buf[0..n): emit all
 * that cannot belong to a tag or to trailing newlines, keep the rest held. */
static void part(lf_think_split *t, const char *buf, size_t n, bool final, lf_think_emit emit, void *user) {
    const bool reasoning = t->state == 1;
    if (reasoning) {
        const char *end = memmem(buf, n, CLOSE_TAG, strlen(CLOSE_TAG));
        if (end) {
            size_t k = (size_t)(end - buf);
            k -= trailing_newlines(buf, k);
            out(t, true, buf, k, emit, user);
            t->state = 2;
            size_t skip = (size_t)(end - buf) + strlen(CLOSE_TAG);
            part(t, buf + skip, n - skip, final, emit, user);
            return;
        }
    }
    size_t keep = 0;
    if (!final) {
        if (reasoning) /* a possible start of </think> at the end */
            for (size_t k = n < strlen(CLOSE_TAG) ? n : strlen(CLOSE_TAG) - 1; k > 0; k--)
                if (tag_prefix(buf + n - k, k, CLOSE_TAG)) {
                    keep = k;
                    break;
                }
        size_t nl = trailing_newlines(buf, n - keep);
        keep += nl;
    } else {
        n -= trailing_newlines(buf, n);
    }
    if (keep > sizeof t->hold) keep = 0; /* long newline runs: emit, they are not trailing yet */
    out(t, reasoning, buf, n - keep, emit, user);
    memmove(t->hold, buf + n - keep, keep);
    t->n_hold = keep;
}

void lf_think_feed(lf_think_split *t, const char *text, size_t len, bool final, lf_think_emit emit, void *user) {
    /* work on held bytes + new text, in pieces that fit the hold buffer's contract */
    char buf[4096];
    while (len > 0 || final) {
        size_t room = sizeof buf - t->n_hold;
        size_t take = len < room ? len : room;
        memcpy(buf, t->hold, t->n_hold);
        memcpy(buf + t->n_hold, text, take);
        size_t n = t->n_hold + take;
        t->n_hold = 0;
        text += take;
        len -= take;
        bool last = final && len == 0;
        if (t->state == 0) {
            size_t ws = 0;
            while (ws < n && (buf[ws] == '\n' || buf[ws] == '\r' || buf[ws] == ' ')) ws++;
            if (n - ws >= strlen(OPEN_TAG) && !memcmp(buf + ws, OPEN_TAG, strlen(OPEN_TAG))) {
                t->state = 1;
                memmove(buf, buf + ws + strlen(OPEN_TAG), n - ws - strlen(OPEN_TAG));
                n -= ws + strlen(OPEN_TAG);
            } else if (!last && n <= sizeof t->hold && tag_prefix(buf + ws, n - ws, OPEN_TAG)) {
                memcpy(t->hold, buf, n); /* could still become <think> */
                t->n_hold = n;
                continue;
            } else {
                t->state = 2;
            }
        }
        part(t, buf, n, last, emit, user);
        if (last) break;
    }
}
