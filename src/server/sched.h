/* The scheduler thread: the only thread that touches the engine. HTTP
 * threads hand it jobs (lf_sched_submit) and read what it produces from the
 * job under the job's mutex: the decoded text (whole UTF-8 characters only,
 * stop strings cut off), the token ids, and the end.
 *
 * Two threads share the work. The scheduler thread runs the engine's steps
 * and only records what each step produced (a job, a token id, a time: O(1)
 * per token); after the step it hands the records to the delivery thread,
 * which decodes them, appends the text, looks for stop strings, finishes the
 * jobs, publishes /metrics and wakes the HTTP threads, while the scheduler
 * runs the next step. */
#ifndef LF_SERVER_SCHED_H
#define LF_SERVER_SCHED_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "longflow.h"
#include "server/metrics.h"
#include "server/request.h"
#include "tokenizer/tokenizer.h"

struct lf_sched;

typedef struct lf_job_end lf_job_end;

/* How a job ended, as the scheduler saw it: written by the scheduler before
 * it queues the job's finish, read by the delivery thread afterwards. */
struct lf_job_end {
    const char *finish;        /* OpenAI finish_reason, before a stop string found late overrides it */
    char error[256];
    bool has_result;           /* the engine ran it: the figures below are set */
    size_t kv_tokens_peak, kv_bytes;
    int kv_slots;
    long prompt, generated, evicted;
};

typedef struct lf_job {
    /* set before lf_sched_submit, read-only afterwards */
    lf_request_params params; /* prompt and stop ids point into the two arrays below */
    int *prompt_ids;
    char *stop[LF_API_MAX_STOP];
    int n_stop;
    size_t max_stop;           /* longest stop string */
    double t_arrival;          /* lf_now_ms() when the request arrived */

    /* shared: under mu; cv is signalled on every change */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *text;                /* decoded text so far (a stop string and what follows it removed) */
    size_t len, cap;
    size_t safe;               /* text[0..safe) is final: no stop string can still start before it */
    int *tokens;               /* generated ids [n_tokens] */
    int n_tokens, cap_tokens;
    bool done;
    const char *finish;        /* OpenAI finish_reason: "stop", "length"; or "cancelled", "error" */
    char error[256];           /* finish "error" / "cancelled": why */
    bool cancel;               /* the HTTP side wants it stopped (client gone) */
    bool stop_hit;             /* the delivery thread found a stop string (the scheduler then cancels it) */
    size_t kv_tokens_peak, kv_bytes;
    int kv_slots;
    int refs;                  /* 2 while both the HTTP side and the scheduler (then the delivery thread) hold it */

    /* delivery thread only (detok: made by the scheduler before the job's first record) */
    lf_detok_stream *detok;
    double t_last;             /* ms, the previous token */
    bool wake_pending;         /* this batch gave it new text or its end */

    /* scheduler only */
    int engine_id;
    lf_job_end end;
    struct lf_job *next;       /* inbox */
} lf_job;

/* One record of the scheduler for the delivery thread: a token of a job, or
 * the job's end (the last record of a job; it carries the scheduler's
 * reference, which the delivery thread drops). */
enum { LF_DELIVER_FIRST = 1, LF_DELIVER_EOS = 2, LF_DELIVER_FINISH = 4 };
typedef struct lf_delivery {
    lf_job *job;
    double t_ms;               /* when the scheduler recorded the token */
    int tok;
    int flags;                 /* LF_DELIVER_*: the job's first token; the end-of-sequence token (no text); the end */
} lf_delivery;

/* A job for params (copied, with prompt and stop strings); NULL when out of memory. */
lf_job *lf_job_new(const lf_request_params *p, char *const *stop, int n_stop);
/* Drop one reference (the HTTP side's or the scheduler's); the last frees it. */
void lf_job_unref(lf_job *j);
/* Ask the scheduler to cancel j (its slots are freed at the next step). */
void lf_job_cancel(struct lf_sched *s, lf_job *j);

typedef struct lf_sched {
    lf_engine *engine;
    const lf_tokenizer *tok;
    const lf_model *model;
    lf_metrics *metrics;
    int max_inflight;          /* running + queued jobs accepted at most */
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    lf_job *inbox, *inbox_tail;
    int inflight;              /* accepted and not finished */
    bool wake;                 /* a job asks to be cancelled, or has hit a stop string */
    bool draining;             /* no new jobs (shutdown) */
    bool abort_all;            /* cancel every job now (shutdown deadline) */
    bool quit;
    /* the delivery thread: decodes and delivers each loop's records while
     * the scheduler runs the next step (bench/results/serve.md). Three record
     * arrays rotate: the scheduler's (items), the queued batch (dq: the
     * records of up to LF_DELIVER_BEHIND loops; the scheduler waits beyond
     * that), the one being delivered (dbatch). */
    pthread_t deliverer;
    bool deliverer_started;
    pthread_mutex_t dmu;
    pthread_cond_t dcv;        /* a batch was queued, or quit */
    pthread_cond_t dtaken;     /* the delivery thread took the queued batch */
    lf_delivery *dq;
    int dq_n, dq_cap;
    int dq_loops;              /* scheduler loops in the queued batch */
    lf_metrics_step dq_step;   /* the scheduler's figures of those loops (the latest gauges) */
    bool dquit;
    /* scheduler only */
    lf_job **live;
    int n_live, cap_live;
    lf_delivery *items;        /* this loop's records */
    int n_items, cap_items;
    lf_metrics_step step;      /* this loop's figures, queued with its records */
    /* delivery thread only */
    lf_delivery *dbatch;
    int dbatch_cap;
    lf_metrics_delivery dm;    /* published with the next batch's figures */
} lf_sched;

int lf_sched_start(lf_sched *s, lf_engine *engine, const lf_model *m, const lf_tokenizer *tok, lf_metrics *metrics,
                   int max_inflight, lf_error *err);
/* Queue j (takes the scheduler's reference). Refuses with 429 when the
 * queue is full, 503 while shutting down. */
int lf_sched_submit(lf_sched *s, lf_job *j, lf_api_error *e);
/* Jobs accepted and not finished. */
int lf_sched_inflight(lf_sched *s);
/* Shutdown: refuse new jobs; wait up to timeout_s for the running ones,
 * then cancel what is left ("server shutting down"); stop the thread. */
void lf_sched_shutdown(lf_sched *s, double timeout_s);

#endif
