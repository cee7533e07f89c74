#define _GNU_SOURCE /* memmem */
#include "server/sched.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "core/timer.h"
#include "model/model.h"

/* ---- jobs ---------------------------------------------------------------- */

lf_job *lf_job_new(const lf_request_params *p, char *const *stop, int n_stop) {
    lf_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->params = *p;
    j->prompt_ids = malloc((size_t)p->n_prompt * sizeof(int));
    j->text = malloc(256);
    j->cap = 256;
    if (!j->prompt_ids || !j->text) goto fail;
    j->text[0] = 0;
    memcpy(j->prompt_ids, p->prompt, (size_t)p->n_prompt * sizeof(int));
    j->params.prompt = j->prompt_ids;
    j->params.stop_ids = NULL;
    j->params.n_stop_ids = 0;
    for (int i = 0; i < n_stop; i++) {
        if (!(j->stop[i] = strdup(stop[i]))) goto fail;
        j->n_stop++;
        if (strlen(stop[i]) > j->max_stop) j->max_stop = strlen(stop[i]);
    }
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->refs = 2;
    j->engine_id = -1;
    j->t_arrival = lf_now_ms();
    return j;
fail:
    for (int i = 0; i < j->n_stop; i++) free(j->stop[i]);
    free(j->prompt_ids);
    free(j->text);
    free(j);
    return NULL;
}

void lf_job_unref(lf_job *j) {
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (left > 0) return;
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    for (int i = 0; i < j->n_stop; i++) free(j->stop[i]);
    if (j->detok) lf_detok_stream_free(j->detok);
    free(j->prompt_ids);
    free(j->text);
    free(j->tokens);
    free(j);
}

void lf_job_cancel(lf_sched *s, lf_job *j) {
    pthread_mutex_lock(&j->mu);
    bool was = j->cancel || j->done;
    j->cancel = true;
    pthread_mutex_unlock(&j->mu);
    if (was) return;
    pthread_mutex_lock(&s->mu);
    s->wake = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Append text to the job (caller holds j->mu). */
static bool job_append(lf_job *j, const char *t, size_t n) {
    if (j->len + n + 1 > j->cap) {
        size_t nc = (j->len + n + 1) * 2;
        char *ns = realloc(j->text, nc);
        if (!ns) return false;
        j->text = ns;
        j->cap = nc;
    }
    memcpy(j->text + j->len, t, n);
    j->len += n;
    j->text[j->len] = 0;
    return true;
}

/* Cut the text at the first stop string that starts at or after `from`;
 * otherwise advance `safe` to where no stop string can still begin (on a
 * character boundary). Caller holds j->mu. */
static void job_scan_stop(lf_job *j, size_t from, bool final) {
    for (int i = 0; i < j->n_stop; i++) {
        const char *hit = memmem(j->text + from, j->len - from, j->stop[i], strlen(j->stop[i]));
        if (hit) {
            j->len = (size_t)(hit - j->text);
            j->text[j->len] = 0;
            j->stop_hit = true;
        }
        if (j->stop_hit) from = from < j->len ? from : j->len;
    }
    size_t safe = j->len;
    if (!final && !j->stop_hit && j->max_stop > 1) {
        safe = j->len > j->max_stop - 1 ? j->len - (j->max_stop - 1) : 0;
        while (safe > 0 && ((unsigned char)j->text[safe] & 0xC0) == 0x80) safe--;
    }
    if (safe > j->safe) j->safe = safe;
}

/* ---- the waker thread ----------------------------------------------------- */

/* Grow a job-pointer array to hold one more; false when out of memory. */
static bool jobs_reserve(lf_job ***a, int n, int *cap) {
    if (n < *cap) return true;
    int nc = *cap ? 2 * *cap : 64;
    lf_job **na = realloc(*a, (size_t)nc * sizeof *na);
    if (!na) return false;
    *a = na;
    *cap = nc;
    return true;
}

/* j has new tokens (caller holds j->mu): put it on this step's list for the
 * waker, which holds a reference until it has woken it; wake it here when the
 * list cannot grow. */
static void queue_wake(lf_sched *s, lf_job *j) {
    if (j->wake_queued) return;
    if (!jobs_reserve(&s->woken, s->n_woken, &s->cap_woken)) {
        pthread_cond_broadcast(&j->cv);
        return;
    }
    j->wake_queued = true;
    j->refs++;
    s->woken[s->n_woken++] = j;
}

static void wake_job(lf_job *j) {
    pthread_mutex_lock(&j->mu);
    j->wake_queued = false;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    lf_job_unref(j);
}

/* Hand this step's list to the waker (one lock, one signal per step). */
static void post_wakes(lf_sched *s) {
    if (s->n_woken == 0) return;
    pthread_mutex_lock(&s->wmu);
    int i = 0;
    for (; i < s->n_woken && jobs_reserve(&s->wq, s->wq_n, &s->wq_cap); i++) s->wq[s->wq_n++] = s->woken[i];
    pthread_cond_signal(&s->wcv);
    pthread_mutex_unlock(&s->wmu);
    for (; i < s->n_woken; i++) wake_job(s->woken[i]); /* out of memory: wake them here */
    s->n_woken = 0;
}

static void *waker_main(void *arg) {
    lf_sched *s = arg;
    pthread_mutex_lock(&s->wmu);
    for (;;) {
        while (!s->wquit && s->wq_n == 0) pthread_cond_wait(&s->wcv, &s->wmu);
        if (s->wq_n == 0) break; /* quit, and nothing left to wake */
        lf_job **batch = s->wq;
        int n = s->wq_n, cap = s->wq_cap;
        s->wq = s->wq_spare;
        s->wq_cap = s->wq_spare_cap;
        s->wq_n = 0;
        pthread_mutex_unlock(&s->wmu);
        for (int i = 0; i < n; i++) wake_job(batch[i]);
        pthread_mutex_lock(&s->wmu);
        s->wq_spare = batch;
        s->wq_spare_cap = cap;
    }
    pthread_mutex_unlock(&s->wmu);
    return NULL;
}

static void waker_stop(lf_sched *s) {
    if (!s->waker_started) return;
    pthread_mutex_lock(&s->wmu);
    s->wquit = true;
    pthread_cond_signal(&s->wcv);
    pthread_mutex_unlock(&s->wmu);
    pthread_join(s->waker, NULL);
    s->waker_started = false;
    free(s->wq);
    free(s->wq_spare);
    free(s->woken);
    s->wq = s->wq_spare = s->woken = NULL;
}

/* ---- the scheduler thread ------------------------------------------------ */

/* The live job of an engine request: a binary search, since live[] is in
 * the order of the engine's ids (they grow with each submission; removals
 * keep the order). One lookup per token: a linear scan would cost each step
 * O(live^2), e.g. a million comparisons at 1,458 streams. */
static lf_job *find_live(lf_sched *s, int engine_id) {
    int lo = 0, hi = s->n_live;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (s->live[mid]->engine_id < engine_id) lo = mid + 1;
        else hi = mid;
    }
    return lo < s->n_live && s->live[lo]->engine_id == engine_id ? s->live[lo] : NULL;
}

/* Token callback of lf_engine_step: decode, append, look for stop strings. */
static void on_token(void *user, const lf_generation *g, int tok) {
    lf_sched *s = user;
    double now = lf_now_ms(); /* the host time counts the lookup too */
    lf_job *j = find_live(s, g->id);
    if (!j || j->stop_hit) {
        s->step.host_s += (lf_now_ms() - now) / 1e3;
        return;
    }
    if (g->n_tokens == 1) lf_histogram_observe(&s->step.ttft, (now - j->t_arrival) / 1e3);
    else lf_histogram_observe(&s->step.itl, (now - j->t_last) / 1e3);
    j->t_last = now;
    const char *text = NULL;
    size_t n = 0;
    /* the end-of-sequence token has no text (as `longflow generate`) */
    bool eos = g->done && g->finish_reason && !strcmp(g->finish_reason, "eos");
    lf_error err = {{0}};
    if (!eos && j->detok && lf_detok_stream_push(j->detok, tok, &text, &n, &err)) n = 0;
    pthread_mutex_lock(&j->mu);
    if (j->n_tokens == j->cap_tokens) {
        int nc = j->cap_tokens ? 2 * j->cap_tokens : 64;
        int *nt = realloc(j->tokens, (size_t)nc * sizeof(int));
        if (nt) {
            j->tokens = nt;
            j->cap_tokens = nc;
        }
    }
    if (j->n_tokens < j->cap_tokens) j->tokens[j->n_tokens++] = tok;
    size_t from = j->len > j->max_stop ? j->len - j->max_stop : 0;
    if (n) job_append(j, text, n);
    job_scan_stop(j, from, false);
    queue_wake(s, j);
    pthread_mutex_unlock(&j->mu);
    s->step.host_s += (lf_now_ms() - now) / 1e3;
}

static const char *openai_finish(const char *engine_reason) {
    if (!engine_reason) return "error";
    if (!strcmp(engine_reason, "eos") || !strcmp(engine_reason, "stop")) return "stop";
    return engine_reason; /* "length", "cancelled", "error" */
}

/* The job is over: flush the decoder, record the end, give it back to the
 * HTTP side, release the engine's request. */
static void job_finish(lf_sched *s, lf_job *j, const char *finish, const char *error) {
    const lf_generation *g = j->engine_id >= 0 ? lf_engine_result(s->engine, j->engine_id) : NULL;
    const char *text = NULL;
    size_t n = 0;
    if (j->detok && !j->stop_hit) lf_detok_stream_flush(j->detok, &text, &n);
    pthread_mutex_lock(&j->mu);
    size_t from = j->len > j->max_stop ? j->len - j->max_stop : 0;
    if (n) job_append(j, text, n);
    job_scan_stop(j, from, true);
    j->finish = j->stop_hit ? "stop" : finish;
    if (error) snprintf(j->error, sizeof j->error, "%s", error);
    if (g) {
        j->kv_tokens_peak = g->kv_tokens_peak;
        j->kv_bytes = g->kv_bytes;
        j->kv_slots = g->kv_slots;
    }
    j->done = true;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    if (g) {
        long written = (long)g->n_prompt + g->n_tokens - 1;
        lf_metrics_tokens(s->metrics, g->n_prompt, g->n_tokens, written - (long)g->kv_tokens_peak, j->finish);
        lf_engine_release(s->engine, j->engine_id, NULL);
    }
    pthread_mutex_lock(&s->mu);
    s->inflight--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    lf_job_unref(j);
}


/* New jobs from the inbox go to the engine. */
static void take_inbox(lf_sched *s, lf_job *list) {
    while (list) {
        lf_job *j = list;
        list = j->next;
        lf_error err = {{0}};
        if (s->n_live == s->cap_live) {
            int nc = s->cap_live ? 2 * s->cap_live : 64;
            lf_job **nl = realloc(s->live, (size_t)nc * sizeof *nl);
            if (!nl) {
                job_finish(s, j, "error", "server out of memory");
                continue;
            }
            s->live = nl;
            s->cap_live = nc;
        }
        j->detok = lf_detok_stream_new(s->tok, false);
        j->engine_id = j->detok ? lf_engine_submit_params(s->engine, &j->params, &err) : -1;
        if (j->engine_id < 0) {
            job_finish(s, j, "error", j->detok ? err.msg : "server out of memory");
            continue;
        }
        s->live[s->n_live++] = j;
    }
}

/* Cancel what the HTTP side gave up on (or everything, at the shutdown
 * deadline), and stop what hit a stop string. */
static void cancel_jobs(lf_sched *s, bool all) {
    int kept = 0;
    for (int i = 0; i < s->n_live; i++) {
        lf_job *j = s->live[i];
        pthread_mutex_lock(&j->mu);
        bool cancel = j->cancel;
        pthread_mutex_unlock(&j->mu);
        if (cancel || all || j->stop_hit) {
            lf_engine_cancel(s->engine, j->engine_id, NULL);
            job_finish(s, j, j->stop_hit ? "stop" : "cancelled",
                       j->stop_hit ? NULL : all ? "server shutting down" : "client disconnected");
        } else {
            s->live[kept++] = j; /* in order (find_live) */
        }
    }
    s->n_live = kept;
}

/* Jobs the engine finished; a failed one gets its own message (g->note),
 * else the step's. */
static void finish_done_jobs(lf_sched *s, const char *step_error) {
    int kept = 0;
    for (int i = 0; i < s->n_live; i++) {
        lf_job *j = s->live[i];
        const lf_generation *g = lf_engine_result(s->engine, j->engine_id);
        if (g && g->done) {
            const char *f = openai_finish(g->finish_reason);
            job_finish(s, j, f, !strcmp(f, "error") ? (g->note ? g->note : step_error) : NULL);
        } else {
            s->live[kept++] = j; /* in order (find_live) */
        }
    }
    s->n_live = kept;
}

/* The gauges, the step's latencies and host time, to /metrics. */
static void publish_step(lf_sched *s) {
    lf_metrics_step *st = &s->step;
    lf_engine_pending(s->engine, &st->queued, &st->running);
    st->slots_in_use = st->slots_allocated = 0;
    st->kv_bytes = 0;
    for (int i = 0; i < s->n_live; i++) {
        const lf_generation *g = lf_engine_result(s->engine, s->live[i]->engine_id);
        if (!g || g->kv_slots == 0) continue;
        st->slots_in_use += (long)g->kv_tokens_peak;
        st->slots_allocated += g->kv_slots;
        st->kv_bytes += g->kv_bytes;
    }
    lf_engine_stats es;
    lf_engine_stats_get(s->engine, &es);
    st->kv_buffers_allocated = es.kv_buffers_allocated;
    st->kv_buffers_reused = es.kv_buffers_reused;
    lf_metrics_publish_step(s->metrics, st);
    memset(st, 0, sizeof *st);
}

static void *sched_main(void *arg) {
    lf_sched *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->quit && !s->inbox && !s->wake && !s->abort_all && s->n_live == 0)
            pthread_cond_wait(&s->cv, &s->mu);
        lf_job *list = s->inbox;
        s->inbox = s->inbox_tail = NULL;
        bool all = s->abort_all, quit = s->quit;
        s->wake = false;
        pthread_mutex_unlock(&s->mu);

        double t0 = lf_now_ms();
        take_inbox(s, list);
        cancel_jobs(s, all);
        if (quit && s->n_live == 0) break;
        lf_error err = {{0}};
        int rc = 0;
        double t1 = lf_now_ms(), t2 = t1;
        if (lf_engine_pending(s->engine, NULL, NULL) > 0) {
            rc = lf_engine_step(s->engine, on_token, s, &err);
            s->step.stepped = 1;
            post_wakes(s);
            t2 = lf_now_ms();
        }
        cancel_jobs(s, false); /* stop strings found during the step */
        finish_done_jobs(s, rc ? err.msg : NULL);
        publish_step(s); /* before the clock stops: its own cost counts */
        s->step.host_s += (t1 - t0 + lf_now_ms() - t2) / 1e3;
    }
    publish_step(s);
    return NULL;
}

int lf_sched_start(lf_sched *s, lf_engine *engine, const lf_model *m, const lf_tokenizer *tok, lf_metrics *metrics,
                   int max_inflight, lf_error *err) {
    memset(s, 0, sizeof *s);
    s->engine = engine;
    s->model = m;
    s->tok = tok;
    s->metrics = metrics;
    s->max_inflight = max_inflight;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_init(&s->wmu, NULL);
    pthread_cond_init(&s->wcv, NULL);
    if (pthread_create(&s->waker, NULL, waker_main, s)) return lf_fail(err, "serve: cannot start the waker thread");
    s->waker_started = true;
    if (pthread_create(&s->thread, NULL, sched_main, s)) {
        waker_stop(s);
        return lf_fail(err, "serve: cannot start the scheduler thread");
    }
    s->started = true;
    return 0;
}

int lf_sched_submit(lf_sched *s, lf_job *j, lf_api_error *e) {
    pthread_mutex_lock(&s->mu);
    if (s->draining) {
        pthread_mutex_unlock(&s->mu);
        return lf_api_fail(e, 503, NULL, "shutting_down", "the server is shutting down");
    }
    if (s->inflight >= s->max_inflight) {
        int n = s->inflight;
        pthread_mutex_unlock(&s->mu);
        return lf_api_fail(e, 429, NULL, "queue_full",
                           "the server is busy: %d requests running or queued (--max-seqs + --max-queue); retry later",
                           n);
    }
    s->inflight++;
    j->next = NULL;
    if (s->inbox_tail) s->inbox_tail->next = j;
    else s->inbox = j;
    s->inbox_tail = j;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int lf_sched_inflight(lf_sched *s) {
    pthread_mutex_lock(&s->mu);
    int n = s->inflight;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void lf_sched_shutdown(lf_sched *s, double timeout_s) {
    if (!s->started) return;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)timeout_s;
    pthread_mutex_lock(&s->mu);
    s->draining = true;
    int rc = 0;
    while (s->inflight > 0 && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&s->cv, &s->mu, &until);
    s->abort_all = s->inflight > 0;
    s->quit = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    waker_stop(s); /* after the scheduler: it wakes what the last steps queued */
    s->started = false;
    free(s->live);
    s->live = NULL;
    /* the mutex stays: late requests on open connections still get their 503 */
}
