/* Streaming split of a reasoning model's output into its <think> part
 * (reasoning_content) and the rest (content), chunk by chunk, as
 * lf_chat_split_think_ex splits the whole text: an opening <think> is
 * dropped, newlines around both parts are dropped, and a tag cut between
 * chunks is held back until it is whole. */
#ifndef LF_SERVER_THINK_H
#define LF_SERVER_THINK_H

#include <stdbool.h>
#include <stddef.h>

typedef struct lf_think_split {
    int state;          /* 0: start, 1: inside <think>, 2: answer */
    char hold[64];      /* bytes held back: a possible tag prefix, or newlines */
    size_t n_hold;
    bool started[2];    /* some reasoning / answer text was emitted (leading newlines dropped before) */
} lf_think_split;

/* think_open: the prompt already opened <think> (DeepSeek-R1, QwQ). */
void lf_think_init(lf_think_split *t, bool think_open);

/* Feed text; the reasoning and answer text it completes are appended to
 * the caller's buffers through emit(user, is_reasoning, text, len). final:
 * no more text follows (held bytes are released; trailing newlines are
 * dropped). */
typedef void (*lf_think_emit)(void *user, bool reasoning, const char *text, size_t len);
void lf_think_feed(lf_think_split *t, const char *text, size_t len, bool final, lf_think_emit emit, void *user);

#endif
