/* The scheduler thread: the only thread that touches the engine. HTTP
 * threads hand it jobs (lf_sched_submit) and read what it produces from the
 * job under the job's mutex: the decoded text (whole UTF-8 characters only,
 * stop strings cut off), the token ids, and the end. */
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

typedef struct lf_job {
    /* set before lf_sched_submit, read-only afterwards */
    lf_request_params params; /* prompt and stop ids point into the two arrays below */
    int *prompt_ids;
    char *stop[LF_API_MAX_STOP];
    int n_stop;
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
    size_t kv_tokens_peak, kv_bytes;
    int kv_slots;
    int refs;                  /* 2 while both the HTTP side and the scheduler hold it (+1 on the waker's list) */
    bool wake_queued;          /* on the waker's list: its HTTP thread is woken soon */

    /* scheduler-only */
    int engine_id;
    lf_detok_stream *detok;
    bool stop_hit;
    double t_last;             /* ms, the previous token */
    size_t max_stop;           /* longest stop string */
    struct lf_job *next;       /* inbox */
} lf_job;

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
    bool wake;                 /* a job asks to be cancelled */
    bool draining;             /* no new jobs (shutdown) */
    bool abort_all;            /* cancel every job now (shutdown deadline) */
    bool quit;
    /* the waker thread: wakes the HTTP threads of the jobs that a step gave
     * tokens, while the scheduler goes on with the next step (a futex wake
     * per stream and step would otherwise stall it: bench/results/serve.md) */
    pthread_t waker;
    bool waker_started;
    pthread_mutex_t wmu;
    pthread_cond_t wcv;
    lf_job **wq, **wq_spare;   /* jobs to wake; the waker's batch array when idle */
    int wq_n, wq_cap, wq_spare_cap;
    bool wquit;
    /* scheduler-only */
    lf_job **live;
    int n_live, cap_live;
    lf_job **woken;            /* this step's jobs with new tokens, for the waker */
    int n_woken, cap_woken;
    lf_metrics_step step;      /* this loop's figures, published once at its end */
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
